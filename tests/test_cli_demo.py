"""``sanaa-mem demo``: a real HTTP service with a pooled database under load, run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("aiosqlite", reason="the demo's embedded database needs aiosqlite")

CLI = [sys.executable, "-m", "sanaa_async_mem.cli"]


def run_cli(*args: str, cwd: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_demo_serves_requests_closes_every_connection_and_writes_its_files(tmp_path: Path) -> None:
    result = run_cli("demo", "--duration", "3", "--view", "plain", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "left open: 0" in out
    assert "watching http://127.0.0.1:" in out  # binds loopback only
    assert "t=" in out and "rss=" in out  # plain periodic lines without a terminal
    for name in ("sanaa-mem-demo.jsonl", "sanaa-mem-demo.summary.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "sanaa-mem-demo.summary.json").read_text())
    assert summary["service"]["ok"] > 0
    assert summary["connections_left_open"] == 0
    assert summary["service"]["leak_planted"] is False


def test_demo_runs_against_postgresql_with_dsn(tmp_path: Path, pg_dsn: str) -> None:
    result = run_cli("demo", "--dsn", pg_dsn, "--duration", "3", "--view", "none", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "postgresql" in result.stdout.lower()
    summary = json.loads((tmp_path / "sanaa-mem-demo.summary.json").read_text())
    assert summary["service"]["ok"] > 0 and summary["service"]["errors"] == 0
    assert summary["connections_left_open"] == 0


def test_planted_leak_is_detected_and_located(tmp_path: Path) -> None:
    report = tmp_path / "out" / "leaky.html"
    report.parent.mkdir()
    result = run_cli(
        "demo",
        "--leak",
        "--duration",
        "8",
        "--interval",
        "0.1",
        "--json",
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["leak_detected"] is True, data["memory"]["trend"]
    assert data["connections_left_open"] == 0
    assert any("demo.py" in c["location"] for c in data["memory"]["top_consumers"])
    assert data["files"]["log"] == str(tmp_path / "out" / "leaky.jsonl")
    assert Path(data["files"]["log"]).exists()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT delivery to a child differs on Windows")
def test_ctrl_c_stops_the_load_and_still_reports(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--duration", "60", "--view", "plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.startswith("t=") or not line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "[interrupted]" in out
    assert "left open: 0" in out
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["demo", "--clients", "0"], "at least 1"),
        (["demo", "--tasks", "0"], "at least 1"),
        (["demo", "--duration", "soon"], "not a number"),
        (["demo", "--view", "fancy"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_get_a_short_message_and_exit_2(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3


@pytest.mark.parametrize("command", [[], ["demo"], ["report"]])
def test_every_command_has_help_with_examples_and_exit_codes(command: list[str], tmp_path: Path) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout
    assert "exit codes:" in result.stdout


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag: str, tmp_path: Path) -> None:
    result = run_cli(flag, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("sanaa-mem ")


def test_no_command_is_a_usage_error_with_the_usage(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: sanaa-mem") and "a command is needed" in result.stderr


def test_the_load_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    result = run_cli("demo", "--duration", "2", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    service = json.loads(result.stdout)["service"]
    assert service["load"] == "separate process"
    assert service["load_pid"] and service["load_pid"] != service["pid"]
    assert service["requests"] > 0 and service["served"] >= service["ok"] > 0


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("postgresql://nobody@127.0.0.1:1/x", "cannot reach the database"),
        ("notadsn", "not a PostgreSQL URL"),
        ("mysql://x@127.0.0.1/db", "not a PostgreSQL URL"),
    ],
)
def test_a_bad_dsn_fails_fast_with_exit_3_and_leaves_the_previous_files_alone(
    dsn: str, says: str, tmp_path: Path
) -> None:
    old = {name: tmp_path / name for name in ("sanaa-mem-demo.jsonl", "sanaa-mem-demo.html")}
    for path in old.values():
        path.write_text("previous run\n")
    started = time.monotonic()
    result = run_cli("demo", "--duration", "30", "--dsn", dsn, "--view", "plain", cwd=tmp_path)
    assert time.monotonic() - started < 20  # failed fast, did not serve 30 s of errors
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in result.stderr
    for path in old.values():
        assert path.read_text() == "previous run\n"


@pytest.mark.services
def test_a_missing_postgresql_database_is_the_drivers_message_and_exit_3(tmp_path: Path, pg_dsn: str) -> None:
    dsn = pg_dsn.rsplit("/", 1)[0] + "/sanaa_no_such_database"
    result = run_cli("demo", "--duration", "5", "--dsn", dsn, cwd=tmp_path)
    assert result.returncode == 3
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_a_piped_live_view_ends_its_panel_before_the_summary(tmp_path: Path) -> None:
    result = run_cli("demo", "--duration", "2", "--view", "live", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "requests in" in out
    summary_line = next(line for line in out.splitlines() if "requests in" in line)
    assert summary_line.startswith(tuple("0123456789")), summary_line  # not glued to the panel's border
    frames = [line for line in out.splitlines() if "requests" in line and "/s" in line and "│" in line]
    last_frame = frames[-1]
    assert "(0/s" not in last_frame


@pytest.mark.parametrize("leak", [True, False])
def test_every_output_shows_the_same_verdict(tmp_path: Path, leak: bool) -> None:
    """The plain lines, the final summary, the summary JSON (status, leak flag, alerts, recommendations),
    the snapshot log's recorded verdicts, `sanaa-mem report` and the HTML report all say the same."""
    args = ["demo", "--duration", "12", "--interval", "0.1", "--view", "plain", "--report", "r.html"]
    result = run_cli(*(args + (["--leak"] if leak else [])), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    memory = summary["memory"]
    status = memory["trend"]["status"]
    assert (status == "leak") is leak, memory["trend"]
    assert summary["leak_detected"] is leak and memory["alerts"]["leak_active"] is leak
    recommendations = " ".join(memory["recommendations"])
    assert ("collections that only grow" in recommendations) is leak, recommendations
    assert not (leak and "No memory problem" in recommendations)
    lines = [line for line in out.splitlines() if line.startswith("t=")]
    assert f"trend={memory['trend']['label']}" in lines[-1]
    assert ("LEAK ALERT" in lines[-1]) is leak
    assert f"memory trend:        {status}" in out and f"leak detected: {'yes' if leak else 'no'}" in out
    recorded = [
        json.loads(line)["verdict"]["status"]
        for line in (tmp_path / "r.jsonl").read_text().splitlines()
        if json.loads(line).get("verdict")
    ]
    assert recorded[-1] == status
    if leak:  # "leak" at every check from its first alert to the end
        first = recorded.index("leak")
        assert all(s == "leak" for s in recorded[first:]), recorded[first:]
    else:
        assert "leak" not in recorded
    report = run_cli("report", "r.jsonl", "--out", "again.html", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    judged = json.loads(report.stdout)
    assert judged["trend"]["status"] == status and judged["verdict_source"].startswith("as recorded")
    assert judged["threshold"] == memory["thresholds"]["leak_bytes_per_second"]
    page = (tmp_path / "again.html").read_text()
    assert memory["trend"]["label"] in page
