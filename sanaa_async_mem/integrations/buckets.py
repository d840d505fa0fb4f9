"""Histogram buckets for export: a few well-chosen bounds per family, each one a bound of the library's own
log-bucketed histogram, so exported counts are exact (no sample is ever split between buckets).

Shared by the Prometheus and OpenTelemetry exporters, so both show the same buckets.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Mapping

from .._stats import Histogram, HistogramSnapshot

__all__ = ["BUCKETS", "BucketLayout", "bucket_counts", "exported_bounds", "layout_for"]

#: The bucket bounds each histogram family aims at (seconds); each is replaced by the nearest bound of the
#: library's histogram, so exported counts are exact. About three per decade: enough for
#: ``histogram_quantile`` to place a p99 within a bucket's width of the threshold an alert uses.
BUCKETS: Mapping[str, tuple[float, ...]] = {
    "latency": (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
    "create": (1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
    "gc_pause": (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0),
    "loop_lag": (3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
}


@dataclasses.dataclass(frozen=True, slots=True)
class BucketLayout:
    """Where the exported buckets sit among a library histogram's buckets."""

    bounds: tuple[float, ...]  # exported upper bounds (four significant digits), ascending, +Inf not included
    index: tuple[int, ...]  # for each library bucket, the exported bucket it falls in (len(bounds): +Inf)


_LAYOUTS: dict[tuple[float, int, str], BucketLayout] = {}
_LAYOUT_LOCK = threading.Lock()


def layout_for(library_bounds: tuple[float, ...], family: str) -> BucketLayout:
    """The exported buckets of ``family`` (a key of :data:`BUCKETS`) for a histogram with these bounds:
    for each target, the nearest library bound (on a log scale); computed once per histogram shape."""
    key = (library_bounds[0] if library_bounds else 0.0, len(library_bounds), family)
    layout = _LAYOUTS.get(key)
    if layout is not None:
        return layout
    chosen: list[int] = []
    for target in BUCKETS[family]:
        i = bisect.bisect_left(library_bounds, target)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(library_bounds)]
        if not candidates:
            continue
        j = min(candidates, key=lambda j: abs(math.log(library_bounds[j] / target)))
        if not chosen or j > chosen[-1]:
            chosen.append(j)
    bounds = tuple(float(f"{library_bounds[j]:.4g}") for j in chosen)
    # Library bucket k holds values in (b[k-1], b[k]] (the last one: above the highest bound); it belongs
    # to the first exported bucket whose library bound is >= b[k].
    index = tuple(bisect.bisect_left(chosen, k) for k in range(len(library_bounds) + 1))
    layout = BucketLayout(bounds, index)
    with _LAYOUT_LOCK:
        _LAYOUTS[key] = layout
    return layout


def bucket_counts(snap: HistogramSnapshot, family: str) -> tuple[BucketLayout, list[int]]:
    """The layout of ``family`` for this histogram, and per exported bucket (the last one is +Inf) how many
    samples fall in it (not cumulative; they add up to the histogram's count)."""
    layout = layout_for(snap.bounds, family)
    counts = [0] * (len(layout.bounds) + 1)
    index = layout.index
    for k, c in enumerate(snap.counts):
        if c:
            counts[index[k]] += c
    return layout, counts


def exported_bounds(family: str) -> tuple[float, ...]:
    """The upper bounds (seconds, +Inf not included) ``family`` is exported with, for the library's
    default histogram (the one pools, GC pauses and the loop-lag monitor use)."""
    return layout_for(Histogram().snapshot().bounds, family).bounds
