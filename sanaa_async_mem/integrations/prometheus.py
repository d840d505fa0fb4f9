"""Prometheus: pool, resource, GC-pause, loop-lag, memory-trend (and fleet-budget) metrics.

Both exporters take the same sources (see :mod:`.readings`: a MemoryOptimizer, or pools, a resource
manager, a profiler, ... one by one) and describe them through one set of metric families, so a name means
the same in both:

* :class:`SanaaCollector`, a custom collector for one process: ``REGISTRY.register(SanaaCollector(opt))``.
  Safe to scrape from any thread (prometheus_client's ``start_http_server`` scrapes from a thread per
  request): the figures are read on the event loop, at most once per ``max_age`` however many scrapers
  ask, and a scrape never fails because the loop is busy (it is then served the previous figures).
* :class:`MultiprocessExporter`, for prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
  several gunicorn/uvicorn workers), which allows no custom collectors: a task on the loop copies the
  figures every ``interval`` seconds into ordinary metrics. Counters and **histograms** are summed across
  workers (a histogram's bucket counts are advanced by what each bucket gained since the last copy, so
  ``sum(rate(sanaa_pool_wait_seconds_bucket[5m])) by (le)`` is the fleet's distribution); gauges are
  per worker (``multiprocess_mode="liveall"``, labelled ``pid``). Nothing is added to the acquire path:
  the pools keep their own histograms and the exporter reads them.

Histograms have a few well-chosen buckets (about three per decade over the range that matters for each
family, e.g. 100 us to 30 s for pool waits), each one a bound of the library's own finer histogram, so the
counts are exact; ``le`` labels carry that bound to four significant digits.

Names follow Prometheus conventions: prefix ``sanaa_`` (``namespace``), base units (``_seconds``,
``_bytes``), ``_total`` for counters. Nothing duplicates the default ``process_*`` (RSS, CPU) or
``python_gc_*`` (collection counts) metrics; GC *pause time*, which those lack, is
``sanaa_gc_pause_seconds``. The memory verdict is a state set, ``sanaa_memory_trend_status{status=...}``
(1 for the current status, 0 for the others), so "no data yet" (``collecting``) is never mistaken for
"healthy"; its slope is exported only when there is one (in multiprocess mode, NaN until then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from .._logging import get_logger
from .._stats import HistogramSnapshot
from ..config import duration
from .buckets import BUCKETS, bucket_counts, layout_for
from .readings import STATUSES, ReadingCache, Readings, read_sources, resolve_sources

__all__ = [
    "BUCKETS",
    "CONTENT_TYPE_LATEST",
    "RULES_FILE",
    "Family",
    "MetricsEndpoint",
    "MultiprocessExporter",
    "SanaaCollector",
    "families",
    "prometheus_buckets",
    "serve_metrics",
]

_log = get_logger("metrics")

#: The shipped Prometheus recording and alerting rules (``rule_files:`` in prometheus.yml).
RULES_FILE = Path(__file__).with_name("prometheus_rules.yml")

Kind = Literal["gauge", "counter", "histogram"]

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
    ("cancelled", "Acquisitions whose task was cancelled while waiting"),
    ("waited", "Acquisitions that had to wait (their total wait is sanaa_pool_wait_seconds_sum)"),
)
_POOL_HISTOGRAMS = (
    ("wait", "Time callers waited for an object (0 for immediate acquires)", "latency"),
    ("use", "Time objects were held", "latency"),
    ("create", "Time the factory took to make an object", "create"),
)
_OBJECT_POOL_COUNTERS = (
    ("hits", "Lookups that found an idle object"),
    ("misses", "Lookups that did not"),
    ("evictions", "Idle objects dropped to make room"),
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
_RESOURCE_HISTOGRAMS = (
    ("wait", "Time waiting for a shared resource", "latency"),
    ("hold", "Time a shared resource was held", "latency"),
)


# ------------------------------------------------------------------------------------------------ buckets


def prometheus_buckets(snapshot: HistogramSnapshot, family: str = "latency") -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs at the bounds of ``family`` (a key of :data:`BUCKETS`), then
    ``+Inf`` (which equals the number of samples). Exact: every bound is one of the library's."""
    layout, counts = bucket_counts(snapshot, family)
    out: list[tuple[str, float]] = []
    seen = 0
    for le, c in zip(_labels(layout.bounds), counts, strict=False):
        seen += c
        out.append((le, float(seen)))
    out.append(("+Inf", float(seen + counts[-1])))
    return out


