"""Every CLI error path: one line naming the problem, the documented exit code, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "sanaa_async_mem.cli"]


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, **env}
    )


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("MEMORY_POOL_MAX_SIZE", "abc"),
        ("MEMORY_SNAPSHOT_INTERVAL", "-1"),
        ("GC_OPTIMIZATION_ENABLED", "perhaps"),
        ("MEMORY_LEAK_THRESHOLD", "x"),
        ("MEMORY_HIGH_USAGE_BYTES", "1e400"),
        ("GC_COLLECTION_THRESHOLD", "2147483648"),
    ],
)
@pytest.mark.parametrize("command", [["demo", "--duration", "1"], ["watch", "--duration", "1", "--", "true"]])
def test_a_bad_environment_variable_is_one_line_and_exit_2(
    var: str, raw: str, command: list[str], tmp_path: Path
) -> None:
    result = run(command, {var: raw}, tmp_path)
    if command[0] == "watch" and var != "MEMORY_LEAK_THRESHOLD":
        # watch reads only the leak threshold from the environment; the others do not concern it.
        assert "Traceback" not in result.stderr
        return
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and var in lines[0], result.stderr
