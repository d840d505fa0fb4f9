"""GarbageCollectionOptimizer: the GC policy for a service, GC-free sections, optimized collections.

Every setting it changes (thresholds, ``gc.freeze()``, ``gc.disable()``) is a lease from the process's one
:class:`~sanaa_async_mem.collector.state.GCState`, so it composes with the
:class:`~sanaa_async_mem.collector.GCScheduler`, :func:`~sanaa_async_mem.memory_efficient_context` and
other optimizers in any order, and the interpreter comes back exactly as it was once the last of them is
done. Pauses are recorded by a :class:`~sanaa_async_mem.collector.pauses.GCPauseRecorder`. Cleanup
callbacks (:mod:`sanaa_async_mem.memory.cleanup`) and object lifecycles
(:mod:`sanaa_async_mem.memory.lifecycle`) are not GC tuning; the optimizer offers them under their
documented names and delegates.

Which collector the interpreter has matters to the policy; see :func:`detect_collector`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from .._logging import get_logger
from .._process import rss
from .._stats import HistogramSnapshot
from ..config import MAX_C_INT, Settings, positive_int, seconds
from ..errors import ConfigurationError, GCError
from ..memory.cleanup import CleanupCallback, CleanupCallbacks, CleanupReport
from ..memory.lifecycle import LifecycleStats, LifecycleTracker
from .kind import CollectorInfo, CollectorKind, detect_collector
from .pauses import GCPauseRecorder
from .state import GCLease, GCStateStats, gc_state

_log = get_logger("gc")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class GCSettings:
    """The collector's global settings at one moment: enabled, thresholds, frozen (permanent) objects."""

    enabled: bool
    thresholds: tuple[int, ...]
    frozen_objects: int

    @classmethod
    def capture(cls) -> GCSettings:
        """Read them now (``gc.get_freeze_count()`` walks the permanent generation: ms at 1e6 objects)."""
        return cls(gc.isenabled(), tuple(gc.get_threshold()), gc.get_freeze_count())


@dataclasses.dataclass(frozen=True, slots=True)
class GCSettingsChange:
    """What :meth:`GarbageCollectionOptimizer.optimize_gc_settings` did.

    ``applied`` is True when a setting changed or objects were frozen. It is False, with ``before ==
    after``, when ``GC_OPTIMIZATION_ENABLED`` is false (``reason`` says so) and when the tuned settings
    were already in force (``reason`` is ``"unchanged"``). ``froze`` is the number of objects moved to the
    permanent generation (0 if none).
    """

    applied: bool
    before: GCSettings
    after: GCSettings
    froze: int
    reason: str

    @property
    def changed(self) -> dict[str, tuple[object, object]]:
        """``{setting: (before, after)}`` for every setting that differs."""
        out: dict[str, tuple[object, object]] = {}
        for field in ("enabled", "thresholds", "frozen_objects"):
            b, a = getattr(self.before, field), getattr(self.after, field)
            if b != a:
                out[field] = (b, a)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class CollectionResult:
    """One :meth:`GarbageCollectionOptimizer.perform_optimized_collection`.

    ``collected``/``uncollectable`` are objects, ``duration`` is seconds spent in ``gc.collect`` (not in the
    callbacks), ``memory_before``/``memory_after`` are the process RSS in bytes.
    """

    generation: int
    collected: int
    uncollectable: int
    duration: float
    memory_before: int
    memory_after: int
    callbacks_run: int
    callbacks_failed: int

    @property
    def memory_freed(self) -> int:
        """RSS bytes returned by the collection (negative if RSS grew; allocators keep freed memory)."""
        return self.memory_before - self.memory_after


@dataclasses.dataclass(frozen=True, slots=True)
class GCStats:
    """A snapshot of the collector and of this optimizer (:meth:`GarbageCollectionOptimizer.stats`).

    ``pauses`` holds a histogram snapshot of pause seconds per generation; ``state`` who holds which lease
    on the collector's settings in this process.
    """

    collector: CollectorKind
    enabled: bool
    thresholds: tuple[int, ...]
    counts: tuple[int, ...]
    frozen_objects: int
    open_disabled_sections: int
    pauses: dict[int, HistogramSnapshot]
    cleanup_callbacks: int
    state: GCStateStats
    pid: int

    def as_dict(self) -> dict[str, Any]:
        """The plain dict :meth:`GarbageCollectionOptimizer.get_gc_stats` returns."""
        return {
            "collector": self.collector,
            "enabled": self.enabled,
            "thresholds": self.thresholds,
            "counts": self.counts,
            "frozen_objects": self.frozen_objects,
            "open_disabled_sections": self.open_disabled_sections,
            "pauses_seconds": {g: s.as_dict() for g, s in self.pauses.items()},
            "cleanup_callbacks": self.cleanup_callbacks,
            "leases": self.state.as_dict(),
            "pid": self.pid,
        }


