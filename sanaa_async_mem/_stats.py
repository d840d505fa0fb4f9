"""Small, allocation-free statistics shared by pools, the resource manager, the GC and loop monitors.

:class:`Histogram` is log-bucketed (4 buckets per doubling, so any quantile it reports is within about 10%
of the true value) and costs one ``bisect`` and a few integer updates per sample, so it can sit on hot
paths. Exporters (Prometheus, OpenTelemetry) read :meth:`Histogram.snapshot` and never recompute.
"""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left, bisect_right

_PER_DOUBLING = 4


def _bounds(lowest: float, highest: float) -> tuple[float, ...]:
    n = math.ceil(math.log2(highest / lowest) * _PER_DOUBLING) + 1
    return tuple(lowest * 2.0 ** (i / _PER_DOUBLING) for i in range(n))


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A frozen copy of a histogram. Quantiles are upper bucket bounds (an over-estimate by <= 19%),
    clamped to the observed maximum; all values are in the unit recorded (seconds for durations)."""

    count: int
    sum: float
    min: float
    max: float
    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` (0..1) of samples fall; 0.0 when empty."""
        if not self.count:
            return 0.0
        if q >= 1.0:
            return self.max
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                if i == 0:
                    return self.min  # everything here is <= the lowest bound: the minimum is as good
                upper = self.bounds[i] if i < len(self.bounds) else self.max
                return min(max(upper, self.min), self.max)
        return self.max

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p90(self) -> float:
        return self.quantile(0.90)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def with_zeros(self, n: int) -> HistogramSnapshot:
        """This snapshot plus ``n`` samples of 0 (e.g. acquires that did not wait at all)."""
        if n <= 0:
            return self
        counts = list(self.counts)
        counts[0] += n
        return HistogramSnapshot(
            count=self.count + n,
            sum=self.sum,
            min=0.0,
            max=self.max,
            bounds=self.bounds,
            counts=tuple(counts),
        )

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper_bound, samples <= bound)`` pairs, ending with ``(inf, count)`` (Prometheus ``le``)."""
        out: list[tuple[float, int]] = []
        seen = 0
        for bound, c in zip(self.bounds, self.counts, strict=False):
            seen += c
            out.append((bound, seen))
        out.append((math.inf, self.count))
        return out

    def as_dict(self) -> dict[str, float | int]:
        """The summary as plain numbers: count, sum, mean, min, max, p50, p90, p99."""
        return {
            "count": self.count,
            "sum": self.sum,
            "mean": self.mean,
            "min": self.min if self.count else 0.0,
            "max": self.max,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
        }


class Histogram:
    """A log-bucketed histogram of non-negative values (by default durations from 1 us to ~12 days).

    Not thread-safe by design: each owner records from one thread (the event loop), like the pool.
    """

    __slots__ = ("_bounds", "_counts", "count", "max", "min", "sum")

    def __init__(self, lowest: float = 1e-6, highest: float = 1e6) -> None:
        if not 0 < lowest < highest:
            raise ValueError(f"need 0 < lowest < highest, got lowest={lowest!r}, highest={highest!r}")
        self._bounds = _bounds(lowest, highest)
        self._counts = [0] * (len(self._bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, value: float) -> None:
        """Add one sample (negative values, e.g. from clock adjustments, count as 0)."""
        if value < 0.0:
            value = 0.0
        self._counts[bisect_left(self._bounds, value)] += 1
        self.count += 1
        self.sum += value
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value

    def record_many(self, value: float, n: int) -> None:
        """Add ``n`` samples of the same value (used to correct for coordinated omission)."""
        if n <= 0:
            return
        if value < 0.0:
            value = 0.0
        self._counts[bisect_left(self._bounds, value)] += n
        self.count += n
        self.sum += value * n
        if value > self.max:
            self.max = value
        if value < self.min:
            self.min = value

    def extend(self, values: list[float]) -> None:
        """Add many samples at once: the same result as :meth:`record` for each, at a fraction of the cost.

        Hot paths append their samples to a plain list (a C call) and fold it in here now and then: the
        sort and the sum run in C, and each bucket costs one bisect, however many samples fall in it.
        """
        if not values:
            return
        ordered = sorted(values)
        if ordered[0] < 0.0:  # negatives count as 0 (see record); sorted, so they are a prefix
            ordered = [0.0 if v < 0.0 else v for v in ordered]
        n = len(ordered)
        lo, hi = ordered[0], ordered[-1]
        self.count += n
        self.sum += sum(ordered)
        if hi > self.max:
            self.max = hi
        if lo < self.min:
            self.min = lo
        # bucket i holds bounds[i-1] < v <= bounds[i] (bisect_left, as in record): every sample lies in the
        # buckets from lo's to hi's, and those <= bounds[i] are the first bisect_right(ordered, bounds[i]).
        bounds, counts = self._bounds, self._counts
        first, last = bisect_left(bounds, lo), bisect_left(bounds, hi)
        done = 0
        for i in range(first, last):
            upto = bisect_right(ordered, bounds[i], done)
            counts[i] += upto - done
            done = upto
        counts[last] += n - done

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(
            count=self.count,
            sum=self.sum,
            min=self.min if self.count else 0.0,
            max=self.max,
            bounds=self._bounds,
            counts=tuple(self._counts),
        )

    def reset(self) -> None:
        self._counts = [0] * (len(self._bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0
