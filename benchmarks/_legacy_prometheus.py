"""The Prometheus collector as it was before the exporters were reworked, kept as the benchmark's
"before" (``python -m benchmarks.metrics_bench`` measures it in the same run as the current one).

It reads every source on the scraping thread and exports one bucket per doubling (27 per histogram).
Not part of the package; do not use it in a service.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from sanaa_async_mem._stats import HistogramSnapshot
from sanaa_async_mem.optimizer import MemoryOptimizer
from sanaa_async_mem.pools.keyed import MemoryPool

_LOWEST_BOUND = 1e-5
_HIGHEST_BOUND = 600.0

_POOL_GAUGES = (
    ("size", "Objects the pool owns (idle, in use, being created or returned)"),
    ("idle", "Idle objects ready to be handed out"),
    ("in_use", "Objects handed out to callers"),
    ("waiting", "Callers waiting for an object"),
    ("max_size", "The pool's limit on objects in existence"),
    ("min_size", "Objects the pool keeps ready"),
)
_POOL_COUNTERS = (
    ("acquired", "Objects handed out"),
    ("created", "Objects made by the factory"),
    ("timeouts", "Acquisitions that timed out"),
    ("exhausted", "Acquisitions refused because too many callers were waiting"),
    ("errors", "Factory, check or reset failures"),
    ("discarded", "Objects dropped as broken"),
    ("expired", "Objects replaced after their lifetime or idle time"),
    ("held_too_long", "Objects held longer than held_warning"),
)
_POOL_HISTOGRAMS = (
    ("wait", "Time callers waited for an object"),
    ("use", "Time objects were held"),
    ("create", "Time the factory took to make an object"),
)
_RESOURCE_GAUGES = (
    ("active", "Holders of the resource now"),
    ("peak", "Most holders at once"),
    ("waiting", "Callers waiting for the resource"),
)
_RESOURCE_COUNTERS = (
    ("acquisitions", "Acquisitions of the resource"),
    ("errors", "Failed acquisitions and blocks that raised"),
    ("timeouts", "Acquisitions that timed out"),
    ("cancelled", "Acquisitions cancelled while waiting"),
)
_RESOURCE_HISTOGRAMS = (("wait", "Time waiting for the resource"), ("hold", "Time the resource was held"))


def prometheus_buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs at one bound per doubling in [10 us, ~9 min], then ``+Inf``.

    Exact: the library's buckets are finer (four per doubling) and every bound kept is one of theirs.
    """
    out: list[tuple[str, float]] = []
    cumulative = snapshot.cumulative()
    for i, (bound, count) in enumerate(cumulative[:-1]):
        if i % 4 == 0 and _LOWEST_BOUND <= bound <= _HIGHEST_BOUND:
            out.append((repr(float(bound)), float(count)))
    out.append(("+Inf", float(cumulative[-1][1])))
    return out


def _stat_families(
    prefix: str,
    label: str,
    stats: Mapping[str, Any],
    *,
    gauges: Sequence[tuple[str, str]],
    counters: Sequence[tuple[str, str]],
    histograms: Sequence[tuple[str, str]],
) -> Iterator[Metric]:
    """Gauge, counter and histogram families for one kind of stats object (pools, resources), one
    labelled sample per named object; fields are read by name from each stats object."""
    for field, doc in gauges:
        g = GaugeMetricFamily(f"{prefix}_{field}", doc, labels=[label])
        for name, st in stats.items():
            g.add_metric([name], float(getattr(st, field)))
        yield g
    for field, doc in counters:
        c = CounterMetricFamily(f"{prefix}_{field}", doc, labels=[label])
        for name, st in stats.items():
            c.add_metric([name], float(getattr(st, field)))
        yield c
    for field, doc in histograms:
        h = HistogramMetricFamily(f"{prefix}_{field}_seconds", doc, labels=[label])
        for name, st in stats.items():
            snap: HistogramSnapshot = getattr(st, field)
            h.add_metric([name], prometheus_buckets(snap), snap.sum)
        yield h


