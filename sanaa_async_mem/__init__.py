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

__all__ = [
    "ConfigurationError",
    "GCError",
    "MemoryPressureError",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "ResourceError",
    "SanaaError",
    "Settings",
    "__version__",
    "get_settings",
]
