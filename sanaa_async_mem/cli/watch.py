"""``sanaa-mem watch``: sample another process's memory with psutil and judge its trend.

The target is an existing process (``--pid``) or a command started for the occasion (``-- COMMAND ...``).
Watching ends after ``--duration``, when the process exits on its own, or on Ctrl-C (or SIGTERM); a command
we started is then ended too (SIGTERM, then SIGKILL after a grace period), so nothing outlives the watch.
The samples go to the trend analyzer (time axis: seconds since the first sample), and optionally to a
snapshot log in the profiler's JSON Lines format, which ``sanaa-mem report`` turns into a page.

The loop is synchronous on purpose: it samples one process, with nothing to overlap, and a blocking
``sleep`` is where Ctrl-C lands cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import psutil

from ..memory.snapshots import MemorySnapshot
from ..memory.trend import TrendAnalyzer, TrendVerdict
from ._view import make_view

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 3
EXIT_COMMAND_FAILED = 4

# Seconds a started command gets to exit after SIGTERM before it is killed.
_TERMINATE_GRACE = 5.0


class WatchError(Exception):
    """The watch cannot run: the process does not exist, cannot be read, or the command cannot start."""


@dataclasses.dataclass(frozen=True, slots=True)
class WatchOptions:
    """What ``sanaa-mem watch`` was asked. Exactly one of ``pid`` and ``command`` is set.

    ``interval``/``duration`` in seconds (``duration=None``: until the process exits or Ctrl-C);
    ``threshold`` in bytes per second; ``warmup`` seconds at the start not judged (a start-up's growth).
    """

    pid: int | None = None
    command: tuple[str, ...] = ()
    interval: float = 1.0
    duration: float | None = None
    threshold: float = 1000.0
    warmup: float = 0.0
    uss: bool = False
    log: Path | None = None
    view: str = "auto"
    as_json: bool = False
    fail_on_leak: bool = False


class _Stop(Exception):
    """Raised by the SIGTERM handler to end the watch like Ctrl-C does."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM (a CI timeout, ``kill``) ends the watch cleanly, so a started command does not outlive it."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start(command: Sequence[str], as_json: bool) -> subprocess.Popen[bytes]:
    try:
        # With --json, stdout carries the result alone: the command's output goes to stderr.
        return subprocess.Popen(list(command), stdout=sys.stderr if as_json else None)
    except FileNotFoundError:
        raise WatchError(f"cannot start {command[0]!r}: command not found") from None
    except PermissionError:
        raise WatchError(f"cannot start {command[0]!r}: permission denied") from None
    except OSError as exc:
        raise WatchError(f"cannot start {command[0]!r}: {exc.strerror or exc}") from None


def _end(child: subprocess.Popen[bytes]) -> int:
    """Stop a command we started (SIGTERM, then SIGKILL after a grace period); its exit code."""
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            return child.wait(_TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
    return child.wait()


def _open_process(pid: int) -> psutil.Process:
    try:
        process = psutil.Process(pid)
        process.memory_info()  # fails now, with a clear message, if it cannot be read
    except psutil.NoSuchProcess:
        raise WatchError(f"no process with PID {pid}") from None
    except psutil.AccessDenied:
        raise WatchError(
            f"cannot read the memory of PID {pid}: access denied (run as its user, or as root)"
        ) from None
    return process


def _describe(process: psutil.Process) -> str:
    try:
        cmdline = process.cmdline()
    except (psutil.Error, OSError):
        cmdline = []
    return _one_line(shlex.join(cmdline) if cmdline else _name(process))


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _name(process: psutil.Process) -> str:
    try:
        return process.name()
    except (psutil.Error, OSError):
        return "?"


def _measure(process: psutil.Process, uss: bool) -> MemorySnapshot:
    """One sample. Raises psutil.NoSuchProcess once the process is gone (a zombie counts as gone: its memory
    reads as zero), AccessDenied if it cannot be read."""
    if process.status() == psutil.STATUS_ZOMBIE:
        raise psutil.NoSuchProcess(process.pid)
    if uss:
        full = process.memory_full_info()
        rss, vms, uss_bytes = int(full.rss), int(full.vms), int(full.uss)
    else:
        mem = process.memory_info()
        rss, vms, uss_bytes = int(mem.rss), int(mem.vms), None
    vm = psutil.virtual_memory()
    return MemorySnapshot(
        timestamp=time.time(),
        monotonic=time.monotonic(),
        rss=rss,
        vms=vms,
        uss=uss_bytes,
        system_total=int(vm.total),
        system_available=int(vm.available),
        system_percent=float(vm.percent),
    )


class _Watch:
    """The samples of one watch and the verdict over them."""

    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        # The evidence a verdict needs is counted in samples here (a watch of a few seconds at 0.1 s is
        # judged like one of minutes at 1 s), up to what a service's profiler needs.
        step = options.interval
        self.analyzer = TrendAnalyzer(
            threshold=options.threshold,
            limit=None,
            min_span=min(60.0, 20.0 * step),
            min_leak_span=min(90.0, 30.0 * step),
        )
        self._last: TrendVerdict | None = None
        self.snaps: list[MemorySnapshot] = []
        self.times: list[float] = []
        self.values: list[float] = []
        self.start = time.monotonic()

    def add(self, snap: MemorySnapshot) -> None:
        self.snaps.append(snap)
        t = snap.monotonic - self.start
        if t < self.options.warmup or (self.times and t <= self.times[-1]):
            return  # start-up growth is not judged; the analyzer needs strictly increasing times
        self.times.append(t)
        value = snap.uss if self.options.uss and snap.uss is not None else snap.rss
        self.values.append(float(value))

    def verdict(self) -> TrendVerdict:
        # Each judgement sees the previous one: a leak once called stays called until the growth stops.
        self._last = self.analyzer.analyze(self.times, self.values, previous=self._last)
        return self._last

    def frame(self, verdict: TrendVerdict) -> dict[str, Any]:
        last = self.snaps[-1]
        return {
            "t": last.monotonic - self.start,
            "duration": self.options.duration,
            "rss": last.rss,
            "trend": verdict.as_dict(),
            "leak_alert": verdict.is_leak,
        }


def _sample_loop(
    watch: _Watch,
    process: psutil.Process,
    child: subprocess.Popen[bytes] | None,
    log: TextIO | None,
    view: Any,
) -> str:
    """Sample until the duration ends, the process exits, or Ctrl-C/SIGTERM; returns why it ended."""
    options = watch.options
    live = not (options.as_json or options.view == "none")
    deadline = None if options.duration is None else watch.start + options.duration
    next_at = watch.start
    try:
        while True:
            if child is not None and child.poll() is not None:
                return "exited"
            try:
                snap = _measure(process, options.uss)
            except psutil.NoSuchProcess:
                return "exited"
            except psutil.AccessDenied:
                raise WatchError(f"cannot read the memory of PID {process.pid}: access denied") from None
            watch.add(snap)
            if log is not None:
                log.write(snap.to_json() + "\n")
                log.flush()  # a killed watch keeps every line written so far
            if live:  # the analysis costs O(samples): only when someone looks at it
                view.update(watch.frame(watch.verdict()))
            next_at += options.interval
            now = time.monotonic()
            if deadline is not None and next_at > deadline:
                if now < deadline:
                    time.sleep(deadline - now)
                return "duration"
            if next_at > now:
                time.sleep(next_at - now)
            else:
                next_at = now  # sampling fell behind (a loaded machine): do not try to catch up
    except (KeyboardInterrupt, _Stop):
        return "interrupted"


def watch(options: WatchOptions, out: TextIO | None = None) -> dict[str, Any]:
    """Run one watch and return its result (plain JSON types). Raises WatchError if it cannot run and
    OSError if the log cannot be written. A command we started has ended when this returns."""
    out = sys.stdout if out is None else out
    child: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    with contextlib.ExitStack() as stack:
        log: TextIO | None = None
        if options.log is not None:
            options.log.parent.mkdir(parents=True, exist_ok=True)
            log = stack.enter_context(options.log.open("w", encoding="utf-8", newline="\n"))
        with _sigterm_stops():
            if options.command:
                child = _start(options.command, options.as_json)
                pid = child.pid
            else:
                assert options.pid is not None
                pid = options.pid
            try:
                # A command we started is ours even as a zombie: its early exit is a result, not an error.
                process = psutil.Process(pid) if child is not None else _open_process(pid)
                shown = _one_line(shlex.join(options.command)) if options.command else _describe(process)
                target = f"PID {pid}: {shown}"
                view = make_view(
                    options.view, out, quiet=options.as_json, plain_every=max(options.interval, 1.0)
                )
                watched = _Watch(options)
                view.start(target, f"{'USS' if options.uss else 'RSS'} every {options.interval:g} s")
                try:
                    ended = _sample_loop(watched, process, child, log, view)
                finally:
                    view.close()
            finally:
                if child is not None:
                    # Ended while a SIGTERM or Ctrl-C may still arrive: the command must not be left behind.
                    exit_code = _end(child)
    verdict = watched.verdict()
    snaps = watched.snaps
    rss = [s.rss for s in snaps]
    return {
        "pid": pid,
        "command": list(options.command) or None,
        "target": target,
        "ended": ended,
        "exit_code": exit_code,
        "samples": len(snaps),
        "seconds": (snaps[-1].monotonic - snaps[0].monotonic) if snaps else 0.0,
        "interval": options.interval,
        "source": "uss" if options.uss else "rss",
        "memory": {
            "first": rss[0] if rss else None,
            "last": rss[-1] if rss else None,
            "max": max(rss) if rss else None,
            "uss_last": snaps[-1].uss if snaps else None,
        },
        "threshold": options.threshold,
        "warmup": options.warmup,
        "trend": verdict.as_dict(),
        "leak_detected": verdict.is_leak,
        # The command ended by itself with a failure (not because the watch ended it).
        "command_failed": ended == "exited" and exit_code not in (None, 0),
        "log": None if options.log is None else str(options.log),
    }


def run_watch(options: WatchOptions, out: TextIO | None = None) -> int:
    """The ``watch`` command: run, print the result, return the exit code (1: leak with ``fail_on_leak``)."""
    out = sys.stdout if out is None else out
    try:
        result = watch(options, out)
    except WatchError as exc:
        print(f"sanaa-mem watch: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the log
        where = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        print(f"sanaa-mem watch: cannot write the log: {where}", file=sys.stderr)
        return EXIT_ERROR
    if options.as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        _print_summary(result, out)
    if options.fail_on_leak and result["leak_detected"]:
        return EXIT_FAILED
    if result["command_failed"]:
        print(
            f"sanaa-mem watch: the command failed: it exited with code {result['exit_code']} "
            f"after {result['seconds']:.1f} s",
            file=sys.stderr,
        )
        return EXIT_COMMAND_FAILED
    return EXIT_OK


def _print_summary(result: dict[str, Any], out: TextIO) -> None:
    trend = result["trend"]
    ended = {
        "duration": "the duration ended",
        "exited": "the process exited"
        + ("" if result["exit_code"] is None else f" with code {result['exit_code']}"),
        "interrupted": "interrupted",
    }[result["ended"]]
    mem = result["memory"]

    def mib(n: int | None) -> str:
        return "-" if n is None else f"{n / 1048576:,.1f} MiB"

    print(
        f"{result['target']}: {result['samples']} samples over {result['seconds']:.1f} s ({ended})", file=out
    )
    print(f"RSS: first {mib(mem['first'])}, last {mib(mem['last'])}, max {mib(mem['max'])}", file=out)
    print(f"trend ({result['source']}): {trend['status']}: {trend['reason']}", file=out)
    if result["leak_detected"]:
        print(f"LEAK: growth above {result['threshold']:g} B/s", file=out)
    if result["log"] is not None:
        print(f"log: {result['log']}  (sanaa-mem report {shlex.quote(result['log'])})", file=out)


__all__ = ["WatchError", "WatchOptions", "run_watch", "watch"]
