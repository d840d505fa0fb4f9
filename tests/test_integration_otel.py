"""OpenTelemetry: the db.client.connection.* instruments read through the SDK's in-memory reader."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import PoolTimeout
from sanaa_async_mem.integrations.otel import POOL_NAME, instrument_pools
from sanaa_async_mem.optimizer import MemoryOptimizer

pytestmark = pytest.mark.usefixtures("gc_restored")


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


async def test_pool_metrics_follow_the_semantic_conventions() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    extra: AsyncPool[object] = AsyncPool(object, name="extra", max_size=1, min_size=0, timeout=0.01)
    async with extra, MemoryOptimizer(pools=[extra], schedule_gc=False) as optimizer:
        optimizer.resource_manager.register_resource("db", factory=object, pool_options={"max_size": 3})
        instruments = instrument_pools(optimizer, meter_provider=provider)
        async with optimizer.resource_manager.acquire("db"), optimizer.resource_manager.acquire("db"):
            first = points(reader)
        async with extra.acquire():
            with pytest.raises(PoolTimeout):
                async with extra.acquire():
                    pass
        second = points(reader)
    assert instruments.optimizer is optimizer

    def value(pts: list[Any], **attrs: str) -> Any:
        (match,) = [p for p in pts if all(p.attributes.get(k) == v for k, v in attrs.items())]
        return match

    count = first["db.client.connection.count"]
    used = {POOL_NAME: "db", "db.client.connection.state": "used"}
    assert value(count, **used).value == 2
    assert value(first["db.client.connection.max"], **{POOL_NAME: "db"}).value == 3
    assert value(first["db.client.connection.idle.min"], **{POOL_NAME: "db"}).value == 0
    assert value(second["db.client.connection.timeouts"], **{POOL_NAME: "extra"}).value == 1
    assert value(second["db.client.connection.pending_requests"], **{POOL_NAME: "extra"}).value == 0
    waits = value(second["db.client.connection.wait_time"], **{POOL_NAME: "db"})
    assert waits.count == 2  # two acquisitions, counted once even though collected twice
    uses = value(second["db.client.connection.use_time"], **{POOL_NAME: "db"})
    assert uses.count == 2
    creates = value(second["db.client.connection.create_time"], **{POOL_NAME: "db"})
    assert creates.count == 2