# ----------------------------------------------------------------------------------- GC-free sections


def gc_disabled_sections() -> int:
    """How many :meth:`GarbageCollectionOptimizer.disable_gc_temporarily` sections are open in the process."""
    return gc_state().count("disable")


def _owner() -> tuple[int, int]:
    # A section object may be entered by several tasks and threads at once; each (thread, task) pair keeps
    # its own stack of leases so overlapping exits close the right one.
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return (threading.get_ident(), id(task) if task is not None else 0)


class GCDisabledSection:
    """A section with the cyclic collector off; usable with ``with`` and ``async with``, re-entrant.

    Each entry is a ``disable`` lease on the process's GC state: GC comes back on when the last open section
    (or other disabling lease) closes, never earlier, whichever task or thread closes first. If GC was
    already disabled when the first section opened, it stays disabled. A section open for longer than
    ``max_duration`` seconds is closed by a watchdog thread (GC re-enabled if it was the last, a warning
    logged on ``sanaa.gc``); leaving it later then emits a ``RuntimeWarning``. Entering and leaving never
    await: there is no cancellation point.
    """

    __slots__ = ("_leases", "_max_duration")

    def __init__(self, max_duration: float | None) -> None:
        self._max_duration = max_duration
        self._leases: dict[tuple[int, int], list[GCLease]] = {}

    def __enter__(self) -> GCDisabledSection:
        lease = gc_state().disable("disable_gc_temporarily", self._max_duration)
        self._leases.setdefault(_owner(), []).append(lease)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        key = _owner()
        stack = self._leases.get(key)
        if not stack:
            raise GCError(
                "disable_gc_temporarily(): section exited by a task or thread that did not enter it"
            )
        lease = stack.pop()
        if not stack:
            del self._leases[key]
        if lease.release():
            warnings.warn(
                f"GC-free section exceeded max_duration={lease.max_duration} s; "
                "GC was re-enabled while it was open",
                RuntimeWarning,
                stacklevel=2,
            )

    async def __aenter__(self) -> GCDisabledSection:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


# ------------------------------------------------------------------------------------------ optimizer


