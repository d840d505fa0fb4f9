"""MemoryProfiler: a periodic snapshot task on the running loop, tiered tracing, trend verdicts and alerts.

Tiers of cost (tracing makes allocation-heavy code 3-17x slower):

* always: RSS/VMS (``psutil.Process.memory_info``, ~10 us), system memory and GC counts, on the loop;
* on request (``include_uss=True``): USS from ``memory_full_info`` (milliseconds on large processes),
  in a worker thread;
* on request (``trace=True`` / :meth:`MemoryProfiler.start_tracing`) or automatically when the trend
  analyzer sees significant growth: tracemalloc, with the top consumers and their difference from the
  previous traced snapshot computed in a worker thread. Automatic tracing stops again once it has
  captured its evidence (``evidence_snapshots`` traced snapshots).

Which methods are ``async``: ``start_profiling``, ``stop_profiling``, ``take_snapshot``, ``start_tracing``
and ``stop_tracing`` (they do I/O or run work in threads). ``analyze_memory_trends`` and
``get_memory_report`` are plain methods: they only read the in-memory history and cost well under a
millisecond, whatever the history length (the analyzer sees the history as 100-200 equal blocks of
snapshots; ``python -m benchmarks.leak_bench`` measures the on-loop time per tick).

A leak alert needs ``persistence`` consecutive leak verdicts; it fires once, and the episode ends after as
many consecutive non-leak verdicts. A high-memory alert fires when RSS reaches ``high_memory_bytes`` and
re-arms when RSS falls below 90% of it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import inspect
import os
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

import psutil

from .._logging import get_logger
from .._process import process
from .._stats import Histogram
from ..config import Settings, positive_int, positive_number, seconds
from ..errors import ConfigurationError
from .snapshots import MemorySnapshot, SnapshotStore, TopConsumer
from .trend import TrendAnalyzer, TrendVerdict

log = get_logger("memory")

AlertKind = Literal["leak", "high_memory"]

# The analysis sees the history as between _POINTS and 2 * _POINTS equal blocks (bounded work per tick).
_POINTS = 100

# tracemalloc's own bookkeeping and the import machinery are not anyone's leak.
_TRACE_FILTERS = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryAlert:
    """One alert episode starting.

    ``value``/``threshold`` are bytes/s for ``leak`` and bytes for ``high_memory``.
    """

    kind: AlertKind
    message: str
    value: float
    threshold: float
    timestamp: float
    verdict: TrendVerdict | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "timestamp": self.timestamp,
            "verdict": None if self.verdict is None else self.verdict.as_dict(),
        }


AlertCallback = Callable[[MemoryAlert], Awaitable[None] | None]


class MemoryProfiler:
    """Periodic memory snapshots on the running event loop, a trend verdict per snapshot, and alerts.

    ``interval`` (seconds) defaults to ``MEMORY_SNAPSHOT_INTERVAL`` (60); thresholds default to the
    settings (leak 1000 B/s, high memory 500 MiB). ``history`` bounds the ring buffer of snapshots kept in
    memory (the trend is judged over it). ``store`` (a path or a :class:`SnapshotStore`) appends each
    snapshot as a JSON line. ``persistence`` is how many consecutive leak verdicts make a leak alert.
    ``warmup`` (seconds) is a grace period after the first snapshot in which no leak is reported (the
    analyzer's ``min_span``). Bad values raise ConfigurationError naming the parameter.

    Use ``async with MemoryProfiler(...) as profiler:`` or ``await start_profiling()`` /
    ``await stop_profiling()``. Not thread-safe: use it from the loop that started it.
    """

    def __init__(
        self,
        *,
        interval: float | None = None,
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
        include_uss: bool = False,
        persistence: int = 3,
        warmup: float = 0.0,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.interval = (
            self.settings.snapshot_interval
            if interval is None
            else float(seconds("interval", interval, allow_zero=False) or 0.0)
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
        positive_int("history", history, minimum=4)
        positive_int("trace_frames", trace_frames)
        positive_int("top_n", top_n)
        positive_int("evidence_snapshots", evidence_snapshots, minimum=2)
        positive_int("persistence", persistence)
        warm = seconds("warmup", warmup) or 0.0
        if analyzer is None:
            analyzer = TrendAnalyzer(
                threshold=self.leak_threshold, min_span=warm, limit=float(self.high_memory_bytes)
            )
        elif not isinstance(analyzer, TrendAnalyzer):
            raise ConfigurationError("analyzer", analyzer, "must be a TrendAnalyzer")
        self.analyzer = analyzer
        self.trace_frames = trace_frames
        self.top_n = top_n
        self.evidence_snapshots = evidence_snapshots
        self.include_uss = include_uss
        self.persistence = persistence
        self.auto_trace = auto_trace
        self._trace_requested = trace
        if store is None or isinstance(store, SnapshotStore):
            self.store = store
        else:
            self.store = SnapshotStore(store)

        self._history: collections.deque[MemorySnapshot] = collections.deque(maxlen=history)
        self._task: asyncio.Task[None] | None = None
        self._callbacks: list[AlertCallback] = []
        self._callback_tasks: set[asyncio.Task[Any]] = set()
        self._cleanup_tasks: set[asyncio.Future[None]] = set()
        self._tracing_change: asyncio.Future[None] | None = None
        self._store_write: asyncio.Future[None] | None = None
        self._verdict: TrendVerdict | None = None
        self._leak_run = 0
        self._clear_run = 0
        self._leak_alert_active = False
        self._high_alert_active = False
        self._alerts: collections.deque[MemoryAlert] = collections.deque(maxlen=100)
        # Tracing state: who started tracemalloc (so we never stop a trace the application started).
        self._tracing_owned = False
        self._trace_reason: str | None = None
        self._auto_traced_snapshots = 0
        self._auto_trace_done = False
        self._snapshots_since_evidence = 0
        self._previous_trace: tracemalloc.Snapshot | None = None
        self._trace_baseline: tracemalloc.Snapshot | None = None
        self._series_source = "rss"
        # The history as equal blocks of _block_size snapshots (see _series and _remember), oldest first.
        self._seq = 0
        self._block_size = 1
        self._blocks: collections.deque[_Block] = collections.deque()
        self._pending: list[MemorySnapshot] = []
        self._evidence: tuple[TopConsumer, ...] = ()
        self._last_top: tuple[TopConsumer, ...] = ()
        self.ticks = 0
        self.failures = 0
        # The sampler's own cost on the loop (seconds): measuring, and analysing + alerting.
        self.snapshot_seconds = Histogram()
        self.analysis_seconds = Histogram()

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the periodic snapshot task is alive."""
        return self._task is not None and not self._task.done()

    async def start_profiling(self) -> None:
        """Start the periodic snapshot task on the running loop (and tracing, if ``trace=True``).

        Calling it while running is a no-op: there is never a second task. Opens the store, if any
        (OSError if it cannot be opened). If cancelled while opening, nothing is started.
        """
        if self.is_running:
            log.debug("start_profiling() while already running: ignored")
            return
        if self.store is not None:
            await self.store.open()
        if self._trace_requested and not tracemalloc.is_tracing():
            await self.start_tracing()
        # Created last and without an await after it: a cancelled start leaves no task behind.
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sanaa-memory-profiler")
        log.info(
            "memory profiler started (interval %.3g s)",
            self.interval,
            extra={"sanaa_interval_seconds": self.interval},
        )

    async def stop_profiling(self) -> None:
        """Stop the snapshot task and wait until it has finished; then close the store and stop our tracing.

        Prompt: the task is cancelled wherever it is waiting. A no-op when not running. Pending async
        alert callbacks get up to one interval (at most 5 s) to finish, then are cancelled. If this call
        is itself cancelled, the caller gets CancelledError at once while the clean-up (task, callbacks,
        tracing, store) still completes in a shielded task: nothing is left half-stopped.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        cleanup = asyncio.ensure_future(self._finish_stop(task))
        self._cleanup_tasks.add(cleanup)
        cleanup.add_done_callback(self._cleanup_tasks.discard)
        await asyncio.shield(cleanup)

    async def _finish_stop(self, task: asyncio.Task[None] | None) -> None:
        if task is not None:
            # asyncio.wait, not await task: the task's own CancelledError is expected, not ours.
            await asyncio.wait({task})
        if self._callback_tasks:
            pending = set(self._callback_tasks)
            _, still = await asyncio.wait(pending, timeout=min(self.interval, 5.0))
            for t in still:
                t.cancel()
            if still:
                await asyncio.wait(still)
        if self._tracing_owned:
            await self.stop_tracing()
        elif self._tracing_change is not None and not self._tracing_change.done():
            await self._tracing_change  # a stop begun by the cancelled task: wait until it is done
        if self._store_write is not None and not self._store_write.done():
            await asyncio.wait({self._store_write})  # the last record reaches the file before it closes
        if self.store is not None:
            await self.store.close()
        if task is not None:
            log.info(
                "memory profiler stopped",
                extra={"sanaa_snapshots": self.ticks, "sanaa_failures": self.failures},
            )

    async def __aenter__(self) -> MemoryProfiler:
        await self.start_profiling()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop_profiling()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.interval
            delay = next_at - loop.time()
            if delay < 0:
                # We fell behind (a blocked loop, a slow tick): skip the missed ticks instead of bursting.
                next_at = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "memory snapshot failed (%d failures so far): %r",
                    self.failures,
                    exc,
                    exc_info=True,
                    extra={"sanaa_failures": self.failures},
                )

    async def _tick(self) -> None:
        await self.take_snapshot()
        started = time.perf_counter()
        verdict = self.analyze_memory_trends()
        self._check_alerts(verdict)
        await self._auto_tracing(verdict)
        self.analysis_seconds.record(time.perf_counter() - started)

    # --- snapshots ---------------------------------------------------------------------------------------

    async def take_snapshot(self) -> MemorySnapshot:
        """Measure now, add the snapshot to the history (and the store), and return it.

        The cheap numbers are read on the loop; USS (if ``include_uss``) and tracemalloc statistics run in
        a worker thread. Raises psutil/OS errors from the measurement. Cancellation: if cancelled before
        the measurement completes, nothing is recorded; once it is in the history, its line is written to
        the store even if the call is cancelled (the write is shielded, and ``stop_profiling`` waits for it
        before closing the store). An OSError from the store propagates (the periodic task counts it).
        """
        started = time.perf_counter()
        mem = process().memory_info()
        vm = psutil.virtual_memory()
        counts = gc.get_count()
        wall, mono = time.time(), time.monotonic()
        traced: int | None = None
        peak: int | None = None
        tracing = tracemalloc.is_tracing()
        if tracing:
            traced, peak = tracemalloc.get_traced_memory()
        on_loop = time.perf_counter() - started
        uss: int | None = None
        if self.include_uss:
            full = await asyncio.to_thread(process().memory_full_info)
            uss = int(full.uss)
        top: tuple[TopConsumer, ...] = ()
        if tracing:
            top, current_trace = await asyncio.to_thread(self._top_consumers, self._previous_trace)
            if self._previous_trace is None:
                self._trace_baseline = current_trace
            self._previous_trace = current_trace
            self._last_top = top
        snap = MemorySnapshot(
            timestamp=wall,
            monotonic=mono,
            rss=int(mem.rss),
            vms=int(mem.vms),
            uss=uss,
            system_total=int(vm.total),
            system_available=int(vm.available),
            system_percent=float(vm.percent),
            gc_counts=tuple(counts),
            traced=traced,
            traced_peak=peak,
            top=top,
        )
        self._remember(snap)
        self.ticks += 1
        self.snapshot_seconds.record(on_loop)
        if self.store is not None:
            # Shielded, and chained after the previous write: a snapshot in the history is in the file
            # too, in order, even when the caller (or stop_profiling) cancels this call.
            previous = self._store_write
            write = asyncio.ensure_future(self._append_after(previous, self.store, snap))
            self._store_write = write
            await asyncio.shield(write)
        return snap

    @staticmethod
    async def _append_after(
        previous: asyncio.Future[None] | None, store: SnapshotStore, snap: MemorySnapshot
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        await store.append(snap)

    def _top_consumers(
        self, previous: tracemalloc.Snapshot | None
    ) -> tuple[tuple[TopConsumer, ...], tracemalloc.Snapshot | None]:
        """Runs in a worker thread: take a traced snapshot and rank lines by size (with diffs)."""
        if not tracemalloc.is_tracing():
            return (), None
        current = tracemalloc.take_snapshot().filter_traces(_TRACE_FILTERS)
        if previous is not None:
            stats = current.compare_to(previous, "lineno")
            top = tuple(
                TopConsumer(
                    location=_location(s.traceback),
                    size=s.size,
                    count=s.count,
                    size_diff=s.size_diff,
                    count_diff=s.count_diff,
                )
                for s in sorted(stats, key=lambda s: (s.size_diff, s.size), reverse=True)[: self.top_n]
            )
        else:
            top = tuple(
                TopConsumer(location=_location(s.traceback), size=s.size, count=s.count)
                for s in current.statistics("lineno")[: self.top_n]
            )
        return top, current

    @property
    def history(self) -> tuple[MemorySnapshot, ...]:
        """The snapshots kept in memory, oldest first (at most ``history`` of them)."""
        return tuple(self._history)

    # --- tracing -----------------------------------------------------------------------------------------

    @property
    def is_tracing(self) -> bool:
        return tracemalloc.is_tracing()

    async def start_tracing(self, *, reason: str = "requested") -> None:
        """Start tracemalloc (``trace_frames`` frames) unless something already traces; idempotent.

        Tracing makes allocation-heavy code several times slower: turn it off with :meth:`stop_tracing`.
        Cancellation: the start is shielded, so a cancelled call still leaves tracing on and owned by this
        profiler (and :meth:`stop_profiling` turns it off).
        """
        if tracemalloc.is_tracing() or self._tracing_owned:
            return
        self._tracing_owned = True
        self._trace_reason = reason
        self._previous_trace = None
        self._trace_baseline = None
        await self._change_tracing(tracemalloc.start, self.trace_frames)
        log.info("tracemalloc started (%s)", reason, extra={"sanaa_trace_reason": reason})

    async def stop_tracing(self) -> None:
        """Stop tracemalloc if this profiler started it (a trace the application started is left alone).

        Cancellation: the stop is shielded and completes even if the caller is cancelled.
        """
        if not self._tracing_owned:
            return
        self._tracing_owned = False
        self._trace_reason = None
        self._previous_trace = None
        self._trace_baseline = None
        # Freeing millions of traces takes a while: not on the loop.
        await self._change_tracing(tracemalloc.stop)
        log.info("tracemalloc stopped")

    async def _change_tracing(self, func: Callable[..., None], *args: Any) -> None:
        # Shielded and remembered: a cancelled caller must not leave tracing half-switched, and stopping
        # the profiler waits for a switch in flight.
        previous = self._tracing_change
        if previous is not None and not previous.done():
            await asyncio.shield(previous)
        change = asyncio.ensure_future(asyncio.to_thread(func, *args))
        self._tracing_change = change
        await asyncio.shield(change)

    async def _auto_tracing(self, verdict: TrendVerdict) -> None:
        # "Suspected": significant growth that may reach the threshold, before persistence confirms it.
        suspected = verdict.significant and verdict.slope_high >= self.leak_threshold
        self._snapshots_since_evidence += 1
        if (
            self._auto_trace_done
            and not suspected
            and self._clear_run >= self.persistence
            and self._snapshots_since_evidence >= self._history.maxlen // 2  # type: ignore[operator]
        ):
            # The episode is over, and long enough ago that starting and stopping tracemalloc (which moves
            # RSS by itself) cannot be what ended it: a new episode may be traced again.
            self._auto_trace_done = False
        if not self.auto_trace:
            return
        if self._trace_reason == "suspected leak":
            self._auto_traced_snapshots += 1
            if self._auto_traced_snapshots >= self.evidence_snapshots:
                baseline, latest = self._trace_baseline, self._previous_trace
                if baseline is not None and latest is not None and baseline is not latest:
                    self._evidence = await asyncio.to_thread(self._growth_between, baseline, latest)
                else:
                    self._evidence = self._last_top
                self._auto_trace_done = True
                self._snapshots_since_evidence = 0
                log.warning(
                    "leak evidence captured: largest growth at %s",
                    self._evidence[0].location if self._evidence else "<none>",
                    extra={"sanaa_top_consumers": [c.as_dict() for c in self._evidence]},
                )
                await self.stop_tracing()
            return
        if suspected and not self._auto_trace_done and not tracemalloc.is_tracing():
            self._auto_traced_snapshots = 0
            await self.start_tracing(reason="suspected leak")

    def _growth_between(
        self, baseline: tracemalloc.Snapshot, latest: tracemalloc.Snapshot
    ) -> tuple[TopConsumer, ...]:
        """Runs in a worker thread: the lines whose traced memory grew most from baseline to latest."""
        stats = latest.compare_to(baseline, "lineno")
        return tuple(
            TopConsumer(
                location=_location(s.traceback),
                size=s.size,
                count=s.count,
                size_diff=s.size_diff,
                count_diff=s.count_diff,
            )
            for s in sorted(stats, key=lambda s: s.size_diff, reverse=True)[: self.top_n]
        )

    # --- analysis ------------------------------------------------------------------------------------------

    def analyze_memory_trends(self) -> TrendVerdict:
        """The trend verdict over the history: traced heap bytes if every recent snapshot has them (they
        are free of allocator caches), else RSS. Cheap (bounded by the analyzer's ``max_bins``); never raises
        for lack of data (it says ``insufficient_data``)."""
        verdict = self.analyzer.analyze(*self._series())
        self._verdict = verdict
        return verdict

    def _series(self) -> tuple[list[float], list[float]]:
        # Equal blocks (one snapshot each until the history outgrows 2 * _POINTS), plus the block being
        # filled: the analyzer assumes equally noisy points, and its cost stays bounded (~0.3 ms).
        points = [(b.t, b.rss, b.traced) for b in self._blocks]
        if self._pending:
            t, rss, traced = _aggregate(self._pending)
            points.append((t, rss, traced))
        # Traced bytes are free of allocator caches, so they are preferred, but only over the current
        # tracing episode: each time tracing starts, traced bytes start again from zero.
        tail = 0
        for _, _, traced_bytes in reversed(points):
            if traced_bytes is None:
                break
            tail += 1
        use_traced = tail >= self.analyzer.min_samples
        if use_traced:
            points = points[len(points) - tail :]
        ts: list[float] = []
        ys: list[float] = []
        for t, rss, traced in points:
            if ts and t <= ts[-1]:
                continue  # two snapshots in the same clock tick: keep the first
            ts.append(t)
            ys.append(float(traced if use_traced and traced is not None else rss))
        self._series_source = "traced" if use_traced else "rss"
        return ts, ys

    def _remember(self, snap: MemorySnapshot) -> None:
        """Append to the ring buffer and keep the blocks the analysis sees in step with it."""
        self._history.append(snap)
        self._seq += 1
        self._pending.append(snap)
        if len(self._pending) >= self._block_size:
            t, rss, traced = _aggregate(self._pending)
            self._blocks.append(
                _Block(t, rss, traced, self._seq - len(self._pending) + 1, len(self._pending))
            )
            self._pending.clear()
        oldest = self._seq - len(self._history) + 1
        while self._blocks and self._blocks[0].first < oldest:
            self._blocks.popleft()  # its first snapshot has left the ring buffer
        if len(self._blocks) >= 2 * _POINTS:
            # Too many points: merge neighbours and double the block size (O(_POINTS), once per doubling).
            old = list(self._blocks)
            self._blocks = collections.deque(_merge(x, y) for x, y in zip(old[::2], old[1::2], strict=False))
            if len(old) % 2:
                self._blocks.append(old[-1])
            self._block_size *= 2

    # --- alerts --------------------------------------------------------------------------------------------

    def add_alert_callback(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` when an alert episode starts; sync or ``async def`` (run as a task).

        A callback that raises is logged; it does not stop the profiler or the other callbacks.
        """
        if not callable(callback):
            raise ConfigurationError("callback", callback, "must be callable")
        self._callbacks.append(callback)

    def remove_alert_callback(self, callback: AlertCallback) -> None:
        """Forget a callback (ValueError if it was not registered)."""
        self._callbacks.remove(callback)

    @property
    def alerts(self) -> tuple[MemoryAlert, ...]:
        """The most recent alerts (at most 100), oldest first."""
        return tuple(self._alerts)

    def _check_alerts(self, verdict: TrendVerdict) -> None:
        # Episodes, not ticks: an alert fires when a condition starts and re-arms only once it has
        # cleared for as long as it took to raise it (leak) or fallen 10% below the limit (high memory).
        if verdict.is_leak:
            self._leak_run += 1
            self._clear_run = 0
        else:
            self._leak_run = 0
            self._clear_run += 1
        if not self._leak_alert_active and self._leak_run >= self.persistence:
            self._leak_alert_active = True
            self._emit(
                MemoryAlert(
                    kind="leak",
                    message=f"memory leak suspected: {verdict.reason}",
                    value=verdict.slope,
                    threshold=self.leak_threshold,
                    timestamp=time.time(),
                    verdict=verdict,
                )
            )
        elif self._leak_alert_active and self._clear_run >= self.persistence:
            self._leak_alert_active = False
            log.info("memory leak episode ended: %s", verdict.reason, extra={"sanaa_alert": "leak"})

        if not self._history:
            return
        rss = self._history[-1].rss
        if not self._high_alert_active and rss >= self.high_memory_bytes:
            self._high_alert_active = True
            self._emit(
                MemoryAlert(
                    kind="high_memory",
                    message=f"process memory {rss} B is above {self.high_memory_bytes} B",
                    value=float(rss),
                    threshold=float(self.high_memory_bytes),
                    timestamp=time.time(),
                )
            )
        elif self._high_alert_active and rss < 0.9 * self.high_memory_bytes:
            self._high_alert_active = False
            log.info("high memory episode ended (%d B)", rss, extra={"sanaa_alert": "high_memory"})

    def _emit(self, alert: MemoryAlert) -> None:
        self._alerts.append(alert)
        extra: dict[str, Any] = {
            "sanaa_alert": alert.kind,
            "sanaa_value": alert.value,
            "sanaa_threshold": alert.threshold,
        }
        if alert.verdict is not None:
            extra.update(
                sanaa_slope_bytes_per_second=alert.verdict.slope,
                sanaa_slope_low=alert.verdict.slope_low,
                sanaa_slope_high=alert.verdict.slope_high,
                sanaa_samples=alert.verdict.samples,
                sanaa_span_seconds=alert.verdict.span,
            )
        log.warning("%s", alert.message, extra=extra)
        for callback in list(self._callbacks):
            try:
                result = callback(alert)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._callback_tasks.add(task)
                    task.add_done_callback(self._callback_done)
            except Exception:
                log.exception("memory alert callback %r failed", callback, extra={"sanaa_alert": alert.kind})

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "async memory alert callback failed",
                exc_info=task.exception(),
                extra={"sanaa_alert": "callback"},
            )

    # --- report --------------------------------------------------------------------------------------------

    def get_memory_report(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict: current numbers, history summary, trend verdict, top consumers,
        alerts, the sampler's own cost and recommendations. Analyses the history anew (cheap)."""
        verdict = self.analyze_memory_trends()
        snaps = list(self._history)
        current = snaps[-1] if snaps else None
        history: dict[str, Any] = {"snapshots": len(snaps), "capacity": self._history.maxlen}
        if snaps:
            rss = [s.rss for s in snaps]
            history.update(
                span_seconds=snaps[-1].monotonic - snaps[0].monotonic,
                rss_first=rss[0],
                rss_last=rss[-1],
                rss_min=min(rss),
                rss_max=max(rss),
            )
        top = self._last_top if tracemalloc.is_tracing() and self._last_top else self._evidence
        report: dict[str, Any] = {
            "current": None if current is None else _without_top(current.as_dict()),
            "history": history,
            "trend": verdict.as_dict(),
            "trend_source": self._series_source,
            "top_consumers": [c.as_dict() for c in top],
            "tracing": {"active": tracemalloc.is_tracing(), "reason": self._trace_reason},
            "alerts": {
                "leak_active": self._leak_alert_active,
                "high_memory_active": self._high_alert_active,
                "recent": [a.as_dict() for a in self._alerts],
            },
            "thresholds": {
                "leak_bytes_per_second": self.leak_threshold,
                "high_memory_bytes": self.high_memory_bytes,
            },
            "sampler": {
                "running": self.is_running,
                "interval_seconds": self.interval,
                "snapshots": self.ticks,
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
        if verdict.status == "insufficient_data":
            out.append(
                f"Not enough history to judge the trend yet ({verdict.samples} of "
                f"{self.analyzer.min_samples} samples): keep the profiler running or lower the interval."
            )
        elif verdict.is_leak:
            out.append(
                f"Memory grows at about {verdict.slope:,.0f} B/s "
                f"({verdict.slope_low:,.0f}..{verdict.slope_high:,.0f}):"
                " look for collections that only grow (caches without a bound, lists of results, listeners"
                " never removed, tasks kept in sets)."
            )
            if top:
                out.append(f"The largest growth is allocated at {top[0].location} (+{top[0].size_diff:,} B).")
            elif not tracemalloc.is_tracing():
                out.append("Start tracing (trace=True or start_tracing()) to see which lines allocate it.")
            if verdict.seconds_to_limit is not None:
                out.append(
                    f"At this rate the process reaches {self.high_memory_bytes:,} B in about "
                    f"{verdict.seconds_to_limit:,.0f} s."
                )
        elif verdict.status == "growing":
            out.append(f"Memory grows slowly ({verdict.reason}); watch it, it is below the leak threshold.")
        if current is not None and current.rss >= self.high_memory_bytes:
            out.append(
                f"RSS ({current.rss:,} B) is above the high-memory threshold ({self.high_memory_bytes:,} B):"
                " bound caches and pools, or process large data in chunks."
            )
        if current is not None and current.system_percent >= 90.0:
            out.append(f"The system is low on memory ({current.system_percent:.0f}% used).")
        if tracemalloc.is_tracing() and self._trace_reason == "requested":
            out.append("tracemalloc is on: it slows allocation-heavy code several times; stop it when done.")
        if self.failures:
            out.append(f"{self.failures} snapshots failed: see the sanaa.memory log.")
        if not out:
            out.append("No memory problem detected.")
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Block:
    t: float  # mean monotonic time
    rss: int  # mean RSS
    traced: int | None  # mean traced bytes, None unless every snapshot had them
    first: int  # sequence number of the first snapshot
    count: int


def _merge(a: _Block, b: _Block) -> _Block:
    n = a.count + b.count
    traced = None
    if a.traced is not None and b.traced is not None:
        traced = (a.traced * a.count + b.traced * b.count) // n
    rss = (a.rss * a.count + b.rss * b.count) // n
    return _Block((a.t * a.count + b.t * b.count) / n, rss, traced, a.first, n)


def _aggregate(snaps: list[MemorySnapshot]) -> tuple[float, int, int | None]:
    """(mean time, mean RSS, mean traced bytes or None) of consecutive snapshots.

    Means, not medians: a median's bias depends on the block size, which doubles as the history grows, and
    would show as a slope. Spikes are the analyzer's business (it trims its own bins).
    """
    n = len(snaps)
    t = sum(s.monotonic for s in snaps) / n
    rss = sum(s.rss for s in snaps) // n
    traced_values = [s.traced for s in snaps if s.traced is not None]
    traced = sum(traced_values) // n if len(traced_values) == n else None
    return t, rss, traced


def _location(tb: tracemalloc.Traceback) -> str:
    frame = tb[0]
    return f"{frame.filename}:{frame.lineno}"


def _without_top(d: dict[str, Any]) -> dict[str, Any]:
    d.pop("top", None)
    return d


__all__ = ["AlertCallback", "AlertKind", "MemoryAlert", "MemoryProfiler"]
