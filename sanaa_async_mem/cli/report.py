"""``sanaa-mem report``: a snapshot log (the profiler's JSON Lines) as a self-contained HTML page with plots.

Plots are drawn by plotly (extra ``report``); its JavaScript is embedded once in the page, so the file
opens without a network. What is drawn:

* memory over time (RSS, and traced heap bytes where recorded) with the trend analyzer's fitted line and
  the band its slope's confidence interval spans around the centre of the analysed window;
* the top consumers of the last traced snapshot (size, and growth since the previous traced snapshot);
* with a demo summary (``--summary``, written by ``sanaa-mem demo``): GC pause and pool wait histograms,
  and pool use and loop lag over time.
"""

from __future__ import annotations

import html
import importlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..memory.snapshots import MemorySnapshot, load_snapshots
from ..memory.trend import TrendAnalyzer, TrendVerdict

MIB = 1048576.0


class ReportError(Exception):
    """The report cannot be made from what was given (message says why and what to do)."""


def _plotly() -> Any:
    try:
        # Imported by name: plotly ships no type information, and it is an optional extra.
        go = importlib.import_module("plotly.graph_objects")
    except ImportError as exc:
        raise ImportError(
            "the HTML report needs plotly, which is not installed: pip install 'sanaa-async-mem[report]'"
        ) from exc
    return go


def series(snaps: Sequence[MemorySnapshot]) -> tuple[str, list[float], list[float]]:
    """``(source, seconds since the first snapshot, bytes)``: traced bytes if every snapshot has them."""
    use_traced = all(s.traced is not None for s in snaps)
    t0 = snaps[0].monotonic
    ts: list[float] = []
    ys: list[float] = []
    for s in snaps:
        t = s.monotonic - t0
        if ts and t <= ts[-1]:
            continue  # the analyzer needs strictly increasing times
        ts.append(t)
        ys.append(float(s.traced if use_traced and s.traced is not None else s.rss))
    return ("traced" if use_traced else "rss"), ts, ys


def analyze(
    snaps: Sequence[MemorySnapshot], threshold: float
) -> tuple[str, list[float], list[float], TrendVerdict]:
    source, ts, ys = series(snaps)
    verdict = TrendAnalyzer(threshold=threshold, limit=None).analyze(ts, ys)
    return source, ts, ys, verdict


def _memory_figure(go: Any, snaps: Sequence[MemorySnapshot], threshold: float) -> tuple[Any, TrendVerdict]:
    source, ts, _, verdict = analyze(snaps, threshold)
    t0 = snaps[0].monotonic
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[s.monotonic - t0 for s in snaps], y=[s.rss / MIB for s in snaps], name="RSS"))
    traced = [(s.monotonic - t0, s.traced / MIB) for s in snaps if s.traced is not None]
    if traced:
        fig.add_trace(
            go.Scatter(
                x=[t for t, _ in traced], y=[v for _, v in traced], name="traced heap", mode="lines+markers"
            )
        )
    if verdict.status != "insufficient_data":
        start = verdict.change_point if verdict.change_point is not None else ts[0]
        window = [t for t in ts if t >= start] or ts
        t_last, t_mid = window[-1], (window[0] + window[-1]) / 2
        y_mid = verdict.level + verdict.slope * (t_mid - t_last)
        xs = [window[0], window[-1]]
        low = [(y_mid + verdict.slope_low * (x - t_mid)) / MIB for x in xs]
        high = [(y_mid + verdict.slope_high * (x - t_mid)) / MIB for x in xs]
        band_x = [xs[0], xs[1], xs[1], xs[0]]
        band_y = [min(low[0], high[0]), max(low[1], high[1]), min(low[1], high[1]), max(low[0], high[0])]
        fig.add_trace(
            go.Scatter(
                x=band_x,
                y=band_y,
                fill="toself",
                fillcolor="rgba(214,39,40,0.15)",
                line={"width": 0},
                name=f"slope {verdict.confidence:.1%} interval",
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[(y_mid + verdict.slope * (x - t_mid)) / MIB for x in xs],
                name=f"trend ({source}): {verdict.slope / 1024:+,.1f} KiB/s",
                line={"color": "rgb(214,39,40)", "dash": "dash"},
            )
        )
    fig.update_layout(
        title=f"Memory over time: {verdict.status}", xaxis_title="seconds", yaxis_title="MiB", height=420
    )
    return fig, verdict


def _top_figure(go: Any, snaps: Sequence[MemorySnapshot]) -> Any | None:
    last = next((s for s in reversed(snaps) if s.top), None)
    if last is None:
        return None
    top = list(reversed(last.top))  # plotly draws horizontal bars bottom-up
    fig = go.Figure()
    fig.add_trace(
        go.Bar(y=[c.location for c in top], x=[c.size / 1024 for c in top], orientation="h", name="size")
    )
    fig.add_trace(
        go.Bar(
            y=[c.location for c in top], x=[c.size_diff / 1024 for c in top], orientation="h", name="growth"
        )
    )
    fig.update_layout(
        title="Top consumers (last traced snapshot)",
        xaxis_title="KiB",
        barmode="group",
        height=120 + 40 * len(top),
    )
    return fig