class GarbageCollectionOptimizer:
    """Tunes the collector for a service, and gives the settings back exactly.

    ``settings`` defaults to :meth:`Settings.from_env` (so ``GC_OPTIMIZATION_ENABLED`` and
    ``GC_COLLECTION_THRESHOLD`` apply). ``max_disable_duration`` (seconds) bounds every
    :meth:`disable_gc_temporarily` section that does not pass its own. Raises ConfigurationError for bad
    values.
    """

    def __init__(self, settings: Settings | None = None, *, max_disable_duration: float = 30.0) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.max_disable_duration = float(
            seconds("max_disable_duration", max_disable_duration, allow_zero=False) or 0.0
        )
        self.collector = detect_collector()
        self.pauses = GCPauseRecorder()
        self.cleanup = CleanupCallbacks()
        self.lifecycles = LifecycleTracker()
        self._lock = threading.Lock()
        self._thresholds: GCLease | None = None
        self._freezes: list[GCLease] = []

    # -------------------------------------------------------------------- settings

    def optimize_gc_settings(
        self, *, startup_complete: bool = False, thresholds: tuple[int, ...] | None = None
    ) -> GCSettingsChange:
        """Apply the tuned policy and return what changed.

        Thresholds: the young threshold becomes the larger of ``GC_COLLECTION_THRESHOLD`` and the
        interpreter's default (700 on 3.11/3.12, 2000 on 3.13); the older ones are kept (full collections
        are the :class:`~sanaa_async_mem.collector.GCScheduler`'s business), or pass ``thresholds``. With
        ``startup_complete=True`` the startup heap is collected once and frozen (``gc.freeze()``), so full
        collections no longer scan it; call it when the application has finished loading and before it
        serves. Also starts pause recording (:attr:`pauses`).

        Does nothing (``applied=False``) when ``GC_OPTIMIZATION_ENABLED`` is false; changes nothing and says
        ``"unchanged"`` (in the result and the log) when the tuned settings are in force already. The
        thresholds are held as a lease until :meth:`restore_gc_settings`; calling this again updates that
        lease (and takes back thresholds the application had changed meanwhile: see
        :mod:`~sanaa_async_mem.collector.state`), so restoring still returns to the original settings.
        Raises ConfigurationError for bad ``thresholds``. Synchronous; the freeze's collection blocks.
        """
        before = GCSettings.capture()
        if not self.settings.gc_optimization_enabled:
            _log.info("GC optimization disabled by GC_OPTIMIZATION_ENABLED; settings left as they are")
            return GCSettingsChange(False, before, before, 0, "GC_OPTIMIZATION_ENABLED is false")
        if thresholds is None:
            # Never below the interpreter's own default, and not above it either unless asked.
            young: int = max(self.settings.gc_collection_threshold, self.collector.default_young_threshold)
            wanted: tuple[int | None, ...] = (young, None, None)
        else:
            if not isinstance(thresholds, tuple | list) or not 1 <= len(thresholds) <= 3:
                raise ConfigurationError("thresholds", thresholds, "must hold 1 to 3 integers")
            checked = tuple(
                positive_int(f"thresholds[{i}]", t, minimum=0, maximum=MAX_C_INT)
                for i, t in enumerate(thresholds)
            )
            wanted = checked + (None,) * (3 - len(checked))
        with self._lock:
            if self._thresholds is None:
                self._thresholds = gc_state().set_thresholds(
                    "GarbageCollectionOptimizer", young=wanted[0], middle=wanted[1], oldest=wanted[2]
                )
            else:
                # Called again: the user asks for the tuned settings now, even over the application's.
                self._thresholds.update(young=wanted[0], middle=wanted[1], oldest=wanted[2], reassert=True)
        froze = self.freeze_startup_heap() if startup_complete else 0
        self.pauses.install()
        after = GCSettings.capture()
        change = GCSettingsChange(True, before, after, froze, "applied")
        if not change.changed and not froze:
            _log.info(
                "GC settings unchanged: thresholds %s already in force",
                after.thresholds,
                extra={"sanaa_thresholds": after.thresholds, "sanaa_frozen": 0},
            )
            return GCSettingsChange(False, before, after, 0, "unchanged")
        _log.info(
            "GC settings optimized: thresholds %s -> %s, froze %d objects",
            before.thresholds,
            after.thresholds,
            froze,
            extra={"sanaa_thresholds": after.thresholds, "sanaa_frozen": froze},
        )
        return change

    def freeze_startup_heap(self, *, collect_first: bool = True) -> int:
        """Move every object tracked now to the permanent generation; returns how many were frozen.

        Collects first (unless ``collect_first=False``) so garbage is not frozen forever. Frozen objects are
        never scanned again, which is what makes later full collections cheap; an object frozen while alive
        that later becomes cyclic garbage is not freed until the heap is unfrozen, so freeze once the
        application has loaded, not while it churns. Undone by :meth:`restore_gc_settings` (see there).
        """
        lease = gc_state().freeze("GarbageCollectionOptimizer", collect_first=collect_first)
        with self._lock:
            self._freezes.append(lease)
        return lease.froze

    def restore_gc_settings(self) -> GCSettings:
        """Give back what :meth:`optimize_gc_settings` and :meth:`freeze_startup_heap` took.

        Thresholds and the enabled state come back exactly once no other part of the library holds them (a
        running :class:`~sanaa_async_mem.collector.GCScheduler` keeps full collections deferred until it
        stops; settings the application itself changed meanwhile stay as it set them). Objects frozen
        through the library are unfrozen when the last such freeze is given back, only if the permanent
        generation was empty before (``gc.unfreeze()`` cannot tell our objects from the application's);
        otherwise they stay frozen and a warning is logged. Stops pause recording. Returns the settings
        now in force. Idempotent.
        """
        self.pauses.uninstall()
        with self._lock:
            thresholds, self._thresholds = self._thresholds, None
            freezes, self._freezes = self._freezes, []
        if thresholds is not None:
            thresholds.release()
        for lease in freezes:
            lease.release()
        return GCSettings.capture()

    # ------------------------------------------------------------ GC-free sections

    def disable_gc_temporarily(self, max_duration: float | None = None) -> GCDisabledSection:
        """A :class:`GCDisabledSection` (``with`` or ``async with``) that turns the cyclic collector off.

        ``max_duration`` seconds (default: this optimizer's ``max_disable_duration``) after entering, the
        section is closed for you, GC re-enabled if no other section is open, and a warning logged.
        Raises ConfigurationError for a bad ``max_duration``.
        """
        limit = self.max_disable_duration if max_duration is None else max_duration
        return GCDisabledSection(seconds("max_duration", limit, allow_zero=False))

    # ------------------------------------------------------------ cleanup callbacks

    def register_cleanup_callback(self, callback: CleanupCallback) -> Callable[[], None]:
        """Run ``callback`` (sync, or ``async def``) before every optimized collection and on memory pressure.

        Callbacks run in registration order. Returns a function that unregisters it (idempotent). Raises
        :class:`~sanaa_async_mem.errors.ConfigurationError` if ``callback`` is not callable. Thread-safe.
        """
        return self.cleanup.register(callback)

    async def run_cleanup_callbacks(self, reason: str = "requested") -> CleanupReport:
        """Run every cleanup callback once, awaiting async ones; returns how many ran and failed.

        A callback that raises is logged (``sanaa.gc``, with traceback) and the others still run.
        Cancellation: the ``await`` of an async callback is a cancellation point; ``CancelledError``
        propagates and the remaining callbacks do not run.
        """
        return await self.cleanup.run(reason)

    async def handle_memory_pressure(self) -> CleanupReport:
        """Run the cleanup callbacks because memory is short (called by the scheduler's memory cap)."""
        return await self.cleanup.run("memory_pressure")

    # --------------------------------------------------------------- collections

    async def perform_optimized_collection(self, generation: int = 2) -> CollectionResult:
        """Run the cleanup callbacks, then collect ``generation`` (0, 1 or 2: 2 is a full collection).

        Async because cleanup callbacks may be ``async def``. The collection itself is synchronous and
        blocks the event loop for its duration (a full collection of 1e6 unfrozen containers takes
        ~150 ms); to keep it off request time use :class:`~sanaa_async_mem.collector.GCScheduler`.
        Runs even while GC is disabled. Cancellation: only while awaiting async callbacks; once the
        collection starts it completes. Raises ConfigurationError for a bad ``generation``.
        """
        if isinstance(generation, bool) or not isinstance(generation, int) or not 0 <= generation <= 2:
            raise ConfigurationError("generation", generation, "must be 0, 1 or 2")
        report = await self.cleanup.run("collection")
        memory_before = rss()
        stats_before = gc.get_stats()
        started = time.perf_counter()
        try:
            gc.collect(generation)
        except Exception as exc:  # pragma: no cover - gc.collect raises only from broken finalizers' C code
            raise GCError(f"gc.collect({generation}) failed: {exc}") from exc
        duration = time.perf_counter() - started
        # Per-generation counters of the collection we just ran (gc.collect's return value lumps
        # collected and uncollectable together).
        stats_after = gc.get_stats()
        g = min(generation, len(stats_after) - 1)
        collected = stats_after[g]["collected"] - stats_before[g]["collected"]
        uncollectable = stats_after[g]["uncollectable"] - stats_before[g]["uncollectable"]
        memory_after = rss()
        _log.debug(
            "collected generation %d: %d objects in %.3f ms",
            generation,
            collected,
            duration * 1e3,
            extra={"sanaa_generation": generation, "sanaa_collected": collected, "sanaa_duration": duration},
        )
        return CollectionResult(
            generation,
            collected,
            uncollectable,
            duration,
            memory_before,
            memory_after,
            report.ran,
            report.failed,
        )

    # -------------------------------------------------------------- lifecycles

    def monitor_object_lifecycle(self, obj: T, name: str) -> weakref.ref[T]:
        """Track ``obj`` under ``name`` until it is freed; returns a weak reference to it.

        A finalizer records the object's lifetime (seconds) when it is freed, by refcount or by a
        collection. Raises ConfigurationError for a bad ``name``, TypeError if ``obj`` cannot be weakly
        referenced (ints, strs, tuples, lists, dicts, classes with ``__slots__`` lacking ``__weakref__``):
        wrap it in a small class instead.
        """
        return self.lifecycles.monitor(obj, name)

    def lifecycle_stats(self) -> dict[str, LifecycleStats]:
        """Per name: monitored objects still alive, collected, and the lifetimes of the collected ones."""
        return self.lifecycles.stats()

    # ---------------------------------------------------------------- reporting

    def stats(self) -> GCStats:
        """Collector kind, current settings, per-generation counts and pauses, who holds the settings.

        Not for hot paths: ``gc.get_freeze_count()`` walks the permanent generation (ms at 1e6 objects).
        """
        current = GCSettings.capture()
        return GCStats(
            collector=self.collector.kind,
            enabled=current.enabled,
            thresholds=current.thresholds,
            counts=tuple(gc.get_count()),
            frozen_objects=current.frozen_objects,
            open_disabled_sections=gc_disabled_sections(),
            pauses=self.pauses.snapshot(),
            cleanup_callbacks=len(self.cleanup),
            state=gc_state().stats(),
            pid=os.getpid(),
        )

    def get_gc_stats(self) -> dict[str, Any]:
        """``stats().as_dict()``: the original name, kept."""
        return self.stats().as_dict()


__all__ = [
    "CleanupReport",
    "CollectionResult",
    "CollectorInfo",
    "GCDisabledSection",
    "GCPauseRecorder",
    "GCSettings",
    "GCSettingsChange",
    "GCStats",
    "GarbageCollectionOptimizer",
    "LifecycleStats",
    "detect_collector",
    "gc_disabled_sections",
]
