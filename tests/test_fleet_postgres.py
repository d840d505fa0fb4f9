"""The proof: 8 worker processes, each with AsyncPool(max_size=10) of real psycopg connections, share a
FleetBudget of 20 through a redis-server this test owns, under load. An independent checker samples
``pg_stat_activity`` every 50 ms (connections whose application_name is this run's tag):

* the count never exceeds 20;
* a worker holding leases is killed with SIGKILL: the others do not get its leases before its record
  expires (the PostgreSQL count stays at or below 20 minus what it held), and do get them within the TTL;
* the redis-server is killed and restarted (empty) mid-load: no deadlock (every worker keeps serving), no
  over-subscription (``grace`` is longer than the outage, so the degraded mode allows no growth), and
  every worker recovers without a restart.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_fleet_budget import OwnRedis, own_redis  # noqa: F401 - the fixture

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(150)]

TOTAL = 20
WORKERS = 8
TTL = 3.0
HEARTBEAT = 0.5

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    import psycopg
    from sanaa_async_mem import AsyncPool
    from sanaa_async_mem.fleet import FleetBudget

    redis_url, name, dsn, tag, status_path, stop_path = sys.argv[1:7]
    total, ttl, heartbeat = int(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9])

    async def connect():
        return await psycopg.AsyncConnection.connect(dsn, application_name=tag, autocommit=True)

    async def close(conn):
        await conn.close()

    async def main():
        budget = FleetBudget(redis_url, name=name, total=total, ttl=ttl, heartbeat=heartbeat,
                             grace=30.0, expected_processes=8, socket_timeout=0.5)
        pool = AsyncPool(connect, max_size=10, budget=budget, close=close, alive=lambda c: not c.closed,
                         discard_on=(psycopg.Error,), timeout=60, create_timeout=60)
        ops = errors = 0
        async def load():
            nonlocal ops, errors
            while not os.path.exists(stop_path):
                try:
                    async with pool.acquire() as conn:
                        await conn.execute("select pg_sleep(0.005)")
                    ops += 1
                except Exception as exc:
                    errors += 1
                    print("worker error:", repr(exc), file=sys.stderr, flush=True)
                    await asyncio.sleep(0.05)
        async def report():
            while True:
                st = budget.stats()
                data = dict(holder=budget.holder_id, held=st.held, in_use=st.in_use, degraded=st.degraded,
                            outages=st.outages, ops=ops, errors=errors, size=pool.stats().size, t=time.time())
                with open(status_path + ".tmp", "w") as f:
                    json.dump(data, f)
                os.replace(status_path + ".tmp", status_path)
                await asyncio.sleep(0.1)
        async with pool:
            reporter = asyncio.create_task(report())
            await asyncio.gather(*(load() for _ in range(12)))
            reporter.cancel()
        print("clean exit", file=sys.stderr, flush=True)

    asyncio.run(main())
    """
)


class Checker(threading.Thread):
    """Counts the tag's connections in pg_stat_activity every 50 ms, from a connection of its own."""

    def __init__(self, dsn: str, tag: str) -> None:
        super().__init__(daemon=True)
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True, application_name=f"{tag}-checker")
        self.tag = tag
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            row = self.conn.execute(
                "select count(*) from pg_stat_activity where application_name = %s", (self.tag,)
            ).fetchone()
            assert row is not None
            self.samples.append((time.monotonic(), int(row[0])))
            time.sleep(0.05)
        self.conn.close()

    def peak(self, since: float = 0.0, until: float = float("inf")) -> int:
        return max((n for t, n in self.samples if since <= t <= until), default=0)


class Fleet:
    def __init__(self, tmp: Path, redis_url: str, dsn: str, tag: str) -> None:
        self.tmp = tmp
        self.name = f"pg-{tag}"
        self.script = tmp / "worker.py"
        self.script.write_text(WORKER)
        self.stop_path = tmp / "stop"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_url, self.dsn, self.tag = redis_url, dsn, tag

    def start(self, n: int) -> None:
        for i in range(n):
            args = [
                sys.executable,
                str(self.script),
                self.redis_url,
                self.name,
                self.dsn,
                self.tag,
                str(self.tmp / f"status{i}.json"),
                str(self.stop_path),
                str(TOTAL),
                str(TTL),
                str(HEARTBEAT),
            ]
            log = open(self.tmp / f"worker{i}.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.tmp / f"status{i}.json").read_text()))
        except (OSError, ValueError):
            return None

    def statuses(self) -> list[dict[str, Any] | None]:
        return [self.status(i) for i in range(len(self.procs))]

    def stop(self) -> list[int | None]:
        self.stop_path.write_text("stop")
        codes: list[int | None] = []
        for p in self.procs:
            try:
                codes.append(p.wait(20))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(None)
        return codes

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i}:\n" + (self.tmp / f"worker{i}.log").read_text()[-1500:]
            for i in range(len(self.procs))
        )


