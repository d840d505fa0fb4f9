"""ResourceManager: named resources behind one ``async with manager.acquire(name, purpose)``.

A resource is registered under a name in one of three forms, each its own call (never guessed):

* ``register_resource("http", session, cleanup)``: one **shared** object every holder gets (an
  ``aiohttp.ClientSession``, a client that pools internally). It is never called, even if callable.
* ``register_pool("db", pool)``: an :class:`~sanaa_async_mem.pools.AsyncPool` (e.g. from
  :mod:`sanaa_async_mem.resources.adapters`); each holder gets an object of its own.
* ``register_factory("db", connect, max_size=10, ...)``: a pool the manager builds from a factory.

Every acquisition is counted per resource and per purpose (acquisitions, active, peak, waiting, errors,
timeouts, wait and hold time histograms): :meth:`ResourceManager.stats`,
:meth:`ResourceManager.get_resource_stats`.

How the books are kept
----------------------
All bookkeeping of one resource lives in :class:`_Resource` and changes only in its synchronous methods
(:meth:`_Resource.entered`, :meth:`_Resource.left`, :meth:`_Resource.failed`), which never await: a
cancellation can never leave a count half-changed. The manager awaits only to wait (for a
``max_concurrent`` slot, for a pooled object, for holders to leave) and to run cleanups.

``max_concurrent`` is enforced by :class:`_Limiter`, a count of free slots over the pools' own
:class:`~sanaa_async_mem.pools.waitqueue.WaitQueue`: a freed slot goes straight to the oldest waiter still
waiting, never back to whoever releases it; a waiter that was handed a slot but cancelled before it
resumed passes the slot on; timeouts are timers that fail the waiter's future and never cancel anything.

Threads
-------
The manager belongs to the event loop it is first used on (``async with``, ``acquire``, ``close``).
Code in other threads uses :meth:`ResourceManager.acquire_from_thread`, a blocking context manager that
asks the loop (``call_soon_threadsafe``) to acquire and waits until the loop hands the object over; the
thread never touches loop state. Calling any other method from a foreign thread raises
:class:`~sanaa_async_mem.errors.ResourceError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Coroutine, Generator, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, NoReturn, Unpack

from .. import config
from .._hooks import call as _call
from .._hooks import require_callable
from .._logging import get_logger
from .._stats import Histogram, HistogramSnapshot
from ..errors import (
    ConfigurationError,
    PoolClosed,
    PoolTimeout,
    ResourceCleanupError,
    ResourceError,
    SanaaError,
)
from ..pools._tasks import TaskSet
from ..pools.pool import AsyncPool, Holder, PoolOptions, PoolStats, _Lease, merge_snapshots
from ..pools.pool import pool_options as pool_options_checked
from ..pools.waitqueue import WaitQueue
from .lanes import Lanes, check_priority, check_reserve

__all__ = [
    "PurposeStats",
    "ResourceCleanupError",
    "ResourceManager",
    "ResourceManagerStats",
    "ResourceStats",
    "ThreadLease",
]

log = get_logger("resources")

_now = time.monotonic
_get_running_loop = asyncio.get_running_loop

_OPEN: Final = "open"
_CLOSING: Final = "closing"
_CLOSED: Final = "closed"

#: The purpose label used when ``acquire`` is given none.
NO_PURPOSE: Final = "unspecified"
#: Distinct purposes tracked per resource; later ones are counted under ``OTHER_PURPOSES`` so a label
#: built from request data cannot grow the stats without bound.
MAX_PURPOSES: Final = 64
OTHER_PURPOSES: Final = "(other)"

_MISSING: Any = object()


# ---------------------------------------------------------------------------------------------- stats


@dataclasses.dataclass(frozen=True, slots=True)
class PurposeStats:
    """Counters for one purpose of one resource (see :class:`ResourceStats` for what each counts). Times
    are seconds; ``wait`` covers every acquisition (immediate ones count as ~0 s), ``hold`` the time from
    acquisition to release."""

    acquisitions: int
    active: int
    errors: int
    app_errors: int
    timeouts: int
    wait: HistogramSnapshot
    hold: HistogramSnapshot

    def as_dict(self) -> dict[str, Any]:
        return {
            "acquisitions": self.acquisitions,
            "active": self.active,
            "errors": self.errors,
            "app_errors": self.app_errors,
            "timeouts": self.timeouts,
            "wait": self.wait.as_dict(),
            "hold": self.hold.as_dict(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceStats:
    """A point-in-time view of one resource.

    ``active`` holders now, ``peak`` the most at once, ``waiting`` callers inside ``acquire`` that do not
    hold the object yet. ``errors`` counts failures of the resource: acquisitions that failed (other than
    timeouts) and blocks that raised one of its failure types (a pool's ``discard_on``, e.g. a lost
    connection; ``failures=`` of a shared resource). ``app_errors`` counts blocks that raised any other
    ``Exception`` (the application's own errors, e.g. an HTTP 409 raised while holding a connection: the
    resource did not fail). ``timeouts`` counts acquisitions that timed out; ``cancelled`` acquisitions
    whose task was cancelled while waiting. ``pool`` is the pool's own
    :class:`~sanaa_async_mem.pools.PoolStats` (its ``discarded`` counts dead connections replaced) for pool
    resources, else None.
    """

    name: str
    kind: Literal["shared", "pool"]
    state: str
    max_concurrent: int | None
    acquisitions: int
    active: int
    peak: int
    waiting: int
    errors: int
    app_errors: int
    timeouts: int
    cancelled: int
    wait: HistogramSnapshot
    hold: HistogramSnapshot
    by_purpose: Mapping[str, PurposeStats]
    pool: PoolStats | None

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers with stable keys (JSON-serialisable)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "max_concurrent": self.max_concurrent,
            "acquisitions": self.acquisitions,
            "active": self.active,
            "peak": self.peak,
            "waiting": self.waiting,
            "errors": self.errors,
            "app_errors": self.app_errors,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "wait": self.wait.as_dict(),
            "hold": self.hold.as_dict(),
            "by_purpose": {k: v.as_dict() for k, v in self.by_purpose.items()},
            "pool": None if self.pool is None else self.pool.as_dict(),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceManagerStats:
    """The whole manager: totals over its resources (in registration order) and each resource's view."""

    state: str
    acquisitions: int
    active: int
    waiting: int
    errors: int
    app_errors: int
    timeouts: int
    resources: Mapping[str, ResourceStats]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "acquisitions": self.acquisitions,
            "active": self.active,
            "waiting": self.waiting,
            "errors": self.errors,
            "app_errors": self.app_errors,
            "timeouts": self.timeouts,
            "resources": {k: v.as_dict() for k, v in self.resources.items()},
        }


