"""Resources: :class:`ResourceManager` (``async with manager.acquire(name, purpose)``) and, in
:mod:`sanaa_async_mem.resources.adapters`, ready-made pools for real backends."""

from __future__ import annotations

from .manager import PurposeStats, ResourceManager, ResourceManagerStats, ResourceStats, ThreadLease

__all__ = ["PurposeStats", "ResourceManager", "ResourceManagerStats", "ResourceStats", "ThreadLease"]
