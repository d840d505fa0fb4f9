"""GC policies under the reference workload: default CPython GC, ``gc.freeze()`` alone, and ours.

    python -m benchmarks.gc_bench            # ~6 min: 400 req/s for 50 s, 1000 req/s and saturated 20 s
    python -m benchmarks.gc_bench --runs 5   # the same five times in a row (~30 min): the targets must
                                             # hold in every run
    python -m benchmarks.gc_bench --quick    # ~2.5 minutes: 20 s and 8 s
    python -m benchmarks.gc_bench --duration 60   # 1000 req/s and saturated for 60 s, 400 req/s for 150 s

The 400 req/s runs last 2.5 times longer than the others: the default policy's full collections come about
every 15-20 s at that rate, and a window holding only one of them does not measure its tail (a 25 s run
gave default p99 3.7 ms; 90 s gave 79 ms).

Each (policy, scenario) runs in its own subprocess, one after the other, so no policy inherits another's heap
or GC settings. The reference workload (ANCHORS.md): a startup heap of 1e6 tracked objects; requests
arriving on a fixed schedule, each creating cyclic garbage and replacing an entry of a churning long-lived
cache. Latency is measured from the *scheduled* arrival time, so a pause delays every request due during
it (no coordinated omission). The saturated run keeps the loop always busy (closed loop, a request always
in flight) and reports the longest GC pause.

Policies:
  default  CPython's GC untouched
  freeze   ``gc.collect(); gc.freeze()`` after startup, nothing else
  ours     ``GarbageCollectionOptimizer.optimize_gc_settings(startup_complete=True)`` plus ``GCScheduler``
           with its defaults (with request notifications, as the Starlette/aiohttp middleware sends them):
           what the integrations do at the end of startup

Measured in every child alike: request latency, loop lag (``LoopLagMonitor``, 20 ms), peak RSS
(``ru_maxrss``, which includes the startup heap all policies share), GC CPU (``time.thread_time`` around
every collection via ``gc.callbacks``) and the longest single GC pause. The loop-lag monitor's own CPU cost
is measured on an idle loop at the end.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import os
import random
import resource
import subprocess
import sys
import time
from typing import Any

from benchmarks._harness import percentile, print_table, ratio, write_results

STARTUP_OBJECTS = 1_000_000
CACHE_ENTRIES = 2_000
CACHE_VALUE_NODES = 24  # tracked containers per cache value (half of them in a cycle)
GARBAGE_CYCLES = 20  # small reference cycles each request leaves behind
WORK_ITERATIONS = 60  # plain CPU work per request
SATURATED_WORKERS = 8
# The memory cap given to our scheduler: this much above the RSS right after startup.
CAP_HEADROOM_BYTES = 256 * 1024 * 1024


class Node:
    __slots__ = ("__weakref__", "children", "parent", "payload")

    def __init__(self, payload: object, parent: object = None) -> None:
        self.payload = payload
        self.parent = parent
        self.children: list[Node] = []


def build_startup_heap() -> list[object]:
    """1e6 tracked containers, linked so that a full collection has to traverse them all."""
    heap: list[object] = []
    n = STARTUP_OBJECTS // 2
    for i in range(n):
        node = Node(i)
        heap.append(node)
        heap.append([node, i])
    return heap


def make_cache_value(key: int) -> Node:
    root = Node(key)
    for j in range(CACHE_VALUE_NODES // 2 - 1):
        child = Node(j, root)  # child -> root -> child: a cycle, freed only by a (full) collection
        root.children.append(child)
    return root


def handle_request(cache: dict[int, Node], rng: random.Random) -> int:
    total = 0
    for _ in range(GARBAGE_CYCLES):
        a = Node(None)
        b = Node(a, a)
        a.parent = b
        total += len(a.children)
    for i in range(WORK_ITERATIONS):
        total += i * i % 7
    key = rng.randrange(CACHE_ENTRIES)
    cache[key] = make_cache_value(key)  # the old value (a cycle) becomes garbage in an old generation
    return total


# ----------------------------------------------------------------------------------------------- child


class GCMeter:
    """GC CPU seconds (thread_time) and the longest single pause (perf_counter), via gc.callbacks."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.cpu_by_generation = [0.0, 0.0, 0.0]
        self.max_pause = 0.0
        self.full = 0
        self.full_pauses: list[float] = []
        self._cpu0 = 0.0
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            self._cpu0 = time.thread_time()
            return
        cpu = time.thread_time() - self._cpu0
        self.cpu += cpu
        self.cpu_by_generation[min(2, info.get("generation", 0))] += cpu
        pause = time.perf_counter() - self._t0
        if pause > self.max_pause:
            self.max_pause = pause
        if info.get("generation") == 2:
            self.full += 1
            self.full_pauses.append(round(pause * 1e3, 1))


