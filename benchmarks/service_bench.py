"""Integration overhead on a real HTTP service: uvicorn + Starlette, with and without the optimizer.

    python -m benchmarks.service_bench                 # ~1 minute, writes results/service_bench.json
    python -m benchmarks.service_bench --quick         # ~10 seconds, smoke test (no JSON unless --write)

The server runs in its own process (uvicorn, h11, the asyncio loop), one handler that takes a pooled
connection through the ResourceManager and runs ``SELECT 1`` on it (PostgreSQL via ``adapters.asyncpg_pool``
when reachable; otherwise a pool of dummy objects and an ``await asyncio.sleep(0)``). The load comes from a
second process: ``--connections`` keep-alive HTTP/1.1 connections on loopback, each sending its next request
as soon as the previous answer arrived (closed loop), latency per request.

Variants, measured in rotated order in every round (absolute speeds drift on a shared machine, so each
"x plain" is the median over rounds of variant / plain in that round):

* ``plain``: the app alone;
* ``monitored``: the same app under ``memory_lifespan`` with ``GCRequestMiddleware`` and a default
  ``MemoryOptimizer`` (profiler, GC pause recording, lag monitor, GC scheduler), startup heap frozen
  after startup as the integrations recommend (``freeze_startup_heap=True``); ``SANAA_BENCH_OPTIMIZER``
  (JSON) passes other optimizer keywords, e.g. ``{"schedule_gc": false}``;
* ``large_heap`` / ``large_heap_monitored``: both again with a 1e6-object startup heap and handlers that
  make cyclic garbage, where full collections cost tens of milliseconds: what the GC scheduler (with the
  startup heap frozen) is for.

It also prints the middleware's own cost per request, in process (no server, no sockets).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from benchmarks._harness import percentile, print_table, ratio, write_results

PG_DSN = os.environ.get("SANAA_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
VARIANTS = ("plain", "monitored", "large_heap", "large_heap_monitored")
# Extra MemoryOptimizer keywords for the monitored variants (JSON), to find what a cost comes from.
OPTIMIZER_OPTIONS: dict[str, Any] = json.loads(os.environ.get("SANAA_BENCH_OPTIMIZER", "{}"))


# ------------------------------------------------------------------------------------------- the server


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


class _Cyclic:
    def __init__(self) -> None:
        self.me = self
        self.payload = [0] * 8


def build_app(variant: str, use_pg: bool) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sanaa_async_mem import AsyncPool
    from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan
    from sanaa_async_mem.optimizer import MemoryOptimizer
    from sanaa_async_mem.resources.manager import ResourceManager

    large = variant.startswith("large_heap")
    monitored = variant.endswith("monitored")
    heap: list[Any] = []
    manager_holder: dict[str, ResourceManager] = {}

    def make_pool() -> AsyncPool[Any]:
        if use_pg:
            from sanaa_async_mem.resources.adapters import asyncpg_pool

            return asyncpg_pool(PG_DSN, min_size=10, max_size=10, name="db")
        return AsyncPool(object, min_size=10, max_size=10, name="db")

    @contextlib.asynccontextmanager
    async def startup(app: Any) -> AsyncIterator[None]:
        if large:
            heap.extend({"k": [i, str(i)]} for i in range(330_000))  # ~1e6 tracked containers
        manager = app.state.resource_manager if monitored else ResourceManager()
        manager_holder["m"] = manager
        pool = make_pool()
        await pool.open()
        manager.register_resource("db", pool)
        try:
            yield
        finally:
            if not monitored:
                await manager.aclose()

    async def handler(request: Request) -> PlainTextResponse:
        async with manager_holder["m"].acquire("db") as conn:
            if use_pg:
                await conn.fetchval("SELECT 1")
            else:
                await asyncio.sleep(0)
        if large:
            garbage = [_Cyclic() for _ in range(20)]
            del garbage
        return PlainTextResponse("ok")

    routes = [Route("/", handler)]
    if monitored:
        app = Starlette(
            routes=routes,
            lifespan=memory_lifespan(
                lambda: MemoryOptimizer(freeze_startup_heap=True, **OPTIMIZER_OPTIONS), lifespan=startup
            ),
        )
        app.add_middleware(GCRequestMiddleware)
        return app
    return Starlette(routes=routes, lifespan=startup)


def serve(variant: str, port: int, use_pg: bool) -> None:
    import uvicorn

    app = build_app(variant, use_pg)
    uvicorn.run(app, host="127.0.0.1", port=port, http="h11", loop="asyncio", log_level="warning")


# ------------------------------------------------------------------------------------------- the client


async def _one_connection(port: int, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def load(port: int, seconds: float, connections: int, out: Any) -> None:
    async def main() -> list[float]:
        latencies: list[float] = []
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_one_connection(port, until, latencies) for _ in range(connections)))
        return latencies

    latencies = asyncio.run(main())
    out.put(latencies)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def run_variant(variant: str, seconds: float, connections: int, use_pg: bool) -> dict[str, float]:
    port = _free_port()
    cmd = [sys.executable, "-m", "benchmarks.service_bench", "--serve", variant, "--port", str(port)]
    if not use_pg:
        cmd.append("--no-pg")
    proc = subprocess.Popen(cmd)
    try:
        _wait_listening(port, proc)
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        warm = ctx.Process(target=load, args=(port, min(1.0, seconds / 4), connections, queue))
        warm.start()
        queue.get()
        warm.join()
        client = ctx.Process(target=load, args=(port, seconds, connections, queue))
        client.start()
        latencies: list[float] = queue.get()
        client.join()
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "requests_per_second": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies, default=0.0) * 1e3,
    }


# ------------------------------------------------------------------------------------ middleware alone


def middleware_cost(n: int = 200_000) -> dict[str, float]:
    """ns per request of GCRequestMiddleware around a trivial ASGI app, minus the bare app's."""
    from sanaa_async_mem.collector.scheduler import GCScheduler
    from sanaa_async_mem.integrations.starlette import GCRequestMiddleware

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        return None

    async def measure() -> tuple[float, float]:
        wrapped = GCRequestMiddleware(bare, GCScheduler(memory_cap_bytes=0))
        scope = {"type": "http"}
        best_bare = best_wrapped = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(n):
                await bare(scope, None, None)
            best_bare = min(best_bare, time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(n):
                await wrapped(scope, None, None)  # type: ignore[arg-type]
            best_wrapped = min(best_wrapped, time.perf_counter() - started)
        return best_bare / n * 1e9, best_wrapped / n * 1e9

    bare_ns, wrapped_ns = asyncio.run(measure())
    return {"bare_ns": bare_ns, "with_middleware_ns": wrapped_ns, "middleware_ns": wrapped_ns - bare_ns}


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short rounds, one round, no JSON")
    parser.add_argument("--write", action="store_true", help="write JSON even with --quick")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per variant per round")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-pg", action="store_true", help="use dummy pooled objects even if PostgreSQL is up"
    )
    args = parser.parse_args()
    use_pg = not args.no_pg and _pg_reachable()
    if args.serve:
        serve(args.serve, args.port, use_pg)
        return
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    rounds = args.rounds or (1 if args.quick else 3)
    print(f"backend: {'PostgreSQL SELECT 1' if use_pg else 'dummy objects'}; {args.connections} connections")
    per_round: list[dict[str, dict[str, float]]] = []
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        results = {v: run_variant(v, seconds, args.connections, use_pg) for v in order}
        per_round.append(results)
        print(
            f"round {r + 1}/{rounds}: "
            + json.dumps({v: round(x["requests_per_second"]) for v, x in results.items()})
        )

    def med(variant: str, key: str) -> float:
        return statistics.median(rr[variant][key] for rr in per_round)

    def med_ratio(variant: str, base: str, key: str) -> float:
        return statistics.median(ratio(rr[variant][key], rr[base][key]) for rr in per_round)

    rows = []
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        base = "large_heap" if variant.startswith("large_heap") else "plain"
        entry = {
            "requests_per_second": med(variant, "requests_per_second"),
            "p50_ms": med(variant, "p50_ms"),
            "p99_ms": med(variant, "p99_ms"),
            "max_ms": med(variant, "max_ms"),
            "throughput_x_base": med_ratio(variant, base, "requests_per_second"),
            "p99_x_base": med_ratio(variant, base, "p99_ms"),
        }
        summary[variant] = entry
        rows.append(
            [
                variant,
                entry["requests_per_second"],
                entry["throughput_x_base"],
                entry["p50_ms"],
                entry["p99_ms"],
                entry["p99_x_base"],
                entry["max_ms"],
            ]
        )
    print_table(
        f"HTTP service, median of {rounds} rounds of {seconds:g} s",
        ["variant", "req/s", "x base", "p50 ms", "p99 ms", "p99 x base", "max ms"],
        rows,
    )
    cost = middleware_cost()
    print_table(
        "GCRequestMiddleware alone (in process, best of 5)",
        ["bare app ns", "with middleware ns", "middleware ns/request"],
        [[cost["bare_ns"], cost["with_middleware_ns"], cost["middleware_ns"]]],
    )
    if not args.quick or args.write:
        write_results(
            "service_bench",
            {
                "backend": "postgresql" if use_pg else "dummy",
                "variants": summary,
                "rounds": per_round,
                "middleware": cost,
                "seconds": seconds,
                "connections": args.connections,
            },
            "python -m benchmarks.service_bench" + (" --quick" if args.quick else ""),
        )


if __name__ == "__main__":
    main()
