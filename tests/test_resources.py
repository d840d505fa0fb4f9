"""ResourceManager: registration rules, fair limits, cancellation at every await, closing, threads, stats."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from sanaa_async_mem.errors import ConfigurationError, PoolTimeout, ResourceError
from sanaa_async_mem.pools.pool import AsyncPool
from sanaa_async_mem.resources.manager import (
    MAX_PURPOSES,
    NO_PURPOSE,
    OTHER_PURPOSES,
    ResourceCleanupError,
    ResourceManager,
)

pytestmark = pytest.mark.both_loops


class Conn:
    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = 0

    def __repr__(self) -> str:
        return f"Conn({self.id})"


class Factory:
    def __init__(self) -> None:
        self.made: list[Conn] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Conn:
        if self.gate is not None:
            await self.gate.wait()
        conn = Conn()
        self.made.append(conn)
        return conn


def close_conn(conn: Conn) -> None:
    conn.closed += 1


class Cleanups:
    """Records every cleanup call (name, object), sync or async, and can fail on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail: set[str] = set()

    def sync(self, name: str) -> Callable[[Any], None]:
        def cleanup(obj: Any) -> None:
            self.calls.append((name, obj))
            if name in self.fail:
                raise RuntimeError(f"cleanup of {name} failed")

        return cleanup

    def async_(self, name: str, gate: asyncio.Event | None = None) -> Callable[[Any], Any]:
        async def cleanup(obj: Any) -> None:
            if gate is not None:
                await gate.wait()
            self.calls.append((name, obj))
            if name in self.fail:
                raise RuntimeError(f"cleanup of {name} failed")

        return cleanup

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def assert_quiet(manager: ResourceManager, name: str) -> None:
    stats = manager.get_resource_stats(name)
    assert stats.active == 0 and stats.waiting == 0, stats
    assert all(p.active == 0 for p in stats.by_purpose.values())


# ---------------------------------------------------------------------------------------- registering


async def test_shared_object_is_handed_to_every_holder_and_cleaned_up_once() -> None:
    cleanups = Cleanups()
    session = object()
    async with ResourceManager() as manager:
        manager.register_resource("http", session, cleanups.sync("http"))
        async with manager.acquire("http", "fetch") as a, manager.acquire_resource("http", "fetch") as b:
            assert a is session and b is session
            assert manager.get_resource_stats("http").active == 2
        stats = manager.get_resource_stats("http")
        assert (stats.kind, stats.acquisitions, stats.active, stats.peak) == ("shared", 2, 0, 2)
    assert cleanups.calls == [("http", session)]


async def test_callable_passed_positionally_is_a_shared_object_never_called() -> None:
    calls = []

    def client() -> None:  # e.g. a callable client object
        calls.append(1)

    async with ResourceManager() as manager:
        manager.register_resource("fn", client)
        async with manager.acquire("fn") as obj:
            assert obj is client
    assert calls == []


async def test_factory_builds_a_pool_limited_by_max_concurrent() -> None:
    factory = Factory()
    cleanups = Cleanups()
    async with ResourceManager() as manager:
        manager.register_resource(
            "db",
            cleanup=cleanups.sync("db"),
            factory=factory,
            pool_options={"close": close_conn},
            max_concurrent=2,
        )
        async with manager.acquire("db") as a, manager.acquire("db") as b:
            assert a is not b and {a, b} <= set(factory.made)
            with pytest.raises(PoolTimeout):
                async with manager.acquire("db", timeout=0.01):
                    pass
        stats = manager.get_resource_stats("db")
        assert stats.kind == "pool" and stats.pool is not None and stats.pool.max_size == 2
        assert stats.timeouts == 1 and stats.acquisitions == 2
    # the pool was closed (every object once), then the cleanup got the pool
    assert [c.closed for c in factory.made] == [1, 1]
    assert len(cleanups.calls) == 1 and isinstance(cleanups.calls[0][1], AsyncPool)
    assert cleanups.calls[0][1].closed


