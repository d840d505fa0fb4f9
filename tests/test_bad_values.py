"""Every numeric parameter of every public constructor refuses values it cannot use, by name, at once.

The constructors are introspected, so a parameter added later is covered without editing this file: for each
keyword parameter whose default is a number, a huge integer (10**400, which ``float()`` cannot convert), NaN,
infinity, a negative number and a string must raise ConfigurationError naming that parameter, never a bare
OverflowError/TypeError, and never later.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from typing import Any

import pytest

from sanaa_async_mem import (
    AsyncPool,
    ConfigurationError,
    GarbageCollectionOptimizer,
    GCScheduler,
    LoopLagMonitor,
    MemoryOptimizer,
    MemoryPool,
    MemoryProfiler,
    ResourceManager,
    Settings,
    TrendAnalyzer,
    WeakReferenceCache,
)


def _factory() -> object:
    return object()


# What each constructor needs besides the parameter under test.
_REQUIRED: dict[type, Callable[..., Any]] = {
    AsyncPool: lambda **kw: AsyncPool(_factory, **kw),
}
_CLASSES = [
    AsyncPool,
    ResourceManager,
    MemoryProfiler,
    GCScheduler,
    TrendAnalyzer,
    LoopLagMonitor,
    MemoryOptimizer,
    GarbageCollectionOptimizer,
    MemoryPool,
    WeakReferenceCache,
]
# Numeric parameters whose meaning admits every number (none today); listed here with the reason if added.
_FREE: set[tuple[str, str]] = set()


def _numeric_parameters() -> list[tuple[type, str, object]]:
    out: list[tuple[type, str, object]] = []
    for cls in _CLASSES:
        for name, param in inspect.signature(cls).parameters.items():
            default = param.default
            if param.kind not in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD):
                continue
            annotation = str(param.annotation)
            optional_number = default is None and re.fullmatch(r"(int|float)( \| None)?", annotation)
            if not optional_number and (isinstance(default, bool) or not isinstance(default, int | float)):
                continue
            if (cls.__name__, name) not in _FREE:
                out.append((cls, name, default))
    return out


PARAMETERS = _numeric_parameters()
BAD = [10**400, -(10**400), math.nan, math.inf, -1, "1"]


def test_the_introspection_finds_the_parameters() -> None:
    # A guard: if the signatures changed shape, the test below would silently test nothing.
    names = {(cls.__name__, name) for cls, name, _ in PARAMETERS}
    assert ("AsyncPool", "timeout") in names
    assert ("MemoryProfiler", "history") in names
    assert ("TrendAnalyzer", "threshold") in names
    assert len(PARAMETERS) >= 37


@pytest.mark.parametrize(("cls", "name", "default"), PARAMETERS, ids=lambda v: getattr(v, "__name__", str(v)))
@pytest.mark.parametrize("bad", BAD, ids=["huge", "-huge", "nan", "inf", "negative", "string"])
def test_a_bad_number_is_a_configuration_error_naming_the_parameter(
    cls: type, name: str, default: object, bad: object
) -> None:
    make = _REQUIRED.get(cls, cls)
    try:
        obj = make(**{name: bad})
    except ConfigurationError as exc:
        assert exc.name.split("[")[0] in (name, f"{name}_bytes_per_second") or name in str(exc), exc
        return
    # Accepted: only meaningful values may be. A negative value is accepted only where the parameter is
    # documented to take one; anything non-finite or a string never is.
    pytest.fail(f"{cls.__name__}({name}={bad!r}) was accepted: {obj!r}")


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("GC_COLLECTION_THRESHOLD", "2147483648"),
        ("MEMORY_HIGH_USAGE_BYTES", "1e400"),
        ("MEMORY_HIGH_USAGE_BYTES", "9" * 30),
        ("MEMORY_SNAPSHOT_INTERVAL", "1e400"),
        ("MEMORY_LEAK_THRESHOLD", "nan"),
        ("MEMORY_POOL_MAX_SIZE", "abc"),
        ("MEMORY_POOL_MAX_SIZE", "9" * 5000),
        ("GC_OPTIMIZATION_ENABLED", "maybe"),
    ],
)
def test_bad_environment_values_name_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({var: raw})
    assert info.value.name == var


def test_trace_frames_beyond_what_tracemalloc_takes_is_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="trace_frames"):
        MemoryProfiler(trace_frames=65536)
    MemoryProfiler(trace_frames=65535)


def test_lag_resolution_zero_is_refused_not_changed() -> None:
    with pytest.raises(ConfigurationError, match="lag_resolution"):
        MemoryOptimizer(lag_resolution=0)


def test_add_pool_refuses_what_is_not_a_pool_by_name() -> None:
    optimizer = MemoryOptimizer()
    with pytest.raises(ConfigurationError) as info:
        optimizer.add_pool(object())  # type: ignore[arg-type]
    assert info.value.name == "pool"
    assert optimizer.pools == []


def test_a_non_callable_alert_callback_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="alert_callback"):
        MemoryOptimizer(alert_callback=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="callback"):
        MemoryProfiler().add_alert_callback("not callable")  # type: ignore[arg-type]
