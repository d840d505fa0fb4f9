"""Every README block runs in a fresh virtual environment holding only what its install line installs.

Each block of the README (but the two set-up commands, which install for themselves) is preceded by a line
``Install: `pip install ...` ``. Here the project is built into a wheel once, then for every distinct install
line a new virtual environment gets exactly that line (``.`` meaning the wheel), and every block behind that
line runs in it: Python blocks as scripts, the pytest example as a test file, shell blocks with the
environment's ``bin`` first on ``PATH``. A block that needs a package its line does not install fails here,
as it would for a newcomer.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
INSTALL_LINE = re.compile(r"^Install: `(pip install [^`]+)`")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    install: str | None
    line: int  # where the block starts in README.md (1-based), for test ids and messages

    @property
    def is_setup_command(self) -> bool:
        return self.lang == "bash" and "pip install" in self.code


def blocks() -> list[Block]:
    out: list[Block] = []
    for match in re.finditer(r"^```(\w+)\n(.*?)^```", README, flags=re.S | re.M):
        lang, code = match.group(1), match.group(2)
        before = [line for line in README[: match.start()].splitlines() if line.strip()]
        found = INSTALL_LINE.match(before[-1]) if before else None
        out.append(
            Block(lang, code, found.group(1) if found else None, README.count("\n", 0, match.start()) + 1)
        )
    return out


RUNNABLE = [b for b in blocks() if b.lang in ("python", "bash") and not b.is_setup_command]


def test_every_block_has_its_install_line_beside_it() -> None:
    missing = [f"README.md:{b.line} ({b.lang})" for b in RUNNABLE if b.install is None]
    assert not missing, f"blocks without an 'Install: `pip install ...`' line right before them: {missing}"
    assert len(RUNNABLE) >= 8


# --- environments ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = list(out.glob("sanaa_async_mem-*.whl"))
    return built


@pytest.fixture(scope="session")
def environment(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Callable[[str], Path]:
    """``environment(install_line)`` -> the ``bin`` directory of a venv holding exactly that install."""
    made: dict[str, Path] = {}

    def make(install: str) -> Path:
        if install in made:
            return made[install]
        where = tmp_path_factory.mktemp("venv")
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
        bindir = where / "bin"
        words = shlex.split(install)[2:]  # after "pip install"
        args = []
        for word in words:
            if word == ".":
                args.append(str(wheel))
            elif word.startswith(".["):
                args.append(f"{wheel}{word[1:]}")
            else:
                args.append(word)
        result = subprocess.run(
            [str(bindir / "python"), "-m", "pip", "install", "-q", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, f"{install!r} failed:\n{result.stderr[-3000:]}"
        made[install] = bindir
        return bindir

    return make


def _env(bindir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bindir.parent)
    env.update(extra)
    return env


# --- running each kind of block --------------------------------------------------------------------------


def _run_python(block: Block, bindir: Path, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.code)
    result = subprocess.run(
        [str(bindir / "python"), str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=_env(bindir),
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _run_pytest_example(block: Block, bindir: Path, tmp_path: Path) -> None:
    (tmp_path / "test_parse.py").write_text(block.code)
    result = subprocess.run(
        [str(bindir / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_parse.py"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=_env(bindir),
    )
    out = result.stdout + result.stderr
    # The README's promise, for the right reason: the async test ran (pytest-asyncio is there) and failed on
    # its leak, naming the line; the sync one passed.
    assert "1 failed, 1 passed" in result.stdout, out
    assert "leak_check: memory leaks" in result.stdout, out
    assert "test_parse.py:21" in result.stdout, out


def _run_service(block: Block, bindir: Path, tmp_path: Path, pg_dsn: str) -> None:
    words = shlex.split(block.code.strip())
    env = _env(bindir)
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    env["DATABASE_URL"] = os.environ.get("DATABASE_URL", pg_dsn)
    port = int(env.get("PORT") or words[words.index("--port") + 1])
    words[0] = str(bindir / words[0])
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(words, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                        body = response.read().decode()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.flush()
                        raise AssertionError(f"did not serve /metrics:\n{log_path.read_text()}") from None
                    time.sleep(0.2)
            assert "sanaa_" in body
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_shell(block: Block, bindir: Path, tmp_path: Path) -> None:
    # Without -e: a block may show a command's exit code on purpose (the watch example does).
    result = subprocess.run(
        ["bash", "-c", block.code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=_env(bindir),
    )
    out = result.stdout + result.stderr
    if block.code.startswith("sanaa-mem watch"):
        assert "exit code: 1" in result.stdout, out  # the README's leaking child is found
    else:
        assert result.returncode == 0, out


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b.line}-{b.lang}" for b in RUNNABLE])
def test_block_runs_with_only_its_install_line(
    block: Block, environment: Callable[[str], Path], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert block.install is not None, f"README.md:{block.line} has no install line"
    bindir = environment(block.install)
    if block.lang == "python" and "@pytest.mark.leak_check" in block.code:
        _run_pytest_example(block, bindir, tmp_path)
    elif block.lang == "python":
        _run_python(block, bindir, tmp_path)
    elif "examples." in block.code:
        _run_service(block, bindir, tmp_path, request.getfixturevalue("pg_dsn"))
    else:
        _run_shell(block, bindir, tmp_path)
