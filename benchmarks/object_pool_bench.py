"""Object pool benchmark: where pooling pays and where it does not, in one run.

    python -m benchmarks.object_pool_bench            # under a minute, writes results/object_pool_bench.json
    python -m benchmarks.object_pool_bench --quick    # a few seconds, smoke test (no JSON unless --write)

One "use" of an object is: obtain it, touch it (write a byte, read a field), give it back (or drop it).
For each kind of object, the same use is timed in ns/op through:

* ``plain``: build a new object each time and drop it (what code without a pool does);
* ``floor``: a bare ``dict[key, list]`` free list (no limits, locking or stats): the least a pool can cost;
* ``ours get/put``: :class:`MemoryPool` ``get(key)`` (factory on a miss) and ``put(key, obj)``;
* ``ours with lease``: ``with pool.lease(key) as obj:``;
* ``ours async lease``: ``async with pool.lease(key) as obj:`` inside a coroutine on the asyncio loop;
* for buffers, ``ours + zeroing reset``: the pool zeroes each buffer on put (``memset``), for callers that
  need the zero-filled buffer that ``bytearray(n)`` gives.

Kinds: large buffers (``bytearray`` of 16 MiB and 1 MiB: zeroed, page-faulted on each allocation), a costly
construction (a ~40 KB JSON document parsed into dicts and lists), and small objects (a 64-byte bytearray,
a ``__slots__`` object, an empty dict) where allocation is cheaper than any pool round-trip.

The machine is shared and absolute times drift: variants run interleaved in rotated order, each round times
a batch of ops per variant, and each ratio is the median over rounds of (variant / plain) and
(variant / floor) within the round. The garbage collector stays on: the collections that allocation
triggers are part of its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks._harness import percentile, print_table, ratio, write_results
from sanaa_async_mem.pools.keyed import MemoryPool

COMMAND = "python -m benchmarks.object_pool_bench"
KEY = "obj"


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    rounds: int  # every figure is a median over rounds
    batch_seconds: float  # target duration of one variant's batch in one round


FULL = Settings(rounds=25, batch_seconds=0.05)
QUICK = Settings(rounds=3, batch_seconds=0.005)


class Point:
    __slots__ = ("x", "y", "z")

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.z = 0


def _json_blob() -> str:
    doc = {
        "services": [
            {
                "name": f"svc-{i}",
                "replicas": i % 7,
                "env": {f"VAR_{j}": f"value-{i}-{j}" for j in range(12)},
                "ports": list(range(8000 + i, 8010 + i)),
                "limits": {"cpu": 0.5 + i / 100, "memory": 256 * (i % 4 + 1), "enabled": i % 2 == 0},
            }
            for i in range(80)
        ]
    }
    return json.dumps(doc)


BLOB = _json_blob()


def _zero(buf: bytearray) -> None:
    ctypes.memset((ctypes.c_char * len(buf)).from_buffer(buf), 0, len(buf))


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    name: str
    factory: Callable[[], Any]
    touch: Callable[[Any], None]
    zeroing: bool  # a buffer: also measure the pool with a zeroing reset


def _touch_buffer(buf: bytearray) -> None:
    buf[0] = 1


def _touch_doc(doc: dict[str, Any]) -> None:
    doc["services"][0]["replicas"] += 0  # a read (and write back) is the use


def _touch_point(p: Point) -> None:
    p.x = 1


def _touch_dict(d: dict[str, int]) -> None:
    d["a"] = 1


KINDS = (
    Kind("bytearray 16 MiB", lambda: bytearray(16 << 20), _touch_buffer, True),
    Kind("bytearray 1 MiB", lambda: bytearray(1 << 20), _touch_buffer, True),
    Kind(f"parsed JSON ({len(BLOB) // 1000} KB)", lambda: json.loads(BLOB), _touch_doc, False),
    Kind("bytearray 64 B", lambda: bytearray(64), _touch_buffer, True),
    Kind("__slots__ object", Point, _touch_point, False),
    Kind("empty dict", dict, _touch_dict, False),
)

Runner = Callable[[int], int]  # runs n uses, returns elapsed ns


def _plain(kind: Kind) -> Runner:
    factory, touch = kind.factory, kind.touch

    def run(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            obj = factory()
            touch(obj)
            del obj
        return time.perf_counter_ns() - t0

    return run


def _floor(kind: Kind) -> Runner:
    factory, touch = kind.factory, kind.touch
    free: dict[str, list[Any]] = {KEY: [factory()]}

    def run(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            lst = free[KEY]
            obj = lst.pop() if lst else factory()
            touch(obj)
            lst.append(obj)
        return time.perf_counter_ns() - t0

    return run


def _pool(kind: Kind, *, zeroing: bool = False) -> MemoryPool[str, Any]:
    pool: MemoryPool[str, Any] = MemoryPool(
        64, factories={KEY: kind.factory}, reset=_zero if zeroing else None
    )
    pool.put(KEY, kind.factory())
    return pool


def _ours_get_put(kind: Kind, *, zeroing: bool = False) -> Runner:
    pool = _pool(kind, zeroing=zeroing)
    touch, get, put = kind.touch, pool.get, pool.put

    def run(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            obj = get(KEY)
            touch(obj)
            put(KEY, obj)
        return time.perf_counter_ns() - t0

    return run


def _ours_lease(kind: Kind) -> Runner:
    pool = _pool(kind)
    touch, lease = kind.touch, pool.lease

    def run(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with lease(KEY) as obj:
                touch(obj)
        return time.perf_counter_ns() - t0

    return run


def _ours_async_lease(kind: Kind, loop: asyncio.AbstractEventLoop) -> Runner:
    pool = _pool(kind)
    touch, lease = kind.touch, pool.lease

    async def batch(n: int) -> int:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            async with lease(KEY) as obj:
                touch(obj)
        return time.perf_counter_ns() - t0

    def run(n: int) -> int:
        return loop.run_until_complete(batch(n))

    return run


def _variants(kind: Kind, loop: asyncio.AbstractEventLoop) -> dict[str, Runner]:
    variants = {
        "plain": _plain(kind),
        "floor": _floor(kind),
        "ours get/put": _ours_get_put(kind),
        "ours with lease": _ours_lease(kind),
        "ours async lease": _ours_async_lease(kind, loop),
    }
    if kind.zeroing:
        variants["ours + zeroing reset"] = _ours_get_put(kind, zeroing=True)
    return variants


def _batch_size(runners: dict[str, Runner], seconds: float) -> int:
    """Ops per batch so that the slowest variant's batch takes about ``seconds``."""
    slowest = 0.0
    for run in runners.values():
        run(3)  # warm up: first allocations, the pool's deque
        n, elapsed = 1, 0
        while elapsed < 2_000_000 and n < 1_000_000:  # at least 2 ms of samples
            elapsed = run(n)
            n *= 4
        slowest = max(slowest, elapsed / (n // 4))
    return max(3, int(seconds * 1e9 / slowest))


def measure(kind: Kind, settings: Settings, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    runners = _variants(kind, loop)
    n = _batch_size(runners, settings.batch_seconds)
    names = list(runners)
    per_op: dict[str, list[float]] = {name: [] for name in names}
    vs_plain: dict[str, list[float]] = {name: [] for name in names}
    vs_floor: dict[str, list[float]] = {name: [] for name in names}
    for r in range(settings.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        this_round = {name: runners[name](n) / n for name in order}
        for name in names:
            per_op[name].append(this_round[name])
            vs_plain[name].append(ratio(this_round[name], this_round["plain"]))
            vs_floor[name].append(ratio(this_round[name], this_round["floor"]))
    return {
        "ops_per_batch": n,
        "rounds": settings.rounds,
        "variants": {
            name: {
                "ns_per_op_median": statistics.median(per_op[name]),
                "ns_per_op_p10": percentile(per_op[name], 10),
                "ns_per_op_p90": percentile(per_op[name], 90),
                "x_plain": statistics.median(vs_plain[name]),
                "x_floor": statistics.median(vs_floor[name]),
            }
            for name in names
        },
    }


def _verdict(x_plain: float) -> str:
    if x_plain < 0.9:
        return f"pays: {1 / x_plain:.1f}x faster"
    if x_plain > 1.1:
        return f"costs: {x_plain:.1f}x slower"
    return "even"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds; no JSON unless --write")
    parser.add_argument("--write", action="store_true", help="write the JSON results even with --quick")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL

    loop = asyncio.new_event_loop()
    results: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for kind in KINDS:
            results[kind.name] = measure(kind, settings, loop)
    finally:
        loop.close()
    elapsed = time.perf_counter() - started

    rows = []
    for kind_name, result in results.items():
        for name, v in result["variants"].items():
            rows.append(
                [
                    kind_name,
                    name,
                    v["ns_per_op_median"],
                    f"{v['ns_per_op_p10']:,.0f}-{v['ns_per_op_p90']:,.0f}",
                    v["x_plain"],
                    v["x_floor"],
                    "" if name in ("plain", "floor") else _verdict(v["x_plain"]),
                ]
            )
    print_table(
        f"Object pool: ns per use (obtain, touch, give back), median of {settings.rounds} rounds "
        f"[{elapsed:.0f} s]",
        ["object", "variant", "ns/op", "p10-p90", "x plain", "x floor", "pooling vs plain"],
        rows,
    )

    summary = []
    for kind_name, result in results.items():
        ours = result["variants"]["ours get/put"]
        summary.append([kind_name, ours["x_plain"], ours["x_floor"], _verdict(ours["x_plain"])])
    print_table(
        "Summary: MemoryPool get/put against allocating anew (x plain) and a bare dict-of-lists (x floor)",
        ["object", "x plain", "x floor", "verdict"],
        summary,
    )
    if not args.quick or args.write:
        write_results(
            "object_pool_bench",
            {"settings": dataclasses.asdict(settings), "kinds": results, "seconds": elapsed},
            COMMAND + (" --quick" if args.quick else ""),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
