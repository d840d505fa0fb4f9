"""Lanes: reserved capacity for purposes, and priorities with aging, in front of one resource.

A resource registered with ``reserve={"health": 1}`` (and/or ``priorities=True``) gets a :class:`Lanes`
gate that every :meth:`ResourceManager.acquire` of it passes before it reaches the pool (or the shared
object). The gate admits at most ``capacity`` holders at once (the pool's ``max_size``, or
``max_concurrent``; read at every admission, so a :meth:`AsyncPool.resize` is followed), and:

* **Reserved capacity.** ``reserve[p]`` slots are kept for purpose ``p``: other purposes are admitted
  only while ``active + unused_reserve < capacity``, where ``unused_reserve`` sums, over the reserved
  purposes, the reserved slots they are not using. So a caller of purpose ``p`` using fewer than
  ``reserve[p]`` slots always finds one free at once, however busy the other purposes are (beyond its
  reserve it competes like everybody else). The reserves must leave at least one unreserved slot.
* **Priorities.** ``acquire(..., priority=n)`` (a number, higher first, default 0): waiters are served
  in order of ``priority - waited_since / aging`` rewritten as a fixed key ``priority - arrival / aging``
  (higher first, then arrival order): FIFO within a priority, and every second of waiting is worth
  ``1 / aging`` of priority. **The bound:** a waiter of priority ``p`` is never overtaken by a caller of
  priority ``q`` that arrived more than ``(q - p) * aging`` seconds after it (callers of its own or a
  lower priority never overtake it at all). With priorities between ``lo`` and ``hi``, nobody who arrives
  more than ``(hi - lo) * aging`` seconds after a waiter is served before it (except a reserved-purpose
  caller using its own reserved slot, which the waiter could not have used), so low priority cannot
  starve: it waits at most for the callers that arrived in that window, plus those ahead of it.

Everything here is synchronous except the wait itself; cancellation at the wait loses nothing (a slot
granted to a waiter whose task was cancelled before it resumed is passed on). Bound to the manager's
loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigurationError, PoolTimeout

__all__ = ["Lanes", "check_priority", "check_reserve"]


def check_reserve(reserve: object) -> dict[str, int]:
    """``reserve`` as a dict of purpose -> slots, or ConfigurationError naming ``reserve``."""
    if not isinstance(reserve, Mapping) or not reserve:
        raise ConfigurationError("reserve", reserve, "must be a non-empty mapping of purpose -> slots")
    out: dict[str, int] = {}
    for purpose, slots in reserve.items():
        if not isinstance(purpose, str) or not purpose:
            raise ConfigurationError("reserve", reserve, f"purpose {purpose!r} is not a non-empty string")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ConfigurationError("reserve", reserve, f"slots for {purpose!r} must be an int >= 1")
        out[purpose] = slots
    return out


def check_priority(priority: object) -> float:
    if isinstance(priority, bool) or not isinstance(priority, int | float) or not math.isfinite(priority):
        raise ConfigurationError("priority", priority, "must be a finite number (higher is served first)")
    return float(priority)


class _Waiter:
    __slots__ = ("fut", "key", "purpose", "timer")

    def __init__(self, key: tuple[float, int], purpose: str | None, fut: asyncio.Future[None]) -> None:
        self.key = key  # ascending order: (-(priority - arrival / aging), arrival number)
        self.purpose = purpose
        self.fut = fut
        self.timer: asyncio.TimerHandle | None = None

    def __lt__(self, other: _Waiter) -> bool:
        return self.key < other.key


class Lanes:
    """The gate of one resource (see the module's docs). ``capacity()`` is read at every admission."""

    def __init__(
        self,
        capacity: Callable[[], int],
        loop: asyncio.AbstractEventLoop,
        *,
        reserve: Mapping[str, int] | None = None,
        aging: float = 1.0,
        what: str = "resource",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reserve: dict[str, int] = dict(reserve or {})
        if self.reserve and sum(self.reserve.values()) >= capacity():
            raise ConfigurationError(
                "reserve",
                self.reserve,
                f"reserves {sum(self.reserve.values())} of {capacity()} slots: one must stay unreserved",
            )
        if isinstance(aging, bool) or not isinstance(aging, int | float) or not 0 < aging < math.inf:
            raise ConfigurationError("priority_aging", aging, "must be a positive finite number of seconds")
        self.aging = float(aging)
        self.capacity = capacity
        self.loop = loop
        self.what = what
        self.clock = clock
        self.active = 0
        self.in_lane: dict[str, int] = dict.fromkeys(self.reserve, 0)  # holders of each reserved purpose
        self.waiters: list[_Waiter] = []  # sorted by key
        self._seq = itertools.count()
        self.timeouts = 0

    # ------------------------------------------------------------------ rules

    def unused_reserve(self) -> int:
        return sum(max(0, slots - self.in_lane[p]) for p, slots in self.reserve.items())

    def admissible(self, purpose: str | None) -> bool:
        """Would a caller of ``purpose`` be admitted now?"""
        capacity = self.capacity()
        slots = self.reserve.get(purpose) if purpose is not None else None
        if slots is not None and self.in_lane[purpose] < slots:  # type: ignore[index]
            return self.active < capacity  # its own reserved slot
        return self.active + self.unused_reserve() < capacity

    def _admit(self, purpose: str | None) -> None:
        self.active += 1
        if purpose in self.in_lane:
            self.in_lane[purpose] += 1

    # ------------------------------------------------------------------ waiting

    def park(self, purpose: str | None, priority: float, deadline: float | None) -> asyncio.Future[None]:
        """Ask for a slot: a future that is done (admitted) at once when one is free for ``purpose``, else
        resolved when it is granted, or failed with PoolTimeout at ``deadline`` (loop time). A caller that
        stops waiting must call :meth:`abandon`."""
        fut: asyncio.Future[None] = self.loop.create_future()
        if self.admissible(purpose):
            self._admit(purpose)
            fut.set_result(None)
            return fut
        key = (-(priority - self.clock() / self.aging), next(self._seq))
        waiter = _Waiter(key, purpose, fut)
        bisect.insort(self.waiters, waiter)
        if deadline is not None and deadline != math.inf:
            waiter.timer = self.loop.call_at(deadline, self._expire, waiter)
        return fut

    async def enter(self, purpose: str | None, priority: float, timeout: float) -> None:
        """Wait for a slot for ``purpose`` (PoolTimeout after ``timeout`` seconds)."""
        fut = self.park(purpose, priority, self.loop.time() + timeout)
        if fut.done():
            return
        try:
            await fut
        except BaseException:
            self.abandon(fut, purpose)
            raise

    def abandon(self, fut: asyncio.Future[None], purpose: str | None) -> None:
        """The waiter of ``fut`` leaves without using its slot: forget it, or pass a granted slot on."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            self.leave(purpose)  # granted, but the task is leaving: pass it on
            return
        for i, waiter in enumerate(self.waiters):
            if waiter.fut is fut:
                del self.waiters[i]
                if waiter.timer is not None:
                    waiter.timer.cancel()
                break

    def leave(self, purpose: str | None) -> None:
        """A holder of ``purpose`` gives its slot back; the best admissible waiters get it."""
        self.active -= 1
        if purpose in self.in_lane:
            self.in_lane[purpose] -= 1
        self.dispatch()

    def dispatch(self) -> int:
        """Grant slots to waiters, best key first, each one that is admissible now; returns how many."""
        granted = 0
        i = 0
        while i < len(self.waiters) and self.active < self.capacity():
            waiter = self.waiters[i]
            if waiter.fut.done():  # cancelled; abandon() will not find it
                del self.waiters[i]
                continue
            if self.admissible(waiter.purpose):
                del self.waiters[i]
                if waiter.timer is not None:
                    waiter.timer.cancel()
                self._admit(waiter.purpose)
                waiter.fut.set_result(None)
                granted += 1
                continue
            i += 1
        return granted

    def fail_all(self, make_error: Callable[[], BaseException]) -> int:
        """Every waiter gets ``make_error()`` (the resource is going away); returns how many."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if waiter.timer is not None:
                waiter.timer.cancel()
            if not waiter.fut.done():
                waiter.fut.set_exception(make_error())
        return len(waiters)

    def _expire(self, waiter: _Waiter) -> None:
        if waiter.fut.done():
            return
        self.waiters.remove(waiter)
        self.timeouts += 1
        waiter.fut.set_exception(
            PoolTimeout(
                f"{self.what}: no slot became free in time ({self.active}/{self.capacity()} held, "
                f"{len(self.waiters)} still waiting; reserved: {self.reserve or 'none'})"
            )
        )

    def stats(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity(),
            "active": self.active,
            "waiting": len(self.waiters),
            "reserve": dict(self.reserve),
            "in_lane": dict(self.in_lane),
            "timeouts": self.timeouts,
            "aging": self.aging,
        }
