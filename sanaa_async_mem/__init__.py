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
    ResourceCleanupError,
    ResourceError,
    SanaaError,
)
from .gc_optimizer import (
    CleanupReport,
    CollectionResult,
    GarbageCollectionOptimizer,
    GCPauseRecorder,
    GCSettings,
    GCSettingsChange,
    detect_collector,
)
from .gc_scheduler import GCScheduler, SchedulerStats
from .keyed_pool import MemoryPool, create_large_object_pool
from .loop_lag import LoopLagMonitor
from .monitor import get_function_memory_stats, monitor_function_memory, reset_function_memory_stats
from .optimizer import Alert, MemoryDelta, MemoryOptimizer, memory_efficient_context
from .pool import AsyncPool, PoolStats
from .profiler import MemoryAlert, MemoryProfiler
from .resources import ResourceManager, ResourceManagerStats, ResourceStats
from .snapshots import MemorySnapshot, SnapshotStore, load_snapshots, read_snapshots
from .trend import TrendAnalyzer, TrendVerdict, analyze_trend, time_to_limit
from .weak_cache import WeakReferenceCache

__all__ = [
    "Alert",
    "AsyncPool",
    "CleanupReport",
    "CollectionResult",
    "ConfigurationError",
    "GCError",
    "GCPauseRecorder",
    "GCScheduler",
    "GCSettings",
    "GCSettingsChange",
    "GarbageCollectionOptimizer",
    "LoopLagMonitor",
    "MemoryAlert",
    "MemoryDelta",
    "MemoryOptimizer",
    "MemoryPool",
    "MemoryPressureError",
    "MemoryProfiler",
    "MemorySnapshot",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolStats",
    "PoolTimeout",
    "ResourceCleanupError",
    "ResourceError",
    "ResourceManager",
    "ResourceManagerStats",
    "ResourceStats",
    "SanaaError",
    "SchedulerStats",
    "Settings",
    "SnapshotStore",
    "TrendAnalyzer",
    "TrendVerdict",
    "WeakReferenceCache",
    "__version__",
    "analyze_trend",
    "create_large_object_pool",
    "detect_collector",
    "get_function_memory_stats",
    "get_settings",
    "load_snapshots",
    "memory_efficient_context",
    "monitor_function_memory",
    "read_snapshots",
    "reset_function_memory_stats",
    "time_to_limit",
]