_LABELS: dict[tuple[float, ...], tuple[str, ...]] = {}
floatToGoString = cast(Callable[[float], str], _untyped_float_to_go_string)


def _labels(bounds: tuple[float, ...]) -> tuple[str, ...]:
    # The strings prometheus_client writes for these bounds, so both exporters label buckets alike.
    labels = _LABELS.get(bounds)
    if labels is None:
        labels = _LABELS[bounds] = tuple(floatToGoString(b) for b in bounds)
    return labels


# ----------------------------------------------------------------------------------------------- families


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    """One metric family, independent of how it is exported: ``samples`` are ``(label values, value)``;
    a histogram's value is a :class:`HistogramSnapshot` bucketed by ``buckets`` (a key of
    :data:`BUCKETS`). ``name`` has no ``_total``/``_bucket`` suffix."""

    kind: Kind
    name: str
    doc: str
    labels: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], Any], ...]
    buckets: str = "latency"


def _gauges(
    prefix: str, label: str, stats: Mapping[str, Any], fields: Sequence[tuple[str, str]]
) -> Iterator[Family]:
    for field, doc in fields:
        yield Family(
            "gauge",
            f"{prefix}_{field}",
            doc,
            (label,),
            tuple(((n,), float(getattr(s, field))) for n, s in stats.items()),
        )


def _counters(
    prefix: str, label: str, stats: Mapping[str, Any], fields: Sequence[tuple[str, str]]
) -> Iterator[Family]:
    for field, doc in fields:
        yield Family(
            "counter",
            f"{prefix}_{field}",
            doc,
            (label,),
            tuple(((n,), float(getattr(s, field))) for n, s in stats.items()),
        )


def _histograms(
    prefix: str, label: str, stats: Mapping[str, Any], fields: Sequence[tuple[str, str, str]]
) -> Iterator[Family]:
    for field, doc, buckets in fields:
        yield Family(
            "histogram",
            f"{prefix}_{field}_seconds",
            doc,
            (label,),
            tuple(((n,), getattr(s, field)) for n, s in stats.items()),
            buckets,
        )


def _pool_families(ns: str, r: Readings) -> Iterator[Family]:
    yield from _gauges(f"{ns}_pool", "pool", r.pools, _POOL_GAUGES)
    yield from _counters(f"{ns}_pool", "pool", r.pools, _POOL_COUNTERS)
    yield Family(
        "counter",
        f"{ns}_pool_closed",
        "Objects the pool closed, by reason (lifetime, idle, broken, failed_check, resize, close, ...)",
        ("pool", "reason"),
        tuple(((n, why), float(count)) for n, s in r.pools.items() for why, count in s.closed_by.items()),
    )
    yield from _histograms(f"{ns}_pool", "pool", r.pools, _POOL_HISTOGRAMS)


def _object_pool_families(ns: str, r: Readings) -> Iterator[Family]:
    if not r.object_pools:
        return
    idle = tuple(((n,), float(s.size)) for n, s in r.object_pools.items())
    yield Family("gauge", f"{ns}_object_pool_idle", "Idle objects in a MemoryPool", ("pool",), idle)
    yield from _counters(f"{ns}_object_pool", "pool", r.object_pools, _OBJECT_POOL_COUNTERS)


