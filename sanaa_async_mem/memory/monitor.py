"""``monitor_function_memory``: per-call memory deltas for ``def`` and ``async def`` functions.

What is measured, precisely:

* ``rss_delta``: the process's RSS after the call minus before (``psutil``), in bytes. It is process-wide
  and page-granular, and allocator caches hide small allocations: a positive delta means the process grew
  during the call, not that the call owns all of it.
* ``traced_delta`` and ``traced_peak`` (only while tracemalloc is tracing, e.g. under a
  :class:`~sanaa_async_mem.memory.MemoryProfiler` with tracing on): traced bytes after minus before, and
  the highest traced bytes during the call above the level at its start. The peak comes from
  ``tracemalloc.reset_peak()``/``get_traced_memory()``, so it is process-wide too, and the peak that
  tracemalloc reports to anyone else afterwards is the peak since the latest monitored call began.
* ``overlapped``: ``True`` when another monitored call (any function, any task or thread) ran during part
  of this one. For an ``async def`` every ``await`` lets other tasks run, so the delta of a call that
  overlapped includes their allocations: such calls are counted, but kept out of the per-function
  ``mean_rss_delta``/``max_rss_delta`` (they are in ``overlapped_calls``), and their peak is not reported.
  Allocations by *unmonitored* code that runs while an async call waits are always included: Python cannot
  attribute memory to a task, so the honest unit is "process growth during the call".

Cost per call: two ``memory_info()`` system calls (~10 us each) plus, when tracing, two tracemalloc reads.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, cast, overload

from .._logging import get_logger
from .._process import rss
from ..config import positive_int
from ..errors import ConfigurationError

log = get_logger("memory")

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_THRESHOLD_BYTES = 1024 * 1024

_lock = threading.Lock()
# Monitored calls in flight, and a counter of call starts: together they tell a call whether any other
# monitored call ran during it (in flight when it started, or started before it ended).
_active = 0
_started = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CallMemory:
    """What one call did to memory (bytes; ``None`` when not measured). See the module docstring."""

    function: str
    rss_delta: int
    traced_delta: int | None
    traced_peak: int | None
    seconds: float
    overlapped: bool
    raised: bool


@dataclasses.dataclass(slots=True)
class FunctionMemoryStats:
    """Running totals for one function. Deltas in bytes; ``mean``/``max`` cover non-overlapped calls."""

    function: str
    calls: int = 0
    overlapped_calls: int = 0
    errors: int = 0
    above_threshold: int = 0
    total_rss_delta: int = 0
    max_rss_delta: int = 0
    max_traced_peak: int = 0
    last: CallMemory | None = None

    @property
    def mean_rss_delta(self) -> float:
        clean = self.calls - self.overlapped_calls
        return self.total_rss_delta / clean if clean else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "calls": self.calls,
            "overlapped_calls": self.overlapped_calls,
            "errors": self.errors,
            "above_threshold": self.above_threshold,
            "mean_rss_delta": self.mean_rss_delta,
            "max_rss_delta": self.max_rss_delta,
            "max_traced_peak": self.max_traced_peak,
            "last": None if self.last is None else dataclasses.asdict(self.last),
        }


_stats: dict[str, FunctionMemoryStats] = {}


def get_function_memory_stats() -> dict[str, dict[str, Any]]:
    """Per-function stats as plain dicts, keyed by ``module.qualname``."""
    with _lock:
        return {name: s.as_dict() for name, s in _stats.items()}


def reset_function_memory_stats() -> None:
    """Forget every function's stats (for tests and long-running services that export and reset)."""
    with _lock:
        _stats.clear()


