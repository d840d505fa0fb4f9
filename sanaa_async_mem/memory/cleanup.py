"""Cleanup callbacks: code that drops caches and other memory the application can rebuild.

They are not GC tuning: they run before an optimized collection (so what they drop is collected by it) and
when a memory cap is reached (:class:`~sanaa_async_mem.collector.GCScheduler`), through the
:class:`~sanaa_async_mem.collector.GarbageCollectionOptimizer` that holds them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
from collections.abc import Awaitable, Callable

from .._hooks import require_callable
from .._logging import get_logger

# The records keep the logger they always had: cleanups are part of the GC optimizer's documented output.
_log = get_logger("gc")

CleanupCallback = Callable[[], object] | Callable[[], Awaitable[object]]


@dataclasses.dataclass(frozen=True, slots=True)
class CleanupReport:
    """How many cleanup callbacks ran and how many raised (those were logged)."""

    ran: int
    failed: int

    def as_dict(self) -> dict[str, int]:
        return {"ran": self.ran, "failed": self.failed}


class CleanupCallbacks:
    """An ordered set of cleanup callbacks (sync, or ``async def``), run together on request.

    Thread-safe: callbacks may be registered and unregistered from any thread; :meth:`run` runs a copy of
    the list as it was when it started.
    """

    __slots__ = ("_callbacks", "_lock")

    def __init__(self) -> None:
        self._callbacks: list[CleanupCallback] = []
        self._lock = threading.Lock()

    def register(self, callback: CleanupCallback) -> Callable[[], None]:
        """Add ``callback`` (run in registration order); returns a function that removes it (idempotent).

        Raises :class:`~sanaa_async_mem.errors.ConfigurationError` if ``callback`` is not callable.
        """
        require_callable("callback", callback, allow_none=False)
        with self._lock:
            self._callbacks.append(callback)

        def unregister() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unregister

    async def run(self, reason: str = "requested") -> CleanupReport:
        """Run every callback once, awaiting async ones; returns how many ran and failed.

        A callback that raises is logged (``sanaa.gc``, with traceback) and the others still run.
        Cancellation: the ``await`` of an async callback is a cancellation point; ``CancelledError``
        propagates and the remaining callbacks do not run.
        """
        with self._lock:
            callbacks = list(self._callbacks)
        failed = 0
        for cb in callbacks:
            try:
                result = cb()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                failed += 1
                _log.exception(
                    "cleanup callback %r failed (reason: %s); running the others",
                    cb,
                    reason,
                    extra={"sanaa_reason": reason},
                )
        return CleanupReport(len(callbacks), failed)

    def __len__(self) -> int:
        return len(self._callbacks)


__all__ = ["CleanupCallback", "CleanupCallbacks", "CleanupReport"]
