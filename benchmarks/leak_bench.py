"""Leak detection: our online detector against least squares (Prometheus ``deriv()``) and first-vs-last.

One command: ``python -m benchmarks.leak_bench`` (``--quick`` for a smoke run under 2 minutes, ``--jobs N``
worker processes, ``--series N`` series per family and seed, ``--seed-set tuning|validation|both``,
``--compare-with DIR`` to add the detector of another checkout, e.g. the commit before a change).

**The detector under test ("ours").** When ``sanaa_async_mem.memory.trend`` has ``LeakTracker``, it is the
online detector: ``tracker = LeakTracker(TrendAnalyzer(threshold=T))`` and ``verdict = tracker.add(t, y)`` for
every sample (the tracker bounds its history and decides when to re-judge); otherwise every 5 s of series
time ``TrendAnalyzer(threshold=T).analyze`` judges the samples of the last 3600 s. A check alerts when its
verdict ``is_leak``. Baselines, judged every 5 s on the same series: ``lsq`` (least-squares slope of the last
10 minutes >= T, like a ``deriv(x[10m]) > T`` alert) and ``naive`` ((last - first) / span of the last 10
minutes >= T). Every detector gets the same 60 s grace: no alert counts before t = 60 s.

**The corpus.** Synthetic RSS series at 1 Hz, 20-60 minutes each, with jittered intervals (1 s +-15%) and
1-4 gaps of 3-20 s, a base level of 50-500 MiB, white noise and page quantisation (4096 B) on every series.
Two corpora from two seeds: TUNING (``20261124``, what the analyzer may be tuned on) and VALIDATION
(``20261202``, the headline). Parameter ranges (log-uniform where marked *):

Non-leak families (threshold 1000 B/s):

* ``warmup_exp``: ``H (1 - exp(-(t - t0)/tau))``, tau 20-300 s, height H* 1-150 MiB, start 0-60 s;
  white noise* 4-256 KiB. Shape shown once the true rate ``H/tau exp(-(t - t0)/tau)`` < T/2; the series
  lasts at least 15 minutes beyond that.
* ``warmup_ramp``: a linear ramp at 5-100 x T for 1-10 minutes, starting at 0-120 s, then flat; noise as
  above. Shape shown when the ramp stops.
* ``sawtooth``: cache cycles of period 1-10 minutes (each jittered +-20%), teeth of height* 1-50 MiB
  (+-20% each), full drops or (half the series) partial drops to 20-60% of the height. Shown after the
  first drop.
* ``ar1``: AR(1) wander at 1 Hz, coefficient 0.5-0.9 (half the series) or 0.9-0.98, stationary sd*
  64 KiB-4 MiB. Stationary: any alert counts.
* ``ripple``: 1-3 GC-like sinusoids, periods* 2 s-10 min, amplitudes* 64 KiB-8 MiB, random phases. Shown
  after one period of the slowest sinusoid (before it, a slow ripple's rising half is a warm-up).
* ``steps``: 1-4 steps of height* 1-50 MiB, the first at 30-600 s, then 2-10 minutes apart. Shown 2
  minutes after the last step.
* ``bursts``: 1 + Poisson(3) bursts of height* 1-50 MiB lasting 5-180 s, that return. Counted except
  during a burst and the 2 minutes after it.
* ``noise``: white noise* 4 KiB-2 MiB with 1% single-sample spikes of 1-20 MiB; in half the series also a
  weak AR(1) (0.3-0.8, sd* 16-512 KiB) and a ripple. Stationary: any alert counts.

Leak families (growth from the onset, 0 or, in half the series, 0-30% into the series):

* ``leak_1000``, ``leak_2000``, ``leak_5000``, ``leak_20000``: linear leaks at that many B/s under white
  noise* 4-256 KiB plus, each with probability 1/2, AR(1) noise (0.3-0.9, sd* 16 KiB-1 MiB), 1% spikes
  of 1-10 MiB, and (probability 0.3) a sawtooth on top (period 1-10 min, height* 0.5-8 MiB).
* ``leak_accel``: a rate growing linearly from 0 to 3-8 x T over the series (``y = r t^2 / 2D``) under the
  same noise; the leak counts from the time its rate reaches T.
* ``sub_300``: 300 B/s growth under the same noise, below the threshold: alerts are reported, not
  targeted (fewer is right).

If a leak series' noise is so strong that the limit below exceeds 40% of its length, the noise is scaled
down until it does not (every leak must be detectable within the series).

**Metrics per family and detector.** Share of series with any alert; with an alert after the shape has
shown itself (see above); whose last verdict is a leak. For leak families: the delay from the onset to the
first alert, as a ratio to ``max(limit, grace)`` where the limit is the first time a 3-sigma least-squares
slope test with the series' TRUE noise (sd and lag-1 autocorrelation of the noise actually added, variance
inflated by (1 + rho) / (1 - rho)) sees the slope (T for ``leak_accel``, from the time the rate reaches T);
the share missed; the share that flaps (a non-leak verdict after the first alert); the share with an alert
before the onset. Targets (validation seed): after-shape alerts <= 1% in every non-leak family, no
end-of-series leak verdict for a non-leak series, median delay <= 1.5x and p90 <= 2x the limit, no leak
missed.

**The sampler's cost.** CPU of an idle asyncio process with a ``MemoryProfiler(interval=60)`` (default
1 s sample interval) against the same process without, over 60 s (psutil ``cpu_times``); the time to the
first verdict that is neither "collecting" nor "insufficient_data" with default settings; the cost of one
analysis by series length.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks._harness import percentile, print_table, write_results

SEEDS = {"tuning": 20261124, "validation": 20261202}
THRESHOLD = 1000.0
GRACE = 60.0
CHECK_EVERY = 5.0  # seconds of series time between checks (baselines; ours without a LeakTracker)
WINDOW_OURS = 3600.0
WINDOW_BASELINE = 600.0
KiB = 1024.0
MiB = 1024.0 * 1024.0
NO_LEAK = ("warmup_exp", "warmup_ramp", "sawtooth", "ar1", "ripple", "steps", "bursts", "noise")
LEAK_RATES = {"leak_1000": 1000.0, "leak_2000": 2000.0, "leak_5000": 5000.0, "leak_20000": 20000.0}
LEAK = (*LEAK_RATES, "leak_accel")
SUB = ("sub_300",)
FAMILIES = (*NO_LEAK, *LEAK, *SUB)
BASELINES = ("lsq", "naive")


# --- the corpus ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Series:
    family: str
    seed_set: str
    index: int
    t: np.ndarray
    y: np.ndarray
    shown: Callable[[np.ndarray], np.ndarray] | None = None  # checks that count as "after the shape"
    shape_at: float = math.nan  # when the shape has shown itself (NaN: not one time, e.g. bursts)
    onset: float = 0.0  # leak families: when the leak (at >= T) starts
    limit: float = math.nan
    sigma: float = 0.0
    rho: float = 0.0
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _times(rng: np.random.Generator, duration: float) -> np.ndarray:
    n = int(duration) + 1
    dt = 1.0 + rng.uniform(-0.15, 0.15, n)
    for _ in range(int(rng.integers(1, 5))):
        dt[int(rng.integers(10, n - 10))] += rng.uniform(3.0, 20.0)
    t = np.concatenate(([0.0], np.cumsum(dt[1:])))
    return t[t <= duration]


def _ar1(rng: np.random.Generator, t: np.ndarray, rho: float, sd: float) -> np.ndarray:
    """AR(1) noise with coefficient ``rho`` per second (per elapsed second across gaps), stationary sd."""
    e = rng.normal(0.0, sd, len(t))
    out = np.empty(len(t))
    out[0] = e[0]
    dts = np.diff(t, prepend=t[0])
    for i in range(1, len(t)):
        r = rho ** dts[i]
        out[i] = r * out[i - 1] + math.sqrt(1.0 - r * r) * e[i]
    return out


def _spikes(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    return np.where(rng.random(n) < 0.01, rng.uniform(lo, hi, n), 0.0)


def _ripple(rng: np.random.Generator, t: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    out = np.zeros(len(t))
    slowest = 0.0
    for _ in range(count):
        period = _loguniform(rng, 2.0, 600.0)
        amp = _loguniform(rng, 64 * KiB, 8 * MiB)
        out += amp * np.sin(2 * math.pi * t / period + rng.uniform(0, 2 * math.pi))
        slowest = max(slowest, period)
    return out, slowest


def _sawtooth(
    rng: np.random.Generator, t: np.ndarray, period: float, height: float, floor: float
) -> tuple[np.ndarray, float]:
    """Teeth from 0 (the first) or ``floor`` x height (later) up to ~height, then a drop; first drop time."""
    out = np.zeros(len(t))
    start = 0.0
    first_drop = math.inf
    low = 0.0
    while start < t[-1]:
        p = period * rng.uniform(0.8, 1.2)
        peak = height * rng.uniform(0.8, 1.2)
        sel = (t >= start) & (t < start + p)
        out[sel] = low + (peak - low) * (t[sel] - start) / p
        start += p
        first_drop = min(first_drop, start)
        low = floor * height
    return out, first_drop


def _quantise(y: np.ndarray) -> np.ndarray:
    return np.round(y / 4096.0) * 4096.0


def _after(at: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda ct: ct >= at


def no_leak_series(family: str, seed_set: str, index: int, quick: bool = False) -> Series:
    rng = np.random.default_rng([SEEDS[seed_set], FAMILIES.index(family), index])
    duration = rng.uniform(900, 1200) if quick else rng.uniform(1200, 3600)
    base = rng.uniform(50, 500) * MiB
    white = _loguniform(rng, 4 * KiB, 256 * KiB)
    params: dict[str, Any] = {"white_sd": white}
    shown: Callable[[np.ndarray], np.ndarray] = _after(0.0)
    shape_at = 0.0
    if family == "warmup_exp":
        tau = rng.uniform(20, 300)
        height = _loguniform(rng, 1 * MiB, 150 * MiB)
        t0 = rng.uniform(0, 60)
        ratio_ = 2 * height / (tau * THRESHOLD)
        settled = t0 + (tau * math.log(ratio_) if ratio_ > 1 else 0.0)
        duration = min(max(duration, settled + 900), 3600.0)
        t = _times(rng, duration)
        shape = np.where(t >= t0, height * (1 - np.exp(-(t - t0) / tau)), 0.0)
        shown = _after(settled)
        shape_at = settled
        params.update(tau=tau, height=height, start=t0, settled=settled)
    elif family == "warmup_ramp":
        t = _times(rng, duration)
        rate = rng.uniform(5, 100) * THRESHOLD
        length = rng.uniform(60, 600)
        t0 = rng.uniform(0, 120)
        shape = rate * np.clip(t - t0, 0.0, length)
        shown = _after(t0 + length)
        shape_at = t0 + length
        params.update(rate=rate, length=length, start=t0)
    elif family == "sawtooth":
        t = _times(rng, duration)
        period = rng.uniform(60, 600)
        height = _loguniform(rng, 1 * MiB, 50 * MiB)
        floor = rng.uniform(0.2, 0.6) if rng.random() < 0.5 else 0.0
        shape, first_drop = _sawtooth(rng, t, period, height, floor)
        shown = _after(first_drop)
        shape_at = first_drop
        params.update(period=period, height=height, floor=floor, first_drop=first_drop)
    elif family == "ar1":
        t = _times(rng, duration)
        rho = rng.uniform(0.5, 0.9) if rng.random() < 0.5 else rng.uniform(0.9, 0.98)
        sd = _loguniform(rng, 64 * KiB, 4 * MiB)
        shape = _ar1(rng, t, rho, sd)
        params.update(rho=rho, sd=sd)
    elif family == "ripple":
        t = _times(rng, duration)
        shape, slowest = _ripple(rng, t, int(rng.integers(1, 4)))
        shown = _after(slowest)
        shape_at = slowest
        params.update(slowest_period=slowest)
    elif family == "steps":
        first = rng.uniform(30, 600)
        at = [first]
        for _ in range(int(rng.integers(0, 4))):
            at.append(at[-1] + rng.uniform(120, 600))
        duration = max(duration, at[-1] + 600)
        t = _times(rng, duration)
        shape = np.zeros(len(t))
        for s in at:
            shape += np.where(t >= s, _loguniform(rng, 1 * MiB, 50 * MiB), 0.0)
        shown = _after(at[-1] + 120)
        shape_at = at[-1] + 120
        params.update(steps=at)
    elif family == "bursts":
        t = _times(rng, duration)
        shape = np.zeros(len(t))
        windows = []
        for _ in range(1 + int(rng.poisson(3))):
            s = rng.uniform(0, duration - 300)
            e = s + rng.uniform(5, 180)
            shape += np.where((t >= s) & (t < e), _loguniform(rng, 1 * MiB, 50 * MiB), 0.0)
            windows.append((s, e + 120))

        def shown(ct: np.ndarray, windows: list[tuple[float, float]] = windows) -> np.ndarray:
            ok = np.ones(len(ct), dtype=bool)
            for s, e in windows:
                ok &= ~((ct >= s) & (ct < e))
            return ok

        shape_at = math.nan
        params.update(bursts=windows)
    elif family == "noise":
        t = _times(rng, duration)
        white = _loguniform(rng, 4 * KiB, 2 * MiB)
        shape = _spikes(rng, len(t), 1 * MiB, 20 * MiB)
        params.update(white_sd=white)
        if rng.random() < 0.5:
            shape = shape + _ar1(rng, t, rng.uniform(0.3, 0.8), _loguniform(rng, 16 * KiB, 512 * KiB))
            rip, _ = _ripple(rng, t, 1)
            shape = shape + rip * 0.1
            params.update(mixed=True)
    else:  # pragma: no cover - guarded by FAMILIES
        raise ValueError(family)
    y = _quantise(base + shape + rng.normal(0.0, white, len(t)))
    return Series(family, seed_set, index, t, y, shown=shown, shape_at=shape_at, params=params)


def _leak_noise(rng: np.random.Generator, t: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    n = len(t)
    white = _loguniform(rng, 4 * KiB, 256 * KiB)
    noise = rng.normal(0.0, white, n)
    params: dict[str, Any] = {"white_sd": white}
    if rng.random() < 0.5:
        rho = rng.uniform(0.3, 0.9)
        sd = _loguniform(rng, 16 * KiB, 1 * MiB)
        noise += _ar1(rng, t, rho, sd)
        params.update(ar_rho=rho, ar_sd=sd)
    if rng.random() < 0.5:
        noise += _spikes(rng, n, 1 * MiB, 10 * MiB)
        params.update(spikes=True)
    if rng.random() < 0.3:
        saw, _ = _sawtooth(rng, t, rng.uniform(60, 600), _loguniform(rng, 0.5 * MiB, 8 * MiB), 0.0)
        noise += saw
        params.update(sawtooth=True)
    return noise, params


def _limit(t: np.ndarray, start: float, rate: float, sigma: float, rho: float) -> float:
    """Seconds after ``start`` until a 3-sigma least-squares slope test (AR(1)-inflated) sees ``rate``."""
    tt = t[t >= start]
    if len(tt) < 3:
        return math.inf
    k = np.arange(1, len(tt) + 1, dtype=float)
    s1 = np.cumsum(tt - start)
    s2 = np.cumsum((tt - start) ** 2)
    sxx = s2 - s1 * s1 / k
    need = 3.0 * sigma * math.sqrt((1.0 + rho) / (1.0 - rho))
    ok = np.nonzero(rate * np.sqrt(np.maximum(sxx, 0.0)) >= need)[0]
    return float(tt[ok[0]] - start) if len(ok) else math.inf


def _noise_model(noise: np.ndarray) -> tuple[float, float]:
    c = noise - noise.mean()
    ss = float(np.dot(c, c))
    rho = float(np.dot(c[1:], c[:-1]) / ss) if ss > 0 else 0.0
    return math.sqrt(ss / len(c)), min(max(rho, 0.0), 0.995)


def leak_series(family: str, seed_set: str, index: int, quick: bool = False) -> Series:
    rng = np.random.default_rng([SEEDS[seed_set], FAMILIES.index(family), index])
    duration = rng.uniform(900, 1200) if quick else rng.uniform(1200, 3600)
    t = _times(rng, duration)
    base = rng.uniform(50, 500) * MiB
    raw_noise, params = _leak_noise(rng, t)
    if family == "leak_accel":
        top = rng.uniform(3, 8) * THRESHOLD
        growth = top * t * t / (2 * t[-1])
        onset = THRESHOLD * t[-1] / top
        rate = THRESHOLD
        params.update(top_rate=top)
    else:
        rate = LEAK_RATES.get(family, 300.0)
        onset = rng.uniform(0, 0.3 * t[-1]) if rng.random() < 0.5 else 0.0
        growth = rate * np.clip(t - onset, 0.0, None)
    scale = 1.0
    while True:
        y = _quantise(base + growth + scale * raw_noise)
        sigma, rho = _noise_model(y - base - growth)
        limit = _limit(t, onset, rate, sigma, rho)
        if family in SUB or limit <= 0.4 * t[-1] or scale < 1e-3:
            break
        scale *= 0.7
    params.update(rate=rate, noise_scale=scale)
    return Series(
        family, seed_set, index, t, y, onset=onset, limit=limit, sigma=sigma, rho=rho, params=params
    )


def make_series(family: str, seed_set: str, index: int, quick: bool = False) -> Series:
    if family in NO_LEAK:
        return no_leak_series(family, seed_set, index, quick)
    return leak_series(family, seed_set, index, quick)


# --- detectors ----------------------------------------------------------------------------------------


def load_checkout_trend(path: str) -> ModuleType:
    """``sanaa_async_mem.memory.trend`` of another checkout, imported under another package name."""
    root = Path(path).expanduser().resolve() / "sanaa_async_mem"
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"--compare-with {path}: no sanaa_async_mem package in it")
    alias = "_sanaa_leak_" + "".join(c if c.isalnum() else "_" for c in str(root.parent))
    if alias not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            alias, root / "__init__.py", submodule_search_locations=[str(root)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[alias] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{alias}.memory.trend")


def trend_module(source: str) -> ModuleType:
    if source == "":
        return importlib.import_module("sanaa_async_mem.memory.trend")
    return load_checkout_trend(source)


def checks_ours(trend: ModuleType, series: Series) -> tuple[np.ndarray, np.ndarray]:
    """(check times, is_leak) of our detector run online over the series."""
    analyzer = trend.TrendAnalyzer(threshold=THRESHOLD)
    ts = series.t.tolist()
    ys = series.y.tolist()
    times: list[float] = []
    leaks: list[bool] = []
    if hasattr(trend, "LeakTracker"):
        tracker = trend.LeakTracker(analyzer)
        for t, y in zip(ts, ys, strict=True):
            verdict = tracker.add(t, y)
            times.append(t)
            leaks.append(bool(verdict.is_leak))
    else:
        lo = 0
        next_check = CHECK_EVERY
        for i, t in enumerate(ts):
            if t < next_check:
                continue
            next_check = (math.floor(t / CHECK_EVERY) + 1) * CHECK_EVERY
            while ts[lo] < t - WINDOW_OURS:
                lo += 1
            verdict = analyzer.analyze(ts[lo : i + 1], ys[lo : i + 1])
            times.append(t)
            leaks.append(bool(verdict.is_leak))
    return np.array(times), np.array(leaks, dtype=bool)


def checks_baselines(series: Series) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Least squares and first-vs-last over the last 10 minutes, judged every 5 s of series time."""
    t, y = series.t, series.y
    tc = t - t[0]
    yc = y - y[0]
    idx = np.nonzero(np.floor(t / CHECK_EVERY) > np.floor(np.concatenate(([-1.0], t[:-1])) / CHECK_EVERY))[0]
    idx = idx[t[idx] >= CHECK_EVERY]
    lo = np.searchsorted(t, t[idx] - WINDOW_BASELINE, side="right")
    c = [np.concatenate(([0.0], np.cumsum(v))) for v in (np.ones_like(tc), tc, yc, tc * tc, tc * yc)]
    hi = idx + 1
    n, st, sy, stt, sty = (s[hi] - s[lo] for s in c)
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx = stt - st * st / n
        lsq = np.where(sxx > 0, (sty - st * sy / n) / sxx, 0.0)
        span = t[idx] - t[lo]
        naive = np.where(span > 0, (y[idx] - y[lo]) / span, 0.0)
    ct = t[idx]
    return {"lsq": (ct, lsq >= THRESHOLD), "naive": (ct, naive >= THRESHOLD)}