async def test_registered_pool_is_opened_on_first_use_and_closed_with_the_resource() -> None:
    factory = Factory()
    pool = AsyncPool(factory, max_size=3, close=close_conn)
    async with ResourceManager() as manager:
        manager.register_resource("db", pool)
        assert not pool.closed
        async with manager.acquire("db") as conn:
            assert conn is factory.made[0]
        await manager.unregister_resource("db")
        assert pool.closed and factory.made[0].closed == 1
        assert manager.names == ()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"resource": object(), "cleanup": "not callable"}, "cleanup"),
        ({"resource": object(), "max_concurrent": 0}, "max_concurrent"),
        ({"resource": object(), "max_concurrent": -3}, "max_concurrent"),
        ({"resource": object(), "max_concurrent": 1.5}, "max_concurrent"),
        ({"resource": object(), "max_concurrent": True}, "max_concurrent"),
        ({}, "factory"),
        ({"resource": object(), "factory": Factory()}, "factory"),
        ({"factory": "nope"}, "factory"),
        ({"resource": object(), "pool_options": {"max_size": 2}}, "pool_options"),
        ({"factory": Factory(), "pool_options": {"bogus": 1}}, "pool_options"),
        ({"factory": Factory(), "pool_options": {"max_size": 0}}, "max_size"),
        ({"factory": Factory(), "pool_options": {"max_size": 4}, "max_concurrent": 2}, "max_concurrent"),
    ],
)
async def test_bad_registration_names_the_parameter_and_registers_nothing(
    kwargs: dict[str, Any], param: str
) -> None:
    async with ResourceManager() as manager:
        with pytest.raises(ConfigurationError) as info:
            manager.register_resource("r", **kwargs)
        assert info.value.name == param
        assert manager.names == ()


async def test_the_three_registration_forms() -> None:
    factory = Factory()
    cleanups = Cleanups()
    pool = AsyncPool(Factory(), max_size=2, name="own")
    async with ResourceManager() as manager:
        manager.register_resource("settings", {"region": "eu"}, cleanups.sync("settings"))
        manager.register_pool("cache", pool, cleanup=cleanups.sync("cache"))
        manager.register_factory("db", factory, max_concurrent=3, close=close_conn, timeout=5)
        async with (
            manager.acquire("settings") as cfg,
            manager.acquire("cache") as c,
            manager.acquire("db") as d,
        ):
            assert cfg == {"region": "eu"} and isinstance(c, Conn) and d is factory.made[0]
        db_pool = manager.get_pool("db")
        assert db_pool is not None and (db_pool.name, db_pool.max_size) == ("db", 3)
        assert manager.get_pool("cache") is pool and manager.get_pool("settings") is None
    assert sorted(cleanups.names()) == ["cache", "settings"] and pool.closed
    assert factory.made[0].closed == 1


@pytest.mark.parametrize(
    ("register", "param"),
    [
        (lambda m: m.register_pool("p", object()), "pool"),
        (lambda m: m.register_pool("p", AsyncPool(Factory()), max_concurrent=0), "max_concurrent"),
        (lambda m: m.register_pool("p", AsyncPool(Factory()), cleanup=3), "cleanup"),
        (lambda m: m.register_factory("f", "nope"), "factory"),
        (lambda m: m.register_factory("f", Factory(), bogus=1), "bogus"),
        (lambda m: m.register_factory("f", Factory(), max_size=0), "max_size"),
        (lambda m: m.register_factory("f", Factory(), max_size=4, max_concurrent=2), "max_concurrent"),
        (lambda m: m.register_factory("", Factory()), "name"),
    ],
)
async def test_bad_pool_and_factory_registrations_name_the_parameter(
    register: Callable[[ResourceManager], None], param: str
) -> None:
    async with ResourceManager() as manager:
        with pytest.raises(ConfigurationError) as info:
            register(manager)
        assert info.value.name == param
        assert manager.names == ()


async def test_awaiting_acquire_fails_with_a_hint_to_use_async_with() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("db", object())
        with pytest.raises(TypeError, match=r"async with manager.acquire\('db'\)"):
            await manager.acquire("db")  # type: ignore[misc]  # what asyncpg users type
        assert_quiet(manager, "db")
        assert manager.get_resource_stats("db").acquisitions == 0


async def test_stats_and_close_are_the_verbs_with_the_original_names_as_aliases() -> None:
    manager = ResourceManager()
    assert ResourceManager.get_stats is ResourceManager.stats
    assert ResourceManager.aclose is ResourceManager.close
    assert ResourceManager.acquire_resource is ResourceManager.acquire
    manager.register_resource("a", object())
    async with manager.acquire("a"):
        pass
    assert manager.stats() == manager.get_stats() and manager.stats().acquisitions == 1
    await manager.close()
    assert manager.stats().state == "closed"
    await manager.aclose()  # idempotent under either name


