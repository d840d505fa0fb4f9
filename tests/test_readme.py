"""Every code block in README.md runs as shown."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == "python"]
SHELL_BLOCKS = [code.strip() for lang, code in BLOCKS if lang == "bash"]


def test_readme_has_the_two_setup_commands() -> None:
    assert any(cmd.endswith("sanaa-mem demo") for cmd in SHELL_BLOCKS)
    assert any(cmd.endswith("python -m pytest") for cmd in SHELL_BLOCKS)


@pytest.mark.parametrize("code", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    # In a subprocess: blocks call asyncio.run() and must not share state with the test session.
    script = tmp_path / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readmes_test_command() -> None:
    test_cmd = next(cmd for cmd in SHELL_BLOCKS if cmd.endswith("python -m pytest"))
    install_and_test = test_cmd.split("&& ", 2)[-1]  # after creating and activating the venv
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci
    assert "SANAA_REQUIRE_SERVICES=1" in ci
    assert "ruff check" in ci and "mypy --strict sanaa_async_mem" in ci


def test_demo_command_runs_as_shown(tmp_path: Path) -> None:
    demo_cmd = next(cmd for cmd in SHELL_BLOCKS if cmd.endswith("sanaa-mem demo"))
    assert 'pip install ".[demo]"' in demo_cmd
    script = Path(sys.executable).parent / "sanaa-mem"
    cmd = [str(script), "demo"] if script.exists() else [sys.executable, "-m", "sanaa_async_mem.cli", "demo"]
    # In a scratch directory: the demo writes its report and snapshot log to the current directory.
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env=dict(os.environ), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "left open: 0" in result.stdout
    assert (tmp_path / "sanaa-mem-demo.html").exists()
    assert (tmp_path / "sanaa-mem-demo.jsonl").exists()


def test_cli_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sanaa_async_mem.cli", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("sanaa-mem ")
    bad = subprocess.run(
        [sys.executable, "-m", "sanaa_async_mem.cli", "demo", "--tasks", "0"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "at least 1" in bad.stderr and "Traceback" not in bad.stderr


SERVER_BLOCKS = [cmd for cmd in SHELL_BLOCKS if "examples." in cmd]


def test_readme_shows_both_example_services() -> None:
    assert len(SERVER_BLOCKS) == 2


@pytest.mark.parametrize("cmd", SERVER_BLOCKS, ids=["fastapi", "aiohttp"])
def test_example_service_command_runs_as_shown(cmd: str, pg_dsn: str, tmp_path: Path) -> None:
    words = shlex.split(cmd)
    env = dict(os.environ)
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    env["DATABASE_URL"] = pg_dsn if "DATABASE_URL" not in os.environ else env["DATABASE_URL"]
    port = int(env.get("PORT") or words[words.index("--port") + 1])
    program = words[0]
    words[0] = sys.executable if program == "python" else str(Path(sys.executable).parent / program)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(words, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    body = response.read().decode()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    out = (tmp_path / "server.log").read_text()
                    raise AssertionError(f"{cmd!r} did not serve /metrics:\n{out}") from None
                time.sleep(0.2)
        assert "sanaa_" in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


WATCH_BLOCKS = [cmd for cmd in SHELL_BLOCKS if cmd.startswith("sanaa-mem watch")]
PLUGIN_EXAMPLE = next(code for code in PYTHON_BLOCKS if "leak_check" in code)


def test_watch_command_runs_as_shown() -> None:
    assert len(WATCH_BLOCKS) == 1
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(
        ["bash", "-c", WATCH_BLOCKS[0]], capture_output=True, text=True, timeout=120, env=env
    )
    assert "exit code: 1" in result.stdout, result.stdout + result.stderr


def test_pytest_plugin_example_behaves_as_described(tmp_path: Path) -> None:
    (tmp_path / "test_parse.py").write_text(PLUGIN_EXAMPLE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_parse.py"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "leak_check: memory leaks" in result.stdout
    assert "test_parse.py:21" in result.stdout  # the line that keeps the buffers


def test_closed_output_pipe_is_not_a_traceback() -> None:
    # `sanaa-mem --help | head -1`: the reader closes the pipe early.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sanaa_async_mem.cli", "watch", "--help"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=30)
    assert "Traceback" not in err
