"""``sanaa-mem demo``: a small real service under load, with every memory-health tool switched on.

What runs, all on 127.0.0.1:

* in this process, the service: an HTTP server (``GET /items/<id>``) whose handler takes a database
  connection from the :class:`~sanaa_async_mem.resources.ResourceManager` of a
  :class:`~sanaa_async_mem.MemoryOptimizer` (an embedded SQLite database in a temporary directory through
  aiosqlite, or PostgreSQL when ``dsn`` is given, through asyncpg), with the optimizer running as a service
  runs it: the profiler (snapshots every ``interval`` seconds, appended to a JSON Lines log), the GC
  optimizer and scheduler, and the loop-lag monitor;
* in a separate process (``python -m sanaa_async_mem.cli._load``), the load: ``clients`` keep-alive HTTP
  clients, bounded in time (``duration``) and count (``max_requests``). So the RSS, the leak verdict and the
  loop lag the demo shows are the service's alone.

With ``leak=True`` the handler keeps a record of every request for ever, so the leak detector fires.

The database is reached before anything else happens: a bad ``dsn`` fails at once with the driver's
message, and the files of an earlier run are left as they were. The run ends after ``duration`` seconds or
on Ctrl-C (the load stops, then everything closes in order), then writes the snapshot log, a JSON summary
and (with plotly installed) the HTML report. Every database connection the pool opened is closed by then:
the summary's ``left open`` counts those that were not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from .._stats import Histogram, HistogramSnapshot
from ..errors import PoolTimeout
from ..memory.trend import TrendAnalyzer
from ..optimizer import MemoryOptimizer
from ..pools.pool import AsyncPool
from ..resources.manager import ResourceManager
from ._http import HTTPServer
from ._load import ROWS
from ._metrics import with_metrics
from ._view import make_view

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


class DemoError(Exception):
    """The demo could not run (the database is unreachable, the load could not start): exit code 3."""


class _LoadProcess:
    """The load generator in a process of its own (see :mod:`._load`), and its latest figures."""

    def __init__(self, port: int, options: DemoOptions) -> None:
        self.port = port
        self.options = options
        self.figures: dict[str, Any] = {
            "sent": 0,
            "ok": 0,
            "errors": 0,
            "latency": Histogram().snapshot().as_dict(),
        }
        self.done = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        o = self.options
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sanaa_async_mem.cli._load",
            str(self.port),
            "--clients",
            str(o.clients),
            "--max-requests",
            str(o.max_requests),
            "--seed",
            str(o.seed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # Its own process group: Ctrl-C reaches the demo, which stops the load itself, in order.
            start_new_session=True,
        )
        assert self._proc.stdout is not None
        # Wait until it is up (its first line), so a short run is not spent starting an interpreter.
        try:
            first = await asyncio.wait_for(self._proc.stdout.readline(), 60.0)
        except TimeoutError:
            first = b""
        if not first:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            raise DemoError("the load generator process did not start")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        try:
            async for line in self._proc.stdout:
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict):
                        self.figures = data
        finally:
            self.done.set()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def finished(self) -> bool:
        """The load ended by itself (``max_requests`` sent, or the process exited)."""
        return self.done.is_set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Ask the load to stop (SIGTERM), wait for its last figures, kill it if it does not stop in time."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader
        if proc.stdin is not None:
            proc.stdin.close()


def _frame(
    started: float,
    *,
    load: _LoadProcess,
    optimizer: MemoryOptimizer,
    options: DemoOptions,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """One sample of everything the live view and the report's timeline show (plain JSON types)."""
    now = time.monotonic() - started
    res = optimizer.resource_manager.get_resource_stats("db")
    pool = res.pool
    profiler = optimizer.profiler
    verdict = profiler.verdict or profiler.analyze_memory_trends()
    snap = profiler.ring.last()
    lag_stats = optimizer.lag_monitor.snapshot()
    sched = None if optimizer.gc_scheduler is None else optimizer.gc_scheduler.stats()
    pauses = optimizer.gc_optimizer.pauses
    figures = load.figures
    sent = int(figures["sent"])
    rps = 0.0
    if previous is not None and now > previous["t"]:
        rps = (sent - previous["requests"]) / (now - previous["t"])
    return {
        "t": round(now, 3),
        "duration": options.duration,
        "requests": sent,
        "errors": int(figures["errors"]) + res.timeouts,
        "rps": rps,
        "latency_p99": float(figures["latency"]["p99"]),
        "pool_in_use": 0 if pool is None else pool.in_use,
        "pool_size": 0 if pool is None else pool.size,
        "pool_max": 0 if pool is None else pool.max_size,
        "pool_waiting": res.waiting,
        "pool_wait_p99": res.wait.p99,
        "rss": None if snap is None else snap.rss,
        "traced": None if snap is None else snap.traced,
        "trend": verdict.as_dict(),
        "trend_source": profiler.trend_source,
        "leak_alert": profiler.leak_alert_active,
        "gc_full_collections": 0 if sched is None else sum(sched.full_collections.values()),
        "gc_max_pause": pauses.max_pause,
        "gc_total_pause": pauses.total_seconds,
        "gc_mode": "off" if sched is None else sched.mode,
        "lag_p50": lag_stats.p50,
        "lag_p99": lag_stats.p99,
        "lag_max": lag_stats.max,
        "loop_utilization": optimizer.lag_monitor.utilization(),
        "leak": options.leak,
    }


