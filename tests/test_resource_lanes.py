"""Reserved lanes and priorities in the ResourceManager: reserved capacity is always there for its purpose,
higher priority first, FIFO within a priority, aging bounds how long low priority can be overtaken
(a hypothesis property test on the gate), cancellation loses nothing, bad values are refused by name."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanaa_async_mem.errors import ConfigurationError, PoolTimeout, ResourceError
from sanaa_async_mem.resources import ResourceManager
from sanaa_async_mem.resources.lanes import Lanes


async def _hold(manager: ResourceManager, name: str, purpose: str | None, release: asyncio.Event) -> None:
    async with manager.acquire(name, purpose):
        await release.wait()


async def _until(condition: object, seconds: float = 30.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_reserved_capacity_is_free_for_its_purpose_while_others_wait() -> None:
    async with ResourceManager(timeout=30) as manager:
        manager.register_factory("db", object, max_size=3, reserve={"health": 1})
        release = asyncio.Event()
        holders = [asyncio.create_task(_hold(manager, "db", "query", release)) for _ in range(2)]
        await _until(lambda: manager.get_resource_stats("db").active == 2)
        with pytest.raises(PoolTimeout):  # the third slot is the health check's
            async with manager.acquire("db", "query", timeout=0.05):
                pass
        async with asyncio.timeout(30), manager.acquire("db", "health"):  # at once, while queries wait
            with pytest.raises(PoolTimeout):  # and beyond its reserve it competes like the rest
                async with manager.acquire("db", "health", timeout=0.05):
                    pass
        release.set()
        await asyncio.gather(*holders)


async def test_higher_priority_first_and_fifo_within_a_priority() -> None:
    async with ResourceManager(timeout=30) as manager:
        manager.register_factory("db", object, max_size=1, priority_aging=1000.0)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(manager, "db", None, release))
        await _until(lambda: manager.get_resource_stats("db").active == 1)

        async def waiter(label: str, priority: float) -> None:
            async with manager.acquire("db", label, priority=priority):
                order.append(label)

        tasks = []
        for label, priority in (("low1", 0), ("high1", 5), ("low2", 0), ("high2", 5), ("mid", 2)):
            tasks.append(asyncio.create_task(waiter(label, priority)))
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(holder, *tasks)
        assert order == ["high1", "high2", "mid", "low1", "low2"]


async def test_aging_lets_an_old_low_priority_waiter_go_first() -> None:
    async with ResourceManager(timeout=30) as manager:
        manager.register_factory("db", object, max_size=1, priority_aging=0.05)
        order: list[str] = []
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(manager, "db", None, release))
        await _until(lambda: manager.get_resource_stats("db").active == 1)

        async def waiter(label: str, priority: float) -> None:
            async with manager.acquire("db", label, priority=priority):
                order.append(label)

        old = asyncio.create_task(waiter("old low", 0))
        await asyncio.sleep(0.3)  # worth 6 priority points at 0.05 s each
        new = asyncio.create_task(waiter("new high", 5))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(holder, old, new)
        assert order == ["old low", "new high"]


async def test_cancelled_and_timed_out_waiters_lose_nothing() -> None:
    async with ResourceManager(timeout=30) as manager:
        manager.register_factory("db", object, max_size=2, reserve={"health": 1})
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(manager, "db", None, release))
        await _until(lambda: manager.get_resource_stats("db").active == 1)
        waiters = [asyncio.create_task(_hold(manager, "db", "q", release)) for _ in range(5)]
        await asyncio.sleep(0.02)
        for task in waiters[::2]:
            task.cancel()
        with pytest.raises(PoolTimeout):
            async with manager.acquire("db", "q", timeout=0.01):
                pass
        release.set()
        for task in [holder, *waiters]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        res = manager._resources["db"]
        assert res.lanes is not None
        assert res.lanes.active == 0 and res.lanes.waiters == [] and res.lanes.in_lane == {"health": 0}
        # Full capacity is back: one for anybody plus the reserved one.
        async with manager.acquire("db", "q"), manager.acquire("db", "health"):
            pass


async def test_unregistering_fails_the_lane_waiters() -> None:
    async with ResourceManager(timeout=30) as manager:
        manager.register_factory("db", object, max_size=1, priority_aging=1.0)
        release = asyncio.Event()
        holder = asyncio.create_task(_hold(manager, "db", None, release))
        await _until(lambda: manager.get_resource_stats("db").active == 1)
        waiter = asyncio.create_task(_hold(manager, "db", None, release))
        await asyncio.sleep(0.02)
        closing = asyncio.create_task(manager.unregister_resource("db"))
        with pytest.raises(ResourceError, match="unregistered"):
            await waiter
        release.set()
        await asyncio.gather(holder, closing)


async def test_bad_values_are_refused_by_name() -> None:
    async with ResourceManager() as manager:
        for kwargs, name in (
            ({"reserve": {"health": 3}}, "reserve"),  # all 3 slots: none left for anybody else
            ({"reserve": {"health": 0}}, "reserve"),
            ({"reserve": {"health": "1"}}, "reserve"),
            ({"reserve": {"": 1}}, "reserve"),
            ({"reserve": {}}, "reserve"),
            ({"reserve": ["health"]}, "reserve"),
            ({"priority_aging": 0}, "priority_aging"),
            ({"priority_aging": math.inf}, "priority_aging"),
            ({"priority_aging": "1"}, "priority_aging"),
        ):
            with pytest.raises(ConfigurationError, match=name):
                manager.register_factory("db", object, max_size=3, **kwargs)  # type: ignore[arg-type]
            assert "db" not in manager.names
        with pytest.raises(ConfigurationError, match="reserve"):
            manager.register_resource("shared", object(), reserve={"health": 1})  # no limit to reserve from
        manager.register_resource("limited", object(), max_concurrent=2, reserve={"health": 1})
        manager.register_factory("plain", object)
        with pytest.raises(ConfigurationError, match="priority"):
            async with manager.acquire("plain", priority=1):
                pass
        for bad in (math.nan, "high", True):
            with pytest.raises(ConfigurationError, match="priority"):
                manager.acquire("limited", priority=bad)  # type: ignore[arg-type]
        async with manager.acquire("limited", "health", priority=3):
            pass


# ------------------------------------------------------------------ the property test, on the gate itself

_arrive = st.tuples(
    st.just("arrive"),
    st.sampled_from(["health", "batch", None]),
    st.integers(min_value=0, max_value=3),
    st.floats(min_value=0.0, max_value=3.0),
)
# Arrivals twice as often as departures, so queues form and there is someone to overtake.
ops = st.lists(
    st.one_of(_arrive, _arrive, st.tuples(st.just("leave"), st.integers(min_value=0, max_value=50))),
    max_size=80,
)


class _Arrival:
    def __init__(self, purpose: str | None, priority: int, at: float, fut: asyncio.Future[None]) -> None:
        self.purpose, self.priority, self.at, self.fut = purpose, priority, at, fut


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.integers(min_value=2, max_value=5),
    health=st.integers(min_value=1, max_value=2),
    aging=st.sampled_from([0.1, 0.5, 1.0]),
    script=ops,
)
def test_reserve_always_available_and_no_overtaking_beyond_the_aging_bound(
    capacity: int, health: int, aging: float, script: list[tuple[object, ...]]
) -> None:
    health = min(health, capacity - 1)
    loop = asyncio.new_event_loop()
    now = [0.0]
    try:
        lanes = Lanes(lambda: capacity, loop, reserve={"health": health}, aging=aging, clock=lambda: now[0])
        holders: list[str | None] = []
        waiting: list[_Arrival] = []
        for op in script:
            granted: list[_Arrival] = []
            if op[0] == "arrive":
                _, purpose, priority, dt = op
                now[0] += float(dt)  # type: ignore[arg-type]
                own_slot = purpose == "health" and lanes.in_lane["health"] < health
                fut = lanes.park(purpose, float(priority), None)  # type: ignore[arg-type]
                arrival = _Arrival(purpose, priority, now[0], fut)  # type: ignore[arg-type]
                if own_slot:
                    assert fut.done(), "a purpose under its reserve must get a slot at once"
                if fut.done():
                    holders.append(arrival.purpose)
                else:
                    waiting.append(arrival)
            elif holders:
                purpose = holders.pop(int(op[1]) % len(holders))  # type: ignore[call-overload]
                lanes.leave(purpose)
                granted = [w for w in waiting if w.fut.done()]
                waiting = [w for w in waiting if not w.fut.done()]
                holders.extend(w.purpose for w in granted)
            # Invariants after every step.
            assert lanes.active == len(holders) <= capacity
            assert capacity - lanes.active >= lanes.unused_reserve()  # the reserved slots are free
            assert lanes.in_lane["health"] == holders.count("health")
            assert not any(lanes.admissible(w.purpose) for w in waiting), "work left undone"
            for x in granted:
                for w in waiting:  # still waiting, arrived before x: x may have overtaken it only so far
                    if w.at < x.at and x.purpose != "health":
                        assert x.at - w.at <= (x.priority - w.priority) * aging + 1e-9, (
                            f"overtaken beyond the bound: {vars(w)} by {vars(x)}"
                        )
    finally:
        loop.close()
