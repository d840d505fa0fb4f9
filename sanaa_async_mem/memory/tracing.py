"""The tracing controller: tracemalloc on demand, its statistics off the event loop, and leak evidence.

Tracing is the expensive tier of the profiler: allocation-heavy code runs several times slower while
tracemalloc records every allocation, and a traced snapshot of a large heap takes tens to hundreds of
milliseconds (holding the GIL). So tracing runs only when asked for or when a leak is suspected, and every
heavy call (starting, stopping, taking and comparing snapshots) runs in a worker thread through
``anyio.to_thread.run_sync`` with a capacity limiter of one: however often the profiler asks, at most one
such job runs at a time and none piles up in the application's default executor.

What counts as evidence: lines whose traced memory grew between a baseline snapshot and the latest one,
largest growth first, with the growth per minute over that window and the source line's text. Locations are
relative to the project (the working directory) or to ``site-packages``; this library's own frames, the
import machinery (``<frozen ...>``) and tracemalloc itself are filtered out, so the evidence names the
application's code, never the profiler's bookkeeping.

Cancellation: starting and stopping are shielded: a cancelled caller still leaves tracing fully on (and
owned by this controller) or fully off. A cancelled statistics call discards its result.
"""

from __future__ import annotations

import asyncio
import linecache
import os
import site
import sys
import time
import tokenize
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .._logging import get_logger
from .snapshots import TopConsumer

__all__ = ["TracingController", "relative_location"]

log = get_logger("memory")

R = TypeVar("R")

_PACKAGE_DIR = Path(__file__).parent.parent


def _library_patterns() -> list[str]:
    """tracemalloc filename patterns of this library's own code. The ``cli`` package is left out: the
    demo service it runs is application code, and its planted leak must be found like any other."""
    out: list[str] = []
    for base in {_PACKAGE_DIR, _PACKAGE_DIR.resolve()}:
        for entry in base.iterdir():
            if entry.name == "cli" or entry.name.startswith("."):
                continue
            out.append(os.path.join(entry, "*") if entry.is_dir() else str(entry))
    return out


# What is nobody's leak: tracemalloc's own bookkeeping, the import machinery, this library's frames, and
# the source-line cache the evidence itself fills (linecache reads files through tokenize).
_FILTERS = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, linecache.__file__),
    tracemalloc.Filter(False, tokenize.__file__),
    tracemalloc.Filter(False, "<frozen *>"),
    tracemalloc.Filter(False, "<unknown>"),
    *(tracemalloc.Filter(False, pattern) for pattern in _library_patterns()),
)


def _bases() -> tuple[tuple[str, str], ...]:
    """(directory, label) pairs a source file can be shown relative to, longest directory first: the
    site-packages directories (shown as ``site-packages/...``), then every other import root (the standard
    library, an editable checkout: shown relative to it)."""
    site_dirs = {os.path.abspath(d) for d in (*site.getsitepackages(), site.getusersitepackages()) if d}
    site_dirs |= {os.path.abspath(p) for p in sys.path if p and "-packages" in os.path.basename(p)}
    roots = {os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)} - site_dirs
    pairs = [(d, "site-packages/") for d in site_dirs] + [(d, "") for d in roots]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))


_BASES = _bases()


def relative_location(filename: str, lineno: int) -> str:
    """``file:line`` with the file relative to the working directory (the project: ``app/cache.py:42``), to
    its ``site-packages`` directory (``site-packages/aiohttp/web.py:7``) or to the import root it was loaded
    from (``json/decoder.py:353``); a path under none of them is kept whole."""
    if filename.startswith("<"):
        return f"{filename}:{lineno}"
    path = os.path.abspath(filename)
    cwd = os.getcwd()
    best: tuple[str, str] | None = None
    for base, label in _BASES:
        if path.startswith(base + os.sep):
            best = (base, label)
            break
    if path.startswith(cwd + os.sep) and (best is None or len(cwd) >= len(best[0])):
        return f"{os.path.relpath(path, cwd)}:{lineno}"
    if best is not None:
        return f"{best[1]}{os.path.relpath(path, best[0])}:{lineno}"
    return f"{path}:{lineno}"


def _consumer(stat: Any, seconds: float, *, diff: bool) -> TopConsumer:
    frame = stat.traceback[0]
    return TopConsumer(
        location=relative_location(frame.filename, frame.lineno),
        size=stat.size,
        count=stat.count,
        size_diff=stat.size_diff if diff else 0,
        count_diff=stat.count_diff if diff else 0,
        text=linecache.getline(frame.filename, frame.lineno).strip(),
        seconds=seconds if diff else 0.0,
    )


