"""MemoryOptimizer and memory_efficient_context: the capabilities composed into one object for a service.

A :class:`MemoryOptimizer` owns a :class:`~sanaa_async_mem.memory.MemoryProfiler` (periodic snapshots,
trend verdicts, leak and high-memory alerts), a
:class:`~sanaa_async_mem.collector.GarbageCollectionOptimizer` with its pause recorder, a
:class:`~sanaa_async_mem.collector.GCScheduler` (full collections at idle moments), a
:class:`~sanaa_async_mem.loop_monitor.LoopLagMonitor` and, optionally, a
:class:`~sanaa_async_mem.resources.ResourceManager` and extra pools whose stats it reports. It is what the
Starlette/FastAPI and aiohttp integrations start on startup and stop on shutdown.

Lifecycle: ``await start_optimization()`` / ``await stop_optimization()``, or ``async with optimizer:``
(which also closes the resource manager on exit). Starting a started optimizer and stopping a stopped one
are no-ops: there is never a second background task. Stopping restores the GC settings exactly as they
were before the start.

:func:`memory_efficient_context` (``with`` or ``async with``) keeps full collections out of a block and
runs one when the last open block closes; it reports the block's memory delta.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import psutil

from ._hooks import require_callable
from ._logging import get_logger
from ._process import process, rss
from .alerts import Alert, AlertCallback, AlertDispatcher, AlertKind
from .collector.optimizer import GarbageCollectionOptimizer
from .collector.scheduler import GCScheduler
from .collector.state import GCLease, gc_state
from .config import Settings, duration, seconds
from .errors import ConfigurationError
from .loop_monitor import LoopLagMonitor
from .memory.profiler import MemoryProfiler
from .pools.keyed import MemoryPool
from .pools.pool import AsyncPool, PoolStats
from .resources.manager import ResourceManager

__all__ = [
    "Alert",
    "AlertKind",
    "MemoryDelta",
    "MemoryEfficientContext",
    "MemoryOptimizer",
    "memory_efficient_context",
]

_log = get_logger("memory")

# ------------------------------------------------------------------------------ memory_efficient_context


class _Deferral:
    """Process-wide count of open memory-efficient blocks, so that the last one out is the one that collects.

    The GC setting itself is not kept here: each block holds a ``defer`` lease on the process's GC state
    (:mod:`sanaa_async_mem.collector.state`), which composes with a running GCScheduler's own lease.
    """

    __slots__ = ("_depth", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0

    def enter(self) -> GCLease:
        with self._lock:
            self._depth += 1
            return gc_state().defer_full_collections("memory_efficient_context")

    def leave(self, lease: GCLease) -> bool:
        """Close one block; True if it was the last one open (the caller then collects)."""
        with self._lock:
            self._depth -= 1
            lease.release()
            return self._depth == 0

    @property
    def depth(self) -> int:
        return self._depth


_DEFERRAL = _Deferral()


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryDelta:
    """What one memory-efficient block did. Bytes, objects, seconds.

    ``rss_before``/``rss_after`` are the process RSS when the block was entered and after it (and its
    collection, if it ran one); ``delta`` is their difference (negative when memory was returned).
    ``collected`` is the objects the closing full collection found unreachable (0 when the block was
    nested in another, which collects instead), ``collection_seconds`` how long that collection took and
    ``block_seconds`` how long the block itself ran.
    """

    rss_before: int
    rss_after: int
    collected: int
    collection_seconds: float
    block_seconds: float
    outermost: bool

    @property
    def delta(self) -> int:
        return self.rss_after - self.rss_before

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["delta"] = self.delta
        return out


class MemoryEfficientContext:
    """``with`` / ``async with``: defer full collections during the block, collect after it, report the delta.

    While any such block is open (in any task or thread) the interpreter starts no full collection by
    itself; young collections stay automatic. When the last open block closes, one full collection runs
    (unless ``collect=False``) and the old threshold comes back. Inside an optimizer's block the GC
    scheduler is told a request is in flight, so it does not pick that moment for an idle collection
    either (its deadline and memory cap still apply: deferring is bounded).

    :attr:`result` (a :class:`MemoryDelta`) is set when the block exits. One object serves one block at a
    time; entering it while open raises RuntimeError. Entering and leaving never await, so ``async with``
    adds no cancellation point; the closing collection blocks the loop for its duration.
    """

    __slots__ = ("_collect", "_entered_at", "_lease", "_rss_before", "_scheduler", "result")

    def __init__(self, *, collect: bool = True, scheduler: GCScheduler | None = None) -> None:
        self._collect = collect
        self._scheduler = scheduler
        self._rss_before: int | None = None
        self._entered_at = 0.0
        self._lease: GCLease | None = None
        self.result: MemoryDelta | None = None

    def __enter__(self) -> MemoryEfficientContext:
        if self._rss_before is not None:
            raise RuntimeError("this memory_efficient_context() is already open; make one per block")
        self._rss_before = rss()
        self._entered_at = time.perf_counter()
        self._lease = _DEFERRAL.enter()
        if self._scheduler is not None:
            self._scheduler.request_started()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        before = self._rss_before
        assert before is not None, "exit without enter"
        self._rss_before = None
        block_seconds = time.perf_counter() - self._entered_at
        if self._scheduler is not None:
            self._scheduler.request_finished()
        lease, self._lease = self._lease, None
        assert lease is not None, "exit without enter"
        outermost = _DEFERRAL.leave(lease)
        collected = 0
        collection_seconds = 0.0
        if outermost and self._collect:
            started = time.perf_counter()
            collected = gc.collect()
            collection_seconds = time.perf_counter() - started
        self.result = MemoryDelta(before, rss(), collected, collection_seconds, block_seconds, outermost)
        _log.debug(
            "memory-efficient block: %+d bytes RSS, %d objects collected",
            self.result.delta,
            collected,
            extra={
                "sanaa_event": "memory_efficient_block",
                "sanaa_delta_bytes": self.result.delta,
                "sanaa_collected": collected,
                "sanaa_collection_seconds": collection_seconds,
            },
        )

    async def __aenter__(self) -> MemoryEfficientContext:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def memory_efficient_context(*, collect: bool = True) -> MemoryEfficientContext:
    """``with memory_efficient_context():`` (or ``async with``); see MemoryEfficientContext.

    Without an optimizer no scheduler is told about the block; use
    :meth:`MemoryOptimizer.memory_efficient_context` to make the GC scheduler wait for it too.
    """
    return MemoryEfficientContext(collect=collect)


# ------------------------------------------------------------------------------------------- optimizer

AnyPool = AsyncPool[Any] | MemoryPool[Any, Any]


def _json_keys(d: Mapping[Any, Any]) -> dict[str, Any]:
    # MemoryPool keys may be any hashable; JSON object keys must be strings.
    return {str(k): (_json_keys(v) if isinstance(v, Mapping) else v) for k, v in d.items()}


class MemoryOptimizer:
    """One object for a service's memory health: profiler, GC optimizer and scheduler, loop lag, resources.

    Configuration: ``settings`` (default :meth:`Settings.from_env`, i.e. ``MEMORY_SNAPSHOT_INTERVAL``,
    ``GC_OPTIMIZATION_ENABLED``, ``MEMORY_LEAK_THRESHOLD``, ``MEMORY_HIGH_USAGE_BYTES``, ...); any
    settings field passed as a keyword (``snapshot_interval=5``, ``high_memory_bytes=...``) overrides the
    environment. ``resource_manager`` is reported and closed by ``async with``/:meth:`aclose`
    (``None``: a new empty one, reachable as :attr:`resource_manager`). ``pools`` are extra
    :class:`AsyncPool`/:class:`MemoryPool` objects to report (and, for MemoryPools, trim).
    ``schedule_gc`` runs a :class:`GCScheduler` (only when ``GC_OPTIMIZATION_ENABLED``);
    ``freeze_startup_heap`` decides whether the start collects once and freezes what is alive
    (``gc.freeze()``), so that full collections never scan the startup heap again: ``None`` (the default)
    freezes when the start says the application has finished loading (``startup_complete=True``, which the
    Starlette and aiohttp integrations pass at the end of startup, after every startup hook), ``True``
    always, ``False`` never. ``lag_resolution`` is the loop
    lag monitor's tick (seconds). ``profiler_options``/``scheduler_options`` are passed to
    :class:`MemoryProfiler`/:class:`GCScheduler`.

    Alerts: each is one log record on ``sanaa.*`` with structured ``extra`` fields (all ``sanaa_``-prefixed,
    ``sanaa_alert`` naming the kind), and a call of ``alert_callback(Alert)`` (sync or ``async def``; its
    errors are logged). ``leak`` and ``high_memory`` come from the profiler (``sanaa.memory``);
    ``held_too_long`` is the pool's own record (``sanaa.pool``, ``sanaa_event="held_too_long"``), only
    forwarded to the callback; ``pool_exhausted`` (``sanaa.pool``: acquisitions timed out or were refused
    since the last check) and ``long_gc_pause`` (``sanaa.gc``: pauses of at least ``long_gc_pause``
    seconds) are checked every ``alert_interval`` seconds, at most one record per pool or generation per
    check.

    Bad values raise :class:`~sanaa_async_mem.errors.ConfigurationError` naming the parameter.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        resource_manager: ResourceManager | None = None,
        pools: Iterable[AnyPool] = (),
        schedule_gc: bool = True,
        freeze_startup_heap: bool | None = None,
        lag_resolution: float = 0.02,
        profiler_options: Mapping[str, Any] | None = None,
        scheduler_options: Mapping[str, Any] | None = None,
        alert_callback: AlertCallback | None = None,
        long_gc_pause: float = 0.1,
        alert_interval: float = 1.0,
        **setting_overrides: Any,
    ) -> None:
        if settings is None:
            settings = Settings.from_env(**setting_overrides)
        elif setting_overrides:
            settings = dataclasses.replace(settings, **setting_overrides)
            settings.validate()
        self.settings = settings
        self.gc_optimizer = GarbageCollectionOptimizer(settings)
        #: The one alert path: the profiler's memory alerts and the pool/GC alerts checked here.
        self.alerts = AlertDispatcher()
        options = dict(profiler_options or {})
        options.setdefault("alerts", self.alerts)
        self.profiler = MemoryProfiler(settings=settings, **options)
        self.gc_scheduler: GCScheduler | None = (
            GCScheduler(optimizer=self.gc_optimizer, settings=settings, **dict(scheduler_options or {}))
            if schedule_gc and settings.gc_optimization_enabled
            else None
        )
        self.lag_monitor = LoopLagMonitor(duration("lag_resolution", lag_resolution, allow_zero=False))
        self.resource_manager = resource_manager if resource_manager is not None else ResourceManager()
        self.pools: list[AnyPool] = list(pools)
        self.freeze_startup_heap = freeze_startup_heap
        require_callable("alert_callback", alert_callback)
        self.alert_callback = alert_callback
        if alert_callback is not None:
            self.alerts.add_callback(alert_callback)
        self.long_gc_pause = duration("long_gc_pause", long_gc_pause, allow_zero=False)
        self.alert_interval = duration("alert_interval", alert_interval, allow_zero=False)
        self._running = False
        self._alert_task: asyncio.Task[None] | None = None
        self._seen_pools: dict[str, tuple[int, int, int]] = {}
        self._seen_long_pauses: dict[int, int] = {}

    # ---------------------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """True between a completed :meth:`start_optimization` and the next :meth:`stop_optimization`."""
        return self._running

    async def start_optimization(self, *, startup_complete: bool = False) -> None:
        """Tune GC (and freeze the heap if asked), start pause recording, the lag monitor, the GC scheduler
        and the profiler's snapshot task.

        ``startup_complete=True`` says the application has finished loading: with the default
        ``freeze_startup_heap=None`` the heap is then collected once and frozen before the scheduler starts
        (a blocking pause of about one full collection of the startup heap, once).

        A no-op when already running (never a second task). If any step fails, or the call is cancelled,
        what was started is stopped again and the GC settings are restored before the error propagates.
        Raises what the failing step raises (GCError, OSError from a snapshot store, ...).
        """
        if self._running:
            _log.debug("start_optimization() while running: ignored")
            return
        self._running = True
        try:
            freeze = startup_complete if self.freeze_startup_heap is None else self.freeze_startup_heap
            self.gc_optimizer.optimize_gc_settings(startup_complete=freeze)
            # Pauses are recorded (for metrics and alerts) even when GC tuning is disabled.
            self.gc_optimizer.pauses.install()
            self.lag_monitor.start()
            if self.gc_scheduler is not None:
                await self.gc_scheduler.start()
            await self.profiler.start_profiling()
            self._baseline_alerts()
            self._alert_task = asyncio.get_running_loop().create_task(
                self._watch_alerts(), name="sanaa-memory-alerts"
            )
        except BaseException:
            await self.stop_optimization()
            raise
        _log.info(
            "memory optimizer started",
            extra={
                "sanaa_event": "optimizer_started",
                "sanaa_gc_scheduler": None if self.gc_scheduler is None else self.gc_scheduler.mode,
            },
        )

    async def stop_optimization(self) -> None:
        """Stop the profiler, the GC scheduler and the lag monitor; restore the GC settings.

        A no-op when not running. Leaves no task behind. If this call is cancelled, the CancelledError
        propagates but every component is still stopped and the GC settings restored (the profiler's
        clean-up finishes in a shielded task of its own). The resource manager stays open (see
        :meth:`aclose`), so the optimizer can be started again.
        """
        if not self._running:
            return
        self._running = False
        task, self._alert_task = self._alert_task, None
        if task is not None:
            task.cancel()  # the watcher never awaits anything but its sleep: it ends at once
        try:
            await self.profiler.stop_profiling()
            if task is not None:
                await asyncio.wait({task})
            await self.alerts.drain(5.0)
        finally:
            try:
                if self.gc_scheduler is not None:
                    await self.gc_scheduler.stop()
            finally:
                self.lag_monitor.stop()
                self.gc_optimizer.restore_gc_settings()
                _log.info("memory optimizer stopped", extra={"sanaa_event": "optimizer_stopped"})

    async def aclose(self) -> None:
        """Stop (see :meth:`stop_optimization`), then close the resource manager (shielded; idempotent).

        Raises :class:`~sanaa_async_mem.errors.ResourceCleanupError` if a resource's cleanup failed.
        """
        try:
            await self.stop_optimization()
        finally:
            await self.resource_manager.aclose()

    async def __aenter__(self) -> MemoryOptimizer:
        await self.start_optimization()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ---------------------------------------------------------------------------- pools

    def add_pool(self, pool: AnyPool) -> None:
        """Report (and trim, for a MemoryPool) another pool."""
        if not isinstance(pool, AsyncPool | MemoryPool):
            raise ConfigurationError("pool", pool, "must be an AsyncPool or a MemoryPool")
        self.pools.append(pool)

    def _pool_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: st.as_dict() for name, st in self.pool_stats().items()}
        # Who holds each AsyncPool's objects now (task, purpose, held_for, where), under the same names.
        holders: dict[str, list[dict[str, Any]]] = {}
        for pool in self.pools:
            if isinstance(pool, AsyncPool):
                holders[pool.name] = [h.as_dict() for h in pool.holders()]
        manager = self.resource_manager
        for name in manager.names:
            if manager.get_pool(name) is not None:
                holders[name] = [h.as_dict() for h in manager.holders(name)]
        for name, entry in out.items():
            entry["holders"] = holders.get(name, [])
        for pool in self.pools:
            if isinstance(pool, MemoryPool):
                out.setdefault(pool.name, _json_keys(pool.get_stats()))
        return out

    # ---------------------------------------------------------------------------- status

    def get_memory_status(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything the optimizer watches (sizes in bytes, times in s).

        Keys: ``optimization_active``; ``system_memory`` (``total``, ``available``, ``used``,
        ``percentage``); ``process_memory`` (``rss``, ``vms``, ``high_memory_bytes``,
        ``percentage_of_high``); ``gc`` (collector, thresholds, counts, pauses per generation, and
        ``scheduler`` or None); ``loop_lag`` (lag summary in seconds, and ``utilization``: the
        loop's busy share 0..1 or None, with ``utilization_method``); ``pools`` (every pool's stats, by
        the name :meth:`pool_stats` gives it, and each extra MemoryPool's); ``resources`` (the resource
        manager's stats); ``trend`` (the profiler's verdict, see
        :class:`~sanaa_async_mem.memory.TrendVerdict`); ``alerts`` (the profiler's active alerts).

        Synchronous and on the caller's thread: it reads psutil (~tens of us) and walks the frozen
        generation for its size (milliseconds with a large frozen heap) - not for hot paths.
        """
        vm = psutil.virtual_memory()
        mem = process().memory_info()
        gc_stats = self.gc_optimizer.get_gc_stats()
        gc_stats["thresholds"] = list(gc_stats["thresholds"])
        gc_stats["counts"] = list(gc_stats["counts"])
        gc_stats["pauses_seconds"] = _json_keys(gc_stats["pauses_seconds"])
        gc_stats["scheduler"] = (
            None if self.gc_scheduler is None else dataclasses.asdict(self.gc_scheduler.stats())
        )
        report = self.profiler.get_memory_report()
        high = self.profiler.high_memory_bytes
        return {
            "optimization_active": self._running,
            "system_memory": {
                "total": int(vm.total),
                "available": int(vm.available),
                "used": int(vm.used),
                "percentage": float(vm.percent),
            },
            "process_memory": {
                "rss": int(mem.rss),
                "vms": int(mem.vms),
                "high_memory_bytes": high,
                "percentage_of_high": 100.0 * int(mem.rss) / high,
            },
            "gc": gc_stats,
            "loop_lag": {
                "running": self.lag_monitor.running,
                **self.lag_monitor.stats(),
                "utilization": self.lag_monitor.utilization(),
                "utilization_method": self.lag_monitor.utilization_method,
            },
            "pools": self._pool_status(),
            "resources": self.resource_manager.get_stats().as_dict(),
            "trend": report["trend"],
            "alerts": report["alerts"],
        }

    # ---------------------------------------------------------------------------- optimizing

    async def optimize_memory_usage(self, *, pool_idle_age: float = 60.0) -> dict[str, Any]:
        """Free what can be freed now: run the cleanup callbacks, trim idle objects unused for more than
        ``pool_idle_age`` seconds from the MemoryPools, then run a full optimized collection.

        Returns a JSON-serialisable dict: ``memory_before``/``memory_after``/``memory_freed`` (RSS bytes;
        freed may be negative, allocators keep freed memory), ``objects_collected``, ``uncollectable``,
        ``collection_seconds``, ``cleanup_callbacks`` (``ran``/``failed``) and ``pool_objects_trimmed``
        (by pool name): MemoryPools and AsyncPools (this optimizer's ``pools`` and the resource manager's),
        never below an AsyncPool's ``min_size``.

        Cancellation: only while an async cleanup callback runs (the remaining steps are then skipped);
        the collection itself blocks the loop until done. Raises ConfigurationError for a bad age.
        """
        age = seconds("pool_idle_age", pool_idle_age)
        memory_before = rss()
        trimmed: dict[str, int] = {}
        # Trim first: disposing of pooled objects is what makes their memory collectable.
        for pool in self.pools:
            if isinstance(pool, MemoryPool):
                trimmed[pool.name] = pool.trim(older_than=age)
            elif isinstance(pool, AsyncPool):
                trimmed[pool.name] = pool.trim_idle(older_than=age)
        for name in self.resource_manager.names:
            managed = self.resource_manager.get_pool(name)
            if managed is not None and managed.name not in trimmed:
                trimmed[managed.name] = managed.trim_idle(older_than=age)
        result = await self.gc_optimizer.perform_optimized_collection(2)
        memory_after = rss()
        out = {
            "memory_before": memory_before,
            "memory_after": memory_after,
            "memory_freed": memory_before - memory_after,
            "objects_collected": result.collected,
            "uncollectable": result.uncollectable,
            "collection_seconds": result.duration,
            "cleanup_callbacks": {"ran": result.callbacks_run, "failed": result.callbacks_failed},
            "pool_objects_trimmed": trimmed,
        }
        _log.info(
            "memory optimized: %d objects collected, %+d bytes RSS",
            result.collected,
            memory_after - memory_before,
            extra={"sanaa_event": "memory_optimized", "sanaa_freed_bytes": memory_before - memory_after},
        )
        return out

    # ---------------------------------------------------------------------------- alerts

    def metric_sources(self) -> tuple[object, ...]:
        """What the metrics exporters read for this optimizer, as the sources they take one by one: its
        extra pools, its resource manager, profiler, GC pause recorder, GC scheduler (when it runs one)
        and loop-lag monitor. Asked again at each export, so pools added later are included."""
        parts: list[object] = [*self.pools, self.resource_manager, self.profiler, self.gc_optimizer.pauses]
        if self.gc_scheduler is not None:
            parts.append(self.gc_scheduler)
        parts.append(self.lag_monitor)
        return tuple(parts)

    def pool_stats(self) -> dict[str, PoolStats]:
        """Stats of every AsyncPool this optimizer knows, by name: its ``pools`` under their own names, and
        the resource manager's pools under the name they are acquired by (the resource's), so one pool has
        one name in ``/memory`` and in the metrics. Read now; the exporters use this, so every figure comes
        from one place."""
        out: dict[str, PoolStats] = {}
        managed = {
            name: res.pool
            for name, res in self.resource_manager.get_stats().resources.items()
            if res.pool is not None
        }
        managed_names = {st.name for st in managed.values()}
        for pool in self.pools:
            if isinstance(pool, AsyncPool) and pool.name not in managed_names:
                out[pool.name] = pool.stats()
        for name, st in managed.items():
            out.setdefault(name, st if st.name == name else dataclasses.replace(st, name=name))
        return out

    def _long_pauses(self) -> dict[int, int]:
        """Per generation: pauses recorded so far of at least ``long_gc_pause`` seconds (bucket-exact)."""
        out: dict[int, int] = {}
        for gen, snap in self.gc_optimizer.pauses.snapshot().items():
            below = 0
            for bound, count in snap.cumulative():
                if bound >= self.long_gc_pause:
                    break
                below = count
            out[gen] = snap.count - below
        return out

    def _baseline_alerts(self) -> None:
        # Only what happens while the optimizer runs is an alert, not what the counters held before.
        self._seen_pools = {
            name: (st.exhausted, st.timeouts, st.held_too_long) for name, st in self.pool_stats().items()
        }
        self._seen_long_pauses = self._long_pauses()

    async def _watch_alerts(self) -> None:
        while True:
            await asyncio.sleep(self.alert_interval)
            try:
                self.check_alerts()
            except Exception:  # a failing read must not end the watcher
                _log.exception("alert check failed; continuing")

    def check_alerts(self) -> list[Alert]:
        """Check pools and GC pauses now (the watcher does it every ``alert_interval`` seconds); log and
        deliver each new alert and return them. Synchronous; cheap (reads counters)."""
        alerts: list[Alert] = []
        for name, st in self.pool_stats().items():
            exhausted, timeouts, held = self._seen_pools.get(name, (0, 0, 0))
            self._seen_pools[name] = (st.exhausted, st.timeouts, st.held_too_long)
            new_refused = max(0, st.exhausted - exhausted) + max(0, st.timeouts - timeouts)
            if new_refused:
                fields = {
                    "pool": name,
                    "refused": new_refused,
                    "exhausted": st.exhausted,
                    "timeouts": st.timeouts,
                    "waiting": st.waiting,
                    "in_use": st.in_use,
                    "max_size": st.max_size,
                }
                alerts.append(
                    self.alerts.emit(
                        "pool_exhausted",
                        f"pool {name}: {new_refused} acquisitions timed out or were refused "
                        f"({st.in_use}/{st.max_size} in use, {st.waiting} waiting)",
                        fields,
                    )
                )
            if st.held_too_long > held:
                # The pool logged each one already (with the holder's stack): only the callback is told.
                alerts.append(
                    self.alerts.emit(
                        "held_too_long",
                        f"pool {name}: {st.held_too_long - held} objects held too long",
                        {"pool": name, "held_too_long": st.held_too_long},
                        log=False,
                    )
                )
        for gen, n in self._long_pauses().items():
            seen = self._seen_long_pauses.get(gen, 0)
            self._seen_long_pauses[gen] = n
            if n > seen:
                snap = self.gc_optimizer.pauses.snapshot()[gen]
                alerts.append(
                    self.alerts.emit(
                        "long_gc_pause",
                        f"{n - seen} generation-{gen} GC pauses of at least {self.long_gc_pause:g} s "
                        f"(longest so far {snap.max:.3g} s)",
                        {
                            "generation": gen,
                            "pauses": n - seen,
                            "max_pause_seconds": snap.max,
                            "threshold_seconds": self.long_gc_pause,
                        },
                    )
                )
        return alerts

    def memory_efficient_context(self, *, collect: bool = True) -> MemoryEfficientContext:
        """:func:`memory_efficient_context` that also holds this optimizer's GC scheduler off the block."""
        return MemoryEfficientContext(collect=collect, scheduler=self.gc_scheduler)

    # The project's verbs; the names above are the original ones and stay.
    start = start_optimization
    stop = stop_optimization
    close = aclose

    def __repr__(self) -> str:
        return f"<MemoryOptimizer {'running' if self._running else 'stopped'} pools={len(self.pools)}>"
