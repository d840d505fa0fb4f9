"""``sanaa-mem top URL``: a live view of a running service, read from its ``/memory`` endpoint.

The endpoint is the JSON of :meth:`MemoryOptimizer.get_memory_status` (what the example apps serve at
``/memory``). Every ``--interval`` seconds the view is redrawn in place (rich ``Live``; plain lines without
a terminal or without rich): each pool with its size, use, waiters, counters and who holds its objects
(task, purpose, for how long, acquired where), then the memory verdict, GC, loop lag and utilization.

``--json`` prints one reading (the endpoint's document, as it came) and exits. A URL with no path reads
``/memory``. Errors are one line on stderr, never a traceback: the first read failing (connection refused,
timeout, an HTTP error, a body that is not the expected JSON) exits with code 3; once the view runs, a
failed read is shown in the view and retried at the next interval. ``--duration`` ends the view after
that many seconds; Ctrl-C ends it too (exit code 0 either way).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TextIO

__all__ = ["TopError", "TopOptions", "fetch", "memory_url", "render_lines", "run_top"]

EXIT_OK = 0
EXIT_ERROR = 3

# Holders listed per pool (the longest-held first); the rest are counted.
MAX_HOLDERS = 8


class TopError(Exception):
    """A read that failed, in one line (what and why)."""


@dataclasses.dataclass(frozen=True, slots=True)
class TopOptions:
    url: str
    interval: float = 1.0
    duration: float | None = None
    timeout: float = 5.0
    as_json: bool = False
    view: str = "auto"  # auto, live, plain


def memory_url(url: str) -> str:
    """``url`` with ``http://`` when no scheme is given, and ``/memory`` when it has no path."""
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise TopError(f"not an http(s) URL: {url!r}")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/memory")
    return urllib.parse.urlunsplit(parts)


def fetch(url: str, timeout: float) -> dict[str, Any]:
    """One reading of the endpoint; TopError (one line) for anything but a JSON object with ``pools``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise TopError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        raise TopError(f"cannot reach {url}: {getattr(reason, 'strerror', None) or reason}") from None
    except (TimeoutError, OSError) as exc:
        raise TopError(f"cannot reach {url}: {exc.strerror or exc or type(exc).__name__}") from None
    try:
        doc = json.loads(body)
    except ValueError:
        raise TopError(f"{url}: the answer is not JSON (is this a /memory endpoint?)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("pools"), dict):
        raise TopError(f"{url}: the answer has no 'pools' (is this a sanaa /memory endpoint?)")
    return doc


def _ms(seconds: Any) -> str:
    return "-" if not isinstance(seconds, int | float) else f"{seconds * 1e3:.2f} ms"


def _held(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _where(where: str) -> str:
    # The last two path parts are enough to find the line; the whole path does not fit a terminal.
    path, _, line = where.rpartition(":")
    short = "/".join(path.split("/")[-2:]) if path else where
    return f"{short}:{line}" if path else where


def render_lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The view as ``(label, text)`` rows: one per pool, one per holder, then memory, GC, loop."""
    rows: list[tuple[str, str]] = []
    for name, pool in sorted(doc.get("pools", {}).items()):
        if not isinstance(pool, dict):
            continue
        if "max_size" not in pool:  # a keyed MemoryPool: no holders or waiters
            rows.append((f"pool {name}", f"object pool, {pool.get('size', '?')} idle"))
            continue
        closed_by = {k: v for k, v in (pool.get("closed_by") or {}).items() if v}
        closed = ", ".join(f"{k} {v}" for k, v in closed_by.items()) or "none"
        wait = pool.get("wait") or {}
        rows.append(
            (
                f"pool {name}",
                f"{pool.get('in_use', 0)} in use, {pool.get('idle', 0)} idle, size {pool.get('size', 0)}/"
                f"{pool.get('max_size', '?')}, {pool.get('waiting', 0)} waiting; acquired "
                f"{pool.get('acquired', 0)}, waited {pool.get('waited', 0)} (p99 {_ms(wait.get('p99'))}), "
                f"timeouts {pool.get('timeouts', 0)}, cancelled {pool.get('cancelled', 0)}; closed: {closed}",
            )
        )
        holders = pool.get("holders") or []
        for holder in holders[:MAX_HOLDERS]:
            purpose = holder.get("purpose") or "-"
            rows.append(
                (
                    "  holder",
                    f"{holder.get('task', '?')} [{purpose}] for {_held(float(holder.get('held_for', 0.0)))} "
                    f"at {_where(str(holder.get('where', '?')))}"
                    + (
                        f" (acquired at {_where(str(holder['acquired_at']))})"
                        if holder.get("acquired_at")
                        else ""
                    ),
                )
            )
        if len(holders) > MAX_HOLDERS:
            rows.append(("  holder", f"... and {len(holders) - MAX_HOLDERS} more"))
    trend = doc.get("trend") or {}
    memory = doc.get("process_memory") or {}
    rss = memory.get("rss")
    rss_text = f"RSS {rss / 1048576:,.1f} MiB" if isinstance(rss, int | float) else "RSS -"
    label = trend.get("label") or trend.get("status") or "-"
    alerts = doc.get("alerts") or []
    rows.append(("memory", f"{rss_text}; trend: {label}" + (f"; {len(alerts)} alert(s)" if alerts else "")))
    gc = doc.get("gc") or {}
    pauses = gc.get("pauses_seconds") or {}
    longest = max((p.get("max", 0.0) for p in pauses.values() if isinstance(p, dict)), default=None)
    counts = gc.get("counts")
    rows.append(("GC", f"counts {counts if counts is not None else '-'}, longest pause {_ms(longest)}"))
    lag = doc.get("loop_lag") or {}
    util = lag.get("utilization")
    util_text = f"{util:.0%} busy ({lag.get('utilization_method')})" if isinstance(util, int | float) else "-"
    rows.append(
        ("loop", f"lag p50 {_ms(lag.get('p50'))}, p99 {_ms(lag.get('p99'))}; utilization {util_text}")
    )
    return rows


