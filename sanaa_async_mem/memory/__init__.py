"""Memory health: snapshot records and their JSON Lines store, the trend analyzer, the profiler's
sampling loop, and the per-function decorator.

Imports go one way: :mod:`.trend` is pure (no I/O, no asyncio, no snapshots) so it can judge any
series; :mod:`.profiler` composes snapshots, history, tracing and the analyzer.
"""

from __future__ import annotations

from .monitor import (
    CallMemory,
    FunctionMemoryStats,
    get_function_memory_stats,
    monitor_function_memory,
    reset_function_memory_stats,
)
from .profiler import MemoryAlert, MemoryProfiler
from .snapshots import MemorySnapshot, SnapshotStore, TopConsumer, load_snapshots, read_snapshots
from .trend import TrendAnalyzer, TrendVerdict, analyze_trend, time_to_limit

__all__ = [
    "CallMemory",
    "FunctionMemoryStats",
    "MemoryAlert",
    "MemoryProfiler",
    "MemorySnapshot",
    "SnapshotStore",
    "TopConsumer",
    "TrendAnalyzer",
    "TrendVerdict",
    "analyze_trend",
    "get_function_memory_stats",
    "load_snapshots",
    "monitor_function_memory",
    "read_snapshots",
    "reset_function_memory_stats",
    "time_to_limit",
]