async def run_open_loop(rate: float, duration: float, scheduler: Any) -> array.array[float]:
    """Requests due every 1/rate s from t0; each latency is completion time minus due time."""
    loop = asyncio.get_running_loop()
    cache = {k: make_cache_value(k) for k in range(CACHE_ENTRIES)}
    rng = random.Random(42)
    latencies: array.array[float] = array.array("d")
    total = int(rate * duration)
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        if scheduler is not None:
            scheduler.request_started()
        try:
            handle_request(cache, rng)
            await asyncio.sleep(0)  # the request's "I/O": it yields once, like a real handler
            handle_request(cache, rng)
        finally:
            if scheduler is not None:
                scheduler.request_finished()
        latencies.append(loop.time() - due)

    t0 = loop.time() + 0.05
    i = 0
    while i < total:
        due = t0 + i * interval
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
            continue
        # Start every request that is due by now (after a pause there are many): they queue, as they would.
        while i < total and t0 + i * interval <= now:
            task = loop.create_task(one(t0 + i * interval))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
    while pending:
        await asyncio.gather(*list(pending))
    return latencies


async def run_saturated(duration: float, scheduler: Any) -> array.array[float]:
    """SATURATED_WORKERS closed-loop workers: the loop always has a request ready."""
    loop = asyncio.get_running_loop()
    cache = {k: make_cache_value(k) for k in range(CACHE_ENTRIES)}
    rng = random.Random(42)
    latencies: array.array[float] = array.array("d")
    end = loop.time() + duration

    async def worker() -> None:
        while loop.time() < end:
            started = loop.time()
            if scheduler is not None:
                scheduler.request_started()
            try:
                handle_request(cache, rng)
                await asyncio.sleep(0)
                handle_request(cache, rng)
            finally:
                if scheduler is not None:
                    scheduler.request_finished()
            latencies.append(loop.time() - started)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(SATURATED_WORKERS)))
    return latencies


def child(policy: str, scenario: str, duration: float, use_uvloop: bool) -> dict[str, Any]:
    import psutil

    from sanaa_async_mem.collector.optimizer import GarbageCollectionOptimizer
    from sanaa_async_mem.collector.scheduler import GCScheduler
    from sanaa_async_mem.loop_monitor import LoopLagMonitor

    heap = build_startup_heap()
    process = psutil.Process()
    optimizer = None
    if policy == "freeze":
        gc.collect()
        gc.freeze()
    elif policy == "ours":
        optimizer = GarbageCollectionOptimizer()
        optimizer.optimize_gc_settings(startup_complete=True)
    startup_rss = process.memory_info().rss
    cap = startup_rss + CAP_HEADROOM_BYTES
    meter = GCMeter()
    gc.callbacks.append(meter)
    cpu0 = time.process_time()

    async def main() -> dict[str, Any]:
        scheduler = None
        if policy == "ours":
            scheduler = GCScheduler(memory_cap_bytes=cap, optimizer=optimizer)
            await scheduler.start()
        try:
            async with LoopLagMonitor() as lag:
                if scenario == "saturated":
                    lat = await run_saturated(duration, scheduler)
                else:
                    lat = await run_open_loop(float(scenario), duration, scheduler)
        finally:
            if scheduler is not None:
                await scheduler.stop()
        out: dict[str, Any] = {
            "requests": len(lat),
            "p50_ms": percentile(lat, 50) * 1e3,
            "p99_ms": percentile(lat, 99) * 1e3,
            "max_ms": max(lat) * 1e3 if lat else 0.0,
            "max_lag_ms": lag.snapshot().max * 1e3,
            "p99_lag_ms": lag.snapshot().p99 * 1e3,
        }
        if scheduler is not None:
            st = scheduler.stats()
            out["scheduler_collections"] = st.full_collections
            out["scheduler_mode"] = st.mode
            out["scheduler"] = {
                "due_growth": st.due_growth,
                "live_objects": st.live_objects,
                "live_scan_ms": None if st.live_scan_seconds is None else st.live_scan_seconds * 1e3,
                "promoted_per_middle": st.promoted_per_middle,
            }
        return out

    if use_uvloop:
        import uvloop

        result = uvloop.run(main())
    else:
        result = asyncio.run(main())
    gc.callbacks.remove(meter)
    result.update(
        policy=policy,
        scenario=scenario,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        startup_rss_mib=startup_rss / 2**20,
        cap_mib=cap / 2**20,
        gc_cpu_s=meter.cpu,
        gc_cpu_by_generation_s=meter.cpu_by_generation,
        max_gc_pause_ms=meter.max_pause * 1e3,
        full_collections=meter.full,
        full_pauses_ms=meter.full_pauses,
        process_cpu_s=time.process_time() - cpu0,
        heap_objects=len(heap),
    )
    return result


