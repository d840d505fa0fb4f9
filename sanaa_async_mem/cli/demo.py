"""``sanaa-mem demo``: a small real service under load, with every memory-health tool switched on.

What runs, all in this process and all on 127.0.0.1:

* an HTTP service (``GET /items/<id>``) whose handler takes a database connection from a
  :class:`~sanaa_async_mem.resources.ResourceManager` pool: an embedded SQLite database in a temporary
  directory (aiosqlite), or PostgreSQL when ``dsn`` is given (asyncpg);
* a load of ``clients`` keep-alive HTTP clients, bounded in time (``duration``) and count (``max_requests``);
* the :class:`~sanaa_async_mem.memory.MemoryProfiler` (snapshots every ``interval`` seconds, appended to a
  JSON Lines log), the GC optimizer and :class:`~sanaa_async_mem.collector.GCScheduler`, and the
  :class:`~sanaa_async_mem.loop_monitor.LoopLagMonitor`.

With ``leak=True`` the handler keeps a record of every request for ever, so the leak detector fires.

It ends after ``duration`` seconds or on Ctrl-C (SIGINT stops the load, then everything closes in order),
then writes the snapshot log, a JSON summary and (with plotly installed) the HTML report. Every database
connection the pool opened is closed by then: the summary's ``left open`` counts those that were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from .._stats import Histogram, HistogramSnapshot
from ..collector.optimizer import GarbageCollectionOptimizer
from ..collector.scheduler import GCScheduler
from ..errors import PoolTimeout
from ..loop_monitor import LoopLagMonitor
from ..memory.profiler import MemoryAlert, MemoryProfiler
from ..pools.pool import AsyncPool
from ..resources.manager import ResourceManager
from ._http import HTTPClient, HTTPServer
from ._view import make_view

ROWS = 500
# Bytes the leaking handler keeps per request: enough to stand out from allocator noise within seconds.
LEAK_BYTES = 4096


@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``sanaa-mem demo`` was asked for; see ``sanaa-mem demo --help`` for each option."""

    duration: float = 20.0
    clients: int = 16
    size: int = 5
    dsn: str | None = None
    leak: bool = False
    interval: float = 0.2
    leak_threshold: float = 64 * 1024
    max_requests: int = 2_000_000
    report: Path = Path("sanaa-mem-demo.html")
    view: str = "auto"
    as_json: bool = False
    seed: int = 1


def output_paths(report: Path) -> dict[str, Path]:
    """The files one demo run writes: the HTML report, its snapshot log and its summary (next to it)."""
    stem = report.with_suffix("") if report.suffix == ".html" else report
    return {
        "report": report,
        "log": stem.with_name(stem.name + ".jsonl"),
        "summary": stem.with_name(stem.name + ".summary.json"),
    }


def histogram_dict(h: HistogramSnapshot) -> dict[str, Any]:
    """A histogram for the summary: its quantiles plus the non-empty buckets as ``[upper_bound, count]``."""
    out: dict[str, Any] = dict(h.as_dict())
    out["buckets"] = [[b, c] for b, c in zip((*h.bounds, h.max), h.counts, strict=False) if c]
    return out


class _Service:
    """The HTTP handler: one pooled connection per request, and (``leak``) a request log never trimmed."""

    def __init__(self, manager: ResourceManager, query: Callable[[Any, int], Awaitable[Any]], leak: bool):
        self.manager = manager
        self.query = query
        self.leak = leak
        self.request_log: list[tuple[str, bytes, bytearray]] = []

    async def handle(self, method: str, path: str) -> tuple[int, bytes]:
        if method != "GET" or not path.startswith("/items/"):
            return 404, b'{"error": "not found"}'
        try:
            item = int(path.removeprefix("/items/"))
        except ValueError:
            return 400, b'{"error": "item id must be an integer"}'
        async with self.manager.acquire("db", "GET /items") as conn:
            row = await self.query(conn, item)
        if row is None:
            return 404, b'{"error": "no such item"}'
        body = json.dumps({"id": row[0], "name": row[1], "price": row[2]}).encode()
        if self.leak:
            # The bug the demo plants: an audit log that only ever grows.
            self.request_log.append((path, body, bytearray(LEAK_BYTES)))
        return 200, body