def _until(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def fleet(tmp_path: Path, own_redis: OwnRedis, pg_dsn: str) -> Iterator[Fleet]:  # noqa: F811
    fleet = Fleet(tmp_path, own_redis.url, pg_dsn, f"sanaa-fleet-{uuid.uuid4().hex[:8]}")
    yield fleet
    for p in fleet.procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_eight_workers_never_exceed_the_budget_through_a_kill_and_a_redis_restart(
    fleet: Fleet,
    own_redis: OwnRedis,  # noqa: F811
) -> None:
    import redis

    checker = Checker(fleet.dsn, fleet.tag)
    checker.start()
    admin = redis.Redis.from_url(own_redis.url)
    held_key = f"sanaa:budget:{{{fleet.name}}}:held"
    try:
        fleet.start(WORKERS)
        # Load: every worker wants 10 connections, the budget is 20; the fleet fills it.
        _until(lambda: checker.peak(since=time.monotonic() - 1) >= TOTAL, 60, "the fleet to use the budget")
        _until(
            lambda: all(s is not None and s["ops"] > 0 for s in fleet.statuses()), 30, "every worker to serve"
        )
        time.sleep(2)

        # SIGKILL the worker holding the most leases (Redis's count of it, read just before the kill).
        held = {k.decode(): int(v) for k, v in admin.hgetall(held_key).items()}
        statuses = fleet.statuses()
        victim = max(range(WORKERS), key=lambda i: held.get(statuses[i]["holder"], 0))  # type: ignore[index]
        holder = statuses[victim]["holder"]  # type: ignore[index]
        k = held[holder]
        assert k > 0
        os.kill(fleet.procs[victim].pid, signal.SIGKILL)
        killed_at = time.monotonic()
        _until(lambda: not admin.hexists(held_key, holder), TTL + 5, "the dead worker's leases to be reaped")
        reaped_at = time.monotonic()
        # Not before its record expired (its last heartbeat was at most one heartbeat before the kill)...
        assert reaped_at - killed_at >= TTL - HEARTBEAT - 0.2, reaped_at - killed_at
        # ... and within the TTL (plus the next script run).
        assert reaped_at - killed_at <= TTL + 1.5, reaped_at - killed_at
        # Until then the others did not use the dead worker's share.
        assert checker.peak(killed_at + 0.5, reaped_at - 0.3) <= TOTAL - k
        # After it, they did.
        _until(lambda: checker.peak(since=reaped_at) >= TOTAL, 10, "the others to take the freed leases")

        # Kill the redis-server mid-load and start it again, empty.
        before = fleet.statuses()
        own_redis.kill()
        outage_at = time.monotonic()
        _until(
            lambda: sum(1 for s in fleet.statuses() if s and s["degraded"]) >= WORKERS - 1,
            10,
            "degraded mode",
        )
        time.sleep(1.0)
        own_redis.start()
        admin = redis.Redis.from_url(own_redis.url)
        _until(
            lambda: all(
                s is None or not s["degraded"] for i, s in enumerate(fleet.statuses()) if i != victim
            ),
            15,
            "every worker to recover",
        )
        recovered_at = time.monotonic()
        # No deadlock: every live worker serves again after the restart (once the recovery window of one
        # TTL is over, leases flow again: a worker left with none gets one from the fair-share give-back).
        mid = fleet.statuses()
        live = [i for i in range(WORKERS) if i != victim]

        def all_progressed() -> bool:
            now = fleet.statuses()
            return all(now[i] is not None and now[i]["ops"] > mid[i]["ops"] for i in live)  # type: ignore[index]

        _until(all_progressed, TTL + 15, "every worker to serve again after the restart")
        served_at = time.monotonic()
        final = fleet.statuses()
        assert all(final[i]["outages"] >= 1 for i in live)  # type: ignore[index]  # each saw it
        assert all(b is not None for b in before)
        # Re-registered: Redis counts every live worker's leases again, within the budget.
        registered = sum(int(v) for v in admin.hvals(held_key))
        assert 0 < registered <= TOTAL
        assert checker.peak(outage_at, served_at) <= TOTAL
        print(
            f"outage to recovery {recovered_at - outage_at:.2f}s, "
            f"to every worker serving {served_at - outage_at:.2f}s"
        )
    finally:
        codes = fleet.stop()
        checker.stop.set()
        checker.join(5)
        admin.close()
    print(f"peak {checker.peak()} over {len(checker.samples)} samples; victim held {k}")
    # Never above the budget, in any sample of the whole run.
    assert checker.peak() <= TOTAL, fleet.logs()
    assert len(checker.samples) > 100
    assert [c for i, c in enumerate(codes) if i != victim] == [0] * (WORKERS - 1), fleet.logs()
