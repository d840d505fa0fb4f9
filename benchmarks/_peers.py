"""The pools that ``pool_bench`` puts side by side: the floor, reference variants, the peers and ours.

Every contender holds ``POOL_SIZE`` dummy objects and is opened inside a running loop (several peers bind
to the loop when they are constructed). Opening gives back a zero-argument ``acquire`` used as
``async with acquire() as obj``. A contender whose package is missing or broken is listed as skipped with
the reason; the benchmark never crashes on it.

The adapters below are written against each peer's public API as installed; each one does the least the
peer demands (no-op create/check/close hooks), so what is measured is the pool itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal, Protocol

POOL_SIZE = 10
OURS = "ours (AsyncPool)"

Acquire = Callable[[], AbstractAsyncContextManager[Any]]
Role = Literal["floor", "reference", "peer", "ours"]

_serials = itertools.count()


class Thing:
    """The pooled object: hashable by identity (every peer keeps objects in sets or dicts), nothing more."""

    __slots__ = ("serial",)

    def __init__(self) -> None:
        self.serial = next(_serials)

    def __repr__(self) -> str:
        return f"Thing({self.serial})"


@dataclass(frozen=True, slots=True)
class Opened:
    """A contender ready to be measured. ``stats`` (ours only) reads the pool's own statistics."""

    acquire: Acquire
    stats: Callable[[], object] | None = None


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    role: Role
    what: str  # one line: what this row is, for the tables' readers
    open: Callable[[AsyncExitStack], Awaitable[Opened]]


class _Semaphore(Protocol):
    async def acquire(self) -> Any: ...

    def release(self) -> Any: ...


# --- the floor: a FIFO-fair semaphore over a deque, a __slots__ class as the async context manager -----


class FloorPool:
    """Idle objects in a deque; the semaphore counts them, so ``popleft`` after ``acquire`` never fails.

    ``asyncio.Semaphore`` wakes waiters in FIFO order and (since 3.11.1) does not let a releasing task
    take the slot back ahead of them: this is the fairness the other pools are judged against.
    """

    __slots__ = ("_idle", "_slots")

    def __init__(self, slots: _Semaphore, size: int = POOL_SIZE) -> None:
        self._slots = slots
        self._idle: deque[Thing] = deque(Thing() for _ in range(size))

    def acquire(self) -> _FloorLease:
        return _FloorLease(self)


class _FloorLease:
    __slots__ = ("_obj", "_pool")

    def __init__(self, pool: FloorPool) -> None:
        self._pool = pool

    async def __aenter__(self) -> Thing:
        pool = self._pool
        await pool._slots.acquire()
        obj = self._obj = pool._idle.popleft()
        return obj

    async def __aexit__(self, *exc_info: object) -> None:
        pool = self._pool
        pool._idle.append(self._obj)
        pool._slots.release()


class GeneratorFloorPool:
    """The floor's logic written with ``@asynccontextmanager``: what the generator machinery costs."""

    __slots__ = ("_idle", "_slots")

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._slots = asyncio.Semaphore(size)
        self._idle: deque[Thing] = deque(Thing() for _ in range(size))

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Thing]:
        await self._slots.acquire()
        obj = self._idle.popleft()
        try:
            yield obj
        finally:
            self._idle.append(obj)
            self._slots.release()


async def _open_floor(stack: AsyncExitStack) -> Opened:
    return Opened(FloorPool(asyncio.Semaphore(POOL_SIZE)).acquire)


async def _open_generator_floor(stack: AsyncExitStack) -> Opened:
    return Opened(GeneratorFloorPool().acquire)


# --- contenders that need an optional package -------------------------------------------------------


def _anyio(fast_acquire: bool) -> Contender:
    import anyio

    if fast_acquire:
        try:
            anyio.Semaphore(1, fast_acquire=True)  # outside a loop this only builds an adapter
        except TypeError as exc:
            raise RuntimeError(f"this anyio has no fast_acquire: {exc}") from exc

    async def open_(stack: AsyncExitStack) -> Opened:
        semaphore = (
            anyio.Semaphore(POOL_SIZE, fast_acquire=True) if fast_acquire else anyio.Semaphore(POOL_SIZE)
        )
        return Opened(FloorPool(semaphore).acquire)

    if fast_acquire:
        return Contender(
            "anyio.Semaphore(fast_acquire) + deque",
            "reference",
            "the floor with anyio.Semaphore(fast_acquire=True): no checkpoint when a slot is free",
            open_,
        )
    return Contender(
        "anyio.Semaphore + deque",
        "reference",
        "the floor with anyio.Semaphore: every acquire is a checkpoint (yields to the loop)",
        open_,
    )