class TracingController:
    """Starts and stops tracemalloc for one profiler; turns traced snapshots into :class:`TopConsumer` rows.

    ``frames`` is tracemalloc's traceback depth, ``top_n`` how many rows a ranking keeps. A trace the
    application started itself is used but never stopped. Use from the profiler's event loop.
    """

    def __init__(self, *, frames: int = 1, top_n: int = 10) -> None:
        self.frames = frames
        self.top_n = top_n
        self.reason: str | None = None
        self._owned = False
        self._change: asyncio.Future[None] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._previous: tracemalloc.Snapshot | None = None
        self._previous_at = 0.0
        self._baseline: tracemalloc.Snapshot | None = None
        self._baseline_at = 0.0
        self.last_top: tuple[TopConsumer, ...] = ()

    @property
    def active(self) -> bool:
        """Whether tracemalloc traces now (started by us or by the application)."""
        return tracemalloc.is_tracing()

    @property
    def owned(self) -> bool:
        """Whether this controller started the trace running now (and so will stop it)."""
        return self._owned

    @property
    def snapshots_taken(self) -> bool:
        return self._previous is not None

    async def _off_loop(self, func: Callable[..., R], *args: Any) -> R:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def start(self, reason: str = "requested") -> None:
        """Start tracemalloc unless something already traces (idempotent; shielded)."""
        if tracemalloc.is_tracing() or self._owned:
            return
        self._owned = True
        self.reason = reason
        self._forget()
        await self._switch(tracemalloc.start, self.frames)
        log.info("tracemalloc started (%s)", reason, extra={"sanaa_trace_reason": reason})

    async def stop(self) -> None:
        """Stop tracemalloc if this controller started it (shielded: completes even if the caller is
        cancelled). A trace the application started is left alone."""
        if not self._owned:
            if self._change is not None and not self._change.done():
                await asyncio.shield(self._change)
            return
        self._owned = False
        self.reason = None
        self._forget()
        # Freeing millions of traces takes a while: not on the loop.
        await self._switch(tracemalloc.stop)
        log.info("tracemalloc stopped")

    def _forget(self) -> None:
        self._previous = None
        self._baseline = None
        self.last_top = ()

    async def _switch(self, func: Callable[..., None], *args: Any) -> None:
        # One switch at a time, shielded and remembered: a cancelled caller must not leave tracing
        # half-switched, and a stop waits for a start still in flight.
        previous = self._change
        if previous is not None and not previous.done():
            await asyncio.shield(previous)
        change = asyncio.ensure_future(self._off_loop(func, *args))
        self._change = change
        await asyncio.shield(change)

    async def wait_idle(self) -> None:
        """Wait for a start or stop still in flight (e.g. begun by a cancelled task)."""
        if self._change is not None and not self._change.done():
            await asyncio.shield(self._change)

    @staticmethod
    def traced_memory() -> tuple[int, int] | None:
        """``(current, peak)`` traced bytes, or None when not tracing. Cheap (on the loop)."""
        if not tracemalloc.is_tracing():
            return None
        return tracemalloc.get_traced_memory()

    async def rank(self) -> tuple[TopConsumer, ...]:
        """Take a traced snapshot (in a worker thread) and rank lines by size, with their growth since the
        previous ranking. The first ranking of a trace is also the evidence baseline. ``()`` when not
        tracing."""
        if not tracemalloc.is_tracing():
            return ()
        previous, previous_at = self._previous, self._previous_at
        current, top = await self._off_loop(self._rank, previous, time.monotonic() - previous_at)
        now = time.monotonic()
        if current is not None:
            if self._baseline is None:
                self._baseline, self._baseline_at = current, now
            self._previous, self._previous_at = current, now
        self.last_top = top
        return top

    def _rank(
        self, previous: tracemalloc.Snapshot | None, seconds: float
    ) -> tuple[tracemalloc.Snapshot | None, tuple[TopConsumer, ...]]:
        if not tracemalloc.is_tracing():
            return None, ()
        current = tracemalloc.take_snapshot().filter_traces(_FILTERS)
        if previous is None:
            stats = current.statistics("lineno")[: self.top_n]
            return current, tuple(_consumer(s, 0.0, diff=False) for s in stats)
        compared = current.compare_to(previous, "lineno")
        ranked = sorted(compared, key=lambda s: (s.size_diff, s.size), reverse=True)[: self.top_n]
        return current, tuple(_consumer(s, seconds, diff=True) for s in ranked)

    async def evidence(self) -> tuple[TopConsumer, ...]:
        """The lines that grew most between the baseline and the latest ranking (largest growth first,
        growing lines only), or the latest ranking when there is no window yet."""
        baseline, latest = self._baseline, self._previous
        if baseline is None or latest is None or baseline is latest:
            return self.last_top
        seconds = self._previous_at - self._baseline_at
        return await self._off_loop(self._growth, baseline, latest, seconds)

    def _growth(
        self, baseline: tracemalloc.Snapshot, latest: tracemalloc.Snapshot, seconds: float
    ) -> tuple[TopConsumer, ...]:
        stats = [s for s in latest.compare_to(baseline, "lineno") if s.size_diff > 0]
        stats.sort(key=lambda s: s.size_diff, reverse=True)
        return tuple(_consumer(s, seconds, diff=True) for s in stats[: self.top_n])
