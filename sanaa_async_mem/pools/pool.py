"""AsyncPool: a fair, cancellation-safe asyncio pool of expensive objects.

How it works, in one screen
---------------------------
Every object the pool owns has an entry in ``_entries`` and is in exactly one of these states; the pool's
size is the number of entries plus the factory calls in flight (never above ``max_size``)::

    size = len(idle) + in_use + returning + creating

* idle: in the ``_idle`` deque, used LIFO (hot objects stay hot, cold ones age out by ``max_idle``);
* in use: handed to a caller (``entry.holder`` is its task), to a waiter whose task has not resumed yet,
  or being checked before a hand-out;
* returning: an asynchronous ``reset`` in flight, in a task of its own;
* creating: a factory call in flight, in a task of its own (no entry yet).

Waiting callers are in a :class:`~sanaa_async_mem.pools.waitqueue.WaitQueue`: a freed object is handed
straight to the oldest caller still waiting (its future is resolved with the entry), never put back where
the releasing task could take it again. A waiter whose task was cancelled (or whose deadline passed) after
the hand-over passes the object on. Deadlines are timers on the loop's clock; they never cancel anything.

All changes of that state happen in small synchronous methods that never await (:meth:`_give`,
:meth:`_take_back`, :meth:`_drop`, :meth:`_discard`, :meth:`_grow` and the done-callbacks of the
background tasks), so a cancellation can never leave it half-changed. The pool awaits only to wait for an
object and to run hooks. Background work (factory calls, asynchronous resets, close hooks) runs in tasks
whose done-callbacks are the only place their outcome is booked.

One test says whether an entry may be used again: ``entry.expires_at > now``. ``max_lifetime`` sets it;
:meth:`AsyncPool.mark_broken`, :meth:`AsyncPool.expire_all` and :meth:`AsyncPool.close` set it to minus
infinity, so broken, replaced and closed-pool objects fail the same comparison (see :func:`_reusable`).

The hot path is the lease (``_Lease.__aenter__`` / ``__aexit__``) and the wait queue, and nowhere else:
the lease writes out the common case of an acquire and of a release (for a pool without hooks that need
it) instead of calling the pool's general methods, because under load every acquire and release goes
through it and one more Python call costs as much as the pool's bookkeeping (see ``benchmarks/``).

Cancellation, await by await:

* waiting for an object: nothing is lost; an object already handed over is passed on;
* ``check`` interrupted: the object is in an unknown state, so it is discarded (closed) and its slot freed;
* ``reset`` and ``close`` run in tasks of their own and are shielded: a cancelled holder still returns;
* the factory runs in a task of its own: if the caller stops waiting, the new object goes to the next
  waiter or to the idle set.

The pool is bound to the event loop it is opened on and is not thread-safe (use
:class:`~sanaa_async_mem.resources.ResourceManager` to reach pooled objects from threads); :meth:`stats`
may be read from any thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import os
import random
import threading
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Mapping
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypedDict, TypeVar, cast

from .. import config
from .._hooks import call as _call
from .._hooks import require_callable
from .._logging import get_logger
from .._stats import Histogram, HistogramSnapshot
from ..errors import ConfigurationError, PoolClosed, PoolError, PoolExhausted, PoolTimeout
from ._tasks import TaskSet
from .waitqueue import WaitQueue

if TYPE_CHECKING:
    from ..fleet.budget import FleetBudget

__all__ = [
    "CLOSE_REASONS",
    "AsyncPool",
    "Holder",
    "PoolOptions",
    "PoolSettings",
    "PoolStats",
    "merge_snapshots",
    "pool_options",
]

T = TypeVar("T")

log = get_logger("pool")

# Durations (wait, use, create, idle time, lifetimes) are measured with time.monotonic: uvloop's
# loop.time() is libuv's millisecond clock, cached once per loop iteration, too coarse for microsecond
# waits. Deadlines and timers use the loop's own clock (see AsyncPool._time).
_clock = time.monotonic
_get_ident = threading.get_ident
# Frames of these directories are not "where" a holder is (see _where_now): the library and asyncio.
_LIBRARY_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)

try:
    # The task running on a loop, with one dict lookup: asyncio.current_task(loop) costs a Python call on
    # 3.11 and get_running_loop() a getpid() system call, and every acquire needs both answers.
    _task_on: Callable[[Any], asyncio.Task[Any] | None] = asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
except AttributeError:  # pragma: no cover - an asyncio without the table
    _task_on = asyncio.current_task

_NEW, _OPEN, _CLOSED = "new", "open", "closed"
_new_lease = object.__new__
_INF = float("inf")

# When creating objects fails, retries back off exponentially between these bounds (seconds, with jitter).
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 10.0
# ... but while callers wait, one attempt at least this often: they are better served by a quick recovery
# than by a quiet backend (one connect per second per pool is not a storm).
_BACKOFF_MAX_WAITING = 1.0

# Buffered wait/use samples are folded into their histograms when this many are pending (or on stats()).
_FOLD_AT = 256

Factory = Callable[[], "T | Awaitable[T]"]
Hook = Callable[[T], Any]


class _Entry(Generic[T]):
    """One pooled object and what the pool knows about it."""

    __slots__ = (
        "broken",
        "created_at",
        "expires_at",
        "held_handle",
        "holder",
        "key",
        "lease",
        "obj",
        "purpose",
        "since",
        "stack",
    )

    def __init__(self, obj: T, now: float, expires_at: float) -> None:
        self.obj = obj
        self.key = id(obj)  # unique among live objects, and the pool holds every one of its objects
        self.created_at = now
        self.expires_at = expires_at  # the one reusability test: see _reusable
        # When it was last handed out (held: held since; handed to a waiter: its wait ends there) or given
        # back (idle: idle since). One stamp for both, so a release writes one clock value, not two.
        self.since = now
        self.lease = 0  # hand-outs so far: tells a stale lease from the current one
        self.broken = False
        self.holder: asyncio.Task[Any] | None = None  # the task holding it; None when not held
        self.held_handle: asyncio.TimerHandle | None = None
        self.stack: traceback.StackSummary | None = None
        self.purpose: str | None = None  # the label of the current hand-out


def _outside_library(filename: str) -> bool:
    return not filename.startswith(_LIBRARY_DIRS)


def _where_now(task: asyncio.Task[Any]) -> str:
    """``file:line`` of the innermost frame of ``task``'s coroutine chain outside the library and asyncio:
    where the holder is now (in the code that acquired, or what it called). Costs nothing until asked."""
    where = "?"
    coro: Any = task.get_coro()
    depth = 0
    while coro is not None and depth < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None and _outside_library(frame.f_code.co_filename):
            where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth += 1
    return where


def _acquired_at(stack: traceback.StackSummary) -> str | None:
    """``file:line`` of the innermost frame of an acquiring stack outside the library."""
    for frame in reversed(stack):
        if _outside_library(frame.filename):
            return f"{frame.filename}:{frame.lineno}"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """One object checked out of a pool, as :meth:`AsyncPool.holders` reports it.

    ``task`` is the holding task's name, ``purpose`` the label given to ``acquire(purpose=...)`` (or by the
    ResourceManager), ``held_for`` seconds since the hand-out. ``where`` is the ``file:line`` where the
    holding task is now: the innermost frame of its coroutine chain outside this library and asyncio,
    read from the suspended task when :meth:`AsyncPool.holders` is called (so it costs the acquire
    nothing; a holder inside ``async with pool.acquire():`` is shown at the line of that block, or of the
    code it called, that it is waiting at). ``acquired_at`` (the ``file:line`` of the acquire itself) and
    ``stack`` (the formatted acquiring stack) are recorded only when the pool has ``held_warning`` set:
    recording the caller's frame on every acquire was measured at about 0.4 us, 15% of an uncontended
    acquire (see BENCHMARKS.md); otherwise they are None.
    """

    pool: str
    task: str
    purpose: str | None
    held_for: float
    where: str
    acquired_at: str | None
    stack: str | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Why the pool closed an object, the keys of ``PoolStats.closed_by``: past ``max_lifetime`` (lifetime),
#: unused for ``max_idle`` (idle), broken (mark_broken, put(discard=True), a ``discard_on`` error, a failed
#: reset, or a check interrupted by cancellation or the caller's deadline), failed ``check``/``alive``
#: (failed_check), surplus after :meth:`AsyncPool.resize` (resize), the pool closing (close), replaced by
#: ``drain``/``expire_all`` (drained) and shed by ``trim_idle`` (trimmed).
CLOSE_REASONS: tuple[str, ...] = (
    "lifetime",
    "idle",
    "broken",
    "failed_check",
    "resize",
    "close",
    "drained",
    "trimmed",
    "budget",
)
# stats().discarded and stats().expired, the counters older than closed_by, are sums of these reasons.
_DISCARDED = frozenset({"broken", "failed_check"})
_EXPIRED = frozenset({"lifetime", "idle", "drained", "trimmed", "budget"})
# The reasons _discard was given before there were reasons (callers written against that still work).
_LEGACY_REASONS: dict[str | None, str] = {"discarded": "broken", "expired": "lifetime", None: "close"}


def _expired_reason(entry: _Entry[Any]) -> str:
    """Why an entry that failed :func:`_reusable` goes: its lifetime ran out, or it was replaced."""
    return "lifetime" if entry.expires_at != -_INF else "drained"


def _reusable(entry: _Entry[Any], now: float) -> bool:
    """May this entry be handed out (again)? False past its lifetime, when broken, replaced by
    expire_all() or drain(), or when the pool is closed: each of those sets ``expires_at``.
    (The lease writes this comparison out on its hot path.)"""
    return entry.expires_at > now


def merge_snapshots(snapshots: list[HistogramSnapshot]) -> HistogramSnapshot:
    """One snapshot from several of histograms with the same buckets."""
    if not snapshots:
        return Histogram().snapshot()
    if len(snapshots) == 1:
        return snapshots[0]
    counts = [sum(c) for c in zip(*(s.counts for s in snapshots), strict=True)]
    filled = [s for s in snapshots if s.count]
    return HistogramSnapshot(
        count=sum(s.count for s in snapshots),
        sum=sum(s.sum for s in snapshots),
        min=min((s.min for s in filled), default=0.0),
        max=max((s.max for s in filled), default=0.0),
        bounds=snapshots[0].bounds,
        counts=tuple(counts),
    )


class PoolSettings(TypedDict, total=False):
    """The keyword options of :class:`AsyncPool` other than its hooks (see :class:`PoolOptions`)."""

    name: str | None
    min_size: int
    max_size: int
    timeout: float
    create_timeout: float
    hook_timeout: float
    max_creating: int | None
    max_waiting: int
    max_lifetime: float | None
    lifetime_jitter: float
    max_idle: float | None
    check_skip_within: float
    held_warning: float | None
    maintenance_interval: float


class PoolOptions(PoolSettings, total=False):
    """The keyword options of :class:`AsyncPool` (all but ``factory``), for functions that build pools
    (the adapters, ``ResourceManager.register_factory``) and pass them on. See :class:`AsyncPool` for
    what each means."""

    check: Callable[[Any], Any] | None
    alive: Callable[[Any], bool] | None
    reset: Callable[[Any], Any] | None
    close: Callable[[Any], Any] | None
    discard_on: tuple[type[BaseException], ...]
    budget: FleetBudget | None


def pool_options(options: dict[str, Any], param: str | None = None) -> dict[str, Any]:
    """``options`` checked against :class:`PoolOptions`: an unknown key raises ConfigurationError naming
    it (or ``param``, the argument that carried it), with the known ones; values are checked by AsyncPool."""
    names = _OPTION_NAMES
    unknown = sorted(set(options) - set(names))
    if unknown:
        known = ", ".join(names)
        if param is not None:
            raise ConfigurationError(param, options, f"unknown AsyncPool option(s) {unknown}; known: {known}")
        first = unknown[0]
        raise ConfigurationError(first, options[first], f"is not an AsyncPool option; known: {known}")
    return options


_OPTION_NAMES: tuple[str, ...] = tuple(PoolOptions.__annotations__)  # (includes the inherited ones)


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStats:
    """A point-in-time view of a pool. Sizes are gauges; the rest count since creation or ``pop_stats``.

    Times are seconds. ``wait`` covers every acquire (immediate ones count as 0 s) up to the moment the
    pool hands the object over, ``use`` the time from then until it comes back (so a waiter's resumption
    lag is in ``use``), ``create`` successful factory calls.

    ``waited`` counts the acquires that had to wait (the others took an idle object at once) and
    ``wait_seconds`` their total wait; ``cancelled`` the acquires whose task was cancelled while waiting
    (or during the check of an idle object); ``timeouts`` those whose deadline passed. ``closed`` counts
    every object closed, ``closed_by`` the same by reason (see :data:`CLOSE_REASONS`; ``discarded`` is
    broken + failed_check, ``expired`` lifetime + idle + drained + trimmed).
    """

    name: str
    min_size: int
    max_size: int
    size: int
    idle: int
    in_use: int
    creating: int
    returning: int
    waiting: int
    acquired: int
    created: int
    closed: int
    discarded: int
    expired: int
    timeouts: int
    exhausted: int
    errors: int
    held_too_long: int
    wait: HistogramSnapshot
    use: HistogramSnapshot
    create: HistogramSnapshot
    cancelled: int = 0
    waited: int = 0
    wait_seconds: float = 0.0
    closed_by: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(CLOSE_REASONS, 0))

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers with stable keys (JSON-serialisable)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, HistogramSnapshot):
                value = value.as_dict()
            elif field.name == "closed_by":
                value = dict(value)
            out[field.name] = value
        return out


class _Lease(Generic[T]):
    """``async with pool.acquire() as obj``: gets an object on entry and always returns it on exit.

    The lease is the token of one hand-out: its exit returns exactly the hand-out it made (a stale exit,
    after the object was returned another way, is refused). The exit may run in any task of the pool's
    loop.
    """

    __slots__ = ("_entry", "_lease", "_pool", "_purpose", "_timeout")

    def __init__(self, pool: AsyncPool[T], timeout: float | None, purpose: str | None = None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._purpose = purpose
        self._entry: _Entry[T] | None = None
        self._lease = 0

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(
            "pool.acquire() is not awaited: use 'async with pool.acquire() as obj:' "
            "(or 'obj = await pool.get()' ... 'await pool.put(obj)')"
        )

    async def __aenter__(self) -> T:
        if self._entry is not None:
            raise PoolError("this acquire() context is already in use; call pool.acquire() again")
        pool = self._pool
        # One dict lookup and one C call instead of get_running_loop(): see _task_on.
        task = _task_on(pool._loop)
        if task is None or _get_ident() != pool._thread:
            task = pool._calling_task()
        idle = pool._idle
        if idle and pool._plain_acquire:
            # The uncontended acquire of a pool without check, lifetime or held_warning: nothing to test.
            entry = idle.pop()
            entry.since = _clock()
            entry.lease += 1
            entry.holder = task
            entry.purpose = self._purpose
            self._entry = entry
            self._lease = entry.lease
            return entry.obj
        timeout = pool._timeout if self._timeout is None else self._timeout
        started = _clock()
        # On asyncio's loops the loop's clock is this same clock: one read serves both.
        deadline = (started if pool._time is _clock else pool._time()) + timeout
        while True:
            if idle:
                entry = idle.pop()
                now = _clock()
                if pool._screening and not await pool._screen(entry, now, deadline):
                    continue  # it was dropped; try the next one (or wait)
                entry.since = now
                break
            if not pool._is_open:
                raise pool._not_open_error()
            queue = pool._queue
            if pool._max_waiting and queue.waiting >= pool._max_waiting:
                raise pool._exhausted()
            fut = queue.park(deadline)
            if len(pool._entries) + pool._creating < pool._max_size:  # else _grow has nothing to do
                pool._grow()
            try:
                entry = await fut
            except BaseException as exc:
                pool._abandon(fut, exc, task)
                raise
            # Whoever handed the entry over stamped `since` with the hand-over time: the wait ends
            # there (what follows is the loop's own lag, measured by LoopLagMonitor). Objects handed
            # over were just released or made: they need no screening.
            pool._waits.append(entry.since - started)  # folded into the histogram in bulk
            break
        entry.lease += 1
        entry.holder = task
        entry.purpose = self._purpose
        if pool._held_warning is not None:
            pool._watch_holding(entry)
        self._entry = entry
        self._lease = entry.lease
        return entry.obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        entry = self._entry
        if entry is None:
            return
        self._entry = None
        pool = self._pool
        if entry.lease != self._lease or entry.holder is None:
            raise PoolError(f"{pool._name}: object was already returned (put() inside 'async with')")
        entry.holder = None
        if exc_type is None and pool._plain_release:
            now = _clock()
            if entry.expires_at > now:  # _reusable
                # _take_back and _give for a pool without reset hook or held_warning, written out.
                uses = pool._uses
                uses.append(now - entry.since)
                if len(uses) >= _FOLD_AT:
                    pool._fold_samples()
                entry.since = now  # idle since, or the hand-over time (see __aenter__)
                queue = pool._queue
                if not (queue.waiting and queue.hand(entry)):
                    pool._idle.append(entry)
                return
        resetting = pool._take_back(entry, exc is not None and isinstance(exc, pool._discard_on))
        if resetting is not None:
            await resetting


class AsyncPool(Generic[T]):
    """A pool of objects made by ``factory``, handed out fairly (FIFO) with awaitable, time-limited acquire.

    Parameters (times in seconds; every one is validated and a bad value raises
    :class:`~sanaa_async_mem.errors.ConfigurationError` naming it):

    factory
        Makes a new object; a sync or async callable with no arguments.
    check
        ``check(obj)`` (sync or async) runs before an idle object is handed out, unless the object was
        used in the last ``check_skip_within`` seconds. Returning ``False`` or raising discards the object
        and the caller gets another one. The check counts against the caller's timeout: an acquire whose
        deadline passes during a check raises :class:`PoolTimeout` (and the object, interrupted
        mid-check, is discarded).
    alive
        ``alive(obj) -> bool``: a cheap synchronous test with no I/O (e.g. asyncpg's ``not
        conn.is_closed()``), run on every idle object before it is handed out, also when ``check`` is
        skipped. False (or raising) discards the object and the caller gets another one. It catches
        connections the server closed while they sat idle, which ``check_skip_within`` would let through.
    reset
        ``reset(obj)`` runs when an object comes back. Raising (or exceeding ``hook_timeout``) discards it.
        It is called inline; if it returns an awaitable, that is awaited in a task of its own, shielded
        from the holder's cancellation. A reset that needs I/O only sometimes should return an awaitable
        only then: a plain return costs nothing.
    close
        ``close(obj)`` disposes of an object the pool drops. Errors are logged, never raised to callers.
    min_size, max_size
        Objects kept ready (pre-warmed on :meth:`open`, refilled in the background with backoff) and the
        hard limit on objects in existence.
    timeout
        Default limit on the wait in :meth:`acquire` / :meth:`get` (finite by default: a pool that waits
        forever hides deadlocks). Raises :class:`PoolTimeout`.
    create_timeout, hook_timeout
        Limits on one factory call and on one check/reset/close call.
    max_creating
        Factory calls allowed in flight at once (default: up to ``max_size``).
    max_waiting
        Callers allowed to wait at once; one more gets :class:`PoolExhausted` at once. 0 = no limit.
    max_lifetime, lifetime_jitter
        Objects are replaced after ``max_lifetime`` (minus up to ``lifetime_jitter`` of it, at random, so
        they do not all expire together).
    max_idle
        Idle objects beyond ``min_size`` are closed after this long unused.
    discard_on
        Exception types which, raised out of an ``async with pool.acquire()`` block, discard the object.
    held_warning
        Log a warning, with the stack of the code that acquired it, when an object is held longer.
    maintenance_interval
        How often the background task checks lifetimes, idle times and ``min_size``.
    budget
        A :class:`~sanaa_async_mem.fleet.FleetBudget` shared with other processes: the pool holds an
        object only while it holds one of the budget's leases (taken before each factory call, within
        ``create_timeout``; given back once the object is closed). Reusing an idle object costs nothing.
    """

    def __init__(
        self,
        factory: Callable[[], T | Awaitable[T]],
        *,
        name: str | None = None,
        min_size: int = 0,
        max_size: int = 10,
        timeout: float = 30.0,
        create_timeout: float = 30.0,
        hook_timeout: float = 10.0,
        max_creating: int | None = None,
        max_waiting: int = 0,
        max_lifetime: float | None = None,
        lifetime_jitter: float = 0.1,
        max_idle: float | None = None,
        check: Callable[[T], Any] | None = None,
        check_skip_within: float = 0.5,
        alive: Callable[[T], bool] | None = None,
        reset: Callable[[T], Any] | None = None,
        close: Callable[[T], Any] | None = None,
        discard_on: tuple[type[BaseException], ...] = (),
        held_warning: float | None = None,
        maintenance_interval: float = 1.0,
        budget: FleetBudget | None = None,
    ) -> None:
        require_callable("factory", factory, allow_none=False)
        if budget is not None:
            from ..fleet.budget import FleetBudget

            if not isinstance(budget, FleetBudget):
                raise ConfigurationError("budget", budget, "must be a FleetBudget or None")
        self._budget = budget
        for hook_name, hook in (("check", check), ("alive", alive), ("reset", reset), ("close", close)):
            require_callable(hook_name, hook)
        self._max_size = config.positive_int("max_size", max_size)
        self._min_size = config.positive_int("min_size", min_size, minimum=0)
        if self._min_size > self._max_size:
            raise ConfigurationError("min_size", min_size, f"must be <= max_size ({max_size})")
        self._max_creating = (
            self._max_size if max_creating is None else config.positive_int("max_creating", max_creating)
        )
        self._max_waiting = config.positive_int("max_waiting", max_waiting, minimum=0)
        self._timeout = config.duration("timeout", timeout)
        self._create_timeout = config.duration("create_timeout", create_timeout, allow_zero=False)
        self._hook_timeout = config.duration("hook_timeout", hook_timeout, allow_zero=False)
        self._max_lifetime = config.seconds("max_lifetime", max_lifetime, allow_none=True, allow_zero=False)
        self._lifetime_jitter = config.fraction("lifetime_jitter", lifetime_jitter)
        self._max_idle = config.seconds("max_idle", max_idle, allow_none=True, allow_zero=False)
        # An object idle this long is checked before it is handed out (never, without a check hook).
        check_skip_within = config.duration("check_skip_within", check_skip_within)
        self._check_after = check_skip_within if check is not None else _INF
        self._held_warning = config.seconds("held_warning", held_warning, allow_none=True, allow_zero=False)
        self._maintenance_interval = config.duration(
            "maintenance_interval", maintenance_interval, allow_zero=False
        )
        if not isinstance(discard_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in discard_on
        ):
            raise ConfigurationError("discard_on", discard_on, "must be a tuple of exception types")

        self._factory = factory
        self._check = check
        self._alive = alive
        self._reset = reset
        self._close = close
        self._discard_on = discard_on
        self._name = name or f"pool-{id(self):x}"
        # What the lease may skip (it writes out the common cases; see _Lease).
        # idle objects need _screen
        self._screening = check is not None or alive is not None or max_lifetime is not None
        self._plain_acquire = not self._screening and held_warning is None
        self._plain_release = reset is None and held_warning is None
        self._max_creating_follows = max_creating is None  # the default follows max_size (see resize)
        # After resize() lowered max_size below the objects in existence: returning objects are retired
        # until the pool is back within max_size (the lease's plain release is off meanwhile; see _give).
        self._shrinking = False

        self._state = _NEW
        self._is_open = False  # == (self._state == _OPEN), read on the hot paths
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        # The loop's clock, for deadlines and timers (set by open()).
        self._time: Callable[[], float] = _clock
        self._queue: WaitQueue[_Entry[T]] = cast("WaitQueue[_Entry[T]]", None)  # made by open()
        self._entries: dict[int, _Entry[T]] = {}  # every object the pool owns, by id
        self._idle: deque[_Entry[T]] = deque()
        self._creating = 0
        self._returning = 0
        # While creating objects fails (the backend is down), _failure is the last error: one factory call
        # at a time, not before _retry_at (loop time), backing off from _backoff_min to _backoff_max.
        self._failure: BaseException | None = None
        self._backoff_min = _BACKOFF_MIN
        self._backoff_max = _BACKOFF_MAX
        self._backoff = _BACKOFF_MIN
        self._retry_at = 0.0
        self._retry_timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._tasks = TaskSet()  # every background task (create, reset, close)
        self._creations: set[asyncio.Task[Any]] = set()  # the factory calls among them
        self._housekeeper: asyncio.Task[None] | None = None
        self._all_back: asyncio.Event | None = None
        self._leases_retired = 0  # hand-outs of entries no longer in the pool (see _acquired)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._acquired_base = self._acquired()
        self._n_created = 0
        self._n_closed = 0
        self._n_discarded = 0
        self._n_expired = 0
        self._n_timeouts = 0
        self._n_exhausted = 0
        self._n_errors = 0
        self._n_held_too_long = 0
        self._n_cancelled = 0
        self._closed_by: dict[str, int] = dict.fromkeys(CLOSE_REASONS, 0)
        self._wait_hist = Histogram()
        self._use_hist = Histogram()
        self._create_hist = Histogram()
        # Wait and use times of the hot paths are appended here (a C call) and folded into the histograms
        # in bulk: recording each one costs more than the rest of an acquire. Every release checks the
        # length of _uses; _waits cannot outgrow it by more than the objects the pool made or holds out,
        # since a recorded wait is followed by a release, a discard or a holder that has not returned yet.
        self._waits: list[float] = []
        self._uses: list[float] = []

    def _acquired(self) -> int:
        # Every hand-out increments its entry's lease number (the token the lease needs anyway), so the
        # count of acquisitions costs the hot path nothing. list(): one atomic copy (stats() from threads).
        return self._leases_retired + sum(e.lease for e in list(self._entries.values()))

    def _fold_samples(self) -> None:
        self._wait_hist.extend(self._waits)
        self._waits.clear()
        self._use_hist.extend(self._uses)
        self._uses.clear()

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> str:
        """``"new"`` (not opened yet), ``"open"`` or ``"closed"``."""
        return self._state

    @property
    def closed(self) -> bool:
        return self._state == _CLOSED

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def min_size(self) -> int:
        return self._min_size

    @property
    def discard_on(self) -> tuple[type[BaseException], ...]:
        """The exception types that discard an object when they escape its ``async with`` block."""
        return self._discard_on

    def acquire(self, timeout: float | None = None, *, purpose: str | None = None) -> _Lease[T]:
        """``async with pool.acquire() as obj:``: an object for the block, returned on exit however the
        block ends (also when the task is cancelled inside it).

        ``timeout`` overrides the pool's wait limit for this call; ``purpose`` labels the hand-out in
        :meth:`holders` (what the object is for: "load user", "health"). Raises :class:`PoolTimeout`,
        :class:`PoolExhausted`, :class:`PoolClosed`, or the factory's own error when creating the object
        failed. Waiting is a cancellation point; a cancelled waiter loses nothing.
        """
        if timeout is not None:
            config.seconds("timeout", timeout)
        if purpose is not None and not isinstance(purpose, str):
            raise ConfigurationError("purpose", purpose, "must be a string label or None")
        # _Lease(self, timeout, purpose), without the cost of a Python __init__ call on every acquire.
        lease: _Lease[T] = _new_lease(_Lease)
        lease._pool = self
        lease._timeout = timeout
        lease._purpose = purpose
        lease._entry = None
        return lease

    async def get(self, timeout: float | None = None, *, purpose: str | None = None) -> T:
        """Take an object; give it back with :meth:`put`. Same errors and cancellation as :meth:`acquire`."""
        if timeout is not None:
            config.seconds("timeout", timeout)
        if purpose is not None and not isinstance(purpose, str):
            raise ConfigurationError("purpose", purpose, "must be a string label or None")
        # The hand-out is booked on the entry (lease number, holder); the lease object is not needed.
        return await _Lease(self, timeout, purpose).__aenter__()

    def holders(self) -> list[Holder]:
        """Who holds this pool's objects now, longest-held first (see :class:`Holder`). Cheap (one pass
        over the pool's objects); safe to call from any thread (a snapshot a few operations apart)."""
        now = _clock()
        out: list[Holder] = []
        for entry in list(self._entries.values()):
            task = entry.holder
            if task is None:
                continue
            stack = entry.stack if self._held_warning is not None else None
            out.append(
                Holder(
                    pool=self._name,
                    task=task.get_name(),
                    purpose=entry.purpose,
                    held_for=max(0.0, now - entry.since),
                    where=_where_now(task),
                    acquired_at=_acquired_at(stack) if stack is not None else None,
                    stack="".join(stack.format()) if stack is not None else None,
                )
            )
        out.sort(key=lambda h: -h.held_for)
        return out

    async def put(self, obj: T, *, discard: bool = False) -> None:
        """Give back an object taken with :meth:`get`; ``discard=True`` drops it (e.g. it is broken).

        The calling task must be the one that took the object: the hand-out is tracked by task, so a stale
        ``put()`` (after the object went back and another task took it) can never return an object its
        current holder still uses. Raises :class:`PoolError` (and changes nothing) for an object that did
        not come from this pool, was already returned, or is held by another task, and for a call from
        another thread or event loop. If the pool has a ``reset`` hook, the reset runs shielded: cancelling
        this call does not stop the object from coming back.
        """
        self._require_loop("put")
        entry = self._entries.get(id(obj))
        if entry is None or entry.obj is not obj or entry.holder is None:
            raise PoolError(
                f"{self._name}: put() of an object that is not checked out from this pool "
                f"(never acquired here, or already returned): {obj!r}"
            )
        if entry.holder is not asyncio.current_task():
            # The object went back and out again since this caller took it: it belongs to another task.
            raise PoolError(
                f"{self._name}: put() of an object held by task {entry.holder.get_name()!r}, not by the "
                f"calling task: only the task that took it with get() gives it back (a stale second "
                f"put()?). To return an object from another task, use 'async with pool.acquire()', whose "
                f"exit may run in any task"
            )
        entry.holder = None
        resetting = self._take_back(entry, discard)
        if resetting is not None:
            await resetting

    def mark_broken(self, obj: T) -> None:
        """Say that a checked-out object is broken: it is closed instead of reused when it comes back."""
        self._require_loop("mark_broken")
        entry = self._entries.get(id(obj))
        if entry is None or entry.obj is not obj or entry.holder is None:
            raise PoolError(f"{self._name}: mark_broken() of an object that is not checked out: {obj!r}")
        entry.broken = True
        entry.expires_at = -_INF

    async def open(self, *, wait: bool = True) -> None:
        """Bind the pool to the running loop and pre-warm ``min_size`` objects.

        With ``wait=True`` (the default) this returns once ``min_size`` objects exist; if any of them
        cannot be made, the pool is closed again and the factory's error is raised (fail fast at start-up,
        nothing leaked). With ``wait=False`` it returns at once and the objects are made in the
        background, retried with backoff. Opening an open pool is a no-op; a closed pool cannot reopen.
        """
        loop = asyncio.get_running_loop()
        if self._state == _OPEN:
            self._check_loop(loop)
            return
        if self._state == _CLOSED:
            raise PoolClosed(f"{self._name} is closed and cannot be reopened")
        self._bind(loop)
        if self._budget is not None:
            await self._budget._attach(self)
        self._state = _OPEN
        self._is_open = True
        if self._min_size or self._max_idle is not None or self._max_lifetime is not None:
            self._housekeeper = loop.create_task(self._housekeep_forever(), name=f"{self._name}-housekeeper")
        if not wait or not self._min_size:
            self._grow()
            return
        tasks = [self._start_create() for _ in range(self._min_size - self._size())]
        try:
            if tasks:
                # asyncio.wait, not gather: if open() is cancelled the creations still finish and their
                # objects land in the pool (closed by close()), instead of being dropped half-made.
                await asyncio.wait(tasks)
        except BaseException:
            await self.close()
            raise
        for task in tasks:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                await self.close()
                raise failure

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool and wait until it is closed. Idempotent.

        At once: waiters get :class:`PoolClosed`, nothing more is handed out, factory calls in flight are
        cancelled and idle objects start closing. Then this waits up to ``timeout`` seconds for checked-out
        objects to come back (each is closed as it does); those still out after that are logged (with the
        acquiring stack when ``held_warning`` is set) and closed whenever they come back. Close hooks and
        resets already running are never cancelled: the call returns once they have finished, each
        bounded by ``hook_timeout``, so it takes at most about ``timeout + hook_timeout``.

        Every call, concurrent or later, waits for that same completion (a later ``timeout`` changes
        nothing). Cancelling a caller does not stop the close. From another thread or event loop:
        :class:`PoolError`.
        """
        config.seconds("timeout", timeout)
        closing = self._closing
        if closing is None:
            if self._state != _OPEN:  # never opened (or closed before it was): nothing to wait for
                self._state = _CLOSED
                self._is_open = False
                return
            self._require_loop("close")
            self._shut_down()
            assert self._loop is not None
            closing = self._closing = self._loop.create_task(
                self._finish_closing(timeout), name=f"{self._name}-close"
            )
        elif not closing.done():
            self._require_loop("close")
        await asyncio.shield(closing)

    def _shut_down(self) -> None:
        """The synchronous half of close(): from here on nothing is handed out or made."""
        self._state = _CLOSED
        self._is_open = False
        for entry in list(self._entries.values()):
            entry.expires_at = -_INF  # whatever comes back now is closed, not reused
        self._queue.fail_all(lambda: PoolClosed(f"{self._name} was closed while waiting"))
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        # Nobody will use what is being made now; a factory call interrupted here owns its half-made object.
        for task in list(self._creations):
            task.cancel()
        while self._idle:
            self._discard(self._idle.pop(), counted_as="close")

    async def _finish_closing(self, timeout: float) -> None:
        if self._entries or self._creating:
            self._all_back = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_back.wait(), timeout)
            except TimeoutError:
                self._log_still_out(timeout)
        if self._housekeeper is not None:
            await asyncio.wait([self._housekeeper])
        # Close hooks and resets already running finish (each within hook_timeout); a reset finishing now
        # starts the object's close hook, so wait until no task is left.
        while pending := self._tasks.pending():
            await asyncio.wait(pending)
        if self._budget is not None:
            await self._budget._detach(self)  # every object is closed: its leases are back

    async def drain(self) -> None:
        """Replace every object (e.g. after a database failover): idle ones are closed now, checked-out
        ones when they come back, and ``min_size`` is refilled. Returns when the idle ones are closed."""
        self.expire_all()
        closing = self._tasks.pending()
        if closing:
            await asyncio.wait(closing)

    def expire_all(self) -> None:
        """Mark every current object for replacement without waiting (see :meth:`drain`)."""
        self._require_loop("expire_all")
        for entry in list(self._entries.values()):
            entry.expires_at = -_INF
        while self._idle:
            self._discard(self._idle.pop(), counted_as="drained")
        self._grow()

    def trim_idle(self, older_than: float | None = None) -> int:
        """Close idle objects unused for at least ``older_than`` seconds (all idle ones if None), never
        going below ``min_size``. Returns how many were closed (counted in ``stats().expired``). Used on
        memory pressure; objects checked out are not touched."""
        if older_than is not None:
            config.seconds("older_than", older_than)
        self._require_loop("trim_idle")
        now = _clock()
        return self._drop_idle(
            lambda entry, surplus: (
                "trimmed" if surplus > 0 and (older_than is None or now - entry.since >= older_than) else None
            )
        )

    async def resize(self, min_size: int | None = None, max_size: int | None = None) -> None:
        """Change ``min_size`` and/or ``max_size`` of a pool, also while it is open and in use.

        Growing ``max_size`` starts factory calls for the callers waiting now (they are served as soon as
        the objects exist); growing ``min_size`` makes the missing objects in the background. Shrinking
        ``max_size`` closes surplus idle objects at once and retires surplus checked-out objects as they
        come back (counted in ``stats().closed_by["resize"]``): an object in use is never closed, so the
        pool may hold more than the new ``max_size`` until enough have returned, and nothing new is made
        or handed out beyond it meanwhile. Returns once the change is made (it does not wait for objects
        to come back or be made). A ``max_creating`` left to its default follows ``max_size``.

        Raises :class:`~sanaa_async_mem.errors.ConfigurationError` naming the bad value (not a positive
        integer, ``min_size`` above ``max_size``), :class:`PoolClosed` on a closed pool and
        :class:`PoolError` from another thread or event loop. Nothing in it awaits: cancelling the caller
        cannot leave half a change.
        """
        new_max = self._max_size if max_size is None else config.positive_int("max_size", max_size)
        new_min = self._min_size if min_size is None else config.positive_int("min_size", min_size, minimum=0)
        if new_min > new_max:
            name, value = ("min_size", min_size) if min_size is not None else ("max_size", max_size)
            raise ConfigurationError(name, value, f"must keep min_size ({new_min}) <= max_size ({new_max})")
        if self._state == _CLOSED:
            raise PoolClosed(f"{self._name} is closed and cannot be resized")
        self._require_loop("resize")
        self._max_size, self._min_size = new_max, new_min
        if self._max_creating_follows:
            self._max_creating = new_max
        if not self._is_open:
            return  # not opened yet: open() uses the new sizes
        if new_min and self._housekeeper is None:
            assert self._loop is not None
            self._housekeeper = self._loop.create_task(
                self._housekeep_forever(), name=f"{self._name}-housekeeper"
            )
        if self._size() > new_max:
            # Surplus idle objects go now (coldest first), the rest as they come back (_give).
            excess = [self._size() - new_max]

            def surplus_idle(entry: _Entry[T], surplus: int) -> str | None:
                excess[0] -= 1
                return "resize" if excess[0] >= 0 else None

            self._drop_idle(surplus_idle)
            if self._size() > new_max:
                self._shrinking = True
                self._plain_release = False
        self._grow()
        log.info(
            "%s: resized to min_size=%d max_size=%d (%d objects now)",
            self._name,
            new_min,
            new_max,
            self._size(),
            extra={"sanaa_pool": self._name, "sanaa_event": "resized"},
        )

    def stats(self) -> PoolStats:
        """Sizes, counters and wait/use/create time summaries (see :class:`PoolStats`). Safe to call from
        any thread (from another thread the figures may be a few operations apart from each other)."""
        waits, uses = self._wait_hist.snapshot(), self._use_hist.snapshot()
        if self._thread is None or _get_ident() == self._thread:
            self._fold_samples()
            waits, uses = self._wait_hist.snapshot(), self._use_hist.snapshot()
        else:
            # Not on the loop's thread: leave the loop's buffers alone, count what they hold (copies).
            waits = merge_snapshots([waits, _snapshot_of(list(self._waits))])
            uses = merge_snapshots([uses, _snapshot_of(list(self._uses))])
        acquired = self._acquired() - self._acquired_base
        idle = len(self._idle)
        entries = len(self._entries)
        return PoolStats(
            name=self._name,
            min_size=self._min_size,
            max_size=self._max_size,
            size=entries + self._creating,
            idle=idle,
            in_use=entries - idle - self._returning,
            creating=self._creating,
            returning=self._returning,
            waiting=self._queue.waiting if self._loop is not None else 0,
            acquired=acquired,
            created=self._n_created,
            closed=self._n_closed,
            discarded=self._n_discarded,
            expired=self._n_expired,
            timeouts=self._n_timeouts,
            exhausted=self._n_exhausted,
            errors=self._n_errors,
            held_too_long=self._n_held_too_long,
            # Only acquires that waited leave a wait sample (the others count as 0 s): these are they.
            wait=waits.with_zeros(acquired - waits.count),
            use=uses,
            create=self._create_hist.snapshot(),
            cancelled=self._n_cancelled,
            waited=waits.count,
            wait_seconds=waits.sum,
            closed_by=MappingProxyType(dict(self._closed_by)),
        )

    def pop_stats(self) -> PoolStats:
        """:meth:`stats`, then reset the counters and time summaries (sizes are not affected)."""
        snapshot = self.stats()
        self._reset_counters()
        return snapshot

    async def __aenter__(self) -> AsyncPool[T]:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        waiting = self._queue.waiting if self._loop is not None else 0
        return (
            f"<AsyncPool {self._name!r} {self._state} size={self._size()}/{self._max_size} "
            f"idle={len(self._idle)} in_use={self._in_use()} waiting={waiting}>"
        )

    # ------------------------------------------------------------------ acquiring

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = _get_ident()
        # asyncio's loops run on time.monotonic (BaseEventLoop.time returns it): the same clock without the
        # method call. Any other loop (uvloop) has its own clock, which its timers run on.
        self._time = _clock if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self._queue = WaitQueue(loop, self._timed_out)

    def _require_loop(self, what: str) -> None:
        """Refuse a call from another thread or event loop (it would change the pool behind its loop's
        back: a waiter there would resume only when something else woke that loop)."""
        loop = self._loop
        if loop is None:
            return  # never opened: nothing is bound yet
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return
        # The loop's own thread between two runs of the loop (nothing can interleave) is fine too.
        same_thread = _get_ident() == self._thread
        if running is None and same_thread and not loop.is_closed():
            return
        where = "another thread" if not same_thread else "another event loop"
        if running is None and same_thread:
            where = "after its event loop was closed"
        raise PoolError(
            f"{self._name}.{what}() called from {where}: a pool is used only on the event loop it was "
            f"opened on ({loop!r}); from other threads use ResourceManager.acquire_from_thread() "
            f"or hand the call to the loop (loop.call_soon_threadsafe, asyncio.run_coroutine_threadsafe)"
        )

    def _calling_task(self) -> asyncio.Task[Any]:
        """The task calling into the pool, or PoolError (not open, another loop or thread, no task)."""
        loop = asyncio.get_running_loop()
        self._check_loop(loop)
        task = asyncio.current_task(loop)
        if task is None:
            raise PoolError(f"{self._name}: the pool is used from a task (there is none running)")
        # The loop runs on this thread now (a loop may be run from another thread than the one it was
        # opened on, one thread at a time).
        self._thread = _get_ident()
        return task

    async def _screen(self, entry: _Entry[T], now: float, deadline: float) -> bool:
        """An idle entry the caller just took: True to hand it out, False when it was dropped."""
        if entry.expires_at <= now:
            self._discard(entry, counted_as=_expired_reason(entry))
            return False
        alive = self._alive
        if alive is not None:
            try:
                ok = bool(alive(entry.obj))
            except Exception:
                ok = False
            if not ok:
                log.info(
                    "%s: idle object found dead, discarding it",
                    self._name,
                    extra={"sanaa_pool": self._name, "sanaa_event": "found_dead"},
                )
                self._discard(entry, counted_as="failed_check")
                return False
        # Checked when idle for _check_after (inf without a check hook: one comparison either way);
        # fresh objects (never handed out) are not checked: the factory just made them.
        if entry.lease and now - entry.since >= self._check_after:
            return await self._run_check(entry, deadline)
        return True

    def _exhausted(self) -> PoolExhausted:
        self._n_exhausted += 1
        return PoolExhausted(
            f"{self._name}: {self._queue.waiting} callers are already waiting "
            f"(max_waiting={self._max_waiting})"
        )

    def _abandon(self, fut: asyncio.Future[_Entry[T]], exc: BaseException, task: asyncio.Task[Any]) -> None:
        """The waiter's task is leaving without using ``fut``'s object: settle the books (no await)."""
        if isinstance(exc, asyncio.CancelledError):
            self._n_cancelled += 1
        if self._queue.abandon(fut):
            # The object was handed to us but our task was cancelled before it resumed: pass it on.
            self._give(fut.result(), _clock())
        elif isinstance(exc, PoolTimeout) and self._held_by(task):
            exc.args = (f"{exc}; the waiting task itself holds an object from this pool (nested acquire?)",)

    def _timed_out(self) -> PoolTimeout:
        """The error of a waiter whose deadline passed (called by the wait queue)."""
        self._n_timeouts += 1
        message = (
            f"{self._name}: no object became available in time (size {self._size()}/{self._max_size}, "
            f"{self._in_use()} in use, {self._queue.waiting} still waiting)"
        )
        failure = self._failure
        if failure is None:
            return PoolTimeout(message)
        # Told the real cause: creating a new object is failing (the backend is down or refusing).
        error = PoolTimeout(f"{message}; creating new objects is failing: {failure!r}")
        error.__cause__ = failure
        return error

    def _held_by(self, task: asyncio.Task[Any]) -> bool:
        return any(e.holder is task for e in self._entries.values())

    async def _run_check(self, entry: _Entry[T], deadline: float) -> bool:
        """Run the check hook on an entry the caller already took; False means it was discarded.
        The check ends by the acquire's ``deadline`` (PoolTimeout) or after hook_timeout (failed)."""
        assert self._check is not None
        hook_deadline = self._time() + self._hook_timeout
        limit = asyncio.timeout_at(min(deadline, hook_deadline))
        try:
            async with limit:
                ok = await _call(self._check, entry.obj)
        except asyncio.CancelledError:
            # An interrupted check may leave the object mid-conversation: never reuse it.
            self._n_cancelled += 1
            self._discard(entry, counted_as="broken")
            raise
        except TimeoutError as exc:
            if not (limit.expired() and deadline < hook_deadline):
                return self._check_failed(entry, exc)
            # The caller's time is up, mid-check: the object's state is unknown, so it goes too.
            self._discard(entry, counted_as="broken")
            self._n_timeouts += 1
            raise PoolTimeout(
                f"{self._name}: the acquire's timeout passed while the check of an idle object was running"
            ) from None
        except Exception as exc:
            return self._check_failed(entry, exc)
        if ok is False:
            self._discard(entry, counted_as="failed_check")
            return False
        return True

    def _check_failed(self, entry: _Entry[T], exc: Exception) -> bool:
        log.info(
            "%s: check failed, discarding object: %r",
            self._name,
            exc,
            extra={"sanaa_pool": self._name, "sanaa_event": "check_failed"},
        )
        self._discard(entry, counted_as="failed_check")
        return False

    def _watch_holding(self, entry: _Entry[T]) -> None:
        assert self._loop is not None and self._held_warning is not None
        # Debug aid, only with held_warning: where it was acquired (also used by close() and the warning).
        entry.stack = traceback.StackSummary.from_list(traceback.extract_stack(limit=16)[:-2])
        entry.held_handle = self._loop.call_later(self._held_warning, self._warn_held, entry, entry.lease)

    def _warn_held(self, entry: _Entry[T], lease: int) -> None:
        if entry.lease != lease or entry.holder is None:
            return
        self._n_held_too_long += 1
        holder = entry.holder.get_name()
        log.warning(
            "%s: object held for more than %.3gs by task %s; acquired at:\n%s",
            self._name,
            self._held_warning,
            holder,
            "".join(entry.stack.format()) if entry.stack else "(stack not recorded)",
            extra={
                "sanaa_pool": self._name,
                "sanaa_event": "held_too_long",
                "sanaa_held_seconds": _clock() - entry.since,
                "sanaa_task": holder,
            },
        )

    # ------------------------------------------------------------------ returning

    def _take_back(self, entry: _Entry[T], discard: bool) -> asyncio.Future[Any] | None:
        """A holder gives an entry back (lease exit or put(); its holder already cleared). Never awaits.

        Records the use time, runs the reset hook inline, then reuses the entry (next waiter first) or
        drops it. Returns None when that is done, or a future to await while an asynchronous reset finishes
        in a task of its own, shielded: a holder cancelled while it waits still gives the object back.
        """
        now = _clock()
        uses = self._uses
        uses.append(now - entry.since)
        if len(uses) >= _FOLD_AT:
            self._fold_samples()
        if entry.held_handle is not None:
            entry.held_handle.cancel()
            entry.held_handle = None
        if discard or not _reusable(entry, now):
            self._drop(entry, discard)
            return None
        reset = self._reset
        if reset is not None:
            # Only an awaitable result costs a task. So a reset that needs I/O only sometimes (e.g. a
            # rollback when a transaction is open) should return an awaitable only then.
            try:
                pending = reset(entry.obj)
            except Exception as exc:
                self._reset_failed(exc)
                self._discard(entry, counted_as="broken")
                return None
            if pending is not None and inspect.isawaitable(pending):
                return self._reset_in_task(entry, pending)
        self._give(entry, now)
        return None

    def _give(self, entry: _Entry[T], now: float) -> None:
        """Hand a free entry to the oldest live waiter (stamping the hand-over time ``now`` as its
        ``since``), keep it idle (since ``now``) if nobody waits, or drop it if it may not be reused."""
        if not _reusable(entry, now):
            self._drop(entry, discard=False)
            return
        if self._shrinking and self._retire_surplus(entry):
            return
        entry.since = now
        queue = self._queue
        if not (queue.waiting and queue.hand(entry)):
            self._idle.append(entry)

    def _retire_surplus(self, entry: _Entry[T]) -> bool:
        """While shrinking: close ``entry`` (True) if the pool holds more than max_size objects, else end
        the shrinking (False: the entry is used as usual)."""
        retire = self._size() > self._max_size
        if retire:
            self._discard(entry, counted_as="resize")
        if self._size() <= self._max_size:
            self._shrinking = False
            self._plain_release = self._reset is None and self._held_warning is None
        return retire

    def _drop(self, entry: _Entry[T], discard: bool) -> None:
        """Close an entry that must not be reused, counting why."""
        if discard or entry.broken:
            self._discard(entry, counted_as="broken")
        elif not self._is_open:
            self._discard(entry, counted_as="close")
        else:  # replaced by expire_all/drain, or past max_lifetime
            self._discard(entry, counted_as=_expired_reason(entry))

    def _reset_in_task(self, entry: _Entry[T], pending: Awaitable[Any]) -> asyncio.Future[Any]:
        assert self._loop is not None
        self._returning += 1
        task = self._tasks.spawn(self._loop, self._await_reset(pending))
        task.add_done_callback(functools.partial(self._reset_done, entry, pending))
        return asyncio.shield(task)

    async def _await_reset(self, pending: Awaitable[Any]) -> BaseException | None:
        # Returns the failure instead of raising it: the holder awaiting this (shielded) must not get it.
        try:
            async with asyncio.timeout(self._hook_timeout):
                await pending
        except Exception as exc:
            return exc
        return None

    def _reset_done(self, entry: _Entry[T], pending: Awaitable[Any], task: asyncio.Task[Any]) -> None:
        self._returning -= 1
        ok = False
        if task.cancelled():
            # close() gave up on it (maybe before it even started): the object's state is unknown.
            if inspect.iscoroutine(pending):
                pending.close()
        elif (failure := task.result()) is not None:
            self._reset_failed(failure)
        else:
            ok = True
        now = _clock()
        if ok:
            self._give(entry, now)
        else:
            self._drop(entry, discard=True)

    def _reset_failed(self, exc: BaseException) -> None:
        # INFO, not WARNING: during a backend restart every returning connection fails its reset, and
        # the discards are counted in stats().discarded anyway.
        log.info(
            "%s: reset failed, discarding object: %r",
            self._name,
            exc,
            extra={"sanaa_pool": self._name, "sanaa_event": "reset_failed"},
        )

    # ------------------------------------------------------------------ the pool's rules

    def _size(self) -> int:
        return len(self._entries) + self._creating

    def _in_use(self) -> int:
        return len(self._entries) - len(self._idle) - self._returning

    def _grow(self) -> None:
        """Start factory calls for waiters that no creation in flight will serve, and to keep min_size.

        While creating is failing (``_failure``), one call at a time and not before the backoff ends: an
        outage costs a few connection attempts per pool, not one per waiter. The backoff doubles from
        0.1 s up to 10 s, or up to 1 s while callers wait.
        """
        if not self._is_open:
            return
        size = self._size()
        waiting = self._queue.waiting
        if self._failure is not None:
            if self._creating or size >= self._max_size or not (waiting or size < self._min_size):
                return
            now = self._time()
            if waiting and self._retry_at - now > _BACKOFF_MAX_WAITING:
                self._retry_at = now + _BACKOFF_MAX_WAITING * (0.5 + random.random() / 2)
                if self._retry_timer is not None:
                    self._retry_timer.cancel()
                    self._retry_timer = None
            if now < self._retry_at:
                if self._retry_timer is None:
                    assert self._loop is not None
                    self._retry_timer = self._loop.call_at(self._retry_at, self._retry)
                return
            self._start_create()
            return
        while (
            self._creating < self._max_creating
            and size < self._max_size
            and (waiting > self._creating or size < self._min_size)
        ):
            self._start_create()
            size += 1

    def _retry(self) -> None:
        self._retry_timer = None
        self._grow()

    def _discard(self, entry: _Entry[T], counted_as: str | None) -> None:
        """Drop an entry that is neither idle nor held: close it in the background, free its slot.
        ``counted_as`` is the reason (one of :data:`CLOSE_REASONS`), counted in ``stats().closed_by``."""
        del self._entries[entry.key]
        self._leases_retired += entry.lease
        self._n_closed += 1
        reason = _LEGACY_REASONS.get(counted_as) or cast(str, counted_as)
        closed_by = self._closed_by
        closed_by[reason] = closed_by.get(reason, 0) + 1
        if reason in _DISCARDED:
            self._n_discarded += 1
        elif reason in _EXPIRED:
            self._n_expired += 1
        if entry.held_handle is not None:
            entry.held_handle.cancel()
        if self._close is not None:
            assert self._loop is not None
            closing = self._tasks.spawn(self._loop, self._close_object(entry.obj))
            if self._budget is not None:  # its lease goes back once it is closed
                closing.add_done_callback(self._budget_release)
        elif self._budget is not None:
            self._budget.release()
        if self._is_open:
            self._grow()
        else:
            self._notify_if_all_back()

    def _notify_if_all_back(self) -> None:
        # After close() every entry is discarded as it comes back: none left means all are back.
        if self._all_back is not None and not (self._entries or self._creating):
            self._all_back.set()

    # ------------------------------------------------------------------ background work

    def _start_create(self) -> asyncio.Task[tuple[T, float]]:
        assert self._loop is not None
        self._creating += 1
        task = self._tasks.spawn(self._loop, self._make())
        self._creations.add(task)
        task.add_done_callback(self._created)
        return task

    async def _make(self) -> tuple[T, float]:
        """One factory call (its task is booked by _created): the object and how long it took."""
        started = _clock()
        limit = asyncio.timeout(self._create_timeout)
        budget = self._budget
        leased = False
        try:
            async with limit:
                if budget is not None:
                    await budget.acquire()  # one lease per object, before it exists
                    leased = True
                obj = await _call(self._factory)
        except BaseException as exc:
            if leased and budget is not None:
                budget.release()  # no object: its lease goes back
            if not isinstance(exc, TimeoutError) or not limit.expired():
                raise  # the factory's own error (or timeout), as it is
            waited = "" if leased or budget is None else f" (waiting for a lease of budget {budget.name!r})"
            raise PoolTimeout(
                f"{self._name}: creating an object took longer than create_timeout={self._create_timeout}s"
                f"{waited}"
            ) from exc
        return obj, _clock() - started

    def _budget_release(self, _task: asyncio.Task[Any]) -> None:
        assert self._budget is not None
        self._budget.release()

    def _shed_idle(self, n: int) -> int:
        """The fleet budget asks for ``n`` objects back (other processes wait): close idle ones (keeping
        min_size) and retire held ones when they come back, counting those already retired. Returns how
        many more this gave up."""
        if not self._is_open:
            return 0
        n -= sum(1 for e in self._entries.values() if e.expires_at == -_INF)
        if n <= 0:
            return 0
        left = [n]

        def pick(entry: _Entry[T], surplus: int) -> str | None:
            if left[0] > 0 and surplus > 0:
                left[0] -= 1
                return "budget"  # given back to the fleet budget: other processes wait
            return None

        given = self._drop_idle(pick)
        for entry in list(self._entries.values()):
            if given >= n or len(self._entries) <= self._min_size:
                break
            if entry.holder is not None and entry.expires_at != -_INF:
                entry.expires_at = -_INF  # closed instead of reused when it comes back
                given += 1
        return given

    def _created(self, task: asyncio.Task[tuple[T, float]]) -> None:
        """Book the outcome of a factory call (the done-callback of its task)."""
        self._creations.discard(task)
        self._creating -= 1
        if task.cancelled():  # close() stopped it
            self._notify_if_all_back()
            return
        failure = task.exception()
        if failure is not None:
            if isinstance(failure, Exception):
                self._creation_failed(failure)
            else:  # interpreter exit: nothing to hand out
                self._notify_if_all_back()
            return
        obj, took = task.result()
        if id(obj) in self._entries:
            if self._budget is not None:
                self._budget.release()
            self._creation_failed(
                PoolError(f"{self._name}: the factory returned an object the pool already holds: {obj!r}")
            )
            return
        now = _clock()
        self._n_created += 1
        self._create_hist.record(took)
        self._failure = None  # creating works (again)
        self._backoff = self._backoff_min
        lifetime = self._max_lifetime
        expires = _INF
        if lifetime is not None:
            expires = now + lifetime * (1.0 - self._lifetime_jitter * random.random())
        entry = _Entry(obj, now, expires)
        self._entries[entry.key] = entry
        if self._is_open:
            self._give(entry, now)
            if self._queue.waiting > self._creating:
                self._grow()  # after an outage, the other waiters need objects too
        else:
            self._discard(entry, counted_as="close")

    def _creation_failed(self, exc: Exception) -> None:
        self._n_errors += 1
        now = self._time()
        if self._failure is None or now >= self._retry_at:
            # The first failure of an outage, or the one attempt made after the backoff: retry after a
            # longer backoff (with jitter, so that many pools do not retry in step); see _grow. Failures
            # of calls started together with the first one are the same outage and change nothing.
            self._retry_at = now + self._backoff * (0.5 + random.random() / 2)
            self._backoff = min(self._backoff * 2, self._backoff_max)
        self._failure = exc
        waiting = self._queue.waiting
        note = (
            f"while pool {self._name!r} was creating a new object "
            f"({waiting} caller(s) waiting, {self._size()}/{self._max_size} objects)"
        )
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        # The oldest waiter gets the factory's own error, as it would have got the object.
        self._queue.fail_one(exc)
        log.warning(
            "%s: creating an object failed: %r",
            self._name,
            exc,
            extra={"sanaa_pool": self._name, "sanaa_event": "create_failed"},
        )
        if self._is_open:
            self._grow()
        else:
            self._notify_if_all_back()

    async def _close_object(self, obj: T) -> None:
        assert self._close is not None
        try:
            async with asyncio.timeout(self._hook_timeout):
                await _call(self._close, obj)
        except Exception as exc:
            log.warning(
                "%s: closing an object failed: %r",
                self._name,
                exc,
                extra={"sanaa_pool": self._name, "sanaa_event": "close_failed"},
            )

    async def _housekeep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_interval)
            self._housekeep()

    def _housekeep(self) -> None:
        """Close idle objects past their lifetime or idle time (keeping min_size), then refill."""
        now = _clock()
        max_idle = self._max_idle
        self._drop_idle(
            lambda entry, surplus: (
                _expired_reason(entry)
                if not _reusable(entry, now)
                else "idle"
                if max_idle is not None and surplus > 0 and now - entry.since >= max_idle
                else None
            )
        )
        self._grow()

    def _drop_idle(self, stale: Callable[[_Entry[T], int], str | None]) -> int:
        """Close the idle entries ``stale(entry, surplus)`` picks (it returns the reason, or None to keep
        it); ``surplus`` counts objects above min_size still left. Oldest-released first, so the coldest
        go and min_size keeps the hottest."""
        keep: deque[_Entry[T]] = deque()
        drop: list[tuple[_Entry[T], str]] = []
        surplus = self._size() - self._min_size
        for entry in self._idle:
            reason = stale(entry, surplus)
            if reason is not None:
                drop.append((entry, reason))
                surplus -= 1
            else:
                keep.append(entry)
        self._idle.clear()  # in place: a lease in the middle of an acquire holds this deque
        self._idle.extend(keep)
        for entry, reason in drop:
            self._discard(entry, counted_as=reason)
        return len(drop)

    # ------------------------------------------------------------------ errors

    def _check_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            raise self._not_open_error()
        if loop is not self._loop:
            raise PoolError(
                f"{self._name} is bound to the event loop it was opened on ({self._loop!r}) and cannot be "
                f"used from another loop ({loop!r}); create one pool per loop"
            )

    def _not_open_error(self) -> PoolError:
        if self._state == _CLOSED:
            return PoolClosed(f"{self._name} is closed")
        return PoolError(f"{self._name} is not open: use 'async with pool:' or 'await pool.open()' first")

    def _log_still_out(self, timeout: float) -> None:
        for entry in list(self._entries.values()):
            holder = entry.holder.get_name() if entry.holder is not None else "?"
            log.warning(
                "%s: closed after %.3gs with an object still held by task %s%s",
                self._name,
                timeout,
                holder,
                (":\n" + "".join(entry.stack.format())) if entry.stack else "",
                extra={"sanaa_pool": self._name, "sanaa_event": "close_timeout", "sanaa_task": holder},
            )


def _snapshot_of(samples: list[float]) -> HistogramSnapshot:
    hist = Histogram()
    hist.extend(samples)
    return hist.snapshot()