def _resource_families(ns: str, r: Readings) -> Iterator[Family]:
    yield from _gauges(f"{ns}_resource", "resource", r.resources, _RESOURCE_GAUGES)
    yield from _counters(f"{ns}_resource", "resource", r.resources, _RESOURCE_COUNTERS)
    # A pool resource's waits and holds are its pool's (sanaa_pool_wait/use_seconds): not exported twice.
    shared = {n: s for n, s in r.resources.items() if s.pool is None}
    yield from _histograms(f"{ns}_resource", "resource", shared, _RESOURCE_HISTOGRAMS)


def _gc_families(ns: str, r: Readings) -> Iterator[Family]:
    if r.gc_pauses:
        pauses = tuple(((str(g),), s) for g, s in r.gc_pauses.items())
        yield Family(
            "histogram",
            f"{ns}_gc_pause_seconds",
            "Garbage collection pauses",
            ("generation",),
            pauses,
            "gc_pause",
        )
    sched = r.gc_scheduler
    if sched is not None:
        full = tuple(((reason,), float(n)) for reason, n in sched.full_collections.items())
        yield Family(
            "counter",
            f"{ns}_gc_scheduled_collections",
            "Full collections run by the GC scheduler",
            ("reason",),
            full,
        )
        yield Family(
            "gauge",
            f"{ns}_gc_requests_in_flight",
            "Requests in flight as reported to the GC scheduler",
            (),
            (((), float(sched.in_flight)),),
        )


def _lag_families(ns: str, r: Readings) -> Iterator[Family]:
    if r.loop_lag is not None:
        yield Family(
            "histogram",
            f"{ns}_event_loop_lag_seconds",
            "How late the event loop ran a timer",
            (),
            (((), r.loop_lag),),
            "loop_lag",
        )
    if r.loop_utilization is not None:
        yield Family(
            "gauge",
            f"{ns}_loop_utilization",
            "Share of wall time the event loop was busy (0..1, moving average over the monitor's window)",
            (),
            (((), r.loop_utilization),),
        )


def _memory_families(ns: str, r: Readings) -> Iterator[Family]:
    m = r.memory
    if m is None:
        return
    statuses = STATUSES if m.status in STATUSES else (*STATUSES, m.status)
    yield Family(
        "gauge",
        f"{ns}_memory_trend_status",
        "The memory trend verdict as a state set: 1 for the current status (collecting until there is a "
        "verdict), 0 for the others",
        ("status",),
        tuple(((s,), 1.0 if s == m.status else 0.0) for s in statuses),
    )
    yield Family(
        "gauge",
        f"{ns}_memory_leak_suspected",
        "1 while the trend verdict is a leak",
        (),
        (((), 1.0 if m.is_leak else 0.0),),
    )
    slope = () if m.slope is None else (((m.source,), m.slope),)
    yield Family(
        "gauge",
        f"{ns}_memory_trend_slope_bytes_per_second",
        "Sustained growth rate of process memory (only once there is a verdict); source: what was judged",
        ("source",),
        slope,
    )
    yield Family(
        "gauge",
        f"{ns}_memory_leak_threshold_bytes_per_second",
        "Growth rate the trend verdict calls a leak",
        (),
        (((), m.threshold),),
    )
    yield Family("gauge", f"{ns}_memory_limit_bytes", "The high-memory limit (RSS)", (), (((), m.limit),))
    to_limit = () if m.seconds_to_limit is None else (((), m.seconds_to_limit),)
    yield Family(
        "gauge",
        f"{ns}_memory_seconds_to_limit",
        "Projected seconds until RSS reaches the limit at the current slope (only while it grows)",
        (),
        to_limit,
    )
    for name, doc, value in (
        ("memory_samples", "Memory samples the trend is judged on", m.samples),
        ("memory_snapshots", "Memory snapshots stored", m.snapshots),
        ("memory_snapshot_failures", "Memory samples that failed", m.failures),
    ):
        yield Family("counter", f"{ns}_{name}", doc, (), (((), float(value)),))


