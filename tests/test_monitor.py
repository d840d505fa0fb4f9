"""monitor_function_memory on def and async def: transparency, per-call deltas, stats, overlap flags."""

from __future__ import annotations

import asyncio
import inspect
import logging
import tracemalloc
from typing import Any

import pytest

from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.memory.monitor import (
    get_function_memory_stats,
    monitor_function_memory,
    reset_function_memory_stats,
)

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fresh_stats() -> Any:
    reset_function_memory_stats()
    yield
    reset_function_memory_stats()


@pytest.fixture
def tracing() -> Any:
    if tracemalloc.is_tracing():
        pytest.skip("the application already traces")
    tracemalloc.start()
    yield
    tracemalloc.stop()


def stats_of(func: Any) -> dict[str, Any]:
    return get_function_memory_stats()[f"{func.__module__}.{func.__qualname__}"]


def test_sync_function_is_unchanged_to_its_callers() -> None:
    def add(a: int, b: int = 2, *, scale: float = 1.0) -> float:
        """Adds."""
        return (a + b) * scale

    wrapped = monitor_function_memory(add)
    assert wrapped(1, scale=2.0) == 6.0
    assert wrapped.__name__ == "add" and wrapped.__doc__ == "Adds."
    assert inspect.signature(wrapped) == inspect.signature(add)
    assert not inspect.iscoroutinefunction(wrapped)
    assert stats_of(add)["calls"] == 1


async def test_async_function_is_unchanged_to_its_callers() -> None:
    async def fetch(key: str, *, default: int = 0) -> int:
        await asyncio.sleep(0)
        return len(key) + default

    wrapped = monitor_function_memory(threshold=10 * MiB)(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert await wrapped("abc", default=1) == 4
    assert stats_of(fetch)["calls"] == 1


async def test_exceptions_and_cancellation_propagate_and_are_counted() -> None:
    @monitor_function_memory
    def fails() -> None:
        raise KeyError("x")

    @monitor_function_memory
    async def hangs() -> None:
        await asyncio.Event().wait()

    with pytest.raises(KeyError):
        fails()
    task = asyncio.ensure_future(hangs())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stats_of(fails)["errors"] == 1
    assert stats_of(hangs)["errors"] == 1 and stats_of(hangs)["last"]["raised"] is True


def test_a_call_that_keeps_memory_is_logged_with_its_delta(caplog: pytest.LogCaptureFixture) -> None:
    kept: list[bytes] = []

    @monitor_function_memory(threshold=4 * MiB)
    def hoard() -> None:
        # Above glibc's largest mmap threshold (32 MiB): fresh, touched pages, so RSS really grows.
        kept.append(b"x" * (40 * MiB))

    @monitor_function_memory(threshold=4 * MiB)
    def small() -> int:
        return len(b"y" * 1000)

    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        hoard()
        small()
    s = stats_of(hoard)
    assert s["last"]["rss_delta"] >= 36 * MiB
    assert s["above_threshold"] == 1
    assert stats_of(small)["above_threshold"] == 0
    [record] = [r for r in caplog.records if getattr(r, "sanaa_function", "").endswith("hoard")]
    assert record.sanaa_rss_delta >= 36 * MiB  # type: ignore[attr-defined]
    assert record.sanaa_overlapped is False  # type: ignore[attr-defined]


def test_with_tracing_the_traced_delta_and_peak_are_recorded(tracing: None) -> None:
    kept: list[bytes] = []

    @monitor_function_memory
    def temporary_then_keep() -> None:
        scratch = b"t" * (8 * MiB)  # freed before returning: shows in the peak only
        del scratch
        kept.append(b"k" * MiB)

    temporary_then_keep()
    last = stats_of(temporary_then_keep)["last"]
    assert MiB <= last["traced_delta"] < 2 * MiB
    assert last["traced_peak"] >= 8 * MiB
    assert stats_of(temporary_then_keep)["max_traced_peak"] >= 8 * MiB


async def test_concurrent_async_calls_are_flagged_as_overlapping_not_attributed() -> None:
    kept: list[bytes] = []
    started = asyncio.Barrier(2)

    @monitor_function_memory
    async def handler(n: int) -> None:
        await started.wait()  # both calls are now in flight
        kept.append(b"h" * n)
        await asyncio.sleep(0)

    await asyncio.gather(handler(4 * MiB), handler(1000))
    s = stats_of(handler)
    assert s["calls"] == 2 and s["overlapped_calls"] == 2
    # Overlapped deltas are kept out of the per-function mean and max: they may be the other call's.
    assert s["mean_rss_delta"] == 0.0 and s["max_rss_delta"] == 0
    assert s["last"]["overlapped"] is True and s["last"]["traced_peak"] is None

    @monitor_function_memory
    async def alone() -> None:
        await asyncio.sleep(0)

    await alone()
    await alone()
    assert stats_of(alone)["overlapped_calls"] == 0 and stats_of(alone)["calls"] == 2


async def test_an_unmonitored_concurrent_task_is_included_in_the_process_wide_delta() -> None:
    kept: list[bytes] = []

    async def other_task() -> None:
        kept.append(b"o" * (40 * MiB))

    @monitor_function_memory
    async def waits() -> None:
        await asyncio.sleep(0.05)

    background = asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(other_task()))
    await waits()
    del background
    # Documented: the delta is process growth during the call, whoever allocated it.
    assert stats_of(waits)["last"]["rss_delta"] >= 36 * MiB
    assert stats_of(waits)["last"]["overlapped"] is False


def test_generators_and_bad_arguments_are_refused() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for f in (gen, agen):
        with pytest.raises(ConfigurationError) as info:
            monitor_function_memory(f)
        assert info.value.name == "func"
    with pytest.raises(ConfigurationError) as info:
        monitor_function_memory(threshold=0)
    assert info.value.name == "threshold"
