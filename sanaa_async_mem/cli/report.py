"""``sanaa-mem report``: a snapshot log (the profiler's JSON Lines) as a self-contained HTML page with plots.

What the page says is what the run saw. A log written by the profiler records, in its run header, the
settings its verdicts were made with (leak threshold, intervals, analyzer options), and, in every record,
the samples taken since the previous one and the verdict at that moment. So the report shows the run's own
last verdict ("as recorded by the run"), with the threshold it used, and says so; only when asked for
another threshold (``--threshold``), or for a log without recorded verdicts (older files, other writers),
does it judge the samples itself, with the run's analyzer settings, and says that instead.

Plots are drawn by plotly (extra ``report``); its JavaScript is embedded once in the page, so the file opens
without a network. What is drawn:

* memory over time, in seconds since the run started (wall-clock start time and host in the header): RSS on
  the left axis and, where recorded, the traced heap on an axis of its own on the right (a few MiB of heap
  would be invisible on the RSS axis), with the trend's fitted line and the band its slope's confidence
  interval spans. Axes never stretch a small change into a cliff: each spans at least a tenth of its level;
* the lines whose memory grew while a leak was suspected (the evidence), as a table with their source text
  and growth per minute, and as bars;
* with a demo summary (``--summary``, written by ``sanaa-mem demo``): GC pause and pool wait histograms,
  and pool use and loop lag over time.

A log with several runs (two processes appended to one file) is reported on its newest run; the page says
how many runs the file holds. Lines that are not valid records are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import importlib
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..memory.snapshots import MemorySnapshot, Run, SnapshotLog, TopConsumer, load_log
from ..memory.trend import TrendAnalyzer, TrendVerdict
from ._format import duration, rate, size

MIB = 1048576.0
DEFAULT_THRESHOLD = 1000.0
# An axis spans at least this share of its largest value (and at least _MIN_SPAN bytes).
_MIN_SPAN_SHARE = 0.1
_MIN_SPAN = 4 * MIB


class ReportError(Exception):
    """The report cannot be made from what was given (message says why and what to do)."""


class SummaryError(ReportError):
    """A summary file has the wrong shape (a usage error: exit code 2)."""


def _plotly() -> Any:
    try:
        # Imported by name: plotly ships no type information, and it is an optional extra.
        go = importlib.import_module("plotly.graph_objects")
    except ImportError as exc:
        raise ImportError(
            "the HTML report needs plotly, which is not installed: pip install 'sanaa-async-mem[report]'"
        ) from exc
    return go


# --- what the report is about --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """The run's samples on a time axis in seconds since its start: RSS, and traced bytes where recorded."""

    t0: float
    times: list[float]
    rss: list[float]
    traced: list[tuple[float, float]]


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """Everything the page and the command's output say about one run."""

    log: SnapshotLog
    run: Run
    series: Series
    threshold: float
    threshold_source: str
    verdict: dict[str, Any]
    verdict_source: str
    evidence: tuple[TopConsumer, ...]

    @property
    def snapshots(self) -> tuple[MemorySnapshot, ...]:
        return self.run.snapshots


def series(run: Run) -> Series:
    """Every sample of a run (the cheap samples between records, and the records themselves), in order."""
    points: list[tuple[float, int, int | None]] = []
    for snap in run.snapshots:
        points.extend(snap.samples)
        points.append((snap.monotonic, snap.rss, snap.traced))
    points.sort(key=lambda p: p[0])
    t0 = run.header.monotonic if run.header is not None else (points[0][0] if points else 0.0)
    times: list[float] = []
    rss: list[float] = []
    traced: list[tuple[float, float]] = []
    for t, r, tr in points:
        rel = t - t0
        if times and rel <= times[-1]:
            continue  # the analyzer needs strictly increasing times
        times.append(rel)
        rss.append(float(r))
        if tr is not None:
            traced.append((rel, float(tr)))
    return Series(t0, times, rss, traced)