async def _sqlite_backend(
    directory: str, size: int
) -> tuple[AsyncPool[Any], Callable[[Any, int], Awaitable[Any]]]:
    from ..resources.adapters.aiosqlite import aiosqlite_pool

    path = os.path.join(directory, "demo.sqlite3")
    import aiosqlite

    async with aiosqlite.connect(path) as db:
        await db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL)")
        await db.executemany(
            "INSERT INTO items VALUES (?, ?, ?)", [(i, f"item-{i}", i * 1.25) for i in range(1, ROWS + 1)]
        )
        await db.commit()

    async def query(conn: Any, item: int) -> Any:
        async with conn.execute("SELECT id, name, price FROM items WHERE id = ?", (item,)) as cursor:
            return await cursor.fetchone()

    return aiosqlite_pool(path, min_size=1, max_size=size, name="db", timeout=5.0), query


def _postgres_backend(dsn: str, size: int) -> tuple[AsyncPool[Any], Callable[[Any, int], Awaitable[Any]]]:
    from ..resources.adapters.asyncpg import asyncpg_pool

    async def query(conn: Any, item: int) -> Any:
        # generate_series stands in for a table, so the demo creates nothing in the user's database.
        row = await conn.fetchrow(
            "SELECT i, 'item-' || i, i * 1.25::float8 FROM generate_series(1, $2::int) AS i WHERE i = $1",
            item,
            ROWS,
        )
        return None if row is None else tuple(row)

    pool = asyncpg_pool(dsn, min_size=1, max_size=size, name="db", timeout=5.0, application_name="sanaa-demo")
    return pool, query


class _Load:
    """``clients`` keep-alive clients requesting random items until told to stop or the count is reached."""

    def __init__(self, port: int, clients: int, max_requests: int, seed: int) -> None:
        self.port = port
        self.clients = clients
        self.max_requests = max_requests
        self.rng = random.Random(seed)
        self.sent = 0
        self.ok = 0
        self.errors = 0
        self.latency = Histogram()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.clients):
                tg.create_task(self._client())

    async def _client(self) -> None:
        client = HTTPClient(self.port)
        try:
            while not self.stop.is_set() and self.sent < self.max_requests:
                self.sent += 1
                started = time.perf_counter()
                try:
                    status, _ = await client.get(f"/items/{self.rng.randint(1, ROWS)}")
                except (OSError, ValueError):
                    self.errors += 1
                    continue
                self.latency.record(time.perf_counter() - started)
                if status == 200:
                    self.ok += 1
                else:
                    self.errors += 1
                # Think time: keeps the load (and a leak) bounded in rate, and leaves the loop idle moments.
                await asyncio.sleep(self.rng.uniform(0.0, 0.004))
        finally:
            await client.aclose()


