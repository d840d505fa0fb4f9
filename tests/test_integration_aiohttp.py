"""aiohttp with the memory cleanup context, typed AppKeys and the GC request middleware: a real TestServer
and client, and a startup that fails half-way."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

pytest.importorskip("aiohttp")
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sanaa_async_mem.collector.state import INTERPRETER_FROZEN
from sanaa_async_mem.integrations.aiohttp import OPTIMIZER_KEY, RESOURCES_KEY, setup
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_baseline")


async def started(optimizer: MemoryOptimizer) -> None:
    """The optimizer starts within milliseconds of the application's freeze: wait for it (generously)."""
    async with asyncio.timeout(30):
        while not optimizer.running:
            await asyncio.sleep(0.005)


def build_app(events: list[str], *, fail_startup: bool = False) -> web.Application:
    app = web.Application()
    setup(app, lambda: MemoryOptimizer(snapshot_interval=0.05))

    async def open_greeting(app: web.Application) -> AsyncIterator[None]:
        app[RESOURCES_KEY].register_resource("greeting", "hello", lambda _: events.append("greeting closed"))
        events.append("app started")
        if fail_startup:
            raise RuntimeError("database unreachable")
        yield
        events.append("app stopped")

    app.cleanup_ctx.append(open_greeting)

    async def status(request: web.Request) -> web.Response:
        optimizer = request.app[OPTIMIZER_KEY]
        assert optimizer.gc_scheduler is not None
        async with request.app[RESOURCES_KEY].acquire("greeting", "status") as greeting:
            return web.json_response(
                {
                    "greeting": greeting,
                    "in_flight": optimizer.gc_scheduler.in_flight,
                    "percentage": optimizer.get_memory_status()["system_memory"]["percentage"],
                }
            )

    app.router.add_get("/status", status)
    return app


async def test_cleanup_ctx_runs_the_optimizer_and_middleware_counts_requests() -> None:
    events: list[str] = []
    app = build_app(events)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        optimizer = app[OPTIMIZER_KEY]
        await started(optimizer)
        responses = await asyncio.gather(*(client.get("/status") for _ in range(3)))
        bodies = [await r.json() for r in responses]
        assert optimizer.gc_scheduler is not None and optimizer.gc_scheduler.in_flight == 0
    assert all(b["greeting"] == "hello" and b["in_flight"] >= 1 for b in bodies)
    assert all(0 <= b["percentage"] <= 100 for b in bodies)
    assert not optimizer.running
    assert events == ["app started", "app stopped", "greeting closed"]
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_startup_failing_half_way_closes_what_was_opened() -> None:
    events: list[str] = []
    app = build_app(events, fail_startup=True)
    server = TestServer(app, host="127.0.0.1")
    with pytest.raises(RuntimeError, match="database unreachable"):
        await server.start_server()
    await server.close()
    assert events == ["app started", "greeting closed"]
    assert not app[OPTIMIZER_KEY].running
    assert gc.get_threshold() == (700, 10, 10)


class CatalogItem:
    def __init__(self, i: int) -> None:
        self.i = i
        self.tags = [i]


def is_frozen(obj: object) -> bool:
    return not any(o is obj for o in gc.get_objects())


async def test_the_startup_heap_is_frozen_after_every_later_context_and_startup_handler() -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")
    built: dict[str, CatalogItem] = {}
    app = web.Application()
    setup(app, lambda: MemoryOptimizer(snapshot_interval=0.05))  # first, as the module documentation says

    async def load_catalog(app: web.Application) -> AsyncIterator[None]:
        built["ctx"] = CatalogItem(1)
        await asyncio.sleep(0.05)  # a startup that waits for I/O
        yield

    async def warm_up(app: web.Application) -> None:
        built["on_startup"] = CatalogItem(2)

    app.cleanup_ctx.append(load_catalog)
    app.on_startup.append(warm_up)
    async with TestClient(TestServer(app, host="127.0.0.1")):
        optimizer = app[OPTIMIZER_KEY]
        await started(optimizer)
        assert is_frozen(built["ctx"]) and is_frozen(built["on_startup"])
        assert optimizer.gc_scheduler is not None and optimizer.gc_scheduler.running
    assert not optimizer.running
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_startup_that_fails_before_the_freeze_never_starts_the_optimizer() -> None:
    app = web.Application()
    setup(app, lambda: MemoryOptimizer(snapshot_interval=0.05))

    async def broken(app: web.Application) -> None:
        raise RuntimeError("no database")

    app.on_startup.append(broken)
    server = TestServer(app, host="127.0.0.1")
    with pytest.raises(RuntimeError, match="no database"):
        await server.start_server()
    await server.close()
    assert not app[OPTIMIZER_KEY].running
    assert asyncio.all_tasks() == {asyncio.current_task()}  # the waiting starter is gone too
    assert gc.get_threshold() == (700, 10, 10)
