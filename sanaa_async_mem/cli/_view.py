"""The live view of ``demo`` and ``watch``: a rich panel updated in place on a terminal, else plain lines.

A frame is a plain dict (see ``demo._frame`` and ``watch``); keys a command does not have are simply not
shown. ``rich`` is optional (extra ``cli``): without it, or without a terminal (CI, pipes), the view prints
one plain line about every ``plain_every`` seconds. The panel keeps a short history of RSS and of the
request rate and draws them as sparklines; the trend line shows the verdict in words with the measured
rate, the same verdict the summary, the report and the metrics show.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Protocol, TextIO

from ._format import rate

__all__ = ["View", "make_view", "plain_line", "rows", "sparkline", "trend_text"]

# The panel's width: enough for every line, never the whole width of a wide terminal.
PANEL_WIDTH = 96
# Points of history the sparklines show (one per frame: about a minute at two frames a second).
HISTORY = 60
_BARS = "▁▂▃▄▅▆▇█"


class View(Protocol):
    def start(self, target: str, detail: str) -> None: ...
    def update(self, frame: dict[str, Any], *, final: bool = False) -> None: ...
    def close(self) -> None: ...


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 1048576:,.1f} MiB"


def ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f} ms"


def trend_text(frame: dict[str, Any]) -> str:
    """The verdict in words, with the measured rate when there is one (from ``frame["trend"]``, a
    ``TrendVerdict.as_dict()``)."""
    trend = frame.get("trend") or {}
    label = trend.get("label") or _label(trend.get("status", "insufficient_data"))
    text = str(label)
    status = trend.get("status")
    if status in ("collecting", "insufficient_data"):
        wait = trend.get("seconds_to_verdict")
        if wait:
            text += f" (verdict in about {wait:.0f} s)"
    elif trend.get("slope") is not None:
        text += f" ({rate(float(trend['slope']))})"
    if frame.get("leak_alert"):
        text += "  LEAK ALERT"
    return text


def _label(status: str) -> str:
    return {
        "insufficient_data": "collecting data",
        "collecting": "collecting data",
        "stable": "no growth",
        "no_growth": "no growth",
        "growing": "growing below the threshold",
        "warming_up": "warming up",
        "cycling": "cache cycling",
        "leak": "leak",
    }.get(status, status)


def sparkline(values: list[float]) -> str:
    """Unicode block characters for ``values`` scaled to their own range (flat when they do not vary)."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low <= 0:
        return _BARS[0] * len(values)
    scale = (len(_BARS) - 1) / (high - low)
    return "".join(_BARS[round((v - low) * scale)] for v in values)


def rows(frame: dict[str, Any], history: dict[str, list[float]] | None = None) -> list[tuple[str, str]]:
    """The view's lines as (label, value), in display order."""
    out: list[tuple[str, str]] = []
    if "requests" in frame:
        line = (
            f"{frame['requests']:,}  ({frame['rps']:,.0f}/s, p99 {ms(frame['latency_p99'])}, "
            f"errors {frame['errors']})"
        )
        if history and history.get("rps"):
            line += f"  {sparkline(history['rps'])}"
        out.append(("requests", line))
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
    if history and history.get("rss"):
        memory += f"  {sparkline(history['rss'])}"
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
        lag = f"p50 {ms(frame['lag_p50'])}, p99 {ms(frame['lag_p99'])}, max {ms(frame['lag_max'])}"
        if frame.get("loop_utilization") is not None:
            lag += f"; loop busy {frame['loop_utilization']:.0%}"
        out.append(("loop lag", lag))
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
    if frame.get("loop_utilization") is not None:
        parts.append(f"loop_busy={frame['loop_utilization']:.0%}")
    return "  ".join(parts)


def _final(frame: dict[str, Any]) -> dict[str, Any]:
    # The last frame comes right after the one before it: its instant rate means nothing. Show the run's.
    if "requests" in frame and frame.get("t"):
        frame = {**frame, "rps": frame["requests"] / frame["t"]}
    return frame


class _Silent:
    def start(self, target: str, detail: str) -> None:
        pass

    def update(self, frame: dict[str, Any], *, final: bool = False) -> None:
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

    def update(self, frame: dict[str, Any], *, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self._last >= self._every:
            self._last = now
            print(plain_line(_final(frame) if final else frame), file=self._out, flush=True)

    def close(self) -> None:
        pass


class _Live:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._out = out
        self._console = Console(file=out)
        # redirect_* off: our own prints (the summary) come after close(), never inside the panel.
        self._live = Live(
            console=self._console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._title = "sanaa-mem"
        self._history: dict[str, collections.deque[float]] = {
            "rss": collections.deque(maxlen=HISTORY),
            "rps": collections.deque(maxlen=HISTORY),
        }
        self._started = False

    def start(self, target: str, detail: str) -> None:
        self._title = f"sanaa-mem: {target} ({detail})"
        self._live.start()
        self._started = True

    def update(self, frame: dict[str, Any], *, final: bool = False) -> None:
        from rich.panel import Panel
        from rich.table import Table

        if final:
            frame = _final(frame)
        else:
            if frame.get("rss") is not None:
                self._history["rss"].append(float(frame["rss"]))
            if "rps" in frame:
                self._history["rps"].append(float(frame["rps"]))
        history = {k: list(v) for k, v in self._history.items()}
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right", no_wrap=True)
        table.add_column()
        for label, value in rows(frame, history):
            style = "bold red" if label == "trend" and frame.get("leak_alert") else ""
            table.add_row(label, f"[{style}]{value}[/]" if style else value)
        elapsed = f"{frame['t']:.0f} s"
        if frame.get("duration"):
            elapsed += f" of {frame['duration']:.0f} s"
        width = min(PANEL_WIDTH, self._console.width)
        self._live.update(Panel(table, title=self._title, subtitle=elapsed, width=width), refresh=True)

    def close(self) -> None:
        if not self._started:
            return
        self._started = False
        self._live.stop()
        if not self._console.is_terminal:
            # Without a terminal the last frame ends without a newline: keep what follows off its border.
            self._out.write("\n")
            self._out.flush()


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
