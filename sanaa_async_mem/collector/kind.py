"""Which cyclic collector the running interpreter has: what the GC policy may do depends on it."""

from __future__ import annotations

import dataclasses
import gc
import sys
from typing import Literal

CollectorKind = Literal["generational", "incremental", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True)
class CollectorInfo:
    """What the running interpreter's cyclic collector does.

    ``kind`` is ``"generational"`` (CPython 3.11-3.13, and 3.14.5+ where the generational collector is
    back), ``"incremental"`` (CPython 3.14.0-3.14.4: a young generation and an old one scanned a slice at a
    time, so there is no separate full collection to move), or ``"unknown"`` (PyPy, free-threaded builds,
    anything we have not measured). Only ``"generational"`` lets the library take full collections away
    from request time; the others get the documented passive behaviour.
    """

    kind: CollectorKind
    generations: int
    default_young_threshold: int
    reason: str


def detect_collector() -> CollectorInfo:
    """Inspect the running interpreter (cheap: no collection is run)."""
    generations = len(gc.get_stats())
    v = sys.version_info
    young_default = 2000 if v >= (3, 13) else 700
    if sys.implementation.name != "cpython":
        return CollectorInfo(
            "unknown", generations, young_default, f"{sys.implementation.name} is not CPython"
        )
    if getattr(sys, "_is_gil_enabled", lambda: True)() is False:
        return CollectorInfo(
            "unknown", generations, young_default, "free-threaded build: every collection is full"
        )
    if (3, 14, 0) <= v[:3] <= (3, 14, 4):
        return CollectorInfo(
            "incremental",
            2,
            young_default,
            f"CPython {v[0]}.{v[1]}.{v[2]} collects the old generation incrementally",
        )
    return CollectorInfo("generational", generations, young_default, f"CPython {v[0]}.{v[1]}.{v[2]}")


__all__ = ["CollectorInfo", "CollectorKind", "detect_collector"]
