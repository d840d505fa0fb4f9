"""The shipped alert and recording rules and the Grafana dashboard, checked by the real tools: promtool
(check and unit tests), the dashboard regenerated and compared with the shipped JSON, and an end-to-end run
of a real Prometheus server scraping two ``sanaa-mem demo`` services, one with a planted leak."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sanaa_async_mem.integrations.grafana import DASHBOARD_FILE, dashboard_json, queries
from sanaa_async_mem.integrations.prometheus import RULES_FILE

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def _need(tool: str | None, name: str) -> str:
    if tool is not None:
        return tool
    msg = f"{name} is not installed (Debian package 'prometheus')"
    if os.environ.get("SANAA_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg}, and SANAA_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(msg)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_need(PROMTOOL, "promtool"), *args], capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check() -> None:
    done = _promtool("check", "rules", str(RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    done = _promtool("test", "rules", str(ROOT / "tests" / "prometheus" / "rules_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_and_recording_rule_is_unit_tested() -> None:
    rules = RULES_FILE.read_text()
    tests = (ROOT / "tests" / "prometheus" / "rules_test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert len(alerts) == 8
    for name in alerts:
        assert f"alertname: {name}" in tests, name


def test_shipped_dashboard_is_current() -> None:
    pytest.importorskip("grafana_foundation_sdk")
    assert DASHBOARD_FILE.read_text() == dashboard_json(), (
        "run: python -m sanaa_async_mem.integrations.grafana"
    )


def _concrete(expr: str, rate: str = "5m") -> str:
    """A dashboard query with Grafana's variables replaced as the default "All" selection does."""
    return (
        expr.replace("$__rate_interval", rate)
        .replace('"$job"', '".*"')
        .replace('"$instance"', '".*"')
        .replace('"$pool"', '".*"')
    )


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = [_concrete(e) for _, e in queries(json.loads(DASHBOARD_FILE.read_text()))]
    assert len(exprs) >= 15
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(exprs):
        lines += [f"      - record: dashboard:q{i}", f"        expr: {json.dumps(expr)}"]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text("\n".join(lines) + "\n")
    done = _promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------------ end to end


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def _short_rules(text: str) -> str:
    """The shipped rules with every ``for:`` shortened to 3 s, for a run of seconds, not hours (the
    production durations are in the shipped file)."""
    return re.sub(r"for: \d+[smh]", "for: 3s", text)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = _need(PROMETHEUS, "prometheus")
    port = _free_port()
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    (tmp_path / "rules.yml").write_text(_short_rules(RULES_FILE.read_text()))
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        "scrape_configs:\n"
        "  - job_name: sanaa-demo\n"
        f"    file_sd_configs: [{{files: [{targets}], refresh_interval: 1s}}]\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),  # noqa: SIM115 - closed with the process
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not get ready"
            time.sleep(0.2)
        yield port, targets
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start_demo(tmp_path: Path, name: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    # Output to files, not pipes: nothing the demo prints can ever block it.
    out = open(tmp_path / f"{name}.out", "wb")  # noqa: SIM115 - the child holds it; closed below
    err = open(tmp_path / f"{name}.err", "wb")  # noqa: SIM115
    with out, err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sanaa_async_mem.cli",
                "demo",
                "--duration",
                "40",
                "--clients",
                "4",
                "--view",
                "plain",
                "--report",
                str(tmp_path / f"{name}.html"),
                *extra,
            ],
            stdout=out,
            stderr=err,
            cwd=tmp_path,
        )
    deadline = time.monotonic() + 60
    while True:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", (tmp_path / f"{name}.out").read_text())
        if found:
            return proc, int(found.group(1))
        assert proc.poll() is None, (tmp_path / f"{name}.err").read_text()
        assert time.monotonic() < deadline, "the demo did not start"
        time.sleep(0.1)


@pytest.mark.slow
def test_prometheus_scrapes_the_demo_every_dashboard_query_has_data_and_only_the_leak_alerts(
    prometheus: tuple[int, Path], tmp_path: Path
) -> None:
    port, targets = prometheus
    leak, leak_port = _start_demo(tmp_path, "leak", "--leak")
    clean, clean_port = _start_demo(tmp_path, "clean")
    started = time.time()
    try:
        targets.write_text(
            json.dumps(
                [
                    {"targets": [f"127.0.0.1:{leak_port}"], "labels": {"run": "leak"}},
                    {"targets": [f"127.0.0.1:{clean_port}"], "labels": {"run": "clean"}},
                ]
            )
        )
        runs = {f"127.0.0.1:{leak_port}": "leak", f"127.0.0.1:{clean_port}": "clean"}
        fired: dict[str, set[str]] = {}
        while leak.poll() is None or clean.poll() is None:
            for alert in _api(port, "alerts")["alerts"]:
                if alert["state"] == "firing":
                    where = runs.get(alert["labels"].get("instance", ""), "?")
                    fired.setdefault(alert["labels"]["alertname"], set()).add(where)
            time.sleep(1.0)
        ended = time.time()
        for name, proc in (("leak", leak), ("clean", clean)):
            assert proc.wait(60) == 0, (tmp_path / f"{name}.err").read_text()
        # Both were scraped all along (once a second for a 40 s run).
        up = _api(port, "query", query='sum_over_time(up{job="sanaa-demo"}[2m])', time=str(ended))["result"]
        scraped = {r["metric"]["run"]: float(r["value"][1]) for r in up}
        assert set(scraped) == {"leak", "clean"} and min(scraped.values()) >= 25, scraped
        statuses = _api(
            port,
            "query_range",
            query="sanaa_memory_trend_status == 1",
            start=str(started),
            end=str(ended),
            step="1",
        )["result"]
        seen = {
            (r["metric"]["run"], r["metric"]["status"]): len(r["values"]) for r in statuses
        }  # how many seconds each run spent in each status, for the message below
        assert fired.get("SanaaMemoryLeakSuspected") == {"leak"}, (fired, seen)
        # Every query of the shipped dashboard has data over the run (as Grafana's default "All" asks).
        dashboard = json.loads(DASHBOARD_FILE.read_text())
        empty = []
        for title, expr in queries(dashboard):
            result = _api(
                port,
                "query_range",
                query=_concrete(expr, rate="10s"),
                start=str(started),
                end=str(ended),
                step="1",
            )["result"]
            values = [float(v) for series in result for _, v in series["values"]]
            if all(math.isnan(v) for v in values):  # no value at all, or only NaN
                empty.append((title, expr))
        assert not empty, empty
    finally:
        for proc in (leak, clean):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