def _aiomisc() -> Contender:
    from aiomisc import PoolBase

    class ThingPool(PoolBase[Thing]):
        async def _create_instance(self) -> Thing:
            return Thing()

        async def _destroy_instance(self, instance: Any) -> None:
            return None

        async def _check_instance(self, instance: Any) -> bool:
            return True

    async def open_(stack: AsyncExitStack) -> Opened:
        pool = ThingPool(maxsize=POOL_SIZE)
        stack.push_async_callback(pool.close)
        return Opened(pool.acquire)

    return Contender(
        "aiomisc PoolBase",
        "peer",
        "aiomisc.PoolBase: asyncio.Queue of idle objects + semaphore, creates lazily",
        open_,
    )


def _asyncio_connection_pool() -> Contender:
    from asyncio_connection_pool import ConnectionPool, ConnectionStrategy

    class ThingStrategy(ConnectionStrategy[Thing]):
        async def make_connection(self) -> Thing:
            return Thing()

        def connection_is_closed(self, conn: Thing) -> bool:
            return False

        async def close_connection(self, conn: Thing) -> None:
            return None

    async def open_(stack: AsyncExitStack) -> Opened:
        pool: Any = ConnectionPool(strategy=ThingStrategy(), max_size=POOL_SIZE)
        return Opened(pool.get_connection)

    return Contender(
        "asyncio-connection-pool",
        "peer",
        "asyncio_connection_pool.ConnectionPool: asyncio.Queue of idle objects, @asynccontextmanager",
        open_,
    )


def _generic_connection_pool() -> Contender:
    from generic_connection_pool.asyncio import BaseConnectionManager, ConnectionPool

    class ThingManager(BaseConnectionManager[str, Thing]):
        async def create(self, endpoint: str) -> Thing:
            return Thing()

        async def dispose(self, endpoint: str, conn: Thing) -> None:
            return None

    async def open_(stack: AsyncExitStack) -> Opened:
        pool: Any = ConnectionPool(
            ThingManager(), min_idle=POOL_SIZE, max_size=POOL_SIZE, total_max_size=POOL_SIZE
        )
        stack.push_async_callback(pool.close)
        return Opened(functools.partial(pool.connection, "bench"))

    return Contender(
        "generic-connection-pool",
        "peer",
        "generic_connection_pool.asyncio.ConnectionPool, one endpoint: per-endpoint locks, event queue",
        open_,
    )


def _ours() -> Contender:
    from sanaa_async_mem.pools.pool import AsyncPool

    async def open_(stack: AsyncExitStack) -> Opened:
        pool: Any = AsyncPool(Thing, min_size=POOL_SIZE, max_size=POOL_SIZE)
        await stack.enter_async_context(pool)
        return Opened(pool.acquire, stats=pool.stats)

    return Contender(
        OURS,
        "ours",
        "sanaa_async_mem.pools.pool.AsyncPool, defaults (stats on, default timeout), sync factory",
        open_,
    )


def contenders() -> tuple[list[Contender], dict[str, str]]:
    """Every contender that can run here (the floor first), and ``{name: reason}`` for the others."""
    found = [
        Contender(
            "floor",
            "floor",
            "asyncio.Semaphore + deque, a __slots__ class as the async context manager",
            _open_floor,
        ),
        Contender(
            "floor @asynccontextmanager",
            "reference",
            "the floor's logic written with @contextlib.asynccontextmanager",
            _open_generator_floor,
        ),
    ]
    skipped: dict[str, str] = {}
    builders: list[tuple[str, Callable[[], Contender]]] = [
        ("anyio.Semaphore + deque", functools.partial(_anyio, False)),
        ("anyio.Semaphore(fast_acquire) + deque", functools.partial(_anyio, True)),
        ("aiomisc PoolBase", _aiomisc),
        ("asyncio-connection-pool", _asyncio_connection_pool),
        ("generic-connection-pool", _generic_connection_pool),
        (OURS, _ours),
    ]
    for name, build in builders:
        try:
            found.append(build())
        except Exception as exc:  # a missing or half-written package must not stop the others
            skipped[name] = f"{type(exc).__name__}: {exc}"
    return found, skipped
