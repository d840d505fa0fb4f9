"""WeakReferenceCache: entries die with their values, the opt-in to strong entries, callbacks, threads."""

from __future__ import annotations

import gc
import logging
import sys
import threading
from typing import Any

import pytest

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.pools.weak_cache import WeakReferenceCache


class User:
    def __init__(self, name: str = "u") -> None:
        self.name = name


class Cyclic:
    """Only the garbage collector can free it (it references itself)."""

    def __init__(self) -> None:
        self.me = self


class Slotted:
    __slots__ = ("x",)


def drop_while_locked(cache: WeakReferenceCache[Any, Any], values: list[Any]) -> None:
    """Drop the only references to ``values`` in a thread that holds the cache's lock, so their weakref
    callbacks fire while it is held. A daemon thread: a deadlock fails the test instead of hanging it."""

    def scenario() -> None:
        with cache._lock:
            values.clear()

    t = threading.Thread(target=scenario, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "deadlock: the weakref callback blocked on a lock its own thread holds"


def test_put_get_contains_len() -> None:
    cache: WeakReferenceCache[str, User] = WeakReferenceCache()
    user = User()
    cache.put("user_data", user)
    assert cache.get("user_data") is user
    assert "user_data" in cache
    assert "other" not in cache
    assert len(cache) == 1
    assert cache.get("other") is None
    assert cache.get("other", "d") == "d"
    stats = cache.get_stats()
    assert (stats["hits"], stats["misses"], stats["puts"], stats["size"]) == (1, 2, 1, 1)
    assert stats["hit_ratio"] == pytest.approx(1 / 3)


def test_the_cache_does_not_keep_its_value_alive() -> None:
    cache: WeakReferenceCache[str, User] = WeakReferenceCache()
    user = User()
    cache.put("k", user)
    del user
    gc.collect()
    assert len(cache) == 0
    assert "k" not in cache
    assert cache.get("k") is None
    stats = cache.get_stats()
    assert (stats["expired"], stats["misses"], stats["size"]) == (1, 1, 0)


def test_cyclic_values_die_after_gc_collect_and_the_callback_runs_once() -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, Cyclic] = WeakReferenceCache(expired.append)
    value = Cyclic()
    cache.put("cycle", value)
    del value
    assert len(cache) == 1  # a cycle outlives its last name until the collector runs
    gc.collect()
    assert len(cache) == 0
    assert expired == ["cycle"]
    gc.collect()
    assert expired == ["cycle"]


def test_replaced_popped_and_cleared_entries_do_not_fire_the_callback() -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    a, b, c = User("a"), User("b"), User("c")
    cache.put("k", a)
    cache.put("k", b)  # a's entry is replaced
    cache.put("p", c)
    assert cache.pop("p") is c
    assert cache.pop("p", "gone") == "gone"
    del a, c
    gc.collect()
    assert expired == []
    assert cache.get("k") is b
    assert cache.clear() == 1
    del b
    gc.collect()
    assert expired == []
    assert cache.get_stats()["expired"] == 0


def test_a_new_value_under_the_same_key_survives_the_old_ones_death() -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    old, new = User("old"), User("new")
    cache.put("k", old)
    cache.put("k", new)
    del old
    gc.collect()
    assert cache.get("k") is new
    assert expired == []


@pytest.mark.parametrize("value", [1, "text", b"bytes", (1, 2), [1], {"a": 1}, 1.5, Slotted()])
def test_values_that_cannot_be_weakly_referenced_get_a_clear_type_error(value: object) -> None:
    cache: WeakReferenceCache[str, Any] = WeakReferenceCache()
    with pytest.raises(TypeError) as info:
        cache.put("k", value)
    message = str(info.value)
    assert repr(type(value).__name__) in message
    assert "strong=True" in message
    assert "strong_fallback=True" in message
    assert len(cache) == 0
    assert cache.get_stats()["puts"] == 0