def _analyzer(run: Run, threshold: float, times: list[float] | None = None) -> TrendAnalyzer:
    """The analyzer the run used (from its header), with ``threshold``. A log without one (written by an
    older version, or by hand) is judged on its own sampling interval's scale, as ``sanaa-mem watch`` is:
    a verdict on 20 samples, a leak on 30."""
    options: dict[str, Any] = {}
    if run.header is not None:
        recorded = run.header.settings.get("analyzer")
        if isinstance(recorded, Mapping):
            known = {f.name for f in dataclasses.fields(TrendAnalyzer)}
            options = {k: v for k, v in recorded.items() if k in known}
    if not options and times is not None and len(times) >= 2:
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        step = gaps[len(gaps) // 2]
        options = {"min_span": min(60.0, 20.0 * step), "min_leak_span": min(90.0, 30.0 * step)}
    options["threshold"] = threshold
    options["limit"] = None
    try:
        return TrendAnalyzer(**options)
    except (TypeError, ValueError):
        return TrendAnalyzer(threshold=threshold)


def judge(run: Run, threshold: float) -> tuple[str, TrendVerdict]:
    """``(source, verdict)``: the run's samples judged with its analyzer settings and ``threshold`` (traced
    bytes when every sample has them, else RSS)."""
    s = series(run)
    if s.traced and len(s.traced) == len(s.times):
        times = [t for t, _ in s.traced]
        return "traced", _analyzer(run, threshold, times).analyze(times, [v for _, v in s.traced])
    return "rss", _analyzer(run, threshold, s.times).analyze(s.times, s.rss)


def prepare(
    log: SnapshotLog, *, threshold: float | None = None, summary: Mapping[str, Any] | None = None
) -> Report:
    """What to report about ``log``'s newest run. Raises ReportError if it holds no snapshot."""
    run = log.last_run
    if run is None:
        raise ReportError("the snapshot log holds no complete record")
    recorded_threshold: float | None = None
    if run.header is not None:
        value = run.header.settings.get("leak_threshold")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            recorded_threshold = float(value)
    if threshold is not None:
        used, source = threshold, "--threshold"
    elif recorded_threshold is not None:
        used, source = recorded_threshold, "the run's settings (recorded in the log)"
    elif summary is not None and _summary_threshold(summary) is not None:
        used, source = float(_summary_threshold(summary) or 0.0), "the demo summary"
    else:
        used, source = DEFAULT_THRESHOLD, "the default (MEMORY_LEAK_THRESHOLD's)"
    last_recorded = next((s.verdict for s in reversed(run.snapshots) if s.verdict is not None), None)
    if last_recorded is not None and (threshold is None or threshold == recorded_threshold):
        verdict = dict(last_recorded)
        verdict_source = "as recorded by the run"
    else:
        trend_source, judged = judge(run, used)
        verdict = judged.as_dict()
        verdict["source"] = trend_source
        verdict_source = (
            "judged from the log's samples with the run's analyzer settings"
            if run.header is not None
            else "judged from the log's samples"
        )
    evidence = next((s.evidence for s in reversed(run.snapshots) if s.evidence), ())
    if not evidence:
        evidence = next((s.top for s in reversed(run.snapshots) if s.top), ())
    return Report(log, run, series(run), used, source, verdict, verdict_source, evidence)


def label(verdict: Mapping[str, Any]) -> str:
    """The verdict's status in plain words."""
    text = verdict.get("label")
    if isinstance(text, str) and text:
        return text
    return {
        "insufficient_data": "collecting data",
        "collecting": "collecting data",
        "stable": "no growth",
        "no_growth": "no growth",
        "growing": "growing below the threshold",
        "warming_up": "warming up",
        "cycling": "cache cycling",
        "leak": "leak",
    }.get(str(verdict.get("status")), str(verdict.get("status")))


def explanation(verdict: Mapping[str, Any]) -> str:
    """One line in words explaining the verdict, with its numbers written for people."""
    text = verdict.get("explanation")
    if isinstance(text, str) and text:
        return text
    status = str(verdict.get("status"))
    slope = verdict.get("slope")
    low, high = verdict.get("slope_low"), verdict.get("slope_high")
    threshold = verdict.get("threshold")
    span = verdict.get("span")
    if status in ("insufficient_data", "collecting") or slope is None:
        return f"not enough samples yet for a verdict ({verdict.get('samples', 0)} so far)"
    interval = f" ({rate(low)} .. {rate(high)})" if low is not None and high is not None else ""
    return (
        f"{label(verdict)}: memory changes at {rate(slope)}{interval} over {duration(span)}; "
        f"a leak is sustained growth of at least {rate(threshold)}"
    )


def _has_slope(verdict: Mapping[str, Any]) -> bool:
    if "has_slope" in verdict:
        return bool(verdict["has_slope"])
    return (
        verdict.get("status") not in ("insufficient_data", "collecting") and verdict.get("slope") is not None
    )


# --- the summary -----------------------------------------------------------------------------------------


def _summary_threshold(summary: Mapping[str, Any]) -> float | None:
    value = summary.get("memory", {}).get("thresholds", {}).get("leak_bytes_per_second")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_histograms(path: str, where: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise SummaryError(f"{path}: {where} must be an object of histograms")
    for name, h in value.items():
        buckets = h.get("buckets") if isinstance(h, Mapping) else None
        if not isinstance(buckets, list) or not all(
            isinstance(b, list) and len(b) == 2 and all(_is_number(x) for x in b) for b in buckets
        ):
            raise SummaryError(f"{path}: {where}.{name}.buckets must be a list of [upper_bound, count]")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def validate_summary(data: Any, path: str = "summary") -> dict[str, Any]:
    """A demo summary with the shape the report reads, or SummaryError naming the first field that is not.

    Every field is optional; a field that is present must have its documented type.
    """
    if not isinstance(data, dict):
        raise SummaryError(f"{path} does not hold a JSON object")
    memory = data.get("memory", {})
    if not isinstance(memory, Mapping) or not isinstance(memory.get("thresholds", {}), Mapping):
        raise SummaryError(f"{path}: memory.thresholds must be an object")
    if "leak_bytes_per_second" in memory.get("thresholds", {}) and _summary_threshold(data) is None:
        raise SummaryError(f"{path}: memory.thresholds.leak_bytes_per_second must be a number")
    gc = data.get("gc", {})
    if not isinstance(gc, Mapping):
        raise SummaryError(f"{path}: gc must be an object")
    if "pauses" in gc:
        _check_histograms(path, "gc.pauses", gc["pauses"])
    pool = data.get("pool", {})
    if not isinstance(pool, Mapping):
        raise SummaryError(f"{path}: pool must be an object")
    if "wait" in pool:
        _check_histograms(path, "pool", {"wait": pool["wait"]})
    timeline = data.get("timeline", [])
    if not isinstance(timeline, list) or not all(
        isinstance(f, Mapping) and _is_number(f.get("t")) for f in timeline
    ):
        raise SummaryError(f"{path}: timeline must be a list of objects with a number 't'")
    for frame in timeline:
        for key in ("pool_in_use", "pool_waiting", "lag_p99"):
            if key in frame and not _is_number(frame[key]):
                raise SummaryError(f"{path}: timeline[].{key} must be a number")
    if "leak_detected" in data and not isinstance(data["leak_detected"], bool):
        raise SummaryError(f"{path}: leak_detected must be true or false")
    return data


def load_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A demo summary file (``*.summary.json``), checked. Raises OSError, ReportError if it is not JSON,
    SummaryError if it has the wrong shape."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SummaryError(f"{path} is not JSON: {exc}") from None
    return validate_summary(data, str(path))


# --- figures ---------------------------------------------------------------------------------------------


def _axis_range(values: Sequence[float]) -> list[float]:
    """[low, high] in MiB: the data with a margin, and never narrower than a tenth of its level."""
    low, high = min(values), max(values)
    span = max(high - low, _MIN_SPAN_SHARE * max(abs(high), abs(low)), _MIN_SPAN)
    middle = (low + high) / 2
    return [max(0.0, middle - 0.6 * span) / MIB, (middle + 0.6 * span) / MIB]


def _memory_figure(go: Any, report: Report) -> Any:
    make_subplots = importlib.import_module("plotly.subplots").make_subplots
    s = report.series
    verdict = report.verdict
    traced_axis = bool(s.traced)
    fig = make_subplots(specs=[[{"secondary_y": traced_axis}]])
    fig.add_trace(
        go.Scatter(x=s.times, y=[v / MIB for v in s.rss], name="RSS", mode="lines"), secondary_y=False
    )
    if traced_axis:
        fig.add_trace(
            go.Scatter(
                x=[t for t, _ in s.traced],
                y=[v / MIB for _, v in s.traced],
                name="traced heap (right axis)",
                mode="lines",
            ),
            secondary_y=True,
        )
    on_traced = verdict.get("source") == "traced" and traced_axis
    if _has_slope(verdict) and s.times:
        level, slope = float(verdict.get("level", 0.0)), float(verdict.get("slope", 0.0))
        low, high = verdict.get("slope_low"), verdict.get("slope_high")
        change = verdict.get("change_point")
        start = (float(change) - s.t0) if isinstance(change, int | float) else s.times[0]
        window = [t for t in s.times if t >= start] or s.times
        t_last, t_mid = window[-1], (window[0] + window[-1]) / 2
        y_mid = level + slope * (t_mid - t_last)
        xs = [window[0], window[-1]]
        if low is not None and high is not None:
            lo = [(y_mid + float(low) * (x - t_mid)) / MIB for x in xs]
            hi = [(y_mid + float(high) * (x - t_mid)) / MIB for x in xs]
            fig.add_trace(
                go.Scatter(
                    x=[xs[0], xs[1], xs[1], xs[0]],
                    y=[min(lo[0], hi[0]), max(lo[1], hi[1]), min(lo[1], hi[1]), max(lo[0], hi[0])],
                    fill="toself",
                    fillcolor="rgba(214,39,40,0.15)",
                    line={"width": 0},
                    name="slope confidence interval",
                    hoverinfo="skip",
                ),
                secondary_y=on_traced,
            )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[(y_mid + slope * (x - t_mid)) / MIB for x in xs],
                name=f"trend: {rate(slope)}",
                line={"color": "rgb(214,39,40)", "dash": "dash"},
            ),
            secondary_y=on_traced,
        )
    fig.update_layout(
        title=f"Memory over time: {label(verdict)}",
        height=440,
        legend={"orientation": "h", "y": -0.2},
        separators=".,",
    )
    fig.update_xaxes(title_text="seconds since the run started")
    fig.update_yaxes(title_text="RSS (MiB)", range=_axis_range(s.rss), tickformat=",.1f", secondary_y=False)
    if traced_axis:
        fig.update_yaxes(
            title_text="traced heap (MiB)",
            range=_axis_range([v for _, v in s.traced]),
            tickformat=",.1f",
            secondary_y=True,
        )
    return fig