#: Readers of ``Readings.other`` by kind (providers registered by the components that give them).
OTHER_FAMILIES: dict[str, Callable[[str, Mapping[str, object]], Iterator[Family]]] = {}


def families(readings: Readings, namespace: str = "sanaa") -> list[Family]:
    """Every metric family of one read, one function per kind of source."""
    out: list[Family] = []
    for part in (
        _pool_families,
        _object_pool_families,
        _resource_families,
        _gc_families,
        _lag_families,
        _memory_families,
    ):
        out.extend(part(namespace, readings))
    for kind, stats in readings.other.items():
        reader = OTHER_FAMILIES.get(kind)
        if reader is not None:
            out.extend(reader(namespace, stats))
    return out


def _metric(family: Family) -> Metric:
    if family.kind == "gauge":
        g = GaugeMetricFamily(family.name, family.doc, labels=family.labels)
        for labels, value in family.samples:
            g.add_metric(labels, value)
        return g
    if family.kind == "counter":
        c = CounterMetricFamily(family.name, family.doc, labels=family.labels)
        for labels, value in family.samples:
            c.add_metric(labels, value)
        return c
    h = HistogramMetricFamily(family.name, family.doc, labels=family.labels)
    for labels, snap in family.samples:
        h.add_metric(labels, prometheus_buckets(snap, family.buckets), snap.sum)
    return h


# ---------------------------------------------------------------------------------------- one process


