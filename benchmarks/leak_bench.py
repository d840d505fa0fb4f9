"""Leak detection: our trend analyzer against plain least squares (Prometheus ``deriv()``) and first-vs-last.

One command: ``python -m benchmarks.leak_bench`` (``--quick`` for a smaller corpus, ``--jobs N``).

What it measures, all in one run on a fixed-seed corpus:

* **false positives**: >= 10,000 series without a leak (white and autocorrelated noise, steps, warm-ups,
  sawtooth caches, bursts, spikes), each monitored the way the profiler monitors: the detector judges the
  series after every sample (1 Hz, 5 minutes), and alerts after 3 consecutive "leak" verdicts, after a
  60 s grace period that every detector gets alike. A series with any alert is a false positive.
* **detection delay**: leaks at several rates (1000 B/s among them) under realistic noise (Gaussian jitter,
  page quantisation, 1% spikes of 1-10 MiB), as a ratio to the statistical limit: the first time at which a
  3-sigma least-squares test on the true (Gaussian) noise could see that slope.
* **real processes**: RSS recorded from child Python processes (with and without a leak, doing allocation
  churn), sampled at 20 Hz and read as 1 Hz (time dilated 20x, so a 20 kB/s real leak reads as 1000 B/s).
* **the sampler's own cost**: the on-loop time per tick of a :class:`MemoryProfiler` (snapshot + analysis)
  by history length, the loop lag it adds, the throughput of a busy loop with the profiler at 1 Hz, and
  the cost of one analysis by series length.

Detectors, each alerting at the 1000 B/s threshold:
``ours`` (TrendAnalyzer), ``lsq`` (least-squares slope of everything so far >= threshold, what a
``deriv(x[10m]) > 1000`` alert does), ``naive`` ((last - first) / span >= threshold).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from benchmarks._harness import percentile, print_table, ratio, write_results
from sanaa_async_mem.memory.profiler import MemoryProfiler
from sanaa_async_mem.memory.snapshots import MemorySnapshot
from sanaa_async_mem.memory.trend import TrendAnalyzer

SEED = 20261124
THRESHOLD = 1000.0
GRACE = 60.0  # seconds before any detector may alert (warm-up grace, same for all)
PERSISTENCE = 3  # consecutive "leak" verdicts before an alert (the profiler's default)
N_FP = 300  # samples per no-leak series (5 minutes at 1 Hz)
N_LEAK = 600
MiB = 1024 * 1024
FAMILIES = ("noise", "noise_ar", "step", "warmup", "sawtooth", "bursts", "mixed")
# (rate B/s, Gaussian sigma B): limits from 68 s to 195 s, all beyond the grace period.
# 300 B/s is growth below the threshold: there, fewer alerts is right.
LEAKS = ((1000.0, 64 * 1024), (1000.0, 256 * 1024), (3000.0, 256 * 1024), (10_000.0, MiB), (300.0, 16 * 1024))

DETECTORS = ("ours", "lsq", "naive")


# --- corpus ---


def no_leak_series(family: str, index: int, n: int = N_FP) -> np.ndarray:
    rng = np.random.default_rng([SEED, FAMILIES.index(family), index])
    t = np.arange(n, dtype=float)
    base = rng.uniform(50, 500) * MiB
    sigma = math.exp(rng.uniform(math.log(4096), math.log(MiB)))
    y = base + rng.normal(0.0, sigma, n)
    if family == "noise_ar":
        rho = rng.uniform(0.3, 0.9)
        e = rng.normal(0.0, sigma, n)
        ar = np.empty(n)
        ar[0] = e[0]
        for i in range(1, n):
            ar[i] = rho * ar[i - 1] + math.sqrt(1 - rho * rho) * e[i]
        y = base + ar
    elif family == "step":
        # One step (a cache filled, a pool grew) at any time; in 30% of series a second one, at least
        # two minutes later (a staircase of steps every few seconds is growth, not a step).
        first = rng.uniform(5, n - 5)
        y = y + np.where(t >= first, rng.uniform(0.2, 20) * MiB, 0.0)
        if rng.random() < 0.3 and first + 120 < n - 5:
            y = y + np.where(t >= rng.uniform(first + 120, n - 5), rng.uniform(0.2, 20) * MiB, 0.0)
    elif family == "warmup":
        end = rng.uniform(10, 45)
        height = rng.uniform(0.5, 30) * MiB
        if rng.random() < 0.5:
            y = y + height * np.minimum(t / end, 1.0)
        else:  # decelerating (exponential) growth that reaches its plateau at `end`
            tau = end / 3.0
            y = y + height * np.minimum((1.0 - np.exp(-t / tau)) / (1.0 - math.exp(-end / tau)), 1.0)
    elif family == "sawtooth":
        period = rng.uniform(5, 30)
        amplitude = rng.uniform(0.2, 8) * MiB
        y = y + amplitude * ((t + rng.uniform(0, period)) % period) / period
    elif family == "bursts":
        for _ in range(rng.poisson(4)):
            start = rng.uniform(0, n)
            y = y + np.where((t >= start) & (t < start + rng.uniform(1, 20)), rng.uniform(1, 30) * MiB, 0.0)
    elif family == "mixed":
        period = rng.uniform(5, 30)
        y = y + rng.uniform(0.2, 4) * MiB * ((t % period) / period)
        spikes = rng.random(n) < 0.01
        y = y + spikes * rng.uniform(1, 10, n) * MiB
    return np.round(y / 4096.0) * 4096.0  # RSS moves in pages


def leak_series(rate: float, sigma: float, index: int, n: int = N_LEAK) -> np.ndarray:
    rng = np.random.default_rng([SEED, 99, int(rate), int(sigma), index])
    t = np.arange(n, dtype=float)
    y = rng.uniform(50, 500) * MiB + rate * t + rng.normal(0.0, sigma, n)
    spikes = rng.random(n) < 0.01
    y = y + spikes * rng.uniform(1, 10, n) * MiB
    return np.round(y / 4096.0) * 4096.0


def statistical_limit(rate: float, sigma: float, dt: float = 1.0) -> float:
    """First time (s) at which a 3-sigma least-squares test on Gaussian noise sigma sees ``rate``."""
    for k in range(3, 100_000):
        sxx = k * (k * k - 1) / 12.0 * dt * dt  # sum of squared deviations of k equally spaced times
        if rate * math.sqrt(sxx) >= 3.0 * sigma:
            return (k - 1) * dt
    return math.inf


# --- detectors ---


def first_alarm_baselines(y: np.ndarray, dt: float = 1.0) -> dict[str, float | None]:
    """Alarm times (s) of the least-squares and first-vs-last rules judged after every sample."""
    n = len(y)
    t = np.arange(n) * dt
    k = np.arange(1, n + 1, dtype=float)
    st, sy = np.cumsum(t), np.cumsum(y)
    stt, sty = np.cumsum(t * t), np.cumsum(t * y)
    with np.errstate(divide="ignore", invalid="ignore"):
        sxx = stt - st * st / k
        slope_lsq = (sty - st * sy / k) / sxx
        slope_naive = (y - y[0]) / t
    out: dict[str, float | None] = {}
    start = math.ceil(GRACE / dt)
    for name, slope in (("lsq", slope_lsq), ("naive", slope_naive)):
        hit = slope >= THRESHOLD
        hit[:start] = False
        out[name] = _first_run(hit, dt)
    return out


def _first_run(hit: np.ndarray, dt: float) -> float | None:
    run = 0
    for i, h in enumerate(hit):
        run = run + 1 if h else 0
        if run >= PERSISTENCE:
            return float(i * dt)
    return None


def first_alarm_ours(analyzer: TrendAnalyzer, y: Sequence[float], dt: float = 1.0) -> float | None:
    """The first alert time (s), exactly as if judged after every sample, at a third of the cost.

    Any run of PERSISTENCE (3) consecutive leak verdicts contains a multiple of 3, so only those samples
    are judged first, and a run is measured around each hit.
    """
    ts = [i * dt for i in range(len(y))]
    ys = [float(v) for v in y]
    start = math.ceil(GRACE / dt)
    cache: dict[int, bool] = {}

    def leak(i: int) -> bool:
        if i < start:
            return False
        if i not in cache:
            cache[i] = analyzer.analyze(ts[: i + 1], ys[: i + 1]).is_leak
        return cache[i]

    first = start + (-start) % PERSISTENCE
    for j in range(first, len(ys), PERSISTENCE):
        if not leak(j):
            continue
        lo = j
        while lo - 1 >= start and lo - 1 > j - PERSISTENCE and leak(lo - 1):
            lo -= 1
        hi = j
        while hi - lo + 1 < PERSISTENCE and hi + 1 < len(ys) and leak(hi + 1):
            hi += 1
        if hi - lo + 1 >= PERSISTENCE:
            return float((lo + PERSISTENCE - 1) * dt)
    return None


def _analyzer() -> TrendAnalyzer:
    return TrendAnalyzer(threshold=THRESHOLD, min_span=GRACE)


def _judge_no_leak(job: tuple[str, int, int]) -> dict[str, Any]:
    family, lo, hi = job
    analyzer = _analyzer()
    counts = dict.fromkeys(DETECTORS, 0)
    seconds = 0.0
    for i in range(lo, hi):
        y = no_leak_series(family, i)
        base = first_alarm_baselines(y)
        for name in ("lsq", "naive"):
            counts[name] += base[name] is not None
        t0 = time.perf_counter()
        counts["ours"] += first_alarm_ours(analyzer, y) is not None
        seconds += time.perf_counter() - t0
    return {"family": family, "n": hi - lo, "alarms": counts, "seconds": seconds}


def _judge_leak(job: tuple[float, float, int, int]) -> dict[str, Any]:
    rate, sigma, lo, hi = job
    analyzer = _analyzer()
    delays: dict[str, list[float | None]] = {d: [] for d in DETECTORS}
    for i in range(lo, hi):
        y = leak_series(rate, sigma, i)
        base = first_alarm_baselines(y)
        delays["lsq"].append(base["lsq"])
        delays["naive"].append(base["naive"])
        delays["ours"].append(first_alarm_ours(analyzer, y))
    return {"rate": rate, "sigma": sigma, "delays": delays}


def run_corpus(n_per_family: int, n_leak: int, jobs: int) -> dict[str, Any]:
    chunk = 50
    no_leak_jobs = [
        (family, lo, min(lo + chunk, n_per_family))
        for family in FAMILIES
        for lo in range(0, n_per_family, chunk)
    ]
    leak_jobs = [
        (rate, sigma, lo, min(lo + 25, n_leak)) for rate, sigma in LEAKS for lo in range(0, n_leak, 25)
    ]
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        no_leak = list(pool.map(_judge_no_leak, no_leak_jobs))
        leaks = list(pool.map(_judge_leak, leak_jobs))
    fp: dict[str, dict[str, Any]] = {}
    for r in no_leak:
        agg = fp.setdefault(r["family"], {"n": 0, "alarms": dict.fromkeys(DETECTORS, 0)})
        agg["n"] += r["n"]
        for d in DETECTORS:
            agg["alarms"][d] += r["alarms"][d]
    delay: dict[str, dict[str, Any]] = {}
    for r in leaks:
        key = f"{r['rate']:g} B/s, sigma {r['sigma'] / 1024:g} KiB"
        agg = delay.setdefault(
            key, {"rate": r["rate"], "sigma": r["sigma"], "delays": {d: [] for d in DETECTORS}}
        )
        for d in DETECTORS:
            agg["delays"][d].extend(r["delays"][d])
    for agg in delay.values():
        agg["limit"] = statistical_limit(agg["rate"], agg["sigma"])
    return {"false_positives": fp, "leaks": delay}


# --- real processes ---

CHILD = textwrap.dedent(
    """
    import random, sys, time
    kind, real_rate = sys.argv[1], float(sys.argv[2])
    rng = random.Random(kind)
    kept, cache = [], {}
    start = last = time.monotonic()
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        churn = [{"k": i, "v": "x" * rng.randrange(10, 2000)} for i in range(rng.randrange(50, 400))]
        del churn
        if kind == "warmup" and now - start < 2.0:
            kept.append(bytearray(b"w" * 100_000))
        if kind == "lru":
            cache[rng.random()] = "c" * rng.randrange(100, 5000)
            if len(cache) > 200:
                cache.clear()
        if real_rate:
            # Leak by elapsed time, not per iteration: the rate holds however slow the machine is.
            kept.append(b"L" * int(real_rate * (now - last)))
        last = now
        time.sleep(0.01)
    """
)

REAL_CHILDREN = (
    ("churn", 0.0, False),
    ("warmup", 0.0, False),
    ("lru", 0.0, False),
    ("leak-1000", 20_000.0, True),  # 20 kB/s real = 1000 B/s after the 20x time dilation
    ("leak-3000", 60_000.0, True),
    ("lru-leak-1000", 20_000.0, True),
)
DILATION = 20.0


def record_real(seconds: float) -> list[dict[str, Any]]:
    procs = []
    for name, real_rate, _ in REAL_CHILDREN:
        kind = "lru" if name.startswith("lru") else name.split("-")[0]
        procs.append(
            subprocess.Popen([sys.executable, "-c", CHILD, kind, str(real_rate)], stdout=subprocess.PIPE)
        )
    try:
        for p in procs:
            assert p.stdout is not None
            p.stdout.readline()  # the child has imported and started its loop
        # Recording starts once the interpreters' own start-up growth is over (0.5 s real), so the
        # series show the workloads, like a service's after its grace period.
        time.sleep(0.5)
        handles = [psutil.Process(p.pid) for p in procs]
        series: list[list[float]] = [[] for _ in procs]
        period = 1.0 / DILATION
        next_at = time.monotonic()
        end = next_at + seconds
        while time.monotonic() < end:
            for h, s in zip(handles, series, strict=True):
                s.append(float(h.memory_info().rss))
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    out = []
    for (name, real_rate, is_leak), ys in zip(REAL_CHILDREN, series, strict=True):
        y = np.array(ys)
        t = np.arange(len(y), dtype=float)
        # The "true noise" of a real process is unknown: take the robust scale of its residuals.
        resid = y - np.polyval(np.polyfit(t, y, 1), t)
        sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
        # The true rate is the nominal leak plus whatever the allocator adds: take the measured slope.
        measured = float(np.polyfit(t, y, 1)[0])
        out.append(
            {
                "name": name,
                "leak": is_leak,
                "nominal_rate": real_rate / DILATION,
                "rate": measured,
                "sigma": sigma,
                "y": ys,
            }
        )
    return out


def judge_real(recorded: list[dict[str, Any]]) -> list[list[Any]]:
    analyzer = _analyzer()
    rows = []
    for r in recorded:
        y = np.array(r["y"])
        base = first_alarm_baselines(y)
        ours = first_alarm_ours(analyzer, r["y"])
        limit = statistical_limit(r["rate"], max(r["sigma"], 1.0)) if r["leak"] else None
        r["alarms"] = {"ours": ours, "lsq": base["lsq"], "naive": base["naive"]}
        r["limit"] = limit
        rows.append(
            [
                r["name"],
                "leak" if r["leak"] else "no leak",
                f"{r['rate']:.0f}",
                f"{r['sigma'] / 1024:.0f}",
                "-" if limit is None else f"{limit:.0f}",
                *(_alarm_cell(r["alarms"][d], limit) for d in DETECTORS),
            ]
        )
    return rows


def _alarm_cell(alarm: float | None, limit: float | None) -> str:
    if alarm is None:
        return "none" if limit is None else "missed"
    if limit is None:
        return f"FALSE at {alarm:.0f} s"
    return f"{alarm:.0f} s ({ratio(alarm, limit):.2f}x)"


# --- the sampler's own cost ---


def analysis_cost(sizes: Sequence[int]) -> list[list[Any]]:
    analyzer = TrendAnalyzer()
    rng = np.random.default_rng(SEED)
    rows = []
    for n in sizes:
        ts = [float(i) for i in range(n)]
        ys = [float(v) for v in 1e8 + 1000.0 * np.arange(n) + rng.normal(0, 65536, n)]
        reps = max(3, min(200, 20_000 // max(n // 100, 1)))
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            analyzer.analyze(ts, ys)
            times.append(time.perf_counter() - t0)
        rows.append([n, percentile(times, 50) * 1e3, percentile(times, 99) * 1e3])
    return rows


async def _profiler_tick_cost(history: int, ticks: int) -> dict[str, float]:
    p = MemoryProfiler(interval=3600, history=history, auto_trace=False)
    # Fill the history with a plausible flat series at this process's own level, ending a second ago, so
    # that the analysis works on a full buffer and the real snapshots continue it.
    now = time.monotonic() - history - 1.0
    level = psutil.Process().memory_info().rss
    rng = np.random.default_rng(SEED)
    for i in range(history):
        p._remember(
            MemorySnapshot(
                timestamp=time.time(), monotonic=now + i, rss=int(level + rng.normal(0, 65536)), vms=0
            )
        )
    on_loop = []
    for _ in range(ticks):
        t0 = time.perf_counter()
        await p.take_snapshot()  # the on-loop part ends before the store write (there is none here)
        verdict = p.analyze_memory_trends()
        p._check_alerts(verdict)
        on_loop.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    return {"p50_ms": percentile(on_loop, 50) * 1e3, "p99_ms": percentile(on_loop, 99) * 1e3}


async def _lag_probe(seconds: float, profiler_interval: float | None) -> list[float]:
    """Overshoot of 1 ms sleeps (s) while the profiler runs at ``profiler_interval`` (None: off)."""
    lags: list[float] = []
    p = None
    if profiler_interval is not None:
        p = MemoryProfiler(interval=profiler_interval, history=3600, auto_trace=False)
        await p.start_profiling()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t0 - 0.001)
    finally:
        if p is not None:
            await p.stop_profiling()
    return lags


async def _busy(seconds: float, profiler_interval: float | None) -> float:
    """Iterations per second of a CPU-bound coroutine that yields after every small work item."""
    p = None
    if profiler_interval is not None:
        p = MemoryProfiler(interval=profiler_interval, history=3600, auto_trace=False)
        await p.start_profiling()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    count = 0
    t0 = time.perf_counter()
    try:
        while loop.time() < end:
            sum(i * i for i in range(200))
            count += 1
            await asyncio.sleep(0)
    finally:
        if p is not None:
            await p.stop_profiling()
    return count / (time.perf_counter() - t0)


async def sampler_cost(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"tick_on_loop": {}}
    for history in (60, 600, 3600):
        out["tick_on_loop"][history] = await _profiler_tick_cost(history, 100 if quick else 400)
    # Lag: the profiler at 10 Hz (ten times the 1 Hz target, to see more ticks) against none, interleaved.
    lag_off: list[float] = []
    lag_on: list[float] = []
    rounds = 2 if quick else 4
    for _ in range(rounds):
        lag_off += await _lag_probe(2.0, None)
        lag_on += await _lag_probe(2.0, 0.1)
    out["lag"] = {
        "off_p50_ms": percentile(lag_off, 50) * 1e3,
        "off_p99_ms": percentile(lag_off, 99) * 1e3,
        "on_p50_ms": percentile(lag_on, 50) * 1e3,
        "on_p99_ms": percentile(lag_on, 99) * 1e3,
        "off_max_ms": max(lag_off) * 1e3,
        "on_max_ms": max(lag_on) * 1e3,
    }
    # Throughput at 1 Hz: ABAB rounds so that drift in machine load hits both sides alike.
    off: list[float] = []
    on: list[float] = []
    for _ in range(3 if quick else 6):
        off.append(await _busy(3.0, None))
        on.append(await _busy(3.0, 1.0))
    losses = [1.0 - b / a for a, b in zip(off, on, strict=True)]
    out["throughput"] = {
        "off_per_s": statistics.median(off),
        "on_per_s": statistics.median(on),
        "loss_median": statistics.median(losses),
        "loss_pairs": losses,
    }
    return out


# --- main ---


def _fmt_delays(values: list[float | None], limit: float) -> tuple[str, str, str, str]:
    hits = [v for v in values if v is not None]
    miss = 1.0 - len(hits) / len(values)
    if not hits:
        return "-", "-", "-", f"{miss:.1%}"
    med = statistics.median(hits)
    return (
        f"{med:.0f}",
        f"{ratio(med, limit):.2f}x",
        f"{ratio(percentile(hits, 90), limit):.2f}x",
        f"{miss:.1%}",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.leak_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smaller corpus and shorter timings")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes for the corpus"
    )
    args = parser.parse_args(argv)
    n_per_family = 150 if args.quick else 1430  # 7 families x 1430 = 10,010 series
    n_leak = 40 if args.quick else 100
    started = time.perf_counter()

    corpus = run_corpus(n_per_family, n_leak, args.jobs)
    fp_rows = []
    totals = dict.fromkeys(DETECTORS, 0)
    total_n = 0
    for family, agg in corpus["false_positives"].items():
        total_n += agg["n"]
        for d in DETECTORS:
            totals[d] += agg["alarms"][d]
        fp_rows.append([family, agg["n"], *(f"{agg['alarms'][d] / agg['n']:.2%}" for d in DETECTORS)])
    fp_rows.append(["all", total_n, *(f"{totals[d] / total_n:.2%}" for d in DETECTORS)])
    print_table(
        f"False positives: series without a leak with any alert ({N_FP} s at 1 Hz, {GRACE:g} s grace, "
        f"{PERSISTENCE} verdicts in a row, threshold {THRESHOLD:g} B/s)",
        ["family", "series", *DETECTORS],
        fp_rows,
    )

    delay_rows = []
    for key, agg in corpus["leaks"].items():
        for d in DETECTORS:
            delay_rows.append([key, f"{agg['limit']:.0f}", d, *_fmt_delays(agg["delays"][d], agg["limit"])])
    print_table(
        "Detection delay: leaks under Gaussian noise + 1% spikes of 1-10 MiB + page quantisation "
        f"({n_leak} series each, {N_LEAK} s)",
        ["leak", "limit s", "detector", "median s", "median/limit", "p90/limit", "missed"],
        delay_rows,
    )

    real_seconds = 20.0 if args.quick else 45.0
    recorded = record_real(real_seconds)
    real_rows = judge_real(recorded)
    print_table(
        f"Real child processes (RSS at 20 Hz for {real_seconds:g} s, read as 1 Hz: time dilated 20x)",
        ["process", "truth", "slope B/s", "sigma KiB", "limit s", *DETECTORS],
        real_rows,
    )

    cost_rows = analysis_cost((100, 1000, 10_000, 100_000))
    print_table("One analysis by series length (pure Python)", ["samples", "p50 ms", "p99 ms"], cost_rows)

    sampler = asyncio.run(sampler_cost(args.quick))
    print_table(
        "The sampler's own cost: on-loop time of one tick (snapshot + analysis + alerts) by history length",
        ["history", "p50 ms", "p99 ms"],
        [[h, v["p50_ms"], v["p99_ms"]] for h, v in sampler["tick_on_loop"].items()],
    )
    lag = sampler["lag"]
    tp = sampler["throughput"]
    print_table(
        "Loop lag (overshoot of 1 ms sleeps) and busy-loop throughput",
        ["measure", "profiler off", "profiler on", "added"],
        [
            [
                "lag p50 ms (on: 10 Hz)",
                lag["off_p50_ms"],
                lag["on_p50_ms"],
                lag["on_p50_ms"] - lag["off_p50_ms"],
            ],
            [
                "lag p99 ms (on: 10 Hz)",
                lag["off_p99_ms"],
                lag["on_p99_ms"],
                lag["on_p99_ms"] - lag["off_p99_ms"],
            ],
            ["throughput /s (on: 1 Hz)", tp["off_per_s"], tp["on_per_s"], f"{-tp['loss_median']:+.2%}"],
        ],
    )
    elapsed = time.perf_counter() - started
    print(f"\nwall time {elapsed:.0f} s")

    results = {
        "config": {
            "seed": SEED,
            "threshold_bytes_per_second": THRESHOLD,
            "grace_seconds": GRACE,
            "persistence": PERSISTENCE,
            "no_leak_samples": N_FP,
            "leak_samples": N_LEAK,
            "quick": args.quick,
            "jobs": args.jobs,
        },
        "false_positives": corpus["false_positives"],
        "false_positive_rate": {d: totals[d] / total_n for d in DETECTORS},
        "leaks": {
            key: {
                "rate": agg["rate"],
                "sigma": agg["sigma"],
                "limit_seconds": agg["limit"],
                **{
                    d: {
                        "median_seconds": _median_or_none(agg["delays"][d]),
                        "median_over_limit": _ratio_or_none(_median_or_none(agg["delays"][d]), agg["limit"]),
                        "missed": sum(v is None for v in agg["delays"][d]) / len(agg["delays"][d]),
                    }
                    for d in DETECTORS
                },
            }
            for key, agg in corpus["leaks"].items()
        },
        "real_processes": [{k: v for k, v in r.items() if k != "y"} for r in recorded],
        "analysis_ms": {str(r[0]): {"p50": r[1], "p99": r[2]} for r in cost_rows},
        "sampler": sampler,
        "wall_seconds": elapsed,
    }
    write_results(
        "leak_bench", results, "python -m benchmarks.leak_bench" + (" --quick" if args.quick else "")
    )


def _median_or_none(values: list[float | None]) -> float | None:
    hits = [v for v in values if v is not None]
    return statistics.median(hits) if hits else None


def _ratio_or_none(value: float | None, limit: float) -> float | None:
    return None if value is None else ratio(value, limit)


if __name__ == "__main__":
    main()
