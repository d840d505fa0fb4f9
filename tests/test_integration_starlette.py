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

from sanaa_async_mem.collector.state import INTERPRETER_FROZEN, OUT_OF_REACH
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


# ------------------------------------------------------------------ what the integration does to the GC


class CatalogItem:
    """A startup-heap object (tracked by the collector, so freezing it is observable)."""

    def __init__(self, i: int) -> None:
        self.i = i
        self.tags = [i]


def is_frozen(obj: object) -> bool:
    """Frozen objects are in no generation the collector scans."""
    return not any(o is obj for o in gc.get_objects())


@pytest.fixture
def empty_permanent_generation() -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")


@pytest.mark.usefixtures("empty_permanent_generation")
async def test_the_readme_way_freezes_the_startup_heap_after_every_startup_hook_and_undoes_it() -> None:
    fastapi = pytest.importorskip("fastapi")
    events: list[str] = []
    built: dict[str, CatalogItem] = {}

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        built["app"] = CatalogItem(1)
        events.append("app startup")
        yield
        events.append("app shutdown")

    @contextlib.asynccontextmanager
    async def router_lifespan(app: Any) -> AsyncIterator[None]:
        # FastAPI runs an included router's lifespan inside the application's: after memory_lifespan's
        # own startup code, so only the middleware can know when startup is really over.
        built["router"] = CatalogItem(2)
        events.append("router startup")
        yield

    app = fastapi.FastAPI(lifespan=memory_lifespan(make_optimizer, lifespan=app_lifespan))
    app.include_router(fastapi.APIRouter(lifespan=router_lifespan))
    app.add_middleware(GCRequestMiddleware)

    async with LifespanManager(app):
        optimizer: MemoryOptimizer = app.state.memory_optimizer
        assert events == ["app startup", "router startup"]
        assert optimizer.running
        assert is_frozen(built["app"]) and is_frozen(built["router"])
        assert gc.get_threshold()[2] == OUT_OF_REACH  # full collections are the scheduler's
        assert optimizer.gc_scheduler is not None and optimizer.gc_scheduler.running
    assert not optimizer.running
    assert gc.get_freeze_count() == 0  # unfrozen again on shutdown
    assert gc.get_threshold() == (700, 10, 10)
    assert not is_frozen(built["router"])


@pytest.mark.usefixtures("empty_permanent_generation")
async def test_without_the_middleware_the_lifespan_starts_and_freezes_at_its_own_end() -> None:
    built: list[CatalogItem] = []

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        built.append(CatalogItem(1))
        yield

    app = Starlette(routes=[Route("/status", status)], lifespan=memory_lifespan(lifespan=app_lifespan))
    async with LifespanManager(app):
        assert app.state.memory_optimizer.running
        assert is_frozen(built[0])
    assert gc.get_freeze_count() == 0


async def test_freezing_can_be_turned_off() -> None:
    app = Starlette(
        routes=[Route("/status", status)],
        lifespan=memory_lifespan(lambda: MemoryOptimizer(snapshot_interval=0.05, freeze_startup_heap=False)),
        middleware=[Middleware(GCRequestMiddleware)],
    )
    frozen = gc.get_freeze_count()
    async with LifespanManager(app):
        assert app.state.memory_optimizer.running
        assert gc.get_freeze_count() == frozen


async def test_an_optimizer_that_fails_to_start_at_startup_complete_fails_the_startup(tmp_path: Any) -> None:
    events: list[str] = []
    (tmp_path / "a-file").write_text("")

    def broken() -> MemoryOptimizer:
        # The snapshot store cannot be opened: the start fails after the application's startup ran.
        return MemoryOptimizer(profiler_options={"store": tmp_path / "a-file" / "log.jsonl"})

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        app.state.resource_manager.register_resource("x", "y", lambda _: events.append("closed"))
        yield

    app = Starlette(
        lifespan=memory_lifespan(broken, lifespan=app_lifespan), middleware=[Middleware(GCRequestMiddleware)]
    )
    with pytest.raises(Exception):  # noqa: B017 - asgi_lifespan reports the failure in its own type
        async with LifespanManager(app):
            pass
    assert events == ["closed"]
    assert not app.state.memory_optimizer.running
    assert gc.get_threshold() == (700, 10, 10)
