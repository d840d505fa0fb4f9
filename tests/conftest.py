"""Shared fixtures: both event loops (asyncio and uvloop) and the real services on this machine.

Tests that need PostgreSQL or Redis skip with a reason when the service is absent, unless
``SANAA_REQUIRE_SERVICES=1`` (set by ``.ci/run``), in which case they fail instead.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest

from sanaa_async_mem.collector.state import INTERPRETER_FROZEN

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra on every supported platform
    uvloop = None

PG_HOST = os.environ.get("SANAA_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("SANAA_PG_PORT", "5432"))
PG_DSN = os.environ.get("SANAA_PG_DSN", f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test")
REDIS_HOST = os.environ.get("SANAA_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("SANAA_REDIS_PORT", "6379"))
REDIS_URL = os.environ.get("SANAA_REDIS_URL", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")

_LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    _LOOPS["uvloop"] = uvloop.new_event_loop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]] | None:
    """Tests marked ``both_loops`` (pool and resource behaviour) run on asyncio and uvloop."""
    if item.get_closest_marker("both_loops") is not None:
        return _LOOPS
    return {"asyncio": asyncio.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_loops: run the async test on asyncio and on uvloop")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    msg = f"{service} is not reachable on {host}:{port}"
    if os.environ.get("SANAA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg}, and SANAA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(f"{msg} (set SANAA_REQUIRE_SERVICES=1 to make this a failure)")


@pytest.fixture
def pg_dsn() -> str:
    """DSN of the PostgreSQL test database; skips (or fails, when services are required) if absent."""
    _need("PostgreSQL", PG_HOST, PG_PORT)
    return PG_DSN


@pytest.fixture
def redis_url() -> str:
    """URL of the Redis server; skips (or fails, when services are required) if absent."""
    _need("Redis", REDIS_HOST, REDIS_PORT)
    return REDIS_URL


@pytest.fixture
def gc_restored() -> Iterator[None]:
    """The process's GC settings come back after the test, whatever it did or failed to undo:
    thresholds, enabled, ``gc.callbacks``, and objects the test froze."""
    thresholds, enabled, frozen = gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()
    callbacks = list(gc.callbacks)
    yield
    # CPython 3.12 starts with a few hundred immortal objects frozen: unfreezing them changes nothing.
    if frozen <= INTERPRETER_FROZEN and gc.get_freeze_count() > frozen:
        gc.unfreeze()
    gc.set_threshold(*thresholds)
    if enabled:
        gc.enable()
    else:
        gc.disable()
    gc.callbacks[:] = callbacks


@pytest.fixture
def gc_baseline(gc_restored: None) -> None:
    """``gc_restored``, starting from thresholds (700, 10, 10) on every interpreter (3.13 uses 2000)."""
    gc.set_threshold(700, 10, 10)


@pytest.fixture
async def pg_admin(pg_dsn: str) -> AsyncIterator[Any]:
    """A plain asyncpg connection for looking at (or killing) the server's sessions."""
    import asyncpg

    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def redis_admin(redis_url: str) -> AsyncIterator[Any]:
    """A plain Redis client for looking at (or killing) the server's clients."""
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