class _Purpose:
    """Mutable counters of one purpose (a resource records each acquisition in exactly one of these)."""

    __slots__ = ("acquisitions", "active", "app_errors", "errors", "hold", "timeouts", "wait")

    def __init__(self) -> None:
        self.acquisitions = 0
        self.active = 0
        self.errors = 0
        self.app_errors = 0
        self.timeouts = 0
        self.wait = Histogram()
        self.hold = Histogram()

    def snapshot(self) -> PurposeStats:
        return PurposeStats(
            self.acquisitions,
            self.active,
            self.errors,
            self.app_errors,
            self.timeouts,
            self.wait.snapshot(),
            self.hold.snapshot(),
        )


# -------------------------------------------------------------------------------------------- limiter


class _Limiter:
    """At most ``limit`` holders at once. Waiters queue in a :class:`WaitQueue`: a freed slot is handed
    straight to the oldest one still waiting, never back to whoever releases it.

    Not thread-safe: used on the manager's loop only. ``acquire`` is a cancellation point and loses nothing.
    """

    __slots__ = ("free", "limit", "loop", "queue", "what")

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self.limit = limit
        self.free = limit
        self.what = what
        self.loop = loop
        self.queue: WaitQueue[None] = WaitQueue(loop, self._timed_out)

    async def acquire(self, timeout: float) -> None:
        """Take a slot within ``timeout`` seconds or raise :class:`PoolTimeout`."""
        if self.free and not self.queue.waiting:
            self.free -= 1
            return
        fut = self.queue.park(self.loop.time() + timeout)
        try:
            await fut
        except BaseException:
            if self.queue.abandon(fut):
                self.release()  # a slot was handed to us, but our task is leaving: pass it on
            raise

    def release(self) -> None:
        queue = self.queue
        if not (queue.waiting and queue.hand(None)):
            self.free += 1

    def _timed_out(self) -> PoolTimeout:
        return PoolTimeout(f"{self.what}: no slot became free in time (max_concurrent={self.limit} all held)")


# ------------------------------------------------------------------------------------------- resource


