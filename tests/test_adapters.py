"""Adapters against the real services: clean connections on return, dead ones replaced, clear ImportError."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.resources.adapters import (
    aiohttp_pool,
    aiosqlite_pool,
    asyncpg_pool,
    psycopg_pool,
    redis_pool,
)


def unique(prefix: str) -> str:
    """A name no other test (or test run) uses, to find our own connections on the server."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def until(cond: Callable[[], Any], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def pg_backends(admin: Any, app: str) -> int:
    return int(await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app))


async def redis_clients(admin: Any, name: str) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c.get("name") == name]


# ------------------------------------------------------------------------------------------ asyncpg


async def test_asyncpg_rolls_back_a_transaction_left_open(pg_dsn: str) -> None:
    async with asyncpg_pool(pg_dsn, max_size=1) as pool:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("CREATE TEMP TABLE leftover (x int)")
            assert conn.is_in_transaction()
        async with pool.acquire() as again:
            assert again is conn and not again.is_in_transaction()
            assert await again.fetchval("SELECT to_regclass('pg_temp.leftover')") is None
        # a clean connection went back without a reset round trip
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
        assert pool.stats().discarded == 0


async def test_asyncpg_full_reset_clears_session_state(pg_dsn: str) -> None:
    async with asyncpg_pool(pg_dsn, max_size=1, reset="full") as pool:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'changed'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "changed"


async def test_asyncpg_sets_application_name_and_closes_everything(pg_dsn: str, pg_admin: Any) -> None:
    app = unique("adapt-pg")
    pool = asyncpg_pool(pg_dsn, min_size=3, max_size=3, application_name=app)
    async with pool:
        assert await pg_backends(pg_admin, app) == 3
    await until(lambda: _eq(pg_backends(pg_admin, app), 0))


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_asyncpg_terminated_backend_fails_once_then_is_replaced(pg_dsn: str, pg_admin: Any) -> None:
    import asyncpg

    app = unique("adapt-pg")
    async with asyncpg_pool(pg_dsn, max_size=1, application_name=app) as pool:
        # which one depends on when asyncpg notices (InternalClientError: its protocol broke mid-operation)
        lost = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
        with pytest.raises(lost):
            async with pool.acquire() as conn:  # the error escapes the block: discard_on
                pid = conn.get_server_pid()
                assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                await conn.fetchval("SELECT pg_sleep(0.2)")
                await conn.fetchval("SELECT 1")
        async with pool.acquire() as fresh:
            assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1
        stats = pool.stats()
        assert (stats.discarded, stats.created) == (1, 2)


async def test_asyncpg_check_replaces_a_connection_that_died_while_idle(pg_dsn: str, pg_admin: Any) -> None:
    async with asyncpg_pool(pg_dsn, max_size=1, check_skip_within=0.0) as pool:
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
        await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        async with pool.acquire() as fresh:  # the check sees it dead; the caller never does
            assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1
        assert pool.stats().discarded == 1


async def test_asyncpg_bad_reset_mode_is_a_configuration_error(pg_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="reset"):
        asyncpg_pool(pg_dsn, reset="sometimes")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ psycopg


async def test_psycopg_rolls_back_and_replaces_a_terminated_connection(pg_dsn: str, pg_admin: Any) -> None:
    import psycopg

    app = unique("adapt-psy")
    async with psycopg_pool(pg_dsn, max_size=1, application_name=app) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE leftover (x int)")  # opens a transaction
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        async with pool.acquire() as again:
            assert again is conn
            assert again.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            cur = await again.execute("SELECT to_regclass('pg_temp.leftover')")
            assert await cur.fetchone() == (None,)
            await again.rollback()
        assert await pg_backends(pg_admin, app) == 1
        async with pool.acquire() as conn:  # the error is caught inside: the reset sees it broken
            await pg_admin.fetchval("SELECT pg_terminate_backend($1)", conn.info.backend_pid)
            with pytest.raises((psycopg.OperationalError, psycopg.InterfaceError)):
                await conn.execute("SELECT pg_sleep(0.2)")
                await conn.execute("SELECT 1")
        async with pool.acquire() as fresh:
            assert fresh is not conn
            cur = await fresh.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
        assert pool.stats().discarded == 1