def judge(series: Series, ct: np.ndarray, leak: np.ndarray) -> dict[str, Any]:
    live = leak & (ct >= GRACE)
    out: dict[str, Any] = {
        "any": bool(live.any()),
        "end_leak": bool(leak[-1]) if len(leak) else False,
        "checks": len(ct),
    }
    if series.shown is not None:
        late = live & series.shown(ct)
        out["after_shape"] = bool(late.any())
        # A new alert after the shape showed (a leak verdict that was not one at the check before): what an
        # operator is paged for; a leak called during a ramp and released a little after it stops is not.
        onset = live & ~np.concatenate(([False], leak[:-1]))
        out["new_after_shape"] = bool((onset & series.shown(ct)).any())
        if late.any() and math.isfinite(series.shape_at):
            # How long after the shape showed the detector still alerted: what separates "a little slow to
            # see a warm-up end" from "keeps alerting on it".
            out["last_alert_after_shape_s"] = float(ct[late][-1]) - series.shape_at
    if series.family in LEAK or series.family in SUB:
        hits = np.nonzero(live)[0]
        first = float(ct[hits[0]]) if len(hits) else None
        out["early"] = first is not None and first < series.onset
        on = np.nonzero(live & (ct >= series.onset))[0]
        if len(on):
            k = int(on[0])
            delay = float(ct[k]) - series.onset
            out["delay"] = delay
            out["ratio"] = delay / max(series.limit, GRACE)
            out["flaps"] = bool((~leak[k:]).any())
        else:
            out["delay"] = None
            out["ratio"] = None
            out["flaps"] = False
    return out


