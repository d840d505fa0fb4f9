"""AsyncPool: a fair, cancellation-safe asyncio pool of expensive objects.

How it works, in one screen
---------------------------
Every object the pool owns is in exactly one of four places, and the pool's size is their sum::

    size = len(idle) + len(in_use) + creating + returning      (never above max_size)

* ``idle``: a deque of free objects, used LIFO (hot objects stay hot, cold ones age out by ``max_idle``);
* ``in_use``: handed to a caller (or to a waiter whose task has not resumed yet);
* ``creating``: a factory call in flight, in its own task;
* ``returning``: a ``reset`` hook in flight, in its own task.

All changes of that state happen in small synchronous methods (:meth:`_give`, :meth:`_grow`,
:meth:`_discard`, :meth:`_take_back`, :meth:`_release`) that never await, so a cancellation can never
leave it half-changed. The pool awaits only to wait for an object and to run hooks (factory, check, reset,
close).

The hot paths (``_Lease.__aenter__`` and ``_take_back``) write out a few steps that also exist as
methods (``_enqueue``'s and ``_give``'s common cases): under load every acquire and release goes through
them, and in a service whose queries take tens of microseconds each extra call is measurable (see
``benchmarks/db_bench.py``). The written-out copies say so where they stand.

Fairness: a freed object is given straight to the oldest waiter that is still waiting (its future is
resolved with the object), never put back where the releasing task could take it again. A waiter whose
future was resolved but whose task was cancelled (or whose timer fired) before it resumed hands the object
on to the next waiter. Timeouts are timers that fail the waiter's future; they never cancel anything.

Cancellation, await by await:

* waiting for an object: nothing is lost; an object already handed over is passed on;
* ``check`` interrupted: the object is in an unknown state, so it is discarded (closed) and its slot freed;
* ``reset`` and ``close`` run in tasks of their own and are shielded: a cancelled holder still returns;
* the factory runs in a task of its own: if the caller stops waiting, the new object goes to the next
  waiter or to the idle set.

The pool is bound to the event loop it is opened on and is not thread-safe (use
:class:`~sanaa_async_mem.resources.ResourceManager` to reach pooled objects from threads).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import random
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

from .. import config
from .._hooks import call as _call
from .._hooks import require_callable
from .._logging import get_logger
from .._stats import Histogram, HistogramSnapshot
from ..errors import ConfigurationError, PoolClosed, PoolError, PoolExhausted, PoolTimeout

__all__ = ["AsyncPool", "PoolStats"]

T = TypeVar("T")

log = get_logger("pool")

_now = time.monotonic
_current_task = asyncio.current_task
_get_running_loop = asyncio.get_running_loop

_NEW, _OPEN, _CLOSED = "new", "open", "closed"

# Background refills (to keep min_size) back off exponentially between these bounds when creation fails.
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 10.0

# Buffered wait/use samples are folded into their histograms when this many are pending (or on stats()).
_FOLD_AT = 256

Factory = Callable[[], "T | Awaitable[T]"]
Hook = Callable[[T], Any]


class _Entry(Generic[T]):
    """One pooled object and what the pool knows about it."""

    __slots__ = (
        "acquired_at",
        "broken",
        "created_at",
        "expires_at",
        "generation",
        "held_handle",
        "holder",
        "key",
        "last_used",
        "lease",
        "obj",
        "stack",
    )

    def __init__(self, obj: T, now: float, expires_at: float, generation: int) -> None:
        self.obj = obj
        self.key = id(obj)  # in_use is keyed by id: unique among live objects, and the pool holds them
        self.created_at = now
        self.expires_at = expires_at
        self.last_used = now
        self.acquired_at = now
        self.generation = generation
        self.lease = 0  # incremented at each hand-out: tells a stale lease from the current one
        self.broken = False
        self.holder: asyncio.Task[Any] | None = None
        self.held_handle: asyncio.TimerHandle | None = None
        self.stack: traceback.StackSummary | None = None


class _Slot:
    """One creation's claim on a place in the pool, released exactly once (see _creation_done)."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStats:
    """A point-in-time view of a pool. Sizes are gauges; the rest count since creation or ``pop_stats``.

    Times are seconds. ``wait`` covers every acquire (immediate ones count as 0 s) up to the moment the
    pool hands the object over, ``use`` the time from then until it comes back (so a waiter's resumption
    lag is in ``use``), ``create`` successful factory calls.
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

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers with stable keys (JSON-serialisable)."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.as_dict() if isinstance(value, HistogramSnapshot) else value
        return out


class _Lease(Generic[T]):
    """``async with pool.acquire() as obj``: gets an object on entry and always returns it on exit."""

    __slots__ = ("_entry", "_lease", "_pool", "_timeout")

    def __init__(self, pool: AsyncPool[T], timeout: float | None) -> None:
        self._pool = pool
        self._timeout = timeout
        self._entry: _Entry[T] | None = None
        self._lease = 0

    async def __aenter__(self) -> T:
        # The whole acquire is written out here, not in a helper coroutine: under load every acquire
        # comes through here, and one more coroutine frame costs as much as the pool's own bookkeeping.
        if self._entry is not None:
            raise PoolError("this acquire() context is already in use; call pool.acquire() again")
        pool = self._pool
        if _get_running_loop() is not pool._loop:
            pool._check_loop(_get_running_loop())
        deadline: float | None = None
        while True:
            if pool._idle:
                # Only free when nobody waits: _give never leaves an object idle while a waiter is live.
                entry = pool._idle.pop()
                pool._in_use[entry.key] = entry
                now = _now()
                if pool._plain_acquire:  # no lifetime, check or holder tracking: nothing more to do
                    entry.lease += 1
                    entry.acquired_at = now
                    pool._n_acquired += 1
                    self._entry = entry
                    self._lease = entry.lease
                    return entry.obj
            else:
                if not pool._is_open:
                    raise pool._not_open_error()
                if pool._max_waiting and pool._nwaiting >= pool._max_waiting:
                    pool._n_exhausted += 1
                    raise PoolExhausted(
                        f"{pool._name}: {pool._nwaiting} callers are already waiting "
                        f"(max_waiting={pool._max_waiting})"
                    )
                started = _now()
                if deadline is None:
                    deadline = started + (pool._timeout if self._timeout is None else self._timeout)
                if pool._nwaiting and deadline >= pool._last_deadline and pool._reaper is not None:
                    # _enqueue's common case under load, written out: others wait, deadlines keep growing
                    # and the shared reaper timer is set; a full pool has nothing to create.
                    fut = pool._loop.create_future()  # type: ignore[union-attr]  # (open: loop set)
                    pool._last_deadline = deadline
                    pool._waiters.append((fut, deadline))
                    pool._nwaiting += 1
                    if len(pool._in_use) < pool._max_size:
                        pool._grow()
                else:
                    fut = pool._enqueue(deadline)
                try:
                    entry = await fut
                except BaseException as exc:
                    pool._abandon(fut, exc)
                    raise
                # Whoever handed the entry over stamped the hand-over time: the wait ends there (what
                # follows is the loop's own lag, measured by LoopLagMonitor), and it saves a clock read.
                now = entry.acquired_at
                pool._waits.append(now - started)  # folded into the wait histogram by _fold_samples
            if pool._max_lifetime is not None and entry.expires_at <= now:
                del pool._in_use[entry.key]
                pool._discard(entry, counted_as="expired")
                continue
            # Checked when idle for _check_after (inf without a check hook: one comparison either way);
            # fresh objects (never handed out) are not checked: the factory just made them.
            if now - entry.last_used >= pool._check_after and entry.lease:
                if not await pool._run_check(entry):
                    continue
                now = _now()
            entry.lease += 1
            entry.acquired_at = now
            pool._n_acquired += 1
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
        if entry.lease != self._lease or pool._in_use.pop(entry.key, None) is not entry:
            raise PoolError(f"{pool._name}: object was already returned (put() inside 'async with')")
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
        and the caller gets another one.
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
        reset: Callable[[T], Any] | None = None,
        close: Callable[[T], Any] | None = None,
        discard_on: tuple[type[BaseException], ...] = (),
        held_warning: float | None = None,
        maintenance_interval: float = 1.0,
    ) -> None:
        require_callable("factory", factory, allow_none=False)
        for hook_name, hook in (("check", check), ("reset", reset), ("close", close)):
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
        self._check_after = check_skip_within if check is not None else float("inf")
        self._held_warning = config.seconds("held_warning", held_warning, allow_none=True, allow_zero=False)
        self._maintenance_interval = config.duration(
            "maintenance_interval", maintenance_interval, allow_zero=False
        )
        if not isinstance(discard_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in discard_on
        ):
            raise ConfigurationError("discard_on", discard_on, "must be a tuple of exception types")

        self._factory = factory
        # Acquire can skip checks, lifetimes and holder tracking: the lease inlines this common case.
        self._plain_acquire = check is None and max_lifetime is None and held_warning is None
        self._check = check
        self._reset = reset
        self._close = close
        self._discard_on = discard_on
        self._name = name or f"pool-{id(self):x}"

        self._state = _NEW
        self._is_open = False  # == (self._state == _OPEN), read on the hot paths
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: deque[_Entry[T]] = deque()
        self._in_use: dict[int, _Entry[T]] = {}
        self._creating = 0
        self._returning = 0
        # Oldest first. Futures of waiters that gave up stay here until skipped (see _give) or compacted;
        # _nwaiting counts only the live ones.
        self._waiters: deque[tuple[asyncio.Future[_Entry[T]], float | None]] = deque()
        self._nwaiting = 0
        self._last_deadline = 0.0
        self._reaper: asyncio.TimerHandle | None = None
        self._reaper_at = 0.0
        self._generation = 0
        self._backoff = _BACKOFF_MIN
        self._refill_after = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()  # every background task (create, reset, close)
        self._creations: set[asyncio.Task[Any]] = set()  # the factory calls among them
        self._housekeeper: asyncio.Task[None] | None = None
        self._all_back: asyncio.Event | None = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self._n_acquired = 0
        self._n_created = 0
        self._n_closed = 0
        self._n_discarded = 0
        self._n_expired = 0
        self._n_timeouts = 0
        self._n_exhausted = 0
        self._n_errors = 0
        self._n_held_too_long = 0
        self._wait_hist = Histogram()
        self._use_hist = Histogram()
        self._create_hist = Histogram()
        # Wait and use times of the hot paths are appended here (a C call) and folded into the histograms
        # in bulk: recording each one costs more than the rest of an acquire. Every release checks the
        # length of _uses; _waits cannot outgrow it by more than the objects the pool made or holds out,
        # since a recorded wait is followed by a release, a discard or a holder that has not returned yet.
        self._waits: list[float] = []
        self._uses: list[float] = []

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

    def acquire(self, timeout: float | None = None) -> _Lease[T]:
        """``async with pool.acquire() as obj:``: an object for the block, returned on exit however the
        block ends (also when the task is cancelled inside it).

        ``timeout`` overrides the pool's wait limit for this call. Raises :class:`PoolTimeout`,
        :class:`PoolExhausted`, :class:`PoolClosed`, or the factory's own error when creating the object
        failed. Waiting is a cancellation point; a cancelled waiter loses nothing.
        """
        if timeout is not None:
            config.seconds("timeout", timeout)
        return _Lease(self, timeout)

    async def get(self, timeout: float | None = None) -> T:
        """Take an object; give it back with :meth:`put`. Same errors and cancellation as :meth:`acquire`."""
        if timeout is not None:
            config.seconds("timeout", timeout)
        # The lease's bookkeeping is all in the pool (in_use); the lease itself is not needed after this.
        return await _Lease(self, timeout).__aenter__()

    async def put(self, obj: T, *, discard: bool = False) -> None:
        """Give back an object taken with :meth:`get`; ``discard=True`` drops it (e.g. it is broken).

        Raises :class:`PoolError` (and changes nothing) for an object that did not come from this pool
        or was already returned. If the pool has a ``reset`` hook, the reset runs shielded: cancelling
        this call does not stop the object from coming back.
        """
        # Keyed by id(): ids are unique among live objects, and the pool holds every checked-out one.
        entry = self._in_use.pop(id(obj), None)
        if entry is None:
            raise PoolError(
                f"{self._name}: put() of an object that is not checked out from this pool "
                f"(never acquired here, or already returned): {obj!r}"
            )
        resetting = self._take_back(entry, discard)
        if resetting is not None:
            await resetting

    def mark_broken(self, obj: T) -> None:
        """Say that a checked-out object is broken: it is closed instead of reused when it comes back."""
        entry = self._in_use.get(id(obj))
        if entry is None or entry.obj is not obj:
            raise PoolError(f"{self._name}: mark_broken() of an object that is not checked out: {obj!r}")
        entry.broken = True

    async def open(self, *, wait: bool = True) -> None:
        """Bind the pool to the running loop and pre-warm ``min_size`` objects.

        With ``wait=True`` (the default) this returns once ``min_size`` objects exist; if any of them
        cannot be made, the pool is closed again and the factory's error is raised (fail fast at start-up,
        nothing leaked). With ``wait=False`` it returns at once and the objects are made in the
        background, retried with backoff. Opening an open pool is a no-op; a closed pool cannot reopen.
        """
        loop = _get_running_loop()
        if self._state == _OPEN:
            self._check_loop(loop)
            return
        if self._state == _CLOSED:
            raise PoolClosed(f"{self._name} is closed and cannot be reopened")
        self._loop = loop
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
            failure = task.result()
            if failure is not None:
                await self.close()
                raise failure

    async def close(self, timeout: float = 10.0) -> None:
        """Close the pool: waiters get :class:`PoolClosed`, idle objects are closed, checked-out ones are
        closed when they come back. Waits up to ``timeout`` seconds for them, then logs which are still out
        (with the acquiring stack when ``held_warning`` is set) and returns. Idempotent. Cancelling this
        call leaves the pool closed; objects still out are closed when they return.
        """
        config.seconds("timeout", timeout)
        if self._state == _CLOSED:
            return
        was_open = self._state == _OPEN
        self._state = _CLOSED
        self._is_open = False
        if not was_open:
            return
        waiters, self._waiters = self._waiters, deque()
        self._nwaiting = 0
        if self._reaper is not None:
            self._reaper.cancel()
        for fut, _deadline in waiters:
            if not fut.done():
                fut.set_exception(PoolClosed(f"{self._name} was closed while waiting"))
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        # Nobody will use what is being made now; a factory call interrupted here owns its half-made object.
        for task in self._creations:
            task.cancel()
        while self._idle:
            self._discard(self._idle.pop(), counted_as=None)
        if self._in_use or self._creating or self._returning:
            self._all_back = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_back.wait(), timeout)
            except TimeoutError:
                self._log_still_out(timeout)
        pending = [t for t in self._tasks if not t.done()]
        if self._housekeeper is not None:
            pending.append(self._housekeeper)
        if pending:
            _done, not_done = await asyncio.wait(pending, timeout=max(timeout, 0.001))
            for task in not_done:
                task.cancel()

    async def drain(self) -> None:
        """Replace every object (e.g. after a database failover): idle ones are closed now, checked-out
        ones when they come back, and ``min_size`` is refilled. Returns when the idle ones are closed."""
        self.expire_all()
        closing = [t for t in self._tasks if not t.done()]
        if closing:
            await asyncio.wait(closing)

    def expire_all(self) -> None:
        """Mark every current object for replacement without waiting (see :meth:`drain`)."""
        self._generation += 1
        while self._idle:
            self._discard(self._idle.pop(), counted_as="expired")
        self._grow()

    def trim_idle(self, older_than: float | None = None) -> int:
        """Close idle objects unused for at least ``older_than`` seconds (all idle ones if None), never
        going below ``min_size``. Returns how many were closed (counted in ``stats().expired``). Used on
        memory pressure; objects checked out are not touched."""
        if older_than is not None:
            config.seconds("older_than", older_than)
        now = _now()
        return self._drop_idle(
            lambda entry, surplus: surplus > 0 and (older_than is None or now - entry.last_used >= older_than)
        )

    def stats(self) -> PoolStats:
        """Sizes, counters and wait/use/create time summaries (see :class:`PoolStats`)."""
        self._fold_samples()
        return PoolStats(
            name=self._name,
            min_size=self._min_size,
            max_size=self._max_size,
            size=self._size(),
            idle=len(self._idle),
            in_use=len(self._in_use),
            creating=self._creating,
            returning=self._returning,
            waiting=self._nwaiting,
            acquired=self._n_acquired,
            created=self._n_created,
            closed=self._n_closed,
            discarded=self._n_discarded,
            expired=self._n_expired,
            timeouts=self._n_timeouts,
            exhausted=self._n_exhausted,
            errors=self._n_errors,
            held_too_long=self._n_held_too_long,
            wait=self._wait_hist.snapshot().with_zeros(self._n_acquired - self._wait_hist.count),
            use=self._use_hist.snapshot(),
            create=self._create_hist.snapshot(),
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
        return (
            f"<AsyncPool {self._name!r} {self._state} size={self._size()}/{self._max_size} "
            f"idle={len(self._idle)} in_use={len(self._in_use)} waiting={self._nwaiting}>"
        )

    # ------------------------------------------------------------------ acquiring

    def _enqueue(self, deadline: float) -> asyncio.Future[_Entry[T]]:
        """Add a waiter at the back of the queue, with its timeout, and start a creation if one is due."""
        loop = self._loop
        assert loop is not None  # open
        fut: asyncio.Future[_Entry[T]] = loop.create_future()
        if not self._nwaiting:
            # Nobody waits: the order of deadlines starts afresh (one long per-call timeout must not
            # push every later waiter onto the slow path), and the reaper must not be aimed later.
            self._last_deadline = deadline
            if self._reaper is not None and self._reaper_at > deadline:
                self._reaper.cancel()
                self._reaper = None
        if deadline >= self._last_deadline:
            # Deadlines of waiters behind each other only grow (same default timeout, later arrival), so
            # one timer aimed at the oldest such waiter serves them all (see _reap): a timer per waiter
            # would cost more than the whole acquire.
            self._last_deadline = deadline
            self._waiters.append((fut, deadline))
            if self._reaper is None:
                self._reaper_at = deadline
                self._reaper = loop.call_later(deadline - _now(), self._reap)
        else:
            # A shorter per-call timeout than the waiter ahead of it: this one gets a timer of its own.
            self._waiters.append((fut, None))
            handle = loop.call_later(max(0.0, deadline - _now()), self._expire, fut)
            fut.add_done_callback(lambda _f: handle.cancel())
        self._nwaiting += 1
        # Under contention the pool is full and _grow would find nothing to do: skip the call.
        if len(self._in_use) < self._max_size and self._size() < self._max_size:
            self._grow()
        return fut

    def _abandon(self, fut: asyncio.Future[_Entry[T]], exc: BaseException) -> None:
        """The waiter's task is leaving without using ``fut``'s object: settle the books (no await)."""
        if fut.cancelled():
            # Our task was cancelled while waiting; nobody resolved the future, so it still counted.
            self._nwaiting -= 1
            self._compact_waiters()
        elif fut.exception() is None:  # (also marks a set exception as retrieved)
            # The object was handed to us but our task was cancelled before it resumed: pass it on.
            entry = fut.result()
            del self._in_use[entry.key]
            self._give(entry, _now())
        elif isinstance(exc, PoolTimeout) and self._holds_object(_current_task()):
            exc.args = (f"{exc}; the waiting task itself holds an object from this pool (nested acquire?)",)

    def _reap(self) -> None:
        """Time out the waiters whose deadline has passed (shared timer; see _enqueue)."""
        self._reaper = None
        now = _now() + 0.001  # the loop's timers may fire up to a clock tick early
        for fut, deadline in self._waiters:
            if deadline is None or fut.done():
                continue
            if deadline > now:
                assert self._loop is not None
                self._reaper_at = deadline
                self._reaper = self._loop.call_later(deadline - now, self._reap)
                break
            self._expire(fut)
        self._compact_waiters()

    def _expire(self, fut: asyncio.Future[_Entry[T]]) -> None:
        if fut.done():
            return
        self._nwaiting -= 1
        self._n_timeouts += 1
        fut.set_exception(
            PoolTimeout(
                f"{self._name}: no object became available in time (size {self._size()}/"
                f"{self._max_size}, {len(self._in_use)} in use, {self._nwaiting} still waiting)"
            )
        )

    def _holds_object(self, task: asyncio.Task[Any] | None) -> bool:
        return task is not None and any(e.holder is task for e in self._in_use.values())

    def _compact_waiters(self) -> None:
        # Abandoned futures are skipped lazily; rebuild only when they clearly outnumber live ones, so a
        # storm of timeouts or cancellations costs O(n) overall instead of O(n) each.
        if len(self._waiters) > 2 * self._nwaiting + 64:
            self._waiters = deque(w for w in self._waiters if not w[0].done())

    async def _run_check(self, entry: _Entry[T]) -> bool:
        """Run the check hook on an entry the caller already holds; False means it was discarded."""
        assert self._check is not None
        try:
            async with asyncio.timeout(self._hook_timeout):
                ok = await _call(self._check, entry.obj)
        except asyncio.CancelledError:
            # An interrupted check may leave the object mid-conversation: never reuse it.
            del self._in_use[entry.key]
            self._discard(entry, counted_as="discarded")
            raise
        except Exception as exc:
            log.info(
                "%s: check failed, discarding object: %r",
                self._name,
                exc,
                extra={"sanaa_pool": self._name, "sanaa_event": "check_failed"},
            )
            ok = False
        if ok is False:
            del self._in_use[entry.key]
            self._discard(entry, counted_as="discarded")
            return False
        return True

    def _watch_holding(self, entry: _Entry[T]) -> None:
        assert self._loop is not None and self._held_warning is not None
        # Debug aid, only with held_warning: who holds what (also used by close() and PoolTimeout).
        entry.holder = _current_task()
        entry.stack = traceback.StackSummary.from_list(traceback.extract_stack(limit=16)[:-2])
        entry.held_handle = self._loop.call_later(self._held_warning, self._warn_held, entry, entry.lease)

    def _warn_held(self, entry: _Entry[T], lease: int) -> None:
        if entry.lease != lease or self._in_use.get(entry.key) is not entry:
            return
        self._n_held_too_long += 1
        holder = entry.holder.get_name() if entry.holder is not None else "?"
        log.warning(
            "%s: object held for more than %.3gs by task %s; acquired at:\n%s",
            self._name,
            self._held_warning,
            holder,
            "".join(entry.stack.format()) if entry.stack else "(stack not recorded)",
            extra={
                "sanaa_pool": self._name,
                "sanaa_event": "held_too_long",
                "sanaa_held_seconds": _now() - entry.acquired_at,
                "sanaa_task": holder,
            },
        )

    # ------------------------------------------------------------------ returning

    def _take_back(self, entry: _Entry[T], discard: bool) -> asyncio.Future[None] | None:
        """A holder gives an entry back (lease exit or put(); already removed from in_use). Never awaits.

        Records the use time, runs the reset hook inline, then reuses the entry (next waiter first) or
        drops it. Returns None when that is done, or a future to await while an asynchronous reset finishes
        in a task of its own, shielded: a holder cancelled while it waits still gives the object back.
        """
        now = _now()
        uses = self._uses
        uses.append(now - entry.acquired_at)
        if len(uses) >= _FOLD_AT:
            self._fold_samples()
        if entry.held_handle is not None:
            entry.held_handle.cancel()
            entry.held_handle = None
            entry.holder = None
        if (
            discard
            or entry.broken
            or not self._is_open
            or entry.generation != self._generation  # replaced by expire_all()/drain() since
            or entry.expires_at <= now  # max_lifetime
        ):
            self._drop_returned(entry, discard)
            return None
        reset = self._reset
        if reset is not None:
            # Only an awaitable result costs a task. So a reset that needs I/O only sometimes (e.g. a
            # rollback when a transaction is open) should return an awaitable only then.
            try:
                pending = reset(entry.obj)
            except Exception as exc:
                self._reset_failed(exc)
                self._discard(entry, counted_as="discarded")
                return None
            if pending is not None and inspect.isawaitable(pending):
                return self._reset_in_task(entry, pending)
        entry.last_used = now
        # _give, written out: every release comes through here.
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[0]
            if not fut.done():
                self._nwaiting -= 1
                self._in_use[entry.key] = entry
                entry.acquired_at = now
                fut.set_result(entry)
                return None
        self._idle.append(entry)
        return None

    def _release(self, entry: _Entry[T], discard: bool) -> None:
        """Reuse or drop an entry back from an asynchronous reset (the end of _take_back)."""
        now = _now()
        if (
            discard
            or entry.broken
            or not self._is_open
            or entry.generation != self._generation
            or entry.expires_at <= now
        ):
            self._drop_returned(entry, discard)
        else:
            entry.last_used = now
            self._give(entry, now)

    def _drop_returned(self, entry: _Entry[T], discard: bool) -> None:
        """Close an entry given back that must not be reused, counting why."""
        if discard or entry.broken:
            self._discard(entry, counted_as="discarded")
        elif not self._is_open:
            self._discard(entry, counted_as=None)
        else:  # replaced by expire_all/drain, or past max_lifetime
            self._discard(entry, counted_as="expired")

    def _reset_in_task(self, entry: _Entry[T], pending: Awaitable[Any]) -> asyncio.Future[None]:
        self._returning += 1
        slot = _Slot()
        task = self._spawn(self._finish_reset(entry, pending, slot))
        task.add_done_callback(lambda _t: self._reset_done(entry, pending, slot))
        return asyncio.shield(task)

    async def _finish_reset(self, entry: _Entry[T], pending: Awaitable[Any], slot: _Slot) -> None:
        ok = False
        try:
            async with asyncio.timeout(self._hook_timeout):
                await pending
            ok = True
        except Exception as exc:
            self._reset_failed(exc)
        finally:
            slot.released = True
            self._returning -= 1
            self._release(entry, discard=not ok)

    def _reset_done(self, entry: _Entry[T], pending: Awaitable[Any], slot: _Slot) -> None:
        if not slot.released:
            # Cancelled before its first step (close() gave up on it): the object's state is unknown.
            slot.released = True
            self._returning -= 1
            if inspect.iscoroutine(pending):
                pending.close()
            self._release(entry, discard=True)

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
        return len(self._idle) + len(self._in_use) + self._creating + self._returning

    def _give(self, entry: _Entry[T], now: float) -> None:
        """Hand a free entry to the oldest live waiter (stamping the hand-over time ``now`` as its
        ``acquired_at``), or keep it idle if nobody waits."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[0]
            if not fut.done():
                self._nwaiting -= 1
                self._in_use[entry.key] = entry
                entry.acquired_at = now
                fut.set_result(entry)
                return
        self._idle.append(entry)

    def _grow(self) -> None:
        """Start factory calls for waiters that no in-flight creation will serve, and to keep min_size."""
        if self._state != _OPEN:
            return
        while self._creating < self._max_creating:
            size = self._size()
            if size >= self._max_size:
                return
            if self._nwaiting <= self._creating and not (
                size < self._min_size and _now() >= self._refill_after
            ):
                return
            self._start_create()

    def _discard(self, entry: _Entry[T], counted_as: str | None) -> None:
        """Drop an entry that is in neither idle nor in_use: close it in the background, free its slot."""
        self._n_closed += 1
        if counted_as == "discarded":
            self._n_discarded += 1
        elif counted_as == "expired":
            self._n_expired += 1
        if entry.held_handle is not None:
            entry.held_handle.cancel()
        if self._close is not None:
            self._spawn(self._close_object(entry.obj))
        if self._state == _OPEN:
            self._grow()
        else:
            self._notify_if_all_back()

    def _notify_if_all_back(self) -> None:
        if self._all_back is not None and not (self._in_use or self._creating or self._returning):
            self._all_back.set()

    # ------------------------------------------------------------------ background work

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_create(self) -> asyncio.Task[BaseException | None]:
        self._creating += 1
        slot = _Slot()
        task = self._spawn(self._create(slot))
        self._creations.add(task)
        task.add_done_callback(lambda t: self._creation_done(t, slot))
        return task

    def _creation_done(self, task: asyncio.Task[Any], slot: _Slot) -> None:
        self._creations.discard(task)
        if not slot.released:
            # Cancelled before its first step: the coroutine never ran, so its slot is given back here.
            self._release_slot(slot)
            self._notify_if_all_back()

    def _release_slot(self, slot: _Slot) -> None:
        slot.released = True
        self._creating -= 1

    async def _create(self, slot: _Slot) -> BaseException | None:
        """One factory call in its own task. Returns the error (already handled) or None."""
        started = _now()
        try:
            try:
                async with asyncio.timeout(self._create_timeout):
                    obj = await _call(self._factory)
            except TimeoutError as exc:
                raise PoolTimeout(
                    f"{self._name}: creating an object took longer than "
                    f"create_timeout={self._create_timeout}s"
                ) from exc
        except BaseException as exc:
            self._release_slot(slot)
            if not isinstance(exc, Exception):  # cancelled (pool closing) or interpreter exit
                self._notify_if_all_back()
                raise
            self._creation_failed(exc)
            return exc
        self._release_slot(slot)
        now = _now()
        self._n_created += 1
        self._create_hist.record(now - started)
        self._backoff = _BACKOFF_MIN
        lifetime = self._max_lifetime
        expires = float("inf")
        if lifetime is not None:
            expires = now + lifetime * (1.0 - self._lifetime_jitter * random.random())
        entry = _Entry(obj, now, expires, self._generation)
        if self._state == _OPEN:
            self._give(entry, now)
        else:
            self._discard(entry, counted_as=None)
        return None

    def _creation_failed(self, exc: Exception) -> None:
        self._n_errors += 1
        while self._waiters:
            fut = self._waiters.popleft()[0]
            if not fut.done():
                # The oldest waiter gets this outcome, as it would have got the object.
                self._nwaiting -= 1
                fut.set_exception(exc)
                break
        else:
            # Nobody is waiting: a background refill failed. Back off (with jitter) before the next one.
            self._refill_after = _now() + self._backoff * (0.5 + random.random() / 2)
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        log.warning(
            "%s: creating an object failed: %r",
            self._name,
            exc,
            extra={"sanaa_pool": self._name, "sanaa_event": "create_failed"},
        )
        if self._state == _OPEN:
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
        now = _now()
        max_idle = self._max_idle
        self._drop_idle(
            lambda entry, surplus: (
                entry.expires_at <= now
                or (max_idle is not None and surplus > 0 and now - entry.last_used >= max_idle)
            )
        )
        self._grow()

    def _drop_idle(self, stale: Callable[[_Entry[T], int], bool]) -> int:
        """Close the idle entries ``stale(entry, surplus)`` picks; ``surplus`` counts objects above min_size
        still left. Oldest-released first, so the coldest go and min_size keeps the hottest."""
        keep: deque[_Entry[T]] = deque()
        drop: list[_Entry[T]] = []
        surplus = self._size() - self._min_size
        for entry in self._idle:
            if stale(entry, surplus):
                drop.append(entry)
                surplus -= 1
            else:
                keep.append(entry)
        self._idle = keep
        for entry in drop:
            self._discard(entry, counted_as="expired")
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
        for entry in self._in_use.values():
            holder = entry.holder.get_name() if entry.holder is not None else "?"
            log.warning(
                "%s: closed after %.3gs with an object still held by task %s%s",
                self._name,
                timeout,
                holder,
                (":\n" + "".join(entry.stack.format())) if entry.stack else "",
                extra={"sanaa_pool": self._name, "sanaa_event": "close_timeout", "sanaa_task": holder},
            )
