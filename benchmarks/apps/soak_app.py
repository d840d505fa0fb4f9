"""The soak benchmark's service: the library turned on as the README shows, an application that keeps nothing.

``SOAK_BACKEND`` is ``postgresql`` (``SOAK_DSN``, asyncpg adapter) or ``sqlite`` (aiosqlite, a temporary
file). ``/soak`` reports the bytes tracemalloc traces in the library's own files (the process traces with
one frame from its start): what the library itself holds, free of allocator caches.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sanaa_async_mem
from sanaa_async_mem.integrations.prometheus import SanaaCollector
from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
from sanaa_async_mem.optimizer import MemoryOptimizer

tracemalloc.start(1)
LIBRARY = str(Path(sanaa_async_mem.__file__).parent)
CLI = os.path.join(LIBRARY, "cli")


@contextlib.asynccontextmanager
async def startup(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    manager = app.state.resource_manager
    if os.environ.get("SOAK_BACKEND") == "postgresql":
        from sanaa_async_mem.resources.adapters import asyncpg_pool

        pool = asyncpg_pool(
            os.environ["SOAK_DSN"], min_size=2, max_size=8, name="db", application_name="soak"
        )

        async def query(conn: Any, i: int) -> Any:
            return await conn.fetchval("SELECT $1::int", i)

    else:
        from sanaa_async_mem.resources.adapters import aiosqlite_pool

        tmp = tempfile.mkdtemp(prefix="sanaa-soak-")
        pool = aiosqlite_pool(os.path.join(tmp, "soak.sqlite3"), min_size=2, max_size=8, name="db")

        async def query(conn: Any, i: int) -> Any:
            async with conn.execute("SELECT ?", (i,)) as cursor:
                return (await cursor.fetchone())[0]

    await pool.open()
    manager.register_resource("db", pool)
    registry = CollectorRegistry()
    registry.register(SanaaCollector(app.state.memory_optimizer))
    yield {"query": query, "registry": registry}


async def item(request: Request) -> Response:
    async with request.state.resource_manager.acquire("db", "GET /items") as conn:
        value = await request.state.query(conn, int(request.path_params["i"]))
    return JSONResponse({"id": value, "name": f"item {value}"})


async def memory(request: Request) -> Response:
    return JSONResponse(request.state.memory_optimizer.get_memory_status())


async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.state.registry), media_type="text/plain")


def _library_bytes() -> dict[str, Any]:
    snapshot = tracemalloc.take_snapshot()
    ours = [
        s
        for s in snapshot.statistics("filename")
        if s.traceback[0].filename.startswith(LIBRARY) and not s.traceback[0].filename.startswith(CLI)
    ]
    return {
        "library_traced_bytes": sum(s.size for s in ours),
        "top": [
            {
                "file": s.traceback[0].filename[len(LIBRARY) + 1 :],
                "bytes": s.size,
                "blocks": s.count,
            }
            for s in sorted(ours, key=lambda s: s.size, reverse=True)[:8]
        ],
    }


async def soak(request: Request) -> Response:
    # In a worker thread: the snapshot takes a while with a large traced heap; the loop keeps serving.
    return JSONResponse(await asyncio.to_thread(_library_bytes))


app = Starlette(
    routes=[
        Route("/items/{i:int}", item),
        Route("/memory", memory),
        Route("/metrics", metrics),
        Route("/soak", soak),
    ],
    lifespan=memory_lifespan(lambda: MemoryOptimizer(snapshot_interval=60), lifespan=startup),
)
app.add_middleware(GCRequestMiddleware)