def _run_one(job: tuple[str, str, int, bool, tuple[tuple[str, str], ...]]) -> dict[str, Any]:
    family, seed_set, index, quick, ours = job
    series = make_series(family, seed_set, index, quick)
    res: dict[str, Any] = {
        "family": family,
        "seed_set": seed_set,
        "index": index,
        "duration": float(series.t[-1]),
        "limit": series.limit,
        "onset": series.onset,
        "detectors": {},
    }
    for name, source in ours:
        started = time.process_time()
        ct, lk = checks_ours(trend_module(source), series)
        res["detectors"][name] = judge(series, ct, lk)
        res["detectors"][name]["cpu_seconds"] = time.process_time() - started
    for name, (ct, lk) in checks_baselines(series).items():
        res["detectors"][name] = judge(series, ct, lk)
    return res


# --- aggregation --------------------------------------------------------------------------------------


def _share(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if key in r]
    return sum(bool(v) for v in vals) / len(vals) if vals else None


def summarise(results: list[dict[str, Any]], detectors: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for seed_set in SEEDS:
        per_seed = [r for r in results if r["seed_set"] == seed_set]
        if not per_seed:
            continue
        fam_out: dict[str, Any] = {}
        for family in FAMILIES:
            rs = [r for r in per_seed if r["family"] == family]
            if not rs:
                continue
            entry: dict[str, Any] = {"series": len(rs)}
            for d in detectors:
                rows = [r["detectors"][d] for r in rs]
                m: dict[str, Any] = {
                    "any_alert": _share(rows, "any"),
                    "after_shape": _share(rows, "after_shape"),
                    "new_after_shape": _share(rows, "new_after_shape"),
                    "end_leak": _share(rows, "end_leak"),
                }
                lasts = [x["last_alert_after_shape_s"] for x in rows if "last_alert_after_shape_s" in x]
                if lasts:
                    m["last_alert_after_shape_median_s"] = statistics.median(lasts)
                    m["last_alert_after_shape_max_s"] = max(lasts)
                if family in LEAK or family in SUB:
                    ratios = [x["ratio"] for x in rows if x.get("ratio") is not None]
                    delays = [x["delay"] for x in rows if x.get("delay") is not None]
                    m["missed"] = sum(x.get("delay") is None for x in rows) / len(rows)
                    m["median_delay_s"] = statistics.median(delays) if delays else None
                    m["median_ratio"] = statistics.median(ratios) if ratios else None
                    m["p90_ratio"] = percentile(ratios, 90) if ratios else None
                    m["flapping"] = _share([x for x in rows if x.get("delay") is not None], "flaps")
                    m["early"] = _share(rows, "early")
                if "cpu_seconds" in rows[0]:
                    m["cpu_seconds"] = sum(x["cpu_seconds"] for x in rows)
                entry[d] = m
            limits = [r["limit"] for r in rs if math.isfinite(r["limit"])]
            if limits:
                entry["median_limit_s"] = statistics.median(limits)
            fam_out[family] = entry
        out[seed_set] = fam_out
    return out


def targets(summary: dict[str, Any], detector: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for family, e in summary.items():
        m = e[detector]
        if family in NO_LEAK:
            shape, end = m["after_shape"], m["end_leak"]
            rows.append([family, "after-shape alerts", _pct(shape), "<= 1%", _ok(shape <= 0.01)])
            new = m["new_after_shape"]
            rows.append([family, "  of them new alerts", _pct(new), "(<= 1%)", _ok(new <= 0.01)])
            rows.append([family, "end-of-series leak", _pct(end), "0", _ok(end == 0)])
        elif family in LEAK:
            med, p90 = m["median_ratio"], m["p90_ratio"]
            rows.append(
                [family, "median delay/limit", _x(med), "<= 1.5x", _ok(med is not None and med <= 1.5)]
            )
            rows.append([family, "p90 delay/limit", _x(p90), "<= 2x", _ok(p90 is not None and p90 <= 2)])
            rows.append([family, "missed", _pct(m["missed"]), "0", _ok(m["missed"] == 0)])
    return rows


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ok(flag: bool) -> str:
    return "pass" if flag else "FAIL"


def print_summary(summary: dict[str, Any], detectors: Sequence[str], label: str) -> None:
    rows = []
    for family, e in summary.items():
        if family not in NO_LEAK:
            continue
        cells: list[Any] = [family, e["series"]]
        for d in detectors:
            m = e[d]
            cells.append(f"{_pct(m['any_alert'])} / {_pct(m['after_shape'])} / {_pct(m['end_leak'])}")
        m = e[detectors[0]]
        med, top = m.get("last_alert_after_shape_median_s"), m.get("last_alert_after_shape_max_s")
        cells.append(f"{_fmt_s(med)} / {_fmt_s(top)}")
        rows.append(cells)
    print_table(
        f"[{label}] Non-leak families: share of series with any alert / an alert after the shape showed / "
        f"a leak verdict at the end (threshold {THRESHOLD:g} B/s, grace {GRACE:g} s)",
        ["family", "series", *detectors, f"{detectors[0]}: last late alert s (median / max)"],
        rows,
    )
    rows = []
    for family, e in summary.items():
        if family not in LEAK and family not in SUB:
            continue
        for d in detectors:
            m = e[d]
            rows.append(
                [
                    family,
                    e["series"],
                    _fmt_s(e.get("median_limit_s")),
                    d,
                    _fmt_s(m["median_delay_s"]),
                    _x(m["median_ratio"]),
                    _x(m["p90_ratio"]),
                    _pct(m["missed"]),
                    _pct(m["flapping"]),
                    _pct(m["end_leak"]),
                    _pct(m["early"]),
                    _pct(m["any_alert"]),
                ]
            )
    print_table(
        f"[{label}] Leak families: delay from the onset to the first alert, as a ratio to max(3-sigma "
        f"least-squares limit, {GRACE:g} s); flapping = a non-leak verdict after the first alert; early = an "
        "alert before the onset (sub_300: growth below the threshold, alerts reported, not targeted)",
        ["family", "series", "limit s", "detector", "median s", "median/limit", "p90/limit", "missed",
         "flapping", "end leak", "early", "any alert"],
        rows,
    )  # fmt: skip


def _fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


# --- the sampler's cost -------------------------------------------------------------------------------

IDLE_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys, time
    import psutil
    seconds, with_profiler = float(sys.argv[1]), sys.argv[2] == "1"

    async def main():
        profiler = None
        if with_profiler:
            from sanaa_async_mem.memory.profiler import MemoryProfiler
            profiler = MemoryProfiler(interval=60)
            await profiler.start()
        await asyncio.sleep(2.0)  # start-up (imports, the first snapshot) is not the steady cost
        me = psutil.Process()
        c0, w0 = me.cpu_times(), time.monotonic()
        await asyncio.sleep(seconds)
        c1, w1 = me.cpu_times(), time.monotonic()
        if profiler is not None:
            samples = profiler.samples
            await profiler.stop()
        else:
            samples = 0
        cpu = (c1.user - c0.user) + (c1.system - c0.system)
        print(json.dumps({"cpu": cpu, "wall": w1 - w0, "samples": samples}))

    asyncio.run(main())
    """
)


def idle_cpu(seconds: float, rounds: int) -> dict[str, Any]:
    """CPU seconds per wall second of an idle loop with and without the profiler (run side by side)."""
    pairs = []
    for _ in range(rounds):
        procs = {
            flag: subprocess.Popen(
                [sys.executable, "-c", IDLE_CHILD, str(seconds), flag], stdout=subprocess.PIPE, text=True
            )
            for flag in ("0", "1")
        }
        out = {flag: json.loads(p.communicate()[0]) for flag, p in procs.items()}
        pairs.append(out)
    off = [p["0"]["cpu"] / p["0"]["wall"] for p in pairs]
    on = [p["1"]["cpu"] / p["1"]["wall"] for p in pairs]
    return {
        "seconds": seconds,
        "rounds": rounds,
        "off_cpu_share": statistics.median(off),
        "on_cpu_share": statistics.median(on),
        "added_percent": 100.0 * (statistics.median(on) - statistics.median(off)),
        "samples_per_round": [p["1"]["samples"] for p in pairs],
        "raw": pairs,
    }


async def first_verdict(limit: float) -> dict[str, Any]:
    from sanaa_async_mem.memory.profiler import MemoryProfiler

    profiler = MemoryProfiler()
    loop = asyncio.get_running_loop()
    await profiler.start()
    t0 = loop.time()
    status = None
    try:
        while loop.time() - t0 < limit:
            v = profiler.verdict
            status = None if v is None else v.status
            if status is not None and status not in ("collecting", "insufficient_data"):
                return {"seconds": loop.time() - t0, "status": status}
            await asyncio.sleep(0.1)
    finally:
        await profiler.stop()
    return {"seconds": None, "status": status, "waited": limit}


def analysis_cost(trend: ModuleType, sizes: Sequence[int]) -> list[list[Any]]:
    analyzer = trend.TrendAnalyzer(threshold=THRESHOLD)
    rng = np.random.default_rng(1)
    rows = []
    for n in sizes:
        ts = [float(i) for i in range(n)]
        ys = [float(v) for v in 1e8 + 1000.0 * np.arange(n) + rng.normal(0, 65536, n)]
        reps = max(3, min(100, 20_000 // max(n // 10, 1)))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            analyzer.analyze(ts, ys)
            times.append(time.perf_counter() - t0)
        rows.append([n, percentile(times, 50) * 1e3, percentile(times, 99) * 1e3])
    return rows


# --- main ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.leak_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 series per family, 15-20 min")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--series", type=int, help="series per family and seed (default 30; quick 2)")
    parser.add_argument("--seed-set", choices=("tuning", "validation", "both"), default="both")
    parser.add_argument(
        "--compare-with", action="append", default=[], metavar="DIR",
        help="also run the detector of the checkout in DIR (repeatable)",
    )  # fmt: skip
    parser.add_argument("--skip-cost", action="store_true", help="skip the sampler's cost section")
    parser.add_argument("--families", help="comma-separated subset of the families")
    args = parser.parse_args(argv)
    n_series = args.series or (2 if args.quick else 30)
    seed_sets = list(SEEDS) if args.seed_set == "both" else [args.seed_set]
    families = args.families.split(",") if args.families else list(FAMILIES)
    unknown = set(families) - set(FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {', '.join(FAMILIES)}")
    ours: list[tuple[str, str]] = [("ours", "")]
    for path in args.compare_with:
        ours.append((f"ours@{Path(path).resolve().name}", str(Path(path).resolve())))
    modes = {}
    for name, source in ours:
        mod = trend_module(source)  # imported before the workers fork, and checked to exist
        modes[name] = "LeakTracker" if hasattr(mod, "LeakTracker") else f"analyze every {CHECK_EVERY:g} s"
    detectors = [name for name, _ in ours] + list(BASELINES)
    started = time.perf_counter()

    jobs = [
        (family, seed_set, i, args.quick, tuple(ours))
        for seed_set in reversed(seed_sets)  # validation (the headline) first
        for i in range(n_series)
        for family in families
    ]
    results: list[dict[str, Any]] = []
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(_run_one, jobs, chunksize=1):
            results.append(r)
            if len(results) % 25 == 0:
                print(
                    f"  {len(results)}/{len(jobs)} series, {time.perf_counter() - started:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    corpus_seconds = time.perf_counter() - started
    summary = summarise(results, detectors)
    print(f"detectors: {', '.join(f'{k}: {v}' for k, v in modes.items())}; baselines every {CHECK_EVERY:g} s")
    target_rows: dict[str, list[list[Any]]] = {}
    for seed_set in ("tuning", "validation"):
        if seed_set not in summary:
            continue
        label = f"{seed_set.upper()} seed {SEEDS[seed_set]}"
        print_summary(summary[seed_set], detectors, label)
    if "validation" in summary:
        for name, _ in ours:
            target_rows[name] = targets(summary["validation"], name)
            print_table(
                f"[VALIDATION seed {SEEDS['validation']}] Targets for {name} ({modes[name]})",
                ["family", "metric", "value", "target", "result"],
                target_rows[name],
            )
            counted = [r for r in target_rows[name] if not str(r[3]).startswith("(")]  # (..): for reading
            failed = sum(r[-1] == "FAIL" for r in counted)
            print(f"{name}: {len(counted) - failed} of {len(counted)} targets met")
    print(f"\ncorpus: {len(results)} series in {corpus_seconds:.0f} s with {args.jobs} jobs")

    cost: dict[str, Any] = {}
    if not args.skip_cost:
        cost_rows = analysis_cost(trend_module(""), (300, 1000, 3600, 10_000))
        print_table("One analysis by series length (pure Python)", ["samples", "p50 ms", "p99 ms"], cost_rows)
        cost["analysis_ms"] = {str(r[0]): {"p50": r[1], "p99": r[2]} for r in cost_rows}
        seconds = 10.0 if args.quick else 60.0
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            idle = ex.submit(idle_cpu, seconds, 1)
            cost["first_verdict"] = asyncio.run(first_verdict(60.0 if args.quick else 300.0))
            cost["idle_cpu"] = idle.result()
        ic = cost["idle_cpu"]
        fv = cost["first_verdict"]
        print_table(
            f"The sampler's cost: an idle asyncio loop for {seconds:g} s with MemoryProfiler(interval=60) "
            "(1 s samples) against without, side by side",
            ["measure", "value", "target"],
            [
                ["CPU share without profiler", f"{100 * ic['off_cpu_share']:.4f}%", ""],
                ["CPU share with profiler", f"{100 * ic['on_cpu_share']:.4f}%", ""],
                ["added by the profiler", f"{ic['added_percent']:.4f}%", "< 0.1%"],
                ["samples taken", ic["samples_per_round"][0], ""],
                ["time to first verdict (default settings)", _fmt_s(fv["seconds"]), str(fv["status"])],
            ],
        )
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.0f} s")
    command = "python -m benchmarks.leak_bench" + (" " + " ".join(argv if argv is not None else sys.argv[1:]))
    write_results(
        "leak_bench",
        {
            "config": {
                "seeds": {k: SEEDS[k] for k in seed_sets},
                "threshold_bytes_per_second": THRESHOLD,
                "grace_seconds": GRACE,
                "check_every_seconds": CHECK_EVERY,
                "series_per_family": n_series,
                "quick": args.quick,
                "jobs": args.jobs,
                "families": families,
                "detectors": modes,
            },
            "summary": summary,
            "targets": {k: [dict(zip(("family", "metric", "value", "target", "result"), r, strict=True))
                            for r in v] for k, v in target_rows.items()},
            "cost": cost,
            "series": results,
            "wall_seconds": elapsed,
        },
        command.strip(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
