"""Settings from the environment, and the validators every constructor uses for its arguments.

Precedence: an explicit argument beats the environment, which beats the default. A malformed value raises
:class:`~sanaa_async_mem.errors.ConfigurationError` naming the variable (or parameter) and the value.

=============================  ==========  ==============================================
environment variable           default     meaning
=============================  ==========  ==============================================
``MEMORY_POOL_MAX_SIZE``       1000        objects a :class:`MemoryPool` keeps in all
``MEMORY_SNAPSHOT_INTERVAL``   60          seconds between profiler snapshots
``GC_OPTIMIZATION_ENABLED``    true        whether the GC optimizer changes GC settings
``MEMORY_LEAK_THRESHOLD``      1000        bytes/second of sustained growth that is a leak
``MEMORY_HIGH_USAGE_BYTES``    524288000   process memory (RSS) that is "high" (500 MiB)
``GC_COLLECTION_THRESHOLD``    700         allocations that trigger a young collection
=============================  ==========  ==============================================
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


#: The largest count any parameter may take: a C ``Py_ssize_t`` (deque lengths, list sizes).
MAX_COUNT = sys.maxsize
#: The largest value the interpreter's C ``int`` parameters take (``gc.set_threshold``).
MAX_C_INT = 2**31 - 1


def _as_float(name: str, value: object, kind: str) -> float:
    """``value`` as a float, or ConfigurationError (never OverflowError: 10**400 is refused by name)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(name, value, f"must be {kind}")
    try:
        return float(value)
    except OverflowError:
        raise ConfigurationError(name, _short(value), f"must be {kind} (this one is too large)") from None


def _short(value: object) -> object:
    # A 400-digit integer in an error message helps nobody: say how big it is instead.
    if isinstance(value, int) and abs(value) > 10**30:
        return f"<int of {len(str(abs(value)))} digits>"
    return value


def positive_int(name: str, value: object, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` as an int in [``minimum``, ``maximum``], or ConfigurationError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(name, value, f"must be an integer >= {minimum}")
    if value < minimum:
        raise ConfigurationError(name, _short(value), f"must be >= {minimum}")
    if value > maximum:
        raise ConfigurationError(name, _short(value), f"must be <= {maximum}")
    return value


def seconds(name: str, value: object, *, allow_none: bool = False, allow_zero: bool = True) -> float | None:
    """A duration in seconds: finite, not negative (and not zero unless allowed); ``None`` if allowed."""
    if value is None:
        if allow_none:
            return None
        raise ConfigurationError(name, value, "must be a number of seconds, not None")
    v = _as_float(name, value, "a number of seconds")
    if math.isnan(v) or math.isinf(v):
        raise ConfigurationError(name, value, "must be a finite number of seconds")
    if v < 0 or (v == 0 and not allow_zero):
        raise ConfigurationError(name, value, "must be >= 0 seconds" if allow_zero else "must be > 0 seconds")
    return v


def duration(name: str, value: object, *, allow_zero: bool = True) -> float:
    """A required duration in seconds (see :func:`seconds`)."""
    result = seconds(name, value, allow_zero=allow_zero)
    assert result is not None  # seconds() refuses None unless allow_none
    return result


def positive_number(name: str, value: object) -> float:
    """A finite number > 0 (a rate, a size in bytes, a threshold)."""
    v = _as_float(name, value, "a number > 0")
    if not math.isfinite(v) or v <= 0:
        raise ConfigurationError(name, value, "must be a finite number > 0")
    return v


def fraction(name: str, value: object) -> float:
    """A number in [0, 1]."""
    v = _as_float(name, value, "a number between 0 and 1")
    if not 0.0 <= v <= 1.0:
        raise ConfigurationError(name, value, "must be a number between 0 and 1")
    return v


def _parse_int(var: str, raw: str, maximum: int = MAX_COUNT) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(var, raw, "must be an integer >= 1")
    if value > maximum:
        raise ConfigurationError(var, raw, f"must be an integer <= {maximum}")
    return value


def _parse_c_int(var: str, raw: str) -> int:
    return _parse_int(var, raw, MAX_C_INT)


def _parse_float(var: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigurationError(var, raw, "must be a positive number") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(var, raw, "must be a finite number > 0")
    return value


def _parse_bool(var: str, raw: str) -> bool:
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigurationError(var, raw, "must be one of true/false, 1/0, yes/no, on/off")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The library-wide settings. Build with :meth:`from_env`; every field can be overridden there."""

    pool_max_size: int = 1000
    snapshot_interval: float = 60.0
    gc_optimization_enabled: bool = True
    leak_threshold_bytes_per_second: float = 1000.0
    high_memory_bytes: int = 500 * 1024 * 1024
    gc_collection_threshold: int = 700

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read the environment (``os.environ`` by default); keyword arguments override it.

        Raises ConfigurationError for a malformed variable or override, or an unknown override name.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field, (var, parse) in _ENV.items():
            raw = env.get(var)
            if raw is not None and raw.strip() != "":
                values[field] = parse(var, raw)
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigurationError(key, value, f"unknown setting; known: {', '.join(sorted(known))}")
            if value is not None:
                values[key] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check every field (explicit overrides are checked like environment values)."""
        positive_int("pool_max_size", self.pool_max_size)
        seconds("snapshot_interval", self.snapshot_interval, allow_zero=False)
        if not isinstance(self.gc_optimization_enabled, bool):
            raise ConfigurationError(
                "gc_optimization_enabled", self.gc_optimization_enabled, "must be a bool"
            )
        positive_number("leak_threshold_bytes_per_second", self.leak_threshold_bytes_per_second)
        positive_int("high_memory_bytes", self.high_memory_bytes)
        positive_int("gc_collection_threshold", self.gc_collection_threshold, maximum=MAX_C_INT)


_ENV: dict[str, tuple[str, Any]] = {
    "pool_max_size": ("MEMORY_POOL_MAX_SIZE", _parse_int),
    "snapshot_interval": ("MEMORY_SNAPSHOT_INTERVAL", _parse_float),
    "gc_optimization_enabled": ("GC_OPTIMIZATION_ENABLED", _parse_bool),
    "leak_threshold_bytes_per_second": ("MEMORY_LEAK_THRESHOLD", _parse_float),
    "high_memory_bytes": ("MEMORY_HIGH_USAGE_BYTES", _parse_int),
    "gc_collection_threshold": ("GC_COLLECTION_THRESHOLD", _parse_c_int),
}

ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(var for var, _ in _ENV.values())


def get_settings(**overrides: Any) -> Settings:
    """Settings from ``os.environ`` with ``overrides`` applied (read anew on each call)."""
    return Settings.from_env(**overrides)
