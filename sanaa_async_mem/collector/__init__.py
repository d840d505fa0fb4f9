"""The interpreter's cyclic garbage collector: its settings, GC-free sections, pause recording, and the
scheduler that moves full collections to idle moments of the event loop."""

from __future__ import annotations

from .optimizer import (
    CleanupReport,
    CollectionResult,
    CollectorInfo,
    GarbageCollectionOptimizer,
    GCDisabledSection,
    GCPauseRecorder,
    GCSettings,
    GCSettingsChange,
    LifecycleStats,
    detect_collector,
    gc_disabled_sections,
)
from .scheduler import GCScheduler, SchedulerStats

__all__ = [
    "CleanupReport",
    "CollectionResult",
    "CollectorInfo",
    "GCDisabledSection",
    "GCPauseRecorder",
    "GCScheduler",
    "GCSettings",
    "GCSettingsChange",
    "GarbageCollectionOptimizer",
    "LifecycleStats",
    "SchedulerStats",
    "detect_collector",
    "gc_disabled_sections",
]