@pytest.mark.parametrize("value", [1, 0, "text", "", [1], [], {"a": 1}, (1,)])
def test_strong_opt_in_holds_unreferenceable_values(value: object) -> None:
    cache: WeakReferenceCache[str, Any] = WeakReferenceCache()
    cache.put("k", value, strong=True)
    gc.collect()
    assert cache.get("k", "missing") == value
    assert len(cache) == 1
    stats = cache.get_stats()
    assert (stats["strong"], stats["hits"]) == (1, 1)


def test_strong_entries_keep_their_value_alive_until_popped() -> None:
    cache: WeakReferenceCache[str, User] = WeakReferenceCache()
    user = User()
    cache.put("k", user, strong=True)
    del user
    gc.collect()
    survivor = cache.get("k")
    assert survivor is not None
    assert cache.pop("k") is survivor


def test_strong_fallback_holds_what_cannot_be_weak_and_still_weakly_holds_the_rest() -> None:
    cache: WeakReferenceCache[str, Any] = WeakReferenceCache(strong_fallback=True)
    cache.put("n", 12345)
    user = User()
    cache.put("u", user)
    del user
    gc.collect()
    assert cache.get("n") == 12345
    assert "u" not in cache
    assert cache.get_stats()["strong"] == 1


def test_none_and_unhashable_keys_are_refused() -> None:
    cache: WeakReferenceCache[Any, Any] = WeakReferenceCache()
    with pytest.raises(TypeError, match="None"):
        cache.put("k", None)
    with pytest.raises(TypeError, match="None"):
        cache.put("k", None, strong=True)
    with pytest.raises(TypeError, match="unhashable"):
        cache.put(["k"], User())
    assert len(cache) == 0


def test_bad_constructor_arguments() -> None:
    with pytest.raises(TypeError, match="on_expire"):
        WeakReferenceCache(on_expire="print")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as info:
        WeakReferenceCache(strong_fallback="yes")  # type: ignore[arg-type]
    assert info.value.name == "strong_fallback"
    with pytest.raises(ConfigurationError, match="name"):
        WeakReferenceCache(name="")


def test_pop_of_a_dead_entry_counts_it_expired_and_runs_the_callback_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    values = [User()]
    cache.put("k", values[0])
    # A value whose death the weakref callback has not reported yet: with the lock held the callback can
    # only queue it; pop before anything drains the queue.
    drop_while_locked(cache, values)
    assert len(cache._pending) == 1
    monkeypatch.setattr(cache, "_reap_pending", lambda: None)
    assert cache.pop("k", "dead") == "dead"
    monkeypatch.undo()
    cache._reap_pending()  # the queued callback must not count or notify the entry a second time
    assert expired == ["k"]
    assert cache.get_stats()["expired"] == 1


