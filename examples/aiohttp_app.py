"""An aiohttp service with a PostgreSQL pool through the ResourceManager, the MemoryOptimizer and /metrics.

Run it (needs the ``aiohttp``, ``asyncpg`` and ``prometheus`` extras)::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test python -m examples.aiohttp_app

Endpoints: ``/users/{uid}``, ``/memory``, ``/metrics`` (as in ``examples/fastapi_app.py``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    ProcessCollector,
    generate_latest,
)

from sanaa_async_mem.integrations.aiohttp import OPTIMIZER_KEY, RESOURCES_KEY, setup
from sanaa_async_mem.integrations.prometheus import SanaaCollector
from sanaa_async_mem.optimizer import MemoryOptimizer
from sanaa_async_mem.resources.adapters import asyncpg_pool

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
METRICS_KEY = web.AppKey("metrics_registry", CollectorRegistry)


def create_app(dsn: str | None = None) -> web.Application:
    dsn = dsn or os.environ.get("DATABASE_URL", DEFAULT_DSN)
    app = web.Application()
    setup(app, MemoryOptimizer)  # first, so the contexts below find the optimizer and the manager

    async def database(app: web.Application) -> AsyncIterator[None]:
        pool = asyncpg_pool(dsn, min_size=1, max_size=10, name="db", application_name="example")
        await pool.open()  # fail fast; the manager closes the pool on shutdown
        app[RESOURCES_KEY].register_resource("db", pool)
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(SanaaCollector(app[OPTIMIZER_KEY]))
        app[METRICS_KEY] = registry
        yield

    app.cleanup_ctx.append(database)

    async def user(request: web.Request) -> web.Response:
        try:
            uid = int(request.match_info["uid"])
        except ValueError:
            return web.json_response({"error": "uid must be an integer"}, status=400)
        async with request.app[RESOURCES_KEY].acquire("db", "load user") as conn:
            row = await conn.fetchrow("SELECT $1::int AS id, 'user ' || $1::text AS name", uid)
        return web.json_response(dict(row))

    async def memory(request: web.Request) -> web.Response:
        return web.json_response(request.app[OPTIMIZER_KEY].get_memory_status())

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(request.app[METRICS_KEY])
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/users/{uid}", user)
    app.router.add_get("/memory", memory)
    app.router.add_get("/metrics", metrics)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
