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

from sanaa_async_mem.integrations.aiohttp import OPTIMIZER_KEY, RESOURCES_KEY, setup
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_baseline")


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
        assert optimizer.running
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
