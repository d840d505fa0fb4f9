"""FleetBudget: the Lua scripts against a real Redis, the pool integration, cancellation, bad options, and
the degraded mode against a redis-server this test starts, kills and restarts itself."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sanaa_async_mem import AsyncPool
from sanaa_async_mem.errors import ConfigurationError, PoolTimeout
from sanaa_async_mem.fleet import FleetBudget
from sanaa_async_mem.fleet import _scripts as scripts

pytestmark = [pytest.mark.services]


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rds(redis_url: str) -> AsyncIterator[Any]:
    import redis.asyncio as redis_asyncio

    client = redis_asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def _run(client: Any, script: scripts.Script, name: str, *args: Any) -> Any:
    keys = scripts.keys_for("sanaa:budget", name)
    return await client.eval(script.source, len(keys), *keys, *args)


async def _acquire(
    client: Any,
    name: str,
    holder: str,
    total: int,
    want: list[str],
    *,
    ttl_ms: int = 10_000,
    cancel: tuple[str, ...] = (),
) -> list[str]:
    reply = await _run(client, scripts.ACQUIRE, name, holder, total, ttl_ms, len(cancel), *cancel, *want)
    return [t.decode() for t in reply[0]]


async def _held(client: Any, name: str) -> dict[str, int]:
    raw = await client.hgetall(scripts.keys_for("sanaa:budget", name)[1])
    return {k.decode(): int(v) for k, v in raw.items()}


async def _cleanup(client: Any, name: str) -> None:
    await client.delete(*scripts.keys_for("sanaa:budget", name))


# ----------------------------------------------------------------------------------------- the scripts


async def test_leases_go_to_tickets_in_arrival_order(rds: Any) -> None:
    name = _name()
    try:
        assert await _acquire(rds, name, "A", 2, ["A|1", "A|2", "A|3"]) == ["A|1", "A|2"]
        # B arrives after A's third ticket: it waits behind it.
        assert await _acquire(rds, name, "B", 2, ["B|1"]) == []
        await _run(rds, scripts.SYNC, name, "A", 10_000, 1, "0")  # A gives one back
        # One lease free, but A|3 is first in line: B's poll gets nothing, A's does.
        assert await _acquire(rds, name, "B", 2, ["B|1"]) == []
        assert await _acquire(rds, name, "A", 2, ["A|3"]) == ["A|3"]
        assert await _held(rds, name) == {"A": 2, "B": 0}
        await _run(rds, scripts.SYNC, name, "A", 10_000, 1, "0")
        assert await _acquire(rds, name, "B", 2, ["B|1"]) == ["B|1"]
        assert await _held(rds, name) == {"A": 1, "B": 1}
    finally:
        await _cleanup(rds, name)


async def test_figures_count_fleet_leases_waiting_and_active_holders(rds: Any) -> None:
    name = _name()
    try:
        await _acquire(rds, name, "A", 3, ["A|1", "A|2", "A|3"])
        await _acquire(rds, name, "B", 3, ["B|1", "B|2"])
        reply = await _run(rds, scripts.SYNC, name, "A", 10_000, 3, "0")
        used, waiting, others, active, recovering, mine = (int(x) for x in reply)
        assert (used, waiting, others, active, recovering, mine) == (3, 2, 2, 2, 0, 3)
    finally:
        await _cleanup(rds, name)


async def test_cancelled_tickets_leave_the_line(rds: Any) -> None:
    name = _name()
    try:
        assert await _acquire(rds, name, "A", 1, ["A|1"]) == ["A|1"]
        assert await _acquire(rds, name, "B", 1, ["B|1"]) == []
        assert await _acquire(rds, name, "C", 1, ["C|1"]) == []
        await _acquire(rds, name, "B", 1, [], cancel=("B|1",))
        await _run(rds, scripts.SYNC, name, "A", 10_000, 0, "0")
        assert await _acquire(rds, name, "C", 1, ["C|1"]) == ["C|1"]
    finally:
        await _cleanup(rds, name)


async def test_an_expired_holder_is_reaped_after_its_ttl_and_not_before(rds: Any) -> None:
    name = _name()
    try:
        assert await _acquire(rds, name, "dead", 2, ["dead|1", "dead|2"], ttl_ms=1500) == ["dead|1", "dead|2"]
        started = time.monotonic()
        # "dead" never renews. Until its record expires its leases stay taken.
        while time.monotonic() - started < 1.0:
            assert await _acquire(rds, name, "B", 2, ["B|1"]) == []
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 10
        while not await _acquire(rds, name, "B", 2, ["B|1"]):
            assert time.monotonic() < deadline, "the dead holder's leases never came back"
            await asyncio.sleep(0.05)
        assert time.monotonic() - started >= 1.4
        assert await _held(rds, name) == {"B": 1}
    finally:
        await _cleanup(rds, name)


async def test_tickets_not_polled_for_ttl_leave_the_line(rds: Any) -> None:
    name = _name()
    try:
        await _acquire(rds, name, "A", 1, ["A|1"])
        await _acquire(rds, name, "gone", 1, ["gone|1"], ttl_ms=300)  # polled once, then never again
        await _acquire(rds, name, "C", 1, ["C|1"])
        await _run(rds, scripts.SYNC, name, "A", 10_000, 0, "0")
        await asyncio.sleep(0.5)
        assert await _acquire(rds, name, "C", 1, ["C|1"]) == ["C|1"]
    finally:
        await _cleanup(rds, name)


async def test_rejoin_after_state_loss_opens_a_recovery_window(rds: Any) -> None:
    name = _name()
    try:
        await _acquire(rds, name, "A", 2, ["A|1"])
        await _cleanup(rds, name)  # Redis lost everything (restart without persistence)
        # A re-registers after the outage: nobody gets a lease for ttl, so others can re-register too.
        await _run(rds, scripts.SYNC, name, "A", 600, 1, "1")
        assert await _acquire(rds, name, "B", 2, ["B|1"], ttl_ms=600) == []
        await asyncio.sleep(0.7)
        await _run(rds, scripts.SYNC, name, "A", 10_000, 1, "0")
        assert await _acquire(rds, name, "B", 2, ["B|1"]) == ["B|1"]
    finally:
        await _cleanup(rds, name)


async def test_evalsha_falls_back_after_the_script_cache_is_flushed(redis_url: str, rds: Any) -> None:
    budget = FleetBudget(redis_url, name=_name(), total=2)
    pool: AsyncPool[object] = AsyncPool(object, max_size=2, budget=budget)
    async with pool:
        await rds.script_flush()
        async with pool.acquire():
            assert budget.stats().held == 1
        assert budget.stats().script_loads >= 1


# ------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"redis_url": "http://x"}, "redis_url"),
        ({"name": ""}, "name"),
        ({"name": "a|b"}, "name"),
        ({"total": 0}, "total"),
        ({"total": 2.5}, "total"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": float("nan")}, "ttl"),
        ({"ttl": 2, "heartbeat": 1.5}, "heartbeat"),
        ({"heartbeat": -1}, "heartbeat"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"degraded_mode": "panic"}, "degraded_mode"),
        ({"grace": -1}, "grace"),
        ({"local_share": 11}, "local_share"),
        ({"local_share": -1}, "local_share"),
        ({"degraded_mode": "refuse", "local_share": 2}, "local_share"),
        ({"expected_processes": 0}, "expected_processes"),
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"holder_id": ""}, "holder_id"),
    ],
)
def test_bad_options_name_the_parameter(kwargs: dict[str, Any], param: str) -> None:
    args: dict[str, Any] = {"redis_url": "redis://127.0.0.1:6379/0", "name": "db", "total": 10, **kwargs}
    url = args.pop("redis_url")
    with pytest.raises(ConfigurationError) as info:
        FleetBudget(url, **args)
    assert info.value.name == param


def test_local_share_defaults_to_total_over_expected_processes() -> None:
    url = "redis://127.0.0.1:6379/0"
    assert FleetBudget(url, name="db", total=20, expected_processes=8).local_share == 2
    assert FleetBudget(url, name="db", total=20).local_share == 0
    assert (
        FleetBudget(url, name="db", total=20, degraded_mode="refuse", expected_processes=8).local_share == 0
    )


def test_pool_refuses_a_budget_that_is_not_one() -> None:
    with pytest.raises(ConfigurationError, match="budget"):
        AsyncPool(object, budget="redis://x")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- pools


class Conn:
    closed = False


async def test_pools_sharing_a_budget_never_hold_more_than_total(redis_url: str, rds: Any) -> None:
    name = _name()
    budgets = [FleetBudget(redis_url, name=name, total=5, holder_id=f"p{i}") for i in range(3)]
    live = 0
    peak = 0

    def make() -> Conn:
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        return Conn()

    def close(c: Conn) -> None:
        nonlocal live
        live -= 1

    pools = [AsyncPool(make, max_size=4, close=close, budget=b, timeout=20) for b in budgets]
    for p in pools:
        await p.open()

    async def worker(pool: AsyncPool[Conn]) -> None:
        for _ in range(30):
            async with pool.acquire():
                await asyncio.sleep(0.002)

    try:
        await asyncio.gather(*(worker(p) for p in pools for _ in range(4)))
        assert peak <= 5
        assert peak >= 3  # every pool got some
        assert sum((await _held(rds, name)).values()) <= 5
    finally:
        for p in pools:
            await p.close()
    assert live == 0
    assert await _held(rds, name) == {}  # every lease given back on close


async def test_reusing_an_idle_object_does_not_touch_redis(redis_url: str) -> None:
    budget = FleetBudget(redis_url, name=_name(), total=2, heartbeat=2.5)
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=2, budget=budget)
    async with pool:
        async with pool.acquire():
            pass
        calls = 0
        real = budget._eval

        async def counting(*args: Any) -> Any:
            nonlocal calls
            calls += 1
            return await real(*args)

        budget._eval = counting  # type: ignore[method-assign]

        async def no_lease() -> None:
            raise AssertionError("acquire of an idle object asked the budget")

        budget.acquire = no_lease  # type: ignore[method-assign]
        await asyncio.sleep(0.2)  # let the agent settle
        before = calls
        for _ in range(2000):
            async with pool.acquire():
                pass
        assert calls - before <= 1  # at most one heartbeat in that time
        assert pool.stats().created == 1


async def test_a_failed_or_timed_out_creation_gives_its_lease_back(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=1)
    attempts = 0

    async def failing() -> Conn:
        nonlocal attempts
        attempts += 1
        raise OSError("connection refused")

    pool: AsyncPool[Conn] = AsyncPool(failing, max_size=1, budget=budget, timeout=0.3)
    async with pool:
        with pytest.raises(OSError):
            async with pool.acquire():
                pass
        await _wait_for(lambda: budget.stats().held == 0)
        await _wait_for_async(lambda: _held(rds, name), {budget.holder_id: 0})
    assert attempts >= 1


async def test_a_creation_cancelled_mid_factory_gives_its_lease_back(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=1)
    started = asyncio.Event()

    async def slow() -> Conn:
        started.set()
        await asyncio.sleep(30)
        return Conn()

    pool: AsyncPool[Conn] = AsyncPool(slow, max_size=1, budget=budget)
    await pool.open()
    waiter = asyncio.create_task(pool.get())
    await started.wait()
    assert budget.stats().in_use == 1
    await pool.close()  # cancels the factory call
    with pytest.raises(Exception):  # noqa: B017 - PoolClosed
        await waiter
    assert budget.stats().held == 0 and budget.stats().in_use == 0
    assert await _held(rds, name) == {}


async def test_closing_objects_gives_leases_back_after_the_close_hook(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=2)
    gate = asyncio.Event()

    async def close(c: Conn) -> None:
        await gate.wait()

    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=2, budget=budget, close=close)
    async with pool:
        async with pool.acquire():
            pass
        assert budget.stats().in_use == 1
        pool.trim_idle()
        await asyncio.sleep(0.1)
        assert budget.stats().in_use == 1  # still closing: the lease stays
        gate.set()
        await _wait_for(lambda: budget.stats().in_use == 0)
        await _wait_for_async(lambda: _held(rds, name), {budget.holder_id: 0})


async def test_a_resource_manager_pool_takes_the_budget_as_a_pool_option(redis_url: str, rds: Any) -> None:
    from sanaa_async_mem import ResourceManager

    name = _name()
    budget = FleetBudget(redis_url, name=name, total=1, holder_id="M")
    async with ResourceManager() as manager:
        manager.register_factory("db", Conn, max_concurrent=3, budget=budget, timeout=0.5)
        async with manager.acquire("db") as conn:
            assert isinstance(conn, Conn)
            assert await _held(rds, name) == {"M": 1}
            with pytest.raises(PoolTimeout):  # the pool may grow to 3, the budget says 1
                async with manager.acquire("db"):
                    pass
    assert await _held(rds, name) == {}


# ------------------------------------------------------------------------------------- cancellation


async def test_cancel_while_waiting_in_line_loses_nothing(redis_url: str, rds: Any) -> None:
    name = _name()
    a = FleetBudget(redis_url, name=name, total=1, holder_id="A")
    b = FleetBudget(redis_url, name=name, total=1, holder_id="B")
    pa: AsyncPool[Conn] = AsyncPool(Conn, max_size=1, budget=a)
    pb: AsyncPool[Conn] = AsyncPool(Conn, max_size=1, budget=b)
    async with pa, pb:
        held = await pa.get()
        task = asyncio.create_task(b.acquire())
        await _wait_for_async(lambda: _queue(rds, name), 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _wait_for_async(lambda: _queue(rds, name), 0)  # the ticket left the line
        assert b.stats().in_use == 0
        await pa.put(held)
        pa.trim_idle()
        # The freed lease is not stuck on the cancelled ticket: B's pool gets it.
        async with pb.acquire():
            pass
        assert b.stats().held == 1


async def test_cancel_after_the_grant_gives_the_lease_back(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=1, holder_id="A")
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=1, budget=budget)
    async with pool:
        # Cancel at each step of an acquire: before its first poll, after the grant, in between.
        for delay in (0.0, 0.001, 0.005, 0.02, 0.05):
            task = asyncio.create_task(budget.acquire())
            await asyncio.sleep(delay)
            task.cancel()
            try:
                await task
                budget.release()  # it won: give it back ourselves
            except asyncio.CancelledError:
                pass
            await _wait_for(lambda: budget.stats().in_use == 0)
        await _wait_for_async(lambda: _held(rds, name), {"A": 0})
        await _wait_for_async(lambda: _queue(rds, name), 0)
        # The lease is still usable.
        async with pool.acquire():
            pass


async def test_cancelling_pool_callers_at_every_await_leaks_no_lease(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=2, holder_id="A")

    async def make() -> Conn:
        await asyncio.sleep(0.003)
        return Conn()

    async def close(c: Conn) -> None:
        await asyncio.sleep(0.002)

    pool: AsyncPool[Conn] = AsyncPool(make, max_size=3, budget=budget, close=close, max_lifetime=0.05)
    async with pool:
        for delay in [i * 0.001 for i in range(25)]:
            tasks = [asyncio.create_task(_use(pool)) for _ in range(4)]
            await asyncio.sleep(delay)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            st, ps = budget.stats(), pool.stats()
            # Objects in existence (and factory calls running) never outnumber the leases in use.
            assert st.in_use <= 2 and ps.size - ps.creating <= st.in_use
    assert budget.stats().held == 0 and budget.stats().in_use == 0
    assert await _held(rds, name) == {}


async def _use(pool: AsyncPool[Conn]) -> None:
    async with pool.acquire():
        await asyncio.sleep(0.002)


async def test_an_open_cancelled_while_registering_can_be_retried(redis_url: str, rds: Any) -> None:
    name = _name()
    budget = FleetBudget(redis_url, name=name, total=1, holder_id="A")
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=1, budget=budget)
    opening = asyncio.create_task(pool.open())
    await asyncio.sleep(0)  # inside the budget's first call to Redis
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    async with pool, pool.acquire():
        assert await _held(rds, name) == {"A": 1}
    assert await _held(rds, name) == {}
    assert budget.stats().held == 0


# ------------------------------------------------------------------------------------- fair share


async def test_a_lone_busy_process_uses_the_whole_budget(redis_url: str) -> None:
    name = _name()
    hot = FleetBudget(redis_url, name=name, total=6, holder_id="hot")
    idle = [FleetBudget(redis_url, name=name, total=6, holder_id=f"idle{i}") for i in range(3)]
    pools = [AsyncPool(Conn, max_size=6, budget=b) for b in [hot, *idle]]
    for p in pools:
        await p.open()
    try:
        held = [await pools[0].get() for _ in range(6)]
        assert hot.stats().held == 6
        for c in held:
            await pools[0].put(c)
    finally:
        for p in pools:
            await p.close()


async def test_idle_objects_above_the_fair_share_are_given_back_to_waiters(redis_url: str) -> None:
    name = _name()
    hot = FleetBudget(redis_url, name=name, total=4, holder_id="hot", heartbeat=0.1, ttl=1)
    other = FleetBudget(redis_url, name=name, total=4, holder_id="other", heartbeat=0.1, ttl=1)
    ph: AsyncPool[Conn] = AsyncPool(Conn, max_size=4, budget=hot)
    po: AsyncPool[Conn] = AsyncPool(Conn, max_size=4, budget=other, timeout=10)
    async with ph, po:
        conns = [await ph.get() for _ in range(4)]
        for c in conns:
            await ph.put(c)  # four idle connections, all the budget
        assert hot.stats().held == 4
        got = [await po.get() for _ in range(2)]  # the other process waits: hot gives back down to 2
        assert other.stats().held == 2
        assert hot.stats().held == 2
        assert hot.stats().shed >= 2
        for c in got:
            await po.put(c)


async def test_held_objects_above_the_fair_share_are_retired_on_return(redis_url: str) -> None:
    name = _name()
    hot = FleetBudget(redis_url, name=name, total=2, holder_id="hot", heartbeat=0.1, ttl=1)
    other = FleetBudget(redis_url, name=name, total=2, holder_id="other", heartbeat=0.1, ttl=1)
    ph: AsyncPool[Conn] = AsyncPool(Conn, max_size=2, budget=hot)
    po: AsyncPool[Conn] = AsyncPool(Conn, max_size=2, budget=other, timeout=10)
    async with ph, po:
        a, b = await ph.get(), await ph.get()  # both held (busy): nothing idle to shed
        waiter = asyncio.create_task(_get_and_put(po))
        await _wait_for(lambda: hot.stats().shed >= 1)
        await ph.put(a)  # retired instead of reused
        await asyncio.wait_for(waiter, 10)
        assert other.stats().held == 1 and hot.stats().held == 1
        await ph.put(b)


# ------------------------------------------------------------------------------------- outages


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own, on a free port, without persistence (a restart loses all)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("own redis-server did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        import os

        if os.environ.get("SANAA_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed, and SANAA_REQUIRE_SERVICES=1 requires it")
        pytest.skip("redis-server is not installed (needed to kill and restart a Redis of the test's own)")
    server = OwnRedis()
    server.start()
    yield server
    server.kill()


async def test_degraded_mode_keeps_leases_then_grows_on_the_local_share_and_recovers(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sanaa.memory.fleet")
    name = _name()
    budget = FleetBudget(
        own_redis.url,
        name=name,
        total=4,
        expected_processes=2,
        grace=0.5,
        heartbeat=0.1,
        ttl=1,
        socket_timeout=0.3,
    )
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=4, budget=budget, timeout=0.5, create_timeout=6)
    async with pool:
        first = await pool.get()
        own_redis.kill()
        await _wait_for(lambda: budget.degraded)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.message]
        assert warnings and warnings[0].name == "sanaa.memory.fleet"
        assert budget.stats().held == 1  # kept
        # Within grace nothing grows; after it, up to the local share (2), and no further.
        second = await pool.get(timeout=3)
        assert budget.stats().held == 2 and budget.stats().fallback
        with pytest.raises(PoolTimeout):
            await pool.get(timeout=1)
        assert budget.stats().held == 2
        own_redis.start()
        await _wait_for(lambda: not budget.degraded, timeout=10)
        import redis.asyncio as redis_asyncio

        client = redis_asyncio.Redis.from_url(own_redis.url)
        try:
            await _wait_for_async(lambda: _held(client, name), {budget.holder_id: 2})
        finally:
            await client.aclose()
        assert any("reachable again" in r.message for r in caplog.records)
        # Recovered without restart: it grows through Redis again.
        third = await pool.get(timeout=8)
        assert budget.stats().held == 3
        for c in (first, second, third):
            await pool.put(c)


async def test_refuse_mode_does_not_grow_during_an_outage(own_redis: OwnRedis) -> None:
    budget = FleetBudget(
        own_redis.url,
        name=_name(),
        total=4,
        degraded_mode="refuse",
        grace=0.2,
        heartbeat=0.1,
        ttl=1,
        socket_timeout=0.3,
    )
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=4, budget=budget, timeout=1.5, create_timeout=5)
    async with pool:
        first = await pool.get()
        own_redis.kill()
        await _wait_for(lambda: budget.degraded)
        with pytest.raises(PoolTimeout):
            await pool.get()
        assert budget.stats().held == 1
        # The one it holds is still served.
        await pool.put(first)
        async with pool.acquire() as again:
            assert again is first
        assert budget.stats().degraded and budget.stats().held == 1


async def test_a_restart_that_loses_the_state_never_oversubscribes(own_redis: OwnRedis) -> None:
    name = _name()
    opts: dict[str, Any] = {"total": 3, "grace": 30, "heartbeat": 0.1, "ttl": 1.0, "socket_timeout": 0.3}
    a = FleetBudget(own_redis.url, name=name, holder_id="A", **opts)
    b = FleetBudget(own_redis.url, name=name, holder_id="B", **opts)
    pa: AsyncPool[Conn] = AsyncPool(Conn, max_size=3, budget=a)
    pb: AsyncPool[Conn] = AsyncPool(Conn, max_size=3, budget=b, timeout=8, create_timeout=8)
    async with pa, pb:
        held_a = [await pa.get(), await pa.get()]
        own_redis.kill()
        await _wait_for(lambda: a.degraded and b.degraded)
        own_redis.start()  # empty
        got = await pb.get()  # one lease is free after A re-registers its two
        release = asyncio.Event()
        waiter = asyncio.create_task(_get_and_put(pb, release))
        await asyncio.sleep(1.5)
        assert b.stats().in_use == 1  # the second one waits: A's two are registered again
        assert a.stats().held + b.stats().held <= 3
        await _wait_for(lambda: a.stats().fleet_leases == 3 and not a.degraded)
        await pa.put(held_a.pop())
        pa.trim_idle()
        await _wait_for(lambda: b.stats().in_use == 2)
        assert a.stats().held + b.stats().held <= 3
        release.set()
        await asyncio.wait_for(waiter, 8)
        await pb.put(got)
        await pa.put(held_a.pop())


# ------------------------------------------------------------------------------------- metrics


async def test_metrics_export_the_names_the_alert_rules_use(redis_url: str) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from sanaa_async_mem.integrations.prometheus import SanaaCollector

    budget = FleetBudget(redis_url, name=_name(), total=3)
    pool: AsyncPool[Conn] = AsyncPool(Conn, max_size=3, budget=budget)
    async with pool, pool.acquire():
        registry = CollectorRegistry()
        registry.register(SanaaCollector(pool, budget))
        text = generate_latest(registry).decode()
    for metric in (
        "sanaa_budget_total",
        "sanaa_budget_fleet_leases",
        "sanaa_budget_fleet_waiting",
        "sanaa_budget_degraded",
        "sanaa_budget_leases",
    ):
        assert f'{metric}{{budget="{budget.name}"}}' in text, metric
    assert f'sanaa_budget_total{{budget="{budget.name}"}} 3.0' in text
    assert f'sanaa_budget_fleet_leases{{budget="{budget.name}"}} 1.0' in text


# ------------------------------------------------------------------------------------- helpers


async def _get_and_put(pool: AsyncPool[Conn], release: asyncio.Event | None = None) -> None:
    async with pool.acquire():
        if release is not None:
            await release.wait()


async def _queue(client: Any, name: str) -> int:
    return int(await client.zcard(scripts.keys_for("sanaa:budget", name)[2]))


async def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def _wait_for_async(get: Any, expected: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = await get()
        if value == expected:
            return
        assert time.monotonic() < deadline, f"{value!r} != {expected!r}"
        await asyncio.sleep(0.02)
