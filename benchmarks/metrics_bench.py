"""What a Prometheus scrape costs, and what a storm of scrapes from threads does to the event loop.

    flock /tmp/sanaa-bench.lock python -m benchmarks.metrics_bench            # ~1 minute
    flock /tmp/sanaa-bench.lock python -m benchmarks.metrics_bench --quick    # ~15 s, no JSON unless --write

A live MemoryOptimizer with a resource pool and two extra pools (after some acquires, so every histogram
has samples) is exported by, in the same run:

* ``before``: the collector as it was before this rework (``benchmarks/_legacy_prometheus.py``: reads on the
  scraping thread, one bucket per doubling, 27 per histogram);
* ``sanaa``: :class:`SanaaCollector` reading afresh at every scrape (``max_age=0``);
* ``sanaa_cached``: the default (``max_age=1``: one read per second whatever the number of scrapers);
* ``native``: the floor a hand-instrumented service pays at scrape time: the same families as plain
  prometheus_client Gauge/Counter/Histogram objects with its default buckets, observed on every acquire
  (their per-acquire cost is measured too: ours is nothing, the pools already keep their histograms).

1. **Scrape cost** in process (``generate_latest`` on a registry holding only that collector): median us
   per scrape over many, sample lines and bytes.
2. **Thread storm**: ``prometheus_client.start_http_server`` in this process (one thread per request, as
   in production; ``+serve_metrics``: the library's ``serve_metrics``, whose concurrent scrapes share one
   rendering) while the loop runs acquires (4 tasks, each holding an object 1 ms); a *separate process*
   runs ``--scrapers`` threads (default 100) scraping as fast as they can for ``--seconds``. Reported:
   scrape latency p50/p99, scrapes/s, and the loop's lag p99/max measured by a LoopLagMonitor (the floor:
   the same load with no scrapes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from benchmarks._harness import median, percentile, print_table, ratio, write_results
from benchmarks._legacy_prometheus import SanaaCollector as LegacyCollector
from sanaa_async_mem import AsyncPool
from sanaa_async_mem.integrations.prometheus import SanaaCollector, serve_metrics
from sanaa_async_mem.loop_monitor import LoopLagMonitor
from sanaa_async_mem.optimizer import MemoryOptimizer

VARIANTS = ("before", "sanaa", "sanaa_cached", "native")

SCRAPER = r"""
import http.client, json, sys, threading, time
port, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
lat, errors = [], [0]
deadline = time.monotonic() + seconds
def run():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.monotonic() < deadline:
        t = time.perf_counter()
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse(); r.read()
            if r.status != 200:
                errors[0] += 1
        except Exception:
            errors[0] += 1
            conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        lat.append(time.perf_counter() - t)
