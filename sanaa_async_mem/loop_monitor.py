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
Only public loop APIs are used, so it works on asyncio and uvloop alike.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

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

    __slots__ = ("_expected", "_handle", "_loop", "histogram", "resolution")

    def __init__(self, resolution: float = 0.02, *, histogram: Histogram | None = None) -> None:
        self.resolution = duration("resolution", resolution, allow_zero=False)
        self.histogram = histogram if histogram is not None else Histogram()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0

    def start(self) -> None:
        """Start sampling on the running loop. Raises RuntimeError without one; a second start is a no-op."""
        if self._handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._expected = loop.time() + self.resolution
        self._handle = loop.call_at(self._expected, self._tick)
        _log.debug("loop lag monitor started (resolution %.3f s)", self.resolution)

    def stop(self) -> None:
        """Stop sampling (the histogram keeps its samples). Idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    @property
    def running(self) -> bool:
        return self._handle is not None

    def _tick(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        record_lag(self.histogram, now - self._expected, self.resolution)
        # Schedule from now, not from the missed due time: a block must not cause a burst of catch-up ticks.
        self._expected = now + self.resolution
        self._handle = loop.call_at(self._expected, self._tick)

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
