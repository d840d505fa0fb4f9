"""GCScheduler: full (oldest-generation) collections at idle moments instead of in the middle of requests.

On a generational collector (CPython 3.11-3.13, 3.14.5+) the scheduler holds a ``defer`` lease on the
process's GC state (:mod:`~sanaa_async_mem.collector.state`): the oldest generation's threshold is out of
reach, so the interpreter never starts a full collection by itself; young collections stay automatic
(they cost ~10-500 us). A background task then runs the full collection itself:

* when one is **due** and the loop is **idle**;
* ``deadline`` seconds after it became due, idle or not (a saturated loop is never idle, and deferring
  for ever grows pauses and memory), or at once when the oldest generation has grown by twice the due
  growth (at least ``max_growth`` of the live heap);
* at once when the process RSS reaches ``memory_cap_bytes`` (after running the optimizer's cleanup
  callbacks, if an optimizer was given), at most once per ``cap_min_interval`` seconds.

**Due** means: as many middle-generation collections since the last full one as the application's oldest
threshold (10), and growth of the oldest generation by the *due growth* times the live unfrozen heap. The
growth is estimated without touching the heap: middle collections since the last full one
(``gc.get_count()[2]``; each promotes its survivors) times the promotions per middle collection measured
at the previous full collections.

The due growth is what makes the scheduler cost no more than the interpreter's own collector. CPython runs
a full collection when what was promoted reaches 25% of the long-lived heap, so over time it re-scans its
whole heap (the startup heap included) once per 25% of it promoted. The scheduler measures both costs: the
full collection before the startup heap was frozen (seconds per object of the whole heap, ``a_s``) and,
every ``calibrate_every`` full collections, a second full collection right after one, which finds no
garbage and so measures the re-scan of the live unfrozen heap alone (``a`` per object, ``L`` objects). It
then lets as much be promoted between two full collections as keeps its re-scanning no dearer per promoted
object than the interpreter's: due growth ``a (F + L) / (4 (a_s F + a L))`` of ``L`` with ``F`` frozen
objects, between 25% and 100% (``due_growth`` fixes it instead). Garbage costs the same to free whichever
collection finds it, so that is the whole difference. With nothing frozen it is the interpreter's own 25%;
with a large frozen heap, full collections come more rarely than 25% would make them, each a short pause
of the small unfrozen heap. A third condition, the *GC budget*, keeps a large unfrozen heap from being
re-scanned often: re-scanning the live heap may take at most ``gc_budget`` (5%) of wall time. It matters
only for a large unfrozen heap on a slow machine; the due growth spaces collections further apart first.

**Idle** means the scheduler's timer fired on time (the loop was waiting for I/O), one extra loop
iteration came back within ``idle_probe`` seconds (nothing substantial was ready), and no request is in
flight (if an integration reports requests through ``request_started()``/``request_finished()`` or
``request()``; without one, the two loop probes decide alone). A request that arrives during an idle-time
collection still waits for it: short collections are what keeps that wait small.

Idleness is judged only from public loop APIs (timers and ``asyncio.sleep(0)``), so it works the same on
the default asyncio loop and on uvloop. While GC is disabled (by the application or by a
``disable_gc_temporarily`` section) only the memory cap can trigger a collection. If the application sets
the oldest threshold itself while the scheduler runs, the application's setting wins (see
:mod:`~sanaa_async_mem.collector.state`): the scheduler then leaves full collections to the interpreter
and only enforces the memory cap.

On collectors where the policy does not apply (``incremental``: CPython 3.14.0-3.14.4, whose old-generation
work is already sliced into increments; ``unknown``: PyPy, free-threaded builds) the scheduler runs in
**passive** mode: it changes no setting and only enforces the memory cap. :attr:`GCScheduler.mode` says
which mode is in force.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Literal

from .._logging import get_logger
from .._process import rss
from ..config import Settings, fraction, positive_int, positive_number, seconds
from ..errors import ConfigurationError, GCError
from .kind import CollectorInfo, detect_collector
from .optimizer import GarbageCollectionOptimizer
from .state import OUT_OF_REACH, GCLease, gc_state

_log = get_logger("gc")

# The interpreter's own rule (a full collection per 25% of the long-lived heap promoted), and the most the
# measured rule lets pile up between two full collections (pauses grow with it).
_INTERPRETER_GROWTH = 0.25
_MOST_GROWTH = 1.0

Reason = Literal["idle", "deadline", "memory_cap"]
Mode = Literal["deferred", "passive"]


def _secs(name: str, value: float, *, allow_zero: bool) -> float:
    return float(seconds(name, value, allow_zero=allow_zero) or 0.0)


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of the scheduler. Durations in seconds, memory in bytes."""

    mode: Mode
    collector: str
    running: bool
    in_flight: int
    full_collections: dict[str, int]
    total_collection_seconds: float
    max_collection_seconds: float
    last_collection_seconds: float
    due_for: float | None
    last_rss: int | None
    #: The growth of the oldest generation (fraction of ``live_objects``) at which a full collection is due.
    due_growth: float
    live_objects: int | None
    #: Measured seconds to re-scan the live unfrozen heap once (None before the first calibration).
    live_scan_seconds: float | None
    promoted_per_middle: float | None

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def parity_growth(live_cost: float, live: int, full_scan_cost: float, frozen: int) -> float:
    """The promoted growth, as a fraction of ``live``, per full collection that re-scans ``live`` objects at
    ``live_cost`` seconds each for no more per promoted object than the interpreter pays: it re-scans all of
    ``frozen + live`` objects (the frozen ones at ``full_scan_cost`` each) per 25% of them promoted.

    Between 25% (nothing frozen, or equal costs) and 100% (the pause grows with it). Pure arithmetic.
    """
    whole = full_scan_cost * frozen + live_cost * live
    if whole <= 0.0:
        return _INTERPRETER_GROWTH
    ratio = _INTERPRETER_GROWTH * live_cost * (frozen + live) / whole
    return min(_MOST_GROWTH, max(_INTERPRETER_GROWTH, ratio))


