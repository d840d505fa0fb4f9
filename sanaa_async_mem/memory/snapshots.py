"""The memory snapshot record and its JSON Lines store (the *snapshot log*).

A log is a sequence of runs. Each run starts with a :class:`RunHeader` record (``"type": "run"``: when and
where the run started, and the settings its verdicts were made with: threshold, intervals, analyzer
options), followed by one :class:`MemorySnapshot` record per stored snapshot. A snapshot carries the cheap
samples taken since the previous one (``samples``) and the profiler's verdict at that moment
(``verdict``), so a reader sees exactly what the running process saw and can recompute it with the same
settings.

:class:`SnapshotStore` appends one record per line through aiofiles and flushes after each, so a process
killed at any moment (even by SIGKILL) loses at most the record it was writing. :func:`load_log` /
:func:`read_log` read a file back as runs; a torn, corrupt or hostile line (bad JSON, wrong types, JSON
nested deep enough to exhaust the parser) is skipped and counted, never fatal, and every other record is
kept. Several runs appended to one file stay separate runs; a file written before run headers existed is
split where the monotonic clock goes backwards (a new process). :func:`load_snapshots` /
:func:`read_snapshots` return every snapshot record of the file, all runs together.

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
    """One line of code holding traced memory. Sizes in bytes.

    ``location`` is ``file:line``, the file relative to the project (the working directory) or to its
    ``site-packages`` directory where it lies under one. ``text`` is that source line (empty if unknown).
    ``size_diff``/``count_diff`` are the change over ``seconds`` (since the baseline it is compared with;
    0 for a first snapshot), so ``growth_per_minute`` is ``size_diff`` per minute of that window.
    """

    location: str
    size: int
    count: int
    size_diff: int = 0
    count_diff: int = 0
    text: str = ""
    seconds: float = 0.0

    @property
    def growth_per_minute(self) -> float:
        """Bytes per minute this line grew by over the window (0.0 without one)."""
        return self.size_diff * 60.0 / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["growth_per_minute"] = self.growth_per_minute
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class MemorySnapshot:
    """Memory of this process at one moment. Sizes in bytes; ``None`` means "not measured".

    ``timestamp`` is wall-clock time (``time.time()``, comparable across processes); ``monotonic`` is
    ``time.monotonic()`` in the process that took it (the trend analyzer uses it within a process, as it
    cannot jump). ``uss`` is only measured when asked for (it takes milliseconds on large processes).
    ``traced``/``traced_peak`` and ``top`` exist only while tracemalloc was tracing. ``samples`` are the
    cheap ``(monotonic, rss, traced or None)`` samples taken since the previous stored snapshot (the trend
    is judged on them); ``verdict`` is the profiler's trend verdict at this moment (its ``as_dict()``), or
    None. ``evidence`` is set on the first record after the profiler captured leak evidence: the lines whose
    memory grew most while the leak was suspected.
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
    samples: tuple[tuple[float, int, int | None], ...] = ()
    verdict: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)
    evidence: tuple[TopConsumer, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (tuples become lists), with the format version under ``"v"``."""
        d: dict[str, Any] = {"v": FORMAT_VERSION}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("top", "evidence"):
                if value or f.name == "top":
                    d[f.name] = [c.as_dict() for c in value]
            elif f.name in ("gc_counts", "samples"):
                d[f.name] = [list(x) if isinstance(x, tuple) else x for x in value]
            elif f.name == "verdict":
                if value is not None:
                    d["verdict"] = dict(value)
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
        top = _consumers(data, "top")
        evidence = _consumers(data, "evidence")
        gc_raw = data.get("gc_counts", [])
        if not isinstance(gc_raw, list):
            raise TypeError("'gc_counts' must be a list")
        samples_raw = data.get("samples", [])
        if not isinstance(samples_raw, list):
            raise TypeError("'samples' must be a list")
        verdict = data.get("verdict")
        if verdict is not None and not isinstance(verdict, Mapping):
            raise TypeError("'verdict' must be an object")
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
            samples=tuple(_sample(x) for x in samples_raw),
            verdict=verdict,
            evidence=evidence,
        )

    @classmethod
    def from_json(cls, line: str) -> MemorySnapshot:
        """Parse one line written by :meth:`to_json`. Raises ValueError/TypeError/KeyError if malformed."""
        return cls.from_dict(json.loads(line))


def _consumers(data: Mapping[str, Any], key: str) -> tuple[TopConsumer, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise TypeError(f"{key!r} must be a list")
    return tuple(
        TopConsumer(
            location=_str(c["location"]),
            size=_int(c["size"]),
            count=_int(c["count"]),
            size_diff=_int(c.get("size_diff", 0)),
            count_diff=_int(c.get("count_diff", 0)),
            text=_str(c.get("text", "")),
            seconds=_float(c.get("seconds", 0.0)),
        )
        for c in raw
        if _is_object(c)
    )


def _is_object(x: Any) -> bool:
    if not isinstance(x, Mapping):
        raise TypeError(f"expected a JSON object, got {type(x).__name__}")
    return True


def _str(x: Any) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, got {x!r}")
    return x


def _sample(x: Any) -> tuple[float, int, int | None]:
    if not isinstance(x, list) or len(x) != 3:
        raise TypeError(f"a sample must be [monotonic, rss, traced], got {x!r}")
    return _float(x[0]), _int(x[1]), _opt_int(x[2])


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

    async def append(self, snapshot: MemorySnapshot | RunHeader) -> None:
        """Write one record (a snapshot, or the header that starts a run) and flush it. Raises ValueError on a
        non-finite number, OSError on I/O failure."""
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


@dataclasses.dataclass(frozen=True, slots=True)
class RunHeader:
    """The first record of a run: when and where it started, and the settings its verdicts used.

    ``started`` is wall-clock time, ``monotonic`` the process's monotonic clock at that moment (snapshot
    times are on the same clock), ``settings`` a plain mapping (``leak_threshold``, ``interval``,
    ``sample_interval``, ``high_memory_bytes``, ``persistence``, ``analyzer`` options, ...), so a reader can
    judge the run's samples exactly as the run did.
    """

    started: float
    monotonic: float
    pid: int
    host: str
    python: str
    library: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": FORMAT_VERSION, "type": "run"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            d[f.name] = dict(value) if f.name == "settings" else value
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunHeader:
        """Rebuild a header from :meth:`as_dict` output (ValueError/TypeError/KeyError if malformed)."""
        settings = data.get("settings", {})
        if not isinstance(settings, Mapping):
            raise TypeError("'settings' must be an object")
        return cls(
            started=_float(data["started"]),
            monotonic=_float(data["monotonic"]),
            pid=_int(data["pid"]),
            host=_str(data["host"]),
            python=_str(data["python"]),
            library=_str(data["library"]),
            settings=dict(settings),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """One run of a snapshot log: its header (None in logs written without one) and its snapshots."""

    header: RunHeader | None
    snapshots: tuple[MemorySnapshot, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class SnapshotLog:
    """A snapshot log read back: its runs, oldest first, and how many lines were not valid records."""

    runs: tuple[Run, ...]
    skipped: int = 0

    @property
    def snapshots(self) -> list[MemorySnapshot]:
        """Every snapshot of every run, in file order."""
        return [s for run in self.runs for s in run.snapshots]

    @property
    def last_run(self) -> Run | None:
        """The newest run with at least one snapshot (what a report of "this log" is about), or None."""
        for run in reversed(self.runs):
            if run.snapshots:
                return run
        return None


# Corrupt lines are logged one by one up to this many per file, then summarised once.
_WARN_LINES = 10


def parse_log(lines: Iterable[str], *, source: str = "<lines>") -> SnapshotLog:
    """Parse a snapshot log: run headers and snapshots; blank lines are ignored and every line that is not a
    valid record (torn, corrupt, of the wrong shape, nested too deep to parse) is skipped, counted and
    logged (``sanaa.memory``), so one bad line never makes the rest unreadable."""
    runs: list[Run] = []
    header: RunHeader | None = None
    current: list[MemorySnapshot] = []
    skipped = 0
    started = False

    def close_run() -> None:
        if started:
            runs.append(Run(header, tuple(current)))

    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            data = json.loads(text)
            if isinstance(data, Mapping) and data.get("type") == "run":
                new_header = RunHeader.from_dict(data)
                close_run()
                header, current, started = new_header, [], True
                continue
            snap = MemorySnapshot.from_dict(data)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            skipped += 1
            if skipped <= _WARN_LINES:
                log.warning(
                    "skipping corrupt snapshot record at %s:%d: %s",
                    source,
                    number,
                    _brief(exc),
                    extra={"sanaa_path": source, "sanaa_line": number},
                )
            continue
        if current and snap.monotonic < current[-1].monotonic:
            # The clock went backwards: another process appended to this file without a header.
            close_run()
            header, current = None, []
        started = True
        current.append(snap)
    close_run()
    if skipped > _WARN_LINES:
        log.warning("%s: %d corrupt lines skipped in all", source, skipped, extra={"sanaa_path": source})
    return SnapshotLog(tuple(runs), skipped)


def _brief(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def parse_lines(lines: Iterable[str], *, source: str = "<lines>") -> list[MemorySnapshot]:
    """Every snapshot record of a log, all runs together (see :func:`parse_log`)."""
    return parse_log(lines, source=source).snapshots


async def read_log(path: str | os.PathLike[str]) -> SnapshotLog:
    """A snapshot log read through aiofiles (see :func:`parse_log`). FileNotFoundError if it is missing.
    Cancellation discards what was read."""
    async with aiofiles.open(path, encoding="utf-8", errors="replace") as f:
        text = await f.read()
    return parse_log(text.split("\n"), source=os.fspath(path))


def load_log(path: str | os.PathLike[str]) -> SnapshotLog:
    """Blocking variant of :func:`read_log`, for scripts and tools outside an event loop."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return parse_log(text.split("\n"), source=os.fspath(path))


async def read_snapshots(path: str | os.PathLike[str]) -> list[MemorySnapshot]:
    """Every snapshot record of a log file, all runs together (see :func:`read_log` for the runs)."""
    return (await read_log(path)).snapshots


def load_snapshots(path: str | os.PathLike[str]) -> list[MemorySnapshot]:
    """Blocking variant of :func:`read_snapshots`."""
    return load_log(path).snapshots


__all__ = [
    "MemorySnapshot",
    "Run",
    "RunHeader",
    "SnapshotLog",
    "SnapshotStore",
    "TopConsumer",
    "load_log",
    "load_snapshots",
    "parse_lines",
    "parse_log",
    "read_log",
    "read_snapshots",
]
