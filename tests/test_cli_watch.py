"""``sanaa-mem watch``: real child processes sampled with psutil, run as a user runs the command."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sanaa_async_mem.memory.snapshots import load_snapshots

CLI = [sys.executable, "-m", "sanaa_async_mem.cli", "watch"]
# Small interval and a threshold far below the leak's rate and far above allocator noise: a few seconds each.
FAST = ["--interval", "0.05", "--threshold", "100000", "--view", "plain"]

LEAKY = """
import time
keep = []
print("ready", flush=True)
while True:
    keep.append(bytearray(b"x" * 20_000))  # ~4 MB/s, steady, every page touched
    time.sleep(0.005)
"""

FLAT = """
import time
print("ready", flush=True)
time.sleep(120)
"""


def run_watch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def child() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start ``python -c SOURCE`` once it has printed 'ready' (its start-up is over); killed afterwards."""
    started: list[subprocess.Popen[str]] = []

    def start(source: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", source], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_leaking_process_fails_with_fail_on_leak(child: Callable[[str], subprocess.Popen[str]]) -> None:
    proc = child(LEAKY)
    result = run_watch("--pid", str(proc.pid), "--duration", "2", "--fail-on-leak", *FAST)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LEAK" in result.stdout
    assert "t=" in result.stdout and "rss=" in result.stdout  # plain periodic lines without a terminal
    assert proc.poll() is None  # a process we did not start is left running


def test_flat_process_passes_and_json_parses(
    child: Callable[[str], subprocess.Popen[str]], tmp_path: Path
) -> None:
    proc = child(FLAT)
    log = tmp_path / "flat.jsonl"
    result = run_watch(
        "--pid", str(proc.pid), "--duration", "1.5", "--fail-on-leak", "--json", "--log", str(log), *FAST
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["leak_detected"] is False
    assert data["trend"]["status"] in ("no_growth", "growing", "warming_up", "cycling")
    assert data["pid"] == proc.pid and data["ended"] == "duration"
    assert data["samples"] >= 10
    snaps = load_snapshots(log)  # the profiler's format: what 'sanaa-mem report' reads
    assert len(snaps) == data["samples"]
    assert all(s.rss > 0 for s in snaps)


def test_command_mode_reports_a_leak_and_ends_the_command() -> None:
    result = run_watch(
        "--duration", "2", "--warmup", "0.3", "--fail-on-leak", "--json", *FAST,
        "--", sys.executable, "-c", LEAKY,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)  # the command's own output went to stderr
    assert "ready" in result.stderr
    assert data["leak_detected"] is True
    assert data["command"][0] == sys.executable
    assert data["ended"] == "duration"
    assert data["exit_code"] is not None  # we ended it, and reaped it
    assert not _alive(data["pid"])


def test_command_that_exits_on_its_own_stops_the_watch() -> None:
    result = run_watch("--duration", "60", *FAST, "--", sys.executable, "-c", "import time; time.sleep(0.5)")
    assert result.returncode == 0, result.stderr
    assert "the process exited with code 0" in result.stdout


@pytest.mark.parametrize("code", [1, 3])
def test_a_command_that_fails_is_said_so_and_exits_4(code: int) -> None:
    result = run_watch("--duration", "60", *FAST, "--", sys.executable, "-c", f"import sys; sys.exit({code})")
    assert result.returncode == 4, result.stderr
    assert f"the process exited with code {code}" in result.stdout
    assert f"the command failed: it exited with code {code}" in result.stderr


def test_a_command_that_fails_at_once_reports_no_zero_memory() -> None:
    result = run_watch("--duration", "60", *FAST, "--json", "--", "false")
    assert result.returncode == 4
    data = json.loads(result.stdout)
    assert data["command_failed"] is True
    assert data["memory"]["last"] != 0  # a zombie's memory reads as zero: it is not a sample


def test_missing_pid_is_a_short_error() -> None:
    result = run_watch("--pid", "99999999", "--duration", "1")
    assert result.returncode == 3
    assert result.stderr.strip() == "sanaa-mem watch: no process with PID 99999999"


def test_command_that_cannot_start_is_a_short_error() -> None:
    result = run_watch("--duration", "1", "--", "sanaa-no-such-command-xyz")
    assert result.returncode == 3
    assert "cannot start 'sanaa-no-such-command-xyz': command not found" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give --pid PID or -- COMMAND"),
        (("--pid", "1", "--", "true"), "not both"),
        (("--pid", "abc"), "'abc' is not an integer"),
        (("--pid", "1", "--interval", "0"), "must be a positive number"),
    ],
)
def test_bad_arguments_exit_2_with_a_short_message(args: tuple[str, ...], message: str) -> None:
    result = run_watch(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_has_examples() -> None:
    result = run_watch("--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--fail-on-leak -- python" in result.stdout
    assert "exit codes:" in result.stdout


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