async def test_empty_name_duplicate_name_and_closed_pool_are_refused() -> None:
    async with ResourceManager() as manager:
        with pytest.raises(ConfigurationError, match="name"):
            manager.register_resource("", object())
        manager.register_resource("a", object())
        with pytest.raises(ResourceError, match="'a' is already registered"):
            manager.register_resource("a", object())
        pool = AsyncPool(Factory())
        await pool.close()
        with pytest.raises(ResourceError, match="closed"):
            manager.register_resource("b", pool)
        assert manager.names == ("a",)


async def test_unknown_name_lists_the_registered_names() -> None:
    async with ResourceManager() as manager:
        with pytest.raises(ResourceError, match="registered: none"):
            async with manager.acquire("db"):
                pass
        manager.register_resource("cache", object())
        manager.register_resource("http", object())
        with pytest.raises(ResourceError, match=r"no resource named 'db'; registered: 'cache', 'http'"):
            async with manager.acquire("db"):
                pass
        with pytest.raises(ResourceError, match="registered: 'cache', 'http'"):
            manager.get_resource_stats("db")
        with pytest.raises(ResourceError, match="registered: 'cache', 'http'"):
            await manager.unregister_resource("db")


async def test_acquire_and_register_after_close_are_refused() -> None:
    manager = ResourceManager()
    manager.register_resource("a", object())
    await manager.aclose()
    with pytest.raises(ResourceError, match="closed"):
        async with manager.acquire("a"):
            pass
    with pytest.raises(ResourceError, match="closed"):
        manager.register_resource("b", object())
    await manager.aclose()  # idempotent


async def test_bad_timeout_is_a_configuration_error() -> None:
    manager = ResourceManager()
    with pytest.raises(ConfigurationError, match="timeout"):
        manager.acquire("a", timeout=-1)
    with pytest.raises(ConfigurationError, match="timeout"):
        ResourceManager(timeout=-1)


async def test_reusing_one_acquire_context_is_an_error() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object())
        ctx = manager.acquire("a")
        async with ctx:
            with pytest.raises(ResourceError, match="already in use"):
                await ctx.__aenter__()
        assert_quiet(manager, "a")


# ------------------------------------------------------------------------------------ limits, fairness


async def test_max_concurrent_hands_slots_to_waiters_in_arrival_order() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("api", object(), max_concurrent=1)
        order: list[int] = []

        async def worker(i: int) -> None:
            async with manager.acquire("api"):
                order.append(i)
                await asyncio.sleep(0)

        async with manager.acquire("api"):
            tasks = [asyncio.create_task(worker(i)) for i in range(20)]
            await until(lambda: manager.get_resource_stats("api").waiting == 20)
        await asyncio.gather(*tasks)
        assert order == list(range(20))
        stats = manager.get_resource_stats("api")
        assert stats.peak == 1 and stats.acquisitions == 21


async def test_a_releasing_task_cannot_barge_ahead_of_waiters() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("api", object(), max_concurrent=1)
        got: list[str] = []

        async def waiter() -> None:
            async with manager.acquire("api"):
                got.append("waiter")

        async with manager.acquire("api"):
            task = asyncio.create_task(waiter())
            await until(lambda: manager.get_resource_stats("api").waiting == 1)
        # The slot went to the waiter at release: re-acquiring at once queues behind it.
        async with manager.acquire("api"):
            got.append("releaser")
        await task
        assert got == ["waiter", "releaser"]


async def test_limit_on_registered_pool_is_fair_and_at_most_its_size() -> None:
    pool = AsyncPool(Factory(), max_size=5)
    async with ResourceManager() as manager:
        manager.register_resource("db", pool, max_concurrent=2)
        assert manager.get_resource_stats("db").max_concurrent == 2
        active: list[int] = []

        async def worker() -> None:
            async with manager.acquire("db"):
                active.append(manager.get_resource_stats("db").active)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker() for _ in range(30)))
        assert max(active) <= 2 and manager.get_resource_stats("db").peak == 2
        assert pool.stats().size <= 2