class _RequestScope:
    """``with``/``async with`` marking one request in flight (no awaits: not a cancellation point)."""

    __slots__ = ("_scheduler",)

    def __init__(self, scheduler: GCScheduler) -> None:
        self._scheduler = scheduler

    def __enter__(self) -> None:
        self._scheduler.request_started()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._scheduler.request_finished()

    async def __aenter__(self) -> None:
        self._scheduler.request_started()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._scheduler.request_finished()


class GCScheduler:
    """Moves full collections to idle moments of the event loop (see the module documentation).

    Parameters (seconds unless said otherwise): ``deadline`` after a full collection became due, one runs
    even on a busy loop; ``memory_cap_bytes`` RSS that forces one at once (default
    ``Settings.high_memory_bytes``, i.e. ``MEMORY_HIGH_USAGE_BYTES``; ``0`` disables the cap);
    ``check_interval`` how often the background task looks; ``idle_lag`` how late its timer may fire and
    ``idle_probe`` how long one loop iteration may take for the loop to count as idle;
    ``cap_min_interval`` the least time between two cap-forced collections; ``gc_budget`` the fraction of
    wall time (0 < f <= 1) full collections may spend re-scanning the live heap; ``due_growth`` the growth
    of the oldest generation, as a fraction of the live unfrozen heap, at which a full collection becomes
    due (``None``: measured, see the module documentation) and ``max_growth`` the least growth at which
    one is forced on a busy loop; ``calibrate_every`` how many full collections apart the live heap's
    re-scan is measured (one extra full collection, right after one); ``optimizer`` whose cleanup
    callbacks run on memory pressure; ``rss_reader`` returns the memory figure the cap is compared with
    (default: this process's RSS via psutil; a container may pass its cgroup usage); ``collector`` overrides
    :func:`~sanaa_async_mem.collector.detect_collector`.

    Call :meth:`start` after freezing the startup heap (``optimize_gc_settings(startup_complete=True)``):
    it counts the live unfrozen heap once, which is cheap only once the startup heap is frozen.

    Raises ConfigurationError for a bad parameter. Use ``async with GCScheduler(): ...`` or
    :meth:`start`/:meth:`stop` from the event loop's thread; request notifications too.
    """

    def __init__(
        self,
        *,
        deadline: float = 0.5,
        memory_cap_bytes: int | None = None,
        check_interval: float = 0.05,
        idle_lag: float = 0.005,
        idle_probe: float = 0.001,
        cap_min_interval: float = 1.0,
        gc_budget: float = 0.05,
        due_growth: float | None = None,
        max_growth: float = 1.0,
        calibrate_every: int = 16,
        optimizer: GarbageCollectionOptimizer | None = None,
        rss_reader: Callable[[], int] | None = None,
        collector: CollectorInfo | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.deadline = _secs("deadline", deadline, allow_zero=False)
        self.check_interval = _secs("check_interval", check_interval, allow_zero=False)
        self.idle_lag = _secs("idle_lag", idle_lag, allow_zero=False)
        self.idle_probe = _secs("idle_probe", idle_probe, allow_zero=False)
        self.cap_min_interval = _secs("cap_min_interval", cap_min_interval, allow_zero=True)
        self.gc_budget = fraction("gc_budget", gc_budget)
        self.due_growth = None if due_growth is None else positive_number("due_growth", due_growth)
        self.max_growth = positive_number("max_growth", max_growth)
        self.calibrate_every = positive_int("calibrate_every", calibrate_every, maximum=2**31 - 1)
        if self.gc_budget == 0.0:
            raise ConfigurationError("gc_budget", gc_budget, "must be > 0")
        if memory_cap_bytes is None:
            memory_cap_bytes = (settings if settings is not None else Settings.from_env()).high_memory_bytes
        self.memory_cap_bytes = positive_int("memory_cap_bytes", memory_cap_bytes, minimum=0)
        self.optimizer = optimizer
        self._rss_reader = rss if rss_reader is None else rss_reader
        self.collector = collector if collector is not None else detect_collector()
        self.mode: Mode = "deferred" if self.collector.kind == "generational" else "passive"
        self.in_flight = 0
        self._task: asyncio.Task[None] | None = None
        self._lease: GCLease | None = None
        self._due_since: float | None = None
        self._not_before = 0.0
        self._live_objects: int | None = None
        self._per_object: deque[float] = deque(maxlen=32)
        self._per_middle: float | None = None
        self._live_cost: float | None = None  # seconds per live unfrozen object, from calibrations
        self._collections = 0
        self._due_middles = 10
        self._last_cap_collection = -float("inf")
        self._counts: dict[str, int] = {"idle": 0, "deadline": 0, "memory_cap": 0}
        self._total = 0.0
        self._max = 0.0
        self._last = 0.0
        self._last_rss: int | None = None
        self._cap_warned = False

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Take over full collections (a ``defer`` lease) and start the background task. Not a cancellation
        point. Raises GCError if already running.
        """
        if self._task is not None and not self._task.done():
            raise GCError("GCScheduler is already running")
        loop = asyncio.get_running_loop()
        self.mode = "deferred" if self.collector.kind == "generational" else "passive"
        if self.mode == "deferred":
            oldest = gc_state().application_thresholds()[2]
            # The interpreter's own first criterion (middle collections since the last full one) stays
            # ours too, with the application's value (not a deferring lease's).
            self._due_middles = oldest if 0 < oldest < OUT_OF_REACH else 10
            # The growth criterion needs the size of the live unfrozen heap; counting it once here costs a
            # fraction of one full collection (frozen objects are not in the list).
            self._live_objects = len(gc.get_objects(2))
            self._lease = gc_state().defer_full_collections("GCScheduler")
        if self.mode == "passive":
            _log.info(
                "GC scheduler passive (%s collector: %s): only the memory cap is enforced",
                self.collector.kind,
                self.collector.reason,
            )
        self._due_since = None
        self._task = loop.create_task(self._run(), name="sanaa-gc-scheduler")
        # A task cancelled before its first step never runs its ``finally``: restore from here too.
        self._task.add_done_callback(lambda _: self._restore())

    async def stop(self) -> None:
        """Stop the background task and restore the oldest-generation threshold.

        Settings are restored even if this call is cancelled while waiting for the task (which it cancels),
        and even if the task was cancelled by someone else (e.g. the loop shutting down). Idempotent.
        """
        task, self._task = self._task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            self._restore()

    async def __aenter__(self) -> GCScheduler:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _restore(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.release()

    # ------------------------------------------------------------------ requests

    def request_started(self) -> None:
        """An integration says a request began (the loop is not idle until it finishes)."""
        self.in_flight += 1

    def request_finished(self) -> None:
        """An integration says a request ended. Extra calls are ignored (the count never goes below 0)."""
        if self.in_flight > 0:
            self.in_flight -= 1

    def request(self) -> _RequestScope:
        """``with scheduler.request():`` or ``async with`` around one request."""
        return _RequestScope(self)

    # ----------------------------------------------------------------- the task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.check_interval
        try:
            while True:
                expected = loop.time() + interval
                await asyncio.sleep(interval)
                try:
                    await self._tick(loop.time() - expected)
                except Exception:
                    # A failing RSS reader or cleanup path must not end the scheduler: full collections would
                    # then never run again (their automatic trigger is out of reach until stop()).
                    _log.exception("GC scheduler tick failed; continuing")
        finally:
            # Cancellation (stop(), loop shutdown) lands on one of the awaits; settings come back here.
            self._restore()

    async def _tick(self, lag: float) -> None:
        reason = self._decide(lag)
        if reason is None:
            return
        if reason == "memory_cap":
            if self.optimizer is not None:
                await self.optimizer.handle_memory_pressure()
            self._collect("memory_cap")
        elif reason == "deadline":
            self._collect("deadline")
        else:
            # "maybe idle": one more loop iteration tells whether anything substantial was ready.
            started = time.perf_counter()
            await asyncio.sleep(0)
            if time.perf_counter() - started <= self.idle_probe and self.in_flight == 0 and self._is_due():
                self._collect("idle")

    def _growth(self) -> float | None:
        """Estimated growth of the oldest generation since the last full collection, as a fraction of the
        live unfrozen heap measured then; None before the first measurement.

        Estimated without touching the heap: middle-generation collections since the last full one
        (``gc.get_count()[2]``; each promotes its survivors) times the promotions per middle collection
        measured at our previous full collections.
        """
        if self._per_middle is None:
            return None
        return gc.get_count()[2] * self._per_middle / max(1, self._live_objects or 0)

    def due_ratio(self) -> float:
        """The growth (fraction of the live unfrozen heap) at which a full collection is due now."""
        if self.due_growth is not None:
            return self.due_growth
        full_scan = gc_state().full_scan_per_object
        if full_scan is None or self._live_cost is None or not self._live_objects:
            return _INTERPRETER_GROWTH
        return parity_growth(self._live_cost, self._live_objects, full_scan, gc_state().frozen_objects)

    def _is_due(self) -> bool:
        """Due: enough middle collections, enough growth (see :meth:`due_ratio`), and the budget allows it."""
        middles = gc.get_count()[2]
        if middles < self._due_middles or time.monotonic() < self._not_before:
            return False
        growth = self._growth()
        return growth is None or growth >= self.due_ratio()

    def _decide(self, lag: float) -> Reason | Literal["maybe_idle"] | None:
        """The whole policy, synchronous: what (if anything) to do on this tick."""
        now = time.monotonic()
        if self.memory_cap_bytes and now - self._last_cap_collection >= self.cap_min_interval:
            rss = self._last_rss = self._rss_reader()
            if rss >= self.memory_cap_bytes:
                return "memory_cap"
        if self.mode != "deferred" or not gc.isenabled():
            return None
        lease = self._lease
        if lease is not None and not lease.in_force:
            # The application set the oldest threshold itself (see collector.state): full collections are
            # the interpreter's again, and running ours as well would double them.
            self.mode = "passive"
            _log.warning("the GC scheduler leaves full collections to the interpreter from now on")
            return None
        growth = self._growth()
        forced = max(self.max_growth, 2.0 * self.due_ratio())
        if growth is not None and growth >= forced and gc.get_count()[2] >= 1:
            # However busy the loop, do not let garbage pile up in the oldest generation: it would make the
            # eventual pause (and memory) grow without bound.
            return "deadline"
        if not self._is_due():
            self._due_since = None
            return None
        if self._due_since is None:
            self._due_since = now
        if now - self._due_since >= self.deadline:
            return "deadline"
        if self.in_flight or lag > self.idle_lag:
            return None
        return "maybe_idle"

    def _collect(self, reason: Reason) -> None:
        started = time.perf_counter()
        # Young generations first, so that the full collection's garbage count is only what had reached the
        # oldest generation: that, with the live heap's growth, is what was promoted (the measure of
        # growth). The extra young collection costs little next to the full one.
        gc.collect(1)
        middles = gc.get_count()[2]
        unreachable = gc.collect()
        elapsed = time.perf_counter() - started
        # Every survivor is now in the oldest generation, so its length is the live unfrozen heap. Counting
        # it costs a small fraction of the collection (a list of references, no traversal).
        live = len(gc.get_objects(2))
        if live and (self._collections < 2 or self._collections % self.calibrate_every == 0):
            # A second full collection right away finds no garbage: it is the live heap's re-scan alone.
            again = time.perf_counter()
            gc.collect()
            sample = (time.perf_counter() - again) / live
            self._live_cost = sample if self._live_cost is None else 0.5 * (self._live_cost + sample)
            elapsed = time.perf_counter() - started
        self._collections += 1
        previous = self._live_objects if self._live_objects is not None else live
        if middles > 0:
            sample = (max(0, live - previous) + unreachable) / middles
            self._per_middle = sample if self._per_middle is None else (self._per_middle + sample) / 2
        self._live_objects = live
        self._due_since = None
        # The budget: re-scanning the *live* heap may take at most gc_budget of wall time, so the next full
        # collection is not due before live_cost / gc_budget seconds from now. live_cost is the measured
        # re-scan (or, before the first measurement, the live object count times the lowest per-object
        # cost seen recently): spacing by anything that includes the garbage feeds back (longer spacing,
        # more garbage, longer pause, longer spacing). This keeps an unfrozen large heap from being
        # re-scanned often; a frozen one is cheap to re-scan.
        examined = live + unreachable
        if examined:
            self._per_object.append(elapsed / examined)
        per_live = self._live_cost if self._live_cost is not None else min(self._per_object, default=0.0)
        self._not_before = time.monotonic() + per_live * live / self.gc_budget
        self._counts[reason] += 1
        self._total += elapsed
        self._last = elapsed
        if elapsed > self._max:
            self._max = elapsed
        if reason == "memory_cap":
            self._last_cap_collection = time.monotonic()
            rss = self._rss_reader()
            if rss >= self.memory_cap_bytes and not self._cap_warned:
                self._cap_warned = True
                _log.warning(
                    "RSS %d bytes still above the memory cap (%d bytes) after a full collection",
                    rss,
                    self.memory_cap_bytes,
                    extra={"sanaa_rss": rss, "sanaa_memory_cap": self.memory_cap_bytes},
                )
        _log.debug(
            "full collection (%s) took %.3f ms",
            reason,
            elapsed * 1e3,
            extra={"sanaa_reason": reason, "sanaa_duration": elapsed},
        )

    # ----------------------------------------------------------------- reporting

    def stats(self) -> SchedulerStats:
        due_for = None if self._due_since is None else time.monotonic() - self._due_since
        return SchedulerStats(
            mode=self.mode,
            collector=self.collector.kind,
            running=self.running,
            in_flight=self.in_flight,
            full_collections=dict(self._counts),
            total_collection_seconds=self._total,
            max_collection_seconds=self._max,
            last_collection_seconds=self._last,
            due_for=due_for,
            last_rss=self._last_rss,
            due_growth=self.due_ratio(),
            live_objects=self._live_objects,
            live_scan_seconds=(
                None
                if self._live_cost is None or self._live_objects is None
                else self._live_cost * self._live_objects
            ),
            promoted_per_middle=self._per_middle,
        )


__all__ = ["GCScheduler", "SchedulerStats", "parity_growth"]