def _frame(
    started: float,
    *,
    load: _Load,
    manager: ResourceManager,
    profiler: MemoryProfiler,
    optimizer: GarbageCollectionOptimizer,
    scheduler: GCScheduler,
    lag: LoopLagMonitor,
    options: DemoOptions,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """One sample of everything the live view and the report's timeline show (plain JSON types)."""
    now = time.monotonic() - started
    res = manager.get_resource_stats("db")
    pool = res.pool
    verdict = profiler.analyze_memory_trends()
    snap = profiler.history[-1] if profiler.history else None
    lag_stats = lag.snapshot()
    sched = scheduler.stats()
    rps = 0.0
    if previous is not None and now > previous["t"]:
        rps = (load.sent - previous["requests"]) / (now - previous["t"])
    return {
        "t": round(now, 3),
        "duration": options.duration,
        "requests": load.sent,
        "errors": load.errors + res.timeouts,
        "rps": rps,
        "latency_p99": load.latency.snapshot().p99,
        "pool_in_use": 0 if pool is None else pool.in_use,
        "pool_size": 0 if pool is None else pool.size,
        "pool_max": 0 if pool is None else pool.max_size,
        "pool_waiting": res.waiting,
        "pool_wait_p99": res.wait.p99,
        "rss": None if snap is None else snap.rss,
        "traced": None if snap is None else snap.traced,
        "trend_status": verdict.status,
        "trend_slope": verdict.slope if verdict.status != "insufficient_data" else None,
        "trend_source": profiler.get_memory_report()["trend_source"],
        "leak_alert": any(a.kind == "leak" for a in profiler.recent_alerts),
        "gc_full_collections": sum(sched.full_collections.values()),
        "gc_max_pause": optimizer.pauses.max_pause,
        "gc_total_pause": optimizer.pauses.total_seconds,
        "gc_mode": sched.mode,
        "lag_p50": lag_stats.p50,
        "lag_p99": lag_stats.p99,
        "lag_max": lag_stats.max,
        "leak": options.leak,
    }


async def _run(options: DemoOptions, out: TextIO) -> dict[str, Any]:
    paths = output_paths(options.report)
    paths["log"].unlink(missing_ok=True)  # one run per log: the report's time axis must not mix runs
    with tempfile.TemporaryDirectory(prefix="sanaa-demo-") as tmp:
        if options.dsn is None:
            pool, query = await _sqlite_backend(tmp, options.size)
            backend = "sqlite (embedded, aiosqlite)"
        else:
            pool, query = _postgres_backend(options.dsn, options.size)
            backend = "postgresql (asyncpg)"
        optimizer = GarbageCollectionOptimizer()
        optimizer.optimize_gc_settings(startup_complete=True)
        scheduler = GCScheduler(optimizer=optimizer)
        lag = LoopLagMonitor()
        profiler = MemoryProfiler(
            interval=options.interval,
            leak_threshold=options.leak_threshold,
            store=paths["log"],
            warmup=1.0,
            top_n=10,
            # Short: tracing slows the service down, and the demo is short.
            trace_interval=max(0.3, 2 * options.interval),
            # Two verdicts in a row, not three: when tracing starts automatically the service slows down,
            # the analyzer sees a change point and needs fresh samples; a short demo must still alert.
            persistence=2,
        )
        alerts: list[MemoryAlert] = []
        profiler.add_alert_callback(alerts.append)
        timeline: list[dict[str, Any]] = []
        view = make_view(options.view, out, quiet=options.as_json)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows
            loop.add_signal_handler(signal.SIGINT, stop.set)
        interrupted = False
        try:
            async with ResourceManager() as manager:
                manager.register_resource("db", pool)
                service = _Service(manager, query, options.leak)
                async with HTTPServer(service.handle) as server, lag, scheduler, profiler:
                    load = _Load(server.port, options.clients, options.max_requests, options.seed)
                    started = time.monotonic()

                    def sample(previous: dict[str, Any] | None) -> dict[str, Any]:
                        return _frame(
                            started,
                            load=load,
                            manager=manager,
                            profiler=profiler,
                            optimizer=optimizer,
                            scheduler=scheduler,
                            lag=lag,
                            options=options,
                            previous=previous,
                        )

                    view.start(f"http://127.0.0.1:{server.port}/items/<id>", backend)
                    load_task = asyncio.create_task(load.run())
                    stop_task = asyncio.create_task(stop.wait())
                    deadline = started + options.duration
                    frame: dict[str, Any] | None = None
                    while not load_task.done() and not stop.is_set():
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        await asyncio.wait({load_task, stop_task}, timeout=min(0.5, remaining))
                        frame = sample(frame)
                        timeline.append(frame)
                        view.update(frame)
                    interrupted = stop.is_set()
                    load.stop.set()
                    stop_task.cancel()
                    await load_task
                    elapsed = time.monotonic() - started
                    frame = sample(frame)
                    timeline.append(frame)
                    view.update(frame)
                    resource = manager.get_resource_stats("db").as_dict()
                    memory = profiler.get_memory_report()
                    gc_stats = dataclasses.asdict(scheduler.stats())
                    pauses = {str(g): histogram_dict(h) for g, h in optimizer.pauses.snapshot().items()}
                    lag_hist = histogram_dict(lag.snapshot())
                    requests_served = server.requests
        finally:
            view.close()
            optimizer.restore_gc_settings()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
        stats = pool.stats()
    pool_dict = stats.as_dict()
    pool_dict["wait"] = histogram_dict(stats.wait)
    return {
        "service": {
            "backend": backend,
            "duration_seconds": elapsed,
            "interrupted": interrupted,
            "clients": options.clients,
            "requests": load.sent,
            "served": requests_served,
            "ok": load.ok,
            "errors": load.errors,
            "requests_per_second": load.sent / elapsed if elapsed > 0 else 0.0,
            "latency": histogram_dict(load.latency.snapshot()),
            "leak_planted": options.leak,
            "kept_by_leak": len(service.request_log),
        },
        "pool": pool_dict,
        "resource": resource,
        "connections_opened": stats.created,
        "connections_left_open": stats.created - stats.closed,
        "memory": memory,
        "leak_detected": any(a.kind == "leak" for a in alerts),
        "alerts": [a.as_dict() for a in alerts],
        "gc": {"scheduler": gc_stats, "pauses": pauses},
        "loop_lag": lag_hist,
        "timeline": timeline,
        "files": {k: str(v) for k, v in paths.items()},
    }


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo and print the outcome. Exit status: 0 when every connection was closed, 1 if not,
    2 for bad options, 3 when the database or the report could not be set up or written."""
    out = sys.stdout if out is None else out
    try:
        result = asyncio.run(_run(options, out))
    except (PoolTimeout, OSError, ImportError) as exc:
        print(f"sanaa-mem demo: {exc}", file=sys.stderr)
        return 3
    paths = output_paths(options.report)
    from .report import ReportError, render_report

    try:
        paths["summary"].write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            report_note = render_report(paths["log"], paths["report"], summary=result)
        except (ImportError, ReportError) as exc:
            report_note = f"not written ({exc})"
    except OSError as exc:
        print(f"sanaa-mem demo: cannot write the report: {exc}", file=sys.stderr)
        return 3
    result["files"]["report"] = report_note
    left_open = result["connections_left_open"]
    if options.as_json:
        print(json.dumps(result, indent=2, default=str), file=out)
    else:
        _print_summary(result, out)
    return 0 if left_open == 0 else 1


def _print_summary(result: dict[str, Any], out: TextIO) -> None:
    svc = result["service"]
    pool = result["pool"]
    trend = result["memory"]["trend"]
    lat = svc["latency"]
    print(
        f"{svc['requests']} requests in {svc['duration_seconds']:.1f} s from {svc['clients']} clients "
        f"({svc['requests_per_second']:.0f}/s, p99 {lat['p99'] * 1e3:.1f} ms, errors {svc['errors']})"
        + ("  [interrupted]" if svc["interrupted"] else ""),
        file=out,
    )
    print(f"  database:            {svc['backend']}", file=out)
    print(
        f"  connections opened:  {result['connections_opened']}  "
        f"(left open: {result['connections_left_open']})",
        file=out,
    )
    wait = pool["wait"]
    print(
        f"  pool wait p50/p99:   {wait['p50'] * 1e3:.2f} / {wait['p99'] * 1e3:.2f} ms   "
        f"timeouts: {pool['timeouts']}   discarded: {pool['discarded']}",
        file=out,
    )
    slope = trend.get("slope")
    slope_text = (
        "" if slope is None or trend["status"] == "insufficient_data" else f" at {slope / 1024:+,.1f} KiB/s"
    )
    print(
        f"  memory trend:        {trend['status']}{slope_text}   "
        f"leak detected: {'yes' if result['leak_detected'] else 'no'}",
        file=out,
    )
    top = result["memory"]["top_consumers"]
    if top:
        print(f"  largest growth at:   {top[0]['location']} (+{top[0]['size_diff']:,} B)", file=out)
    sched = result["gc"]["scheduler"]
    max_pause = max((p["max"] for p in result["gc"]["pauses"].values()), default=0.0)
    print(
        f"  GC:                  {sum(sched['full_collections'].values())} full collections "
        f"({sched['mode']}), longest pause {max_pause * 1e3:.2f} ms",
        file=out,
    )
    lag = result["loop_lag"]
    print(f"  loop lag p50/p99:    {lag['p50'] * 1e3:.2f} / {lag['p99'] * 1e3:.2f} ms", file=out)
    files = result["files"]
    print(f"  snapshot log:        {files['log']}", file=out)
    print(f"  summary:             {files['summary']}", file=out)
    print(f"  report:              {files['report']}", file=out)