start = time.monotonic()
ts = [threading.Thread(target=run) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"latencies": lat, "errors": errors[0], "elapsed": time.monotonic() - start}))
"""


class _Native:
    """The same families as plain prometheus_client metrics, observed on each acquire (the floor)."""

    def __init__(self, registry: CollectorRegistry, pools: list[str]) -> None:
        self.gauges = [
            Gauge(f"native_pool_{f}", f, ["pool"], registry=registry)
            for f in ("size", "idle", "in_use", "waiting", "max_size", "min_size")
        ]
        self.counters = [
            Counter(f"native_pool_{f}", f, ["pool"], registry=registry)
            for f in (
                "acquired",
                "created",
                "timeouts",
                "exhausted",
                "errors",
                "discarded",
                "expired",
                "held",
            )
        ]
        self.wait = Histogram("native_pool_wait_seconds", "w", ["pool"], registry=registry)
        self.use = Histogram("native_pool_use_seconds", "u", ["pool"], registry=registry)
        self.create = Histogram("native_pool_create_seconds", "c", ["pool"], registry=registry)
        self.gc = Histogram("native_gc_pause_seconds", "g", ["generation"], registry=registry)
        self.lag = Histogram("native_event_loop_lag_seconds", "l", registry=registry)
        for p in pools:
            for g in self.gauges:
                g.labels(p).set(1)
            for c in self.counters:
                c.labels(p).inc()
            for h in (self.wait, self.use, self.create):
                h.labels(p).observe(0.001)
        for gen in "012":
            self.gc.labels(gen).observe(0.001)
        self.lag.observe(0.001)


async def _optimizer_with_load() -> tuple[MemoryOptimizer, list[AsyncPool[object]]]:
    extra = [AsyncPool(object, name=f"extra{i}", max_size=4) for i in range(2)]
    for p in extra:
        await p.open()
    optimizer = MemoryOptimizer(pools=extra, snapshot_interval=0.5)
    await optimizer.start()
    optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 4})
    for _ in range(200):
        async with optimizer.resource_manager.acquire("db"):
            await asyncio.sleep(0)
        for p in extra:
            async with p.acquire():
                pass
    return optimizer, extra


def _registry(variant: str, optimizer: MemoryOptimizer) -> CollectorRegistry:
    registry = CollectorRegistry()
    if variant == "before":
        registry.register(LegacyCollector(optimizer))
    elif variant == "sanaa":
        registry.register(SanaaCollector(optimizer, max_age=0.0))
    elif variant == "sanaa_cached":
        registry.register(SanaaCollector(optimizer))
    else:
        _Native(registry, ["db", "extra0", "extra1"])
    return registry


def _time_scrapes(registry: CollectorRegistry, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        generate_latest(registry)
        times.append(time.perf_counter() - t)
    return median(times)


async def _per_acquire(n: int) -> dict[str, float]:
    """us per ``async with pool.acquire(): pass``: the pool alone (what the exporters cost on the acquire
    path) against the same acquire with two prometheus_client Histogram.observe calls (wait and use)."""
    registry = CollectorRegistry()
    wait = Histogram("w_seconds", "w", registry=registry)
    use = Histogram("u_seconds", "u", registry=registry)
    pool: AsyncPool[object] = AsyncPool(object, max_size=4)
    out: dict[str, list[float]] = {"pool": [], "pool_plus_observe": []}
    async with pool:
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(n):
                async with pool.acquire():
                    pass
            out["pool"].append((time.perf_counter() - t) / n * 1e6)
            t = time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                async with pool.acquire():
                    t1 = time.perf_counter()
                    wait.observe(t1 - t0)
                use.observe(time.perf_counter() - t1)
            out["pool_plus_observe"].append((time.perf_counter() - t) / n * 1e6)
    return {k: median(v) for k, v in out.items()}


async def _storm(
    variant: str, optimizer: MemoryOptimizer, extra: list[AsyncPool[object]], args: Any
) -> dict[str, Any]:
    kind = variant.removesuffix("+serve_metrics")
    registry = _registry(kind, optimizer) if kind != "none" else CollectorRegistry()
    serve = serve_metrics if variant.endswith("+serve_metrics") else start_http_server
    server, thread = serve(0, addr="127.0.0.1", registry=registry)
    port = server.server_port
    lag = LoopLagMonitor(0.01)
    stop = asyncio.Event()
    acquires = [0]

    async def load() -> None:
        while not stop.is_set():
            for p in extra:
                async with p.acquire():
                    await asyncio.sleep(0.001)
                acquires[0] += 1

    tasks = [asyncio.create_task(load()) for _ in range(4)]
    started = time.perf_counter()
    try:
        lag.start()
        if variant == "none":
            await asyncio.sleep(args.seconds)
            result: dict[str, Any] = {"latencies": [], "errors": 0, "elapsed": args.seconds}
        else:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                SCRAPER,
                str(port),
                str(args.scrapers),
                str(args.seconds),
                stdout=subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            result = json.loads(out)
        lag.stop()
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        server.shutdown()
        server.server_close()
        thread.join(10)
    lats = result["latencies"]
    snap = lag.snapshot()
    return {
        "scrapes_per_second": len(lats) / result["elapsed"],
        "scrape_p50_ms": percentile(lats, 50) * 1e3,
        "scrape_p99_ms": percentile(lats, 99) * 1e3,
        "scrape_errors": result["errors"],
        "loop_lag_p99_ms": snap.p99 * 1e3,
        "loop_lag_max_ms": snap.max * 1e3,
        "acquires_per_second": acquires[0] / elapsed,
        "elapsed_seconds": elapsed,
    }


async def main(args: Any) -> dict[str, Any]:
    optimizer, extra = await _optimizer_with_load()
    results: dict[str, Any] = {"scrape": {}, "storm": {}}
    try:
        scrape_rows = []
        for variant in VARIANTS:
            registry = _registry(variant, optimizer)
            text = generate_latest(registry).decode()
            lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
            buckets = [ln for ln in lines if "_bucket{" in ln]
            # Rotate: warm, then measure in rounds so the variants share the machine's drift.
            results["scrape"][variant] = {
                "lines": len(lines),
                "bucket_lines": len(buckets),
                "bytes": len(text),
            }
        rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for variant in VARIANTS:
                registry = _registry(variant, optimizer)
                rounds[variant].append(await asyncio.to_thread(_time_scrapes, registry, args.scrapes))
        for variant in VARIANTS:
            us = median(rounds[variant]) * 1e6
            results["scrape"][variant]["us_per_scrape"] = us
        before = results["scrape"]["before"]["us_per_scrape"]
        for variant in VARIANTS:
            r = results["scrape"][variant]
            r["x_before"] = ratio(r["us_per_scrape"], before)
            scrape_rows.append(
                [variant, r["us_per_scrape"], r["x_before"], r["lines"], r["bucket_lines"], r["bytes"]]
            )
        print_table(
            "scrape cost, one thread (median of rounds)",
            ["variant", "us/scrape", "x before", "lines", "bucket lines", "bytes"],
            scrape_rows,
        )
        per_acquire = await _per_acquire(args.acquires)
        results["per_acquire_us"] = per_acquire
        print_table(
            "per-acquire cost of instrumenting the acquire path (us)",
            ["pool alone (our exporters add nothing)", "pool + 2x Histogram.observe (native)", "x"],
            [
                [
                    per_acquire["pool"],
                    per_acquire["pool_plus_observe"],
                    ratio(per_acquire["pool_plus_observe"], per_acquire["pool"]),
                ]
            ],
        )
        storm_rows = []
        for variant in ("none", "before", "sanaa", "sanaa_cached", "sanaa_cached+serve_metrics"):
            r = await _storm(variant, optimizer, extra, args)
            results["storm"][variant] = r
            storm_rows.append(
                [
                    variant,
                    r["scrapes_per_second"],
                    r["scrape_p50_ms"],
                    r["scrape_p99_ms"],
                    r["scrape_errors"],
                    r["loop_lag_p99_ms"],
                    r["loop_lag_max_ms"],
                    r["acquires_per_second"],
                ]
            )
        print_table(
            f"thread storm: {args.scrapers} scraper threads (separate process) for {args.seconds:g} s, "
            "start_http_server in the service",
            [
                "variant",
                "scrapes/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "loop lag p99 ms",
                "lag max ms",
                "acquires/s",
            ],
            storm_rows,
        )
    finally:
        await optimizer.close()
        for p in extra:
            await p.close()
    return results


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", action="store_true", help="write the JSON even with --quick")
    parser.add_argument("--scrapers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--acquires", type=int, default=20000)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.scrapes, args.acquires = 3.0, 3, 50, 5000
    results = asyncio.run(main(args))
    results["options"] = dict(vars(args))
    results["load_average_after"] = os.getloadavg()
    if not args.quick or args.write:
        write_results(
            "metrics_bench", results, "python -m benchmarks.metrics_bench " + " ".join(argv or sys.argv[1:])
        )


if __name__ == "__main__":
    cli()
