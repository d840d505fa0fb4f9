"""Soak: a service running the library for minutes under load; does the library's own memory grow?

    python -m benchmarks.soak                    # 12 minutes, writes results/soak.json
    python -m benchmarks.soak --minutes 3        # a shorter run (no JSON unless --write)

The service (its own process: uvicorn + Starlette) runs the library the way the README shows:
``memory_lifespan`` with a ``MemoryOptimizer`` (profiler sampling every second, GC optimizer and scheduler,
loop-lag monitor), ``GCRequestMiddleware``, a ``ResourceManager`` pool (PostgreSQL through the asyncpg
adapter when reachable, else an embedded SQLite database through aiosqlite) used by every request, the
Prometheus collector scraped every second and ``/memory`` read every five seconds. The application itself
keeps nothing: whatever grows is the library's (or the interpreter's allocator settling).

The load comes from another process (keep-alive HTTP/1.1 connections, closed loop, with think time). Two
independent judges, after a warm-up (the first quarter of the run, at least two minutes):

* the library's own detector: the service's final verdict and whether it raised a leak alert;
* an RSS slope measured from outside (psutil on the service's PID, once a second), by least squares and by
  Theil-Sen, with the least-squares 99% interval;

and, because RSS includes the allocator's caches, the bytes traced by tracemalloc in the library's own files
(the service traces with one frame and reports the sum for frames in ``sanaa_async_mem``), with their slope.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from benchmarks._harness import write_results

PG_DSN = os.environ.get("SANAA_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
APP = "benchmarks.apps.soak_app:app"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pg_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1.0):
            return True
    except OSError:
        return False


def _get(port: int, path: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        body: bytes = response.read()
        return body


async def _load(port: int, connections: int, stop_at: float, counts: dict[str, int]) -> None:
    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        try:
            while time.monotonic() < stop_at:
                i += 1
                writer.write(f"GET /items/{i % 500 + 1} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                await writer.drain()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                counts["requests"] += 1
                await asyncio.sleep(0.002)
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(connections)))


def _load_process(port: int, connections: int, seconds: float, out: str) -> None:
    counts = {"requests": 0}
    asyncio.run(_load(port, connections, time.monotonic() + seconds, counts))
    Path(out).write_text(json.dumps(counts))


def _slopes(ts: list[float], ys: list[float]) -> dict[str, float]:
    n = len(ts)
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    sxx = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / sxx
    resid = [y - my - slope * (t - mt) for t, y in zip(ts, ys, strict=True)]
    se = math.sqrt(sum(r * r for r in resid) / max(1, n - 2) / sxx)
    # Theil-Sen on a thinned series (pairwise slopes are O(n^2)).
    step = max(1, n // 300)
    tt, yy = ts[::step], ys[::step]
    pairs = [
        (yy[j] - yy[i]) / (tt[j] - tt[i])
        for i in range(len(tt))
        for j in range(i + 1, len(tt))
        if tt[j] > tt[i]
    ]
    return {
        "least_squares": slope,
        "least_squares_99_low": slope - 2.576 * se,
        "least_squares_99_high": slope + 2.576 * se,
        "theil_sen": statistics.median(pairs) if pairs else 0.0,
    }


def run(minutes: float, connections: int) -> dict[str, Any]:
    port = _free_port()
    backend = "postgresql" if _pg_reachable() else "sqlite"
    env = dict(os.environ, SOAK_BACKEND=backend, SOAK_DSN=PG_DSN, PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            APP,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _get(port, "/memory")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the soak service did not start") from None
                time.sleep(0.2)
        seconds = minutes * 60.0
        proc = psutil.Process(server.pid)
        counts_file = Path(f"/tmp/sanaa-soak-{port}.json")
        import multiprocessing

        loader = multiprocessing.Process(
            target=_load_process, args=(port, connections, seconds, str(counts_file))
        )
        started = time.monotonic()
        loader.start()
        rss: list[tuple[float, float]] = []
        traced: list[tuple[float, float]] = []
        next_memory = next_soak = 0.0
        while loader.is_alive():
            now = time.monotonic() - started
            rss.append((now, float(proc.memory_info().rss)))
            try:
                _get(port, "/metrics")
                if now >= next_memory:
                    next_memory = now + 5.0
                    _get(port, "/memory")
                if now >= next_soak:
                    # A traced snapshot of the whole heap is not cheap: every 20 s is enough for a slope.
                    next_soak = now + 20.0
                    stats = json.loads(_get(port, "/soak", timeout=30.0))
                    traced.append((now, float(stats["library_traced_bytes"])))
            except OSError:
                pass
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started - now)))
        loader.join()
        status = json.loads(_get(port, "/memory"))
        soak = json.loads(_get(port, "/soak"))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    requests = json.loads(counts_file.read_text())["requests"]
    counts_file.unlink(missing_ok=True)
    warmup = max(120.0, seconds / 4)
    after = [(t, v) for t, v in rss if t >= warmup]
    traced_after = [(t, v) for t, v in traced if t >= warmup]
    trend = status["trend"]
    return {
        "minutes": minutes,
        "backend": backend,
        "connections": connections,
        "requests": requests,
        "requests_per_second": requests / seconds,
        "warmup_seconds": warmup,
        "rss_first_mib": rss[0][1] / 1048576,
        "rss_last_mib": rss[-1][1] / 1048576,
        "rss_slope_after_warmup": _slopes([t for t, _ in after], [v for _, v in after]),
        "library_traced_bytes_last": traced[-1][1] if traced else None,
        "library_traced_slope_after_warmup": (
            _slopes([t for t, _ in traced_after], [v for _, v in traced_after])
            if len(traced_after) > 10
            else None
        ),
        "library_traced_top": soak["top"],
        "detector": {
            "status": trend["status"],
            "label": trend.get("label"),
            "slope": trend["slope"],
            "reason": trend["reason"],
            "leak_alert_raised": bool(status["alerts"]["recent"])
            and any(a["kind"] == "leak" for a in status["alerts"]["recent"]),
        },
        "profiler_samples": status["trend"].get("total_samples"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=12.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="write results/soak.json even for a short run")
    args = parser.parse_args()
    result = run(args.minutes, args.connections)
    rss = result["rss_slope_after_warmup"]
    rps = result["requests_per_second"]
    print(f"soak: {result['minutes']:g} min, {result['requests']:,} requests ({rps:,.0f}/s)")
    print(
        f"  RSS {result['rss_first_mib']:.1f} -> {result['rss_last_mib']:.1f} MiB; "
        f"after {result['warmup_seconds']:.0f} s warm-up: least squares {rss['least_squares']:+,.1f} B/s "
        f"(99%: {rss['least_squares_99_low']:+,.1f} .. {rss['least_squares_99_high']:+,.1f}), "
        f"Theil-Sen {rss['theil_sen']:+,.1f} B/s"
    )
    lib = result["library_traced_slope_after_warmup"]
    if lib is not None:
        print(
            f"  library's traced bytes: {result['library_traced_bytes_last']:,.0f} B, slope "
            f"{lib['least_squares']:+,.2f} B/s (99%: {lib['least_squares_99_low']:+,.2f} .. "
            f"{lib['least_squares_99_high']:+,.2f})"
        )
    det = result["detector"]
    print(
        f"  the library's own detector: {det['label'] or det['status']} ({det['reason']}); "
        f"leak alert: {det['leak_alert_raised']}"
    )
    if args.minutes >= 10 or args.write:
        write_results("soak", result, "python -m benchmarks.soak " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
