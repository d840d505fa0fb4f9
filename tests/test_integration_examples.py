"""The example services run against the real PostgreSQL: a query on a pooled connection, /memory and
/metrics, then a clean shutdown (the pool closed, GC settings restored)."""

from __future__ import annotations

import gc
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
import httpx
from aiohttp.test_utils import TestClient, TestServer
from asgi_lifespan import LifespanManager

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    """Import examples/<name>.py by path (the examples directory is not an installed package)."""
    spec = importlib.util.spec_from_file_location(f"sanaa_examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("gc_restored")


def check_metrics(text: str) -> None:
    # The pool has one name everywhere: the resource's, the one handlers acquire it by.
    assert 'sanaa_pool_acquired_total{pool="db"}' in text
    assert 'pool="postgres"' not in text
    assert "sanaa_pool_wait_seconds_bucket" in text
    assert "process_resident_memory_bytes" in text  # the default collectors, beside ours, no clash


async def test_fastapi_example(pg_dsn: str) -> None:
    thresholds = gc.get_threshold()
    app = load("fastapi_app").create_app(pg_dsn)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/users/7")).json() == {"id": 7, "name": "user 7"}
            assert (await client.get("/users/abc")).status_code == 422
            memory = (await client.get("/memory")).json()
            metrics = (await client.get("/metrics")).text
        pool = app.state.resource_manager.get_resource_stats("db").pool
        assert pool is not None and pool.size >= 1
    assert 0 <= memory["system_memory"]["percentage"] <= 100
    assert memory["resources"]["resources"]["db"]["acquisitions"] == 1
    assert memory["pools"]["db"]["acquired"] == 1
    check_metrics(metrics)
    assert app.state.resource_manager.names == ()  # closed and unregistered on shutdown
    assert gc.get_threshold() == thresholds


async def test_aiohttp_example(pg_dsn: str) -> None:
    thresholds = gc.get_threshold()
    module = load("aiohttp_app")
    app = module.create_app(pg_dsn)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get("/users/7")
        assert await response.json() == {"id": 7, "name": "user 7"}
        bad = await client.get("/users/abc")
        assert bad.status == 400  # the client's mistake, said so: not a 500 with a traceback
        assert "uid" in (await bad.json())["error"]
        memory = await (await client.get("/memory")).json()
        metrics = await (await client.get("/metrics")).text()
    assert 0 <= memory["system_memory"]["percentage"] <= 100
    check_metrics(metrics)
    assert gc.get_threshold() == thresholds
