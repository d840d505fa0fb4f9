"""Metrics that add up across workers: a real ``uvicorn --workers 3`` server (examples/workers_app.py) in
prometheus_client's multiprocess mode, under load from a separate process. The histograms' summed
``_count`` equals the acquires the load made, across every worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

LOAD = textwrap.dedent(
    """
    import http.client, json, sys, threading
    port, threads, each = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ok, pids, errors = [0], {}, []
    lock = threading.Lock()
    def run():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(each):
            conn.request("GET", "/work")
            r = conn.getresponse()
            body = r.read()
            with lock:
                if r.status == 200:
                    ok[0] += 1
                    pid = json.loads(body)["pid"]
                    pids[pid] = pids.get(pid, 0) + 1
                else:
                    errors.append(r.status)
            # A new connection now and then, so the kernel spreads them over the workers.
            if ok[0] % 7 == 0:
                conn.close(); conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    ts = [threading.Thread(target=run) for _ in range(threads)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(json.dumps({"ok": ok[0], "pids": pids, "errors": errors}))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[int]:
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc), "SANAA_EXPORT_INTERVAL": "0.2"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.workers_app:app",
            "--workers",
            "3",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/work")[0] == 200:
                    break
            except OSError:
                pass
            assert server.poll() is None, "uvicorn exited during startup"
            assert time.monotonic() < deadline, "uvicorn did not answer within 60 s"
            time.sleep(0.2)
        yield port
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_summed_histogram_counts_equal_the_acquires_made_across_workers(workers: int) -> None:
    port = workers
    # Let every worker come up before the load, so all three serve it.
    time.sleep(2.0)
    warm = _samples(_get(port, "/metrics")[1].decode())
    before = warm.get(("sanaa_pool_wait_seconds_count", (("pool", "db"),)), 0.0)
    load = subprocess.run(
        [sys.executable, "-c", LOAD, str(port), "24", "150"], capture_output=True, text=True, timeout=300
    )
    assert load.returncode == 0, load.stderr
    result = json.loads(load.stdout)
    assert not result["errors"]
    made = result["ok"]
    assert made == 24 * 150
    assert len(result["pids"]) >= 2, result["pids"]  # the kernel spread the connections over workers

    deadline = time.monotonic() + 30
    while True:
        got = _samples(_get(port, "/metrics")[1].decode())
        count = got.get(("sanaa_pool_wait_seconds_count", (("pool", "db"),)), 0.0) - before
        if count >= made or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    expected = made + before  # the readiness probe's acquires are counted too
    assert got[("sanaa_pool_wait_seconds_count", (("pool", "db"),))] == expected
    assert got[("sanaa_pool_use_seconds_count", (("pool", "db"),))] == expected
    assert got[("sanaa_pool_acquired_total", (("pool", "db"),))] == expected
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in got.items()
        if name == "sanaa_pool_use_seconds_bucket"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and counts[-1] == expected
    # The 1 ms hold is in the buckets around it, summed over the workers: not in the lowest one.
    assert counts[0] < expected
    # Gauges stay per worker: one max_size series per live worker process.
    pids = {dict(labels)["pid"] for (name, labels) in got if name == "sanaa_pool_max_size"}
    assert len(pids) == 3
    assert got[("sanaa_event_loop_lag_seconds_count", ())] > 0