def _histogram_figure(go: Any, title: str, histograms: Mapping[str, Any]) -> Any | None:
    fig = go.Figure()
    for name, h in histograms.items():
        buckets = h.get("buckets") if isinstance(h, Mapping) else None
        if buckets:
            fig.add_trace(
                go.Bar(x=[f"≤ {b * 1e3:.3g} ms" for b, _ in buckets], y=[c for _, c in buckets], name=name)
            )
    if not fig.data:
        return None
    fig.update_layout(
        title=title, xaxis_title="duration (bucket upper bound)", yaxis_title="count", height=380
    )
    return fig


def _timeline_figure(go: Any, timeline: Sequence[Mapping[str, Any]]) -> Any | None:
    if not timeline:
        return None
    make_subplots = importlib.import_module("plotly.subplots").make_subplots
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    ts = [f["t"] for f in timeline]
    fig.add_trace(go.Scatter(x=ts, y=[f.get("pool_in_use", 0) for f in timeline], name="pool in use"))
    fig.add_trace(go.Scatter(x=ts, y=[f.get("pool_waiting", 0) for f in timeline], name="pool waiters"))
    fig.add_trace(
        go.Scatter(x=ts, y=[f.get("lag_p99", 0) * 1e3 for f in timeline], name="loop lag p99 (ms)"),
        secondary_y=True,
    )
    fig.update_layout(title="Pool use and event-loop lag", xaxis_title="seconds", height=380)
    fig.update_yaxes(title_text="connections", secondary_y=False)
    fig.update_yaxes(title_text="ms", secondary_y=True)
    return fig


def build_html(
    snaps: Sequence[MemorySnapshot],
    *,
    summary: Mapping[str, Any] | None = None,
    threshold: float = 1000.0,
    title: str,
) -> str:
    """The whole page as a string. Raises ReportError when there are no snapshots, ImportError without
    plotly."""
    if not snaps:
        raise ReportError("the snapshot log holds no complete record")
    go = _plotly()
    memory, verdict = _memory_figure(go, snaps, threshold)
    figures: list[tuple[str, Any]] = [("memory", memory)]
    top = _top_figure(go, snaps)
    if top is not None:
        figures.append(("top", top))
    if summary:
        gc = summary.get("gc", {})
        pauses = {f"generation {g}": h for g, h in gc.get("pauses", {}).items()}
        for key, fig in (
            ("gc", _histogram_figure(go, "GC pauses", pauses)),
            (
                "pool",
                _histogram_figure(go, "Pool wait times", {"wait": summary.get("pool", {}).get("wait", {})}),
            ),
            ("timeline", _timeline_figure(go, summary.get("timeline", []))),
        ):
            if fig is not None:
                figures.append((key, fig))
    parts = []
    for i, (key, fig) in enumerate(figures):
        div = fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"plot-{key}")
        parts.append(f'<section class="plot" data-plot="{key}">{div}</section>')
    facts = [
        ("snapshots", f"{len(snaps)} over {snaps[-1].monotonic - snaps[0].monotonic:,.1f} s"),
        ("verdict", f"{verdict.status}: {verdict.reason}"),
        ("slope", f"{verdict.slope:,.0f} B/s ({verdict.slope_low:,.0f} .. {verdict.slope_high:,.0f})"),
        ("leak threshold", f"{threshold:,.0f} B/s"),
    ]
    if summary and "leak_detected" in summary:
        facts.append(("profiler's leak alert", "yes" if summary["leak_detected"] else "no"))
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}th{text-align:left;padding-right:1em}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table id='facts'>{rows}</table>{''.join(parts)}</body></html>\n"
    )


def render_report(
    log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    summary: Mapping[str, Any] | None = None,
    threshold: float | None = None,
) -> str:
    """Write the HTML report of ``log`` to ``out``; returns ``out`` as a string.

    The leak threshold defaults to the summary's (a demo run's) or 1000 B/s. Raises FileNotFoundError /
    OSError, ReportError (no records) or ImportError (no plotly).
    """
    snaps = load_snapshots(log)
    if threshold is None:
        threshold = 1000.0
        if summary:
            threshold = float(
                summary.get("memory", {}).get("thresholds", {}).get("leak_bytes_per_second", threshold)
            )
    page = build_html(
        snaps, summary=summary, threshold=threshold, title=f"sanaa-mem report: {Path(log).name}"
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # as ``demo --report`` does
    Path(out).write_text(page, encoding="utf-8")
    return str(out)


def load_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A demo summary file (``*.summary.json``). Raises OSError, or ReportError if it is not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path} does not hold a JSON object")
    return data
