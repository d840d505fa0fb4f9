"""sanaa_async_mem: asyncio-native pools, resource management and memory health for long-running services."""

from __future__ import annotations

from ._version import __version__
from .config import Settings, get_settings
from .errors import (
    ConfigurationError,
    GCError,
    MemoryPressureError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    ResourceError,
    SanaaError,
)
from .keyed_pool import MemoryPool, create_large_object_pool
from .pool import AsyncPool, PoolStats
from .weak_cache import WeakReferenceCache

__all__ = [
    "AsyncPool",
    "ConfigurationError",
    "GCError",
    "MemoryPool",
    "MemoryPressureError",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolStats",
    "PoolTimeout",
    "ResourceError",
    "SanaaError",
    "Settings",
    "WeakReferenceCache",
    "__version__",
    "create_large_object_pool",
    "get_settings",
]