def lag_monitor_overhead(seconds: float, use_uvloop: bool) -> dict[str, float]:
    """CPU fraction an otherwise idle loop spends with and without the lag monitor (default resolution).

    Three alternating pairs of runs; the median difference is reported (one run is at the mercy of
    whatever else the machine is doing).
    """
    from sanaa_async_mem.loop_monitor import LoopLagMonitor

    async def idle(with_monitor: bool) -> float:
        cpu = time.process_time()
        if with_monitor:
            async with LoopLagMonitor():
                await asyncio.sleep(seconds)
        else:
            await asyncio.sleep(seconds)
        return time.process_time() - cpu

    runner: Any = asyncio.run
    if use_uvloop:
        import uvloop

        runner = uvloop.run
    pairs = [(runner(idle(False)), runner(idle(True))) for _ in range(3)]
    diffs = sorted(w - b for b, w in pairs)
    return {
        "seconds": seconds,
        "resolution_s": LoopLagMonitor().resolution,
        "cpu_without_s": sorted(b for b, _ in pairs)[1],
        "cpu_with_s": sorted(w for _, w in pairs)[1],
        "overhead_pct": max(0.0, diffs[1]) / seconds * 100.0,
    }


# ---------------------------------------------------------------------------------------------- parent

POLICIES = ("default", "freeze", "ours")


def run_child(policy: str, scenario: str, duration: float, use_uvloop: bool) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.gc_bench",
        "--child",
        policy,
        scenario,
        "--duration",
        str(duration),
    ]
    if use_uvloop:
        cmd.append("--uvloop")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {policy}/{scenario} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gc_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="8 s runs instead of 20 s (400 req/s: x2.5)")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per run (default 20, quick 8; 400 req/s: x2.5)"
    )
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs of every (policy, scenario)")
    parser.add_argument("--uvloop", action="store_true", help="run the workload on uvloop")
    parser.add_argument("--child", nargs=2, metavar=("POLICY", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (8.0 if args.quick else 20.0)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], duration, args.uvloop)))
        return

    command = "python -m benchmarks.gc_bench" + (" --quick" if args.quick else "")
    if args.duration is not None:
        command += f" --duration {args.duration:g}"
    if args.runs != 1:
        command += f" --runs {args.runs}"
    if args.uvloop:
        command += " --uvloop"
    scenarios = ("400", "1000", "saturated")
    durations = {"400": duration * 2.5, "1000": duration, "saturated": duration}
    results: dict[str, Any] = {"duration_s": durations, "runs": []}
    for n in range(args.runs):
        runs: dict[str, Any] = {}
        for scenario in scenarios:
            # Rotate who goes first: a machine that slows down during a run must not favour one policy.
            order = POLICIES[n % 3 :] + POLICIES[: n % 3]
            for policy in order:
                print(f"run {n + 1}: {policy} at {scenario} ...", file=sys.stderr, flush=True)
                runs[f"{policy}/{scenario}"] = run_child(policy, scenario, durations[scenario], args.uvloop)
        runs["load_average"] = os.getloadavg()
        results["runs"].append(runs)
        print_run(n + 1, runs, durations, command)

    overhead = lag_monitor_overhead(5.0 if not args.quick else 2.0, args.uvloop)
    results["lag_monitor_overhead"] = overhead
    print_table(
        f"LoopLagMonitor cost on an idle loop (default resolution, {overhead['resolution_s'] * 1e3:g} ms; "
        "median of 3 pairs)",
        ["seconds", "CPU without s", "CPU with s", "overhead % of one CPU"],
        [[overhead["seconds"], overhead["cpu_without_s"], overhead["cpu_with_s"], overhead["overhead_pct"]]],
    )
    results["targets"] = targets(results["runs"])
    rows = [[name, "met" if ok else "MISSED", detail] for name, (ok, detail) in results["targets"].items()]
    print_table(f"targets (every one of {args.runs} runs)", ["target", "status", "measured"], rows)
    write_results("gc_bench", results, command)


