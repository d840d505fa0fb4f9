"""MemoryPool and create_large_object_pool: limits, eviction, hooks, the async face, threads, a model."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sanaa_async_mem.errors import ConfigurationError, PoolError
from sanaa_async_mem.pools.keyed import MemoryPool, create_large_object_pool


class Obj:
    """A distinct, identifiable pooled object."""

    def __init__(self, tag: object = None) -> None:
        self.tag = tag
        self.dirty = False

    def __repr__(self) -> str:
        return f"Obj({self.tag!r})"


def snapshot(pool: MemoryPool[Any, Any]) -> dict[str, Any]:
    return pool.get_stats()


# -- put / get ---------------------------------------------------------------------------------------------


def test_put_then_get_returns_the_same_object_and_counts_a_hit() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    obj = Obj()
    assert pool.put("k", obj) is True
    assert len(pool) == 1
    assert pool.get("k") is obj
    assert len(pool) == 0
    stats = pool.get_stats()
    assert (stats["hits"], stats["misses"], stats["puts"]) == (1, 0, 1)
    assert stats["hit_ratio"] == 1.0


def test_get_on_an_empty_key_returns_none_or_the_default_and_counts_a_miss() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    assert pool.get("nothing") is None
    sentinel = Obj("default")
    assert pool.get("nothing", sentinel) is sentinel
    stats = pool.get_stats()
    assert (stats["hits"], stats["misses"], stats["hit_ratio"]) == (0, 2, 0.0)


def test_get_returns_the_most_recently_put_object_of_its_key_only() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    a1, a2, b1 = Obj("a1"), Obj("a2"), Obj("b1")
    pool.put("a", a1)
    pool.put("b", b1)
    pool.put("a", a2)
    assert pool.get("a") is a2
    assert pool.get("a") is a1
    assert pool.get("a") is None
    assert pool.get("b") is b1


def test_stats_have_stable_keys_and_size_per_key() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10, max_per_key=5, name="buffers")
    pool.put("a", Obj())
    pool.put("a", Obj())
    pool.put("b", Obj())
    pool.get("b")
    stats = pool.get_stats()
    assert set(stats) == {
        "name", "max_size", "max_per_key", "size", "size_per_key", "keys", "hits", "misses", "hit_ratio",
        "creates", "create_failures", "adopted", "puts", "evictions", "trimmed", "reset_failures",
        "dispose_failures",
    }  # fmt: skip
    assert stats["name"] == "buffers"
    assert (stats["max_size"], stats["max_per_key"]) == (10, 5)
    assert stats["size"] == 2
    assert stats["size_per_key"] == {"a": 2}
    assert stats["keys"] == 1


def test_putting_an_object_that_is_already_idle_raises_and_changes_nothing() -> None:
    resets: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(10, reset=resets.append)
    obj = Obj()
    pool.put("a", obj)
    before = snapshot(pool)
    with pytest.raises(PoolError, match="already idle"):
        pool.put("a", obj)
    with pytest.raises(PoolError, match="already idle"):
        pool.put("other-key", obj)
    assert snapshot(pool) == before
    assert resets == [obj]  # the hook did not run for the refused puts
    assert pool.get("a") is obj
    assert pool.get("a") is None


def test_none_and_unhashable_keys_are_refused_with_the_pool_unchanged() -> None:
    resets: list[object] = []
    pool: MemoryPool[Any, Any] = MemoryPool(10, reset=resets.append)
    before = snapshot(pool)
    with pytest.raises(TypeError, match="None"):
        pool.put("k", None)
    with pytest.raises(TypeError, match="unhashable"):
        pool.put(["not", "hashable"], Obj())
    with pytest.raises(TypeError, match="unhashable"):
        pool.get(["not", "hashable"])
    assert resets == []
    after = snapshot(pool)
    after["misses"] = before["misses"]
    assert after == before


# -- limits and eviction -----------------------------------------------------------------------------------


def test_a_full_pool_evicts_and_disposes_its_oldest_idle_object() -> None:
    disposed: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(3, dispose=disposed.append)
    objs = [Obj(i) for i in range(5)]
    pool.put("a", objs[0])
    pool.put("b", objs[1])
    pool.put("a", objs[2])
    pool.put("c", objs[3])  # full: objs[0] (oldest of all, key a) goes
    assert disposed == [objs[0]]
    pool.put("c", objs[4])  # then objs[1] (key b)
    assert disposed == [objs[0], objs[1]]
    assert len(pool) == 3
    stats = pool.get_stats()
    assert stats["evictions"] == 2
    assert stats["size_per_key"] == {"a": 1, "c": 2}
    assert pool.get("a") is objs[2]
    assert pool.get("b") is None


def test_a_full_key_evicts_its_own_oldest_object_not_another_keys() -> None:
    disposed: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(100, max_per_key=2, dispose=disposed.append)
    other = Obj("other")
    pool.put("other", other)
    a = [Obj(i) for i in range(3)]
    for obj in a:
        pool.put("a", obj)
    assert disposed == [a[0]]
    assert pool.get_stats()["size_per_key"] == {"other": 1, "a": 2}
    assert pool.get("other") is other


def test_max_size_defaults_to_the_environment_and_an_explicit_value_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEMORY_POOL_MAX_SIZE", "7")
    assert MemoryPool().max_size == 7
    assert MemoryPool(3).max_size == 3
    monkeypatch.delenv("MEMORY_POOL_MAX_SIZE")
    assert MemoryPool().max_size == 1000


def test_a_malformed_environment_is_an_error_only_when_it_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_POOL_MAX_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="MEMORY_POOL_MAX_SIZE"):
        MemoryPool()
    assert MemoryPool(5).max_size == 5


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_size": 0}, "max_size"),
        ({"max_size": -3}, "max_size"),
        ({"max_size": 2.5}, "max_size"),
        ({"max_size": True}, "max_size"),
        ({"max_size": 10, "max_per_key": 0}, "max_per_key"),
        ({"max_size": 10, "max_per_key": -1}, "max_per_key"),
        ({"max_size": 10, "name": ""}, "name"),
    ],
)
def test_bad_limits_raise_configuration_error_naming_parameter_and_value(
    kwargs: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        MemoryPool(**kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.name == name
    assert info.value.value == kwargs[name]
    assert name in str(info.value)


@pytest.mark.parametrize("hook", ["reset", "dispose"])
def test_non_callable_hooks_raise_configuration_error(hook: str) -> None:
    with pytest.raises(ConfigurationError, match=hook):
        MemoryPool(10, **{hook: "not callable"})


def test_non_callable_factories_raise_configuration_error_and_leave_the_pool_unchanged() -> None:
    with pytest.raises(ConfigurationError, match="factories"):
        MemoryPool(10, factories={"k": 42})
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    obj = Obj()
    pool.put("k", obj)
    before = snapshot(pool)
    with pytest.raises(ConfigurationError, match="factory"):
        pool.set_factory("k", 42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="factory"):
        pool.lease("k", 42)  # type: ignore[arg-type]
    assert snapshot(pool) == before


async def test_aget_with_a_non_callable_factory_takes_nothing_from_the_pool() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    obj = Obj()
    pool.put("k", obj)
    before = snapshot(pool)
    with pytest.raises(ConfigurationError, match="factory"):
        await pool.aget("k", 42)  # type: ignore[arg-type]
    assert snapshot(pool) == before
    assert pool.get("k") is obj


# -- hooks -------------------------------------------------------------------------------------------------


def test_reset_runs_on_every_put_before_the_object_is_pooled() -> None:
    def reset(obj: Obj) -> None:
        obj.dirty = False

    pool: MemoryPool[str, Obj] = MemoryPool(10, reset=reset)
    obj = Obj()
    obj.dirty = True
    pool.put("k", obj)
    got = pool.get("k")
    assert got is obj
    assert not got.dirty


def test_a_failing_reset_drops_and_disposes_the_object_counts_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    disposed: list[Obj] = []

    def reset(obj: Obj) -> None:
        if obj.dirty:
            raise RuntimeError("cannot clean")

    pool: MemoryPool[str, Obj] = MemoryPool(10, reset=reset, dispose=disposed.append)
    bad = Obj("bad")
    bad.dirty = True
    with caplog.at_level(logging.WARNING, logger="sanaa.pool"):
        assert pool.put("k", bad) is False
    assert disposed == [bad]
    assert len(pool) == 0
    assert pool.get("k") is None  # never pooled dirty
    stats = pool.get_stats()
    assert (stats["reset_failures"], stats["puts"]) == (1, 0)
    [record] = [r for r in caplog.records if r.name == "sanaa.pool"]
    assert "reset" in record.getMessage()
    assert record.exc_info is not None


def test_a_failing_dispose_is_counted_and_logged_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    def dispose(obj: Obj) -> None:
        raise OSError("close failed")

    pool: MemoryPool[str, Obj] = MemoryPool(1, dispose=dispose)
    pool.put("k", Obj(1))
    with caplog.at_level(logging.WARNING, logger="sanaa.pool"):
        assert pool.put("k", Obj(2)) is True  # evicts Obj(1), whose dispose fails
    stats = pool.get_stats()
    assert (stats["evictions"], stats["dispose_failures"], stats["size"]) == (1, 1, 1)
    assert any("dispose" in r.getMessage() for r in caplog.records)


def test_hooks_run_outside_the_lock_so_they_may_use_the_pool() -> None:
    # A hook that uses the pool from another thread would deadlock if it ran under the pool's lock.
    pool: MemoryPool[str, Obj] = MemoryPool(1)
    seen: list[int] = []

    def dispose(obj: Obj) -> None:
        t = threading.Thread(target=lambda: seen.append(len(pool)))
        t.start()
        t.join(timeout=10)
        assert not t.is_alive()

    pool._dispose = dispose
    pool.put("k", Obj(1))
    pool.put("k", Obj(2))
    assert seen == [1]


# -- factories ---------------------------------------------------------------------------------------------


def test_a_registered_factory_builds_on_a_miss_and_is_counted() -> None:
    made: list[Obj] = []

    def build() -> Obj:
        made.append(Obj(len(made)))
        return made[-1]

    pool: MemoryPool[str, Obj] = MemoryPool(10, factories={"k": build})
    first = pool.get("k")
    assert first is made[0]
    pool.put("k", first)
    assert pool.get("k") is first
    assert pool.get("other") is None  # no factory for that key
    stats = pool.get_stats()
    assert (stats["hits"], stats["misses"], stats["creates"]) == (1, 2, 1)


def test_a_failing_factory_propagates_and_is_counted() -> None:
    def build() -> Obj:
        raise ConnectionError("down")

    pool: MemoryPool[str, Obj] = MemoryPool(10, factories={"k": build})
    with pytest.raises(ConnectionError):
        pool.get("k")
    assert pool.get_stats()["create_failures"] == 1
    assert len(pool) == 0


def test_sync_get_refuses_an_async_factory_without_leaving_a_coroutine_behind() -> None:
    async def build() -> Obj:
        return Obj()

    pool: MemoryPool[str, Obj] = MemoryPool(10, factories={"k": build})
    with pytest.raises(PoolError, match="aget"):
        pool.get("k")  # a "never awaited" warning here would fail the test (warnings are errors)


def test_a_factory_returning_none_is_a_pool_error() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10, factories={"k": lambda: None})  # type: ignore[dict-item]
    with pytest.raises(PoolError, match="None"):
        pool.get("k")


def test_set_factory_adds_and_removes() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    pool.set_factory("k", Obj)
    assert isinstance(pool.get("k"), Obj)
    pool.set_factory("k", None)
    assert pool.get("k") is None


# -- async face --------------------------------------------------------------------------------------------


@pytest.mark.both_loops
async def test_aget_returns_an_idle_object_without_calling_the_factory() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    obj = Obj()
    pool.put("k", obj)

    async def build() -> Obj:
        raise AssertionError("factory must not run on a hit")

    assert await pool.aget("k", build) is obj


@pytest.mark.both_loops
async def test_aget_awaits_an_async_factory_on_a_miss() -> None:
    async def build() -> Obj:
        await asyncio.sleep(0)
        return Obj("async")

    pool: MemoryPool[str, Obj] = MemoryPool(10)
    obj = await pool.aget("k", build)
    assert obj is not None
    assert obj.tag == "async"
    assert await pool.aget("k") is None
    assert await pool.aget("k", default="d") == "d"
    stats = pool.get_stats()
    assert (stats["creates"], stats["misses"]) == (1, 3)


async def test_aget_accepts_a_sync_factory_and_the_registered_one() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10, factories={"reg": lambda: Obj("reg")})
    a = await pool.aget("k", lambda: Obj("sync"))
    b = await pool.aget("reg")
    assert (a and a.tag, b and b.tag) == ("sync", "reg")


@pytest.mark.both_loops
async def test_cancelled_while_the_factory_runs_the_object_is_pooled_not_lost() -> None:
    release = asyncio.Event()
    built: list[Obj] = []

    async def build() -> Obj:
        await release.wait()
        built.append(Obj("late"))
        return built[-1]

    pool: MemoryPool[str, Obj] = MemoryPool(10)
    caller = asyncio.create_task(pool.aget("k", build))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert len(pool) == 0
    release.set()
    for _ in range(10):  # let the factory finish and its done-callback run
        await asyncio.sleep(0)
        if len(pool):
            break
    assert len(pool) == 1
    assert await pool.aget("k") is built[0]
    stats = pool.get_stats()
    assert (stats["adopted"], stats["creates"]) == (1, 1)
    assert not pool._creating


async def test_a_factory_failing_after_its_caller_was_cancelled_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def build() -> Obj:
        await release.wait()
        raise ConnectionError("refused")

    pool: MemoryPool[str, Obj] = MemoryPool(10)
    caller = asyncio.create_task(pool.aget("k", build))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    with caplog.at_level(logging.WARNING, logger="sanaa.pool"):
        release.set()
        for _ in range(10):
            await asyncio.sleep(0)
    assert pool.get_stats()["create_failures"] == 1
    assert any("cancelled caller" in r.getMessage() for r in caplog.records)
    assert len(pool) == 0


async def test_a_failing_async_factory_propagates_to_the_caller() -> None:
    async def build() -> Obj:
        raise ConnectionError("refused")

    pool: MemoryPool[str, Obj] = MemoryPool(10)
    with pytest.raises(ConnectionError):
        await pool.aget("k", build)
    assert pool.get_stats()["create_failures"] == 1


@pytest.mark.both_loops
async def test_lease_puts_the_object_back_on_exit_even_after_an_error() -> None:
    resets: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(10, reset=resets.append)
    async with pool.lease("k", Obj) as obj:
        assert len(pool) == 0
    assert pool.get("k") is obj
    pool.put("k", obj)
    with pytest.raises(ValueError, match="boom"):
        async with pool.lease("k") as again:
            assert again is obj
            raise ValueError("boom")
    assert len(pool) == 1
    assert resets == [obj, obj, obj]


async def test_lease_without_an_idle_object_or_factory_is_a_pool_error() -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    with pytest.raises(PoolError, match="no factory"):
        async with pool.lease("k"):
            pass
    with pytest.raises(PoolError, match="no factory"), pool.lease("k"):
        pass
    assert len(pool) == 0


def test_sync_lease_from_a_thread() -> None:
    pool = create_large_object_pool("buf", lambda: bytearray(16), 2)
    out: list[bytearray] = []

    def work() -> None:
        with pool.lease("buf") as buf:
            out.append(buf)

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=10)
    assert pool.get("buf") is out[0]


async def test_cancelled_lease_entry_loses_nothing() -> None:
    release = asyncio.Event()

    async def build() -> Obj:
        await release.wait()
        return Obj()

    pool: MemoryPool[str, Obj] = MemoryPool(10)

    async def use() -> None:
        async with pool.lease("k", build):
            raise AssertionError("never entered")

    task = asyncio.create_task(use())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(pool) == 1


# -- trim / clear ------------------------------------------------------------------------------------------


def test_clear_disposes_everything_oldest_first_and_handed_out_objects_may_come_back() -> None:
    disposed: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(10, dispose=disposed.append)
    objs = [Obj(i) for i in range(4)]
    pool.put("a", objs[0])
    pool.put("b", objs[1])
    pool.put("a", objs[2])
    out = objs[3]
    assert pool.clear() == 3
    assert disposed == objs[:3]
    assert len(pool) == 0
    assert pool.get_stats()["size_per_key"] == {}
    assert pool.put("a", out)
    assert pool.get_stats()["trimmed"] == 3


def test_clear_of_given_keys_only() -> None:
    disposed: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(10, dispose=disposed.append)
    a, b, c = Obj("a"), Obj("b"), Obj("c")
    pool.put("a", a)
    pool.put("b", b)
    pool.put("c", c)
    assert pool.clear("a", "c", "missing") == 2
    assert disposed == [a, c]
    assert pool.get_stats()["size_per_key"] == {"b": 1}
    pool.put("a", Obj())  # the global order is still consistent after a partial clear
    assert pool.trim(keep=0) == 2


def test_trim_keep_disposes_the_oldest_beyond_the_count() -> None:
    disposed: list[Obj] = []
    pool: MemoryPool[str, Obj] = MemoryPool(10, dispose=disposed.append)
    objs = [Obj(i) for i in range(5)]
    for i, obj in enumerate(objs):
        pool.put("ab"[i % 2], obj)
    assert pool.trim(keep=2) == 3
    assert disposed == objs[:3]
    assert pool.get("a") is objs[4]
    assert pool.get("b") is objs[3]


def test_trim_older_than_uses_idle_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import sanaa_async_mem.pools.keyed as kp

    now = [1000.0]
    monkeypatch.setattr(kp, "_now", lambda: now[0])
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    old, young = Obj("old"), Obj("young")
    pool.put("k", old)
    now[0] += 30
    pool.put("k", young)
    now[0] += 10
    assert pool.trim(older_than=60) == 0
    assert pool.trim(older_than=20) == 1
    assert pool.get("k") is young


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "older_than"),
        ({"keep": -1}, "keep"),
        ({"older_than": -1.0}, "older_than"),
        ({"keep": 1.5}, "keep"),
    ],
)
def test_bad_trim_arguments_raise_and_change_nothing(kwargs: dict[str, Any], name: str) -> None:
    pool: MemoryPool[str, Obj] = MemoryPool(10)
    pool.put("k", Obj())
    before = snapshot(pool)
    with pytest.raises(ConfigurationError) as info:
        pool.trim(**kwargs)
    assert info.value.name == name
    assert snapshot(pool) == before


def test_emptied_keys_do_not_accumulate_without_bound() -> None:
    pool: MemoryPool[int, Obj] = MemoryPool(4)
    for key in range(1000):
        pool.put(key, Obj())
        pool.get(key)
    assert len(pool._idle) <= 2 * pool.max_size
    assert pool.get_stats()["size_per_key"] == {}


# -- create_large_object_pool ------------------------------------------------------------------------------


def test_create_large_object_pool_as_in_the_spec() -> None:
    created: list[Obj] = []
    closed: list[Obj] = []

    def create_db_connection() -> Obj:
        created.append(Obj(len(created)))
        return created[-1]

    pool = create_large_object_pool("database_connection", create_db_connection, 50, dispose=closed.append)
    conn = pool.get("database_connection")
    assert conn is created[0]
    pool.put("database_connection", conn)
    assert pool.get("database_connection") is conn
    assert pool.name == "database_connection"
    assert pool.max_size == 50
    held = [pool.get("database_connection") for _ in range(60)]
    assert all(c is not None for c in held)
    for c in held:
        pool.put("database_connection", c)
    assert len(pool) == 50
    assert len(closed) == 10


def test_create_large_object_pool_prefill() -> None:
    pool = create_large_object_pool("buf", lambda: bytearray(1024), 4, prefill=3)
    assert len(pool) == 3
    stats = pool.get_stats()
    assert (stats["creates"], stats["puts"]) == (3, 3)
    assert pool.get("buf") is not None
    assert pool.get_stats()["hits"] == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("", bytearray, 5), {}, ConfigurationError, "name"),
        (("x", "bytearray", 5), {}, ConfigurationError, "factory"),
        (("x", bytearray, 0), {}, ConfigurationError, "size"),
        (("x", bytearray, 5), {"prefill": 6}, ConfigurationError, "prefill"),
        (("x", bytearray, 5), {"prefill": -1}, ConfigurationError, "prefill"),
        (("x", bytearray, 5), {"dispose": 1}, ConfigurationError, "dispose"),
    ],
)
def test_create_large_object_pool_bad_input(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        create_large_object_pool(*args, **kwargs)


# -- threads -----------------------------------------------------------------------------------------------


def test_threads_hammering_the_pool_keep_counts_consistent_and_never_share_an_object() -> None:
    n_threads, rounds = 8, 3000
    disposed: list[Obj] = []
    pool: MemoryPool[int, Obj] = MemoryPool(24, max_per_key=5, dispose=disposed.append)
    in_use: set[int] = set()
    in_use_lock = threading.Lock()
    errors: list[str] = []
    made = [0] * n_threads
    barrier = threading.Barrier(n_threads)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(rounds):
            key = (index + i) % 7
            obj = pool.get(key)
            if obj is None:
                obj = Obj()
                made[index] += 1
            with in_use_lock:
                if id(obj) in in_use:
                    errors.append(f"{obj!r} handed out twice")
                in_use.add(id(obj))
            with in_use_lock:
                in_use.discard(id(obj))
            pool.put(key, obj)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # force many thread switches inside the pool's methods
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    stats = pool.get_stats()
    total = n_threads * rounds
    assert stats["hits"] + stats["misses"] == total
    assert stats["misses"] == sum(made)
    assert stats["puts"] == total
    # Every object made is either idle in the pool or was evicted (and disposed) exactly once.
    assert stats["size"] + stats["evictions"] == sum(made)
    assert len(disposed) == stats["evictions"]
    assert len({id(o) for o in disposed}) == len(disposed)
    assert stats["size"] == len(pool) == sum(stats["size_per_key"].values()) <= 24
    assert all(n <= 5 for n in stats["size_per_key"].values())
    assert len(pool._order) == sum(len(dq) for dq in pool._idle.values())


# -- a model -----------------------------------------------------------------------------------------------


KEYS = st.sampled_from(["a", "b", "c", "d"])


class PoolModel(RuleBasedStateMachine):
    """MemoryPool against a plain-list model: per-key LIFO get, globally oldest / per-key oldest eviction."""

    @initialize(max_size=st.integers(1, 6), max_per_key=st.none() | st.integers(1, 4))
    def setup(self, max_size: int, max_per_key: int | None) -> None:
        self.disposed: list[Obj] = []
        self.pool: MemoryPool[str, Obj] = MemoryPool(
            max_size, max_per_key=max_per_key, dispose=self.disposed.append
        )
        self.max_size = max_size
        self.max_per_key = max_per_key
        self.idle: list[tuple[str, Obj]] = []  # oldest first
        self.out: list[tuple[str, Obj]] = []  # handed out, may be put back
        self.evictions = 0
        self.counter = 0

    def _model_put(self, key: str, obj: Obj) -> None:
        same_key = [i for i, (k, _) in enumerate(self.idle) if k == key]
        if self.max_per_key is not None and len(same_key) >= self.max_per_key:
            evicted = self.idle.pop(same_key[0])[1]
            self.evictions += 1
        elif len(self.idle) >= self.max_size:
            evicted = self.idle.pop(0)[1]
            self.evictions += 1
        else:
            evicted = None
        self.idle.append((key, obj))
        if evicted is not None:
            assert self.disposed[-1] is evicted

    @rule(key=KEYS)
    def put_new(self, key: str) -> None:
        self.counter += 1
        obj = Obj(self.counter)
        assert self.pool.put(key, obj) is True
        self._model_put(key, obj)

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def put_back(self, data: st.DataObject) -> None:
        key, obj = self.out.pop(data.draw(st.integers(0, len(self.out) - 1)))
        self.pool.put(key, obj)
        self._model_put(key, obj)

    @precondition(lambda self: self.idle)
    @rule(data=st.data())
    def put_idle_again_is_refused(self, data: st.DataObject) -> None:
        _, obj = self.idle[data.draw(st.integers(0, len(self.idle) - 1))]
        try:
            self.pool.put(data.draw(KEYS), obj)
        except PoolError:
            return
        raise AssertionError("an idle object was accepted twice")

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        got = self.pool.get(key)
        same_key = [i for i, (k, _) in enumerate(self.idle) if k == key]
        if not same_key:
            assert got is None
            return
        expected = self.idle.pop(same_key[-1])[1]
        assert got is expected
        assert all(o is not got for _, o in self.out), "object returned twice from a single put"
        self.out.append((key, got))

    @rule(keep=st.integers(0, 6))
    def trim(self, keep: int) -> None:
        n = max(0, len(self.idle) - keep)
        assert self.pool.trim(keep=keep) == n
        gone, self.idle = self.idle[:n], self.idle[n:]
        if n:
            assert self.disposed[-n:] == [o for _, o in gone]

    @rule(key=KEYS)
    def clear_key(self, key: str) -> None:
        gone = [o for k, o in self.idle if k == key]
        assert self.pool.clear(key) == len(gone)
        self.idle = [(k, o) for k, o in self.idle if k != key]

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "pool"):
            return
        stats = self.pool.get_stats()
        assert stats["size"] == len(self.pool) == len(self.idle) <= self.max_size
        per_key: dict[str, int] = {}
        for k, _ in self.idle:
            per_key[k] = per_key.get(k, 0) + 1
        assert stats["size_per_key"] == per_key
        if self.max_per_key is not None:
            assert all(n <= self.max_per_key for n in per_key.values())
        assert stats["evictions"] == self.evictions


TestPoolModel = PoolModel.TestCase
TestPoolModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_stats_is_a_frozen_view_and_get_stats_its_dict() -> None:
    import dataclasses

    pool: MemoryPool[str, Obj] = MemoryPool(max_size=4, name="bufs")
    pool.put("a", Obj())
    pool.get("a")
    pool.get("b")
    stats = pool.stats()
    assert (stats.name, stats.hits, stats.misses, stats.hit_ratio, stats.puts) == ("bufs", 1, 1, 0.5, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 5  # type: ignore[misc]
    assert stats.as_dict() == pool.get_stats()
    assert set(pool.get_stats()) == {
        *(f.name for f in dataclasses.fields(stats)),
        "hit_ratio",
    }
