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
    assert result["trend"]["status"] == "stable"
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
