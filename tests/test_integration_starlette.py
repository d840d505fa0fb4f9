"""Starlette and FastAPI with the memory lifespan and the GC request middleware: real apps through
asgi_lifespan + httpx, a real uvicorn server on a loopback port, and a startup that fails half-way."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

pytest.importorskip("starlette")
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_baseline")


def make_optimizer() -> MemoryOptimizer:
    return MemoryOptimizer(snapshot_interval=0.05)


async def status(request: Request) -> JSONResponse:
    optimizer: MemoryOptimizer = request.state.memory_optimizer
    assert optimizer.gc_scheduler is not None
    async with request.state.resource_manager.acquire("greeting", "status") as greeting:
        return JSONResponse(
            {
                "greeting": greeting,
                "running": optimizer.running,
                "in_flight": optimizer.gc_scheduler.in_flight,
                "percentage": optimizer.get_memory_status()["system_memory"]["percentage"],
                "app_value": request.state.app_value,
            }
        )


def build_app(events: list[str], *, fail_startup: bool = False) -> Starlette:
    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        # The application's own startup reaches the manager through app.state.
        app.state.resource_manager.register_resource(
            "greeting", "hello", lambda _: events.append("greeting closed")
        )
        events.append("app started")
        if fail_startup:
            raise RuntimeError("database unreachable")
        yield {"app_value": 42}
        events.append("app stopped")

    return Starlette(
        routes=[Route("/status", status)],
        lifespan=memory_lifespan(make_optimizer, lifespan=app_lifespan),
        middleware=[Middleware(GCRequestMiddleware)],
    )


@pytest.mark.both_loops
async def test_lifespan_yields_state_and_middleware_counts_requests() -> None:
    events: list[str] = []
    app = build_app(events)
    async with LifespanManager(app) as manager:
        optimizer: MemoryOptimizer = app.state.memory_optimizer
        assert optimizer.running
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = (await client.get("/status")).json()
        assert optimizer.gc_scheduler is not None and optimizer.gc_scheduler.in_flight == 0
    assert body["greeting"] == "hello" and body["running"] is True
    assert body["in_flight"] == 1  # counted by the middleware while the handler ran
    assert body["app_value"] == 42
    assert 0 <= body["percentage"] <= 100
    assert not optimizer.running
    # The application's shutdown ran before the resources it uses were closed.
    assert events == ["app started", "app stopped", "greeting closed"]
    assert gc.get_threshold() == (700, 10, 10)


async def test_a_startup_failing_half_way_closes_what_was_opened() -> None:
    events: list[str] = []
    app = build_app(events, fail_startup=True)
    with pytest.raises(RuntimeError, match="database unreachable"):
        async with LifespanManager(app):
            pass
    assert events == ["app started", "greeting closed"]
    assert not app.state.memory_optimizer.running
    assert gc.get_threshold() == (700, 10, 10)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_fastapi_app_with_the_lifespan() -> None:
    fastapi = pytest.importorskip("fastapi")
    app = fastapi.FastAPI(lifespan=memory_lifespan(make_optimizer))
    app.add_middleware(GCRequestMiddleware)

    @app.get("/memory")
    async def memory(request: Request) -> dict[str, Any]:  # FastAPI takes Starlette's Request
        status: dict[str, Any] = request.state.memory_optimizer.get_memory_status()
        return {"percentage": status["system_memory"]["percentage"]}

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/memory")
    assert response.status_code == 200
    assert 0 <= response.json()["percentage"] <= 100
    assert gc.get_threshold() == (700, 10, 10)


async def test_real_uvicorn_server_on_loopback() -> None:
    uvicorn = pytest.importorskip("uvicorn")
    events: list[str] = []
    app = build_app(events)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not serving.done(), "uvicorn exited during startup"
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            bodies = await asyncio.gather(*(client.get("/status") for _ in range(5)))
        assert all(r.status_code == 200 and r.json()["greeting"] == "hello" for r in bodies)
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
    assert events == ["app started", "app stopped", "greeting closed"]
    assert not app.state.memory_optimizer.running
    assert gc.get_threshold() == (700, 10, 10)


async def test_middleware_passes_through_without_an_optimizer() -> None:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/", hello)], middleware=[Middleware(GCRequestMiddleware)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/")).json() == {"ok": True}