# -------------------------------------------------------------------------------------------- redis


async def test_redis_client_name_kill_and_replacement(redis_url: str, redis_admin: Any) -> None:
    import redis.exceptions

    name = unique("adapt-redis")
    async with redis_pool(redis_url, min_size=2, max_size=2, client_name=name) as pool:
        assert len(await redis_clients(redis_admin, name)) == 2
        with pytest.raises(redis.exceptions.ConnectionError):
            async with pool.acquire() as client:  # the error escapes the block: discard_on
                await client.set(f"{name}:k", "v", ex=60)
                assert await client.get(f"{name}:k") == b"v"
                await redis_admin.execute_command("CLIENT", "KILL", "ID", await client.client_id())
                await client.ping()
        async with pool.acquire() as client:  # the error is caught inside: the reset sees it dropped
            await redis_admin.execute_command("CLIENT", "KILL", "ID", await client.client_id())
            with pytest.raises(redis.exceptions.ConnectionError):
                await client.ping()
        async with pool.acquire() as client:
            assert await client.ping() is True
        assert pool.stats().discarded == 2
        await until(lambda: _eq(_count(redis_clients(redis_admin, name)), 2))  # min_size refilled
    await until(lambda: _eq(_count(redis_clients(redis_admin, name)), 0))


async def _count(aw: Any) -> int:
    return len(await aw)


async def test_redis_check_replaces_a_client_killed_while_idle(redis_url: str, redis_admin: Any) -> None:
    name = unique("adapt-redis")
    async with redis_pool(redis_url, max_size=1, client_name=name, check_skip_within=0.0) as pool:
        async with pool.acquire() as client:
            await client.ping()
        for c in await redis_clients(redis_admin, name):
            await redis_admin.execute_command("CLIENT", "KILL", "ID", c["id"])
        async with pool.acquire() as fresh:
            assert fresh is not client and await fresh.ping() is True
        assert pool.stats().discarded == 1


# ------------------------------------------------------------------------------------------ aiohttp


async def test_aiohttp_sessions_fetch_from_a_local_server_and_closed_ones_are_replaced() -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp_pool(max_size=2, check_skip_within=0.0) as pool:
            async with pool.acquire() as session:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    assert await resp.text() == "hello"
                await session.close()  # e.g. closed by mistake
            async with pool.acquire() as fresh:
                assert fresh is not session and not fresh.closed
                async with fresh.get(f"http://127.0.0.1:{port}/") as resp:
                    assert resp.status == 200
            assert pool.stats().discarded == 1
        assert fresh.closed
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------------------------------- aiosqlite


async def test_aiosqlite_rolls_back_and_shares_a_file(tmp_path: Path) -> None:
    path = tmp_path / "test.db"
    async with aiosqlite_pool(path, max_size=2) as pool:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE t (x int)")
            await conn.commit()
            await conn.execute("INSERT INTO t VALUES (1)")  # left uncommitted
            assert conn.in_transaction
        async with pool.acquire() as a, pool.acquire() as b:
            assert not a.in_transaction and not b.in_transaction
            await a.execute("INSERT INTO t VALUES (2)")
            await a.commit()
            async with b.execute("SELECT x FROM t") as cur:
                assert await cur.fetchall() == [(2,)]
        assert pool.stats().discarded == 0


async def test_aiosqlite_closed_connection_is_replaced_by_the_check(tmp_path: Path) -> None:
    async with aiosqlite_pool(tmp_path / "t.db", max_size=1, check_skip_within=0.0) as pool:
        async with pool.acquire() as conn:
            await conn.close()
        async with pool.acquire() as fresh:
            assert fresh is not conn
            async with fresh.execute("SELECT 1") as cur:
                assert await cur.fetchone() == (1,)


# ------------------------------------------------------------------------------------- import errors