async def test_limiter_timeout_is_counted_and_frees_nothing_it_did_not_take() -> None:
    async with ResourceManager(timeout=0.01) as manager:
        manager.register_resource("api", object(), max_concurrent=1)
        async with manager.acquire("api"):
            with pytest.raises(PoolTimeout, match="max_concurrent=1"):
                async with manager.acquire("api", "slow"):
                    pass
        stats = manager.get_resource_stats("api")
        assert stats.timeouts == 1 and stats.by_purpose["slow"].timeouts == 1
        # still exactly one slot
        async with manager.acquire("api"):
            with pytest.raises(PoolTimeout):
                async with manager.acquire("api", timeout=0.01):
                    pass
        assert_quiet(manager, "api")


# --------------------------------------------------------------------------- cancellation at each await


async def test_cancelled_waiter_leaves_the_queue_and_loses_nothing() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("api", object(), max_concurrent=1)

        async def wait() -> None:
            async with manager.acquire("api"):
                pass

        async with manager.acquire("api"):
            task = asyncio.create_task(wait())
            await until(lambda: manager.get_resource_stats("api").waiting == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        stats = manager.get_resource_stats("api")
        assert stats.cancelled == 1 and stats.waiting == 0
        async with manager.acquire("api", timeout=0.5):
            pass


async def test_waiter_cancelled_after_the_handoff_passes_the_slot_on() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("api", object(), max_concurrent=1)
        got: list[str] = []

        async def wait(name: str) -> None:
            async with manager.acquire("api"):
                got.append(name)

        lease = manager.acquire("api")
        await lease.__aenter__()
        first = asyncio.create_task(wait("first"))
        second = asyncio.create_task(wait("second"))
        await until(lambda: manager.get_resource_stats("api").waiting == 2)
        await lease.__aexit__(None, None, None)  # the slot is handed to `first` ...
        first.cancel()  # ... which is cancelled before it can resume
        await asyncio.gather(first, second, return_exceptions=True)
        assert first.cancelled() and got == ["second"]
        assert_quiet(manager, "api")
        async with manager.acquire("api", timeout=0.5):
            pass


async def test_cancelled_while_waiting_for_a_pooled_object() -> None:
    factory = Factory()
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=factory, pool_options={"max_size": 1})
        async with manager.acquire("db"):
            task = asyncio.create_task(manager.acquire("db").__aenter__())
            await until(lambda: manager.get_resource_stats("db").waiting == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert_quiet(manager, "db")
        async with manager.acquire("db", timeout=0.5) as conn:
            assert conn is factory.made[0]


async def test_cancelled_during_lazy_pool_open_and_during_creation() -> None:
    factory = Factory()
    factory.gate = asyncio.Event()
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=factory, pool_options={"min_size": 1, "max_size": 2})

        async def use() -> None:
            async with manager.acquire("db"):
                pass

        task = asyncio.create_task(use())
        await until(lambda: manager.get_resource_stats("db").waiting == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_quiet(manager, "db")
        factory.gate.set()
        async with manager.acquire("db", timeout=1.0):
            pass


async def test_cancelled_in_the_pool_after_taking_a_slot_gives_the_slot_back() -> None:
    factory = Factory()
    factory.gate = asyncio.Event()
    pool = AsyncPool(factory, max_size=5)
    async with ResourceManager() as manager:
        manager.register_resource("db", pool, max_concurrent=1)

        async def use() -> None:
            async with manager.acquire("db"):
                pass

        task = asyncio.create_task(use())  # takes the only slot, then waits for the factory
        await until(lambda: pool.stats().creating == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_quiet(manager, "db")
        factory.gate.set()
        async with manager.acquire("db", timeout=1.0) as conn:  # the slot is free again
            assert conn is factory.made[0]


async def test_cancelled_inside_the_block_releases_the_object() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=Factory(), max_concurrent=1)
        inside = asyncio.Event()

        async def hold() -> None:
            async with manager.acquire("db", "job"):
                inside.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(hold())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = manager.get_resource_stats("db")
        assert stats.active == 0 and stats.errors == 0 and stats.by_purpose["job"].hold.count == 1
        async with manager.acquire("db", timeout=0.5):
            pass


async def test_cancelled_during_the_pools_reset_still_returns_the_object() -> None:
    reset_gate = asyncio.Event()
    resets: list[Conn] = []

    async def reset(conn: Conn) -> None:
        await reset_gate.wait()
        resets.append(conn)

    factory = Factory()
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=factory, pool_options={"max_size": 1, "reset": reset})
        entered = asyncio.Event()

        async def use() -> None:
            async with manager.acquire("db"):
                entered.set()

        task = asyncio.create_task(use())
        await entered.wait()
        await until(lambda: (s := manager.get_resource_stats("db").pool) is not None and s.returning == 1)
        task.cancel()  # cancelled while the (shielded) reset runs
        with pytest.raises(asyncio.CancelledError):
            await task
        reset_gate.set()
        async with manager.acquire("db", timeout=1.0) as conn:
            assert conn is factory.made[0] and resets == [conn]
        assert_quiet(manager, "db")


