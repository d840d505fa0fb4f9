"""GC pause recording: each collection's pause, per generation, through ``gc.callbacks``."""

from __future__ import annotations

import contextlib
import gc
import time

from .._stats import Histogram, HistogramSnapshot


class GCPauseRecorder:
    """Records each collection's pause (seconds, wall clock) in a histogram per generation (``gc.callbacks``).

    ``install()``/``uninstall()`` are idempotent. A collection runs on whichever thread allocated, and only
    one runs at a time, so start/stop pairs never interleave; readers may see a snapshot that is one sample
    behind. ``histograms[g]`` is the histogram of generation ``g``.
    """

    __slots__ = ("_installed", "_started", "collected", "histograms", "uncollectable")

    def __init__(self) -> None:
        # One histogram per generation the interpreter reports, plus a spare for interpreters that report a
        # generation number we did not expect (3.14's incremental collector says 1 for an increment).
        self.histograms: tuple[Histogram, ...] = tuple(
            Histogram() for _ in range(max(3, len(gc.get_stats())))
        )
        self.collected = 0
        self.uncollectable = 0
        self._started = 0.0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside every collection: no allocation beyond a float, no logging, no locks.
        if phase == "start":
            self._started = time.perf_counter()
            return
        elapsed = time.perf_counter() - self._started
        g = info.get("generation", 0)
        hists = self.histograms
        hists[g if 0 <= g < len(hists) else len(hists) - 1].record(elapsed)
        self.collected += info.get("collected", 0)
        self.uncollectable += info.get("uncollectable", 0)

    @property
    def installed(self) -> bool:
        return self._installed

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            # Remove our bound method by identity of its owner; a plain ``remove`` compares with ==, which for
            # bound methods is exactly that.
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(self._callback)
            self._installed = False

    def snapshot(self) -> dict[int, HistogramSnapshot]:
        """``{generation: snapshot}`` of pause times in seconds."""
        return {g: h.snapshot() for g, h in enumerate(self.histograms)}

    @property
    def total_seconds(self) -> float:
        return sum(h.sum for h in self.histograms)

    @property
    def max_pause(self) -> float:
        return max(h.max for h in self.histograms)

    def reset(self) -> None:
        for h in self.histograms:
            h.reset()
        self.collected = 0
        self.uncollectable = 0


__all__ = ["GCPauseRecorder"]
