"""LoopLagMonitor: a histogram of event-loop lag, corrected for coordinated omission.

A timer is due every ``resolution`` seconds; its lag is how late it fired. A naive monitor records one
sample per tick, so a 300 ms block (during which no tick can run) counts once. Here a late tick also
records the samples that *would* have been taken during the block: with a 10 ms resolution, a 300 ms
block records 300, 290, 280, ... 10 ms (HdrHistogram's "expected interval" correction), so p99 sees it.

The timer is a plain ``loop.call_at`` callback (no task, no future). Most of a tick's cost is the loop
waking up (a system call and one loop iteration, tens of microseconds of CPU), so the cost is set by the
resolution: at the default 20 ms it stays under 0.5% of one CPU (``python -m benchmarks.gc_bench``
measures it; 10 ms measured 0.4-0.6%). Baseline lag includes the loop's timer granularity (~1 ms on both
asyncio and uvloop).
Only public loop APIs are used for the lag, so it works on asyncio and uvloop alike.

Utilization
-----------
Beside the lag, the monitor estimates the **utilization** of the loop: the share of wall time it was busy
running callbacks and tasks rather than waiting for I/O or timers (1.0: saturated, every new callback
queues behind others). :meth:`LoopLagMonitor.utilization` is a moving average over the last ``window``
seconds (default 10 s), updated at every tick; :attr:`LoopLagMonitor.utilization_method` says how it is
measured:

* ``"selector"`` (asyncio's selector loops, the default loop on Linux and macOS): the monitor times the
  loop's calls of its selector's ``select()`` (where an idle loop sleeps), so busy time is the wall time
  minus the time spent in ``select()``: exact, at the cost of two clock reads per loop iteration
  (~0.2 us). It reaches the selector through the loop's ``_selector`` attribute (the one non-public
  detail), and puts it back as it was on :meth:`~LoopLagMonitor.stop`.
* ``"lag"`` (uvloop, or any loop without a Python selector, e.g. the proactor loop): no public API tells
  idle time, so it is estimated from the lag: a timer that fires ``lag`` seconds late means the loop was
  busy for at least that long (minus the loop's timer granularity, taken as the smallest lag seen). It is
  a **lower bound**: a loop kept busy by many short callbacks that still lets the timer fire on time
  reads low. Use it for trends and saturation alarms (a blocked or saturated loop reads near 1.0), not
  as an exact figure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from ._logging import get_logger
from ._stats import Histogram, HistogramSnapshot
from .config import duration

_log = get_logger("loop")

# A block longer than this many ticks is recorded in this many equal slices (each with record_many), so
# the correction costs O(1) per tick however long the block was; the slices are finer than the
# histogram's buckets, so no precision is lost.
_MAX_CORRECTION_STEPS = 256


def record_lag(histogram: Histogram, lag: float, resolution: float) -> None:
    """Record one measured ``lag`` (seconds) and the samples a block of that length hid.

    The samples that were due during the block are ``lag - k * resolution`` for ``k = 1 ..
    floor(lag / resolution)``; they are recorded too (in at most 256 slices).
    """
    if lag < 0.0:
        lag = 0.0
    histogram.record(lag)
    missed = int(lag / resolution + 1e-9)  # 0.3 / 0.01 is 29.999...: a float must not lose a tick
    if missed <= 0:
        return
    if missed <= _MAX_CORRECTION_STEPS:
        value = lag - resolution
        for _ in range(missed):
            histogram.record(value)
            value -= resolution
        return
    # Slice k covers the missed samples [start, end): their mean value stands for all of them.
    for k in range(_MAX_CORRECTION_STEPS):
        start = missed * k // _MAX_CORRECTION_STEPS
        end = missed * (k + 1) // _MAX_CORRECTION_STEPS
        n = end - start
        if n:
            mean_index = (start + end + 1) / 2.0  # mean of k' = start+1 .. end
            histogram.record_many(lag - mean_index * resolution, n)


class LoopLagMonitor:
    """Measures how late the event loop runs a timer, every ``resolution`` seconds (default 20 ms).

    ``async with LoopLagMonitor() as lag: ...`` or :meth:`start`/:meth:`stop` from the loop's thread.
    :attr:`histogram` holds lag samples in seconds (corrected for coordinated omission, see
    :func:`record_lag`); :meth:`snapshot` and :meth:`stats` read it. Neither start nor stop awaits: they are
    not cancellation points, and the monitor stops with its loop. Raises ConfigurationError for a bad
    ``resolution``.
    """

    __slots__ = (
        "_busy_total",
        "_expected",
        "_floor",
        "_handle",
        "_idle",
        "_idle_seen",
        "_last",
        "_loop",
        "_selector",
        "_started",
        "_utilization",
        "_wrapper",
        "histogram",
        "resolution",
        "utilization_method",
        "window",
    )

    def __init__(
        self, resolution: float = 0.02, *, histogram: Histogram | None = None, window: float = 10.0
    ) -> None:
        self.resolution = duration("resolution", resolution, allow_zero=False)
        self.window = duration("window", window, allow_zero=False)
        self.histogram = histogram if histogram is not None else Histogram()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        #: How utilization is measured on the running loop: "selector", "lag", or None before start().
        self.utilization_method: Literal["selector", "lag"] | None = None
        self._utilization: float | None = None  # moving average; None until the first tick
        self._busy_total = 0.0  # busy seconds measured since start (see utilization())
        self._started = 0.0
        self._last = 0.0  # time.monotonic() at the previous tick
        self._idle = [0.0]  # seconds spent in select() (written by the wrapper), a list to share it
        self._idle_seen = 0.0  # ... as of the previous tick
        self._floor = math.inf  # smallest lag seen: the loop's timer granularity (method "lag")
        self._selector: Any = None
        self._wrapper: Callable[..., Any] | None = None

    def start(self) -> None:
        """Start sampling on the running loop. Raises RuntimeError without one; a second start is a no-op."""
        if self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._expected = loop.time() + self.resolution
        self._handle = loop.call_at(self._expected, self._tick)
        self._wrap_selector(loop)
        self._started = self._last = time.monotonic()
        self._busy_total = 0.0
        _log.debug(
            "loop lag monitor started (resolution %.3f s, utilization by %s)",
            self.resolution,
            self.utilization_method,
        )

    def stop(self) -> None:
        """Stop sampling (the histogram keeps its samples, :meth:`utilization` its last value). Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        selector, wrapper = self._selector, self._wrapper
        self._selector = self._wrapper = None
        if selector is not None and selector.__dict__.get("select") is wrapper:
            del selector.select  # the class's own select() again

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _wrap_selector(self, loop: asyncio.AbstractEventLoop) -> None:
        selector = getattr(loop, "_selector", None) if isinstance(loop, asyncio.BaseEventLoop) else None
        select = getattr(selector, "select", None)
        if selector is None or select is None or not hasattr(selector, "__dict__"):
            self.utilization_method = "lag"
            return
        idle = self._idle
        clock = time.monotonic

        def timed_select(timeout: float | None = None) -> Any:
            started = clock()
            try:
                return select(timeout)
            finally:
                idle[0] += clock() - started

        selector.select = timed_select
        self._selector, self._wrapper = selector, timed_select
        self.utilization_method = "selector"

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        lag = now - self._expected
        record_lag(self.histogram, lag, self.resolution)
        self._account(lag)
        # Schedule from now, not from the missed due time: a block must not cause a burst of catch-up ticks.
        self._expected = now + self.resolution
        self._handle = loop.call_at(self._expected, self._tick)

    def _account(self, lag: float) -> None:
        """Fold the interval since the previous tick into the utilization (see the module's docs)."""
        wall = time.monotonic()
        dt = wall - self._last
        self._last = wall
        if dt <= 0.0:
            return
        if self.utilization_method == "selector":
            idle = self._idle[0]
            busy = dt - (idle - self._idle_seen)
            self._idle_seen = idle
        else:
            if lag < self._floor:
                self._floor = max(lag, 0.0)
            busy = lag - self._floor
        busy = min(max(busy, 0.0), dt)
        self._busy_total += busy
        share = busy / dt
        if self._utilization is None:
            self._utilization = share
        else:  # an exponential moving average with time constant `window`
            self._utilization += (share - self._utilization) * (1.0 - math.exp(-dt / self.window))

    def utilization(self) -> float | None:
        """The share of wall time (0..1) the loop was busy, averaged over about the last ``window``
        seconds; None before the first tick. See the module's docs for what it measures on which loop."""
        return self._utilization

    @property
    def busy_seconds(self) -> float:
        """Busy time measured since :meth:`start` (seconds, same method as :meth:`utilization`)."""
        return self._busy_total

    def snapshot(self) -> HistogramSnapshot:
        return self.histogram.snapshot()

    def stats(self) -> dict[str, float | int]:
        """``count``, ``p50``, ``p90``, ``p99``, ``max`` (and ``mean``, ``min``, ``sum``), seconds."""
        return self.histogram.snapshot().as_dict()

    def reset(self) -> None:
        self.histogram.reset()

    async def __aenter__(self) -> LoopLagMonitor:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


__all__ = ["LoopLagMonitor", "record_lag"]