async def test_cancelled_unregister_still_runs_the_cleanup_exactly_once() -> None:
    cleanups = Cleanups()
    gate = asyncio.Event()
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), cleanups.async_("a", gate))
        task = asyncio.create_task(manager.unregister_resource("a"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ResourceError, match="being unregistered"):
            async with manager.acquire("a"):
                pass
        gate.set()
        await manager.unregister_resource("a")  # joins the close already under way
        assert cleanups.names() == ["a"]
    assert cleanups.names() == ["a"]


async def test_cancelled_aclose_finishes_closing_in_the_background() -> None:
    cleanups = Cleanups()
    gate = asyncio.Event()
    manager = ResourceManager()
    manager.register_resource("a", object(), cleanups.async_("a", gate))
    manager.register_resource("b", object(), cleanups.sync("b"))
    task = asyncio.create_task(manager.aclose())
    await until(lambda: cleanups.names() == ["b"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await manager.aclose()
    assert cleanups.names() == ["b", "a"]


# ------------------------------------------------------------------------------------------ closing


async def test_unregister_refuses_new_acquisitions_waits_for_holders_then_cleans_up() -> None:
    cleanups = Cleanups()
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), cleanups.sync("a"), max_concurrent=1)
        release = asyncio.Event()
        inside = asyncio.Event()

        async def holder() -> None:
            async with manager.acquire("a"):
                inside.set()
                await release.wait()

        async def waiter() -> None:
            async with manager.acquire("a"):
                pass

        h = asyncio.create_task(holder())
        await inside.wait()
        w = asyncio.create_task(waiter())
        await until(lambda: manager.get_resource_stats("a").waiting == 1)
        closing = asyncio.create_task(manager.unregister_resource("a", timeout=10))
        await asyncio.sleep(0)
        with pytest.raises(ResourceError, match="unregistered while waiting"):
            await w
        with pytest.raises(ResourceError, match="being unregistered"):
            async with manager.acquire("a"):
                pass
        await asyncio.sleep(0.01)
        assert not closing.done() and cleanups.calls == []
        release.set()
        await closing
        await h
        assert cleanups.names() == ["a"] and manager.names == ()


async def test_unregister_gives_up_on_a_stuck_holder_after_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cleanups = Cleanups()
    factory = Factory()
    async with ResourceManager() as manager:
        manager.register_resource(
            "db", cleanup=cleanups.sync("db"), factory=factory, pool_options={"close": close_conn}
        )
        inside = asyncio.Event()
        release = asyncio.Event()

        async def stuck() -> None:
            async with manager.acquire("db"):
                inside.set()
                await release.wait()

        task = asyncio.create_task(stuck())
        await inside.wait()
        with caplog.at_level(logging.WARNING, logger="sanaa"):
            await manager.unregister_resource("db", timeout=0.05)
        assert cleanups.names() == ["db"] and factory.made[0].closed == 0
        assert any(getattr(r, "sanaa_event", None) == "close_timeout" for r in caplog.records)
        release.set()
        await task
        await until(lambda: factory.made[0].closed == 1)  # closed when it came back, exactly once


async def test_pool_waiters_are_refused_when_the_resource_is_unregistered() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=Factory(), max_concurrent=1)
        inside = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with manager.acquire("db"):
                inside.set()
                await release.wait()

        async def waiter() -> None:
            async with manager.acquire("db"):
                pass

        h = asyncio.create_task(holder())
        await inside.wait()
        w = asyncio.create_task(waiter())
        await until(lambda: manager.get_resource_stats("db").waiting == 1)
        closing = asyncio.create_task(manager.unregister_resource("db"))
        with pytest.raises(ResourceError, match="unregistered"):
            await w
        release.set()
        await asyncio.gather(h, closing)


