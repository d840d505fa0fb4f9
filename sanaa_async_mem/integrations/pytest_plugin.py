"""pytest plugin: ``@pytest.mark.leak_check`` runs a test body many times and fails it if memory leaks.

::

    @pytest.mark.leak_check(iterations=50, warmup=10, threshold=1024)
    def test_parse_does_not_leak():
        parse(b"...")

The test's fixtures are set up once; its body then runs ``warmup`` times unjudged (caches fill, lazy
imports happen, interned strings settle), then ``iterations`` times under :mod:`tracemalloc`, with a
``gc.collect()`` after each run so that garbage waiting for the cycle collector does not count. The test
fails when the traced bytes grow by at least ``threshold`` **bytes per iteration**, both over all the
measured runs and over their second half; the failure names the allocation sites that grew most since the
end of the warm-up (``file:line``, size, blocks).

How growth is measured, and why: the slope is the trend module's Theil-Sen slope (the median of the
slopes between every pair of runs) with the iteration number as x axis, so the verdict does not depend on
the machine's speed or load. The median ignores one-off steps (a list or dict resizing, a free list
growing) and a cache that fills during part of the measurement, as long as it is flat for most of it; the
second-half slope rejects growth that has stopped. The full :class:`~sanaa_async_mem.memory.TrendAnalyzer`
is not used here: its significance test and change-point scan assume measurement noise, and traced bytes
after a collection have almost none, so a wiggle of a few bytes on an exact line reads as a break and a
steady leak can be cut down to "insufficient data". Tracing is exact, so the slope needs no confidence
interval.

Async tests (``async def``) are run by pytest-asyncio (1.x, auto or strict mode): each repetition runs the
coroutine to completion on the test's event loop, as the plugin calls the function pytest-asyncio has made
synchronous. The plugin is loaded in every pytest session through its ``pytest11`` entry point; it only
registers the marker unless a test carries it.

Marker arguments: ``iterations`` (measured runs, default 50, at least 10), ``warmup`` (unjudged runs
first, default 10), ``threshold`` (bytes per iteration, default 1024), ``top`` (allocation sites shown,
default 5), ``frames`` (traceback depth tracemalloc records per allocation, default 1).
"""

from __future__ import annotations

import dataclasses
import gc
import inspect
import linecache
import os
import tracemalloc
from collections.abc import Callable
from typing import Any, NoReturn

import pytest

MARKER = "leak_check"

_MARKER_HELP = (
    f"{MARKER}(iterations=50, warmup=10, threshold=1024, top=5, frames=1): run the test body warmup + "
    "iterations times under tracemalloc and fail it when traced memory grows by more than threshold bytes "
    "per iteration (sanaa_async_mem)"
)

# Allocations that are the measurement's own, not the test's.
_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, linecache.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
    tracemalloc.Filter(False, __file__),
)


@dataclasses.dataclass(frozen=True, slots=True)
class LeakCheck:
    """The marker's arguments (see the module docstring); ``threshold`` in bytes per iteration."""

    iterations: int = 50
    warmup: int = 10
    threshold: float = 1024.0
    top: int = 5
    frames: int = 1

    @classmethod
    def from_marker(cls, marker: pytest.Mark) -> LeakCheck:
        """The options of a ``leak_check`` marker; a bad one fails the test with a one-line message."""
        if marker.args:
            _usage("takes keyword arguments only, e.g. leak_check(iterations=50, warmup=10, threshold=1024)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(marker.kwargs) - known)
        if unknown:
            _usage(f"unknown argument {unknown[0]!r}; known: {', '.join(sorted(known))}")
        options = cls(**marker.kwargs)
        for name, minimum in (("iterations", 10), ("warmup", 0), ("top", 0), ("frames", 1)):
            value = getattr(options, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                _usage(f"{name} must be an integer >= {minimum}, got {value!r}")
        t = options.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            _usage(f"threshold must be a positive number of bytes per iteration, got {t!r}")
        return options


def _usage(message: str) -> NoReturn:
    pytest.fail(f"{MARKER}: {message}", pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _MARKER_HELP)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a marked test's body repeatedly (see the module docstring); leave every other test alone."""
    marker = pyfuncitem.get_closest_marker(MARKER)
    if marker is None:
        return None
    options = LeakCheck.from_marker(marker)
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        # pytest-asyncio replaces an async test's function by a synchronous one before this hook runs; an
        # async function here means no plugin runs it, and running it ourselves would pick the wrong loop.
        _usage("an async test needs pytest-asyncio to run it (pip install pytest-asyncio; asyncio_mode=auto)")
    funcargs = pyfuncitem.funcargs
    kwargs = {name: funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}

    def body() -> None:
        result = function(**kwargs)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            _usage("the test returned an awaitable that no plugin awaited (is pytest-asyncio installed?)")

    failure = check_for_leak(body, options)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    return True


def check_for_leak(body: Callable[[], Any], options: LeakCheck) -> str | None:
    """Run ``body`` ``options.warmup`` + ``options.iterations`` times under tracemalloc; the failure
    message if the traced memory leaks, else ``None``. An exception from ``body`` propagates at once.

    If tracemalloc is already tracing it is left running (and its traces are shared); otherwise it is
    started here and stopped at the end.
    """
    from ..memory.trend import theil_sen  # imported when used: auto-loading the plugin stays cheap

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start(options.frames)
    try:
        for _ in range(options.warmup):
            body()
        gc.collect()
        baseline = tracemalloc.take_snapshot().filter_traces(_IGNORED)
        xs: list[float] = []
        ys: list[float] = []
        for i in range(options.iterations):
            body()
            gc.collect()
            xs.append(float(i))
            ys.append(float(tracemalloc.get_traced_memory()[0]))
        # Before the analysis, whose allocations are no test's.
        final = tracemalloc.take_snapshot().filter_traces(_IGNORED)
    finally:
        if started:
            tracemalloc.stop()
    overall = theil_sen(xs, ys)
    recent = theil_sen(xs[len(xs) // 2 :], ys[len(ys) // 2 :])
    if overall < options.threshold or recent < options.threshold:
        return None
    growth = [s for s in final.compare_to(baseline, "lineno") if s.size_diff > 0][: options.top]
    lines = [
        f"{MARKER}: memory leaks {overall:,.0f} B per iteration ({recent:,.0f} B over the second half; "
        f"threshold {options.threshold:,.0f} B): traced memory {ys[0]:,.0f} -> {ys[-1]:,.0f} B over "
        f"{options.iterations} iterations after {options.warmup} warm-up",
    ]
    if growth:
        lines.append("top allocation sites (growth since the end of the warm-up):")
        for stat in growth:
            where = f"{_short(stat.traceback[0].filename)}:{stat.traceback[0].lineno}"
            lines.append(f"  {where}: +{stat.size_diff:,} B in {stat.count_diff:+,} blocks")
    return "\n".join(lines)


def _short(path: str) -> str:
    """A path relative to the working directory when it is inside it (as pytest shows test files)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path
    return path if rel.startswith("..") else rel


__all__ = ["MARKER", "LeakCheck", "check_for_leak"]
