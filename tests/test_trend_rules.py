"""The rules every verdict keeps, whatever the series: properties (hypothesis) and the online tracker."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.trend import LABELS, LeakTracker, TrendAnalyzer, TrendVerdict

MiB = 1024 * 1024


def noisy(
    n: int, f, *, sigma: float = 64 * 1024, rho: float = 0.0, seed: int = 0
) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    ts: list[float] = []
    ys: list[float] = []
    t = 0.0
    e = 0.0
    for _ in range(n):
        e = rho * e + math.sqrt(1 - rho * rho) * rng.gauss(0.0, sigma)
        ts.append(t)
        ys.append(200 * MiB + f(t) + e)
        t += rng.uniform(0.9, 1.1)
    return ts, ys


def online(ts: list[float], ys: list[float], analyzer: TrendAnalyzer | None = None) -> list[TrendVerdict]:
    tracker = LeakTracker(analyzer or TrendAnalyzer())
    return [tracker.add(t, y) for t, y in zip(ts, ys, strict=True)]


# --- properties ------------------------------------------------------------------------------------------

series_strategy = st.tuples(
    st.integers(min_value=0, max_value=400),
    st.floats(min_value=-5000, max_value=20_000),
    st.floats(min_value=0, max_value=2 * MiB),
    st.floats(min_value=0.0, max_value=0.98),
    st.integers(min_value=0, max_value=10_000),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series_strategy)
def test_the_reason_agrees_with_the_numbers(params: tuple[int, float, float, float, int]) -> None:
    n, slope, sigma, rho, seed = params
    ts, ys = noisy(n, lambda t: slope * t, sigma=sigma, rho=rho, seed=seed)
    v = TrendAnalyzer().analyze(ts, ys)
    assert v.label == LABELS[v.status]
    assert v.is_leak == (v.status == "leak")
    if v.status == "collecting":
        assert not v.has_slope and "verdict needs" in v.reason
        return
    assert v.has_slope and v.slope_low <= v.slope <= v.slope_high
    if v.status == "no_growth":
        # "No significant growth" only when the lower bound is not above zero.
        assert v.slope_low <= 0.0 and "no significant growth" in v.reason
    if v.status in ("leak", "growing"):
        assert "grows" in v.reason
    if v.status == "growing" and v.span >= TrendAnalyzer().min_leak_span:
        assert "below the" in v.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=1, max_value=59), st.integers(min_value=0, max_value=1000))
def test_too_little_data_says_collecting_never_a_forced_judgement(n: int, seed: int) -> None:
    ts, ys = noisy(n, lambda t: 1e6 * t, seed=seed)  # growing fast, but under a minute of it
    v = TrendAnalyzer().analyze(ts, ys)
    assert v.status == "collecting" and not v.is_leak
    assert v.seconds_to_verdict is None or v.seconds_to_verdict > 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.floats(min_value=2000, max_value=50_000), st.floats(min_value=1.5, max_value=10), st.integers(0, 1000)
)
def test_a_slope_that_increases_never_downgrades_a_leak(rate: float, factor: float, seed: int) -> None:
    ts, ys = noisy(900, lambda t: rate * t, sigma=32 * 1024, seed=seed)
    analyzer = TrendAnalyzer()
    before = analyzer.analyze(ts[:600], ys[:600])
    assert before.is_leak, before.explain()
    bent = [
        y + (rate * (factor - 1) * (t - ts[600]) if i >= 600 else 0.0)
        for i, (t, y) in enumerate(zip(ts, ys, strict=True))
    ]
    after = analyzer.analyze(ts, bent, previous=before)
    assert after.is_leak, after.explain()


# --- shapes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_a_steady_leak_once_called_stays_called(seed: int) -> None:
    ts, ys = noisy(1800, lambda t: 1500.0 * t, sigma=128 * 1024, rho=0.8, seed=seed)
    verdicts = online(ts, ys)
    first = next(i for i, v in enumerate(verdicts) if v.is_leak)
    assert all(v.is_leak for v in verdicts[first:]), [
        (round(ts[i]), v.explain()) for i, v in enumerate(verdicts[first:], first) if not v.is_leak
    ][:3]
    assert ts[first] < 600


def test_a_leak_whose_rate_follows_the_traffic_is_a_leak() -> None:
    """Growth at a rate that changes every few seconds (requests come in bursts): bent, but a leak."""
    rng = random.Random(3)
    ts: list[float] = []
    ys: list[float] = []
    y = 30 * MiB
    for i in range(150):
        ts.append(i * 0.2)
        y += rng.choice([0.2, 1.0, 3.0]) * 3 * MiB * 0.2
        ys.append(y + rng.gauss(0, 64 * 1024))
    v = TrendAnalyzer(threshold=65536, min_span=6, min_leak_span=10).analyze(ts, ys)
    assert v.is_leak, v.explain()


@pytest.mark.parametrize("seed", range(3))
def test_a_cache_that_fills_and_flushes_is_cycling_not_a_leak(seed: int) -> None:
    period = 240.0
    ts, ys = noisy(1800, lambda t: 20 * MiB * ((t % period) / period), sigma=64 * 1024, seed=seed)
    verdicts = online(ts, ys)
    shown = next(i for i, t in enumerate(ts) if t >= period + 5)
    assert not any(v.is_leak for v in verdicts[shown:])
    assert verdicts[-1].status == "cycling" and verdicts[-1].drops >= 3, verdicts[-1].explain()


def test_a_warm_up_is_warming_up_then_no_growth() -> None:
    ts, ys = noisy(1800, lambda t: 60 * MiB * (1 - math.exp(-t / 120.0)), sigma=64 * 1024, seed=1)
    verdicts = online(ts, ys)
    settled = next(i for i, t in enumerate(ts) if 60 * MiB / 120.0 * math.exp(-t / 120.0) < 500)
    assert not any(v.is_leak for v in verdicts[settled:])
    assert any(v.status == "warming_up" for v in verdicts)
    assert verdicts[-1].status in ("no_growth", "warming_up")


def test_steps_are_set_aside() -> None:
    ts, ys = noisy(1200, lambda t: 30 * MiB * ((t > 300) + (t > 700)), sigma=64 * 1024, seed=2)
    verdicts = online(ts, ys)
    after = next(i for i, t in enumerate(ts) if t > 700 + 120)
    assert not any(v.is_leak for v in verdicts[after:])
    assert verdicts[-1].status == "no_growth" and verdicts[-1].steps == 2, verdicts[-1].explain()


@pytest.mark.parametrize("seed", range(3))
def test_an_accelerating_leak_is_found(seed: int) -> None:
    ts, ys = noisy(1800, lambda t: 4000.0 * t * t / (2 * 1800.0), sigma=64 * 1024, seed=seed)
    verdicts = online(ts, ys)
    assert verdicts[-1].is_leak, verdicts[-1].explain()


# --- the tracker ------------------------------------------------------------------------------------------


def test_tracker_memory_is_bounded_and_old_samples_leave_the_window() -> None:
    tracker = LeakTracker(window=600.0, max_points=100)
    for i in range(5000):
        tracker.add(float(i), 1e8)
    ts, _ = tracker.series()
    assert len(ts) <= 100 and ts[0] >= 5000 - 600 - 1


def test_tracker_ignores_a_clock_that_steps_back_and_refuses_bad_values() -> None:
    tracker = LeakTracker()
    tracker.add(10.0, 1.0)
    tracker.add(5.0, 2.0)  # ignored, not reordered
    assert tracker.series() == ([10.0], [1.0])
    with pytest.raises(ConfigurationError, match="value"):
        tracker.add(11.0, math.nan)
    with pytest.raises(ConfigurationError, match="t"):
        tracker.add(math.inf, 1.0)
    for bad in ({"window": 0}, {"check_every": -1}, {"max_points": 3}):
        with pytest.raises(ConfigurationError):
            LeakTracker(**bad)  # type: ignore[arg-type]
    tracker.reset()
    assert tracker.series() == ([], []) and tracker.verdict.status == "collecting"


def test_bad_analyzer_settings_name_the_parameter() -> None:
    with pytest.raises(ConfigurationError, match="min_leak_span"):
        TrendAnalyzer(min_leak_span=-1)
    with pytest.raises(ConfigurationError, match="max_bins"):
        TrendAnalyzer(max_bins=3)
