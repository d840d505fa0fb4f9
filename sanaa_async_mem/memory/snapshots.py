"""The memory snapshot record and its JSON Lines store.

A :class:`MemorySnapshot` is a frozen, JSON-serialisable record. :class:`SnapshotStore` appends one record
per line through aiofiles and flushes after each, so a process killed at any moment (even by SIGKILL)
loses at most the record it was writing. :func:`read_snapshots` / :func:`load_snapshots` read a file back,
skipping a torn or corrupt line with a warning on ``sanaa.memory`` and keeping every other record.

The format is JSON and only JSON: a stored file is data and can never run code (no pickle).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiofiles
import aiofiles.os
from aiofiles.threadpool.text import AsyncTextIOWrapper

from .._logging import get_logger

log = get_logger("memory")

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, slots=True)
class TopConsumer:
    """One line of code holding traced memory: ``location`` is ``file:line``; sizes in bytes.

    ``size_diff``/``count_diff`` are the change since the previous traced snapshot (0 for the first).
    """

    location: str
    size: int
    count: int
    size_diff: int = 0
    count_diff: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """Memory of this process at one moment. Sizes in bytes; ``None`` means "not measured".

    ``timestamp`` is wall-clock time (``time.time()``, comparable across processes); ``monotonic`` is
    ``time.monotonic()`` in the process that took it (the trend analyzer uses it within a process, as it
    cannot jump). ``uss`` is only measured when asked for (it takes milliseconds on large processes).
    ``traced``/``traced_peak`` and ``top`` exist only while tracemalloc was tracing.
    """

    timestamp: float
    monotonic: float
    rss: int
    vms: int
    uss: int | None = None
    system_total: int = 0
    system_available: int = 0
    system_percent: float = 0.0
    gc_counts: tuple[int, ...] = ()
    traced: int | None = None
    traced_peak: int | None = None
    top: tuple[TopConsumer, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (tuples become lists), with the format version under ``"v"``."""
        d: dict[str, Any] = {"v": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "top":
                d["top"] = [c.as_dict() for c in value]
            elif f.name == "gc_counts":
                d["gc_counts"] = list(value)
            else:
                d[f.name] = value
        return d

    def to_json(self) -> str:
        """One line of JSON (no newline inside). Raises ValueError on a non-finite float."""
        return json.dumps(self.as_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemorySnapshot:
        """Rebuild a snapshot from :meth:`as_dict` output (ValueError/TypeError on a malformed record)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a snapshot record must be a JSON object, not {type(data).__name__}")
        version = data.get("v", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"unknown snapshot format version {version!r}")
        top_raw = data.get("top", [])
        if not isinstance(top_raw, list):
            raise TypeError("'top' must be a list")
        top = tuple(
            TopConsumer(
                location=str(c["location"]),
                size=_int(c["size"]),
                count=_int(c["count"]),
                size_diff=_int(c.get("size_diff", 0)),
                count_diff=_int(c.get("count_diff", 0)),
            )
            for c in top_raw
        )
        gc_raw = data.get("gc_counts", [])
        if not isinstance(gc_raw, list):
            raise TypeError("'gc_counts' must be a list")
        return cls(
            timestamp=_float(data["timestamp"]),
            monotonic=_float(data["monotonic"]),
            rss=_int(data["rss"]),
            vms=_int(data["vms"]),
            uss=_opt_int(data.get("uss")),
            system_total=_int(data.get("system_total", 0)),
            system_available=_int(data.get("system_available", 0)),
            system_percent=_float(data.get("system_percent", 0.0)),
            gc_counts=tuple(_int(x) for x in gc_raw),
            traced=_opt_int(data.get("traced")),
            traced_peak=_opt_int(data.get("traced_peak")),
            top=top,
        )

    @classmethod
    def from_json(cls, line: str) -> MemorySnapshot:
        """Parse one line written by :meth:`to_json`. Raises ValueError/TypeError/KeyError if malformed."""
        return cls.from_dict(json.loads(line))


def _int(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, got {x!r}")
    return x


def _opt_int(x: Any) -> int | None:
    return None if x is None else _int(x)


def _float(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise TypeError(f"expected a finite number, got {x!r}")
    return float(x)


class SnapshotStore:
    """Appends snapshots to a JSON Lines file, one flushed line per record.

    Use ``async with SnapshotStore(path) as store: await store.append(snapshot)``, or :meth:`open` and
    :meth:`close`. ``fsync=True`` also forces each record to disk (survives power loss, costs a disk
    flush per record); without it a record reaches the OS on every append, which is enough to survive the
    process being killed.

    Cancellation: a cancelled :meth:`append` may or may not have written its line (the write runs in a
    worker thread and completes there); it never writes half a line followed by another record, because
    :meth:`open` terminates a torn last line left by a killed writer before appending.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._file: AsyncTextIOWrapper | None = None
        self.records_written = 0

    @property
    def is_open(self) -> bool:
        return self._file is not None

    async def open(self) -> None:
        """Open for appending (creating the file and its directory if needed). A no-op if already open."""
        if self._file is not None:
            return
        await aiofiles.os.makedirs(self.path.parent, exist_ok=True)
        needs_newline = False
        if await aiofiles.os.path.exists(self.path):
            async with aiofiles.open(self.path, "rb") as f:
                size = await f.seek(0, os.SEEK_END)
                if size:
                    await f.seek(size - 1)
                    needs_newline = await f.read(1) != b"\n"
        self._file = await aiofiles.open(self.path, "a", encoding="utf-8", newline="\n")
        if needs_newline:
            # A writer killed mid-record left a torn line: end it, so it stays one corrupt line the reader
            # skips instead of swallowing the next good record.
            await self._file.write("\n")
            await self._file.flush()

    async def append(self, snapshot: MemorySnapshot) -> None:
        """Write one record and flush it. Raises ValueError on a non-finite number, OSError on I/O failure."""
        if self._file is None:
            await self.open()
        assert self._file is not None
        # One write call per record: the line and its newline reach the OS together.
        await self._file.write(snapshot.to_json() + "\n")
        await self._file.flush()
        if self.fsync:
            await asyncio.to_thread(os.fsync, self._file.fileno())
        self.records_written += 1

    async def close(self) -> None:
        """Close the file; a no-op if not open."""
        f, self._file = self._file, None
        if f is not None:
            await f.close()

    async def __aenter__(self) -> SnapshotStore:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def parse_lines(lines: Iterable[str], *, source: str = "<lines>") -> list[MemorySnapshot]:
    """Parse JSON Lines; a blank line is ignored, a torn or corrupt one is skipped with a warning."""
    out: list[MemorySnapshot] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            out.append(MemorySnapshot.from_json(text))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning(
                "skipping corrupt snapshot record at %s:%d: %s",
                source,
                number,
                exc,
                extra={"sanaa_path": source, "sanaa_line": number},
            )
    return out


async def read_snapshots(path: str | os.PathLike[str]) -> list[MemorySnapshot]:
    """Every complete record of a snapshot file, read through aiofiles (see :func:`parse_lines`).

    Raises FileNotFoundError if the file does not exist. Cancellation discards what was read.
    """
    async with aiofiles.open(path, encoding="utf-8", errors="replace") as f:
        text = await f.read()
    return parse_lines(text.split("\n"), source=os.fspath(path))


def load_snapshots(path: str | os.PathLike[str]) -> list[MemorySnapshot]:
    """Blocking variant of :func:`read_snapshots`, for scripts and tools outside an event loop."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return parse_lines(text.split("\n"), source=os.fspath(path))


__all__ = [
    "MemorySnapshot",
    "SnapshotStore",
    "TopConsumer",
    "load_snapshots",
    "parse_lines",
    "read_snapshots",
]
