"""The trend analyzer on generated series: leaks at several rates, steps, warm-ups, sawtooth, outliers."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.trend import TrendAnalyzer, analyze_trend, theil_sen, time_to_limit

SIGMA = 64 * 1024  # RSS jitter of a quiet service sampled at 1 Hz
BASE = 100e6


def series(
    n: int = 600,
    *,
    slope: float = 0.0,
    sigma: float = SIGMA,
    seed: int = 0,
    dt: float = 1.0,
    extra: object = None,
) -> tuple[list[float], list[float]]:
    rng = random.Random(seed)
    ts = [i * dt for i in range(n)]
    ys = [BASE + slope * t + rng.gauss(0.0, sigma) for t in ts]
    return ts, ys


def first_alarm(
    analyzer: TrendAnalyzer, ts: list[float], ys: list[float], persistence: int = 3
) -> int | None:
    """The sample count at which a monitor analysing every tick would alert (persistence ticks in a row)."""
    run = 0
    for i in range(analyzer.min_samples, len(ts) + 1):
        run = run + 1 if analyzer.analyze(ts[:i], ys[:i]).is_leak else 0
        if run >= persistence:
            return i
    return None


# --- bad input ---


def test_too_few_samples_is_collecting_not_an_alarm() -> None:
    v = TrendAnalyzer(min_samples=10).analyze([0.0, 1.0, 2.0], [1.0, 1e9, 2e9])
    assert v.status == "collecting" and not v.has_slope
    assert not v.is_leak
    assert v.samples == 3
    assert math.isinf(v.slope_high)
    json.dumps(v.as_dict())  # infinite bounds become None


def test_short_span_is_collecting() -> None:
    ts, ys = series(30, slope=1e6, sigma=0)
    v = TrendAnalyzer(min_span=60.0).analyze(ts, ys)
    assert v.status == "collecting" and not v.has_slope and not v.is_leak


@pytest.mark.parametrize(
    ("times", "values", "param"),
    [
        ([0.0, 1.0, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0], "times[2]"),
        ([0.0, 2.0, 1.0, 3.0], [1.0, 2.0, 3.0, 4.0], "times[2]"),
        ([0.0, math.nan, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], "times[1]"),
        ([0.0, 1.0, 2.0, math.inf], [1.0, 2.0, 3.0, 4.0], "times[3]"),
        ([0.0, 1.0, 2.0, 3.0], [1.0, math.nan, 3.0, 4.0], "values[1]"),
        ([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "values"),
    ],
)
def test_bad_input_is_a_clear_error_naming_the_sample(
    times: list[float], values: list[float], param: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        TrendAnalyzer().analyze(times, values)
    assert info.value.name == param
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"threshold": 0}, "threshold"),
        ({"confidence": 1.0}, "confidence"),
        ({"confidence": 0.3}, "confidence"),
        ({"min_samples": 2}, "min_samples"),
        ({"min_span": -1.0}, "min_span"),
        ({"max_bins": 3}, "max_bins"),
        ({"limit": math.nan}, "limit"),
    ],
)
def test_bad_configuration_names_the_parameter(kwargs: dict[str, float], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TrendAnalyzer(**kwargs)  # type: ignore[arg-type]
    assert info.value.name == param


# --- leaks ---


@pytest.mark.parametrize("rate", [1000.0, 5000.0, 50_000.0])
def test_leak_is_detected_and_its_rate_is_inside_the_interval(rate: float) -> None:
    ts, ys = series(600, slope=rate, seed=int(rate))
    v = TrendAnalyzer(threshold=1000.0).analyze(ts, ys)
    assert v.is_leak and v.status == "leak"
    assert v.slope_low <= rate <= v.slope_high
    assert v.samples == 600 and v.span == pytest.approx(599.0)
    assert v.change_point is None


def test_leak_at_the_threshold_is_caught_by_a_per_tick_monitor_close_to_the_statistical_limit() -> None:
    # 3-sigma least squares on the true noise could first see 1000 B/s after ~78 samples at 1 Hz.
    analyzer = TrendAnalyzer(threshold=1000.0)
    delays = []
    for seed in range(5):
        ts, ys = series(400, slope=1000.0, seed=seed)
        alarm = first_alarm(analyzer, ts, ys)
        assert alarm is not None
        delays.append(alarm)
    assert sorted(delays)[2] < 1.6 * 78


def test_growth_far_below_the_threshold_is_not_a_leak() -> None:
    ts, ys = series(2000, slope=100.0, sigma=8192, seed=3)
    v = TrendAnalyzer(threshold=1000.0).analyze(ts, ys)
    assert v.significant and not v.is_leak and v.status == "growing"


def test_leak_onset_after_a_flat_period_is_found() -> None:
    ts, ys = series(900, seed=11)
    ys = [y + (2000.0 * (t - 500) if t > 500 else 0.0) for t, y in zip(ts, ys, strict=True)]
    v = TrendAnalyzer().analyze(ts, ys)
    assert v.is_leak
    assert v.slope_low <= 2000.0 <= v.slope_high


def test_irregular_intervals_and_gaps() -> None:
    rng = random.Random(5)
    ts, t = [], 0.0
    for i in range(500):
        t += rng.uniform(0.2, 3.0) + (600.0 if i == 250 else 0.0)  # and one ten-minute gap
        ts.append(t)
    ys = [BASE + 2000.0 * t + rng.gauss(0.0, SIGMA) for t in ts]
    v = TrendAnalyzer().analyze(ts, ys)
    assert v.is_leak
    assert v.slope_low <= 2000.0 <= v.slope_high


def test_outliers_do_not_hide_a_leak_nor_fake_one() -> None:
    rng = random.Random(9)
    for slope, expected in ((3000.0, True), (0.0, False)):
        ts, ys = series(600, slope=slope, seed=int(slope) + 1)
        for i in rng.sample(range(600), 30):  # 5% of samples are +-50 MB spikes (a burst, a bad read)
            ys[i] += rng.choice((-1, 1)) * 50e6
        v = TrendAnalyzer().analyze(ts, ys)
        assert v.is_leak is expected
        if expected:
            assert v.slope == pytest.approx(slope, rel=0.2)


# --- what is not a leak ---


@pytest.mark.parametrize("seed", range(10))
def test_flat_noise_is_not_a_leak(seed: int) -> None:
    ts, ys = series(600, seed=100 + seed)
    assert not TrendAnalyzer().analyze(ts, ys).is_leak


@pytest.mark.parametrize("at", [100.0, 300.0, 500.0])
def test_a_step_that_flattens_is_not_a_leak(at: float) -> None:
    ts, ys = series(600, seed=int(at))
    ys = [y + (20e6 if t >= at else 0.0) for t, y in zip(ts, ys, strict=True)]
    v = TrendAnalyzer().analyze(ts, ys)
    assert not v.is_leak
    assert v.change_point == pytest.approx(at, abs=15.0)


def test_a_warm_up_that_flattens_is_not_a_leak_once_it_has_flattened() -> None:
    ts, ys = series(600, seed=21)
    ys = [y + 50_000.0 * min(t, 120.0) for t, y in zip(ts, ys, strict=True)]  # 6 MB of warm-up
    analyzer = TrendAnalyzer()
    assert analyzer.analyze(ts[:100], ys[:100]).is_leak  # while warming up it looks exactly like one
    v = analyzer.analyze(ts, ys)
    assert not v.is_leak
    assert v.status in ("warming_up", "no_growth"), v.explain()


@pytest.mark.parametrize(("period", "amplitude"), [(10.0, 2e6), (30.0, 3e6), (60.0, 1e6)])
def test_sawtooth_from_a_cache_is_not_a_leak(period: float, amplitude: float) -> None:
    analyzer = TrendAnalyzer(min_span=2 * period)
    ts, ys = series(600, seed=int(period))
    ys = [y + (t % period) / period * amplitude for t, y in zip(ts, ys, strict=True)]
    assert first_alarm(analyzer, ts, ys) is None


def test_a_drop_then_regrowth_is_judged_over_the_whole_window() -> None:
    # A cache emptied at t=300 refills at 10 kB/s: memory is not higher than it was, so no leak.
    ts, ys = series(450, seed=4)
    ys = [y + (3e6 if t < 300 else 10_000.0 * (t - 300)) for t, y in zip(ts, ys, strict=True)]
    assert not TrendAnalyzer().analyze(ts, ys).is_leak


# --- properties ---


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.floats(min_value=0.0, max_value=1e9), min_size=10, max_size=300),
    st.floats(min_value=0.01, max_value=100.0),
)
def test_a_series_that_never_grows_is_never_a_leak(values: list[float], dt: float) -> None:
    values = sorted(values, reverse=True)
    ts = [i * dt for i in range(len(values))]
    assert not TrendAnalyzer().analyze(ts, values).is_leak


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    st.integers(min_value=0, max_value=2**32),
    st.integers(min_value=20, max_value=400),
    st.floats(min_value=1.0, max_value=1e7),
)
def test_no_false_alarm_on_flat_gaussian_noise(seed: int, n: int, sigma: float) -> None:
    ts, ys = series(n, sigma=sigma, seed=seed)
    assert not TrendAnalyzer().analyze(ts, ys).is_leak


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.floats(min_value=-1e9, max_value=1e9), st.floats(min_value=-1e6, max_value=1e6))
def test_verdict_does_not_depend_on_the_origin_of_time_or_bytes(dt0: float, dy0: float) -> None:
    ts, ys = series(200, slope=2000.0, seed=1)
    a = TrendAnalyzer().analyze(ts, ys)
    b = TrendAnalyzer().analyze([t + 1e9 + dt0 for t in ts], [y + dy0 for y in ys])
    assert a.is_leak == b.is_leak
    assert b.slope == pytest.approx(a.slope, rel=1e-3)


# --- helpers ---


def test_theil_sen_ignores_a_minority_of_wild_points() -> None:
    ts = [float(i) for i in range(20)]
    ys = [3.0 * t for t in ts]
    ys[5] = 1e9
    ys[15] = -1e9
    assert theil_sen(ts, ys) == pytest.approx(3.0)
    assert theil_sen([1.0], [1.0]) == 0.0


def test_time_to_limit_is_like_predict_linear() -> None:
    assert time_to_limit(1000.0, 400.0, 10.0) == pytest.approx(60.0)
    assert time_to_limit(1000.0, 1200.0, 10.0) == 0.0
    assert time_to_limit(1000.0, 400.0, -1.0) is None
    ts, ys = series(300, slope=5000.0, sigma=0.0)
    v = analyze_trend(zip(ts, ys, strict=True), limit=BASE + 5000.0 * 599)
    assert v.seconds_to_limit == pytest.approx(300.0, rel=1e-6)
    assert v.predict(10.0) == pytest.approx(BASE + 5000.0 * 309, rel=1e-9)


def test_verdict_is_frozen_and_serialisable() -> None:
    ts, ys = series(100, slope=5000.0)
    v = TrendAnalyzer(limit=1e9).analyze(ts, ys)
    with pytest.raises(AttributeError):
        v.slope = 0.0  # type: ignore[misc]
    d = json.loads(json.dumps(v.as_dict()))
    assert d["status"] == "leak" and d["samples"] == 100 and d["threshold"] == 1000.0


@pytest.mark.parametrize("age", [1, 3, 6, 12, 30])
def test_a_fresh_step_at_the_end_is_not_a_leak(age: int) -> None:
    ts, ys = series(300, sigma=4096, seed=age)
    ys = [y + (20e6 if i >= 300 - age else 0.0) for i, y in enumerate(ys)]
    assert not TrendAnalyzer().analyze(ts, ys).is_leak


def test_wandering_autocorrelated_noise_is_not_a_leak() -> None:
    rng = random.Random(77)
    ts = [float(i) for i in range(600)]
    e, ys = 0.0, []
    for _ in ts:
        e = 0.9 * e + rng.gauss(0.0, SIGMA)
        ys.append(BASE + e)
    assert first_alarm(TrendAnalyzer(min_span=60.0), ts, ys) is None
