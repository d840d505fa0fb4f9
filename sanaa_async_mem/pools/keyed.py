"""MemoryPool, a thread-safe keyed pool of idle objects, and :func:`create_large_object_pool`.

The memory pool system: objects that are costly to build (large buffers, compiled structures,
clients) are put back after use and handed out again instead of being rebuilt.

What the pool holds, and what its limits mean
    Idle objects only. An object handed out by :meth:`MemoryPool.get`/:meth:`~MemoryPool.aget` belongs
    to the caller until it is put back; the pool keeps no reference to it. ``max_size`` (all keys) and
    ``max_per_key`` bound how many *idle* objects are kept (commons-pool's ``maxIdle``), not how many
    exist. To bound how many objects are in use at once, and to wait for one, use ``AsyncPool``.

When full
    A put into a full pool keeps the object being put (it is the warmest) and evicts the oldest idle object:
    the oldest of that key when the key is at ``max_per_key``, otherwise the oldest of the whole pool.
    Evicted objects are passed to the ``dispose`` hook.

Order
    ``get`` returns the most recently put object of the key (LIFO: the one most likely still in the CPU
    cache, or with a live connection); eviction and :meth:`~MemoryPool.trim` take the oldest first.

Threads
    Every method may be called from any thread. The bookkeeping runs under one lock in a few dictionary
    operations; the user's hooks (factory, ``reset``, ``dispose``) always run outside it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import functools
import inspect
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Mapping
from types import MappingProxyType, TracebackType
from typing import Any, Generic, TypeVar, cast, overload

from .._hooks import require_callable
from .._logging import get_logger
from ..config import Settings, positive_int, seconds
from ..errors import ConfigurationError, PoolError

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
D = TypeVar("D")

_log = get_logger("pool")
_now = time.monotonic


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING = _Missing.MISSING


def _checked(name: str, value: Any) -> Any:
    require_callable(name, value)
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryPoolStats:
    """A snapshot of a :class:`MemoryPool` (counters only grow).

    ``size`` (idle objects, all keys), ``size_per_key`` (``{key: idle objects}``, keys with at least
    one), ``keys`` (how many such keys); ``hits`` and ``misses`` (lookups by get/aget/lease that found an
    idle object, or not), ``hit_ratio`` (0.0 before any lookup); ``creates`` and ``create_failures``
    (factory calls), ``adopted`` (objects of cancelled callers' factories, pooled); ``puts`` (objects that
    entered the pool), ``evictions`` (dropped to make room), ``trimmed`` (dropped by trim/clear),
    ``reset_failures``, ``dispose_failures``.
    """

    name: str
    max_size: int
    max_per_key: int | None
    size: int
    size_per_key: Mapping[Any, int]
    keys: int
    hits: int
    misses: int
    creates: int
    create_failures: int
    adopted: int
    puts: int
    evictions: int
    trimmed: int
    reset_failures: int
    dispose_failures: int

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values with stable keys (``size_per_key`` as a dict)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["size_per_key"] = dict(self.size_per_key)
        out["hit_ratio"] = self.hit_ratio
        return out


class MemoryPool(Generic[K, T]):
    """A keyed pool of idle objects with per-key and global limits.

    ``max_size``
        Idle objects kept over all keys. ``None`` reads ``MEMORY_POOL_MAX_SIZE`` (default 1000); an explicit
        value wins over the environment, which is then not read at all.
    ``max_per_key``
        Idle objects kept per key (``None``: only ``max_size`` applies).
    ``reset``
        Called with each object on :meth:`put`, before it is pooled (clear a buffer, roll back a session). If
        it raises, the object is never pooled: it is disposed, counted in ``reset_failures`` and logged.
    ``dispose``
        Called with each object the pool drops (evicted, trimmed, cleared, failed reset). Its errors are
        counted in ``dispose_failures`` and logged, never raised.
    ``factories``
        ``{key: factory}``: zero-argument callables that build an object for their key on a miss, so that
        ``get(key)`` never returns empty. A factory may be ``async`` (or return an awaitable); then only the
        async face (:meth:`aget`, :meth:`lease`) can use it. More can be added with :meth:`set_factory`.

    Raises :class:`~sanaa_async_mem.errors.ConfigurationError` (a ``ValueError``) for a limit that is not an
    integer >= 1, and for a hook or factory that is not callable.
    """

    def __init__(
        self,
        max_size: int | None = None,
        *,
        max_per_key: int | None = None,
        reset: Callable[[T], object] | None = None,
        dispose: Callable[[T], object] | None = None,
        factories: Mapping[K, Callable[[], T | Awaitable[T]]] | None = None,
        name: str = "memory_pool",
    ) -> None:
        if max_size is None:
            max_size = Settings.from_env().pool_max_size
        self._max_size = positive_int("max_size", max_size)
        self._max_per_key = None if max_per_key is None else positive_int("max_per_key", max_per_key)
        self._reset: Callable[[T], object] | None = _checked("reset", reset)
        self._dispose: Callable[[T], object] | None = _checked("dispose", dispose)
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "must be a non-empty string")
        self._name = name
        self._factories: dict[K, Callable[[], T | Awaitable[T]]] = {}
        for key, factory in (factories or {}).items():
            self._factories[key] = _checked(f"factories[{key!r}]", factory)

        # An RLock, not a Lock: a garbage collection triggered by an allocation inside a critical section can
        # run an object's __del__ that puts into this pool on the same thread. Critical sections allocate
        # before they mutate, so such a re-entrant call sees a consistent pool.
        self._lock = threading.RLock()
        # Per key, idle objects oldest first, each with the monotonic time it was put.
        self._idle: dict[K, deque[tuple[T, float]]] = {}
        # Every idle object's id -> its key, in put order: O(1) global LRU eviction, and a double put of an
        # object that is already idle is caught (it would be handed out twice).
        self._order: OrderedDict[int, K] = OrderedDict()
        # Factories still running for callers that were cancelled: strong references, or the event loop
        # could let the tasks be collected half-way.
        self._creating: set[asyncio.Future[T]] = set()

        self._hits = 0
        self._misses = 0
        self._creates = 0
        self._create_failures = 0
        self._puts = 0
        self._evictions = 0
        self._trimmed = 0
        self._reset_failures = 0
        self._dispose_failures = 0
        self._adopted = 0

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_size(self) -> int:
        return self._max_size

    @property
    def max_per_key(self) -> int | None:
        return self._max_per_key

    def __len__(self) -> int:
        """Idle objects in the pool, over all keys."""
        return len(self._order)

    def __repr__(self) -> str:
        return f"<MemoryPool {self._name!r} idle={len(self._order)}/{self._max_size}>"

    def set_factory(self, key: K, factory: Callable[[], T | Awaitable[T]] | None) -> None:
        """Register (or with ``None`` remove) the factory that builds objects for ``key`` on a miss."""
        if factory is None:
            self._factories.pop(key, None)
            return
        self._factories[key] = _checked("factory", factory)

    # -- put -----------------------------------------------------------------------------------------------

    def put(self, key: K, obj: T) -> bool:
        """Return ``obj`` to the pool under ``key``; ``True`` if it is now idle in the pool.

        ``False`` means the ``reset`` hook raised and the object was disposed instead (never pooled dirty).
        If the pool (or the key) is full, the oldest idle object is evicted and disposed.

        Raises ``TypeError`` for ``None`` (``get`` uses ``None`` for "empty") or an unhashable key, and
        :class:`~sanaa_async_mem.errors.PoolError` if ``obj`` is already idle in this pool (it would be
        handed out twice). In both cases the pool is unchanged and no hook has run.
        """
        if obj is None:
            raise TypeError("MemoryPool cannot hold None: get() returns None for an empty key")
        reset = self._reset
        if reset is not None:
            # Refuse before the hook runs on an object someone else may be getting right now.
            hash(key)
            if id(obj) in self._order:
                raise self._double_put(key, obj)
            try:
                reset(obj)
            except Exception:
                with self._lock:
                    self._reset_failures += 1
                _log.warning(
                    "pool %r: reset of an object put under %r failed; the object is dropped",
                    self._name,
                    key,
                    exc_info=True,
                    extra={"sanaa_pool": self._name, "sanaa_key": repr(key)},
                )
                self._dispose_quietly(key, obj)
                return False
        self._insert(key, obj)
        return True

    def _double_put(self, key: K, obj: T) -> PoolError:
        return PoolError(
            f"pool {self._name!r}: this {type(obj).__name__} object is already idle in the pool "
            f"(put twice without a get in between, now under key {key!r})"
        )

    def _insert(self, key: K, obj: T) -> None:
        # Hot path: explicit acquire/release (a `with` block costs ~75 ns more on 3.11) and nothing allocated
        # under the lock except a deque for a key seen for the first time.
        oid = id(obj)
        item = (obj, _now())
        evicted: T | None = None
        evicted_key: K | None = None
        lock = self._lock
        lock.acquire()
        try:
            order = self._order
            if oid in order:
                raise self._double_put(key, obj)
            dq = self._idle.get(key)
            if dq is None:
                # setdefault after the allocation: a re-entrant put during it may have added the key.
                dq = self._idle.setdefault(key, deque())
            if self._max_per_key is not None and len(dq) >= self._max_per_key:
                evicted = dq.popleft()[0]
                del order[id(evicted)]
                evicted_key = key
            elif len(order) >= self._max_size:
                evicted_key = order.pop(next(iter(order)))
                old_dq = self._idle[evicted_key]
                evicted = old_dq.popleft()[0]
                if not old_dq and evicted_key != key:
                    self._forget_empty_locked(evicted_key)
            dq.append(item)
            order[oid] = key
            self._puts += 1
            if evicted is not None:
                self._evictions += 1
        finally:
            lock.release()
        if evicted is not None:
            self._dispose_quietly(cast(K, evicted_key), evicted)

    def _forget_empty_locked(self, key: K) -> None:
        # Empty per-key deques are kept so that a key cycling get/put does not allocate one each time, but
        # only while there are at most max_size keys: at most 2 * max_size deques ever exist.
        if len(self._idle) > self._max_size:
            del self._idle[key]

    # -- get -----------------------------------------------------------------------------------------------

    def _take(self, key: K) -> T | _Missing:
        lock = self._lock
        lock.acquire()
        try:
            dq = self._idle.get(key)
            if dq:
                obj = dq.pop()[0]
                del self._order[id(obj)]
                if not dq:
                    self._forget_empty_locked(key)
                self._hits += 1
                return obj
            self._misses += 1
            return _MISSING
        finally:
            lock.release()

    @overload
    def get(self, key: K) -> T | None: ...
    @overload
    def get(self, key: K, default: D) -> T | D: ...

    def get(self, key: K, default: object = None) -> object:
        """An idle object of ``key`` (the most recently put), else one built by the key's registered factory,
        else ``default``.

        An object from the pool counts as a hit; anything else as a miss (and a factory call as a create).
        Errors of the factory propagate (counted in ``create_failures``); a factory that is asynchronous
        raises :class:`~sanaa_async_mem.errors.PoolError` here (use :meth:`aget` or :meth:`lease`).
        """
        # _take, inlined: this is the pool's hottest path.
        lock = self._lock
        lock.acquire()
        try:
            dq = self._idle.get(key)
            if dq:
                obj = dq.pop()[0]
                del self._order[id(obj)]
                if not dq:
                    self._forget_empty_locked(key)
                self._hits += 1
                return obj
            self._misses += 1
        finally:
            lock.release()
        factory = self._factories.get(key)
        if factory is None:
            return default
        return self._create_sync(key, factory)

    def _create_sync(self, key: K, factory: Callable[[], T | Awaitable[T]]) -> T:
        try:
            result = factory()
        except Exception:
            with self._lock:
                self._create_failures += 1
            raise
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn about it
            with self._lock:
                self._create_failures += 1
            raise PoolError(
                f"pool {self._name!r}: the factory for key {key!r} is asynchronous; "
                f"use `await pool.aget(key)` or `async with pool.lease(key)`"
            )
        return self._created(key, result)

    def _created(self, key: K, obj: T) -> T:
        if obj is None:
            with self._lock:
                self._create_failures += 1
            raise PoolError(f"pool {self._name!r}: the factory for key {key!r} returned None")
        with self._lock:
            self._creates += 1
        return obj

    # -- async face ----------------------------------------------------------------------------------------

    @overload
    async def aget(self, key: K, factory: Callable[[], T | Awaitable[T]] | None = None) -> T | None: ...
    @overload
    async def aget(
        self, key: K, factory: Callable[[], T | Awaitable[T]] | None = None, *, default: D
    ) -> T | D: ...

    async def aget(
        self, key: K, factory: Callable[[], T | Awaitable[T]] | None = None, *, default: object = None
    ) -> object:
        """An idle object of ``key``, else one built by ``factory`` (or the key's registered factory),
        awaited if it is asynchronous; ``default`` when there is neither an idle object nor a factory.

        Cancellation: if the caller is cancelled while an asynchronous factory is running, the factory is left
        to finish and its object is put into the pool for the next caller (counted in ``adopted``), so neither
        the work nor the resource is lost. A synchronous factory runs inline (wrap a blocking constructor
        as ``lambda: asyncio.to_thread(build)``: the object it builds is adopted the same way). An idle
        object is returned without suspending.

        Raises ConfigurationError for a non-callable ``factory`` (before anything is taken from the pool).
        """
        require_callable("factory", factory)
        obj = self._take(key)
        if obj is not _MISSING:
            return obj
        if factory is None:
            factory = self._factories.get(key)
            if factory is None:
                return default
        return await self._create_async(key, factory)

    async def _create_async(self, key: K, factory: Callable[[], T | Awaitable[T]]) -> T:
        try:
            result = factory()
        except Exception:
            with self._lock:
                self._create_failures += 1
            raise
        if not inspect.isawaitable(result):
            return self._created(key, result)
        task: asyncio.Future[T] = asyncio.ensure_future(result)
        self._creating.add(task)
        task.add_done_callback(self._creating.discard)
        try:
            obj = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not (task.done() and task.cancelled()):
                # The caller gave up, but the object under construction is still worth having: cancelling a
                # connect half-way is where pools lose connections. Let it finish and pool it.
                task.add_done_callback(functools.partial(self._adopt, key))
            raise
        except Exception:
            with self._lock:
                self._create_failures += 1
            raise
        return self._created(key, obj)

    def _adopt(self, key: K, task: asyncio.Future[T]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None or task.result() is None:
            with self._lock:
                self._create_failures += 1
            _log.warning(
                "pool %r: a factory for key %r, left running by a cancelled caller, failed",
                self._name,
                key,
                exc_info=exc,
                extra={"sanaa_pool": self._name, "sanaa_key": repr(key)},
            )
            return
        obj = task.result()
        with self._lock:
            self._creates += 1
            self._adopted += 1
        try:
            self._insert(key, obj)  # a fresh object needs no reset
        except PoolError:
            # The factory returned an object that is already idle here: keep the one copy, say so.
            _log.warning(
                "pool %r: a factory for key %r returned an object already idle in the pool",
                self._name,
                key,
                extra={"sanaa_pool": self._name, "sanaa_key": repr(key)},
            )

    def lease(self, key: K, factory: Callable[[], T | Awaitable[T]] | None = None) -> MemoryPoolLease[K, T]:
        """``async with pool.lease(key, factory) as obj:`` (or plain ``with`` for synchronous factories): an
        object as :meth:`aget` would return it, put back with :meth:`put` on exit, whether the block raised
        or not (the ``reset`` hook decides whether it is fit to be pooled).

        Raises :class:`~sanaa_async_mem.errors.PoolError` on entry if the key has no idle object and there
        is no factory, and :class:`~sanaa_async_mem.errors.ConfigurationError` at once for a non-callable
        ``factory``.
        Cancellation: as :meth:`aget` on entry; the exit never suspends, so the object always goes back.
        """
        require_callable("factory", factory)
        return MemoryPoolLease(self, key, factory)

    def _no_factory(self, key: K) -> PoolError:
        return PoolError(
            f"pool {self._name!r}: no idle object for key {key!r} and no factory to create one "
            f"(pass factory= or register one with set_factory)"
        )

    # -- shrinking -----------------------------------------------------------------------------------------

    def trim(self, *, older_than: float | None = None, keep: int | None = None) -> int:
        """Dispose of idle objects, oldest first: those idle for more than ``older_than`` seconds, and those
        beyond the ``keep`` most recently put. Returns how many were removed (counted in ``trimmed``).

        Raises ConfigurationError if neither is given or a value is invalid (pool unchanged).
        """
        age = seconds("older_than", older_than, allow_none=True)
        limit = None if keep is None else positive_int("keep", keep, minimum=0)
        if age is None and limit is None:
            raise ConfigurationError("older_than", older_than, "trim() needs older_than= and/or keep=")
        removed: list[tuple[K, T]] = []
        now = _now()
        with self._lock:
            while self._order:
                oldest = next(iter(self._order))
                key = self._order[oldest]
                dq = self._idle[key]
                obj, since = dq[0]
                too_many = limit is not None and len(self._order) > limit
                if not too_many and (age is None or now - since <= age):
                    break
                dq.popleft()
                del self._order[oldest]
                removed.append((key, obj))
            for key in [k for k, dq in self._idle.items() if not dq]:
                del self._idle[key]
            self._trimmed += len(removed)
        for key, obj in removed:
            self._dispose_quietly(key, obj)
        return len(removed)

    def clear(self, *keys: K) -> int:
        """Dispose of every idle object (or those of the given keys), oldest first; returns how many.

        Counted in ``trimmed``. Objects handed out are not affected and may be put back later.
        """
        removed: list[tuple[K, T]] = []
        if not keys:
            fresh_idle: dict[K, deque[tuple[T, float]]] = {}
            fresh_order: OrderedDict[int, K] = OrderedDict()
            with self._lock:
                old_idle, old_order = self._idle, self._order
                self._idle, self._order = fresh_idle, fresh_order
                self._trimmed += len(old_order)
            position = {oid: i for i, oid in enumerate(old_order)}
            removed = [(k, obj) for k, dq in old_idle.items() for obj, _ in dq]
            removed.sort(key=lambda pair: position[id(pair[1])])
        else:
            with self._lock:
                for key in keys:
                    dq = self._idle.pop(key, None)
                    if dq:
                        for obj, _ in dq:
                            del self._order[id(obj)]
                            removed.append((key, obj))
                self._trimmed += len(removed)
        for key, obj in removed:
            self._dispose_quietly(key, obj)
        return len(removed)

    def _dispose_quietly(self, key: K, obj: T) -> None:
        if self._dispose is None:
            return
        try:
            self._dispose(obj)
        except Exception:
            with self._lock:
                self._dispose_failures += 1
            _log.warning(
                "pool %r: dispose of an object of key %r failed",
                self._name,
                key,
                exc_info=True,
                extra={"sanaa_pool": self._name, "sanaa_key": repr(key)},
            )

    # -- statistics ----------------------------------------------------------------------------------------

    def stats(self) -> MemoryPoolStats:
        """A frozen snapshot of the pool's sizes and counters (see :class:`MemoryPoolStats`); safe from any
        thread."""
        with self._lock:
            size_per_key = {k: len(dq) for k, dq in self._idle.items() if dq}
            return MemoryPoolStats(
                name=self._name,
                max_size=self._max_size,
                max_per_key=self._max_per_key,
                size=len(self._order),
                size_per_key=MappingProxyType(size_per_key),
                keys=len(size_per_key),
                hits=self._hits,
                misses=self._misses,
                creates=self._creates,
                create_failures=self._create_failures,
                adopted=self._adopted,
                puts=self._puts,
                evictions=self._evictions,
                trimmed=self._trimmed,
                reset_failures=self._reset_failures,
                dispose_failures=self._dispose_failures,
            )

    def get_stats(self) -> dict[str, Any]:
        """:meth:`stats` as a plain dict with stable keys (the original name of the call)."""
        return self.stats().as_dict()

    def trim_idle(self, older_than: float | None = None) -> int:
        """Dispose of idle objects unused for more than ``older_than`` seconds (all of them when None), the
        same verb as :meth:`AsyncPool.trim_idle`. Returns how many were removed."""
        if older_than is None:
            return self.trim(keep=0)
        return self.trim(older_than=older_than)


class MemoryPoolLease(Generic[K, T]):
    """What :meth:`MemoryPool.lease` returns: an (async) context manager yielding a pooled object.

    One entry at a time: call :meth:`MemoryPool.lease` again for each ``with`` block (it is cheap)."""

    __slots__ = ("_factory", "_key", "_obj", "_pool")

    def __init__(
        self, pool: MemoryPool[K, T], key: K, factory: Callable[[], T | Awaitable[T]] | None
    ) -> None:
        self._pool = pool
        self._key = key
        self._factory = factory
        self._obj: T | None = None

    async def __aenter__(self) -> T:
        pool = self._pool
        obj = pool._take(self._key)
        if obj is _MISSING:
            factory = self._factory if self._factory is not None else pool._factories.get(self._key)
            if factory is None:
                raise pool._no_factory(self._key)
            obj = await pool._create_async(self._key, factory)
        self._obj = obj
        return obj

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def __enter__(self) -> T:
        pool = self._pool
        obj = pool._take(self._key)
        if obj is _MISSING:
            factory = self._factory if self._factory is not None else pool._factories.get(self._key)
            if factory is None:
                raise pool._no_factory(self._key)
            obj = pool._create_sync(self._key, factory)
        self._obj = obj
        return obj

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()

    def _release(self) -> None:
        obj, self._obj = self._obj, None
        if obj is not None:
            self._pool.put(self._key, obj)


def create_large_object_pool(
    name: str,
    factory: Callable[[], T | Awaitable[T]],
    size: int,
    *,
    reset: Callable[[T], object] | None = None,
    dispose: Callable[[T], object] | None = None,
    prefill: int = 0,
) -> MemoryPool[str, T]:
    """A :class:`MemoryPool` for one kind of costly object, keyed by ``name``::

        pool = create_large_object_pool("database_connection", create_db_connection, 50)
        conn = pool.get("database_connection")     # an idle one, or a new one from the factory
        pool.put("database_connection", conn)      # back for the next caller

    ``get(name)`` never returns ``None``: on a miss it calls ``factory()`` (for an ``async`` factory use
    ``await pool.aget(name)`` or ``async with pool.lease(name) as obj``). At most ``size`` idle objects are
    kept; beyond that the oldest is evicted and passed to ``dispose``. ``prefill`` objects are built now, so
    the first callers hit (synchronous factories only).

    Raises ConfigurationError for an empty ``name``, a ``size``/``prefill`` out of range, or a non-callable
    ``factory``, ``reset`` or ``dispose``.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError("name", name, "must be a non-empty string")
    require_callable("factory", factory, allow_none=False)
    size = positive_int("size", size)
    prefill = positive_int("prefill", prefill, minimum=0)
    if prefill > size:
        raise ConfigurationError("prefill", prefill, f"must be <= size ({size})")
    pool: MemoryPool[str, T] = MemoryPool(
        size, reset=reset, dispose=dispose, factories={name: factory}, name=name
    )
    for _ in range(prefill):
        pool._insert(name, pool._create_sync(name, factory))
    return pool


__all__ = ["MemoryPool", "MemoryPoolLease", "MemoryPoolStats", "create_large_object_pool"]