def test_a_raising_callback_is_logged_and_never_reaches_the_collector(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # pytest turns unraisable exceptions (what CPython reports for a raising weakref callback) into errors,
    # so this test fails if the exception escapes.
    def on_expire(key: str) -> None:
        raise RuntimeError(f"callback for {key} failed")

    cache: WeakReferenceCache[str, Cyclic] = WeakReferenceCache(on_expire)
    cache.put("a", Cyclic())
    cache.put("b", Cyclic())
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        gc.collect()
        assert len(cache) == 0
    stats = cache.get_stats()
    assert (stats["callback_errors"], stats["expired"]) == (2, 2)
    records = [r for r in caplog.records if r.name == "sanaa.memory"]
    assert len(records) == 2
    assert all(r.exc_info is not None for r in records)


def test_a_value_dying_while_this_thread_holds_the_lock_does_not_deadlock() -> None:
    # The weakref callback runs synchronously inside `del`, while the lock is held by this very thread.
    # Run in a daemon thread so that a deadlock fails the test instead of hanging it.
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    seen_under_lock: list[list[str]] = []

    def scenario() -> None:
        user = User()
        cache.put("k", user)
        with cache._lock:
            del user  # a blocking acquire in the callback would hang here
            seen_under_lock.append(list(expired))

    t = threading.Thread(target=scenario, daemon=True)
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "deadlock: the weakref callback blocked on a lock its own thread holds"
    assert seen_under_lock == [[]]  # the callback never runs user code under the lock
    assert len(cache) == 0  # the next operation removes the queued entry
    assert expired == ["k"]


def test_a_late_death_report_does_not_remove_the_keys_new_value(monkeypatch: pytest.MonkeyPatch) -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    values, new = [User("old")], User("new")
    cache.put("k", values[0])
    drop_while_locked(cache, values)  # the old value's death is queued, not yet processed
    monkeypatch.setattr(cache, "_reap_pending", lambda: None)
    cache.put("k", new)  # the key gets a new value before the queue is drained
    monkeypatch.undo()
    cache._reap_pending()
    assert cache.get("k") is new
    assert expired == []
    assert cache.get_stats()["expired"] == 0


def test_a_value_dying_in_another_thread_while_the_lock_is_held_is_removed_later() -> None:
    expired: list[str] = []
    cache: WeakReferenceCache[str, User] = WeakReferenceCache(expired.append)
    holder: list[User] = [User()]
    cache.put("k", holder[0])
    with cache._lock:
        t = threading.Thread(target=holder.clear)  # the value dies in the other thread
        t.start()
        t.join(timeout=10)
        assert not t.is_alive()
    assert cache.get("k") is None
    assert len(cache) == 0
    assert expired == ["k"]


def test_the_callback_may_use_the_cache() -> None:
    cache: WeakReferenceCache[str, Any] = WeakReferenceCache()
    seen: list[tuple[str, int]] = []

    def on_expire(key: str) -> None:
        seen.append((key, len(cache)))
        cache.put(f"{key}-tombstone", key, strong=True)

    cache._on_expire = on_expire
    user = User()
    cache.put("k", user)
    del user
    gc.collect()
    assert seen == [("k", 0)]
    assert cache.get("k-tombstone") == "k"


def test_the_cache_itself_can_be_collected_and_its_values_dying_later_is_harmless() -> None:
    import weakref

    cache: WeakReferenceCache[str, User] = WeakReferenceCache()
    user = User()
    cache.put("k", user)
    cache_ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert cache_ref() is None
    del user
    gc.collect()


def test_threads_putting_getting_and_dropping_values_keep_counts_consistent() -> None:
    n_threads, rounds = 6, 2000
    expired: list[str] = []
    expired_lock = threading.Lock()

    def on_expire(key: str) -> None:
        with expired_lock:
            expired.append(key)

    cache: WeakReferenceCache[str, Any] = WeakReferenceCache(on_expire)
    keep: list[User] = []  # values kept alive for the whole test
    barrier = threading.Barrier(n_threads)
    gets = [0] * n_threads

    def work(index: int) -> None:
        barrier.wait()
        for i in range(rounds):
            key = f"{index}-{i % 50}"
            if i % 3 == 0:
                cache.put(key, User())  # dies at once: nothing else holds it
            elif i % 3 == 1:
                user = User()
                keep.append(user)
                cache.put(key, user)
            else:
                cache.get(key)
                gets[index] += 1
            if i % 500 == 0:
                gc.collect()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(old)
    assert not any(t.is_alive() for t in threads)
    gc.collect()
    stats = cache.get_stats()
    assert stats["hits"] + stats["misses"] == sum(gets)
    assert stats["puts"] == n_threads * rounds - sum(gets)
    assert stats["expired"] == len(expired)
    assert len(cache) == stats["size"]
    assert not cache._pending
    # Every remaining entry is alive, and every live value is still reachable through its key.
    for key in list(cache._data):
        assert cache._data[key]() is not None
    assert len(cache) == sum(1 for key in list(cache._data) if key in cache)


def test_stats_is_a_frozen_view_and_get_stats_its_dict() -> None:
    import dataclasses

    class Value:
        pass

    cache: WeakReferenceCache[str, Value] = WeakReferenceCache(name="users")
    kept = Value()
    cache.put("a", kept)
    cache.get("a")
    cache.get("b")
    stats = cache.stats()
    assert (stats.name, stats.size, stats.hits, stats.misses, stats.hit_ratio) == ("users", 1, 1, 1, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.size = 0  # type: ignore[misc]
    assert stats.as_dict() == cache.get_stats()