def _top_figure(go: Any, evidence: Sequence[TopConsumer]) -> Any | None:
    if not evidence:
        return None
    top = list(reversed(evidence))  # plotly draws horizontal bars bottom-up
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
        title="Where the memory grew", xaxis_title="KiB", barmode="group", height=140 + 40 * len(top)
    )
    fig.update_xaxes(tickformat=",.0f")
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


# --- the page --------------------------------------------------------------------------------------------


def _started(report: Report) -> str:
    header = report.run.header
    wall = header.started if header is not None else report.snapshots[0].timestamp
    when = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def facts(report: Report, summary: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """The page's header table, as (label, text) rows."""
    header = report.run.header
    s = report.series
    verdict = report.verdict
    rows: list[tuple[str, str]] = [("started", _started(report))]
    if header is not None:
        rows.append(
            ("host", f"{header.host} (PID {header.pid}, Python {header.python}, sanaa {header.library})")
        )
    span = s.times[-1] - s.times[0] if s.times else 0.0
    rows.append(
        ("samples", f"{len(s.times):,} over {duration(span)} ({len(report.snapshots):,} stored snapshots)")
    )
    rows.append(("verdict", f"{label(verdict)} ({report.verdict_source})"))
    rows.append(("why", explanation(verdict)))
    if _has_slope(verdict):
        low, high = verdict.get("slope_low"), verdict.get("slope_high")
        interval = f" (interval {rate(low)} .. {rate(high)})" if low is not None and high is not None else ""
        rows.append(
            ("growth", f"{rate(verdict.get('slope'))}{interval}, judged on {verdict.get('source', 'rss')}")
        )
    rows.append(("leak threshold", f"{rate(report.threshold)}, from {report.threshold_source}"))
    if len(report.log.runs) > 1:
        rows.append(("runs in this log", f"{len(report.log.runs)}: this page shows the newest"))
    if report.log.skipped:
        rows.append(("skipped lines", f"{report.log.skipped:,} lines of the log were not valid records"))
    if summary is not None and "leak_detected" in summary:
        rows.append(
            ("profiler's leak alert", "raised during the run" if summary["leak_detected"] else "none")
        )
    return rows


def _evidence_table(evidence: Sequence[TopConsumer]) -> str:
    if not evidence:
        return ""
    head = "<tr><th>where</th><th>source</th><th>held</th><th>growth</th><th>per minute</th></tr>"
    body = "".join(
        f"<tr><td><code>{html.escape(c.location)}</code></td><td><code>{html.escape(c.text)}</code></td>"
        f"<td>{size(c.size)}</td><td>{size(c.size_diff)}</td>"
        f"<td>{size(c.growth_per_minute) if c.seconds else '-'}</td></tr>"
        for c in evidence
    )
    return f"<h2>Where the memory grew</h2><table id='evidence'>{head}{body}</table>"


def build_html(report: Report, *, summary: Mapping[str, Any] | None = None, title: str) -> str:
    """The whole page as a string. Raises ImportError without plotly."""
    go = _plotly()
    figures: list[tuple[str, Any]] = [("memory", _memory_figure(go, report))]
    top = _top_figure(go, report.evidence)
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
        if key == "memory":
            parts.append(_evidence_table(report.evidence))
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts(report, summary)
    )
    headline = explanation(report.verdict)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}th{text-align:left;padding-right:1em}"
        "td code{font-size:90%}#evidence td,#evidence th{padding:2px 8px}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p id='verdict'><strong>{html.escape(headline)}</strong></p>"
        f"<table id='facts'>{rows}</table>{''.join(parts)}</body></html>\n"
    )


def render_report(
    log: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    summary: Mapping[str, Any] | None = None,
    threshold: float | None = None,
) -> Report:
    """Write the HTML report of ``log`` to ``out`` (creating its folder) and return what it reports.

    Raises FileNotFoundError / OSError, ReportError (no records) or ImportError (no plotly).
    """
    report = prepare(load_log(log), threshold=threshold, summary=summary)
    page = build_html(report, summary=summary, title=f"sanaa-mem report: {Path(log).name}")
    Path(out).parent.mkdir(parents=True, exist_ok=True)  # as ``demo --report`` does
    Path(out).write_text(page, encoding="utf-8")
    return report