async def test_concurrent_unregisters_share_one_cleanup() -> None:
    cleanups = Cleanups()
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), cleanups.async_("a"))
        await asyncio.gather(*(manager.unregister_resource("a") for _ in range(5)))
        assert cleanups.names() == ["a"]
        manager.register_resource("a", object())  # the name is free again


async def test_failing_cleanup_is_raised_and_the_resource_is_gone_anyway() -> None:
    cleanups = Cleanups()
    cleanups.fail = {"a"}
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), cleanups.sync("a"))
        with pytest.raises(ResourceCleanupError) as info:
            await manager.unregister_resource("a")
        assert isinstance(info.value, ResourceError)
        assert [str(e) for e in info.value.exceptions] == ["cleanup of a failed"]
        assert manager.names == ()


async def test_aclose_runs_cleanups_in_reverse_order_and_reports_every_failure_together() -> None:
    cleanups = Cleanups()
    cleanups.fail = {"b", "d"}
    manager = ResourceManager()
    async with manager:
        for name in "abcde":
            cleanup = cleanups.sync(name) if name in "ace" else cleanups.async_(name)
            manager.register_resource(name, object(), cleanup)
        with pytest.raises(ResourceCleanupError) as info:
            await manager.aclose()
    assert cleanups.names() == ["e", "d", "c", "b", "a"]
    assert sorted(str(e) for e in info.value.exceptions) == ["cleanup of b failed", "cleanup of d failed"]
    with pytest.raises(ExceptionGroup):  # except* works too
        raise info.value
    assert manager.get_stats().state == "closed" and manager.names == ()


async def test_aclose_with_objects_checked_out_waits_then_closes_each_once() -> None:
    factory = Factory()
    manager = ResourceManager()
    manager.register_resource("db", factory=factory, pool_options={"max_size": 4, "close": close_conn})
    inside = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with manager.acquire("db"):
            inside.set()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(4)]
    await until(lambda: manager.get_resource_stats("db").active == 4)
    closing = asyncio.create_task(manager.aclose(timeout=5))
    await asyncio.sleep(0.01)
    assert not closing.done()
    release.set()
    await asyncio.gather(closing, *tasks)
    assert [c.closed for c in factory.made] == [1, 1, 1, 1]


async def test_aclose_does_not_hang_on_holders_that_never_return() -> None:
    factory = Factory()
    manager = ResourceManager()
    manager.register_resource("db", factory=factory, pool_options={"close": close_conn})
    manager.register_resource("api", object(), max_concurrent=1)
    inside = asyncio.Event()

    async def hold() -> None:
        async with manager.acquire("db"), manager.acquire("api"):
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(hold())
    await inside.wait()
    await asyncio.wait_for(manager.aclose(timeout=0.05), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: factory.made[0].closed == 1)


# -------------------------------------------------------------------------------------------- stats


async def test_stats_by_purpose_count_waits_holds_errors_and_peak() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=Factory(), max_concurrent=2)
        manager.register_resource("http", object())
        async with manager.acquire("db", "load user"), manager.acquire("db", "load user"):
            pass
        with pytest.raises(KeyError):
            async with manager.acquire("db", "save"):
                raise KeyError("boom")
        async with manager.acquire("http"):
            pass
        db = manager.get_resource_stats("db")
        # KeyError is the application's own error: the resource did not fail
        assert (db.acquisitions, db.active, db.peak, db.waiting) == (3, 0, 2, 0)
        assert (db.errors, db.app_errors) == (0, 1)
        assert set(db.by_purpose) == {"load user", "save"}
        assert db.by_purpose["load user"].acquisitions == 2 and db.by_purpose["save"].app_errors == 1
        assert db.wait.count == 3 and db.hold.count == 3
        assert manager.get_resource_stats("http").by_purpose[NO_PURPOSE].acquisitions == 1
        whole = manager.get_stats()
        assert (whole.acquisitions, whole.errors, whole.app_errors, whole.active) == (4, 0, 1, 0)
        assert list(whole.resources) == ["db", "http"]
        json.dumps(whole.as_dict())  # plain numbers only


