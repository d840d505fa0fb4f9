"""SnapshotRing: the profiler's in-memory history of stored snapshots, in memory fixed at construction.

A profiler that watches a process for leaks must not look like one. A deque of snapshot objects grows by
~600 bytes per snapshot until it is full, which at a one-second interval is an hour of steady growth in
the very numbers being judged. The ring keeps each field in a preallocated ``array`` column instead (about
120 bytes per slot, all allocated up front), so its footprint is the same after the first snapshot and the
ten-thousandth. The top consumers of traced snapshots (variable size) are kept only for the newest
``keep_top`` snapshots that have them. Snapshot objects are rebuilt when read.
"""

from __future__ import annotations

from array import array
from collections import deque

from .snapshots import MemorySnapshot, TopConsumer

__all__ = ["SnapshotRing"]

_NONE = -1  # "not measured" in an integer column (sizes and counts are never negative)
_GENERATIONS = 3


class SnapshotRing:
    """The newest ``capacity`` snapshots, oldest first. Not thread-safe; readers get copies."""

    __slots__ = (
        "_capacity",
        "_count",
        "_float_cols",
        "_gc",
        "_int_cols",
        "_next",
        "_seq",
        "_tops",
        "keep_top",
    )

    _FLOATS = ("timestamp", "monotonic", "system_percent")
    _INTS = ("rss", "vms", "uss", "system_total", "system_available", "traced", "traced_peak")

    def __init__(self, capacity: int, *, keep_top: int = 8) -> None:
        self._capacity = capacity
        self.keep_top = keep_top
        self._float_cols = {name: array("d", bytes(8 * capacity)) for name in self._FLOATS}
        self._int_cols = {name: array("q", bytes(8 * capacity)) for name in self._INTS}
        self._gc = array("q", bytes(8 * capacity * _GENERATIONS))
        self._next = 0  # slot the next snapshot goes to
        self._count = 0
        self._seq = 0  # snapshots ever added
        # (sequence number, top consumers) of the newest traced snapshots: bounded too.
        self._tops: deque[tuple[int, tuple[TopConsumer, ...]]] = deque(maxlen=max(1, keep_top))

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return self._count

    def append(self, snap: MemorySnapshot) -> None:
        i = self._next
        for name in self._FLOATS:
            self._float_cols[name][i] = getattr(snap, name)
        for name in self._INTS:
            value = getattr(snap, name)
            self._int_cols[name][i] = _NONE if value is None else value
        counts = snap.gc_counts
        for g in range(_GENERATIONS):
            self._gc[i * _GENERATIONS + g] = counts[g] if g < len(counts) else _NONE
        if snap.top and self.keep_top:
            self._tops.append((self._seq, snap.top))
        self._seq += 1
        self._next = (i + 1) % self._capacity
        self._count = min(self._count + 1, self._capacity)

    def _slot(self, k: int) -> int:
        """Slot of the k-th oldest snapshot kept."""
        return (self._next - self._count + k) % self._capacity

    def _build(self, k: int, tops: dict[int, tuple[TopConsumer, ...]]) -> MemorySnapshot:
        i = self._slot(k)
        ints = {name: self._int_cols[name][i] for name in self._INTS}
        gc_counts = tuple(c for c in self._gc[i * _GENERATIONS : (i + 1) * _GENERATIONS] if c != _NONE)
        seq = self._seq - self._count + k
        return MemorySnapshot(
            timestamp=self._float_cols["timestamp"][i],
            monotonic=self._float_cols["monotonic"][i],
            rss=ints["rss"],
            vms=ints["vms"],
            uss=None if ints["uss"] == _NONE else ints["uss"],
            system_total=ints["system_total"],
            system_available=ints["system_available"],
            system_percent=self._float_cols["system_percent"][i],
            gc_counts=gc_counts,
            traced=None if ints["traced"] == _NONE else ints["traced"],
            traced_peak=None if ints["traced_peak"] == _NONE else ints["traced_peak"],
            top=tops.get(seq, ()),
        )

    def snapshots(self) -> tuple[MemorySnapshot, ...]:
        """Every snapshot kept, oldest first (rebuilt: O(len))."""
        tops = dict(self._tops)
        return tuple(self._build(k, tops) for k in range(self._count))

    def last(self) -> MemorySnapshot | None:
        """The newest snapshot, or None."""
        if not self._count:
            return None
        return self._build(self._count - 1, dict(self._tops))

    def rss_summary(self) -> tuple[float, float, int, int, int, int] | None:
        """``(first monotonic, last monotonic, first rss, last rss, min rss, max rss)``, or None if empty."""
        if not self._count:
            return None
        first, last = self._slot(0), self._slot(self._count - 1)
        rss = self._int_cols["rss"]
        if self._count == self._capacity:
            values = rss
        elif first <= last:
            values = rss[first : last + 1]
        else:
            values = rss[first:] + rss[: last + 1]
        mono = self._float_cols["monotonic"]
        return mono[first], mono[last], rss[first], rss[last], min(values), max(values)

    def clear(self) -> None:
        self._next = self._count = 0
        self._tops.clear()