class SanaaCollector(Collector):
    """A custom collector reading ``optimizer``'s stats at every scrape (cheap: no heap walk, no I/O).

    Register it in the process that runs the optimizer's event loop; reads are plain attribute reads, safe
    from the scrape thread (values may be a sample apart from each other).
    """

    def __init__(self, optimizer: MemoryOptimizer, *, namespace: str = "sanaa") -> None:
        self.optimizer = optimizer
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        ns = self.namespace
        opt = self.optimizer
        yield from _stat_families(
            f"{ns}_pool",
            "pool",
            opt.pool_stats(),
            gauges=_POOL_GAUGES,
            counters=_POOL_COUNTERS,
            histograms=_POOL_HISTOGRAMS,
        )

        keyed = [p for p in opt.pools if isinstance(p, MemoryPool)]
        if keyed:
            keyed_stats = [(p.name, p.get_stats()) for p in keyed]
            g = GaugeMetricFamily(f"{ns}_object_pool_idle", "Idle objects in a MemoryPool", labels=["pool"])
            for name, ks in keyed_stats:
                g.add_metric([name], float(ks["size"]))
            yield g
            for key, doc in (
                ("hits", "Lookups that found an idle object"),
                ("misses", "Lookups that did not"),
            ):
                c = CounterMetricFamily(f"{ns}_object_pool_{key}", doc, labels=["pool"])
                for name, ks in keyed_stats:
                    c.add_metric([name], float(ks[key]))
                yield c

        resources = opt.resource_manager.get_stats().resources
        yield from _stat_families(
            f"{ns}_resource",
            "resource",
            resources,
            gauges=_RESOURCE_GAUGES,
            counters=_RESOURCE_COUNTERS,
            histograms=_RESOURCE_HISTOGRAMS,
        )

        h = HistogramMetricFamily(
            f"{ns}_gc_pause_seconds", "Garbage collection pauses", labels=["generation"]
        )
        for gen, snap in opt.gc_optimizer.pauses.snapshot().items():
            h.add_metric([str(gen)], prometheus_buckets(snap), snap.sum)
        yield h
        if opt.gc_scheduler is not None:
            sched = opt.gc_scheduler.stats()
            c = CounterMetricFamily(
                f"{ns}_gc_scheduled_collections",
                "Full collections run by the GC scheduler",
                labels=["reason"],
            )
            for reason, n in sched.full_collections.items():
                c.add_metric([reason], float(n))
            yield c
            yield GaugeMetricFamily(
                f"{ns}_gc_requests_in_flight",
                "Requests in flight as reported to the GC scheduler",
                value=float(sched.in_flight),
            )

        lag = opt.lag_monitor.snapshot()
        h = HistogramMetricFamily(f"{ns}_event_loop_lag_seconds", "How late the event loop ran a timer")
        h.add_metric([], prometheus_buckets(lag), lag.sum)
        yield h

        profiler = opt.profiler
        # The verdict the sampler cached: a scrape never judges the history again (and never iterates
        # state the loop is changing).
        verdict = profiler.verdict or profiler.analyze_memory_trends()
        slope = verdict.slope if math.isfinite(verdict.slope) else 0.0
        yield GaugeMetricFamily(
            f"{ns}_memory_trend_slope_bytes_per_second",
            "Robust growth rate of process memory over the profiler's history",
            value=slope,
        )
        yield GaugeMetricFamily(
            f"{ns}_memory_leak_suspected",
            "1 while the trend analyzer judges the growth a leak",
            value=1.0 if verdict.is_leak else 0.0,
        )
        yield CounterMetricFamily(
            f"{ns}_memory_snapshots", "Memory snapshots taken", value=float(profiler.ticks)
        )
        yield CounterMetricFamily(
            f"{ns}_memory_snapshot_failures", "Memory snapshots that failed", value=float(profiler.failures)
        )