async def test_purpose_labels_are_capped() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object())
        for i in range(MAX_PURPOSES + 10):
            async with manager.acquire("a", f"p{i}"):
                pass
        by = manager.get_resource_stats("a").by_purpose
        assert len(by) == MAX_PURPOSES + 1 and by[OTHER_PURPOSES].acquisitions == 10


async def test_pool_discards_are_visible_in_resource_stats() -> None:
    factory = Factory()
    async with ResourceManager() as manager:
        manager.register_resource(
            "db", factory=factory, pool_options={"discard_on": (ConnectionError,), "close": close_conn}
        )
        with pytest.raises(ConnectionError):
            async with manager.acquire("db"):
                raise ConnectionError("server gone")
        async with manager.acquire("db") as conn:
            assert conn is factory.made[1]
        stats = manager.get_resource_stats("db")
        assert stats.pool is not None and stats.pool.discarded == 1 and stats.errors == 1


# ------------------------------------------------------------------------------------------ threads


async def test_worker_threads_acquire_through_the_loop_with_the_limit_respected() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("db", factory=Factory(), max_concurrent=2)
        lock = threading.Lock()
        now_active = [0]
        seen: list[int] = []

        def work(i: int) -> int:
            with manager.acquire_from_thread("db", "thread") as conn:
                with lock:
                    now_active[0] += 1
                    seen.append(now_active[0])
                threading.Event().wait(0.001)
                with lock:
                    now_active[0] -= 1
                return conn.id

        results = await asyncio.gather(*(asyncio.to_thread(work, i) for i in range(16)))
        assert len(results) == 16 and max(seen) <= 2
        stats = manager.get_resource_stats("db")
        assert stats.by_purpose["thread"].acquisitions == 16 and stats.active == 0 and stats.peak <= 2


async def test_thread_acquire_errors_are_raised_in_the_thread() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), max_concurrent=1)

        def unknown() -> None:
            with manager.acquire_from_thread("nope"):
                pass

        with pytest.raises(ResourceError, match="registered: 'a'"):
            await asyncio.to_thread(unknown)

        def timed_out() -> None:
            with manager.acquire_from_thread("a", timeout=0.01):
                pass

        async with manager.acquire("a"):
            with pytest.raises(PoolTimeout):
                await asyncio.to_thread(timed_out)

        def failing() -> None:
            with manager.acquire_from_thread("a", "job"):
                raise ValueError("bad")

        with pytest.raises(ValueError):
            await asyncio.to_thread(failing)
        stats = manager.get_resource_stats("a")
        assert stats.by_purpose["job"].app_errors == 1 and stats.active == 0 and stats.timeouts == 1


async def test_thread_api_on_the_loop_thread_or_before_use_is_refused() -> None:
    manager = ResourceManager()
    manager.register_resource("a", object())

    def early() -> None:
        with manager.acquire_from_thread("a"):
            pass

    with pytest.raises(ResourceError, match="not running on an event loop"):
        await asyncio.to_thread(early)
    async with manager:
        with pytest.raises(ResourceError, match="would deadlock"), manager.acquire_from_thread("a"):
            pass

        def register() -> None:
            manager.register_resource("b", object())

        with pytest.raises(ResourceError, match="acquire_from_thread"):
            await asyncio.to_thread(register)
        assert manager.names == ("a",)


async def test_thread_that_stops_waiting_leaks_nothing() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), max_concurrent=1)
        lease = manager.acquire_from_thread("a")
        outcome: list[BaseException] = []

        def blocked() -> None:
            try:
                lease.acquire()
            except BaseException as exc:
                outcome.append(exc)

        async with manager.acquire("a"):
            thread = threading.Thread(target=blocked, daemon=True)
            thread.start()
            await until(lambda: manager.get_resource_stats("a").waiting == 1)
            # What the thread asks of the loop when it stops waiting (e.g. on KeyboardInterrupt).
            lease._abandon_on_loop(manager.acquire("a"))
            await until(lambda: manager.get_resource_stats("a").waiting == 0)
        await asyncio.to_thread(thread.join, 5)
        assert len(outcome) == 1 and isinstance(outcome[0], ResourceError)
        assert manager.get_resource_stats("a").cancelled == 1
        async with manager.acquire("a", timeout=0.5):
            pass