class _PlainView:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, rows: list[tuple[str, str]], title: str) -> None:
        print(f"--- {title}", file=self._out)
        for label, text in rows:
            print(f"{label}: {text}", file=self._out)
        self._out.flush()

    def close(self) -> None:
        pass


class _LiveView:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(file=out)
        self._live = Live(console=self._console, auto_refresh=False, redirect_stdout=False)
        self._live.start()

    def show(self, rows: list[tuple[str, str]], title: str) -> None:
        from rich.markup import escape
        from rich.panel import Panel
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", justify="right", no_wrap=True)
        table.add_column()
        for label, text in rows:
            table.add_row(escape(label), escape(text))
        self._live.update(Panel(table, title=escape(title)), refresh=True)

    def close(self) -> None:
        self._live.stop()


def _make_view(mode: str, out: TextIO) -> _PlainView | _LiveView:
    if mode == "live" or (mode == "auto" and out.isatty()):
        try:
            return _LiveView(out)
        except ImportError:
            pass
    return _PlainView(out)


def run_top(options: TopOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the command (see the module's docs); returns the exit code."""
    try:
        url = memory_url(options.url)
        doc = fetch(url, options.timeout)
    except TopError as exc:
        print(f"sanaa-mem top: {exc}", file=err)
        return EXIT_ERROR
    if options.as_json:
        print(json.dumps(doc), file=out)
        return EXIT_OK
    view = _make_view(options.view, out)
    started = time.monotonic()
    problem: str | None = None
    try:
        while True:
            stamp = time.strftime("%H:%M:%S")
            title = f"sanaa-mem top {url} at {stamp}"
            rows = render_lines(doc)
            if problem is not None:
                rows.insert(0, ("unreachable", f"{problem} (showing the last reading; retrying)"))
            view.show(rows, title)
            elapsed = time.monotonic() - started
            if options.duration is not None and elapsed + options.interval > options.duration:
                break
            time.sleep(options.interval)
            try:
                doc = fetch(url, options.timeout)
                problem = None
            except TopError as exc:
                problem = str(exc)
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
    return EXIT_OK
