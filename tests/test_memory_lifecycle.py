"""Object lifecycles (memory.lifecycle): lifetimes recorded when objects die by refcount or by a collection,
finalizers that never keep the object alive; the GC optimizer's documented methods delegate."""

from __future__ import annotations

import gc

import pytest

from sanaa_async_mem.collector.optimizer import GarbageCollectionOptimizer
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.lifecycle import LifecycleTracker


class Thing:
    pass


class Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_lifetimes_are_recorded_on_refcount_and_collection_deaths() -> None:
    tracker = LifecycleTracker()
    a, b = Thing(), Cyclic()
    ref = tracker.monitor(a, "things")
    tracker.monitor(b, "things")
    assert tracker.stats()["things"].live == 2
    del a
    assert ref() is None
    assert tracker.stats()["things"].collected == 1
    del b
    gc.collect()
    stats = tracker.stats()["things"]
    assert (stats.live, stats.collected, stats.lifetimes.count) == (0, 2, 2)
    assert stats.as_dict()["lifetimes"]["count"] == 2


def test_monitoring_keeps_nothing_alive() -> None:
    tracker = LifecycleTracker()
    obj = Thing()
    ref = tracker.monitor(obj, "x")
    del obj
    assert ref() is None  # no strong reference held by the tracker or its finalizer


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_bad_name_is_a_configuration_error(name: object) -> None:
    with pytest.raises(ConfigurationError, match="name"):
        LifecycleTracker().monitor(Thing(), name)  # type: ignore[arg-type]


def test_the_gc_optimizer_delegates_to_its_tracker() -> None:
    optimizer = GarbageCollectionOptimizer(Settings())
    obj = Thing()
    optimizer.monitor_object_lifecycle(obj, "delegated")
    assert optimizer.lifecycle_stats() == optimizer.lifecycles.stats()
    assert optimizer.lifecycle_stats()["delegated"].live == 1
