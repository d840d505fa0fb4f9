"""Object lifecycle tracking: how long monitored objects live, by name, through weak references.

Not GC tuning: a finalizer records each monitored object's lifetime when it is freed, whether by its
reference count or by a collection. The :class:`~sanaa_async_mem.collector.GarbageCollectionOptimizer`
offers it as ``monitor_object_lifecycle``/``lifecycle_stats``.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections import deque
from typing import TypeVar

from .._stats import Histogram, HistogramSnapshot
from ..errors import ConfigurationError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleStats:
    """Monitored objects of one name: how many are alive, how many were collected, their lifetimes (s)."""

    name: str
    live: int
    collected: int
    lifetimes: HistogramSnapshot

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "live": self.live,
            "collected": self.collected,
            "lifetimes": self.lifetimes.as_dict(),
        }


class _Lifecycle:
    __slots__ = ("collected", "lifetimes", "monitored")

    def __init__(self) -> None:
        self.monitored = 0
        self.collected = 0
        self.lifetimes = Histogram()


class LifecycleTracker:
    """Lifetimes of monitored objects, by name.

    Finalizers run inside collections, on any thread, possibly while this object's own code is on the
    stack: they only append to a deque (atomic, lock-free) and :meth:`stats` folds it in when read.
    """

    __slots__ = ("_deaths", "_lifecycles")

    def __init__(self) -> None:
        self._lifecycles: dict[str, _Lifecycle] = {}
        self._deaths: deque[tuple[str, float]] = deque()

    def monitor(self, obj: T, name: str) -> weakref.ref[T]:
        """Track ``obj`` under ``name`` until it is freed; returns a weak reference to it.

        Raises ConfigurationError for an empty or non-string ``name``, TypeError if ``obj`` cannot be
        weakly referenced (ints, strs, tuples, lists, dicts, classes with ``__slots__`` lacking
        ``__weakref__``): wrap it in a small class instead.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "must be a non-empty string")
        try:
            ref = weakref.ref(obj)
        except TypeError:
            raise TypeError(
                f"monitor_object_lifecycle({name!r}): objects of type {type(obj).__name__!r} cannot be "
                "weakly referenced; wrap it in a class (or add '__weakref__' to its __slots__)"
            ) from None
        record = self._lifecycles.get(name)
        if record is None:
            record = self._lifecycles.setdefault(name, _Lifecycle())
        record.monitored += 1
        # The finalizer must not reference obj: its arguments are only the deque, the name, the start time.
        weakref.finalize(obj, _record_death, self._deaths, name, time.monotonic())
        return ref

    def stats(self) -> dict[str, LifecycleStats]:
        """Per name: monitored objects still alive, collected, and the lifetimes of the collected ones."""
        deaths = self._deaths
        while deaths:
            name, lifetime = deaths.popleft()
            record = self._lifecycles.get(name)
            if record is not None:
                record.collected += 1
                record.lifetimes.record(lifetime)
        return {
            name: LifecycleStats(name, r.monitored - r.collected, r.collected, r.lifetimes.snapshot())
            for name, r in self._lifecycles.items()
        }


def _record_death(deaths: deque[tuple[str, float]], name: str, born: float) -> None:
    deaths.append((name, time.monotonic() - born))


__all__ = ["LifecycleStats", "LifecycleTracker"]
