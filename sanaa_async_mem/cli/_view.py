"""The live view of ``demo``: a rich panel updated in place on a terminal, plain lines otherwise.

A frame is a plain dict (see ``demo._frame``); keys a command does not have are
simply not shown. ``rich`` is optional (extra ``cli``): without it, or without a terminal (CI, pipes), the
view prints one plain line about every ``plain_every`` seconds.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, TextIO


class View(Protocol):
    def start(self, target: str, detail: str) -> None: ...
    def update(self, frame: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1048576:,.1f} MiB"


def ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def trend_text(frame: dict[str, Any]) -> str:
    status = frame.get("trend_status", "insufficient_data")
    slope = frame.get("trend_slope")
    text = "collecting data" if status == "insufficient_data" else str(status)
    if slope is not None:
        text += f" ({slope / 1024:+,.1f} KiB/s)"
    if frame.get("leak_alert"):
        text += "  LEAK ALERT"
    return text


def rows(frame: dict[str, Any]) -> list[tuple[str, str]]:
    """The view's lines as (label, value), in display order."""
    out: list[tuple[str, str]] = []
    if "requests" in frame:
        out.append(
            (
                "requests",
                f"{frame['requests']:,}  ({frame['rps']:,.0f}/s, p99 {ms(frame['latency_p99'])}, "
                f"errors {frame['errors']})",
            )
        )
    if "pool_in_use" in frame:
        out.append(
            (
                "pool",
                f"{frame['pool_in_use']}/{frame['pool_size']} in use (max {frame['pool_max']}), "
                f"{frame['pool_waiting']} waiting, wait p99 {ms(frame['pool_wait_p99'])}",
            )
        )
    memory = f"RSS {mib(frame.get('rss'))}"
    if frame.get("traced") is not None:
        memory += f", traced {mib(frame['traced'])}"
    out.append(("memory", memory))
    out.append(("trend", trend_text(frame)))
    if "gc_full_collections" in frame:
        out.append(
            (
                "GC",
                f"{frame['gc_full_collections']} full ({frame['gc_mode']}), longest pause "
                f"{ms(frame['gc_max_pause'])}, total {ms(frame['gc_total_pause'])}",
            )
        )
    if "lag_p99" in frame:
        out.append(
            (
                "loop lag",
                f"p50 {ms(frame['lag_p50'])}, p99 {ms(frame['lag_p99'])}, max {ms(frame['lag_max'])}",
            )
        )
    return out


def plain_line(frame: dict[str, Any]) -> str:
    parts = [f"t={frame['t']:.1f}s"]
    if "requests" in frame:
        parts.append(f"req={frame['requests']} ({frame['rps']:.0f}/s)")
    if "pool_in_use" in frame:
        parts.append(f"pool={frame['pool_in_use']}/{frame['pool_size']} waiting={frame['pool_waiting']}")
    parts.append(f"rss={mib(frame.get('rss'))}")
    parts.append(f"trend={trend_text(frame)}")
    if "gc_full_collections" in frame:
        parts.append(f"gc_full={frame['gc_full_collections']} gc_max={ms(frame['gc_max_pause'])}")
    if "lag_p99" in frame:
        parts.append(f"lag_p99={ms(frame['lag_p99'])}")
    return "  ".join(parts)


class _Silent:
    def start(self, target: str, detail: str) -> None:
        pass

    def update(self, frame: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class _Plain:
    def __init__(self, out: TextIO, every: float) -> None:
        self._out = out
        self._every = every
        self._last = -float("inf")

    def start(self, target: str, detail: str) -> None:
        print(f"watching {target} ({detail})", file=self._out, flush=True)

    def update(self, frame: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            print(plain_line(frame), file=self._out, flush=True)

    def close(self) -> None:
        pass


class _Live:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=out)
        self._live = Live(console=self._console, auto_refresh=False, transient=False)
        self._title = "sanaa-mem"

    def start(self, target: str, detail: str) -> None:
        self._title = f"sanaa-mem: {target} ({detail})"
        self._live.start()

    def update(self, frame: dict[str, Any]) -> None:
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right")
        table.add_column()
        for label, value in rows(frame):
            style = "bold red" if label == "trend" and frame.get("leak_alert") else ""
            table.add_row(label, f"[{style}]{value}[/]" if style else value)
        elapsed = f"{frame['t']:.0f} s"
        if frame.get("duration"):
            elapsed += f" of {frame['duration']:.0f} s"
        self._live.update(Panel(table, title=self._title, subtitle=elapsed), refresh=True)

    def close(self) -> None:
        self._live.stop()


def make_view(mode: str, out: TextIO, *, quiet: bool = False, plain_every: float = 2.0) -> View:
    """``mode``: ``auto`` (live on a terminal with rich installed, else plain), ``live``, ``plain``, ``none``.

    ``quiet`` (``--json``: stdout is for the result only) shows nothing. ``live`` without rich falls back
    to plain lines.
    """
    if quiet or mode == "none":
        return _Silent()
    if mode in ("auto", "live") and (mode == "live" or out.isatty()):
        try:
            return _Live(out)
        except ImportError:
            pass
    return _Plain(out, plain_every)
