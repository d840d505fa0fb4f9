"""One alert path for every capability: the :class:`Alert` record and the :class:`AlertDispatcher`.

An alert is one log record on a ``sanaa.*`` logger, with structured ``extra`` fields (``sanaa_alert`` names
the kind, every other field is ``sanaa_<name>``), and one call of each registered callback. The memory
profiler (``leak``, ``high_memory``), the optimizer's pool and GC watcher (``pool_exhausted``,
``held_too_long``, ``long_gc_pause``) and anything else that raises alerts go through a dispatcher, so a
callback registered once hears of every kind, in one shape.

Callbacks may be plain functions or ``async def``; an async one runs as a task of its own, so a slow
callback never delays the code that raised the alert. A callback that raises is logged and does not stop
the others. :meth:`AlertDispatcher.drain` waits for async callbacks still running (the owners call it when
they stop), then cancels the ones that overran.

Thread safety: :meth:`AlertDispatcher.emit` runs on the event loop that owns the component raising the alert;
:attr:`AlertDispatcher.recent` may be read from any thread (a copy is returned).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from ._hooks import require_callable
from ._logging import get_logger

__all__ = ["Alert", "AlertCallback", "AlertDispatcher", "AlertKind"]

AlertKind = Literal["leak", "high_memory", "pool_exhausted", "held_too_long", "long_gc_pause"]

#: The logger each kind is recorded on (``held_too_long`` is logged by the pool itself, with the stack).
_LOGGER_OF: dict[str, str] = {
    "leak": "memory",
    "high_memory": "memory",
    "pool_exhausted": "pool",
    "held_too_long": "pool",
    "long_gc_pause": "gc",
}

_log = get_logger("alerts")


class _AsDict(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as logged and as passed to callbacks.

    ``fields`` are the structured fields of its log record (the ``extra`` keys without the ``sanaa_``
    prefix): ``value`` and ``threshold`` (bytes/s for ``leak``, bytes for ``high_memory``), ``pool``,
    ``refused``, ``in_use`` for ``pool_exhausted``, ``generation``, ``pauses``, ``threshold_seconds`` for
    ``long_gc_pause``, and so on. ``timestamp`` is ``time.time()``. ``verdict`` is the trend verdict behind
    a ``leak`` alert (its ``as_dict()`` is in :meth:`as_dict`), else None.
    """

    kind: AlertKind
    message: str
    fields: Mapping[str, Any]
    timestamp: float
    verdict: Any = None

    @property
    def value(self) -> float:
        """The measured value the alert is about (``fields["value"]``; 0.0 if the kind has none)."""
        return float(self.fields.get("value", 0.0))

    @property
    def threshold(self) -> float:
        """The threshold that value crossed (``fields["threshold"]``; 0.0 if the kind has none)."""
        return float(self.fields.get("threshold", 0.0))

    def as_dict(self) -> dict[str, Any]:
        """A plain JSON-serialisable dict."""
        verdict: _AsDict | None = self.verdict
        return {
            "kind": self.kind,
            "message": self.message,
            "fields": dict(self.fields),
            "value": self.value,
            "threshold": self.threshold,
            "timestamp": self.timestamp,
            "verdict": None if verdict is None else verdict.as_dict(),
        }


AlertCallback = Callable[[Alert], Awaitable[None] | None]


class AlertDispatcher:
    """Logs alerts, hands them to callbacks, and keeps the most recent ones (``keep``, default 100)."""

    __slots__ = ("_callbacks", "_recent", "_tasks")

    def __init__(self, *, keep: int = 100) -> None:
        self._callbacks: list[AlertCallback] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recent: collections.deque[Alert] = collections.deque(maxlen=keep)

    def add_callback(self, callback: AlertCallback) -> None:
        """Call ``callback(alert)`` for every alert from now on (sync, or ``async def`` run as a task).

        Raises :class:`~sanaa_async_mem.errors.ConfigurationError` if it is not callable.
        """
        require_callable("callback", callback, allow_none=False)
        self._callbacks.append(callback)

    def remove_callback(self, callback: AlertCallback) -> None:
        """Forget a callback (ValueError if it was not registered)."""
        self._callbacks.remove(callback)

    @property
    def recent(self) -> tuple[Alert, ...]:
        """The most recent alerts, oldest first."""
        return tuple(self._recent)

    def emit(
        self,
        kind: AlertKind,
        message: str,
        fields: Mapping[str, Any],
        *,
        verdict: Any = None,
        log: bool = True,
    ) -> Alert:
        """Record one alert: a WARNING on its kind's ``sanaa.*`` logger (unless ``log=False``, for alerts the
        source has logged itself), then every callback. Never raises for a failing callback."""
        alert = Alert(kind, message, dict(fields), time.time(), verdict)
        self._recent.append(alert)
        if log:
            extra = {f"sanaa_{k}": v for k, v in alert.fields.items()}
            extra["sanaa_alert"] = kind
            get_logger(_LOGGER_OF.get(kind, "alerts")).warning("%s", message, extra=extra)
        self.deliver(alert)
        return alert

    def deliver(self, alert: Alert) -> None:
        """Hand an already-recorded alert to the callbacks only."""
        for callback in list(self._callbacks):
            try:
                result = callback(alert)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except Exception:
                _log.exception("alert callback %r failed", callback, extra={"sanaa_alert": alert.kind})

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error(
                "async alert callback failed", exc_info=task.exception(), extra={"sanaa_alert": "callback"}
            )

    @property
    def pending(self) -> int:
        """Async callbacks still running."""
        return len(self._tasks)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for async callbacks still running, then cancel the rest and wait for
        them to finish. Cancelling this call leaves the callbacks running."""
        if not self._tasks:
            return
        pending = set(self._tasks)
        _, still = await asyncio.wait(pending, timeout=timeout)
        for task in still:
            task.cancel()
        if still:
            await asyncio.wait(still)
