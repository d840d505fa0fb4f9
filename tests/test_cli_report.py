"""``sanaa-mem report``: a snapshot log becomes a self-contained HTML page whose plots render in a browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sanaa_async_mem.cli import main
from sanaa_async_mem.memory.snapshots import MemorySnapshot, TopConsumer

pytest.importorskip("plotly", reason="the HTML report needs the 'report' extra (plotly)")

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def write_log(path: Path, *, growth: int, n: int = 60) -> None:
    lines = []
    for i in range(n):
        top = (
            (TopConsumer("app/cache.py:42", 4096 * i, i, 4096, 1), TopConsumer("app/db.py:7", 1000, 3))
            if i >= n - 5
            else ()
        )
        snap = MemorySnapshot(
            timestamp=1_700_000_000.0 + i,
            monotonic=100.0 + i,
            rss=50_000_000 + growth * i + (i % 3) * 1000,
            vms=90_000_000,
            traced=None,
            top=top,
        )
        lines.append(snap.to_json())
    path.write_text("\n".join(lines) + "\n")


SUMMARY = {
    "leak_detected": True,
    "memory": {"thresholds": {"leak_bytes_per_second": 2048}},
    "gc": {"pauses": {"0": {"buckets": [[0.0001, 40], [0.0002, 3]]}, "2": {"buckets": [[0.01, 1]]}}},
    "pool": {"wait": {"buckets": [[0.0005, 100], [0.002, 7]]}},
    "timeline": [{"t": t, "pool_in_use": t % 5, "pool_waiting": 0, "lag_p99": 0.001} for t in range(10)],
}


def test_report_draws_memory_trend_and_top_consumers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.jsonl"
    write_log(log, growth=100_000)
    out = tmp_path / "report.html"
    assert main(["report", str(log), "--out", str(out)]) == 0
    assert "trend (rss): leak" in capsys.readouterr().out
    page = out.read_text()
    assert 'id="plot-memory"' in page and 'id="plot-top"' in page
    assert "cache.py:42" in page
    assert "<script src=" not in page  # plotly.js is embedded: no network needed
    assert 'id="plot-gc"' not in page  # only with a demo summary


def test_summary_adds_gc_pool_and_timeline_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "app.jsonl"
    write_log(log, growth=0)
    summary = tmp_path / "run.summary.json"
    summary.write_text(json.dumps(SUMMARY))
    out = tmp_path / "report.html"
    assert main(["report", str(log), "--summary", str(summary), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trend"]["status"] == "no_growth"
    assert result["trend"]["threshold"] == 2048
    page = out.read_text()
    for key in ("memory", "top", "gc", "pool", "timeline"):
        assert f'id="plot-{key}"' in page, key


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("", "no complete record"), ("not json\n", "no complete record")],
)
def test_unusable_log_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    log = tmp_path / "app.jsonl"
    if content is not None:
        log.write_text(content)
    assert main(["report", str(log), "--out", str(tmp_path / "r.html")]) == 3
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium')")
def test_plots_render_in_headless_chromium(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    write_log(log, growth=100_000)
    summary = tmp_path / "run.summary.json"
    summary.write_text(json.dumps(SUMMARY))
    out = tmp_path / "report.html"
    assert main(["report", str(log), "--summary", str(summary), "--out", str(out)]) == 0
    assert CHROMIUM is not None
    dom = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    # plotly marks a div it has drawn into with js-plotly-plot and puts SVG layers in it.
    rendered = set(re.findall(r'<div id="plot-(\w+)" class="[^"]*js-plotly-plot', dom))
    assert rendered == {"memory", "top", "gc", "pool", "timeline"}
    assert dom.count('class="main-svg"') >= 5
    assert dom.count('class="trace bars"') >= 3


# -- what the run saw, hostile summaries, several runs ------------------------------------------------------

from sanaa_async_mem.cli.report import MIB, _axis_range  # noqa: E402
from sanaa_async_mem.memory.snapshots import RunHeader  # noqa: E402


def write_run(
    path: Path, *, threshold: float, growth: int, pid: int = 1, verdict: dict | None = None
) -> None:
    header = RunHeader(
        started=1_700_000_000.0,
        monotonic=100.0,
        pid=pid,
        host="box",
        python="3.11",
        library="0.1.0",
        settings={
            "leak_threshold": threshold,
            "analyzer": {"threshold": threshold, "min_samples": 10, "min_span": 0.0, "min_leak_span": 10.0},
        },
    )
    lines = [header.to_json()]
    for i in range(40):
        snap = MemorySnapshot(
            timestamp=1_700_000_000.0 + i,
            monotonic=100.0 + i,
            rss=50_000_000 + growth * i,
            vms=1,
            samples=((100.0 + i - 0.5, 50_000_000 + growth * i - growth // 2, None),),
            verdict=verdict if i == 39 else None,
        )
        lines.append(snap.to_json())
    with path.open("a") as f:
        f.write("\n".join(lines) + "\n")


def test_the_threshold_and_verdict_are_the_runs_own_and_the_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.jsonl"
    recorded = {
        "status": "leak",
        "is_leak": True,
        "slope": 5000.0,
        "slope_low": 4000.0,
        "slope_high": 6000.0,
        "threshold": 4096.0,
        "level": 5.02e7,
        "span": 40.0,
        "samples": 80,
        "source": "rss",
    }
    write_run(log, threshold=4096, growth=5000, verdict=recorded)
    out = tmp_path / "deep" / "folder" / "report.html"  # created, as demo --report does
    assert main(["report", str(log), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["threshold"] == 4096 and "run's settings" in result["threshold_source"]
    assert result["verdict_source"] == "as recorded by the run"
    assert result["trend"]["slope"] == 5000.0
    assert result["samples"] == 80  # the cheap samples between records count
    page = out.read_text()
    assert "from the run&#x27;s settings" in page or "from the run's settings" in page
    assert "e+0" not in page.split("<section")[0]  # no e-notation in the header
    assert "box (PID 1" in page and "2023-11-14 22:13:20 UTC" in page
    # Another threshold is judged anew, and said so.
    assert main(["report", str(log), "--out", str(out), "--json", "--threshold", "100000"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["threshold_source"] == "--threshold" and again["verdict_source"].startswith("judged")
    assert again["trend"]["is_leak"] is False


def test_two_runs_in_one_log_report_the_newest_and_say_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.jsonl"
    write_run(log, threshold=1000, growth=100_000, pid=1)
    write_run(log, threshold=1000, growth=0, pid=2)
    with log.open("a") as f:
        f.write('garbage\n{"half": \n')
    assert main(["report", str(log), "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "2 lines of the log were not valid records" in out
    assert "trend (rss): no growth" in out  # the newest run does not grow; the first one did


@pytest.mark.parametrize(
    "summary",
    [
        [],
        {"gc": []},
        {"gc": {"pauses": {"0": {"buckets": "many"}}}},
        {"pool": {"wait": {"buckets": [["a", 1]]}}},
        {"timeline": 5},
        {"timeline": [{"t": "x"}]},
        {"memory": {"thresholds": {"leak_bytes_per_second": "fast"}}},
        {"leak_detected": "yes"},
    ],
)
def test_a_summary_of_the_wrong_shape_is_one_line_and_exit_2(
    summary: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "app.jsonl"
    write_log(log, growth=0)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(summary))
    assert main(["report", str(log), "--summary", str(path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_empty_summary_object_is_fine(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    write_log(log, growth=0)
    path = tmp_path / "s.json"
    path.write_text("{}")
    assert main(["report", str(log), "--summary", str(path), "--out", str(tmp_path / "r.html")]) == 0


def test_axes_never_stretch_a_small_change_into_a_cliff() -> None:
    low, high = _axis_range([100 * MIB, 100.3 * MIB])
    assert high - low >= 10.0  # MiB: a tenth of the level, so 0.3 MiB stays small
    low, high = _axis_range([2 * MIB, 2.1 * MIB])
    assert high - low >= 4.0  # and never less than 4 MiB


def test_out_into_a_missing_folder_creates_it(tmp_path: Path) -> None:
    log = tmp_path / "app.jsonl"
    write_run(log, threshold=1000, growth=0)
    out = tmp_path / "new" / "deeper" / "r.html"
    assert main(["report", str(log), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
