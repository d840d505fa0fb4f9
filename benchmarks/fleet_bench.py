"""Fleet budget benchmark: a shared budget against a static split, and what the budget costs an acquire.

    python -m benchmarks.fleet_bench               # ~1.5 minutes, writes results/fleet_bench.json
    python -m benchmarks.fleet_bench --quick       # a smoke test (no JSON unless --write)

Needs PostgreSQL (SANAA_PG_DSN, default postgresql://postgres@127.0.0.1:5432/test) and Redis
(SANAA_REDIS_URL, default redis://127.0.0.1:6379/0).

Two sections:

* Skewed load: 8 worker processes share 20 PostgreSQL connections; one worker is hot (64 tasks, each
  acquiring a connection and running ``SELECT pg_sleep(0.002)``), seven are idle (their pools open, no
  traffic). "static split": every worker has ``AsyncPool(max_size=20 // 8)`` and no budget (what a fleet
  does without coordination, to stay within the server's limit). "fleet budget": every worker has
  ``AsyncPool(max_size=20, budget=FleetBudget(total=20))``. Figures are the hot worker's: queries per
  second and the p50/p99 latency of one query, connection wait included; the ratio is budget / static,
  the median over rounds.
* Per-acquire cost on a reused idle object: ``async with pool.acquire(): pass`` on a pool whose object is
  idle, with a budget and without (the floor), in one process, rounds alternating. The budget is asked
  only when an object is made, so this should be ~1.0x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._harness import print_table, write_results

COMMAND = "python -m benchmarks.fleet_bench"
PG_DSN = os.environ.get("SANAA_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SANAA_REDIS_URL", "redis://127.0.0.1:6379/0")
TOTAL = 20
WORKERS = 8
WARMUP = 2.0  # seconds of load before measuring: every connection is made by then

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import psycopg
    from sanaa_async_mem import AsyncPool
    from sanaa_async_mem.fleet import FleetBudget

    mode, role, redis_url, name, dsn, out, go, seconds, tasks, warmup = sys.argv[1:11]
    seconds, tasks, warmup = float(seconds), int(tasks), float(warmup)
    TOTAL, WORKERS = 20, 8

    async def connect():
        return await psycopg.AsyncConnection.connect(dsn, autocommit=True, application_name="fleet-bench")

    async def close(conn):
        await conn.close()

    async def main():
        if mode == "budget":
            budget = FleetBudget(redis_url, name=name, total=TOTAL)
            pool = AsyncPool(connect, max_size=TOTAL, budget=budget, close=close, timeout=60)
        else:
            pool = AsyncPool(connect, max_size=TOTAL // WORKERS, close=close, timeout=60)
        async with pool:
            with open(out + ".ready", "w"):
                pass
            while not os.path.exists(go):
                await asyncio.sleep(0.02)
            if role == "idle":
                while not os.path.exists(go + ".stop"):
                    await asyncio.sleep(0.05)
                return
            lat = []
            stop_at = time.monotonic() + seconds
            warm_until = time.monotonic() + warmup
            async def one():
                while True:
                    t0 = time.monotonic()
                    if t0 >= stop_at:
                        return
                    async with pool.acquire() as conn:
                        await conn.execute("select pg_sleep(0.002)")
                    if t0 >= warm_until:
                        lat.append(time.monotonic() - t0)
            await asyncio.gather(*(one() for _ in range(tasks)))
            with open(out, "w") as f:
                json.dump({"latencies": lat, "seconds": seconds - warmup, "size": pool.stats().size}, f)

    asyncio.run(main())
    """
)


