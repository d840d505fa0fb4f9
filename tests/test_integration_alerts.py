"""Alerts arrive as single structured log records on sanaa.*: routed through structlog's stdlib
integration (ProcessorFormatter + ExtraAdder) into JSON, and delivered to the optimizer's callback."""

from __future__ import annotations

import asyncio
import gc
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from sanaa_async_mem import AsyncPool, PoolExhausted, PoolTimeout
from sanaa_async_mem.optimizer import Alert, MemoryOptimizer

structlog = pytest.importorskip("structlog")


pytestmark = pytest.mark.usefixtures("gc_restored")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The application's logging set-up: structlog renders every stdlib record of sanaa.* as JSON."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(default=repr),
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.ExtraAdder(),
            ],
        )
    )
    logger = logging.getLogger("sanaa")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.WARNING)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def alerts_in(stream: io.StringIO) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [r for r in records if "sanaa_alert" in r]


async def test_alerts_are_structured_records_and_reach_the_callback(json_lines: io.StringIO) -> None:
    received: list[Alert] = []
    pool: AsyncPool[object] = AsyncPool(object, name="tiny", max_size=1, timeout=0.01, max_waiting=1)
    async with (
        pool,
        MemoryOptimizer(
            pools=[pool],
            snapshot_interval=0.01,
            high_memory_bytes=1,  # any process is "high": the profiler alerts at its first snapshot
            long_gc_pause=1e-6,  # any full collection is "long"
            alert_interval=60,  # checked explicitly below: no timing in the test
            alert_callback=received.append,
        ) as optimizer,
    ):
        async with pool.acquire():
            with pytest.raises(PoolTimeout):
                async with pool.acquire():
                    pass
            waiter = asyncio.create_task(pool.get())
            await asyncio.sleep(0)
            with pytest.raises(PoolExhausted):
                await pool.get()
            waiter.cancel()
        gc.collect()
        checked = optimizer.check_alerts()
        async with asyncio.timeout(30):  # generous: the profiler's first snapshot is due after 10 ms
            while not any(a.kind == "high_memory" for a in received):
                await asyncio.sleep(0.01)
    assert {a.kind for a in checked} == {"pool_exhausted", "long_gc_pause"}
    records = alerts_in(json_lines)
    by_kind = {r["sanaa_alert"]: r for r in records}
    assert {"pool_exhausted", "long_gc_pause", "high_memory"} <= set(by_kind)
    exhausted = by_kind["pool_exhausted"]
    assert exhausted["logger"] == "sanaa.pool" and exhausted["level"] == "warning"
    assert exhausted["sanaa_pool"] == "tiny"
    assert exhausted["sanaa_refused"] == 2 and exhausted["sanaa_max_size"] == 1
    pause = by_kind["long_gc_pause"]
    assert pause["logger"] == "sanaa.gc" and pause["sanaa_generation"] == 2
    assert pause["sanaa_max_pause_seconds"] > 0
    assert by_kind["high_memory"]["logger"] == "sanaa.memory"
    assert by_kind["high_memory"]["sanaa_threshold"] == 1
    # One record per alert: the same pool problem is not reported twice.
    assert sum(r["sanaa_alert"] == "pool_exhausted" for r in records) == 1
    assert {"pool_exhausted", "long_gc_pause", "high_memory"} <= {a.kind for a in received}
    assert next(a for a in received if a.kind == "pool_exhausted").fields["pool"] == "tiny"
