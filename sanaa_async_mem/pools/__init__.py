"""Pools: the wait queue, :class:`AsyncPool` on it, keyed object reuse and weak caches.

* :class:`WaitQueue`: the FIFO of waiters with deadlines and direct hand-off that every wait uses;
* :class:`AsyncPool`: expensive objects (connections, sessions) handed out fairly, with awaitable,
  time-limited, cancellation-safe acquire;
* :class:`MemoryPool` / :func:`create_large_object_pool`: keyed reuse of objects that are costly to build;
* :class:`WeakReferenceCache`: a cache that does not keep its values alive.
"""

from __future__ import annotations

from .keyed import MemoryPool, MemoryPoolLease, MemoryPoolStats, create_large_object_pool
from .pool import AsyncPool, Holder, PoolOptions, PoolStats
from .waitqueue import WaitQueue
from .weak_cache import WeakCacheStats, WeakReferenceCache

__all__ = [
    "AsyncPool",
    "Holder",
    "MemoryPool",
    "MemoryPoolLease",
    "MemoryPoolStats",
    "PoolOptions",
    "PoolStats",
    "WaitQueue",
    "WeakCacheStats",
    "WeakReferenceCache",
    "create_large_object_pool",
]
