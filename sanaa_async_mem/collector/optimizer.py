"""GarbageCollectionOptimizer: GC policy, GC-free sections, cleanup callbacks, lifecycle and pause tracking.

The collector is process-global, so everything here that changes it (thresholds, ``gc.freeze()``,
``gc.disable()``) records what it changed and can put it back exactly. GC pauses are recorded through
``gc.callbacks`` into one :class:`~sanaa_async_mem._stats.Histogram` per generation; the callback is a few
microseconds, because it runs inside every collection, young ones included (~10 us each).

Which collector the interpreter has matters to the policy; see :func:`detect_collector`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import inspect
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal, TypeVar

from .._logging import get_logger
from .._process import rss
from .._stats import Histogram, HistogramSnapshot
from ..config import Settings, positive_int, seconds
from ..errors import ConfigurationError, GCError

_log = get_logger("gc")

T = TypeVar("T")
CleanupCallback = Callable[[], object] | Callable[[], Awaitable[object]]

CollectorKind = Literal["generational", "incremental", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True)
class CollectorInfo:
    """What the running interpreter's cyclic collector does.

    ``kind`` is ``"generational"`` (CPython 3.11-3.13, and 3.14.5+ where the generational collector is
    back), ``"incremental"`` (CPython 3.14.0-3.14.4: a young generation and an old one scanned a slice at a
    time, so there is no separate full collection to move), or ``"unknown"`` (PyPy, free-threaded builds,
    anything we have not measured). Only ``"generational"`` lets the scheduler take full collections away
    from request time; the others get the documented passive behaviour.
    """

    kind: CollectorKind
    generations: int
    default_young_threshold: int
    reason: str


def detect_collector() -> CollectorInfo:
    """Inspect the running interpreter (cheap: no collection is run)."""
    generations = len(gc.get_stats())
    v = sys.version_info
    young_default = 2000 if v >= (3, 13) else 700
    if sys.implementation.name != "cpython":
        return CollectorInfo(
            "unknown", generations, young_default, f"{sys.implementation.name} is not CPython"
        )
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return CollectorInfo(
            "unknown", generations, young_default, "free-threaded build: every collection is full"
        )
    if (3, 14, 0) <= v[:3] <= (3, 14, 4):
        return CollectorInfo(
            "incremental",
            2,
            young_default,
            f"CPython {v[0]}.{v[1]}.{v[2]} collects the old generation incrementally",
        )
    return CollectorInfo("generational", generations, young_default, f"CPython {v[0]}.{v[1]}.{v[2]}")


@dataclasses.dataclass(frozen=True, slots=True)
class GCSettings:
    """The collector's global settings at one moment: enabled, thresholds, frozen (permanent) objects."""

    enabled: bool
    thresholds: tuple[int, ...]
    frozen_objects: int

    @classmethod
    def capture(cls) -> GCSettings:
        return cls(gc.isenabled(), tuple(gc.get_threshold()), gc.get_freeze_count())


