"""OpenTelemetry: pool metrics under the ``db.client.connection.*`` semantic conventions.

::

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from sanaa_async_mem.integrations.otel import PoolHistogramExporter, instrument_pools

    exporter = PoolHistogramExporter(OTLPMetricExporter(), optimizer)   # the three time histograms
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)])
    instruments = instrument_pools(optimizer, meter_provider=provider)  # counts, limits, counters

Sources are those of the Prometheus exporter (a MemoryOptimizer, or pools and a resource manager one by
one; see :mod:`.readings`). Attribute ``db.client.connection.pool.name`` on every point.

==========================================  ==========================  =================================
``db.client.connection.count``              observable up-down counter  objects, ``db.client.connection
                                                                        .state`` = ``idle`` or ``used``
``db.client.connection.idle.max``           observable up-down counter  ``max_size`` (idle objects kept)
``db.client.connection.idle.min``           observable up-down counter  ``min_size``
``db.client.connection.max``                observable up-down counter  ``max_size``
``db.client.connection.pending_requests``   observable up-down counter  callers waiting
``db.client.connection.timeouts``           observable counter          acquisitions that timed out
``sanaa.pool.<counter>``                    observable counters         ``acquired``, ``created``,
                                                                        ``exhausted``, ``errors``,
                                                                        ``discarded``, ``expired``,
                                                                        ``held_too_long``, ``cancelled``,
                                                                        ``waited``, ``wait_seconds`` (s)
``sanaa.pool.closed``                       observable counter          objects closed, attribute
                                                                        ``sanaa.pool.close_reason``
``db.client.connection.create_time``        histogram (s)               factory calls
``db.client.connection.wait_time``          histogram (s)               waits for an object
``db.client.connection.use_time``           histogram (s)               time objects were held
==========================================  ==========================  =================================

The histograms are not recorded one sample at a time: the pools already keep them, so
:class:`PoolHistogramExporter` wraps the exporter a reader pushes to and adds one histogram data point per
pool and instrument to each export, with the pool's exact bucket counts (at the same bounds as the
Prometheus export), sum, min and max: the cost is per export and per pool, whatever the traffic. They are
cumulative (or, for an exporter that prefers delta temporality, the difference since the previous export).

Figures are read on the event loop that runs the pools (see :class:`~.readings.ReadingCache`), whichever
thread the reader collects or exports from; one read serves every instrument of a collection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .buckets import bucket_counts
from .readings import ReadingCache, Readings

__all__ = ["POOL_NAME", "STATE", "PoolHistogramExporter", "PoolInstruments", "instrument_pools"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
CLOSE_REASON = "sanaa.pool.close_reason"
SCOPE = "sanaa_async_mem"

_HISTOGRAMS = (
    ("create", "The time it took to create a new connection", "create"),
    ("wait", "The time it took to obtain an open connection from the pool", "latency"),
    ("use", "The time between borrowing a connection and returning it to the pool", "latency"),
)
_COUNTERS = (
    ("acquired", "{acquisition}", "Objects handed out by the pool"),
    ("created", "{connection}", "Objects made by the pool's factory"),
    ("exhausted", "{acquisition}", "Acquisitions refused because too many callers were waiting"),
    ("errors", "{error}", "Factory, check or reset failures"),
    ("discarded", "{connection}", "Objects dropped as broken"),
    ("expired", "{connection}", "Objects replaced after their lifetime or idle time"),
    ("held_too_long", "{connection}", "Objects held longer than held_warning"),
    ("cancelled", "{acquisition}", "Acquisitions whose task was cancelled while waiting"),
    ("waited", "{acquisition}", "Acquisitions that had to wait for an object"),
)


class PoolInstruments:
    """The observable instruments of one :func:`instrument_pools` call. Keep a reference while you want
    them. ``readings`` is the cache their callbacks read (one read per collection)."""

    def __init__(self, readings: ReadingCache, meter: metrics.Meter) -> None:
        self.readings = readings
        self._current: Readings | None = None
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            [self._observe_count],
            unit="{connection}",
            description="The number of connections that are currently in the state of the state attribute",
        )
        for suffix, field, desc in (
            ("idle.max", "max_size", "The maximum number of idle open connections allowed"),
            ("idle.min", "min_size", "The minimum number of idle open connections allowed"),
            ("max", "max_size", "The maximum number of open connections allowed"),
        ):
            meter.create_observable_up_down_counter(
                f"db.client.connection.{suffix}", [self._field(field)], unit="{connection}", description=desc
            )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            [self._field("waiting")],
            unit="{request}",
            description="The number of current pending requests for an open connection",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            [self._field("timeouts")],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain a connection",
        )
        for field, unit, desc in _COUNTERS:
            meter.create_observable_counter(
                f"sanaa.pool.{field}", [self._field(field)], unit=unit, description=desc
            )
        meter.create_observable_counter(
            "sanaa.pool.wait_seconds",
            [self._field("wait_seconds")],
            unit="s",
            description="Total time acquisitions waited for an object",
        )
        meter.create_observable_counter(
            "sanaa.pool.closed",
            [self._observe_closed],
            unit="{connection}",
            description="Objects the pool closed, by reason (attribute sanaa.pool.close_reason)",
        )

    @property
    def optimizer(self) -> object | None:
        """The first source (what ``instrument_pools(optimizer)`` was given)."""
        return self.readings.sources[0] if self.readings.sources else None

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        # The first callback of a collection reads; the others of that collection use the same read.
        self._current = readings = self.readings.get()
        out = []
        for name, st in readings.pools.items():
            out.append(Observation(st.idle, {POOL_NAME: name, STATE: "idle"}))
            out.append(Observation(st.in_use, {POOL_NAME: name, STATE: "used"}))
        return out

    def _observe_closed(self, options: CallbackOptions) -> Iterable[Observation]:
        readings = self._current if self._current is not None else self.readings.get()
        return [
            Observation(count, {POOL_NAME: name, CLOSE_REASON: reason})
            for name, st in readings.pools.items()
            for reason, count in st.closed_by.items()
        ]

    def _field(self, field: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            readings = self._current if self._current is not None else self.readings.get()
            return [Observation(getattr(st, field), {POOL_NAME: name}) for name, st in readings.pools.items()]

        return observe


def instrument_pools(
    *sources: object,
    meter_provider: MeterProvider | None = None,
    meter: metrics.Meter | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> PoolInstruments:
    """Create the observable ``db.client.connection.*`` and ``sanaa.pool.*`` instruments for every pool of
    ``sources`` (looked up at each collection, so pools registered later are included). ``meter`` wins
    over ``meter_provider``, which defaults to the global provider. The time histograms come from
    :class:`PoolHistogramExporter`. Unknown sources raise ConfigurationError."""
    if meter is None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(SCOPE)
    return PoolInstruments(ReadingCache(sources, max_age=0.0, loop=loop), meter)


class PoolHistogramExporter(MetricExporter):
    """Wraps ``exporter``: every export also carries the pools' time histograms
    (``db.client.connection.{create,wait,use}_time``), one data point per pool, with exact bucket counts
    (see the module documentation).

    Temporality and aggregation preferences are ``exporter``'s, so a reader configures itself as it would
    for ``exporter`` alone. ``force_flush`` and ``shutdown`` are passed on. The points are added to the
    first resource of each export (or an empty default resource when the export has none), under the
    instrumentation scope ``sanaa_async_mem``.
    """

    def __init__(
        self, exporter: MetricExporter, *sources: object, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        super().__init__(
            preferred_temporality=getattr(exporter, "_preferred_temporality", None),
            preferred_aggregation=getattr(exporter, "_preferred_aggregation", None),
        )
        self.exporter = exporter
        self.readings = ReadingCache(sources, max_age=0.0, loop=loop)
        self._started: dict[tuple[str, str], int] = {}
        self._last: dict[tuple[str, str], tuple[tuple[int, ...], float]] = {}
        prefs = getattr(exporter, "_preferred_temporality", None) or {}
        self._delta = prefs.get(HistogramInstrument) == AggregationTemporality.DELTA

    def histograms(self, readings: Readings | None = None) -> list[Metric]:
        """The three histogram metrics for one read (now, unless ``readings`` is given)."""
        r = readings if readings is not None else self.readings.get()
        now = time.time_ns()
        temporality = AggregationTemporality.DELTA if self._delta else AggregationTemporality.CUMULATIVE
        out: list[Metric] = []
        for field, desc, family in _HISTOGRAMS:
            points = []
            for name, st in r.pools.items():
                snap = getattr(st, field)
                layout, counts = bucket_counts(snap, family)
                key = (name, field)
                start = self._started.setdefault(key, now)
                total = snap.sum
                if self._delta:
                    last = self._last.get(key)
                    self._last[key] = (tuple(counts), snap.sum)
                    if last is not None and all(c >= p for c, p in zip(counts, last[0], strict=True)):
                        counts = [c - p for c, p in zip(counts, last[0], strict=True)]
                        total = snap.sum - last[1]
                    self._started[key] = now
                points.append(
                    HistogramDataPoint(
                        attributes={POOL_NAME: name},
                        start_time_unix_nano=start,
                        time_unix_nano=now,
                        count=sum(counts),
                        sum=max(total, 0.0),
                        bucket_counts=counts,
                        explicit_bounds=layout.bounds,
                        min=snap.min,
                        max=snap.max,
                    )
                )
            if points:
                out.append(
                    Metric(
                        name=f"db.client.connection.{field}_time",
                        description=desc,
                        unit="s",
                        data=HistogramData(data_points=points, aggregation_temporality=temporality),
                    )
                )
        return out

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        extra = self.histograms()
        if extra:
            scope = ScopeMetrics(scope=InstrumentationScope(SCOPE), metrics=extra, schema_url="")
            resources = list(metrics_data.resource_metrics)
            if resources:
                first = resources[0]
                resources[0] = ResourceMetrics(
                    resource=first.resource,
                    scope_metrics=[*first.scope_metrics, scope],
                    schema_url=first.schema_url,
                )
            else:
                resources = [
                    ResourceMetrics(resource=Resource.get_empty(), scope_metrics=[scope], schema_url="")
                ]
            metrics_data = MetricsData(resource_metrics=resources)
        return self.exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.exporter.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.exporter.shutdown(timeout_millis=timeout_millis, **kwargs)