class _Resource:
    """One registered resource and all of its bookkeeping (synchronous methods only, except ``close``)."""

    __slots__ = (
        "acquisitions",
        "active",
        "app_errors",
        "cancelled",
        "cleanup",
        "closing_task",
        "errors",
        "failures",
        "idle_event",
        "kind",
        "lane_options",
        "lanes",
        "limiter",
        "max_concurrent",
        "name",
        "obj",
        "peak",
        "pool",
        "purposes",
        "state",
        "timeouts",
        "waiting",
    )

    def __init__(
        self,
        name: str,
        obj: Any,
        pool: AsyncPool[Any] | None,
        cleanup: Callable[[Any], Any] | None,
        max_concurrent: int | None,
        *,
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self.name = name
        self.obj = obj
        self.pool = pool
        self.failures = failures
        self.kind: Literal["shared", "pool"] = "shared" if pool is None else "pool"
        self.cleanup = cleanup
        self.max_concurrent = max_concurrent
        self.limiter: _Limiter | None = None  # made on first use, when the loop is known
        # Reserved capacity / priorities (see lanes.py): (reserve, aging) when asked for, the gate made on
        # first use like the limiter.
        self.lane_options: tuple[dict[str, int], float] | None = None
        self.lanes: Lanes | None = None
        self.state = _OPEN
        self.acquisitions = 0
        self.active = 0
        self.peak = 0
        self.waiting = 0
        self.errors = 0
        self.app_errors = 0
        self.timeouts = 0
        self.cancelled = 0
        self.purposes: dict[str, _Purpose] = {}
        self.idle_event: asyncio.Event | None = None  # set when the last holder leaves a closing resource
        self.closing_task: asyncio.Task[None] | None = None

    def purpose(self, label: str | None) -> _Purpose:
        key = NO_PURPOSE if label is None else label
        stats = self.purposes.get(key)
        if stats is None:
            if len(self.purposes) >= MAX_PURPOSES:
                key = OTHER_PURPOSES
                stats = self.purposes.get(key)
            if stats is None:
                stats = self.purposes[key] = _Purpose()
        return stats

    # The three transitions of an acquisition. Each runs without awaiting.

    def entered(self, purpose: _Purpose, waited: float) -> None:
        self.waiting -= 1
        self.active += 1
        if self.active > self.peak:
            self.peak = self.active
        self.acquisitions += 1
        purpose.acquisitions += 1
        purpose.active += 1
        purpose.wait.record(waited)

    def failed(self, purpose: _Purpose, exc: BaseException) -> None:
        """The acquisition did not succeed (the caller does not hold the object)."""
        self.waiting -= 1
        if isinstance(exc, TimeoutError):
            self.timeouts += 1
            purpose.timeouts += 1
        elif isinstance(exc, Exception):
            self.errors += 1
            purpose.errors += 1
        else:
            self.cancelled += 1
        self._notify_if_idle()

    def left(self, purpose: _Purpose, held: float, exc: BaseException | None) -> None:
        self.active -= 1
        purpose.active -= 1
        purpose.hold.record(held)
        if exc is not None:
            if isinstance(exc, self.failures):
                self.errors += 1
                purpose.errors += 1
            elif isinstance(exc, Exception):  # not a cancellation: the application's own error
                self.app_errors += 1
                purpose.app_errors += 1
        self._notify_if_idle()

    def _notify_if_idle(self) -> None:
        if self.idle_event is not None and not self.active and not self.waiting:
            self.idle_event.set()

    def capacity(self) -> int:
        """Holders allowed at once: the pool's max_size (read now: resize() is followed), max_concurrent."""
        limits = [self.pool.max_size] if self.pool is not None else []
        if self.max_concurrent is not None:
            limits.append(self.max_concurrent)
        return min(limits)

    def stats(self) -> ResourceStats:
        # list(): one C-level copy, so a reader on another thread never iterates a dict that is growing.
        purposes = {k: v.snapshot() for k, v in list(self.purposes.items())}
        return ResourceStats(
            name=self.name,
            kind=self.kind,
            state=self.state,
            max_concurrent=self.max_concurrent,
            acquisitions=self.acquisitions,
            active=self.active,
            peak=self.peak,
            waiting=self.waiting,
            errors=self.errors,
            app_errors=self.app_errors,
            timeouts=self.timeouts,
            cancelled=self.cancelled,
            wait=merge_snapshots([p.wait for p in purposes.values()]),
            hold=merge_snapshots([p.hold for p in purposes.values()]),
            by_purpose=MappingProxyType(purposes),
            pool=None if self.pool is None else self.pool.stats(),
        )


# -------------------------------------------------------------------------------------------- leases


class _ManagedLease:
    """``async with manager.acquire(name, purpose) as obj``: one acquisition, always released on exit."""

    __slots__ = (
        "_lanes",
        "_limiter",
        "_manager",
        "_name",
        "_pool_lease",
        "_priority",
        "_purpose",
        "_resource",
        "_since",
        "_stats",
        "_timeout",
    )

    def __init__(
        self,
        manager: ResourceManager,
        name: str,
        purpose: str | None,
        timeout: float | None,
        priority: float | None = None,
    ) -> None:
        self._manager = manager
        self._name = name
        self._purpose = purpose
        self._timeout = timeout
        self._priority = priority
        self._lanes: Lanes | None = None
        self._resource: _Resource | None = None
        self._stats: _Purpose | None = None
        self._pool_lease: _Lease[Any] | None = None
        self._limiter: _Limiter | None = None
        self._since = 0.0

    def __await__(self) -> Generator[Any, None, NoReturn]:
        raise TypeError(
            f"manager.acquire({self._name!r}) is not awaited: use "
            f"'async with manager.acquire({self._name!r}) as obj:' (the object is released on exit)"
        )

    async def __aenter__(self) -> Any:
        if self._resource is not None:
            raise ResourceError("this acquire() context is already in use; call manager.acquire() again")
        manager = self._manager
        res = manager._lookup_for_acquire(self._name)
        purpose = res.purpose(self._purpose)
        started = _now()
        if self._priority is not None and res.lane_options is None:
            raise ConfigurationError(
                "priority",
                self._priority,
                f"resource {res.name!r} has no lanes: register it with reserve= or priority_aging=",
            )
        res.waiting += 1
        try:
            limiter = res.limiter
            timeout = self._timeout
            lanes = res.lanes
            if lanes is not None:
                await lanes.enter(
                    self._purpose, self._priority or 0.0, manager._timeout if timeout is None else timeout
                )
                self._lanes = lanes
                if timeout is not None:
                    timeout = max(0.0, timeout - (_now() - started))
            if limiter is not None:
                await limiter.acquire(manager._timeout if timeout is None else timeout)
                self._limiter = limiter
                if timeout is not None:
                    timeout = max(0.0, timeout - (_now() - started))
            if res.pool is None:
                obj = res.obj
            else:
                if res.pool.state == "new":
                    # Opened lazily, on the manager's loop. wait=False: a cancelled open(wait=True) would
                    # close the pool for good; this way min_size is made in the background and this caller
                    # simply waits in the pool's queue (and gets the factory's error if creation fails).
                    await res.pool.open(wait=False)
                lease = res.pool.acquire(timeout, purpose=self._purpose)
                obj = await lease.__aenter__()
                self._pool_lease = lease
            if res.state is not _OPEN:
                # unregister_resource() began while we waited: refuse, and give the object straight back.
                raise ResourceError(f"resource {res.name!r} is being unregistered")
        except BaseException as exc:
            res.failed(purpose, exc)  # first: the books must balance even if giving back is interrupted
            await self._give_back(None)
            if isinstance(exc, PoolClosed) and res.state is not _OPEN:
                raise ResourceError(f"resource {res.name!r} was unregistered while waiting") from exc
            if isinstance(exc, Exception) and not isinstance(exc, SanaaError):
                # A backend's own error (connection refused...): say which resource it was for.
                label = self._purpose or NO_PURPOSE
                exc.add_note(f"while acquiring resource {res.name!r} (purpose {label!r})")
            raise
        now = _now()
        res.entered(purpose, now - started)
        self._resource = res
        self._stats = purpose
        self._since = now
        return obj

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        res = self._resource
        purpose = self._stats
        if res is None or purpose is None:
            return
        self._resource = self._stats = None
        res.left(purpose, _now() - self._since, exc)
        await self._give_back(exc)

    async def _give_back(self, exc: BaseException | None) -> None:
        """Return the pooled object (the pool decides, by ``discard_on``, whether to keep it) and the slot."""
        lease, self._pool_lease = self._pool_lease, None
        limiter, self._limiter = self._limiter, None
        lanes, self._lanes = self._lanes, None
        try:
            if lease is not None:
                # The pool's release is shielded: if we are cancelled here the object still goes back.
                await lease.__aexit__(type(exc) if exc is not None else None, exc, None)
        finally:
            if limiter is not None:
                limiter.release()
            if lanes is not None:
                lanes.leave(self._purpose)  # last: a waiter granted the slot finds the object back


class ThreadLease:
    """``with manager.acquire_from_thread(name, purpose) as obj:`` from a thread that is not the loop's.

    :meth:`acquire` blocks the calling thread until the loop hands the object over (or the acquisition
    fails: its error is raised here), :meth:`release` blocks until the loop has taken it back. All the work
    happens on the loop (submitted with ``call_soon_threadsafe``); this object only waits. Not reusable
    concurrently; one acquisition at a time.
    """

    __slots__ = ("_lease", "_manager", "_name", "_purpose", "_task", "_timeout")

    def __init__(
        self, manager: ResourceManager, name: str, purpose: str | None, timeout: float | None
    ) -> None:
        self._manager = manager
        self._name = name
        self._purpose = purpose
        self._timeout = timeout
        self._lease: _ManagedLease | None = None
        self._task: asyncio.Task[Any] | None = None

    def acquire(self) -> Any:
        """Block until the object is ours; raise what the acquisition raised.

        If the thread stops waiting (e.g. ``KeyboardInterrupt``), the loop cancels the acquisition or,
        when the object was already handed over, gives it back: nothing leaks.
        """
        if self._lease is not None:
            raise ResourceError("this ThreadLease already holds an object; release() it first")
        loop = self._manager._loop_for_thread()
        lease = _ManagedLease(self._manager, self._name, self._purpose, self._timeout)
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def start() -> None:  # on the loop
            task = loop.create_task(lease.__aenter__())
            self._task = task

            def copy(t: asyncio.Task[Any]) -> None:
                if done.cancelled():
                    return
                if t.cancelled():
                    done.set_exception(ResourceError(f"acquire of {self._name!r} was cancelled"))
                elif (exc := t.exception()) is not None:
                    done.set_exception(exc)
                else:
                    done.set_result(t.result())

            task.add_done_callback(copy)

        loop.call_soon_threadsafe(start)
        try:
            obj = done.result()
        except BaseException:
            if not done.done() or done.cancelled():
                # We stopped waiting (interrupted): let the loop undo whatever happened.
                loop.call_soon_threadsafe(self._abandon_on_loop, lease)
            raise
        self._lease = lease
        return obj

    def _abandon_on_loop(self, lease: _ManagedLease) -> None:
        task = self._task
        if task is None:
            return
        if not task.done():
            task.cancel()  # the lease is cancellation-safe: a half-finished acquisition undoes itself
        elif not task.cancelled() and task.exception() is None:
            self._manager._spawn(lease.__aexit__(None, None, None))

    def release(self, exc: BaseException | None = None) -> None:
        """Give the object back (blocking until the loop has it). ``exc``: the error the work ended with,
        so the pool can discard a broken connection (``discard_on``) and the stats count it."""
        lease, self._lease = self._lease, None
        if lease is None:
            raise ResourceError("release() without a matching acquire()")
        loop = self._manager._loop_for_thread()
        fut = asyncio.run_coroutine_threadsafe(
            lease.__aexit__(type(exc) if exc is not None else None, exc, None), loop
        )
        fut.result()

    def __enter__(self) -> Any:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(exc)


# -------------------------------------------------------------------------------------------- manager


class ResourceManager:
    """Named resources (shared objects or pools) with counted, limited, always-released acquisitions.

    ``timeout`` (seconds) is the default limit on waiting for a ``max_concurrent`` slot; a pool's own
    ``timeout`` limits the wait for its objects. Use ``async with ResourceManager() as manager:`` or call
    :meth:`close` (``aclose`` is the same call). The manager is bound to the event loop it is first used
    on; see the module docstring for use from threads.
    """

    def __init__(self, *, timeout: float = 30.0, close_timeout: float = 10.0) -> None:
        self._timeout = config.duration("timeout", timeout)
        self._close_timeout = config.duration("close_timeout", close_timeout)
        self._resources: dict[str, _Resource] = {}
        self._state = _OPEN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._tasks = TaskSet()
        self._closing: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ registering

    def register_resource(
        self,
        name: str,
        resource: Any = _MISSING,
        cleanup: Callable[[Any], Any] | None = None,
        *,
        max_concurrent: int | None = None,
        failures: tuple[type[BaseException], ...] = (),
        factory: Callable[[], Any] | None = None,
        pool_options: Mapping[str, Any] | None = None,
        reserve: Mapping[str, int] | None = None,
        priority_aging: float | None = None,
    ) -> None:
        """Register one shared object: ``register_resource("http", session, close_session)``.

        Every holder gets ``resource`` itself; it is never called, even if callable (use
        :meth:`register_factory` for objects made on demand). ``cleanup(resource)`` (sync or async) runs
        exactly once when the resource is unregistered or the manager closes. ``max_concurrent`` limits
        holders at once (fair FIFO). ``failures``: the exception types which, raised out of a block, count
        as failures of the resource in ``stats().errors`` (others count as ``app_errors``).

        ``reserve={"health": 1}`` keeps that many of the resource's slots (its pool's ``max_size``, or
        ``max_concurrent``) for a purpose, and ``priority_aging`` (seconds per priority point, default
        1.0 once lanes are on) lets :meth:`acquire` take ``priority=``: see
        :mod:`sanaa_async_mem.resources.lanes` for the rules and the bound on waiting. Either needs a limit
        (a pool or ``max_concurrent``). The same two options exist on :meth:`register_pool` and
        :meth:`register_factory`.

        The original call shapes keep working: an :class:`AsyncPool` as ``resource`` is
        :meth:`register_pool`, and ``factory=`` (with ``pool_options=``) is :meth:`register_factory`.

        Raises :class:`ResourceError` for a duplicate name or a closed manager and
        :class:`ConfigurationError` (naming the parameter) for a bad name, cleanup or max_concurrent, or
        both or neither of ``resource`` and ``factory``. Nothing is registered when it raises.
        """
        if (resource is _MISSING) == (factory is None):
            raise ConfigurationError(
                "factory",
                factory,
                "pass a resource (a shared object or an AsyncPool, positional) or factory=, not both",
            )
        if factory is not None:
            if failures:
                raise ConfigurationError("failures", failures, "a pool's failures are its discard_on")
            options = pool_options_checked(dict(pool_options or {}), "pool_options")
            self.register_factory(
                name,
                factory,
                cleanup=cleanup,
                max_concurrent=max_concurrent,
                reserve=reserve,
                priority_aging=priority_aging,
                **options,
            )
            return
        if pool_options is not None:
            raise ConfigurationError("pool_options", pool_options, "only applies with factory=")
        if isinstance(resource, AsyncPool):
            if failures:
                raise ConfigurationError("failures", failures, "a pool's failures are its discard_on")
            self.register_pool(
                name,
                resource,
                cleanup=cleanup,
                max_concurrent=max_concurrent,
                reserve=reserve,
                priority_aging=priority_aging,
            )
            return
        self._check_registration(name, cleanup, max_concurrent)
        if not isinstance(failures, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in failures
        ):
            raise ConfigurationError("failures", failures, "must be a tuple of exception types")
        self._add(
            name, resource, None, cleanup, max_concurrent, failures=failures, lanes=(reserve, priority_aging)
        )

    def register_pool(
        self,
        name: str,
        pool: AsyncPool[Any],
        *,
        cleanup: Callable[[AsyncPool[Any]], Any] | None = None,
        max_concurrent: int | None = None,
        reserve: Mapping[str, int] | None = None,
        priority_aging: float | None = None,
    ) -> None:
        """Register an :class:`AsyncPool` (e.g. from :mod:`sanaa_async_mem.resources.adapters`): each holder
        gets an object of its own. The manager owns the pool from now on: it opens it on first use if
        needed and closes it when the resource goes, then runs ``cleanup(pool)`` once.

        ``max_concurrent`` limits holders on top of the pool's ``max_size`` (ignored when not tighter).
        Same errors as :meth:`register_resource`; a closed pool is a :class:`ResourceError`.
        """
        if not isinstance(pool, AsyncPool):
            raise ConfigurationError("pool", pool, "must be an AsyncPool (use register_resource for others)")
        self._check_registration(name, cleanup, max_concurrent)
        if pool.closed:
            raise ResourceError(f"cannot register {name!r}: the pool {pool.name!r} is closed")
        if max_concurrent is not None and max_concurrent >= pool.max_size:
            max_concurrent = None  # the pool's max_size already limits holders as tightly
        self._add(
            name,
            pool,
            pool,
            cleanup,
            max_concurrent,
            failures=pool.discard_on,
            lanes=(reserve, priority_aging),
        )

    def register_factory(
        self,
        name: str,
        factory: Callable[[], Any],
        /,
        *,
        cleanup: Callable[[AsyncPool[Any]], Any] | None = None,
        max_concurrent: int | None = None,
        reserve: Mapping[str, int] | None = None,
        priority_aging: float | None = None,
        **pool_options: Unpack[PoolOptions],
    ) -> None:
        """Register a pool the manager builds: ``AsyncPool(factory, name=name, **pool_options)``.

        ``factory`` is sync or async with no arguments. ``max_concurrent`` becomes the pool's
        ``max_size`` (give one or the other); the pool's ``timeout`` is the manager's unless given.
        ``cleanup(pool)`` runs once after the pool is closed.
        An unknown option raises :class:`ConfigurationError` naming it; so does a bad value (named by the
        pool). Otherwise the same errors as :meth:`register_resource`.
        """
        self._check_registration(name, cleanup, max_concurrent)
        require_callable("factory", factory, allow_none=False)
        options: dict[str, Any] = pool_options_checked(dict(pool_options))
        options.setdefault("name", name)
        if max_concurrent is not None and options.setdefault("max_size", max_concurrent) != max_concurrent:
            raise ConfigurationError(
                "max_concurrent",
                max_concurrent,
                f"conflicts with pool option max_size={options['max_size']!r} (give one of them)",
            )
        # The manager's timeout is the pool's wait limit too, unless the options say otherwise.
        options.setdefault("timeout", self._timeout)
        pool: AsyncPool[Any] = AsyncPool(factory, **options)
        # The pool itself enforces max_concurrent (as max_size), with the same fairness.
        self._add(name, pool, pool, cleanup, None, failures=pool.discard_on, lanes=(reserve, priority_aging))

    def _check_registration(self, name: str, cleanup: object, max_concurrent: object) -> None:
        self._check_thread()
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "must be a non-empty string")
        if self._state is not _OPEN:
            raise ResourceError(f"cannot register {name!r}: the resource manager is {self._state}")
        if name in self._resources:
            raise ResourceError(f"a resource named {name!r} is already registered; unregister it first")
        require_callable("cleanup", cleanup)
        if max_concurrent is not None and (
            isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 1
        ):
            raise ConfigurationError("max_concurrent", max_concurrent, "must be an int >= 1 or None")

    def _add(
        self,
        name: str,
        obj: Any,
        pool: AsyncPool[Any] | None,
        cleanup: Callable[[Any], Any] | None,
        max_concurrent: int | None,
        *,
        failures: tuple[type[BaseException], ...],
        lanes: tuple[Mapping[str, int] | None, float | None] = (None, None),
    ) -> None:
        res = _Resource(name, obj, pool, cleanup, max_concurrent, failures=failures)
        reserve, aging = lanes
        if reserve is not None or aging is not None:
            res.lane_options = _lane_options(res, reserve, aging)
        self._resources[name] = res
        log.debug(
            "registered resource %s (%s)",
            name,
            "pool" if pool is not None else "shared",
            extra={"sanaa_resource": name, "sanaa_event": "registered"},
        )

    # ------------------------------------------------------------------ acquiring

    def acquire(
        self,
        name: str,
        purpose: str | None = None,
        *,
        timeout: float | None = None,
        priority: float | None = None,
    ) -> _ManagedLease:
        """``async with manager.acquire("db", "load user") as conn:``: the resource for the block.

        Released on exit however the block ends (also on cancellation). A pooled object is discarded when
        the block raises one of the pool's ``discard_on`` errors. ``purpose`` is a label for the stats.
        ``timeout`` (seconds) overrides the default wait limit.

        Raises :class:`ResourceError` (unknown name, listing the registered ones; resource being
        unregistered; manager closed), :class:`PoolTimeout`, or the pool's errors. Waiting (for a slot,
        for a pooled object) is a cancellation point and a cancelled waiter loses nothing.

        ``priority`` (a number, higher first; default 0) orders the waiters of a resource registered with
        lanes (``reserve=`` or ``priority_aging=``; see :mod:`sanaa_async_mem.resources.lanes` for the
        aging bound), and is a ConfigurationError on one without. A purpose with reserved capacity finds
        its reserved slots free at once.
        """
        if timeout is not None:
            config.seconds("timeout", timeout)
        if priority is not None:
            priority = check_priority(priority)
        return _ManagedLease(self, name, purpose, timeout, priority)

    acquire_resource = acquire  # the original name of the same call, kept as an alias

    def acquire_from_thread(
        self, name: str, purpose: str | None = None, *, timeout: float | None = None
    ) -> ThreadLease:
        """From a worker thread beside the manager's loop: ``with manager.acquire_from_thread("db") as c:``.

        Entering blocks the thread until the loop hands the object over; leaving blocks until the loop
        has taken it back. Same errors as :meth:`acquire`. Calling it on the loop's own thread raises
        :class:`ResourceError` (it would deadlock): use ``async with manager.acquire(...)`` there. The
        object is used from the thread: it must tolerate that (asyncio connections usually do not).
        """
        if timeout is not None:
            config.seconds("timeout", timeout)
        return ThreadLease(self, name, purpose, timeout)

    # ------------------------------------------------------------------ stats

    @property
    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order (including resources being unregistered)."""
        return tuple(self._resources)

    def get_pool(self, name: str) -> AsyncPool[Any] | None:
        """The AsyncPool behind ``name`` (registered or built from a factory), or None for a shared
        object. Unknown name: ResourceError."""
        res = self._resources.get(name)
        if res is None:
            raise self._unknown(name)
        return res.pool

    def holders(self, name: str | None = None) -> list[Holder]:
        """Who holds pooled objects now (see :meth:`AsyncPool.holders`): of resource ``name``, or of every
        pooled resource, longest-held first. Each :class:`~sanaa_async_mem.pools.pool.Holder` is named by
        the resource (``holder.pool``) and carries the purpose given to :meth:`acquire`. Shared (unpooled)
        resources have no objects to hold and report none. Unknown name: ResourceError."""
        if name is not None:
            res = self._resources.get(name)
            if res is None:
                raise self._unknown(name)
            chosen = [res]
        else:
            chosen = list(self._resources.values())
        out: list[Holder] = []
        for res in chosen:
            if res.pool is not None:
                out.extend(dataclasses.replace(h, pool=res.name) for h in res.pool.holders())
        out.sort(key=lambda h: -h.held_for)
        return out

    def get_resource_stats(self, name: str) -> ResourceStats:
        """Counters and timings of one resource (see :class:`ResourceStats`). Unknown name: ResourceError."""
        res = self._resources.get(name)
        if res is None:
            raise self._unknown(name)
        return res.stats()

    def stats(self) -> ResourceManagerStats:
        """Every resource's stats and their totals. Safe to call from any thread (values may be a few
        acquisitions apart from each other when the loop is busy)."""
        per = {name: res.stats() for name, res in list(self._resources.items())}
        return ResourceManagerStats(
            state=self._state,
            acquisitions=sum(s.acquisitions for s in per.values()),
            active=sum(s.active for s in per.values()),
            waiting=sum(s.waiting for s in per.values()),
            errors=sum(s.errors for s in per.values()),
            app_errors=sum(s.app_errors for s in per.values()),
            timeouts=sum(s.timeouts for s in per.values()),
            resources=MappingProxyType(per),
        )

    get_stats = stats  # the original name of the same call, kept as an alias

    # ------------------------------------------------------------------ closing

    async def unregister_resource(self, name: str, timeout: float | None = None) -> None:
        """Remove a resource: refuse new acquisitions at once (waiters get :class:`ResourceError`), wait up
        to ``timeout`` seconds (default ``close_timeout``) for holders to leave, close its pool, then run
        its cleanup exactly once. Holders still out after the timeout are logged; their pooled objects
        are closed when they come back.

        Raises :class:`ResourceError` for an unknown name, :class:`ResourceCleanupError` if the cleanup (or
        closing the pool) failed; the resource is gone either way. Concurrent calls share one close.
        Cancelling the caller does not interrupt the close (it is shielded and finishes on its own).
        """
        self._bind()
        if timeout is not None:
            config.seconds("timeout", timeout)
        res = self._resources.get(name)
        if res is None:
            raise self._unknown(name)
        task = self._start_closing(res, self._close_timeout if timeout is None else timeout)
        await asyncio.shield(task)

    async def close(self, timeout: float | None = None) -> None:
        """Close every resource, newest first; refuse new registrations and acquisitions from now on.

        ``timeout`` (default ``close_timeout``) is the total time given to holders to leave, shared by the
        resources in turn: a hung holder delays the close by at most that long. One failing cleanup
        does not stop the others; all failures are raised together as :class:`ResourceCleanupError`.
        Concurrent calls share one close (and its errors); a call after the close finished returns at
        once. Cancelling the caller does not interrupt the close.
        """
        self._bind()
        if timeout is not None:
            config.seconds("timeout", timeout)
        if self._closing is None:
            self._state = _CLOSING
            self._closing = self._spawn(self._close_all(self._close_timeout if timeout is None else timeout))
        elif self._closing.done():
            return  # already closed; its errors went to the callers that waited for that close
        await asyncio.shield(self._closing)

    aclose = close  # the original name of the same call, kept as an alias

    async def __aenter__(self) -> ResourceManager:
        self._bind()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<ResourceManager {self._state} resources={list(self._resources)}>"

    # ------------------------------------------------------------------ internals

    def _start_closing(self, res: _Resource, timeout: float) -> asyncio.Task[None]:
        if res.closing_task is None:
            # All in one synchronous step: from here on nobody new gets in.
            res.state = _CLOSING
            if res.limiter is not None:
                res.limiter.queue.fail_all(
                    lambda: ResourceError(f"resource {res.name!r} was unregistered while waiting")
                )
            if res.lanes is not None:
                res.lanes.fail_all(
                    lambda: ResourceError(f"resource {res.name!r} was unregistered while waiting")
                )
            res.closing_task = self._spawn(self._close_resource(res, timeout))
        return res.closing_task

    async def _close_resource(self, res: _Resource, timeout: float) -> None:
        errors: list[Exception] = []
        deadline = _now() + timeout
        if res.pool is not None:
            # Closing the pool first fails its waiters (each gets a ResourceError) so they never become
            # holders, and waits (up to the timeout) for the holders to bring their objects back.
            try:
                await res.pool.close(timeout=timeout)
            except Exception as exc:
                errors.append(exc)
        if res.active or res.waiting:
            res.idle_event = asyncio.Event()
            try:
                async with asyncio.timeout(max(0.0, deadline - _now())):
                    await res.idle_event.wait()
            except TimeoutError:
                log.warning(
                    "resource %s: %d holder(s) still out after %.3gs; cleaning up anyway",
                    res.name,
                    res.active,
                    timeout,
                    extra={
                        "sanaa_resource": res.name,
                        "sanaa_event": "close_timeout",
                        "sanaa_active": res.active,
                    },
                )
        if res.cleanup is not None:
            try:
                await _call(res.cleanup, res.obj)
            except Exception as exc:
                log.warning(
                    "resource %s: cleanup failed: %r",
                    res.name,
                    exc,
                    extra={"sanaa_resource": res.name, "sanaa_event": "cleanup_failed"},
                )
                errors.append(exc)
        res.state = _CLOSED
        if self._resources.get(res.name) is res:
            del self._resources[res.name]
        log.debug(
            "unregistered resource %s", res.name, extra={"sanaa_resource": res.name, "sanaa_event": "closed"}
        )
        if errors:
            raise ResourceCleanupError(f"resource {res.name!r}: cleanup failed", errors)

    async def _close_all(self, timeout: float) -> None:
        deadline = _now() + timeout
        errors: list[Exception] = []
        for res in reversed(list(self._resources.values())):
            task = self._start_closing(res, max(0.0, deadline - _now()))
            try:
                await task
            except ResourceCleanupError as exc:
                errors.extend(exc.exceptions)
            except Exception as exc:  # pragma: no cover - _close_resource raises only the above
                errors.append(exc)
        self._state = _CLOSED
        if errors:
            raise ResourceCleanupError(
                f"{len(errors)} cleanup(s) failed while closing the resource manager", errors
            )

    def _lookup_for_acquire(self, name: str) -> _Resource:
        """The open resource called ``name`` (binding the manager to this loop on first use)."""
        loop = _get_running_loop()
        if loop is not self._loop:
            self._bind()
        res = self._resources.get(name)
        if res is None:
            if self._state is not _OPEN:
                raise ResourceError(f"cannot acquire {name!r}: the resource manager is {self._state}")
            raise self._unknown(name)
        if res.state is not _OPEN or self._state is not _OPEN:
            raise ResourceError(f"cannot acquire {name!r}: it is being unregistered (or the manager closing)")
        if res.max_concurrent is not None and res.limiter is None:
            res.limiter = _Limiter(res.max_concurrent, loop, res.name)
        if res.lane_options is not None and res.lanes is None:
            reserve, aging = res.lane_options
            res.lanes = Lanes(res.capacity, loop, reserve=reserve, aging=aging, what=res.name)
        return res

    def _unknown(self, name: str) -> ResourceError:
        known = ", ".join(repr(n) for n in self._resources) or "none"
        return ResourceError(f"no resource named {name!r}; registered: {known}")

    def _bind(self) -> None:
        loop = _get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._thread = threading.get_ident()
        elif loop is not self._loop:
            raise ResourceError(
                f"this ResourceManager is bound to the event loop it was first used on ({self._loop!r}), "
                f"not {loop!r}; use one manager per loop, or acquire_from_thread() from other threads"
            )

    def _check_thread(self) -> None:
        if self._thread is not None and threading.get_ident() != self._thread:
            raise ResourceError(
                "ResourceManager methods run on its event loop's thread; from other threads use "
                "acquire_from_thread()"
            )

    def _loop_for_thread(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise ResourceError(
                "the resource manager is not running on an event loop yet: enter 'async with manager' "
                "(or acquire once) on the loop before acquiring from threads"
            )
        if threading.get_ident() == self._thread:
            raise ResourceError(
                "acquire_from_thread() called on the event loop's own thread would deadlock; "
                "use 'async with manager.acquire(...)' there"
            )
        return loop

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._tasks.spawn(self._loop, coro)
        task.add_done_callback(_retrieve)
        return task


def _lane_options(
    res: _Resource, reserve: Mapping[str, int] | None, aging: float | None
) -> tuple[dict[str, int], float]:
    """Checked ``reserve=`` / ``priority_aging=`` of a registration (ConfigurationError naming them)."""
    if res.pool is None and res.max_concurrent is None:
        param, value = ("reserve", reserve) if reserve is not None else ("priority_aging", aging)
        raise ConfigurationError(
            param, value, "needs a limit: a pool, or max_concurrent for a shared resource"
        )
    checked = check_reserve(reserve) if reserve is not None else {}
    aging = 1.0 if aging is None else aging
    if isinstance(aging, bool) or not isinstance(aging, int | float) or not 0 < aging < float("inf"):
        raise ConfigurationError("priority_aging", aging, "must be a positive finite number of seconds")
    capacity = res.capacity()
    if sum(checked.values()) >= capacity:
        raise ConfigurationError(
            "reserve",
            reserve,
            f"reserves {sum(checked.values())} of {capacity} slots: one must stay unreserved",
        )
    return checked, float(aging)


def _retrieve(task: asyncio.Task[Any]) -> None:
    # Close tasks are awaited by whoever asked for the close; if that caller was cancelled, the error was
    # already logged, so mark it retrieved instead of letting asyncio report it again at collection.
    if not task.cancelled():
        task.exception()