class SanaaCollector(Collector):
    """A custom collector for one process: ``REGISTRY.register(SanaaCollector(optimizer))``.

    ``sources``: a :class:`~sanaa_async_mem.optimizer.MemoryOptimizer`, or any of the sources listed in
    :mod:`.readings` (``SanaaCollector(pool, manager, profiler)`` exports pools and memory without the GC
    tuner). Unknown sources raise ConfigurationError here.

    Scrapes may come from any thread. Figures are read on the event loop the sources run on (the loop
    running where the collector is created, or ``loop``; create it in your lifespan, or pass ``loop``),
    at most once per ``max_age`` seconds however many scrapers ask; the metric families built from one
    read are shared by the scrapes that use it. If the loop does not answer within ``wait`` seconds the
    scrape gets the previous figures (``sanaa_metrics_stale_reads_total`` counts it) and never fails.
    """

    def __init__(
        self,
        *sources: object,
        namespace: str = "sanaa",
        max_age: float = 1.0,
        wait: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.namespace = namespace
        self._cache = ReadingCache(sources, max_age=max_age, wait=wait, loop=loop)
        self._built: tuple[Readings | None, list[Metric]] = (None, [])
        self._build_lock = threading.Lock()

    @property
    def sources(self) -> tuple[object, ...]:
        return self._cache.sources

    @property
    def optimizer(self) -> object | None:
        """The first source (what ``SanaaCollector(optimizer)`` was given); kept for older callers."""
        return self._cache.sources[0] if self._cache.sources else None

    def readings(self) -> Readings:
        """The figures the next scrape shows (read now if older than ``max_age``)."""
        return self._cache.get()

    def collect(self) -> Iterator[Metric]:
        readings = self._cache.get()
        built_for, metrics = self._built
        if built_for is not readings:
            with self._build_lock:
                built_for, metrics = self._built
                if built_for is not readings:
                    metrics = [_metric(f) for f in families(readings, self.namespace)]
                    self._built = (readings, metrics)
        yield from metrics
        yield CounterMetricFamily(
            f"{self.namespace}_metrics_stale_reads",
            "Scrapes served older figures because the event loop did not answer in time",
            value=float(self._cache.stale),
        )


class MetricsEndpoint:
    """The text exposition of ``registry`` for an HTTP route, rendered once per ``max_age`` seconds
    however many scrapers ask at once (they share one rendering).

    :meth:`render` may be called from any thread; :meth:`arender` renders in a worker thread (one at a
    time) so the event loop is not blocked while the text is formatted. Returns bytes in
    ``CONTENT_TYPE_LATEST`` (prometheus_client's text format).
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry = REGISTRY, *, max_age: float = 0.5) -> None:
        self.registry = registry
        self.max_age = duration("max_age", max_age)
        self._lock = threading.Lock()
        self._body = b""
        self._at = -math.inf
        self._limiter: anyio.CapacityLimiter | None = None

    def render(self) -> bytes:
        if time.monotonic() - self._at < self.max_age:
            return self._body
        with self._lock:  # one rendering at a time; those who waited take its result
            if time.monotonic() - self._at >= self.max_age:
                self._body = generate_latest(self.registry)
                self._at = time.monotonic()
            return self._body

    async def arender(self) -> bytes:
        if time.monotonic() - self._at < self.max_age:
            return self._body
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(self.render, limiter=self._limiter)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # The standard library's default backlog is 5: a burst of scrapers then waits for SYN retransmits
    # (1 s, 3 s, 7 s...) before it is even accepted.
    request_queue_size = 128


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    endpoint: MetricsEndpoint

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] not in ("/", "/metrics"):
            self.send_error(404)
            return
        body = self.endpoint.render()
        self.send_response(200)
        self.send_header("Content-Type", self.endpoint.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not worth a log line each
        pass


def serve_metrics(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY, *, max_age: float = 0.5
) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    """Like prometheus_client's ``start_http_server`` (a thread per request, ``/metrics`` in the text
    format), but concurrent scrapes share one rendering per ``max_age`` seconds (:class:`MetricsEndpoint`),
    so a storm of scrapers costs the process one rendering, not one each. Returns the server and its
    thread; ``server.shutdown()`` stops it. ``port=0`` picks a free port (``server.server_port``)."""
    handler = type("Handler", (_MetricsHandler,), {"endpoint": MetricsEndpoint(registry, max_age=max_age)})
    server = _Server((addr, port), handler)
    thread = threading.Thread(target=server.serve_forever, name="sanaa-metrics-http", daemon=True)
    thread.start()
    return server, thread


# ------------------------------------------------------------------------------------------ multiprocess


class _BulkHistogram(Histogram):
    """A prometheus_client Histogram that takes counts already bucketed (per bucket, not cumulative).

    prometheus_client observes one value at a time; copying a pool's histogram that way would cost one
    call per acquire. The values live in the same per-bucket cells ``observe`` updates (in multiprocess
    mode, the worker's mmap file), so the exposition and the cross-worker sum are prometheus_client's own.
    """

    def add_counts(self, counts: Sequence[int], total: float) -> None:
        buckets = self._buckets
        if len(buckets) != len(counts):
            raise ValueError(f"{len(counts)} bucket counts for {len(buckets)} buckets")
        for cell, n in zip(buckets, counts, strict=True):
            if n:
                cell.inc(n)
        if total:
            self._sum.inc(total)


class MultiprocessExporter:
    """Copies the figures of ``sources`` into prometheus_client metrics every ``interval`` seconds.

    For multiprocess mode, where custom collectors are not allowed (see the module documentation for how
    each kind of figure is exported and summed). ``sources`` are those of :class:`SanaaCollector`. Use
    ``async with MultiprocessExporter(optimizer):`` or :meth:`start`/:meth:`stop` on the sources' loop;
    :meth:`update` copies once (synchronous, no await, on the loop's thread). ``registry`` is where the
    metrics are created (default: prometheus_client's default registry; in multiprocess mode the values go
    to ``PROMETHEUS_MULTIPROC_DIR`` whatever the registry). The metrics are created at construction from a
    first read, so a second exporter on one registry raises ValueError there (duplicate names). Stopping
    cancels the task, waits for it and copies once more; it is idempotent.

    A gauge sample that is absent from a read (the memory slope while collecting) is set to NaN: a
    multiprocess gauge cannot be removed.
    """

    def __init__(
        self,
        *sources: object,
        interval: float = 5.0,
        namespace: str = "sanaa",
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.sources = resolve_sources(sources)
        self.interval = duration("interval", interval, allow_zero=False)
        self.namespace = namespace
        self._registry_kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        self._task: asyncio.Task[None] | None = None
        self._metrics: dict[str, Gauge | Counter | _BulkHistogram] = {}
        self._last_counter: dict[tuple[str, tuple[str, ...]], float] = {}
        self._last_hist: dict[tuple[str, tuple[str, ...]], tuple[tuple[int, ...], float]] = {}
        self._gauge_labels: dict[str, set[tuple[str, ...]]] = {}
        for family in families(read_sources(self.sources), namespace):
            self._metric_for(family)

    @property
    def optimizer(self) -> object | None:
        return self.sources[0] if self.sources else None

    def _metric_for(self, family: Family) -> Gauge | Counter | _BulkHistogram:
        metric = self._metrics.get(family.name)
        if metric is None:
            kw = self._registry_kw
            if family.kind == "gauge":
                metric = Gauge(family.name, family.doc, family.labels, multiprocess_mode="liveall", **kw)
            elif family.kind == "counter":
                metric = Counter(family.name, family.doc, family.labels, **kw)
            else:
                layout = layout_for(_library_bounds(family), family.buckets)
                metric = _BulkHistogram(family.name, family.doc, family.labels, buckets=layout.bounds, **kw)
            self._metrics[family.name] = metric
        return metric

    def update(self) -> None:
        """Copy the current figures once (what the background task does every ``interval``)."""
        for family in families(read_sources(self.sources), self.namespace):
            metric = self._metric_for(family)
            if family.kind == "gauge":
                self._set_gauges(family, metric)
            elif family.kind == "counter":
                self._advance_counters(family, metric)
            else:
                self._advance_histograms(family, metric)

    @staticmethod
    def _child(metric: Any, labels: tuple[str, ...]) -> Any:
        return metric.labels(*labels) if labels else metric

    def _set_gauges(self, family: Family, metric: Any) -> None:
        now = set()
        for labels, value in family.samples:
            self._child(metric, labels).set(value)
            now.add(labels)
        before = self._gauge_labels.get(family.name, set())
        for labels in before - now:
            self._child(metric, labels).set(math.nan)
        if not family.samples and not family.labels:
            metric.set(math.nan)
        self._gauge_labels[family.name] = before | now

    def _advance_counters(self, family: Family, metric: Any) -> None:
        # Counters only go up: add the growth since the last copy. A source that went down (pop_stats, a
        # pool replaced) restarted from zero: what it counts now is all new.
        for labels, value in family.samples:
            key = (family.name, labels)
            last = self._last_counter.get(key, 0.0)
            self._last_counter[key] = value
            grown = value - last if value >= last else value
            if grown > 0:
                self._child(metric, labels).inc(grown)

    def _advance_histograms(self, family: Family, metric: Any) -> None:
        for labels, snap in family.samples:
            _, counts = bucket_counts(snap, family.buckets)
            key = (family.name, labels)
            last = self._last_hist.get(key)
            now = (tuple(counts), snap.sum)
            self._last_hist[key] = now
            if last is not None and all(c >= p for c, p in zip(counts, last[0], strict=True)):
                delta = [c - p for c, p in zip(counts, last[0], strict=True)]
                total = snap.sum - last[1]
            else:  # first copy, or the source was reset: everything it holds is new
                delta, total = counts, snap.sum
            if any(delta):
                self._child(metric, labels).add_counts(delta, max(total, 0.0))

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


def _library_bounds(family: Family) -> tuple[float, ...]:
    for _labels, snap in family.samples:
        return tuple(snap.bounds)
    from .._stats import Histogram as LibraryHistogram

    return LibraryHistogram().snapshot().bounds
