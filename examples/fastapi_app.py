"""A FastAPI service with a PostgreSQL pool through the ResourceManager, the MemoryOptimizer and /metrics.

Run it (needs the ``fastapi``, ``asyncpg`` and ``prometheus`` extras and uvicorn)::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test uvicorn examples.fastapi_app:app

Endpoints: ``/users/{uid}`` (one query on a pooled connection), ``/memory`` (the optimizer's status),
``/metrics`` (Prometheus text: the library's metrics beside the default process/GC ones).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    generate_latest,
)

from sanaa_async_mem.integrations.prometheus import SanaaCollector
from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
from sanaa_async_mem.optimizer import MemoryOptimizer
from sanaa_async_mem.resources.adapters import asyncpg_pool

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def create_app(dsn: str | None = None) -> FastAPI:
    dsn = dsn or os.environ.get("DATABASE_URL", DEFAULT_DSN)

    @contextlib.asynccontextmanager
    async def startup(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # Runs inside memory_lifespan: the optimizer and its resource manager exist already.
        pool = asyncpg_pool(dsn, min_size=1, max_size=10, name="db", application_name="example")
        await pool.open()  # fail fast if the database is unreachable (the manager closes it on shutdown)
        app.state.resource_manager.register_resource("db", pool)
        # A registry of this app's own (the default one would do in a single-app process).
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(SanaaCollector(app.state.memory_optimizer))
        yield {"metrics_registry": registry}

    # The middleware also tells the lifespan when startup is over: the startup heap is frozen then.
    app = FastAPI(lifespan=memory_lifespan(MemoryOptimizer, lifespan=startup))
    app.add_middleware(GCRequestMiddleware)

    @app.get("/users/{uid}")
    async def user(request: Request, uid: int) -> dict[str, Any]:
        async with request.state.resource_manager.acquire("db", "load user") as conn:
            row = await conn.fetchrow("SELECT $1::int AS id, 'user ' || $1::text AS name", uid)
        return dict(row)

    @app.get("/memory")
    async def memory(request: Request) -> dict[str, Any]:
        status: dict[str, Any] = request.state.memory_optimizer.get_memory_status()
        return status

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)

    return app


app = create_app()
