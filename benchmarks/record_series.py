"""Record the RSS of real processes at 1 Hz into ``tests/data/<name>.json``, for the leak detector's tests.

One command: ``python -m benchmarks.record_series [NAME ...] [--duration S] [--out DIR]`` (all recordings
when no name is given; they run concurrently, each sampling its own child process with psutil).

Recordings (``expected`` is the truth the tests hold the detector to):

* ``demo_leak``: ``sanaa-mem demo --leak --duration 600`` (the handler keeps 4 KiB per request for ever);
  the demo process's RSS, judged at the demo's own threshold (64 KiB/s). Expected: leak.
* ``demo_no_leak``: ``sanaa-mem demo --duration 600``, same threshold. Expected: no leak.
* ``uvicorn_lru``: a uvicorn service (``benchmarks/apps/lru_app.py``) whose bounded LRU cache fills over
  the first minutes under a load loop run by this recorder (httpx, random keys over a bounded key space
  larger than the cache), then stays full. Expected: no leak (threshold 1000 B/s).
* ``leak_2kib``: a process that appends 2048 bytes per second of elapsed time to a list (a genuine
  2 KiB/s leak) while churning temporary objects. Expected: leak (threshold 1000 B/s).
* ``cache_flush``: a process that fills a dict at 1.5-3 MiB/min (entries of 1-32 KiB) and clears it every
  2-4 minutes (each cycle fills to 5-7 MiB). Expected: no leak (threshold 1000 B/s).

File format: ``{"name", "description", "interval": 1.0, "threshold", "expected": "leak"|"no_leak",
"samples": [[t_seconds, rss_bytes], ...], "recorded_with": {"command", "python", "date", ...}}``, times
from the start of the child process (rounded to ms), RSS in whole bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data"
DEMO_THRESHOLD = 64 * 1024.0  # the demo's own --leak-threshold default

LEAK_CHILD = textwrap.dedent(
    """
    import random, time
    rng = random.Random(2048)
    kept = []
    start = last = time.monotonic()
    owed = 0.0
    size = 2048
    while True:
        now = time.monotonic()
        # Temporary work that is freed at once: the allocator's churn around the leak.
        churn = [{"k": i, "v": "x" * rng.randrange(10, 2000)} for i in range(rng.randrange(20, 200))]
        del churn
        owed += 2048.0 * (now - last)  # the leak follows elapsed time, however slow the machine is
        last = now
        while owed >= size:
            # A new object each time: the constant b"L" * 2048 would be folded into one shared object.
            kept.append(bytes([rng.randrange(256)]) * size)
            owed -= size
        time.sleep(0.05)
    """
)

FLUSH_CHILD = textwrap.dedent(
    """
    import random, time
    rng = random.Random(77)
    cache = {}
    key = 0
    period = 150.0  # the first flush comes after 2.5 minutes, later ones after 2-4
    target = rng.uniform(5, 7) * 1024 * 1024
    cycle_start = last = time.monotonic()
    owed = 0.0
    while True:
        now = time.monotonic()
        if now - cycle_start >= period:
            cache.clear()
            cycle_start = now
            period = rng.uniform(120.0, 240.0)
            target = rng.uniform(5, 7) * 1024 * 1024
            owed = 0.0
        owed += target / period * (now - last)
        last = now
        while owed > 0:
            size = rng.randrange(1024, 32 * 1024)
            cache[key] = bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64)
            key += 1
            owed -= size
        churn = [str(i) * 10 for i in range(rng.randrange(50, 500))]
        del churn
        time.sleep(0.05)
    """
)


class Recording:
    """One child process, its RSS sampled at 1 Hz for ``duration`` seconds."""

    def __init__(
        self,
        name: str,
        description: str,
        command: list[str],
        expected: str,
        threshold: float,
        *,
        setup: Callable[[Recording], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.command = command
        self.expected = expected
        self.threshold = threshold
        self.setup = setup
        self.env = env
        self.stop = threading.Event()
        self.port = 0
        self.extra: dict[str, Any] = {}
        self.script_name = "script"

    def run(self, duration: float, out: Path) -> Path:
        import os

        env = dict(os.environ)
        env.update(self.env or {})
        started_wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # The child's stderr goes to a file: a pipe nobody reads would block a chatty child.
        err_file = tempfile.TemporaryFile()  # noqa: SIM115 - closed once the child has exited
        proc = subprocess.Popen(
            self.command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
        )
        handle = psutil.Process(proc.pid)
        # Sampling starts once the interpreter is up, as a profiler inside the process would.
        time.sleep(2.0)
        t0 = time.monotonic()
        samples: list[list[float]] = []
        loader: threading.Thread | None = None
        try:
            if self.setup is not None:
                loader = threading.Thread(target=self.setup, args=(self,), daemon=True)
                loader.start()
            next_at = t0
            while True:
                now = time.monotonic()
                if now - t0 > duration or proc.poll() is not None:
                    break
                try:
                    rss = handle.memory_info().rss
                except psutil.NoSuchProcess:
                    break
                samples.append([round(now - t0, 3), int(rss)])
                next_at += 1.0
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            self.stop.set()
            if loader is not None:
                loader.join(timeout=10)
            ended_early = proc.poll() is not None
            if proc.poll() is None:
                # The demo stops cleanly on Ctrl-C (the load first, then the service).
                proc.send_signal(signal.SIGINT if self.name.startswith("demo") else signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            err_file.seek(0)
            err = err_file.read()
            err_file.close()
        if ended_early and proc.returncode not in (0, None):
            tail = err.decode(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name}: child exited with {proc.returncode} early:\n{tail}")
        payload = {
            "name": self.name,
            "description": self.description,
            "interval": 1.0,
            "threshold": self.threshold,
            "expected": self.expected,
            "recorded_with": {
                "command": " ".join(
                    f"<{self.script_name} in benchmarks/record_series.py>" if "\n" in c else c
                    for c in self.command
                ),
                "recorder": "python -m benchmarks.record_series " + self.name,
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "date": started_wall,
                **self.extra,
            },
            "samples": samples,
        }
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{self.name}.json"
        # One sample per line keeps the file diffable and small.
        text = json.dumps({k: v for k, v in payload.items() if k != "samples"}, indent=1)[:-2]
        text += ',\n "samples": [\n' + ",\n".join(json.dumps(s) for s in samples) + "\n ]\n}\n"
        path.write_text(text)
        print(f"{self.name}: {len(samples)} samples -> {path}", flush=True)
        return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lru_load(rec: Recording) -> None:
    """Requests with random keys over a bounded key space, ~40 per second, until the recording stops."""
    import httpx

    rng = random.Random(4000)
    keys = 12_000  # three times the cache: hits, misses and evictions once it is full
    url = f"http://127.0.0.1:{rec.port}"
    sent = ok = 0
    with httpx.Client(base_url=url, timeout=5.0) as client:
        deadline = time.monotonic() + 60
        while not rec.stop.is_set():  # wait for the server to answer
            with contextlib.suppress(httpx.HTTPError):
                client.get("/stats")
                break
            if time.monotonic() > deadline:
                return
            time.sleep(0.2)
        next_at = time.monotonic()
        while not rec.stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                r = client.get(f"/item/{rng.randrange(keys)}")
                ok += r.status_code == 200
            sent += 1
            next_at += 1.0 / 40.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        with contextlib.suppress(httpx.HTTPError):
            rec.extra["cache_at_end"] = client.get("/stats").json()
    rec.extra["requests_sent"] = sent
    rec.extra["requests_ok"] = ok


def recordings(tmp: Path) -> dict[str, Recording]:
    exe = sys.executable
    demo = shutil.which("sanaa-mem") or "sanaa-mem"
    lru_port = _free_port()
    recs = [
        Recording(
            "demo_leak",
            "sanaa-mem demo with its planted leak (4 KiB kept per request); RSS of the demo service process",
            [demo, "demo", "--leak", "--duration", "600", "--clients", "4", "--view", "none",
             "--report", str(tmp / "demo_leak.html")],
            "leak",
            DEMO_THRESHOLD,
        ),
        Recording(
            "demo_no_leak",
            "sanaa-mem demo without a leak; RSS of the demo service process",
            [demo, "demo", "--duration", "600", "--clients", "4", "--view", "none",
             "--report", str(tmp / "demo_no_leak.html")],
            "no_leak",
            DEMO_THRESHOLD,
        ),
        Recording(
            "uvicorn_lru",
            "uvicorn service with a bounded LRU cache (4000 entries of 2-6 KiB) filling under ~40 req/s of "
            "random keys over 12000, then full and steady",
            [exe, "-m", "uvicorn", "benchmarks.apps.lru_app:app", "--host", "127.0.0.1", "--port",
             str(lru_port), "--log-level", "warning", "--no-access-log"],
            "no_leak",
            1000.0,
            setup=_lru_load,
        ),
        Recording(
            "leak_2kib",
            "a process keeping 2048 bytes per second of elapsed time in a list (a 2 KiB/s leak) among "
            "temporary allocations",
            [exe, "-c", LEAK_CHILD],
            "leak",
            1000.0,
        ),
        Recording(
            "cache_flush",
            "a process filling a dict at 1.5-3 MiB/min (entries of 1-32 KiB) and clearing it every 2-4 "
            "minutes (first after 2.5 minutes, each cycle to 5-7 MiB)",
            [exe, "-c", FLUSH_CHILD],
            "no_leak",
            1000.0,
        ),
    ]  # fmt: skip
    recs[2].port = lru_port
    recs[3].script_name = "LEAK_CHILD"
    recs[4].script_name = "FLUSH_CHILD"
    return {r.name: r for r in recs}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.record_series", description=__doc__.split("\n")[0]
    )
    parser.add_argument("names", nargs="*", help="recordings to make (default: all)")
    parser.add_argument("--duration", type=float, default=720.0, help="seconds per recording (default 720)")
    parser.add_argument(
        "--out", type=Path, default=OUT, help="directory for the JSON files (default tests/data)"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sanaa-record-"))
    recs = recordings(tmp)
    names = args.names or list(recs)
    unknown = [n for n in names if n not in recs]
    if unknown:
        parser.error(f"unknown recording(s) {unknown}; choose from {sorted(recs)}")
    errors: list[BaseException] = []

    def one(name: str) -> None:
        rec = recs[name]
        # The demo's load stops after 600 s; recording stops before its shutdown (report writing).
        duration = min(args.duration, 590.0) if name.startswith("demo") else args.duration
        try:
            rec.run(duration, args.out)
        except BaseException as exc:  # reported after the others finish
            errors.append(exc)
            print(f"{name}: FAILED {exc}", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
