"""pool.holders() and ResourceManager.holders(): who holds what, for what, since when, acquired where; and
the same in ``/memory`` of a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import ConfigurationError, ResourceError
from sanaa_async_mem.pools import Holder
from sanaa_async_mem.resources import ResourceManager


def _here() -> str:
    """file:line of the caller's next line (where the code under test is written)."""
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return f"{__file__}:{frame.f_back.f_lineno + 1}"


async def test_holders_name_task_purpose_time_and_where_they_wait() -> None:
    async with AsyncPool(object, name="p", max_size=3) as pool:
        assert pool.holders() == []
        entered = asyncio.Event()
        release = asyncio.Event()
        lines: dict[str, str] = {}

        async def worker(label: str | None) -> None:
            async with pool.acquire(purpose=label):
                entered.set()
                lines[str(label)] = _here()
                await release.wait()

        first = asyncio.create_task(worker("load user"), name="first")
        await entered.wait()
        entered.clear()
        await asyncio.sleep(0.05)
        second = asyncio.create_task(worker(None), name="second")
        await entered.wait()
        holders = pool.holders()
        assert [h.task for h in holders] == ["first", "second"]  # longest-held first
        assert [h.purpose for h in holders] == ["load user", None]
        assert all(isinstance(h, Holder) and h.pool == "p" for h in holders)
        assert holders[0].held_for >= 0.04 and holders[0].held_for > holders[1].held_for >= 0
        # Where each holder is now: the line of its block it waits at (read from the suspended task).
        assert holders[0].where == lines["load user"]
        assert holders[1].where == lines["None"]
        assert holders[0].stack is None and holders[0].acquired_at is None  # no held_warning: not recorded
        assert holders[0].as_dict()["task"] == "first"
        release.set()
        await asyncio.gather(first, second)
        assert pool.holders() == []


async def test_holders_of_waiters_get_and_stack_with_held_warning() -> None:
    async with AsyncPool(object, name="w", max_size=1, held_warning=60.0) as pool:
        obj = await pool.get(purpose="manual")
        where_get = _here()
        other: list[str] = []

        async def waiter() -> None:
            other.append(_here())
            async with pool.acquire(purpose="waited"):
                other.append(_here())
                await asyncio.sleep(0)
                other.append("done")

        here = _here()
        (h,) = pool.holders()
        assert h.purpose == "manual"
        assert h.where == here  # the holder is this very task, running this line
        # With held_warning, the acquire's own line, from the recorded stack: get()'s caller.
        assert h.acquired_at is not None and h.acquired_at.rsplit(":", 1)[0] == __file__
        assert int(h.acquired_at.rsplit(":", 1)[1]) == int(where_get.rsplit(":", 1)[1]) - 2
        assert h.stack is not None and "test_holders_of_waiters" in h.stack
        task = asyncio.create_task(waiter(), name="waiter")
        await asyncio.sleep(0.01)
        await pool.put(obj)
        while "done" not in other:
            holders = pool.holders()
            if holders:
                assert holders[0].task == "waiter" and holders[0].purpose == "waited"
                assert holders[0].acquired_at == other[0]  # the waiting path records it too
                assert holders[0].where == other[1]
            await asyncio.sleep(0)
        await task


async def test_a_cancelled_holder_leaves_no_holder_behind() -> None:
    async with AsyncPool(object, max_size=1) as pool:
        started = asyncio.Event()

        async def hold() -> None:
            async with pool.acquire(purpose="x"):
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(hold())
        await started.wait()
        assert len(pool.holders()) == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert pool.holders() == []


async def test_bad_purpose_is_rejected() -> None:
    async with AsyncPool(object) as pool:
        with pytest.raises(ConfigurationError, match="purpose"):
            pool.acquire(purpose=3)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="purpose"):
            await pool.get(purpose=b"x")  # type: ignore[arg-type]


async def test_resource_manager_holders_carry_the_purpose_and_the_callers_line_now() -> None:
    async with ResourceManager() as manager:
        manager.register_factory("db", object, max_size=2)
        manager.register_resource("shared", "value")
        inside = asyncio.Event()
        release = asyncio.Event()
        where: list[str] = []

        async def handler() -> None:
            async with manager.acquire("db", "load user"):
                inside.set()
                where.append(_here())
                await release.wait()

        task = asyncio.create_task(handler(), name="handler")
        await inside.wait()
        (h,) = manager.holders()
        assert (h.pool, h.task, h.purpose, h.where) == ("db", "handler", "load user", where[0])
        assert [x.task for x in manager.holders("db")] == ["handler"]
        assert manager.holders("shared") == []
        with pytest.raises(ResourceError):
            manager.holders("nope")
        release.set()
        await task
        assert manager.holders() == []


async def test_memory_endpoint_of_a_real_uvicorn_server_lists_holders() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
    from sanaa_async_mem.optimizer import MemoryOptimizer

    held = asyncio.Event()
    release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        app.state.resource_manager.register_factory("db", object, max_size=2)
        yield {}

    async def slow(request: Request) -> JSONResponse:
        async with request.state.resource_manager.acquire("db", "slow report"):
            held.set()
            await release.wait()
        return JSONResponse({"ok": True})

    async def memory(request: Request) -> JSONResponse:
        return JSONResponse(request.state.memory_optimizer.get_memory_status())

    app = Starlette(
        routes=[Route("/slow", slow), Route("/memory", memory)],
        lifespan=memory_lifespan(lambda: MemoryOptimizer(snapshot_interval=0.05), lifespan=app_lifespan),
    )
    app.add_middleware(GCRequestMiddleware)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not serving.done(), "uvicorn exited during startup"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            slow_call = asyncio.create_task(client.get("/slow"))
            async with asyncio.timeout(30):
                await held.wait()
            body = (await client.get("/memory")).json()
            (holder,) = body["pools"]["db"]["holders"]
            assert holder["purpose"] == "slow report"
            assert holder["where"].startswith(__file__ + ":")
            assert holder["held_for"] >= 0 and holder["task"]
            release.set()
            assert (await slow_call).status_code == 200
            body = (await client.get("/memory")).json()
            assert body["pools"]["db"]["holders"] == []
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
