"""WaitQueue: one FIFO of waiting tasks with deadlines, served by direct hand-off.

Every wait in the pools and resources is a wait here: :class:`~sanaa_async_mem.pools.AsyncPool` callers
waiting for an object, and the :class:`~sanaa_async_mem.resources.ResourceManager`'s ``max_concurrent``
limit waiting for a slot. The queue is what trio calls a parking lot, with two additions a pool needs: a
value is handed *to* the waiter (the object itself, so nobody can take it on the way), and every waiter has
a deadline.

Rules a caller can rely on:

* **FIFO hand-off.** :meth:`WaitQueue.hand` gives the value to the oldest waiter that still waits and
  resolves its future at once: the value belongs to that waiter from then on, even before its task resumes,
  so a releasing task can never take back what it just gave.
* **Deadlines are timers on the loop's clock** (``loop.time()``, the clock ``call_at`` runs on). A waiter
  whose deadline is due gets the owner's timeout error in its future; nothing is ever cancelled. Waiters
  queued behind each other with the same timeout have growing deadlines, so one shared timer (the reaper)
  serves them all: it is aimed at the oldest such deadline, and when it fires for deadline ``D`` every
  waiter due by ``D`` times out and the timer moves on to the next one. A waiter with a shorter timeout
  than the one ahead of it gets a timer of its own.
* **Cancellation.** A waiter's task that is cancelled (or stops waiting for any reason) calls
  :meth:`WaitQueue.abandon` with its future. If a value had already been handed to it, ``abandon`` says
  so and the caller passes that value on (to the next waiter); otherwise the waiter simply leaves. Nothing
  is lost either way.
* Nothing here awaits: every method is synchronous and leaves the queue consistent when it returns. The
  queue is bound to one event loop and is not thread-safe.

``waiting`` counts the live waiters. A waiter that has left stays in the deque until it is skipped (by
``hand``, ``fail_one`` or the reaper) or the deque is compacted, so a storm of cancellations or timeouts
costs O(n) overall.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["WaitQueue"]

T = TypeVar("T")

_INF = float("inf")

# Deadlines further out than this are treated as "never": no timer is set for them (some loops cannot
# represent a timer that far away, and such a waiter will be handed a value or fail long before).
_FARTHEST_TIMER = 365 * 86400.0


class WaitQueue(Generic[T]):
    """A FIFO of waiters, each with a deadline on the loop's clock; values go to the oldest live waiter.

    ``timeout_error()`` makes the exception a waiter gets when its deadline passes; it is called once per
    timed-out waiter, at that moment (after ``waiting`` no longer counts that waiter).
    """

    __slots__ = ("_last_deadline", "_loop", "_reaper", "_reaper_at", "_timeout_error", "_waiters", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_error: Callable[[], BaseException]) -> None:
        self._loop = loop
        self._timeout_error = timeout_error
        # Oldest first: (future, deadline), deadline None for a waiter with a timer of its own.
        self._waiters: deque[tuple[asyncio.Future[T], float | None]] = deque()
        self.waiting = 0
        self._last_deadline = -_INF  # the latest deadline among waiters the reaper serves
        self._reaper: asyncio.TimerHandle | None = None
        self._reaper_at = _INF

    def __len__(self) -> int:
        return self.waiting

    def __repr__(self) -> str:
        return f"<WaitQueue waiting={self.waiting}>"

    # ------------------------------------------------------------------ waiting

    def park(self, deadline: float) -> asyncio.Future[T]:
        """Join the back of the queue until ``deadline`` (loop time); await the returned future.

        The future resolves with a value given by :meth:`hand`, or fails with the timeout error or the
        exception of :meth:`fail_one` / :meth:`fail_all`. A caller that stops awaiting it (cancelled, or
        any other exception) must call :meth:`abandon` with it.
        """
        fut: asyncio.Future[T] = self._loop.create_future()
        if self.waiting and deadline >= self._last_deadline and self._reaper is not None:
            # The common case under load: others wait, deadlines keep growing, the reaper is set.
            self._last_deadline = deadline
            self._waiters.append((fut, deadline))
            self.waiting += 1
            return fut
        self._park_slow(fut, deadline)
        return fut

    def _park_slow(self, fut: asyncio.Future[T], deadline: float) -> None:
        if not self.waiting:
            # Nobody waits: the order of deadlines starts afresh (one long per-call timeout must not push
            # every later waiter onto its own timer), and the reaper must not stay aimed later than us.
            self._last_deadline = -_INF
            if self._reaper is not None and self._reaper_at > deadline:
                self._reaper.cancel()
                self._reaper = None
        if deadline >= self._last_deadline:
            self._last_deadline = deadline
            self._waiters.append((fut, deadline))
            if self._reaper is None:
                self._aim(deadline)
        else:
            # Due before the waiter ahead of it: the shared timer cannot serve it.
            self._waiters.append((fut, None))
            if deadline - self._loop.time() <= _FARTHEST_TIMER:
                timer = self._loop.call_at(deadline, self._expire, fut)
                fut.add_done_callback(lambda _f: timer.cancel())
        self.waiting += 1

    def abandon(self, fut: asyncio.Future[T]) -> bool:
        """The waiter of ``fut`` stops waiting. Returns True if a value had already been handed to it:
        the caller then owns ``fut.result()`` and must pass it on (e.g. :meth:`hand` it to the next)."""
        if fut.cancelled():
            # Its task was cancelled while it waited: nobody resolved it, so it still counted.
            self.waiting -= 1
            self._compact()
            return False
        return fut.exception() is None  # (also marks an exception set by us as retrieved)

    # ------------------------------------------------------------------ serving

    def hand(self, value: T) -> bool:
        """Give ``value`` to the oldest live waiter; False (value not taken) when nobody waits."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[0]
            if not fut.done():
                self.waiting -= 1
                fut.set_result(value)
                return True
        return False

    def fail_one(self, exc: BaseException) -> bool:
        """The oldest live waiter gets ``exc`` (e.g. the error that kept its value from being made)."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()[0]
            if not fut.done():
                self.waiting -= 1
                fut.set_exception(exc)
                return True
        return False

    def fail_all(self, make_error: Callable[[], BaseException]) -> int:
        """Every live waiter gets ``make_error()`` (one exception each); returns how many there were."""
        waiters, self._waiters = self._waiters, deque()
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        failed = 0
        for fut, _deadline in waiters:
            if not fut.done():
                self.waiting -= 1
                fut.set_exception(make_error())
                failed += 1
        return failed

    # ------------------------------------------------------------------ timers

    def _aim(self, deadline: float) -> None:
        if deadline - self._loop.time() <= _FARTHEST_TIMER:
            self._reaper_at = deadline
            self._reaper = self._loop.call_at(deadline, self._reap)

    def _reap(self) -> None:
        # The loop ran this timer because it judged ``_reaper_at`` due: so is every waiter due by then.
        due = self._reaper_at
        self._reaper = None
        for fut, deadline in self._waiters:
            if deadline is None or fut.done():
                continue
            if deadline > due:
                self._aim(deadline)
                break
            self._expire(fut)
        self._compact()

    def _expire(self, fut: asyncio.Future[T]) -> None:
        if not fut.done():
            self.waiting -= 1
            fut.set_exception(self._timeout_error())

    def _compact(self) -> None:
        # Rebuild only when departed waiters clearly outnumber live ones: O(n) per n departures.
        if len(self._waiters) > 2 * self.waiting + 64:
            self._waiters = deque(w for w in self._waiters if not w[0].done())
