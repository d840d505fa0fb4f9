"""OpenTelemetry: the db.client.connection.* instruments and the pools' histograms, through a real SDK
reader pushing to an exporter (the histograms are added by PoolHistogramExporter, not replayed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import ConfigurationError, PoolTimeout
from sanaa_async_mem.integrations.buckets import exported_bounds
from sanaa_async_mem.integrations.otel import POOL_NAME, PoolHistogramExporter, instrument_pools
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_restored")


class Capture(MetricExporter):
    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def points(data: MetricsData) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def value(pts: list[Any], **attrs: str) -> Any:
    (match,) = [p for p in pts if all(p.attributes.get(k) == v for k, v in attrs.items())]
    return match


async def test_pool_metrics_follow_the_semantic_conventions() -> None:
    capture = Capture()
    reader = PeriodicExportingMetricReader(
        PoolHistogramExporter(capture, _Later()), export_interval_millis=3_600_000
    )
    provider = MeterProvider(metric_readers=[reader])
    extra: AsyncPool[object] = AsyncPool(object, name="extra", max_size=1, min_size=0, timeout=0.01)
    try:
        async with extra, MemoryOptimizer(pools=[extra], schedule_gc=False) as optimizer:
            _Later.target = optimizer
            optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 3})
            instruments = instrument_pools(optimizer, meter_provider=provider)
            async with optimizer.resource_manager.acquire("db"), optimizer.resource_manager.acquire("db"):
                reader.force_flush()  # on the loop's thread: read inline
                first = points(capture.exports[-1])
            async with extra.acquire():
                with pytest.raises(PoolTimeout):
                    async with extra.acquire():
                        pass
            # From another thread, as the reader's own export thread does: the loop reads for it.
            await asyncio.to_thread(reader.force_flush)
            second = points(capture.exports[-1])
            await asyncio.to_thread(reader.force_flush)
            third = points(capture.exports[-1])
    finally:
        provider.shutdown()
    assert instruments.optimizer is optimizer

    used = {POOL_NAME: "db", "db.client.connection.state": "used"}
    assert value(first["db.client.connection.count"], **used).value == 2
    assert value(first["db.client.connection.max"], **{POOL_NAME: "db"}).value == 3
    assert value(first["db.client.connection.idle.min"], **{POOL_NAME: "db"}).value == 0
    assert value(second["db.client.connection.timeouts"], **{POOL_NAME: "extra"}).value == 1
    assert value(second["db.client.connection.pending_requests"], **{POOL_NAME: "extra"}).value == 0
    assert value(second["sanaa.pool.acquired"], **{POOL_NAME: "db"}).value == 2
    assert value(second["sanaa.pool.created"], **{POOL_NAME: "db"}).value == 2
    waits = value(second["db.client.connection.wait_time"], **{POOL_NAME: "db"})
    assert waits.count == 2 and sum(waits.bucket_counts) == 2
    assert tuple(waits.explicit_bounds) == exported_bounds("latency")
    assert len(waits.bucket_counts) == len(waits.explicit_bounds) + 1
    uses = value(second["db.client.connection.use_time"], **{POOL_NAME: "db"})
    assert uses.count == 2 and uses.max >= uses.min >= 0
    creates = value(second["db.client.connection.create_time"], **{POOL_NAME: "db"})
    assert creates.count == 2
    # Cumulative: exported again, counted once (the pools' own counts, never replayed samples).
    assert value(third["db.client.connection.wait_time"], **{POOL_NAME: "db"}).count == 2
    assert (
        value(third["db.client.connection.wait_time"], **{POOL_NAME: "extra"}).count == 1
    )  # the timeout waited for nothing


class _Later:
    """A group source whose target is set once the optimizer exists (the exporter is built first)."""

    target: MemoryOptimizer | None = None

    def metric_sources(self) -> tuple[object, ...]:
        return () if self.target is None else (self.target,)


async def test_delta_preferring_exporter_gets_what_each_interval_added() -> None:
    capture = Capture(preferred_temporality={HistogramInstrument: AggregationTemporality.DELTA})
    pool: AsyncPool[object] = AsyncPool(object, name="p", max_size=1)
    async with pool:
        exporter = PoolHistogramExporter(capture, pool)
        for _ in range(3):
            async with pool.acquire():
                pass
        (wait, *_rest) = [m for m in exporter.histograms() if m.name == "db.client.connection.wait_time"]
        assert wait.data.aggregation_temporality == AggregationTemporality.DELTA
        assert wait.data.data_points[0].count == 3
        async with pool.acquire():
            pass
        (wait,) = [m for m in exporter.histograms() if m.name == "db.client.connection.wait_time"]
        assert wait.data.data_points[0].count == 1


def test_bad_sources_are_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"sources\[0\]"):
        instrument_pools(object())
    with pytest.raises(ConfigurationError, match=r"sources\[0\]"):
        PoolHistogramExporter(Capture(), 3)