def skewed_round(mode: str, seconds: float, tasks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        script = tmp / "worker.py"
        script.write_text(WORKER)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        go = tmp / "go"
        procs = []
        for i in range(WORKERS):
            role = "hot" if i == 0 else "idle"
            args = [
                sys.executable,
                str(script),
                mode,
                role,
                REDIS_URL,
                name,
                PG_DSN,
                str(tmp / f"out{i}"),
                str(go),
                str(seconds + WARMUP),
                str(tasks),
                str(WARMUP),
            ]
            procs.append(subprocess.Popen(args))
        deadline = time.monotonic() + 60
        while not all((tmp / f"out{i}.ready").exists() for i in range(WORKERS)):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.05)
        go.write_text("go")
        procs[0].wait(seconds + 60)
        (tmp / "go.stop").write_text("stop")
        for p in procs:
            p.wait(30)
        data = json.loads((tmp / "out0").read_text())
    lat = sorted(data["latencies"])
    n = len(lat)
    return {
        "qps": n / data["seconds"],
        "p50_ms": lat[n // 2] * 1e3,
        "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3,
        "connections": data["size"],
    }


class _Obj:
    pass


async def _acquire_loop(pool: Any, n: int) -> float:
    acquire = pool.acquire
    started = time.perf_counter()
    for _ in range(n):
        async with acquire():
            pass
    return (time.perf_counter() - started) / n


async def acquire_cost(rounds: int, n: int) -> dict[str, Any]:
    from sanaa_async_mem import AsyncPool
    from sanaa_async_mem.fleet import FleetBudget

    budget = FleetBudget(REDIS_URL, name=f"bench-{uuid.uuid4().hex[:8]}", total=TOTAL)
    plain: AsyncPool[_Obj] = AsyncPool(_Obj, max_size=1)
    budgeted: AsyncPool[_Obj] = AsyncPool(_Obj, max_size=1, budget=budget)
    floor: list[float] = []
    with_budget: list[float] = []
    async with plain, budgeted:
        for pool in (plain, budgeted):  # make the one object, warm up
            await _acquire_loop(pool, 1000)
        for r in range(rounds):
            order = [(plain, floor), (budgeted, with_budget)]
            if r % 2:
                order.reverse()
            for pool, out in order:
                out.append(await _acquire_loop(pool, n))
        created = budgeted.stats().created
    ratios = [b / f for b, f in zip(with_budget, floor, strict=True)]
    return {
        "no_budget_ns": statistics.median(floor) * 1e9,
        "budget_ns": statistics.median(with_budget) * 1e9,
        "ratio": statistics.median(ratios),
        "objects_created_with_budget": created,
        "acquires_per_round": n,
        "rounds": rounds,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke test: short rounds")
    parser.add_argument("--rounds", type=int, help="rounds of each section (medians over them)")
    parser.add_argument("--seconds", type=float, help="measured seconds per skewed-load run")
    parser.add_argument("--tasks", type=int, default=64, help="concurrent tasks of the hot worker")
    parser.add_argument("--write", action="store_true", help="write the JSON even with --quick")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 6.0)
    runs: dict[str, list[dict[str, float]]] = {"static": [], "budget": []}
    for r in range(rounds):
        order = ["static", "budget"] if r % 2 == 0 else ["budget", "static"]
        for mode in order:
            runs[mode].append(skewed_round(mode, seconds, args.tasks))
    qps_ratio = statistics.median(
        b["qps"] / s["qps"] for b, s in zip(runs["budget"], runs["static"], strict=True)
    )
    p99_ratio = statistics.median(
        b["p99_ms"] / s["p99_ms"] for b, s in zip(runs["budget"], runs["static"], strict=True)
    )
    med = {mode: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for mode, rs in runs.items()}
    print_table(
        f"Skewed load: 1 hot worker ({args.tasks} tasks, pg_sleep(0.002)) + 7 idle, {TOTAL} connections",
        ["split", "hot worker conns", "queries/s", "p50 ms", "p99 ms", "qps x static", "p99 x static"],
        [
            [
                "static (20 // 8 each)",
                med["static"]["connections"],
                med["static"]["qps"],
                med["static"]["p50_ms"],
                med["static"]["p99_ms"],
                1.0,
                1.0,
            ],
            [
                "fleet budget (20 shared)",
                med["budget"]["connections"],
                med["budget"]["qps"],
                med["budget"]["p50_ms"],
                med["budget"]["p99_ms"],
                qps_ratio,
                p99_ratio,
            ],
        ],
    )
    cost = asyncio.run(acquire_cost(rounds=3 if args.quick else 7, n=20_000 if args.quick else 100_000))
    print_table(
        "Per-acquire cost, idle object reused (async with pool.acquire(): pass)",
        ["pool", "ns / acquire", "x no budget"],
        [["no budget", cost["no_budget_ns"], 1.0], ["with FleetBudget", cost["budget_ns"], cost["ratio"]]],
    )
    results = {
        "skewed": {
            "runs": runs,
            "median": med,
            "qps_ratio": qps_ratio,
            "p99_ratio": p99_ratio,
            "workers": WORKERS,
            "total": TOTAL,
            "hot_tasks": args.tasks,
            "seconds": seconds,
        },
        "acquire_cost": cost,
    }
    if not args.quick or args.write:
        write_results("fleet_bench", results, COMMAND + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
