"""Prometheus: pool, resource, GC-pause, loop-lag and memory-trend metrics from a MemoryOptimizer.

Two ways to export, reading the same stats objects (``PoolStats``, ``ResourceManagerStats``, the GC pause
recorder's and the lag monitor's histograms, the profiler's verdict); nothing is measured twice:

* :class:`SanaaCollector`, a custom collector: every scrape reads the current stats. Register it once per
  process: ``REGISTRY.register(SanaaCollector(optimizer))``. Histograms keep their exact counts (buckets
  are a subset of the library's own bucket bounds, one per doubling from 10 us to ~9 min).
* :class:`MultiprocessExporter`, for prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
  several gunicorn/uvicorn workers), which allows no custom collectors: a background task copies the
  stats every ``interval`` seconds into ordinary metrics. Gauges use ``multiprocess_mode="liveall"`` (one
  series per live worker, labelled ``pid``), counters are advanced by the difference since the last copy
  (summed over workers, dead ones included, as counters should be), and each histogram is exported as
  ``_p50``/``_p99``/``_max`` gauges per worker (multiprocess histograms cannot be fed pre-bucketed data).

Names follow Prometheus conventions: prefix ``sanaa_``, base units (``_seconds``, ``_bytes``), ``_total``
for counters. Nothing duplicates the default ``process_*`` (RSS, CPU) or ``python_gc_*`` (collection
counts) metrics; GC *pause time*, which those lack, is ``sanaa_gc_pause_seconds``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .._logging import get_logger
from .._stats import HistogramSnapshot
from ..config import duration
from ..optimizer import MemoryOptimizer
from ..pools.keyed import MemoryPool

__all__ = ["MultiprocessExporter", "SanaaCollector", "prometheus_buckets"]

_log = get_logger("metrics")

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


class MultiprocessExporter:
    """Copies ``optimizer``'s stats into ordinary prometheus_client metrics every ``interval`` seconds.

    For multiprocess mode, where custom collectors are not allowed (see the module documentation for how
    each kind of figure is exported). Use ``async with MultiprocessExporter(optimizer):`` or
    :meth:`start`/:meth:`stop` on the optimizer's loop; :meth:`update` copies once (synchronous, no await).
    ``registry`` is where the metrics are created (default: prometheus_client's default registry; in
    multiprocess mode the values go to ``PROMETHEUS_MULTIPROC_DIR`` whatever the registry). Creating two
    exporters on one registry raises ValueError (duplicate metric names). Stopping cancels the task and
    waits for it; it is idempotent.
    """

    def __init__(
        self,
        optimizer: MemoryOptimizer,
        *,
        interval: float = 5.0,
        namespace: str = "sanaa",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.interval = duration("interval", interval, allow_zero=False)
        self._task: asyncio.Task[None] | None = None
        self._last: dict[tuple[str, tuple[str, ...]], float] = {}
        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        ns = namespace
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> None:
            self._gauges[name] = Gauge(f"{ns}_{name}", doc, labels, multiprocess_mode="liveall", **kw)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> None:
            self._counters[name] = Counter(f"{ns}_{name}", doc, labels, **kw)

        for field, doc in _POOL_GAUGES:
            gauge(f"pool_{field}", doc, ("pool",))
        for field, doc in _POOL_COUNTERS:
            counter(f"pool_{field}", doc, ("pool",))
        for field, doc in _RESOURCE_GAUGES:
            gauge(f"resource_{field}", doc, ("resource",))
        for field, doc in _RESOURCE_COUNTERS:
            counter(f"resource_{field}", doc, ("resource",))
        for field, doc in _POOL_HISTOGRAMS:
            for q in ("p50", "p99", "max"):
                gauge(f"pool_{field}_seconds_{q}", f"{doc} ({q})", ("pool",))
        for q in ("p50", "p99", "max"):
            gauge(f"gc_pause_seconds_{q}", f"Garbage collection pauses ({q})", ("generation",))
            gauge(f"event_loop_lag_seconds_{q}", f"How late the event loop ran a timer ({q})")
        counter("gc_scheduled_collections", "Full collections run by the GC scheduler", ("reason",))
        gauge("memory_trend_slope_bytes_per_second", "Robust growth rate of process memory")
        gauge("memory_leak_suspected", "1 while the trend analyzer judges the growth a leak")
        counter("memory_snapshots", "Memory snapshots taken")

    def _advance(self, name: str, labels: tuple[str, ...], value: float) -> None:
        # Counters only go up: add the growth since the last copy. A source that went down (pop_stats, a
        # pool replaced) restarts from its new value without adding anything.
        key = (name, labels)
        last = self._last.get(key, 0.0)
        self._last[key] = value
        if value > last:
            metric = self._counters[name]
            (metric.labels(*labels) if labels else metric).inc(value - last)

    def _quantiles(self, prefix: str, labels: tuple[str, ...], snap: HistogramSnapshot) -> None:
        for q, v in (("p50", snap.p50), ("p99", snap.p99), ("max", snap.max)):
            metric = self._gauges[f"{prefix}_{q}"]
            (metric.labels(*labels) if labels else metric).set(v)

    def update(self) -> None:
        """Copy the current stats once (what the background task does every ``interval``)."""
        opt = self.optimizer
        for name, st in opt.pool_stats().items():
            for field, _ in _POOL_GAUGES:
                self._gauges[f"pool_{field}"].labels(name).set(getattr(st, field))
            for field, _ in _POOL_COUNTERS:
                self._advance(f"pool_{field}", (name,), float(getattr(st, field)))
            for field, _ in _POOL_HISTOGRAMS:
                self._quantiles(f"pool_{field}_seconds", (name,), getattr(st, field))
        for name, rs in opt.resource_manager.get_stats().resources.items():
            for field, _ in _RESOURCE_GAUGES:
                self._gauges[f"resource_{field}"].labels(name).set(getattr(rs, field))
            for field, _ in _RESOURCE_COUNTERS:
                self._advance(f"resource_{field}", (name,), float(getattr(rs, field)))
        for gen, snap in opt.gc_optimizer.pauses.snapshot().items():
            self._quantiles("gc_pause_seconds", (str(gen),), snap)
        self._quantiles("event_loop_lag_seconds", (), opt.lag_monitor.snapshot())
        if opt.gc_scheduler is not None:
            for reason, n in opt.gc_scheduler.stats().full_collections.items():
                self._advance("gc_scheduled_collections", (reason,), float(n))
        verdict = opt.profiler.verdict or opt.profiler.analyze_memory_trends()
        self._gauges["memory_trend_slope_bytes_per_second"].set(
            verdict.slope if math.isfinite(verdict.slope) else 0.0
        )
        self._gauges["memory_leak_suspected"].set(1.0 if verdict.is_leak else 0.0)
        self._advance("memory_snapshots", (), float(opt.profiler.ticks))

    async def _run(self) -> None:
        while True:
            try:
                self.update()
            except Exception:  # a failing read must not end the export
                _log.exception("prometheus export failed; continuing")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Start the copying task on the running loop (a no-op if it runs). Not a cancellation point."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="sanaa-prometheus-export")

    async def stop(self) -> None:
        """Cancel the task and wait for it, then copy one last time. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # our caller is being cancelled, not just the task we cancelled
        self.update()

    async def __aenter__(self) -> MultiprocessExporter:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
