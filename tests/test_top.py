"""``sanaa-mem top URL`` against a real uvicorn service: --json, the plain and live views (pools with
their holders, memory, GC, loop), and errors as one line with exit code 3 (2 for bad usage)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sanaa_async_mem.cli.top import TopOptions, memory_url, render_lines, run_top
from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
from sanaa_async_mem.optimizer import MemoryOptimizer


class Service:
    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.port = 0


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[Service, uvicorn.Server]]:
    service = Service()

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        app.state.resource_manager.register_factory("db", object, max_size=2)
        yield {}

    async def slow(request: Request) -> JSONResponse:
        async with request.state.resource_manager.acquire("db", "slow report"):
            service.held.set()
            await service.release.wait()
        return JSONResponse({"ok": True})

    async def memory(request: Request) -> JSONResponse:
        return JSONResponse(request.state.memory_optimizer.get_memory_status())

    async def other(request: Request) -> JSONResponse:
        return JSONResponse({"hello": 1})

    app = Starlette(
        routes=[Route("/slow", slow), Route("/memory", memory), Route("/other", other)],
        lifespan=memory_lifespan(lambda: MemoryOptimizer(snapshot_interval=0.05), lifespan=app_lifespan),
    )
    app.add_middleware(GCRequestMiddleware)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "uvicorn exited during startup"
                await asyncio.sleep(0.01)
        service.port = server.servers[0].sockets[0].getsockname()[1]
        yield service, server
    finally:
        service.release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _slow_request(port: int) -> asyncio.StreamWriter:
    """A raw GET /slow left open: the handler holds a pooled object until the service is told to release."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    return writer


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sanaa_async_mem.cli",
        "top",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_json_plain_and_live_views_show_the_holders() -> None:
    async with serving() as (service, _server):
        writer = await _slow_request(service.port)
        async with asyncio.timeout(30):
            await service.held.wait()
        url = f"http://127.0.0.1:{service.port}/memory"

        code, out, err = await cli(url, "--json")
        assert code == 0, err
        doc = json.loads(out)
        (holder,) = doc["pools"]["db"]["holders"]
        assert holder["purpose"] == "slow report" and holder["where"].startswith(__file__)

        code, out, err = await cli(
            f"127.0.0.1:{service.port}", "--view", "plain", "--duration", "1", "--interval", "0.3"
        )
        assert code == 0, err
        assert "pool db: 1 in use" in out
        assert "holder: " in out and "[slow report]" in out and "tests/test_top.py:" in out
        assert "loop: lag p50" in out and "utilization" in out and "memory: RSS" in out
        assert out.count("--- sanaa-mem top") >= 2  # redrawn

        code, out, err = await cli(url, "--view", "live", "--duration", "0.5", "--interval", "0.2")
        assert code == 0, err
        assert "[slow report]" in out and "pool db" in out
        writer.close()


async def test_unreachable_service_is_one_line_and_exit_code_3() -> None:
    port = _free_port()
    code, out, err = await cli(f"http://127.0.0.1:{port}/memory", "--timeout", "5")
    assert code == 3
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sanaa-mem top: cannot reach") and "Traceback" not in err


async def test_not_a_memory_endpoint_is_exit_code_3() -> None:
    async with serving() as (service, _server):
        for path, expected in (("/other", "no 'pools'"), ("/missing", "HTTP 404")):
            code, _out, err = await cli(f"http://127.0.0.1:{service.port}{path}", "--json")
            assert code == 3 and expected in err and err.count("\n") == 1, err


async def test_bad_usage_is_exit_code_2() -> None:
    code, _out, err = await cli()
    assert code == 2 and "URL" in err
    code, _out, err = await cli("http://127.0.0.1:1/memory", "--interval", "0")
    assert code == 2 and "interval" in err
    code, _out, err = await cli("ftp://127.0.0.1/memory")
    assert code == 3 and "not an http(s) URL" in err


async def test_a_service_going_away_is_shown_and_retried() -> None:
    out = io.StringIO()
    err = io.StringIO()
    async with serving() as (service, server):
        options = TopOptions(
            url=f"127.0.0.1:{service.port}", interval=0.2, duration=3.0, timeout=1.0, view="plain"
        )
        running = asyncio.create_task(asyncio.to_thread(run_top, options, out, err))
        async with asyncio.timeout(30):
            while "--- sanaa-mem top" not in out.getvalue():
                await asyncio.sleep(0.05)
        server.should_exit = True
    async with asyncio.timeout(60):
        code = await running
    assert code == 0 and err.getvalue() == ""
    assert "unreachable: cannot reach" in out.getvalue()


def test_memory_url_and_rendering_without_a_service() -> None:
    assert memory_url("127.0.0.1:8000") == "http://127.0.0.1:8000/memory"
    assert memory_url("http://h:1/status/mem") == "http://h:1/status/mem"
    rows = dict(
        render_lines(
            {
                "pools": {
                    "db": {
                        "max_size": 2,
                        "size": 2,
                        "in_use": 2,
                        "idle": 0,
                        "waiting": 3,
                        "closed_by": {"broken": 1, "idle": 0},
                        "holders": [
                            {"task": "t1", "purpose": None, "held_for": 2.5, "where": "/a/b/c/app.py:12"}
                        ],
                    },
                    "buffers": {"size": 4, "hits": 1},
                },
                "loop_lag": {"p50": 0.001, "p99": 0.002, "utilization": 0.25, "utilization_method": "lag"},
            }
        )
    )
    assert "3 waiting" in rows["pool db"] and "closed: broken 1" in rows["pool db"]
    assert rows["  holder"] == "t1 [-] for 2.5 s at c/app.py:12"
    assert rows["pool buffers"] == "object pool, 4 idle"
    assert "25% busy (lag)" in rows["loop"]
