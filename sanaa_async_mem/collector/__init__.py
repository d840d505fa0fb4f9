"""The interpreter's cyclic garbage collector: the one owner of its settings (leases), the policy for a
service, GC-free sections, pause recording, and the scheduler that moves full collections to idle moments
of the event loop."""

from __future__ import annotations

from ..memory.cleanup import CleanupReport
from ..memory.lifecycle import LifecycleStats
from .kind import CollectorInfo, detect_collector
from .optimizer import (
    CollectionResult,
    GarbageCollectionOptimizer,
    GCDisabledSection,
    GCSettings,
    GCSettingsChange,
    GCStats,
    gc_disabled_sections,
)
from .pauses import GCPauseRecorder
from .scheduler import GCScheduler, SchedulerStats
from .state import GCLease, GCState, GCStateStats, gc_state

__all__ = [
    "CleanupReport",
    "CollectionResult",
    "CollectorInfo",
    "GCDisabledSection",
    "GCLease",
    "GCPauseRecorder",
    "GCScheduler",
    "GCSettings",
    "GCSettingsChange",
    "GCState",
    "GCStateStats",
    "GCStats",
    "GarbageCollectionOptimizer",
    "LifecycleStats",
    "SchedulerStats",
    "detect_collector",
    "gc_disabled_sections",
    "gc_state",
]
