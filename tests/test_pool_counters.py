"""The pool's counters: cancelled, waited (+ total wait seconds), timeouts, created and closed by reason,
in stats() and through the Prometheus and OpenTelemetry exporters."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import PoolTimeout
from sanaa_async_mem.pools.pool import CLOSE_REASONS


class Conn:
    def __init__(self) -> None:
        self.ok = True


async def test_waited_cancelled_and_timeouts_are_counted() -> None:
    async with AsyncPool(Conn, min_size=1, max_size=1, timeout=30) as pool:
        async with pool.acquire():  # the object open() made: no wait
            pass
        st = pool.stats()
        assert (st.waited, st.wait_seconds, st.cancelled, st.timeouts) == (0, 0.0, 0, 0)
        release = asyncio.Event()
        holding = asyncio.Event()

        async def holder() -> None:
            async with pool.acquire():
                holding.set()
                await release.wait()

        async def waiter() -> None:
            async with pool.acquire():
                pass

        h = asyncio.create_task(holder())
        await holding.wait()
        waiters = [asyncio.create_task(waiter()) for _ in range(3)]
        cancelled = asyncio.create_task(waiter())
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancelled
        with pytest.raises(PoolTimeout):
            async with pool.acquire(timeout=0.01):
                pass
        release.set()
        await asyncio.gather(h, *waiters)
        st = pool.stats()
        assert st.waited == 3
        assert st.wait_seconds >= 3 * 0.04  # each waited at least while the others slept 50 ms
        assert st.wait_seconds == pytest.approx(st.wait.sum)
        assert st.cancelled == 1
        assert st.timeouts == 1
        assert st.acquired == 5
        d = st.as_dict()
        assert d["waited"] == 3 and d["cancelled"] == 1 and set(d["closed_by"]) == set(CLOSE_REASONS)


async def test_closed_by_reason() -> None:
    made: list[Conn] = []

    def factory() -> Conn:
        conn = Conn()
        made.append(conn)
        return conn

    pool = AsyncPool(
        factory,
        max_size=4,
        check=lambda c: c.ok,
        check_skip_within=0.0,
        max_lifetime=3600,
        lifetime_jitter=0.0,
        max_idle=0.05,
        maintenance_interval=0.02,
    )
    async with pool:
        # broken: mark_broken, put(discard=True)
        async with pool.acquire() as conn:
            pool.mark_broken(conn)
        obj = await pool.get()
        await pool.put(obj, discard=True)
        # failed_check: an idle object failing its check
        async with pool.acquire() as conn:
            conn.ok = False
        async with pool.acquire():
            pass
        # drained
        await pool.drain()
        # idle: objects unused for max_idle are closed by the housekeeper (min_size 0)
        async with pool.acquire(), pool.acquire():
            pass
        async with asyncio.timeout(30):
            while pool.stats().closed_by["idle"] < 2:
                await asyncio.sleep(0.02)
        # trimmed
        async with pool.acquire():
            pass
        assert pool.trim_idle() == 1
        before_close = dict(pool.stats().closed_by)
        async with pool.acquire():
            pass
    st = pool.stats()
    assert before_close["broken"] == 2
    assert before_close["failed_check"] == 1
    assert before_close["drained"] == 1
    assert before_close["idle"] == 2
    assert before_close["trimmed"] == 1
    assert st.closed_by["close"] == 1
    assert st.closed == sum(st.closed_by.values()) == st.created == len(made)
    assert st.discarded == st.closed_by["broken"] + st.closed_by["failed_check"]
    assert st.expired == sum(st.closed_by[r] for r in ("lifetime", "idle", "drained", "trimmed", "budget"))


async def test_lifetime_reason() -> None:
    async with AsyncPool(Conn, max_size=1, max_lifetime=0.05, lifetime_jitter=0.0) as pool:
        async with pool.acquire():
            await asyncio.sleep(0.08)  # expires while held: closed on return
        async with pool.acquire():
            pass
        await asyncio.sleep(0.08)
        async with pool.acquire():  # expired while idle: found at the next acquire
            pass
        assert pool.stats().closed_by["lifetime"] == 2


async def test_cancelled_during_check_counts_as_cancelled_and_broken() -> None:
    started = asyncio.Event()

    async def slow_check(conn: Conn) -> bool:
        started.set()
        await asyncio.sleep(3600)
        return True

    async with AsyncPool(Conn, max_size=1, check=slow_check, check_skip_within=0.0) as pool:
        async with pool.acquire():
            pass

        async def take() -> None:
            async with pool.acquire():
                pass

        task = asyncio.create_task(take())
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        st = pool.stats()
        assert st.cancelled == 1 and st.closed_by["broken"] == 1


async def test_exported_to_prometheus_with_a_reason_label() -> None:
    pytest.importorskip("prometheus_client")
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from sanaa_async_mem.integrations.prometheus import SanaaCollector

    async with AsyncPool(Conn, name="db", max_size=1) as pool:
        async with pool.acquire() as conn:
            pool.mark_broken(conn)
        async with pool.acquire():
            pass
        registry = CollectorRegistry()
        registry.register(SanaaCollector(pool))
        text = generate_latest(registry).decode()
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert got[("sanaa_pool_closed_total", (("pool", "db"), ("reason", "broken")))] == 1
    assert got[("sanaa_pool_closed_total", (("pool", "db"), ("reason", "lifetime")))] == 0
    # Both acquires waited for the factory (the broken object was not replaced until asked for).
    assert got[("sanaa_pool_waited_total", (("pool", "db"),))] == 2
    assert got[("sanaa_pool_cancelled_total", (("pool", "db"),))] == 0


async def test_exported_to_opentelemetry() -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from sanaa_async_mem.integrations.otel import CLOSE_REASON, POOL_NAME, instrument_pools

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        async with AsyncPool(Conn, name="db", max_size=1) as pool:
            instruments = instrument_pools(pool, meter_provider=provider)
            async with pool.acquire() as conn:
                pool.mark_broken(conn)
            data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    assert instruments is not None
    pts: dict[str, list[Any]] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                pts.setdefault(metric.name, []).extend(metric.data.data_points)
    closed = {p.attributes[CLOSE_REASON]: p.value for p in pts["sanaa.pool.closed"]}
    assert closed["broken"] == 1 and closed["idle"] == 0 and set(closed) == set(CLOSE_REASONS)
    assert all(p.attributes[POOL_NAME] == "db" for p in pts["sanaa.pool.closed"])
    assert [p.value for p in pts["sanaa.pool.waited"]] == [1]  # it waited for the factory
    assert [p.value for p in pts["sanaa.pool.cancelled"]] == [0]
