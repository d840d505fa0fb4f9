"""Errors, settings from the environment, logging conventions and the shared histogram."""

from __future__ import annotations

import itertools
import logging
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sanaa_async_mem import errors
from sanaa_async_mem._logging import get_logger
from sanaa_async_mem._stats import Histogram
from sanaa_async_mem.config import Settings, get_settings, positive_int, seconds


def test_errors_join_the_builtin_families() -> None:
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.PoolTimeout, TimeoutError)
    for cls in (
        errors.PoolError,
        errors.PoolTimeout,
        errors.PoolClosed,
        errors.PoolExhausted,
        errors.ResourceError,
        errors.GCError,
        errors.ConfigurationError,
    ):
        assert issubclass(cls, errors.SanaaError)
    for cls in (errors.PoolTimeout, errors.PoolClosed, errors.PoolExhausted):
        assert issubclass(cls, errors.PoolError)


def test_configuration_error_names_parameter_and_value() -> None:
    err = errors.ConfigurationError("max_size", 0, "must be >= 1")
    assert err.name == "max_size" and err.value == 0
    assert "max_size=0" in str(err)


def test_defaults_match_the_spec() -> None:
    s = Settings.from_env({})
    assert s.pool_max_size == 1000
    assert s.snapshot_interval == 60.0
    assert s.gc_optimization_enabled is True
    assert s.leak_threshold_bytes_per_second == 1000.0
    assert s.high_memory_bytes == 500 * 1024 * 1024
    assert s.gc_collection_threshold == 700


def test_environment_is_read() -> None:
    s = Settings.from_env(
        {
            "MEMORY_POOL_MAX_SIZE": "50",
            "MEMORY_SNAPSHOT_INTERVAL": "2.5",
            "GC_OPTIMIZATION_ENABLED": "off",
            "MEMORY_LEAK_THRESHOLD": "250",
            "MEMORY_HIGH_USAGE_BYTES": "1048576",
            "GC_COLLECTION_THRESHOLD": "2000",
        }
    )
    assert (s.pool_max_size, s.snapshot_interval, s.gc_optimization_enabled) == (50, 2.5, False)
    assert (s.leak_threshold_bytes_per_second, s.high_memory_bytes, s.gc_collection_threshold) == (
        250.0,
        1048576,
        2000,
    )


def test_explicit_arguments_override_the_environment() -> None:
    s = Settings.from_env({"MEMORY_POOL_MAX_SIZE": "50"}, pool_max_size=7)
    assert s.pool_max_size == 7


def test_get_settings_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_SNAPSHOT_INTERVAL", "5")
    assert get_settings().snapshot_interval == 5.0


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("MEMORY_POOL_MAX_SIZE", "abc"),
        ("MEMORY_POOL_MAX_SIZE", "-3"),
        ("MEMORY_POOL_MAX_SIZE", "0"),
        ("MEMORY_POOL_MAX_SIZE", "1.5"),
        ("GC_OPTIMIZATION_ENABLED", "maybe"),
        ("MEMORY_SNAPSHOT_INTERVAL", "soon"),
        ("MEMORY_SNAPSHOT_INTERVAL", "-1"),
        ("MEMORY_SNAPSHOT_INTERVAL", "nan"),
        ("MEMORY_LEAK_THRESHOLD", "inf"),
        ("GC_COLLECTION_THRESHOLD", "x"),
    ],
)
def test_malformed_environment_names_variable_and_value(var: str, raw: str) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        Settings.from_env({var: raw})
    assert info.value.name == var
    assert info.value.value == raw
    assert var in str(info.value) and repr(raw) in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("pool_max_size", 0), ("pool_max_size", "10"), ("snapshot_interval", -1.0), ("no_such_setting", 1)],
)
def test_bad_override_is_a_configuration_error(field: str, value: object) -> None:
    with pytest.raises(errors.ConfigurationError) as info:
        Settings.from_env({}, **{field: value})
    assert info.value.name == field


def test_validators() -> None:
    assert positive_int("n", 3) == 3
    with pytest.raises(errors.ConfigurationError, match="n=True"):
        positive_int("n", True)
    assert seconds("t", None, allow_none=True) is None
    with pytest.raises(errors.ConfigurationError, match="t=nan"):
        seconds("t", math.nan)
    with pytest.raises(errors.ConfigurationError, match="t=0"):
        seconds("t", 0, allow_zero=False)


def test_loggers_live_under_sanaa_with_a_null_handler() -> None:
    assert get_logger("pool").name == "sanaa.pool"
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("sanaa").handlers)


def test_importing_the_library_never_configures_the_root_logger() -> None:
    code = (
        "import logging; root = logging.getLogger(); before = (list(root.handlers), root.level); "
        "import sanaa_async_mem; assert (list(root.handlers), root.level) == before"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_histogram_quantiles_are_within_a_bucket() -> None:
    h = Histogram()
    for i in range(1, 1001):
        h.record(i / 1000.0)  # 1 ms .. 1 s, uniform
    snap = h.snapshot()
    assert snap.count == 1000
    assert snap.max == 1.0 and snap.min == 0.001
    assert 0.5 <= snap.p50 <= 0.5 * 1.19
    assert 0.99 <= snap.p99 <= 1.0
    assert math.isclose(snap.mean, 0.5005)
    cumulative = snap.cumulative()
    assert cumulative[-1] == (math.inf, 1000)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(cumulative))


def test_histogram_record_many_and_reset() -> None:
    h = Histogram()
    h.record_many(0.3, 30)
    h.record(-1.0)  # clock went backwards: counted as zero, not lost
    snap = h.snapshot()
    assert snap.count == 31 and snap.min == 0.0 and snap.max == 0.3
    h.reset()
    assert h.snapshot().count == 0 and h.snapshot().p99 == 0.0


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1.0, max_value=1e7, allow_nan=False),
            st.sampled_from([0.0, 1e-6, 1e-9, 1e6, 1e7]),  # on and beyond the bounds
        ),
        max_size=300,
    ),
    st.integers(min_value=0, max_value=300),
)
def test_histogram_extend_is_record_in_bulk(values: list[float], cut: int) -> None:
    one_by_one, in_bulk = Histogram(), Histogram()
    for v in values:
        one_by_one.record(v)
    in_bulk.extend(values[:cut])
    in_bulk.extend(values[cut:])
    a, b = one_by_one.snapshot(), in_bulk.snapshot()
    assert (a.count, a.counts, a.min, a.max) == (b.count, b.counts, b.min, b.max)
    assert math.isclose(a.sum, b.sum, rel_tol=1e-9, abs_tol=1e-9)


def test_zero_samples_report_zero_quantiles() -> None:
    h = Histogram()
    h.record_many(0.0, 99)
    h.record(0.5)
    snap = h.snapshot()
    assert snap.p50 == 0.0 and snap.p90 == 0.0
    assert snap.quantile(1.0) == 0.5
    assert h.snapshot().with_zeros(10).count == 110
