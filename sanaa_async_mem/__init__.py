"""sanaa_async_mem: asyncio-native pools, resource management and memory health for long-running services.

The names here are the ones a service imports; everything else lives in its subpackage
(:mod:`.pools`, :mod:`.resources`, :mod:`.memory`, :mod:`.collector`, :mod:`.integrations`).
"""

from __future__ import annotations

from ._version import __version__
from .collector import GarbageCollectionOptimizer, GCScheduler
from .config import Settings
from .errors import (
    ConfigurationError,
    GCError,
    PoolClosed,
    PoolError,
    PoolExhausted,
    PoolTimeout,
    ResourceCleanupError,
    ResourceError,
    SanaaError,
)
from .loop_monitor import LoopLagMonitor
from .memory import MemoryProfiler, TrendAnalyzer, monitor_function_memory
from .optimizer import MemoryOptimizer, memory_efficient_context
from .pools import AsyncPool, MemoryPool, WeakReferenceCache, create_large_object_pool
from .resources import ResourceManager

__all__ = [
    "AsyncPool",
    "ConfigurationError",
    "GCError",
    "GCScheduler",
    "GarbageCollectionOptimizer",
    "LoopLagMonitor",
    "MemoryOptimizer",
    "MemoryPool",
    "MemoryProfiler",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "ResourceCleanupError",
    "ResourceError",
    "ResourceManager",
    "SanaaError",
    "Settings",
    "TrendAnalyzer",
    "WeakReferenceCache",
    "__version__",
    "create_large_object_pool",
    "memory_efficient_context",
    "monitor_function_memory",
]