async def test_thread_abandoning_after_the_handoff_gives_the_object_back() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object(), max_concurrent=1)
        lease = manager.acquire_from_thread("a")
        await asyncio.to_thread(lease.acquire)
        assert manager.get_resource_stats("a").active == 1
        inner = lease._lease
        assert inner is not None
        lease._abandon_on_loop(inner)  # the task is done: the loop releases what it acquired
        await until(lambda: manager.get_resource_stats("a").active == 0)
        async with manager.acquire("a", timeout=0.5):
            pass


async def test_manager_used_from_another_loop_is_refused() -> None:
    async with ResourceManager() as manager:
        manager.register_resource("a", object())

        def other_loop() -> None:
            async def use() -> None:
                async with manager.acquire("a"):
                    pass

            asyncio.run(use())

        with pytest.raises(ResourceError, match="bound to the event loop"):
            await asyncio.to_thread(other_loop)


# ------------------------------------------------------------------------- faults: budgets, timeouts


async def test_close_budget_running_out_does_not_cancel_close_hooks() -> None:
    closed: list[Conn] = []

    async def slow_close(conn: Conn) -> None:
        await asyncio.sleep(0.05)
        closed.append(conn)

    factory = Factory()
    manager = ResourceManager()
    manager.register_factory("db", factory, min_size=5, max_size=5, close=slow_close)
    async with manager.acquire("db"):  # opens the pool, which pre-warms five connections
        await until(lambda: len(factory.made) == 5)
    await manager.close(timeout=0.01)
    assert len(closed) == 5


async def test_the_managers_timeout_applies_to_pools_it_builds() -> None:
    async with ResourceManager(timeout=0.05) as manager:
        manager.register_factory("db", Factory(), max_size=1)
        manager.register_resource("legacy", factory=Factory(), pool_options={"max_size": 1})
        for name in ("db", "legacy"):
            async with manager.acquire(name):
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(PoolTimeout, match="nested acquire"):
                    async with manager.acquire(name):  # nested: would deadlock; times out instead
                        pass
                assert loop.time() - started < 2.0  # the manager's 0.05 s, not the pool's own 30 s
        # An explicit pool timeout still wins.
        manager.register_factory("slow", Factory(), max_size=1, timeout=7)
        pool = manager.get_pool("slow")
        assert pool is not None and pool._timeout == 7


async def test_application_errors_inside_the_block_are_not_resource_failures() -> None:
    class Conflict(Exception):  # e.g. HTTPException(409) raised while holding a connection
        pass

    async with ResourceManager() as manager:
        manager.register_factory("db", Factory(), discard_on=(ConnectionError,))
        manager.register_resource("api", object(), failures=(ConnectionError,))
        for name in ("db", "api"):
            with pytest.raises(Conflict):
                async with manager.acquire(name, "save"):
                    raise Conflict
            with pytest.raises(ConnectionError):
                async with manager.acquire(name, "save"):
                    raise ConnectionError("backend gone")
            stats = manager.get_resource_stats(name)
            assert (stats.errors, stats.app_errors) == (1, 1), stats
            assert (stats.by_purpose["save"].errors, stats.by_purpose["save"].app_errors) == (1, 1)
            assert stats.as_dict()["app_errors"] == 1
        whole = manager.stats()
        assert (whole.errors, whole.app_errors) == (2, 2)


async def test_a_backends_error_keeps_its_type_and_names_the_resource() -> None:
    async def refuse() -> Conn:
        raise ConnectionRefusedError("[Errno 111] Connect call failed ('127.0.0.1', 1)")

    async with ResourceManager() as manager:
        manager.register_factory("orders", refuse, max_size=1)
        with pytest.raises(ConnectionRefusedError) as info:
            async with manager.acquire("orders", "load order"):
                pass
    notes = " | ".join(getattr(info.value, "__notes__", []))
    assert "resource 'orders' (purpose 'load order')" in notes and "pool 'orders'" in notes, notes


async def test_bad_failures_argument_is_a_configuration_error() -> None:
    async with ResourceManager() as manager:
        with pytest.raises(ConfigurationError) as info:
            manager.register_resource("api", object(), failures=ConnectionError)  # type: ignore[arg-type]
        assert info.value.name == "failures" and manager.names == ()