def print_run(n: int, runs: dict[str, Any], durations: dict[str, float], command: str) -> None:
    header = [
        "policy",
        "p50 ms",
        "p99 ms",
        "max ms",
        "max lag ms",
        "peak RSS MiB",
        "GC CPU s",
        "full GCs",
        "p99 vs default",
        "max vs default",
        "RSS vs default",
        "GC CPU vs default",
    ]
    for scenario in ("400", "1000"):
        base = runs[f"default/{scenario}"]
        rows = []
        for policy in POLICIES:
            r = runs[f"{policy}/{scenario}"]
            rows.append(
                [
                    policy,
                    r["p50_ms"],
                    r["p99_ms"],
                    r["max_ms"],
                    r["max_lag_ms"],
                    r["peak_rss_mib"],
                    r["gc_cpu_s"],
                    r["full_collections"],
                    f"{ratio(base['p99_ms'], r['p99_ms']):.1f}x lower",
                    f"{ratio(base['max_ms'], r['max_ms']):.1f}x lower",
                    f"{ratio(r['peak_rss_mib'], base['peak_rss_mib']):.2f}x",
                    f"{ratio(r['gc_cpu_s'], base['gc_cpu_s']):.2f}x",
                ]
            )
        print_table(
            f"run {n}: {scenario} requests/s for {durations[scenario]:g} s ({command}; "
            f"load {runs['load_average'][0]:.2f})",
            header,
            rows,
        )
    base = runs["default/saturated"]
    rows = []
    for policy in POLICIES:
        r = runs[f"{policy}/saturated"]
        rows.append(
            [
                policy,
                r["requests"],
                r["p99_ms"],
                r["max_ms"],
                r["max_gc_pause_ms"],
                r["max_lag_ms"],
                r["peak_rss_mib"],
                r["cap_mib"] if policy == "ours" else "-",
                r["gc_cpu_s"],
                r["full_collections"],
                f"{ratio(r['max_gc_pause_ms'], base['max_gc_pause_ms']):.2f}x",
            ]
        )
    print_table(
        f"run {n}: saturated loop for {durations['saturated']:g} s ({command})",
        [
            "policy",
            "requests",
            "p99 ms",
            "max ms",
            "max GC pause ms",
            "max lag ms",
            "peak RSS MiB",
            "cap MiB",
            "GC CPU s",
            "full GCs",
            "max pause vs default",
        ],
        rows,
    )


def targets(all_runs: list[dict[str, Any]]) -> dict[str, tuple[bool, str]]:
    """The targets, each held in every run; the measured value of every run is listed."""
    out: dict[str, tuple[bool, str]] = {}

    def each(values: list[float], fmt: str) -> str:
        return ", ".join(fmt.format(v) for v in values)

    for scenario in ("400", "1000"):
        p99, mx, rss, cpu, cpu_freeze = [], [], [], [], []
        for runs in all_runs:
            base, frz, ours = (
                runs[f"default/{scenario}"],
                runs[f"freeze/{scenario}"],
                runs[f"ours/{scenario}"],
            )
            p99.append(ratio(base["p99_ms"], ours["p99_ms"]))
            mx.append(ratio(base["max_ms"], ours["max_ms"]))
            rss.append(ratio(ours["peak_rss_mib"], base["peak_rss_mib"]))
            cpu.append(ratio(ours["gc_cpu_s"], base["gc_cpu_s"]))
            cpu_freeze.append(ratio(ours["gc_cpu_s"], frz["gc_cpu_s"]))
        out[f"{scenario}/s p99 >= 8x lower"] = (min(p99) >= 8, each(p99, "{:.1f}x"))
        out[f"{scenario}/s max >= 8x lower"] = (min(mx) >= 8, each(mx, "{:.1f}x"))
        out[f"{scenario}/s peak RSS <= 1.10x default"] = (max(rss) <= 1.10, each(rss, "{:.2f}x"))
        out[f"{scenario}/s GC CPU <= 1.0x default"] = (max(cpu) <= 1.0, each(cpu, "{:.2f}x"))
        out[f"{scenario}/s GC CPU <= 1.10x freeze"] = (max(cpu_freeze) <= 1.10, each(cpu_freeze, "{:.2f}x"))
    pause, under = [], []
    for runs in all_runs:
        base, ours = runs["default/saturated"], runs["ours/saturated"]
        pause.append(ratio(ours["max_gc_pause_ms"], base["max_gc_pause_ms"]))
        under.append((ours["peak_rss_mib"], ours["cap_mib"]))
    out["saturated max pause <= 1.0x default"] = (max(pause) <= 1.0, each(pause, "{:.2f}x"))
    out["saturated RSS under the cap"] = (
        all(p <= c for p, c in under),
        ", ".join(f"{p:.0f}/{c:.0f} MiB" for p, c in under),
    )
    return out


if __name__ == "__main__":
    main()
