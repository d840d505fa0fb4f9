"""MemoryProfiler: the sampling loop that feeds the trend analyzer, stores snapshots and raises alerts.

Two cadences, both on the running event loop:

* a **cheap sample** (RSS via ``psutil.Process.memory_info``, ~10 us, and traced bytes while tracing) every
  ``sample_interval`` seconds (1 s by default), whatever the snapshot interval: every sample feeds the
  trend, so a service has a verdict within a couple of minutes of starting;
* a **stored snapshot** every ``interval`` seconds (``MEMORY_SNAPSHOT_INTERVAL``, 60 s by default): the
  full record (system memory, GC counts, USS if asked for, top consumers while tracing), kept in a ring of
  ``history`` snapshots and appended to the store with the samples taken since the previous one and the
  verdict at that moment.

The profiler composes small parts, each with one job: the trend series and the verdict it gives (the
analyzer is pure and judges any series), the :class:`~sanaa_async_mem.memory.ring.SnapshotRing` (fixed
memory: the profiler never reports its own bookkeeping as growth), the
:class:`~sanaa_async_mem.memory.tracing.TracingController` (tracemalloc only when a leak is suspected or
asked for; its statistics in a worker thread) and the :class:`~sanaa_async_mem.alerts.AlertDispatcher`
(one alert path, shared with the optimizer when it runs one).

The verdict is computed once per sample and cached: :meth:`MemoryProfiler.analyze_memory_trends`,
:attr:`MemoryProfiler.verdict`, reports and metrics exporters read that object (an immutable reference,
safe from any thread) instead of judging the history again.

A leak alert needs ``persistence`` consecutive leak verdicts and fires once per episode; the episode ends
after as many consecutive verdicts that are not a leak. A high-memory alert fires when RSS reaches
``high_memory_bytes`` and re-arms when RSS falls below 90% of it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import math
import os
import socket
import sys
import time
import tracemalloc
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread
import psutil

from .._logging import get_logger
from .._process import process
from .._stats import Histogram
from .._version import __version__
from ..alerts import Alert, AlertCallback, AlertDispatcher
from ..config import Settings, duration, positive_int, positive_number, seconds
from ..errors import ConfigurationError
from .ring import SnapshotRing
from .snapshots import MemorySnapshot, RunHeader, SnapshotStore, TopConsumer
from .tracing import TracingController
from .trend import TrendAnalyzer, TrendVerdict

__all__ = ["AlertCallback", "MemoryAlert", "MemoryProfiler"]

log = get_logger("memory")

#: A memory alert is an :class:`~sanaa_async_mem.alerts.Alert` (``leak`` or ``high_memory``); the name is
#: kept for code written against earlier versions.
MemoryAlert = Alert

# The clock of samples and snapshots (a module global so tests can simulate hours in seconds).
_monotonic = time.monotonic

# tracemalloc refuses more frames than this (a C unsigned short).
_MAX_TRACE_FRAMES = 65535
# Snapshots kept in memory at most (10 days at one per second).
_MAX_HISTORY = 864_000
# Samples carried by one stored record at most (the rest of a very long interval is thinned out).
_MAX_UNSAVED = 3600

# The analysis sees the history as between _POINTS and 2 * _POINTS equal blocks (bounded work per sample).
_POINTS = 100
# Samples between two judgements of the trend (sooner while collecting, and when a leak is
# called and a sample falls well below its line: a drop that ends it shows at once).
_JUDGE_EVERY = 5.0
_DROP_RECHECK = 64 * 1024


class MemoryProfiler:
    """Memory samples on the running event loop, a cached trend verdict, stored snapshots and alerts.

    Parameters (seconds, bytes; each validated, a bad value raises ConfigurationError naming it):

    interval
        Seconds between stored snapshots (default ``MEMORY_SNAPSHOT_INTERVAL``, 60).
    sample_interval
        Seconds between cheap samples that feed the trend (default 1; never more than ``interval``).
    history
        Stored snapshots kept in memory (a fixed-size ring).
    leak_threshold, high_memory_bytes
        Default to the settings (``MEMORY_LEAK_THRESHOLD`` 1000 B/s, ``MEMORY_HIGH_USAGE_BYTES`` 500 MiB).
    analyzer
        A :class:`~sanaa_async_mem.memory.trend.TrendAnalyzer` (default: one with ``leak_threshold``).
    store
        A path or a :class:`SnapshotStore`: each stored snapshot is appended as a JSON line, after a header
        recording this profiler's settings.
    trace, auto_trace, trace_frames, top_n, evidence_snapshots, trace_interval
        Trace from the start; trace automatically when a leak is suspected, ranking the top ``top_n``
        lines every ``trace_interval`` seconds until ``evidence_snapshots`` rankings make the evidence (then
        stop); tracemalloc's traceback depth.
    include_uss
        Measure USS at each stored snapshot (milliseconds on large processes; in a worker thread).
    persistence
        Consecutive leak verdicts that make a leak alert.
    warmup
        Seconds after the first sample in which no verdict is given (the analyzer's ``min_span``).
    alerts
        The :class:`~sanaa_async_mem.alerts.AlertDispatcher` alerts go through (default: a new one).

    Use ``async with MemoryProfiler(...) as profiler:`` or ``await profiler.start()`` /
    ``await profiler.stop()`` (``start_profiling``/``stop_profiling`` are the same). Not thread-safe: use it
    from the loop that started it; :attr:`verdict` and :meth:`get_memory_report` may be read from any thread.
    """

    def __init__(
        self,
        *,
        interval: float | None = None,
        sample_interval: float = 1.0,
        settings: Settings | None = None,
        history: int = 3600,
        leak_threshold: float | None = None,
        high_memory_bytes: int | None = None,
        analyzer: TrendAnalyzer | None = None,
        store: SnapshotStore | str | os.PathLike[str] | None = None,
        trace: bool = False,
        auto_trace: bool = True,
        trace_frames: int = 1,
        top_n: int = 10,
        evidence_snapshots: int = 3,
        trace_interval: float = 10.0,
        include_uss: bool = False,
        persistence: int = 3,
        warmup: float = 0.0,
        alerts: AlertDispatcher | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.interval = (
            self.settings.snapshot_interval
            if interval is None
            else duration("interval", interval, allow_zero=False)
        )
        self.sample_interval = min(
            duration("sample_interval", sample_interval, allow_zero=False), self.interval
        )
        self.leak_threshold = (
            self.settings.leak_threshold_bytes_per_second
            if leak_threshold is None
            else positive_number("leak_threshold", leak_threshold)
        )
        self.high_memory_bytes = (
            self.settings.high_memory_bytes
            if high_memory_bytes is None
            else positive_int("high_memory_bytes", high_memory_bytes)
        )
        positive_int("history", history, minimum=4, maximum=_MAX_HISTORY)
        positive_int("trace_frames", trace_frames, maximum=_MAX_TRACE_FRAMES)
        positive_int("top_n", top_n, maximum=10_000)
        positive_int("evidence_snapshots", evidence_snapshots, minimum=2, maximum=10_000)
        self.trace_interval = duration("trace_interval", trace_interval, allow_zero=False)
        positive_int("persistence", persistence, maximum=1_000_000)
        warm = seconds("warmup", warmup) or 0.0
        if analyzer is None:
            # A verdict on 60 samples and a leak on 80, counted in seconds at 1 Hz (at most 60 s and 80 s):
            # a profiler sampling faster (tests, short jobs) is judged as soon.
            step = self.sample_interval
            analyzer = TrendAnalyzer(
                threshold=self.leak_threshold,
                min_span=max(warm, min(60.0, 60.0 * step)),
                min_leak_span=min(80.0, 80.0 * step),
                limit=float(self.high_memory_bytes),
            )
        elif not isinstance(analyzer, TrendAnalyzer):
            raise ConfigurationError("analyzer", analyzer, "must be a TrendAnalyzer")
        elif analyzer.limit is None:
            # The time to the limit is projected to the high-memory threshold unless the analyzer has one.
            analyzer = dataclasses.replace(analyzer, limit=float(self.high_memory_bytes))
        if alerts is not None and not isinstance(alerts, AlertDispatcher):
            raise ConfigurationError("alerts", alerts, "must be an AlertDispatcher or None")
        self.analyzer = analyzer
        self.top_n = top_n
        self.evidence_snapshots = evidence_snapshots
        self.include_uss = include_uss
        self.persistence = persistence
        self.auto_trace = auto_trace
        self._trace_requested = trace
        self.store = store if store is None or isinstance(store, SnapshotStore) else SnapshotStore(store)
        self.alerts = alerts if alerts is not None else AlertDispatcher()
        self.tracing = TracingController(frames=trace_frames, top_n=top_n)
        self.ring = SnapshotRing(history)

        self._task: asyncio.Task[None] | None = None
        self._cleanup_tasks: set[asyncio.Future[None]] = set()
        self._store_write: asyncio.Future[None] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._series = _TrendSeries()
        self._unsaved: list[tuple[float, int, int | None]] = []
        self._verdict: TrendVerdict | None = None
        self._judged_seq = -1
        self._judged_at = -math.inf
        self._leak_run = 0
        self._clear_run = 0
        self._leak_alert_active = False
        self._high_alert_active = False
        self._auto_rankings = 0
        self._auto_trace_done = False
        self._samples_since_evidence = 0
        self._next_rank = 0.0
        self._evidence: tuple[TopConsumer, ...] = ()
        self._unsaved_evidence: tuple[TopConsumer, ...] = ()
        self._header_written = False
        self.ticks = 0  # stored snapshots taken
        self.samples = 0  # cheap samples taken (stored snapshots included)
        self.failures = 0
        # The sampler's own cost on the loop (seconds): measuring, and judging + alerting.
        self.snapshot_seconds = Histogram()
        self.analysis_seconds = Histogram()

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the sampling task is alive."""
        return self._task is not None and not self._task.done()

    running = is_running

    async def start(self) -> None:
        """Start the sampling task on the running loop (and tracing, if ``trace=True``).

        Calling it while running is a no-op: there is never a second task. Opens the store, if any
        (OSError if it cannot be opened). If cancelled while opening, nothing is started.
        """
        if self.is_running:
            log.debug("start() while already running: ignored")
            return
        if self.store is not None:
            await self.store.open()
            if not self._header_written:
                await self.store.append(self.run_header())
                self._header_written = True
        if self._trace_requested and not tracemalloc.is_tracing():
            await self.tracing.start("requested")
        # Created last and without an await after it: a cancelled start leaves no task behind.
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sanaa-memory-profiler")
        log.info(
            "memory profiler started (samples every %.3g s, snapshots every %.3g s)",
            self.sample_interval,
            self.interval,
            extra={
                "sanaa_interval_seconds": self.interval,
                "sanaa_sample_interval_seconds": self.sample_interval,
            },
        )

    async def stop(self) -> None:
        """Stop the sampling task and wait until it has finished; then write a last record (so the log ends
        with the final verdict), close the store and stop our tracing.

        Prompt: the task is cancelled wherever it is waiting. A no-op when not running. Pending async alert
        callbacks get up to one interval (at most 5 s) to finish, then are cancelled. If this call is itself
        cancelled, the caller gets CancelledError at once while the clean-up still completes in a shielded
        task: nothing is left half-stopped.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        cleanup = asyncio.ensure_future(self._finish_stop(task))
        self._cleanup_tasks.add(cleanup)
        cleanup.add_done_callback(self._cleanup_tasks.discard)
        await asyncio.shield(cleanup)

    start_profiling = start
    stop_profiling = stop

    async def _finish_stop(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            # asyncio.wait, not await task: the task's own CancelledError is expected, not ours.
            await asyncio.wait({task})
        await self.alerts.drain(min(self.interval, 5.0))
        if self.tracing.owned:
            await self.tracing.stop()
        else:
            await self.tracing.wait_idle()
        if self._store_write is not None and not self._store_write.done():
            await asyncio.wait({self._store_write})  # the last record reaches the file before it closes
        if task is not None and self.store is not None and self.store.is_open and self._unsaved:
            try:
                await self.store.append(self._record(self._measure_cheap(), ()))
            except (OSError, ValueError) as exc:
                log.warning("could not write the last snapshot record: %r", exc)
        if self.store is not None:
            await self.store.close()
        if task is not None:
            log.info(
                "memory profiler stopped",
                extra={"sanaa_snapshots": self.ticks, "sanaa_failures": self.failures},
            )

    async def __aenter__(self) -> MemoryProfiler:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def run_header(self) -> RunHeader:
        """The header a store gets before this profiler's first snapshot: where, when, with which settings."""
        return RunHeader(
            started=time.time(),
            monotonic=time.monotonic(),
            pid=os.getpid(),
            host=socket.gethostname(),
            python=sys.version.split()[0],
            library=__version__,
            settings=self.settings_record(),
        )

    def settings_record(self) -> dict[str, Any]:
        """The settings that decide this profiler's verdicts, as plain data (recorded in the store)."""
        return {
            "leak_threshold": self.leak_threshold,
            "high_memory_bytes": self.high_memory_bytes,
            "interval": self.interval,
            "sample_interval": self.sample_interval,
            "persistence": self.persistence,
            "analyzer": dataclasses.asdict(self.analyzer),
        }

    # --- the loop --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        step = self.sample_interval
        next_at = loop.time()
        next_snapshot = next_at
        while True:
            delay = next_at - loop.time()
            if delay < 0:
                # We fell behind (a blocked loop, a slow tick): skip the missed ticks instead of bursting.
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)
            now = loop.time()
            try:
                # Half a step of tolerance, so a snapshot falls on the sample tick nearest its time.
                if now >= next_snapshot - step / 2:
                    next_snapshot = max(next_snapshot + self.interval, now + self.interval / 2)
                    await self.take_snapshot()
                else:
                    self.sample()
                await self._after_sample()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "memory sample failed (%d failures so far): %r",
                    self.failures,
                    exc,
                    exc_info=True,
                    extra={"sanaa_failures": self.failures},
                )
            next_at += step

    def sample(self) -> TrendVerdict:
        """Take one cheap sample now (RSS, traced bytes while tracing), judge the trend, raise alerts, and
        return the verdict. Synchronous, on the caller's thread: ~10 us to measure plus the analysis."""
        started = time.perf_counter()
        rss = int(process().memory_info().rss)
        traced = self.tracing.traced_memory()
        self._add_sample(_monotonic(), rss, None if traced is None else traced[0])
        self.snapshot_seconds.record(time.perf_counter() - started)
        return self._judge()

    def _add_sample(self, mono: float, rss: int, traced: int | None) -> None:
        self._series.append(mono, rss, traced)
        if len(self._unsaved) >= _MAX_UNSAVED:
            del self._unsaved[::2]  # thin out rather than grow: the record is a summary, not the source
        self._unsaved.append((mono, rss, traced))
        self.samples += 1

    def _judge(self) -> TrendVerdict:
        started = time.perf_counter()
        verdict = self._analyze()
        self._check_alerts(verdict)
        self.analysis_seconds.record(time.perf_counter() - started)
        return verdict

    def _analyze(self) -> TrendVerdict:
        previous = self._verdict
        if previous is not None and self._judged_seq == self.samples:
            return previous
        ts, ys = self._series.series(self.analyzer.min_samples)
        if (
            previous is not None
            and previous.status != "collecting"
            and ts
            and ts[-1] - self._judged_at < _JUDGE_EVERY * self.sample_interval
            and not (previous.is_leak and ys[-1] < previous.level - _DROP_RECHECK)
        ):
            return previous  # judged a moment ago: every few seconds is enough (and keeps the cost down)
        verdict = self.analyzer.analyze(ts, ys, previous=previous)
        self._verdict = verdict
        self._judged_seq = self.samples
        self._judged_at = ts[-1] if ts else 0.0
        return verdict

    async def _after_sample(self) -> None:
        """Automatic tracing: start when a leak is suspected, rank while it lasts, keep the evidence."""
        verdict = self._verdict
        if verdict is None:
            return
        suspected = verdict.significant and verdict.slope_high >= self.leak_threshold
        self._samples_since_evidence += 1
        if (
            self._auto_trace_done
            and not suspected
            and self._clear_run >= self.persistence
            and self._samples_since_evidence * self.sample_interval >= 600.0
        ):
            # The episode is over, and long enough ago that starting and stopping tracemalloc (which moves
            # RSS by itself) cannot be what ended it: a new episode may be traced again.
            self._auto_trace_done = False
        if not self.auto_trace:
            return
        if self.tracing.reason == "suspected leak":
            now = _monotonic()
            if now < self._next_rank:
                return
            self._next_rank = now + self.trace_interval
            await self.tracing.rank()
            self._auto_rankings += 1
            if self._auto_rankings >= self.evidence_snapshots:
                self._evidence = await self.tracing.evidence()
                self._unsaved_evidence = self._evidence
                self._auto_trace_done = True
                self._samples_since_evidence = 0
                log.warning(
                    "leak evidence captured: largest growth at %s",
                    self._evidence[0].location if self._evidence else "<none>",
                    extra={"sanaa_top_consumers": [c.as_dict() for c in self._evidence]},
                )
                await self.tracing.stop()
            return
        if suspected and not self._auto_trace_done and not tracemalloc.is_tracing():
            self._auto_rankings = 0
            self._next_rank = 0.0
            await self.tracing.start("suspected leak")

    # --- snapshots ---------------------------------------------------------------------------------------

    async def take_snapshot(self) -> MemorySnapshot:
        """Measure now, keep the snapshot in the ring (and the store), judge the trend, and return it.

        The cheap numbers are read on the loop; USS (if ``include_uss``) and tracemalloc statistics run in a
        worker thread (one at a time). Raises psutil/OS errors from the measurement. Cancellation: if
        cancelled before the measurement completes, nothing is recorded; once it is kept, its line is written
        to the store even if the call is cancelled (the write is shielded, and ``stop`` waits for it).
        An OSError from the store propagates (the sampling task counts it and goes on).
        """
        started = time.perf_counter()
        snap = self._measure_cheap()
        on_loop = time.perf_counter() - started
        uss: int | None = None
        if self.include_uss:
            if self._limiter is None:
                self._limiter = anyio.CapacityLimiter(1)
            full = await anyio.to_thread.run_sync(process().memory_full_info, limiter=self._limiter)
            uss = int(full.uss)
        top: tuple[TopConsumer, ...] = ()
        if self.tracing.active:
            top = await self.tracing.rank()
        snap = dataclasses.replace(snap, uss=uss, top=top)
        self.ring.append(snap)
        self._add_sample(snap.monotonic, snap.rss, snap.traced)
        self.ticks += 1
        self.snapshot_seconds.record(on_loop)
        self._judge()
        if self.store is not None:
            record = self._record(snap, top)
            # Shielded, and chained after the previous write: a snapshot in the ring is in the file too,
            # in order, even when the caller (or stop) cancels this call.
            previous = self._store_write
            write = asyncio.ensure_future(self._append_after(previous, self.store, record))
            self._store_write = write
            await asyncio.shield(write)
        else:
            self._unsaved.clear()
        return snap

    def _measure_cheap(self) -> MemorySnapshot:
        mem = process().memory_info()
        vm = psutil.virtual_memory()
        traced = self.tracing.traced_memory()
        return MemorySnapshot(
            timestamp=time.time(),
            monotonic=_monotonic(),
            rss=int(mem.rss),
            vms=int(mem.vms),
            system_total=int(vm.total),
            system_available=int(vm.available),
            system_percent=float(vm.percent),
            gc_counts=tuple(gc.get_count()),
            traced=None if traced is None else traced[0],
            traced_peak=None if traced is None else traced[1],
        )

    def _record(self, snap: MemorySnapshot, top: tuple[TopConsumer, ...]) -> MemorySnapshot:
        """The stored form: the snapshot with the samples since the previous record, the verdict now (and
        the series it judged), and leak evidence captured since the previous record."""
        samples = tuple(self._unsaved)
        self._unsaved.clear()
        verdict: dict[str, Any] | None = None
        if self._verdict is not None:
            verdict = self._verdict.as_dict()
            verdict["source"] = self._series.source
        evidence, self._unsaved_evidence = self._unsaved_evidence, ()
        return dataclasses.replace(snap, top=top, samples=samples, verdict=verdict, evidence=evidence)

    @staticmethod
    async def _append_after(
        previous: asyncio.Future[None] | None, store: SnapshotStore, snap: MemorySnapshot
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        await store.append(snap)

    @property
    def history(self) -> tuple[MemorySnapshot, ...]:
        """The stored snapshots kept in memory, oldest first (at most ``history`` of them)."""
        return self.ring.snapshots()

    # --- tracing -----------------------------------------------------------------------------------------

    @property
    def is_tracing(self) -> bool:
        return tracemalloc.is_tracing()

    async def start_tracing(self, *, reason: str = "requested") -> None:
        """Start tracemalloc unless something already traces; idempotent. Tracing makes allocation-heavy
        code several times slower: turn it off with :meth:`stop_tracing`. Shielded: a cancelled call still
        leaves tracing on and owned by this profiler (and :meth:`stop` turns it off)."""
        await self.tracing.start(reason)

    async def stop_tracing(self) -> None:
        """Stop tracemalloc if this profiler started it (a trace the application started is left alone).
        Shielded: completes even if the caller is cancelled."""
        await self.tracing.stop()

    @property
    def evidence(self) -> tuple[TopConsumer, ...]:
        """The lines whose memory grew most during the last suspected leak (empty until captured)."""
        return self._evidence

    # --- analysis ----------------------------------------------------------------------------------------

    @property
    def verdict(self) -> TrendVerdict | None:
        """The verdict of the latest sample (None before the first). Safe to read from any thread."""
        return self._verdict

    def analyze_memory_trends(self) -> TrendVerdict:
        """The trend verdict over the samples: the cached one, or judged now if samples arrived since (cheap,
        bounded work; never raises for lack of data: it says so in the verdict)."""
        return self._analyze()

    @property
    def trend_source(self) -> str:
        """``"traced"`` (heap bytes, free of allocator caches) or ``"rss"``: what the verdict judged."""
        return self._series.source

    # --- alerts ------------------------------------------------------------------------------------------

    def add_alert_callback(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` when an alert episode starts; sync or ``async def`` (run as a task).

        A callback that raises is logged; it does not stop the profiler or the other callbacks. Raises
        ConfigurationError if it is not callable.
        """
        self.alerts.add_callback(callback)

    def remove_alert_callback(self, callback: AlertCallback) -> None:
        """Forget a callback (ValueError if it was not registered)."""
        self.alerts.remove_callback(callback)

    @property
    def recent_alerts(self) -> tuple[Alert, ...]:
        """The most recent memory alerts (``leak``, ``high_memory``), oldest first."""
        return tuple(a for a in self.alerts.recent if a.kind in ("leak", "high_memory"))

    @property
    def leak_alert_active(self) -> bool:
        return self._leak_alert_active

    def _check_alerts(self, verdict: TrendVerdict) -> None:
        # Episodes, not samples: an alert fires when a condition starts and re-arms only once it has cleared
        # for as long as it took to raise it (leak) or fallen 10% below the limit (high memory).
        if verdict.is_leak:
            self._leak_run += 1
            self._clear_run = 0
        else:
            self._leak_run = 0
            self._clear_run += 1
        if not self._leak_alert_active and self._leak_run >= self.persistence:
            self._leak_alert_active = True
            self.alerts.emit(
                "leak",
                f"memory leak suspected: {verdict.reason}",
                {
                    "value": verdict.slope,
                    "threshold": self.leak_threshold,
                    "slope_bytes_per_second": verdict.slope,
                    "slope_low": verdict.slope_low,
                    "slope_high": verdict.slope_high,
                    "samples": verdict.samples,
                    "span_seconds": verdict.span,
                },
                verdict=verdict,
            )
        elif self._leak_alert_active and self._clear_run >= self.persistence:
            self._leak_alert_active = False
            log.info("memory leak episode ended: %s", verdict.reason, extra={"sanaa_alert": "leak"})
        rss = self._series.last_rss
        if rss is None:
            return
        if not self._high_alert_active and rss >= self.high_memory_bytes:
            self._high_alert_active = True
            self.alerts.emit(
                "high_memory",
                f"process memory {rss} B is above {self.high_memory_bytes} B",
                {"value": float(rss), "threshold": float(self.high_memory_bytes)},
            )
        elif self._high_alert_active and rss < 0.9 * self.high_memory_bytes:
            self._high_alert_active = False
            log.info("high memory episode ended (%d B)", rss, extra={"sanaa_alert": "high_memory"})

    # --- report ------------------------------------------------------------------------------------------

    def get_memory_report(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict: current numbers, history summary, the trend verdict, top consumers,
        alerts, the sampler's own cost and recommendations. Reads the cached verdict (judging anew only if
        samples arrived since): cheap, and safe from any thread."""
        verdict = self._verdict if self._verdict is not None else self._analyze()
        current = self.ring.last()
        history: dict[str, Any] = {"snapshots": len(self.ring), "capacity": self.ring.capacity}
        summary = self.ring.rss_summary()
        if summary is not None:
            first_t, last_t, rss_first, rss_last, rss_min, rss_max = summary
            history.update(
                span_seconds=last_t - first_t,
                rss_first=rss_first,
                rss_last=rss_last,
                rss_min=rss_min,
                rss_max=rss_max,
            )
        top = self.tracing.last_top if self.tracing.active and self.tracing.last_top else self._evidence
        report: dict[str, Any] = {
            "current": None if current is None else _without_top(current.as_dict()),
            "history": history,
            "trend": verdict.as_dict(),
            "trend_source": self._series.source,
            "top_consumers": [c.as_dict() for c in top],
            "tracing": {"active": self.tracing.active, "reason": self.tracing.reason},
            "alerts": {
                "leak_active": self._leak_alert_active,
                "high_memory_active": self._high_alert_active,
                "recent": [a.as_dict() for a in self.recent_alerts],
            },
            "thresholds": {
                "leak_bytes_per_second": self.leak_threshold,
                "high_memory_bytes": self.high_memory_bytes,
            },
            "sampler": {
                "running": self.is_running,
                "interval_seconds": self.interval,
                "sample_interval_seconds": self.sample_interval,
                "snapshots": self.ticks,
                "samples": self.samples,
                "failures": self.failures,
                "snapshot_seconds": self.snapshot_seconds.snapshot().as_dict(),
                "analysis_seconds": self.analysis_seconds.snapshot().as_dict(),
            },
        }
        report["recommendations"] = self._recommendations(verdict, current, top)
        return report

    def _recommendations(
        self, verdict: TrendVerdict, current: MemorySnapshot | None, top: tuple[TopConsumer, ...]
    ) -> list[str]:
        out: list[str] = []
        if verdict.status == "collecting":
            wait = verdict.seconds_to_verdict
            out.append(
                "Collecting data: no verdict on the trend yet"
                + (f" (about {wait:,.0f} s more)" if wait is not None else "")
                + ": keep the profiler running."
            )
        elif verdict.is_leak or self._leak_alert_active:
            out.append(
                f"Memory grows at about {verdict.slope:,.0f} B/s "
                f"({verdict.slope_low:,.0f}..{verdict.slope_high:,.0f}):"
                " look for collections that only grow (caches without a bound, lists of results, listeners"
                " never removed, tasks kept in sets)."
            )
            if top:
                out.append(
                    f"The largest growth is allocated at {top[0].location} (+{top[0].size_diff:,} B"
                    + (f": {top[0].text}" if top[0].text else "")
                    + ")."
                )
            elif not tracemalloc.is_tracing():
                out.append("Start tracing (trace=True or start_tracing()) to see which lines allocate it.")
            if verdict.seconds_to_limit is not None:
                out.append(
                    f"At this rate the process reaches {self.high_memory_bytes:,} B in about "
                    f"{verdict.seconds_to_limit:,.0f} s."
                )
        elif verdict.status == "growing":
            out.append(f"Memory grows slowly ({verdict.reason}); watch it, it is below the leak threshold.")
        elif verdict.status == "warming_up":
            out.append(f"Memory is warming up ({verdict.reason}): no leak unless the growth goes on.")
        elif verdict.status == "cycling":
            out.append(f"Memory cycles ({verdict.reason}): a cache filling and being flushed, not a leak.")
        if current is not None and current.rss >= self.high_memory_bytes:
            out.append(
                f"RSS ({current.rss:,} B) is above the high-memory threshold ({self.high_memory_bytes:,} B):"
                " bound caches and pools, or process large data in chunks."
            )
        if current is not None and current.system_percent >= 90.0:
            out.append(f"The system is low on memory ({current.system_percent:.0f}% used).")
        if tracemalloc.is_tracing() and self.tracing.reason == "requested":
            out.append("tracemalloc is on: it slows allocation-heavy code several times; stop it when done.")
        if self.failures:
            out.append(f"{self.failures} samples failed: see the sanaa.memory log.")
        if not out:
            out.append("No memory problem detected.")
        return out


class _TrendSeries:
    """The samples of the last ``window`` seconds the trend is judged on, as at most ``2 * _POINTS`` equal
    blocks (bounded memory and work).

    Blocks are means of consecutive samples; when there are too many, neighbours merge and the block size
    doubles. Traced bytes are judged when the newest samples all have them (they are free of allocator
    caches), but only over the current tracing episode: each time tracing starts they start from zero.
    """

    __slots__ = ("_block_size", "_blocks", "_pending", "last_rss", "source", "window")

    def __init__(self, window: float = 3600.0) -> None:
        self.window = window
        self._block_size = 1
        self._blocks: collections.deque[tuple[float, float, float | None, int]] = collections.deque()
        self._pending: list[tuple[float, int, int | None]] = []
        self.last_rss: int | None = None
        self.source = "rss"

    def append(self, t: float, rss: int, traced: int | None) -> None:
        if (self._blocks and t <= self._blocks[-1][0]) or (self._pending and t <= self._pending[-1][0]):
            return  # two samples in the same clock tick: keep the first
        self.last_rss = rss
        self._pending.append((t, rss, traced))
        if len(self._pending) >= self._block_size:
            self._blocks.append(_aggregate(self._pending))
            self._pending.clear()
        while self._blocks and self._blocks[0][0] < t - self.window:
            self._blocks.popleft()
        if len(self._blocks) >= 2 * _POINTS:
            old = list(self._blocks)
            merged = collections.deque(_merge(x, y) for x, y in zip(old[::2], old[1::2], strict=False))
            if len(old) % 2:
                merged.append(old[-1])
            self._blocks = merged
            self._block_size *= 2

    def series(self, min_samples: int) -> tuple[list[float], list[float]]:
        points = list(self._blocks)
        if self._pending:
            points.append(_aggregate(self._pending))
        tail = 0
        for p in reversed(points):
            if p[2] is None:
                break
            tail += 1
        use_traced = tail >= min_samples
        if use_traced:
            points = points[len(points) - tail :]
        self.source = "traced" if use_traced else "rss"
        ts: list[float] = []
        ys: list[float] = []
        for t, rss, traced, _ in points:
            if ts and t <= ts[-1]:
                continue
            ts.append(t)
            ys.append(traced if use_traced and traced is not None else rss)
        return ts, ys


def _aggregate(samples: list[tuple[float, int, int | None]]) -> tuple[float, float, float | None, int]:
    """(mean time, mean RSS, mean traced bytes or None, count) of consecutive samples. Means, not medians: a
    median's bias depends on the block size, which doubles as the history grows, and would show as a slope."""
    n = len(samples)
    t = sum(s[0] for s in samples) / n
    rss = sum(s[1] for s in samples) / n
    traced_values = [s[2] for s in samples if s[2] is not None]
    traced = sum(traced_values) / n if len(traced_values) == n else None
    return t, rss, traced, n


def _merge(
    a: tuple[float, float, float | None, int], b: tuple[float, float, float | None, int]
) -> tuple[float, float, float | None, int]:
    n = a[3] + b[3]
    traced = None
    if a[2] is not None and b[2] is not None:
        traced = (a[2] * a[3] + b[2] * b[3]) / n
    return (a[0] * a[3] + b[0] * b[3]) / n, (a[1] * a[3] + b[1] * b[3]) / n, traced, n


def _without_top(d: dict[str, Any]) -> dict[str, Any]:
    for key in ("top", "samples", "verdict", "evidence"):
        d.pop(key, None)
    return d
