"""A Starlette service run as several uvicorn workers, with metrics that add up across them.

Run it (needs the ``starlette`` and ``prometheus`` extras and uvicorn)::

    export PROMETHEUS_MULTIPROC_DIR=$(mktemp -d)
    uvicorn examples.workers_app:app --workers 3 --port 8000

Endpoints: ``/work`` (one acquire from the worker's pool; answers the worker's pid and its acquires),
``/metrics`` (every worker's figures: counters and histograms summed across workers, gauges per worker
with a ``pid`` label). ``PROMETHEUS_MULTIPROC_DIR`` must be set, and empty, before the server starts:
prometheus_client reads it at import time.

``SANAA_EXPORT_INTERVAL`` (seconds, default 5) is how often each worker copies its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.integrations.prometheus import MultiprocessExporter
from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
from sanaa_async_mem.optimizer import MemoryOptimizer

INTERVAL = float(os.environ.get("SANAA_EXPORT_INTERVAL", "5"))


@contextlib.asynccontextmanager
async def startup(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    # Stands in for a database pool: the metrics are the same for any AsyncPool.
    pool: AsyncPool[object] = AsyncPool(object, name="db", max_size=4)
    app.state.resource_manager.register_resource("db", pool)
    async with MultiprocessExporter(app.state.memory_optimizer, interval=INTERVAL):
        yield {"acquires": [0]}


async def work(request: Request) -> JSONResponse:
    async with request.state.resource_manager.acquire("db", "work"):
        await asyncio.sleep(0.001)
    request.state.acquires[0] += 1
    return JSONResponse({"pid": os.getpid(), "acquires": request.state.acquires[0]})


async def metrics(request: Request) -> Response:
    # A fresh registry per scrape that reads every worker's files (prometheus_client's multiprocess mode).
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


app = Starlette(
    routes=[Route("/work", work), Route("/metrics", metrics)],
    lifespan=memory_lifespan(lambda: MemoryOptimizer(snapshot_interval=1.0), lifespan=startup),
)
app.add_middleware(GCRequestMiddleware)