def _check_dsn(dsn: str) -> None:
    scheme = dsn.partition("://")[0].lower() if "://" in dsn else ""
    if scheme not in ("postgresql", "postgres"):
        raise DemoError(f"--dsn {dsn!r} is not a PostgreSQL URL (postgresql://user@host:port/database)")


async def _open_backend(
    options: DemoOptions, tmp: str
) -> tuple[AsyncPool[Any], Callable[[Any, int], Awaitable[Any]], str]:
    """The database pool, opened (one connection made): a database that cannot be reached fails here."""
    if options.dsn is None:
        pool, query = await _sqlite_backend(tmp, options.size)
        backend = "sqlite (embedded, aiosqlite)"
    else:
        _check_dsn(options.dsn)
        pool, query = _postgres_backend(options.dsn, options.size)
        backend = "postgresql (asyncpg)"
    try:
        await pool.open()
    except (OSError, TimeoutError) as exc:
        raise DemoError(f"cannot reach the database: {exc}") from exc
    except Exception as exc:  # the driver's own errors (bad credentials, no such database, ...)
        raise DemoError(f"cannot use the database: {type(exc).__name__}: {exc}") from exc
    return pool, query, backend


async def _run(options: DemoOptions, out: TextIO) -> dict[str, Any]:
    paths = output_paths(options.report)
    # Settings first (a malformed environment variable fails here, before anything is opened).
    optimizer = MemoryOptimizer(
        snapshot_interval=options.interval,
        leak_threshold_bytes_per_second=options.leak_threshold,
        freeze_startup_heap=True,
        profiler_options={
            "store": paths["log"],
            "warmup": 1.0,
            "top_n": 10,
            # Short: tracing slows the service down, and the demo is short.
            "trace_interval": max(0.3, 2 * options.interval),
            # Two verdicts in a row, not three: a short demo must still alert.
            "persistence": 2,
            # A verdict on 30 samples and a leak on 25 more (6 s and 5 s at the default 0.2 s): a
            # service's profiler asks for a minute and a half of samples, a 20-second demo cannot.
            "analyzer": TrendAnalyzer(
                threshold=options.leak_threshold,
                min_span=max(1.0, 30 * options.interval),
                min_leak_span=max(1.0, 25 * options.interval),
            ),
        },
    )
    with tempfile.TemporaryDirectory(prefix="sanaa-demo-") as tmp:
        pool, query, backend = await _open_backend(options, tmp)
        optimizer.resource_manager.register_resource("db", pool)
        service = _Service(optimizer.resource_manager, query, options.leak)
        view = make_view(options.view, out, quiet=options.as_json)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers on Windows
            loop.add_signal_handler(signal.SIGINT, stop.set)
        interrupted = False
        timeline: list[dict[str, Any]] = []
        try:
            async with HTTPServer(with_metrics(service.handle, optimizer)) as server:
                # The run starts here: the database answered, the port is bound. Only now is the previous
                # run's log replaced (one run per log: the report's time axis must not mix runs).
                paths["log"].unlink(missing_ok=True)
                async with optimizer:
                    load = _LoadProcess(server.port, options)
                    await load.start()
                    started = time.monotonic()

                    def sample(previous: dict[str, Any] | None) -> dict[str, Any]:
                        return _frame(
                            started, load=load, optimizer=optimizer, options=options, previous=previous
                        )

                    view.start(
                        f"http://127.0.0.1:{server.port}/items/<id>",
                        backend + ", load from a separate process",
                    )
                    stop_task = asyncio.create_task(stop.wait())
                    done_task = asyncio.create_task(load.done.wait())
                    deadline = started + options.duration
                    frame: dict[str, Any] | None = None
                    try:
                        while not load.finished and not stop.is_set():
                            remaining = deadline - time.monotonic()
                            if remaining <= 0:
                                break
                            await asyncio.wait({stop_task, done_task}, timeout=min(0.5, remaining))
                            frame = sample(frame)
                            timeline.append(frame)
                            view.update(frame)
                    finally:
                        interrupted = stop.is_set()
                        stop_task.cancel()
                        done_task.cancel()
                        await load.stop()
                    elapsed = time.monotonic() - started
                    frame = sample(frame)
                    timeline.append(frame)
                    view.update(frame, final=True)
                    resource = optimizer.resource_manager.get_resource_stats("db").as_dict()
                    memory = optimizer.profiler.get_memory_report()
                    sched = optimizer.gc_scheduler
                    gc_stats = None if sched is None else dataclasses.asdict(sched.stats())
                    pauses = {
                        str(g): histogram_dict(h) for g, h in optimizer.gc_optimizer.pauses.snapshot().items()
                    }
                    lag_hist = histogram_dict(optimizer.lag_monitor.snapshot())
                    requests_served = server.requests
                    alerts = [a.as_dict() for a in optimizer.profiler.recent_alerts]
        finally:
            view.close()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            # Closes the pool however the run ended (idempotent after the optimizer's own close): a pool
            # left open would keep the process alive on its driver's threads.
            await optimizer.aclose()
        stats = pool.stats()
    figures = load.figures
    pool_dict = stats.as_dict()
    pool_dict["wait"] = histogram_dict(stats.wait)
    return {
        "service": {
            "backend": backend,
            "duration_seconds": elapsed,
            "interrupted": interrupted,
            "clients": options.clients,
            "load": "separate process",
            "pid": os.getpid(),
            "load_pid": load.pid,
            "requests": figures["sent"],
            "served": requests_served,
            "ok": figures["ok"],
            "errors": figures["errors"],
            "requests_per_second": figures["sent"] / elapsed if elapsed > 0 else 0.0,
            "latency": figures["latency"],
            "leak_planted": options.leak,
            "kept_by_leak": len(service.request_log),
        },
        "pool": pool_dict,
        "resource": resource,
        "connections_opened": stats.created,
        "connections_left_open": stats.created - stats.closed,
        "memory": memory,
        "leak_detected": any(a["kind"] == "leak" for a in alerts),
        "alerts": alerts,
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
    except (DemoError, PoolTimeout, OSError, ImportError) as exc:
        print(f"sanaa-mem demo: {exc}", file=sys.stderr)
        return 3
    paths = output_paths(options.report)
    from .report import ReportError, render_report

    try:
        paths["summary"].write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        try:
            render_report(paths["log"], paths["report"], summary=result)
            report_note = str(paths["report"])
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
        ""
        if slope is None or trend["status"] in ("insufficient_data", "collecting")
        else f" at {slope / 1024:+,.1f} KiB/s"
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
    full = 0 if sched is None else sum(sched["full_collections"].values())
    mode = "GC tuning off" if sched is None else sched["mode"]
    print(
        f"  GC:                  {full} full collections ({mode}), longest pause {max_pause * 1e3:.2f} ms",
        file=out,
    )
    lag = result["loop_lag"]
    print(f"  loop lag p50/p99:    {lag['p50'] * 1e3:.2f} / {lag['p99'] * 1e3:.2f} ms", file=out)
    files = result["files"]
    print(f"  snapshot log:        {files['log']}", file=out)
    print(f"  summary:             {files['summary']}", file=out)
    print(f"  report:              {files['report']}", file=out)