@pytest.mark.parametrize(
    ("make", "module", "extra"),
    [
        (lambda: asyncpg_pool("postgresql://x"), "asyncpg", "asyncpg"),
        (lambda: psycopg_pool("x"), "psycopg", "psycopg"),
        (lambda: redis_pool("redis://x"), "redis.asyncio", "redis"),
        (aiohttp_pool, "aiohttp", "aiohttp"),
        (lambda: aiosqlite_pool("x.db"), "aiosqlite", "aiosqlite"),
    ],
)
def test_missing_library_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], Any], module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match=rf"sanaa-async-mem\[{extra}\]"):
        make()


# ------------------------------------------------------- dead idle connections within check_skip_within


async def test_asyncpg_idle_connection_killed_by_the_server_is_never_handed_out(
    pg_dsn: str, pg_admin: Any
) -> None:
    app = unique("adapt-pg-dead")
    async with asyncpg_pool(pg_dsn, max_size=1, application_name=app) as pool:
        for _ in range(10):
            async with pool.acquire() as conn:  # used just now: the full check will be skipped
                assert await conn.fetchval("SELECT 1") == 1
            assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await until(lambda: _true(conn.is_closed()))  # asyncpg notices on its own (no I/O by us)
            async with pool.acquire() as fresh:  # no error: only calls in flight may fail
                assert fresh is not conn and await fresh.fetchval("SELECT 1") == 1
        assert pool.stats().discarded == 10


async def test_psycopg_idle_connection_killed_by_the_server_is_never_handed_out(
    pg_dsn: str, pg_admin: Any
) -> None:
    app = unique("adapt-psy-dead")
    async with psycopg_pool(pg_dsn, max_size=1, application_name=app, autocommit=True) as pool:
        for _ in range(10):
            async with pool.acquire() as conn:
                await conn.execute("SELECT 1")
                pid = conn.info.backend_pid
            assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            await until(lambda: _eq(pg_backends(pg_admin, app), 0))  # the server has closed it
            async with pool.acquire() as fresh:
                assert fresh is not conn
                cur = await fresh.execute("SELECT 1")
                assert await cur.fetchone() == (1,)
        assert pool.stats().discarded == 10


async def test_redis_idle_client_killed_by_the_server_is_never_handed_out(
    redis_url: str, redis_admin: Any
) -> None:
    name = unique("adapt-redis-dead")
    async with redis_pool(redis_url, max_size=1, client_name=name) as pool:
        for _ in range(10):
            async with pool.acquire() as client:
                assert await client.ping() is True
                client_id = await client.client_id()
            await redis_admin.execute_command("CLIENT", "KILL", "ID", client_id)
            reader = client.connection._reader
            await until(lambda r=reader: _true(r.at_eof()))  # the loop has seen the server close it
            async with pool.acquire() as fresh:
                assert fresh is not client and await fresh.ping() is True
        assert pool.stats().discarded == 10


async def _true(value: bool) -> bool:
    return value


# ---------------------------------------------------------------------------------- pool options


ADAPTERS: list[Callable[..., Any]] = [asyncpg_pool, psycopg_pool, redis_pool, aiohttp_pool, aiosqlite_pool]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda f: f.__name__)
def test_every_adapter_documents_every_pool_option(adapter: Callable[..., Any]) -> None:
    from sanaa_async_mem.pools.pool import PoolOptions

    doc = adapter.__doc__ or ""
    missing = [name for name in PoolOptions.__annotations__ if f"``{name}``" not in doc]
    assert missing == [], f"{adapter.__name__} does not document {missing}"


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: asyncpg_pool("postgresql://x", **kw),
        lambda **kw: psycopg_pool("x", **kw),
        lambda **kw: redis_pool("redis://x", **kw),
        aiohttp_pool,
        lambda **kw: aiosqlite_pool("x.db", **kw),
    ],
)
def test_adapter_pool_options_reach_the_pool_and_unknown_ones_are_named(make: Callable[..., Any]) -> None:
    pool = make(timeout=1.5, name="named", max_size=3, check_skip_within=0.0)
    assert (pool.name, pool.max_size, pool._timeout, pool._check_after in (0.0, float("inf"))) == (
        "named",
        3,
        1.5,
        True,
    )
    with pytest.raises(ConfigurationError) as info:
        make(timout=1.5)
    assert info.value.name == "timout" and "timeout" in str(info.value)