@dataclasses.dataclass(frozen=True, slots=True)
class GCSettingsChange:
    """What :meth:`GarbageCollectionOptimizer.optimize_gc_settings` did.

    ``applied`` is False when ``GC_OPTIMIZATION_ENABLED`` is false (then ``before == after`` and ``reason``
    says why). ``froze`` is the number of objects moved to the permanent generation (0 if none).
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
class CleanupReport:
    """How many cleanup callbacks ran and how many raised (those were logged)."""

    ran: int
    failed: int


# --------------------------------------------------------------------------------------------- GC pauses


class GCPauseRecorder:
    """Records each collection's pause (seconds, wall clock) in a histogram per generation (``gc.callbacks``).

    ``install()``/``uninstall()`` are idempotent. A collection runs on whichever thread allocated, and only
    one runs at a time, so start/stop pairs never interleave; readers may see a snapshot that is one sample
    behind. ``histograms[g]`` is the histogram of generation ``g``.
    """

    __slots__ = ("_installed", "_started", "collected", "histograms", "uncollectable")

    def __init__(self) -> None:
        # One histogram per generation the interpreter reports, plus a spare for interpreters that report a
        # generation number we did not expect (3.14's incremental collector says 1 for an increment).
        self.histograms: tuple[Histogram, ...] = tuple(
            Histogram() for _ in range(max(3, len(gc.get_stats())))
        )
        self.collected = 0
        self.uncollectable = 0
        self._started = 0.0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside every collection: no allocation beyond a float, no logging, no locks.
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        g = info.get("generation", 0)
        hists = self.histograms
        hists[g if 0 <= g < len(hists) else len(hists) - 1].record(elapsed)
        self.collected += info.get("collected", 0)
        self.uncollectable += info.get("uncollectable", 0)

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            # Remove our bound method by identity of its owner; a plain ``remove`` compares with ==, which for
            # bound methods is exactly that.
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._callback)
            self._installed = False

    def snapshot(self) -> dict[int, HistogramSnapshot]:
        """``{generation: snapshot}`` of pause times in seconds."""
        return {g: h.snapshot() for g, h in enumerate(self.histograms)}

    @property
    def total_seconds(self) -> float:
        return sum(h.sum for h in self.histograms)

    @property
    def max_pause(self) -> float:
        return max(h.max for h in self.histograms)

    def reset(self) -> None:
        for h in self.histograms:
            h.reset()
        self.collected = 0
        self.uncollectable = 0


# ----------------------------------------------------------------------------------- GC-free sections


class _Token:
    __slots__ = ("deadline", "expired", "max_duration", "started")

    def __init__(self, started: float, max_duration: float | None) -> None:
        self.started = started
        self.max_duration = max_duration
        self.deadline = None if max_duration is None else started + max_duration
        self.expired = False


class _DisableRegistry:
    """The process-wide count of open GC-free sections (the collector is global, so the count must be too).

    One lock guards the count; a single daemon watchdog thread (started on first use) expires sections
    that outlive their maximum duration, so a forgotten section cannot leave GC off, even if the event loop
    itself is blocked.
    """

    def __init__(self) -> None:
        # Re-entrant: a finalizer run by a collection that an allocation here triggers may itself open a
        # section on the same thread; a plain lock would deadlock it.
        self.lock = threading.RLock()
        self.wake = threading.Condition(self.lock)
        self.active: set[_Token] = set()
        self.we_disabled = False
        self.expired_total = 0
        self._watchdog: threading.Thread | None = None

    def acquire(self, max_duration: float | None) -> _Token:
        token = _Token(time.monotonic(), max_duration)
        with self.lock:
            if not self.active:
                # Only the first section decides: if GC was already off (the application's choice), we never
                # turn it back on.
                self.we_disabled = gc.isenabled()
                if self.we_disabled:
                    gc.disable()
            self.active.add(token)
            if token.deadline is not None:
                if self._watchdog is None or not self._watchdog.is_alive():
                    self._watchdog = threading.Thread(
                        target=self._watch, name="sanaa-gc-watchdog", daemon=True
                    )
                    self._watchdog.start()
                self.wake.notify()
        return token

    def release(self, token: _Token) -> bool:
        """Close one section; True if it had already expired (the caller warns)."""
        with self.lock:
            if token.expired:
                return True
            self.active.discard(token)
            self._maybe_enable()
            return False

    def _maybe_enable(self) -> None:
        if not self.active and self.we_disabled:
            self.we_disabled = False
            gc.enable()

    def _watch(self) -> None:
        with self.lock:
            while True:
                deadlines = [t.deadline for t in self.active if t.deadline is not None]
                if not deadlines:
                    self.wake.wait()
                    continue
                now = time.monotonic()
                nearest = min(deadlines)
                if nearest > now:
                    self.wake.wait(nearest - now)
                    continue
                for t in [t for t in self.active if t.deadline is not None and t.deadline <= now]:
                    t.expired = True
                    self.active.discard(t)
                    self.expired_total += 1
                    _log.warning(
                        "GC-free section open for more than %.3f s: closing it so GC is not left disabled",
                        t.max_duration,
                        extra={"sanaa_max_duration": t.max_duration, "sanaa_open_sections": len(self.active)},
                    )
                self._maybe_enable()

    @property
    def open_sections(self) -> int:
        with self.lock:
            return len(self.active)


_REGISTRY = _DisableRegistry()


def gc_disabled_sections() -> int:
    """How many :meth:`GarbageCollectionOptimizer.disable_gc_temporarily` sections are open in the process."""
    return _REGISTRY.open_sections


def _owner() -> tuple[int, int]:
    # A section object may be entered by several tasks and threads at once; each (thread, task) pair keeps
    # its own stack of tokens so overlapping exits close the right one.
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return (threading.get_ident(), id(task) if task is not None else 0)


class GCDisabledSection:
    """A section with the cyclic collector off; usable with ``with`` and ``async with``, re-entrant.

    Sections are reference-counted process-wide: GC comes back on when the last open section closes, never
    earlier, whichever task or thread closes first. If GC was already disabled when the first section opened,
    it stays disabled. A section open for longer than ``max_duration`` seconds is closed by a watchdog
    thread (GC re-enabled if it was the last, a warning logged on ``sanaa.gc``); leaving it later then
    emits a ``RuntimeWarning``. Entering and leaving never await: there is no cancellation point.
    """

    __slots__ = ("_max_duration", "_tokens")

    def __init__(self, max_duration: float | None) -> None:
        self._max_duration = max_duration
        self._tokens: dict[tuple[int, int], list[_Token]] = {}

    def __enter__(self) -> GCDisabledSection:
        token = _REGISTRY.acquire(self._max_duration)
        self._tokens.setdefault(_owner(), []).append(token)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        key = _owner()
        stack = self._tokens.get(key)
        if not stack:
            raise GCError(
                "disable_gc_temporarily(): section exited by a task or thread that did not enter it"
            )
        token = stack.pop()
        if not stack:
            del self._tokens[key]
        if _REGISTRY.release(token):
            warnings.warn(
                f"GC-free section exceeded max_duration={token.max_duration} s; "
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


# ---------------------------------------------------------------------------------- object lifecycles


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleStats:
    """Monitored objects of one name: how many are alive, how many were collected, their lifetimes (s)."""

    name: str
    live: int
    collected: int
    lifetimes: HistogramSnapshot


class _Lifecycle:
    __slots__ = ("collected", "lifetimes", "monitored")

    def __init__(self) -> None:
        self.monitored = 0
        self.collected = 0
        self.lifetimes = Histogram()


# ------------------------------------------------------------------------------------------ optimizer


class GarbageCollectionOptimizer:
    """Tunes the collector for a service, and undoes it exactly.

    ``settings`` defaults to :meth:`Settings.from_env` (so ``GC_OPTIMIZATION_ENABLED`` and
    ``GC_COLLECTION_THRESHOLD`` apply). ``max_disable_duration`` (seconds) bounds every
    :meth:`disable_gc_temporarily` section that does not pass its own.
    """

    def __init__(self, settings: Settings | None = None, *, max_disable_duration: float = 30.0) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.max_disable_duration = float(
            seconds("max_disable_duration", max_disable_duration, allow_zero=False) or 0.0
        )
        self.collector = detect_collector()
        self.pauses = GCPauseRecorder()
        self._callbacks: list[CleanupCallback] = []
        self._callbacks_lock = threading.Lock()
        self._saved: GCSettings | None = None
        self._froze = False
        self._lifecycles: dict[str, _Lifecycle] = {}
        # Finalizers run inside collections, on any thread, possibly while this object's own code is on the
        # stack: they only append to a deque (atomic, lock-free) and the stats fold it in when read.
        self._deaths: deque[tuple[str, float]] = deque()

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

        Does nothing (``applied=False``) when ``GC_OPTIMIZATION_ENABLED`` is false. Calling it again keeps the
        settings saved by the first call, so :meth:`restore_gc_settings` still returns to the original ones.
        Raises ConfigurationError for bad ``thresholds``. Synchronous; the freeze's collection blocks.
        """
        before = GCSettings.capture()
        if not self.settings.gc_optimization_enabled:
            _log.info("GC optimization disabled by GC_OPTIMIZATION_ENABLED; settings left as they are")
            return GCSettingsChange(False, before, before, 0, "GC_OPTIMIZATION_ENABLED is false")
        if thresholds is None:
            # Never below the interpreter's own default, and not above it either unless asked: raising the
            # young threshold tenfold (7000) cost ~20% more GC CPU in our runs of the reference workload
            # (benchmarks/gc_bench.py, 1000 req/s), not less.
            young = max(self.settings.gc_collection_threshold, self.collector.default_young_threshold)
            new = (young, *before.thresholds[1:])
        else:
            if not 1 <= len(thresholds) <= 3:
                raise ConfigurationError("thresholds", thresholds, "must hold 1 to 3 integers")
            new = tuple(positive_int(f"thresholds[{i}]", t, minimum=0) for i, t in enumerate(thresholds))
        if self._saved is None:
            self._saved = before
        try:
            gc.set_threshold(*new)
        except (ValueError, OverflowError) as exc:  # pragma: no cover - validated above
            raise GCError(f"gc.set_threshold{new!r} failed: {exc}") from exc
        froze = self.freeze_startup_heap() if startup_complete else 0
        self.pauses.install()
        after = GCSettings.capture()
        _log.info(
            "GC settings optimized: thresholds %s -> %s, froze %d objects",
            before.thresholds,
            after.thresholds,
            froze,
            extra={"sanaa_thresholds": after.thresholds, "sanaa_frozen": froze},
        )
        return GCSettingsChange(True, before, after, froze, "applied")

    def freeze_startup_heap(self, *, collect_first: bool = True) -> int:
        """Move every object tracked now to the permanent generation; returns how many were frozen.

        Collects first (unless ``collect_first=False``) so garbage is not frozen forever. Frozen objects are
        never scanned again, which is what makes later full collections cheap. Undone by
        :meth:`restore_gc_settings`.
        """
        if self._saved is None:
            self._saved = GCSettings.capture()
        if collect_first:
            gc.collect()
        before = gc.get_freeze_count()
        gc.freeze()
        self._froze = True
        return gc.get_freeze_count() - before

    def restore_gc_settings(self) -> GCSettings:
        """Put back the settings saved by the first :meth:`optimize_gc_settings`/:meth:`freeze_startup_heap`.

        Thresholds and enabled state come back exactly. Objects we froze are unfrozen only if the permanent
        generation was empty before (``gc.unfreeze()`` cannot tell our objects from the application's);
        otherwise they stay frozen and a warning is logged. Stops pause recording. Returns the settings now
        in force. Idempotent.
        """
        self.pauses.uninstall()
        saved, self._saved = self._saved, None
        if saved is None:
            return GCSettings.capture()
        gc.set_threshold(*saved.thresholds)
        if self._froze:
            self._froze = False
            if saved.frozen_objects == 0:
                gc.unfreeze()
            else:
                _log.warning(
                    "objects were frozen before the optimizer froze the heap; leaving all of them frozen"
                )
        if saved.enabled != gc.isenabled():
            if saved.enabled:
                gc.enable()
            else:
                gc.disable()
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

        Callbacks run in registration order. Returns a function that unregisters it. Raises TypeError if
        ``callback`` is not callable. Thread-safe.
        """
        if not callable(callback):
            raise TypeError(f"cleanup callback must be callable, got {callback!r}")
        with self._callbacks_lock:
            self._callbacks.append(callback)

        def unregister() -> None:
            with self._callbacks_lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unregister

    async def run_cleanup_callbacks(self, reason: str = "requested") -> CleanupReport:
        """Run every cleanup callback once, awaiting async ones; returns how many ran and failed.

        A callback that raises is logged (``sanaa.gc``, with traceback) and the others still run.
        Cancellation: the ``await`` of an async callback is a cancellation point; ``CancelledError``
        propagates and the remaining callbacks do not run.
        """
        with self._callbacks_lock:
            callbacks = list(self._callbacks)
        failed = 0
        for cb in callbacks:
            try:
                result = cb()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failed += 1
                _log.exception(
                    "cleanup callback %r failed (reason: %s); running the others",
                    cb,
                    reason,
                    extra={"sanaa_reason": reason},
                )
        return CleanupReport(len(callbacks), failed)

    async def handle_memory_pressure(self) -> CleanupReport:
        """Run the cleanup callbacks because memory is short (called by the scheduler's memory cap)."""
        return await self.run_cleanup_callbacks("memory_pressure")

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
        report = await self.run_cleanup_callbacks("collection")
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
        collection. Raises TypeError if ``obj`` cannot be weakly referenced (ints, strs, tuples, lists,
        dicts, classes with ``__slots__`` lacking ``__weakref__``): wrap it in a small class instead.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "must be a non-empty string")
        try:
            ref = weakref.ref(obj)
        except TypeError:
            raise TypeError(
                f"monitor_object_lifecycle({name!r}): objects of type {type(obj).__name__!r} cannot be "
                "weakly referenced; wrap it in a class (or add '__weakref__' to its __slots__)"
            ) from None
        record = self._lifecycles.get(name)
        if record is None:
            record = self._lifecycles.setdefault(name, _Lifecycle())
        record.monitored += 1
        # The finalizer must not reference obj: its arguments are only the name, the start time and the deque.
        weakref.finalize(obj, _record_death, self._deaths, name, time.monotonic())
        return ref

    def lifecycle_stats(self) -> dict[str, LifecycleStats]:
        """Per name: monitored objects still alive, collected, and the lifetimes of the collected ones."""
        deaths = self._deaths
        while deaths:
            name, lifetime = deaths.popleft()
            record = self._lifecycles.get(name)
            if record is not None:
                record.collected += 1
                record.lifetimes.record(lifetime)
        return {
            name: LifecycleStats(name, r.monitored - r.collected, r.collected, r.lifetimes.snapshot())
            for name, r in self._lifecycles.items()
        }

    # ---------------------------------------------------------------- reporting

    def get_gc_stats(self) -> dict[str, Any]:
        """A plain dict: collector kind, current settings, per-generation counts and pause summaries.

        Not for hot paths: ``gc.get_freeze_count()`` walks the permanent generation (ms at 1e6 objects).
        """
        current = GCSettings.capture()
        return {
            "collector": self.collector.kind,
            "enabled": current.enabled,
            "thresholds": current.thresholds,
            "counts": gc.get_count(),
            "frozen_objects": current.frozen_objects,
            "open_disabled_sections": gc_disabled_sections(),
            "pauses_seconds": {g: s.as_dict() for g, s in self.pauses.snapshot().items()},
            "cleanup_callbacks": len(self._callbacks),
            "pid": os.getpid(),
        }


def _record_death(deaths: deque[tuple[str, float]], name: str, born: float) -> None:
    deaths.append((name, time.monotonic() - born))


__all__ = [
    "CleanupReport",
    "CollectionResult",
    "CollectorInfo",
    "GCDisabledSection",
    "GCPauseRecorder",
    "GCSettings",
    "GCSettingsChange",
    "GarbageCollectionOptimizer",
    "LifecycleStats",
    "detect_collector",
    "gc_disabled_sections",
]
