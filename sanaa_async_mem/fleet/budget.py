"""FleetBudget: one connection budget shared by every process of a service, through Redis.

A service runs as N workers on M hosts, each with its own pool, and the database accepts a fixed number
of connections. Give every pool the same budget::

    budget = FleetBudget("redis://127.0.0.1:6379/0", name="orders-db", total=20)
    pool = AsyncPool(connect, max_size=10, budget=budget)

and a pool holds a connection only while it holds a lease of the budget, so the connections of all the
processes sharing it never exceed ``total``.

How it works
------------
* A lease is taken before each factory call and given back once the object is closed (or the call
  failed, or was cancelled). An acquire that reuses an idle object never touches Redis.
* Each process is a holder: a record with an expiry (``ttl``) renewed by a heartbeat, and a count of the
  leases it holds. A process killed with SIGKILL stops renewing; its record expires ``ttl`` after its last
  heartbeat and the next script run by any process reaps it: its leases return within ``ttl`` (plus one
  heartbeat), never before its record expires.
* A process that needs leases puts one ticket per lease in a line kept in Redis; leases go to tickets in
  arrival order (see :mod:`._scripts`). One background task per process (the agent) talks to Redis: it
  polls for the process's waiting tickets every ``poll_interval`` while there are some, gives leases back
  as soon as they are freed, and heartbeats every ``heartbeat`` seconds.
* Fair share: when tickets of other processes wait, a process holding more than ``total // active``
  leases (active: processes holding or waiting) closes its idle objects above that share, which gives
  their leases back. A lone busy process among idle ones can use the whole budget.

Redis outages (the degraded mode)
---------------------------------
While Redis cannot be reached the process keeps the leases it holds (and the objects on them), logs one
WARNING on ``sanaa.memory.fleet`` and reports ``degraded`` (``stats()`` and the
``sanaa_budget_degraded`` metric). For ``grace`` seconds it does not grow. After that, with
``degraded_mode="local_share"``, it may grow up to ``local_share`` leases of its own (default
``total // expected_processes`` when ``expected_processes`` is given, else 0: it does not grow); with
``degraded_mode="refuse"`` it does not grow until Redis is back. So during an outage longer than
``grace`` the fleet holds at most the sum over processes of ``max(leases held when the outage began,
local_share)``; ``local_share = total // expected_processes`` keeps that within ``total`` when every
process held no more than its share. Before ``grace`` ends, nothing grows: no over-subscription.

When Redis answers again the process re-registers its count (no restart needed) and logs the recovery. If
Redis came back empty (restarted without persistence), the first process to re-register opens a
recovery window of ``ttl`` seconds in which no lease is granted, so every live process has re-registered
its leases before new ones are given out. A process started for the first time while Redis is empty has
nothing to re-register and opens no window.

Limits, said plainly: a process cut off from Redis while the others still reach it (a partition, not an
outage) is reaped after ``ttl`` like a dead one, though it keeps its connections; until it reconnects and
sheds down, the fleet can exceed ``total`` by what that process holds. Choose ``ttl`` longer than the
partitions to ride out. Likewise a process started fresh during the recovery window's absence (Redis
restarted empty and no old process has re-registered yet) is granted leases before the old processes
re-register, and the fleet can exceed ``total`` until the fair-share give-back brings it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .. import config
from .._logging import get_logger
from ..errors import ConfigurationError, PoolError
from . import _scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["FleetBudget", "FleetBudgetStats"]

log = get_logger("memory.fleet")

DegradedMode = Literal["local_share", "refuse"]
_MODES = ("local_share", "refuse")
_clock = time.monotonic


@dataclasses.dataclass(frozen=True, slots=True)
class FleetBudgetStats:
    """One process's view of a fleet budget.

    ``held``: leases this process holds; ``in_use``: those attached to objects (or factory calls);
    ``waiting``: this process's callers waiting for a lease. ``fleet_leases``, ``fleet_waiting`` and
    ``processes`` are the whole fleet's figures as of the last answer from Redis (``synced_ago`` seconds
    ago; None before the first). ``degraded``: Redis is unreachable; ``fallback``: past ``grace``, growing
    on the local share. Counters: leases ``granted`` (by Redis or the local share), ``released``,
    ``shed`` (idle objects closed to give their lease to another process), ``redis_errors``,
    ``script_loads`` (EVALSHA fell back to loading the script), ``outages``.
    """

    name: str
    total: int
    held: int
    in_use: int
    waiting: int
    fleet_leases: int
    fleet_waiting: int
    processes: int
    recovering: bool
    degraded: bool
    fallback: bool
    local_share: int
    granted: int
    released: int
    shed: int
    redis_errors: int
    script_loads: int
    outages: int
    synced_ago: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Sheddable(Protocol):
    """What the budget needs of a pool: give up ``n`` objects (idle ones closed now, held ones retired
    when they come back), returning how many it gave up or had already retired."""

    def _shed_idle(self, n: int) -> int: ...


class FleetBudget:
    """A budget of ``total`` leases shared, through the Redis at ``redis_url``, by every process using a
    budget of the same ``name`` (see the module documentation).

    Parameters (seconds; each validated, a bad one raises ConfigurationError naming it):

    redis_url, name, total
        Where, which, and how many leases (the database's connections set aside for the service).
    ttl
        How long a process's record lives without a heartbeat: the delay after which a dead process's
        leases return (default 10).
    heartbeat
        How often the record is renewed; at most ``ttl / 2`` (default ``ttl / 4``).
    poll_interval
        How often a process with waiting callers asks for leases (default 0.05).
    degraded_mode, grace, local_share, expected_processes
        What happens while Redis cannot be reached (see the module documentation). ``local_share``
        defaults to ``total // expected_processes`` when that is given, else 0.
    socket_timeout
        Limit on one Redis call, connecting included (default 1): what an outage costs a call.
    key_prefix
        Prefix of the budget's Redis keys (default ``sanaa:budget``).
    holder_id
        This process's holder name (default ``host:pid:random``).

    A budget is bound to the event loop of the first pool opened with it; several pools of one process
    may share it. It starts with the first pool opened and stops (giving everything back) when the last
    one closes.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        name: str,
        total: int,
        ttl: float = 10.0,
        heartbeat: float | None = None,
        poll_interval: float = 0.05,
        degraded_mode: DegradedMode = "local_share",
        grace: float = 5.0,
        local_share: int | None = None,
        expected_processes: int | None = None,
        socket_timeout: float = 1.0,
        key_prefix: str = "sanaa:budget",
        holder_id: str | None = None,
    ) -> None:
        if not isinstance(redis_url, str) or not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("redis_url", redis_url, "must be a redis://, rediss:// or unix:// URL")
        if not isinstance(name, str) or not name or any(c in name for c in "{}|"):
            raise ConfigurationError("name", name, "must be a non-empty string without '{', '}' or '|'")
        self._total = config.positive_int("total", total)
        self._ttl = config.duration("ttl", ttl, allow_zero=False)
        if heartbeat is None:
            heartbeat = self._ttl / 4
        self._heartbeat = config.duration("heartbeat", heartbeat, allow_zero=False)
        if self._heartbeat > self._ttl / 2:
            raise ConfigurationError("heartbeat", heartbeat, f"must be at most ttl / 2 ({self._ttl / 2:g}s)")
        self._poll = config.duration("poll_interval", poll_interval, allow_zero=False)
        if degraded_mode not in _MODES:
            raise ConfigurationError("degraded_mode", degraded_mode, f"must be one of {_MODES}")
        self._mode: DegradedMode = degraded_mode
        self._grace = config.duration("grace", grace)
        if expected_processes is not None:
            expected_processes = config.positive_int("expected_processes", expected_processes)
        if local_share is not None:
            if degraded_mode == "refuse":
                raise ConfigurationError(
                    "local_share", local_share, "only applies with degraded_mode='local_share'"
                )
            local_share = config.positive_int("local_share", local_share, minimum=0, maximum=self._total)
        elif degraded_mode == "local_share" and expected_processes is not None:
            local_share = self._total // expected_processes
        self._local_share = local_share if (local_share is not None and degraded_mode == "local_share") else 0
        self._socket_timeout = config.duration("socket_timeout", socket_timeout, allow_zero=False)
        if not isinstance(key_prefix, str) or not key_prefix:
            raise ConfigurationError("key_prefix", key_prefix, "must be a non-empty string")
        if holder_id is None:
            holder_id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        elif not isinstance(holder_id, str) or not holder_id:
            raise ConfigurationError("holder_id", holder_id, "must be a non-empty string")
        self._url = redis_url
        self._name = name
        self._holder = holder_id
        self._keys = _scripts.keys_for(key_prefix, name)
        self._ttl_ms = int(self._ttl * 1000)

        self._redis: Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._agent: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._pools: list[_Sheddable] = []
        self._stopping: asyncio.Task[None] | None = None
        self._halt = False
        # The process's own books, the truth the agent reconciles Redis with.
        self._held = 0  # leases this process holds
        self._in_use = 0  # ... attached to an object or a factory call; the rest are spare
        self._synced_held = 0  # the count Redis has for us (as far as we know)
        self._waiters: OrderedDict[str, asyncio.Future[None]] = OrderedDict()  # ticket -> its caller
        self._cancelled: list[str] = []  # tickets to take out of the line
        self._tickets = itertools.count(1)
        # Fleet figures from the last answer.
        self._fleet_leases = 0
        self._fleet_waiting = 0
        self._others_waiting = 0
        self._processes = 0
        self._recovering = False
        self._synced_at: float | None = None
        # Outage state.
        self._degraded = False
        self._outage_since = 0.0
        self._fallback = False
        self._rejoin = False  # the next call must be a SYNC with rejoin=1
        self._registered = False  # Redis has known this process (a rejoin after an outage may open a window)
        # Counters.
        self._n_granted = 0
        self._n_released = 0
        self._n_shed = 0
        self._n_errors = 0
        self._n_loads = 0
        self._n_outages = 0

    # ------------------------------------------------------------------ public

    @property
    def name(self) -> str:
        return self._name

    @property
    def total(self) -> int:
        return self._total

    @property
    def holder_id(self) -> str:
        return self._holder

    @property
    def ttl(self) -> float:
        return self._ttl

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def local_share(self) -> int:
        return self._local_share

    def stats(self) -> FleetBudgetStats:
        return FleetBudgetStats(
            name=self._name,
            total=self._total,
            held=self._held,
            in_use=self._in_use,
            waiting=len(self._waiters),
            fleet_leases=self._fleet_leases,
            fleet_waiting=self._fleet_waiting,
            processes=self._processes,
            recovering=self._recovering,
            degraded=self._degraded,
            fallback=self._fallback,
            local_share=self._local_share,
            granted=self._n_granted,
            released=self._n_released,
            shed=self._n_shed,
            redis_errors=self._n_errors,
            script_loads=self._n_loads,
            outages=self._n_outages,
            synced_ago=None if self._synced_at is None else _clock() - self._synced_at,
        )

    def metric_readings(self) -> Iterable[tuple[str, str, object]]:
        """For the metrics exporters: ``("budget", name, stats())`` (see integrations.readings)."""
        return [("budget", self._name, self.stats())]

    async def acquire(self) -> None:
        """Take one lease (waiting in the fleet's line if none is free). Cancelling the wait loses
        nothing: a lease granted to a cancelled caller is given back. The caller must :meth:`release` it."""
        if self._agent is None:
            raise PoolError(f"fleet budget {self._name!r} is not started: open a pool that uses it first")
        if self._held > self._in_use and not (self._others_waiting and not self._degraded):
            self._in_use += 1  # a spare lease (not given back yet): no Redis
            return
        assert self._loop is not None and self._wake is not None
        ticket = f"{self._holder}|{next(self._tickets)}"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiters[ticket] = fut
        self._wake.set()
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Granted (in_use was counted for us) but we are leaving: give it back.
                self.release()
            else:
                fut.cancel()
                if self._waiters.pop(ticket, None) is not None:
                    self._cancelled.append(ticket)
                    self._wake.set()
            raise

    def release(self) -> None:
        """Give back one lease taken with :meth:`acquire` (synchronous: the agent tells Redis)."""
        if self._in_use <= 0:
            log.error("fleet budget %r: release() without a lease", self._name)
            return
        self._in_use -= 1
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ pools

    async def _attach(self, pool: _Sheddable) -> None:
        """A pool using the budget opens: start the agent (first pool), register this process."""
        loop = asyncio.get_running_loop()
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
        if self._loop is not None and self._loop is not loop and self._agent is not None:
            raise PoolError(f"fleet budget {self._name!r} is in use on another event loop")
        if pool not in self._pools:
            self._pools.append(pool)
        if self._agent is not None:
            return
        self._loop = loop
        self._wake = asyncio.Event()
        if self._redis is None:
            self._redis = self._client()
        # Register (and learn the fleet's figures) before the first acquire; an outage is not an error.
        try:
            await self._sync()
        except Exception as exc:
            self._outage(exc)
        self._agent = loop.create_task(self._run(), name=f"fleet-budget-{self._name}")

    async def _detach(self, pool: _Sheddable) -> None:
        """A pool closed (all its objects closed): the last one stops the agent and gives all back."""
        with contextlib.suppress(ValueError):
            self._pools.remove(pool)
        if self._pools or self._agent is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        agent, self._agent = self._agent, None
        try:
            if agent is not None:
                # The flag ends the agent's loop even if the cancellation meets one of its own timeouts
                # (asyncio.timeout may turn the pair into a TimeoutError, which the loop ignores).
                self._halt = True
                if self._wake is not None:
                    self._wake.set()
                agent.cancel()
                await asyncio.wait([agent])
            self._halt = False
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(PoolError(f"fleet budget {self._name!r} stopped"))
            self._waiters.clear()
            with contextlib.suppress(Exception):
                await self._eval(_scripts.LEAVE, [self._holder])
            self._held = 0
            self._synced_held = 0
            if self._redis is not None:
                redis, self._redis = self._redis, None
                with contextlib.suppress(Exception):
                    await redis.aclose()
        finally:
            self._stopping = None

    # ------------------------------------------------------------------ Redis

    def _client(self) -> Redis:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        return Redis.from_url(
            self._url,
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
            client_name=f"sanaa-budget:{self._holder}",
        )

    async def _eval(self, script: _scripts.Script, args: list[Any]) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script again) after a Redis restart."""
        from redis.exceptions import NoScriptError

        if self._redis is None:
            self._redis = self._client()
        redis = self._redis
        keys = self._keys
        try:
            return await redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self._n_loads += 1
            return await redis.eval(script.source, len(keys), *keys, *args)

    def _book_figures(self, figures: list[Any]) -> None:
        used, waiting, others, active, recovering, mine = (int(x) for x in figures[:6])
        self._fleet_leases = used
        self._fleet_waiting = waiting
        self._others_waiting = others
        self._processes = active
        self._recovering = bool(recovering)
        self._synced_held = mine
        self._synced_at = _clock()

    async def _sync(self) -> None:
        """SYNC: heartbeat, and set Redis's count for us to ours (gives spare leases back first)."""
        spare = self._held - self._in_use
        if spare > 0 and not self._degraded:
            self._held -= spare
            self._n_released += spare
        # (While degraded, spare leases are kept: the outage handler keeps what it holds.)
        rejoin = "1" if (self._rejoin and self._registered) else "0"
        try:
            figures = await self._eval(_scripts.SYNC, [self._holder, self._ttl_ms, self._held, rejoin])
        except BaseException:
            if spare > 0 and not self._degraded:
                # Not told: keep them (they are still ours in Redis as far as we know).
                self._held += spare
                self._n_released -= spare
            raise
        self._rejoin = False
        self._registered = True
        self._book_figures(figures)

    async def _poll_once(self) -> None:
        """ACQUIRE for every waiting caller's ticket (and take cancelled ones out of the line)."""
        cancelled = self._cancelled
        self._cancelled = []
        wanted = list(self._waiters)
        try:
            reply = await self._eval(
                _scripts.ACQUIRE,
                [self._holder, self._total, self._ttl_ms, len(cancelled), *cancelled, *wanted],
            )
        except BaseException:
            self._cancelled = cancelled + self._cancelled
            raise
        granted = [t.decode() if isinstance(t, bytes) else str(t) for t in reply[0]]
        self._held += len(granted)
        self._n_granted += len(granted)
        for ticket in granted:
            self._grant(self._waiters.pop(ticket, None))
        self._book_figures(reply[1:])

    def _grant(self, fut: asyncio.Future[None] | None) -> None:
        """A lease held by this process goes to ``fut``'s caller (or stays spare if it left)."""
        if fut is not None and not fut.done():
            self._in_use += 1
            fut.set_result(None)

    # ------------------------------------------------------------------ the agent

    async def _run(self) -> None:
        """The one task that talks to Redis: polls for waiting callers, gives leases back, heartbeats,
        sheds objects above the fair share, and rides out outages."""
        assert self._wake is not None
        wake = self._wake
        next_beat = _clock() + self._heartbeat
        retry_delay = self._poll
        while not self._halt:
            wake.clear()  # before the work: whatever happens during it wakes the next wait
            now = _clock()
            try:
                if self._degraded or self._rejoin:
                    await self._sync()  # re-register first (rejoin)
                    self._recovered()
                    next_beat = now + self._heartbeat
                if self._cancelled or self._waiters:
                    await self._poll_once()
                if self._held > self._in_use or now >= next_beat or self._synced_held != self._held:
                    await self._sync()
                    next_beat = now + self._heartbeat
                    self._shed_excess()
                retry_delay = self._poll
            except asyncio.CancelledError:
                if self._halt:
                    raise
                # Only _stop cancels the agent (after setting _halt): this is a stray cancellation (on
                # 3.11 an expiring timeout inside the Redis client can leave one behind). Carry on.
                retry_delay = self._poll
            except Exception as exc:
                if not _is_outage(exc):
                    log.exception("fleet budget %r: unexpected error talking to Redis", self._name)
                self._outage(exc)
                retry_delay = min(retry_delay * 2, max(self._poll, min(self._heartbeat, 1.0)))
            if self._degraded:
                self._grow_degraded()
                timeout = retry_delay
            elif self._waiters or self._cancelled:
                timeout = self._poll
            else:
                timeout = max(0.0, next_beat - _clock())
            # A timer that sets the event, not asyncio.timeout: no cancellation to go astray.
            assert self._loop is not None
            timer = self._loop.call_later(timeout, wake.set)
            try:
                await wake.wait()
            finally:
                timer.cancel()

    def _shed_excess(self) -> None:
        """Others wait (or the fleet is over budget after an outage): close idle objects above the fair
        share, which gives their leases back at the next sync."""
        if self._degraded:
            return
        over = self._fleet_leases - self._total
        if not (self._others_waiting or over > 0):
            return
        fair = max(1, self._total // max(1, self._processes))
        excess = self._held - fair
        if excess <= 0:
            return
        want = excess if over > 0 else min(excess, self._others_waiting)
        if over > 0:
            want = min(excess, max(over, self._others_waiting))
        for pool in list(self._pools):
            if want <= 0:
                break
            given = pool._shed_idle(want)
            want -= given
            self._n_shed += given
        if self._held > self._in_use and self._wake is not None:
            self._wake.set()

    def _outage(self, exc: BaseException) -> None:
        self._n_errors += 1
        if self._degraded:
            return
        self._degraded = True
        self._rejoin = True
        self._outage_since = _clock()
        self._n_outages += 1
        if self._mode == "local_share" and self._local_share:
            then = f"after {self._grace:g}s it may grow up to its local share of {self._local_share}"
        else:
            then = "it will not grow until Redis is back"
        log.warning(
            "fleet budget %r: Redis unreachable (%r); degraded mode: keeping the %d lease(s) held, %s",
            self._name,
            exc,
            self._held,
            then,
            extra={
                "sanaa_budget": self._name,
                "sanaa_event": "budget_degraded",
                "sanaa_held": self._held,
                "sanaa_local_share": self._local_share,
            },
        )

    def _grow_degraded(self) -> None:
        """Past ``grace`` in local_share mode: grant waiting callers up to the local share."""
        if self._mode != "local_share" or _clock() - self._outage_since < self._grace:
            return
        if not self._fallback:
            self._fallback = True
            log.warning(
                "fleet budget %r: Redis still unreachable after %gs; growing on the local share (%d)",
                self._name,
                self._grace,
                self._local_share,
                extra={"sanaa_budget": self._name, "sanaa_event": "budget_fallback"},
            )
        while self._waiters and self._held < self._local_share:
            _, fut = self._waiters.popitem(last=False)
            if fut.done():
                continue
            self._held += 1
            self._n_granted += 1
            self._grant(fut)

    def _recovered(self) -> None:
        if not self._degraded:
            return
        took = _clock() - self._outage_since
        self._degraded = False
        self._fallback = False
        # Tickets of callers still waiting were dropped from the line if the outage was long: re-queue.
        log.warning(
            "fleet budget %r: Redis reachable again after %.3gs; re-registered %d lease(s)",
            self._name,
            took,
            self._held,
            extra={"sanaa_budget": self._name, "sanaa_event": "budget_recovered", "sanaa_held": self._held},
        )

    def __repr__(self) -> str:
        state = "degraded" if self._degraded else ("running" if self._agent is not None else "stopped")
        return (
            f"<FleetBudget {self._name!r} {state} total={self._total} held={self._held} "
            f"in_use={self._in_use} waiting={len(self._waiters)}>"
        )


def _is_outage(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError | TimeoutError)
