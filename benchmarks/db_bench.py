"""Real-database benchmark: our pool with the adapters against the drivers' own pools and the floor.

    python -m benchmarks.db_bench                  # ~2.5 minutes, writes results/db_bench.json
    python -m benchmarks.db_bench --quick          # ~15 seconds, smoke test (no JSON unless --write)
    python -m benchmarks.db_bench --loop uvloop
    python -m benchmarks.db_bench --compare-with ../before     # also the adapters of another checkout

Two sections, each with 100 tasks sharing 10 connections and every task doing one command per acquire
(latency = from asking for a connection to having given it back, so it includes the wait):

* PostgreSQL, ``SELECT 1``: the floor (``asyncio.Semaphore`` + ``deque`` over raw asyncpg connections,
  a ``__slots__`` class as the context manager); ours (``adapters.asyncpg_pool`` with its default check
  and reset); ``asyncpg.Pool``; ``psycopg_pool.AsyncConnectionPool`` (autocommit connections, so one
  round trip per query like the others); and, for reference, ours with ``reset=None``.
* Redis, ``PING``: the floor (the same over single-connection ``redis.asyncio.Redis`` clients); ours
  (``adapters.redis_pool``); redis-py's ``BlockingConnectionPool(max_connections=10)`` and
  ``ConnectionPool(max_connections=10)`` (which fails instead of waiting when all 10 are busy: its errors
  are counted, its figures cover the successful calls only).

Each round runs every contender for ``--seconds`` in a rotated order; every "x floor" is the median over
rounds of (contender / floor in that round), because absolute speeds drift on a shared machine.
A section whose service is not reachable is skipped with a message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import socket
import statistics
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from benchmarks._harness import percentile, print_table, ratio, write_results

COMMAND = "python -m benchmarks.db_bench"
TASKS = 100
CONNECTIONS = 10
PG_DSN = os.environ.get("SANAA_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SANAA_REDIS_URL", "redis://127.0.0.1:6379/0")

# the targets of issue 3, as ratios to the floor in the same run
TARGET_THROUGHPUT = 0.9
TARGET_P99 = 1.5


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    rounds: int
    seconds: float  # per contender per round
    warmup: float  # seconds per contender before the first round


FULL = Settings(rounds=7, seconds=2.0, warmup=1.0)
QUICK = Settings(rounds=1, seconds=0.5, warmup=0.2)


@dataclasses.dataclass(slots=True)
class Contender:
    name: str
    op: Callable[[], Awaitable[Any]]  # one acquire + command + release
    close: Callable[[], Awaitable[None]]
    errors: int = 0


class _FloorLease:
    """The floor: semaphore + deque, a ``__slots__`` class as the async context manager."""

    __slots__ = ("_conn", "_floor")

    def __init__(self, floor: Floor) -> None:
        self._floor = floor
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        await self._floor.sem.acquire()
        self._conn = self._floor.idle.pop()
        return self._conn

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._floor.idle.append(self._conn)
        self._floor.sem.release()


class Floor:
    def __init__(self, conns: list[Any]) -> None:
        self.idle: deque[Any] = deque(conns)
        self.sem = asyncio.Semaphore(len(conns))

    def acquire(self) -> _FloorLease:
        return _FloorLease(self)


def reachable(url_host: str, port: int) -> bool:
    try:
        with socket.create_connection((url_host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --- PostgreSQL contenders ----------------------------------------------------------------------------


async def pg_contenders(compare_with: Sequence[str] = ()) -> list[Contender]:
    import asyncpg
    import psycopg_pool

    from sanaa_async_mem.resources.adapters import asyncpg_pool

    out: list[Contender] = []

    conns = [await asyncpg.connect(PG_DSN) for _ in range(CONNECTIONS)]
    floor = Floor(conns)

    async def floor_op() -> None:
        async with floor.acquire() as conn:
            await conn.fetchval("SELECT 1")

    async def floor_close() -> None:
        for c in conns:
            await c.close()

    out.append(Contender("floor: Semaphore + deque over asyncpg", floor_op, floor_close))

    variants: tuple[tuple[str, Any], ...] = (
        ("ours: asyncpg_pool (default check+reset)", "rollback"),
        ("ours, reset=None", None),
    )
    for label, reset in variants:
        pool = asyncpg_pool(PG_DSN, min_size=CONNECTIONS, max_size=CONNECTIONS, reset=reset)
        await pool.open()
        out.append(Contender(label, _asyncpg_op(pool), pool.close))
    for path in compare_with:
        name, adapters = _checkout_adapters(path)
        other = adapters.asyncpg_pool(PG_DSN, min_size=CONNECTIONS, max_size=CONNECTIONS)
        await other.open()
        out.append(Contender(f"ours @ {name}: asyncpg_pool (default)", _asyncpg_op(other), other.close))

    apool = await asyncpg.create_pool(PG_DSN, min_size=CONNECTIONS, max_size=CONNECTIONS)

    async def asyncpg_op() -> None:
        async with apool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    out.append(Contender("asyncpg.Pool", asyncpg_op, apool.close))

    ppool = psycopg_pool.AsyncConnectionPool(
        PG_DSN, min_size=CONNECTIONS, max_size=CONNECTIONS, kwargs={"autocommit": True}, open=False
    )
    await ppool.open(wait=True)

    async def psycopg_op() -> None:
        async with ppool.connection() as conn:
            cur = await conn.execute("SELECT 1")
            await cur.fetchone()

    out.append(Contender("psycopg_pool.AsyncConnectionPool", psycopg_op, ppool.close))
    return out


def _checkout_adapters(path: str) -> tuple[str, Any]:
    """The adapters module of another checkout (see pool_bench.load_checkout)."""
    import importlib

    from benchmarks.pool_bench import load_checkout

    label, package = load_checkout(path)
    return label, importlib.import_module(f"{package.__name__}.resources.adapters")


def _asyncpg_op(pool: Any) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    return op


# --- Redis contenders -----------------------------------------------------------------------------


async def redis_contenders(compare_with: Sequence[str] = ()) -> list[Contender]:
    import redis.asyncio as redis_asyncio
    from redis.exceptions import ConnectionError as RedisConnectionError

    from sanaa_async_mem.resources.adapters import redis_pool

    out: list[Contender] = []
    clients = [
        redis_asyncio.Redis.from_url(REDIS_URL, single_connection_client=True) for _ in range(CONNECTIONS)
    ]
    for c in clients:
        await c.initialize()
    floor = Floor(clients)

    async def floor_op() -> None:
        async with floor.acquire() as client:
            await client.ping()

    async def floor_close() -> None:
        for c in clients:
            await c.aclose()

    out.append(Contender("floor: Semaphore + deque over Redis clients", floor_op, floor_close))

    pool = redis_pool(REDIS_URL, min_size=CONNECTIONS, max_size=CONNECTIONS)
    await pool.open()

    async def ours_op() -> None:
        async with pool.acquire() as client:
            await client.ping()

    out.append(Contender("ours: redis_pool (default check+reset)", ours_op, pool.close))
    for path in compare_with:
        name, adapters = _checkout_adapters(path)
        other = adapters.redis_pool(REDIS_URL, min_size=CONNECTIONS, max_size=CONNECTIONS)
        await other.open()
        out.append(Contender(f"ours @ {name}: redis_pool (default)", _redis_op(other), other.close))

    blocking = redis_asyncio.Redis(
        connection_pool=redis_asyncio.BlockingConnectionPool.from_url(
            REDIS_URL, max_connections=CONNECTIONS, timeout=30
        )
    )

    async def blocking_op() -> None:
        await blocking.ping()

    async def blocking_close() -> None:
        await blocking.aclose(close_connection_pool=True)

    out.append(Contender("redis-py BlockingConnectionPool", blocking_op, blocking_close))

    plain = redis_asyncio.Redis(
        connection_pool=redis_asyncio.ConnectionPool.from_url(REDIS_URL, max_connections=CONNECTIONS)
    )
    plain_contender = Contender("redis-py ConnectionPool", plain.ping, plain.aclose)

    async def plain_op() -> None:
        try:
            await plain.ping()
        except RedisConnectionError:  # "Too many connections": it does not wait
            plain_contender.errors += 1
            await asyncio.sleep(0)
            raise _Failed from None

    plain_contender.op = plain_op
    out.append(plain_contender)
    return out


def _redis_op(pool: Any) -> Callable[[], Awaitable[None]]:
    async def op() -> None:
        async with pool.acquire() as client:
            await client.ping()

    return op


class _Failed(Exception):
    """An op that failed (counted by the contender; not a latency sample)."""


# --- measuring ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Round:
    qps: float
    p50: float  # seconds
    p99: float
    max: float
    errors: int


async def run_round(contender: Contender, seconds: float) -> Round:
    samples: list[list[float]] = [[] for _ in range(TASKS)]
    errors_before = contender.errors
    stop = False
    perf = time.perf_counter
    op = contender.op

    async def worker(out: list[float]) -> None:
        while not stop:
            t0 = perf()
            try:
                await op()
            except _Failed:
                continue
            out.append(perf() - t0)

    started = perf()
    tasks = [asyncio.create_task(worker(s)) for s in samples]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    elapsed = perf() - started
    flat = [x for s in samples for x in s]
    return Round(
        qps=len(flat) / elapsed,
        p50=percentile(flat, 50),
        p99=percentile(flat, 99),
        max=max(flat, default=0.0),
        errors=contender.errors - errors_before,
    )


async def run_section(title: str, contenders: list[Contender], settings: Settings) -> dict[str, Any]:
    for c in contenders:
        await run_round(c, settings.warmup)
    per: dict[str, list[Round]] = {c.name: [] for c in contenders}
    floor_name = contenders[0].name
    for r in range(settings.rounds):
        order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
        for c in order:
            per[c.name].append(await run_round(c, settings.seconds))
    for c in contenders:
        with contextlib.suppress(Exception):
            await c.close()

    def med_ratio(name: str, field: str) -> float:
        return statistics.median(
            ratio(getattr(a, field), getattr(f, field))
            for a, f in zip(per[name], per[floor_name], strict=True)
        )

    rows = []
    results: dict[str, Any] = {}
    for c in contenders:
        rounds = per[c.name]
        med = {f: statistics.median(getattr(x, f) for x in rounds) for f in ("qps", "p50", "p99", "max")}
        ratios = {f: med_ratio(c.name, f) for f in ("qps", "p50", "p99", "max")}
        errors = sum(x.errors for x in rounds)
        results[c.name] = {
            "median": med,
            "x_floor": ratios,
            "errors": errors,
            "rounds": [dataclasses.asdict(x) for x in rounds],
        }
        rows.append(
            [
                c.name,
                f"{med['qps']:,.0f}",
                f"{ratios['qps']:.2f}x",
                f"{med['p50'] * 1e3:.2f}",
                f"{ratios['p50']:.2f}x",
                f"{med['p99'] * 1e3:.2f}",
                f"{ratios['p99']:.2f}x",
                f"{med['max'] * 1e3:.1f}",
                f"{ratios['max']:.2f}x",
                errors,
            ]
        )
    print_table(
        f"{title}: {TASKS} tasks share {CONNECTIONS} connections ({settings.rounds} rounds x "
        f"{settings.seconds:g}s; medians; 'x' = ratio to the floor in the same round)",
        ["contender", "ops/s", "x", "p50 ms", "x", "p99 ms", "x", "max ms", "x", "errors"],
        rows,
    )
    ours = contenders[1].name
    met_qps = results[ours]["x_floor"]["qps"] >= TARGET_THROUGHPUT
    met_p99 = results[ours]["x_floor"]["p99"] <= TARGET_P99
    x = results[ours]["x_floor"]
    print(
        f"targets for {ours!r}: throughput >= {TARGET_THROUGHPUT}x floor: "
        f"{'met' if met_qps else 'MISSED'} ({x['qps']:.2f}x); "
        f"p99 <= {TARGET_P99}x floor: {'met' if met_p99 else 'MISSED'} ({x['p99']:.2f}x)"
    )
    results["_targets"] = {"throughput_met": met_qps, "p99_met": met_p99}
    return results


async def main_async(
    settings: Settings, sections: Sequence[str], compare_with: Sequence[str] = ()
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "pg" in sections:
        if reachable("127.0.0.1", int(os.environ.get("SANAA_PG_PORT", "5432"))):
            results["postgresql_select_1"] = await run_section(
                "PostgreSQL SELECT 1", await pg_contenders(compare_with), settings
            )
        else:
            print("\nPostgreSQL is not reachable on 127.0.0.1:5432: section skipped")
    if "redis" in sections:
        if reachable("127.0.0.1", int(os.environ.get("SANAA_REDIS_PORT", "6379"))):
            results["redis_ping"] = await run_section(
                "Redis PING", await redis_contenders(compare_with), settings
            )
        else:
            print("\nRedis is not reachable on 127.0.0.1:6379: section skipped")
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds per section: a smoke test")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--rounds", type=int, help="rounds (medians are taken over them)")
    parser.add_argument("--seconds", type=float, help="seconds per contender per round")
    parser.add_argument("--sections", default="pg,redis", help="comma-separated: pg,redis")
    parser.add_argument("--write", action="store_true", help="write the JSON even with --quick")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON")
    parser.add_argument(
        "--compare-with",
        action="append",
        default=[],
        metavar="PATH",
        help="also measure the adapters of the checkout at PATH (e.g. the commit before a change)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.rounds or args.seconds:
        settings = dataclasses.replace(
            settings, rounds=args.rounds or settings.rounds, seconds=args.seconds or settings.seconds
        )
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if args.loop == "uvloop":
        import uvloop

        results = uvloop.run(main_async(settings, sections, args.compare_with))
    else:
        results = asyncio.run(main_async(settings, sections, args.compare_with))
    if results and (args.write or not (args.quick or args.no_write)):
        command = " ".join([COMMAND, *(sys.argv[1:] if argv is None else argv)])
        write_results(
            "db_bench", {"loop": args.loop, "settings": dataclasses.asdict(settings), **results}, command
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