class _Call:
    """The measurement of one call: opened before it runs, closed after (even if it raises)."""

    __slots__ = ("name", "overlapped", "rss0", "seq", "t0", "traced0", "tracing")

    def __init__(self, name: str) -> None:
        global _active, _started
        with _lock:
            self.overlapped = _active > 0
            _active += 1
            _started += 1
            self.seq = _started
        self.name = name
        self.tracing = tracemalloc.is_tracing()
        if self.tracing:
            tracemalloc.reset_peak()
            self.traced0 = tracemalloc.get_traced_memory()[0]
        else:
            self.traced0 = 0
        self.rss0 = rss()
        self.t0 = time.perf_counter()

    def close(self, raised: bool, threshold: int) -> CallMemory:
        global _active
        seconds = time.perf_counter() - self.t0
        rss_delta = rss() - self.rss0
        traced_delta: int | None = None
        traced_peak: int | None = None
        if self.tracing and tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            traced_delta = current - self.traced0
            traced_peak = max(peak - self.traced0, 0)
        with _lock:
            _active -= 1
            overlapped = self.overlapped or _started != self.seq
            if overlapped:
                traced_peak = None
            record = CallMemory(
                function=self.name,
                rss_delta=rss_delta,
                traced_delta=traced_delta,
                traced_peak=traced_peak,
                seconds=seconds,
                overlapped=overlapped,
                raised=raised,
            )
            stats = _stats.get(self.name)
            if stats is None:
                stats = _stats[self.name] = FunctionMemoryStats(self.name)
            stats.calls += 1
            stats.errors += raised
            stats.last = record
            growth = max(rss_delta, traced_delta or 0)
            if growth >= threshold:
                stats.above_threshold += 1
            if overlapped:
                stats.overlapped_calls += 1
            else:
                stats.total_rss_delta += rss_delta
                stats.max_rss_delta = max(stats.max_rss_delta, rss_delta)
                if traced_peak is not None:
                    stats.max_traced_peak = max(stats.max_traced_peak, traced_peak)
        if growth >= threshold:
            log.warning(
                "%s grew memory by %d B in %.3g s%s",
                self.name,
                growth,
                seconds,
                " (overlapping other monitored calls)" if overlapped else "",
                extra={
                    "sanaa_function": self.name,
                    "sanaa_rss_delta": rss_delta,
                    "sanaa_traced_delta": traced_delta,
                    "sanaa_traced_peak": traced_peak,
                    "sanaa_overlapped": overlapped,
                    "sanaa_seconds": seconds,
                },
            )
        return record


def _wrap(func: Callable[P, R], threshold: int) -> Callable[P, R]:
    name = f"{func.__module__}.{func.__qualname__}"
    if inspect.iscoroutinefunction(func):
        afunc = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            call = _Call(name)
            raised = True
            try:
                result = await afunc(*args, **kwargs)
                raised = False
                return result
            finally:
                # A cancelled call is recorded too (as raised): its memory effect is real.
                call.close(raised, threshold)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        call = _Call(name)
        raised = True
        try:
            result = func(*args, **kwargs)
            raised = False
            return result
        finally:
            call.close(raised, threshold)

    return wrapper


@overload
def monitor_function_memory(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def monitor_function_memory(
    func: None = None, /, *, threshold: int = DEFAULT_THRESHOLD_BYTES
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def monitor_function_memory(
    func: Callable[P, R] | None = None, /, *, threshold: int = DEFAULT_THRESHOLD_BYTES
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Record the memory each call of ``func`` adds; log calls that add ``threshold`` bytes or more.

    Works on ``def`` and ``async def`` (detected with :func:`inspect.iscoroutinefunction`), bare
    (``@monitor_function_memory``) or with arguments (``@monitor_function_memory(threshold=...)``). The
    wrapped function keeps its name, signature, return value and exceptions; a cancelled ``async`` call is
    recorded (as ``raised``) and the ``CancelledError`` propagates. Generator functions are refused
    (ConfigurationError): their body runs after the call returns, so there is nothing to measure around it.
    """
    positive_int("threshold", threshold)

    def decorate(f: Callable[P, R]) -> Callable[P, R]:
        if not callable(f):
            raise ConfigurationError("func", f, "must be a function")
        if inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f):
            raise ConfigurationError("func", f, "generator functions cannot be measured per call")
        return _wrap(f, threshold)

    if func is None:
        return decorate
    return decorate(func)


__all__ = [
    "CallMemory",
    "FunctionMemoryStats",
    "get_function_memory_stats",
    "monitor_function_memory",
    "reset_function_memory_stats",
]
