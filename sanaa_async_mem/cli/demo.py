"""``sanaa-mem demo``: a small, real async workload through an AsyncPool, and what the pool saw.

Many tasks share a few "connections" (objects that take a moment to open), some give up on a timeout, some
are cancelled half-way, some find their connection broken. At the end every connection is accounted for.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys

from ..errors import PoolTimeout
from ..pool import AsyncPool


class DemoConnection:
    """Stands in for a database connection: slow to open, can break."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False
        self.queries = 0

    async def query(self, rng: random.Random) -> None:
        await asyncio.sleep(rng.uniform(0.0005, 0.003))
        self.queries += 1
        if rng.random() < 0.01:
            raise ConnectionResetError(f"connection {self.id} was reset by the (pretend) server")


async def _open_connection() -> DemoConnection:
    await asyncio.sleep(0.005)
    return DemoConnection()


async def _close_connection(conn: DemoConnection) -> None:
    conn.closed = True


async def _workload(tasks: int, size: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    opened: list[DemoConnection] = []

    async def factory() -> DemoConnection:
        conn = await _open_connection()
        opened.append(conn)
        return conn

    outcomes = {"ok": 0, "timed_out": 0, "reset": 0, "cancelled": 0}
    pool = AsyncPool(
        factory,
        name="demo-db",
        min_size=min(2, size),
        max_size=size,
        timeout=0.25,
        close=_close_connection,
        discard_on=(ConnectionResetError,),
    )

    async def request() -> None:
        try:
            async with pool.acquire() as conn:
                await conn.query(rng)
            outcomes["ok"] += 1
        except PoolTimeout:
            outcomes["timed_out"] += 1
        except ConnectionResetError:
            outcomes["reset"] += 1

    async with pool:
        running = [asyncio.create_task(request()) for _ in range(tasks)]
        for task in rng.sample(running, len(running) // 20):  # 5% of callers give up half-way
            await asyncio.sleep(rng.uniform(0, 0.002))
            task.cancel()
        for task in running:
            try:
                await task
            except asyncio.CancelledError:
                outcomes["cancelled"] += 1
        stats = pool.stats()
    leaked = [c.id for c in opened if not c.closed]
    return {
        "requests": outcomes,
        "pool": stats.as_dict(),
        "connections_opened": len(opened),
        "connections_left_open": leaked,
    }


def run_demo(*, tasks: int = 500, size: int = 10, seed: int = 1, as_json: bool = False) -> int:
    """Run the workload and print the outcome; exit status 0 when no connection was lost."""
    if tasks < 1 or size < 1:
        print("sanaa-mem demo: --tasks and --size must be at least 1", file=sys.stderr)
        return 2
    result = asyncio.run(_workload(tasks, size, seed))
    left_open = result["connections_left_open"]
    assert isinstance(left_open, list)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        pool = result["pool"]
        assert isinstance(pool, dict)
        print(f"{tasks} requests through a pool of {size} connections")
        print(f"  outcomes:            {result['requests']}")
        print(
            f"  connections opened:  {result['connections_opened']}  (left open: {len(left_open)})"
        )
        print(f"  discarded (broken):  {pool['discarded']}    timeouts: {pool['timeouts']}")
        wait = pool["wait"]
        print(
            f"  wait p50/p99/max:    {wait['p50'] * 1e3:.2f} / {wait['p99'] * 1e3:.2f} / "
            f"{wait['max'] * 1e3:.2f} ms"
        )
    return 0 if not left_open else 1
