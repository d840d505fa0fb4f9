"""The snapshot record and its JSON Lines store, including a writer killed with SIGKILL mid-run."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanaa_async_mem.memory.snapshots import (
    MemorySnapshot,
    RunHeader,
    SnapshotStore,
    TopConsumer,
    load_log,
    load_snapshots,
    parse_lines,
    parse_log,
    read_log,
    read_snapshots,
)


def snap(i: int, *, top: bool = False) -> MemorySnapshot:
    return MemorySnapshot(
        timestamp=1.7e9 + i,
        monotonic=float(i),
        rss=1000 + i,
        vms=5000 + i,
        uss=None if i % 2 else 900 + i,
        system_total=8 << 30,
        system_available=4 << 30,
        system_percent=50.0,
        gc_counts=(i, 2, 1),
        traced=100 + i if top else None,
        traced_peak=200 + i if top else None,
        top=(TopConsumer("app.py:10", 4096, 3, 1024, 1),) if top else (),
    )


def test_record_round_trips_through_one_json_line() -> None:
    for s in (snap(1), snap(2, top=True)):
        line = s.to_json()
        assert "\n" not in line
        assert json.loads(line)["v"] == 1
        assert MemorySnapshot.from_json(line) == s


def test_non_finite_numbers_are_refused_on_write() -> None:
    bad = MemorySnapshot(timestamp=float("nan"), monotonic=0.0, rss=1, vms=1)
    with pytest.raises(ValueError):
        bad.to_json()


@pytest.mark.parametrize(
    "line",
    [
        '{"v":1,"timestamp":1.0,"monotonic":1.0,"rss":1',  # torn
        "not json at all",
        "[1, 2, 3]",
        '{"v":1,"timestamp":1.0,"monotonic":1.0,"rss":"big","vms":1}',
        '{"v":99,"timestamp":1.0,"monotonic":1.0,"rss":1,"vms":1}',
        '{"v":1,"timestamp":1.0,"monotonic":1.0,"vms":1}',
        "\x80\x04\x95 pickled-looking bytes",
    ],
)
def test_a_corrupt_line_is_skipped_with_a_warning_and_nothing_else_is_lost(
    line: str, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [snap(1).to_json(), line, snap(2).to_json()]
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        out = parse_lines(lines, source="f.jsonl")
    assert [s.monotonic for s in out] == [1.0, 2.0]
    [record] = [r for r in caplog.records if r.name == "sanaa.memory"]
    assert "f.jsonl:2" in record.getMessage()
    assert record.sanaa_line == 2  # type: ignore[attr-defined]


async def test_store_appends_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "snaps.jsonl"
    async with SnapshotStore(path) as store:
        for i in range(5):
            await store.append(snap(i, top=i == 3))
        assert store.records_written == 5
    assert await read_snapshots(path) == [snap(i, top=i == 3) for i in range(5)]
    assert load_snapshots(path) == await read_snapshots(path)
    assert len(path.read_text().splitlines()) == 5


async def test_reopening_after_a_torn_record_keeps_the_next_record_intact(tmp_path: Path) -> None:
    path = tmp_path / "snaps.jsonl"
    path.write_text(snap(0).to_json() + "\n" + snap(1).to_json()[:25])  # killed mid-record
    async with SnapshotStore(path) as store:
        await store.append(snap(2))
    assert [s.monotonic for s in await read_snapshots(path)] == [0.0, 2.0]


async def test_fsync_mode_writes_the_same_records(tmp_path: Path) -> None:
    path = tmp_path / "snaps.jsonl"
    store = SnapshotStore(path, fsync=True)
    await store.append(snap(7))  # opens on first use
    await store.close()
    await store.close()  # idempotent
    assert await read_snapshots(path) == [snap(7)]


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from sanaa_async_mem.memory.snapshots import MemorySnapshot, SnapshotStore, TopConsumer

    async def main(path):
        async with SnapshotStore(path) as store:
            i = 0
            while True:
                top = tuple(TopConsumer(f"m.py:{j}", 10 * j, j) for j in range(50))
                snap = MemorySnapshot(timestamp=1.7e9 + i, monotonic=float(i), rss=i, vms=i, top=top)
                await store.append(snap)
                i += 1

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_writer_killed_with_sigkill_loses_at_most_the_record_being_written(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            if path.exists() and path.stat().st_size > 200_000:
                break
            time.sleep(0.02)
        else:  # pragma: no cover - only on a very slow machine
            pytest.fail("the writer did not write anything in 60 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    raw = path.read_bytes()
    complete = raw.count(b"\n")
    records = load_snapshots(path)
    # Every line that reached the file whole is read back, in order, with nothing missing in between.
    assert len(records) == complete > 10
    assert [r.monotonic for r in records] == [float(i) for i in range(complete)]
    assert all(len(r.top) == 50 for r in records)


# -- runs, hostile lines ------------------------------------------------------------------------------------


def header(pid: int, threshold: float = 1000.0) -> RunHeader:
    return RunHeader(
        started=1.7e9,
        monotonic=0.0,
        pid=pid,
        host="h",
        python="3.11",
        library="0.1.0",
        settings={"leak_threshold": threshold, "interval": 1.0},
    )


def test_samples_and_verdict_round_trip() -> None:
    s = dataclasses.replace(
        snap(3, top=True),
        samples=((1.0, 10, None), (2.0, 12, 7)),
        verdict={"status": "no_growth", "slope": 0.0},
    )
    back = MemorySnapshot.from_json(s.to_json())
    assert back == s
    assert back.samples == ((1.0, 10, None), (2.0, 12, 7))
    assert back.verdict == {"status": "no_growth", "slope": 0.0}


def test_top_consumer_growth_per_minute() -> None:
    c = TopConsumer(
        "app/cache.py:4", 6000, 10, size_diff=3000, count_diff=5, text="cache.append(x)", seconds=30.0
    )
    assert c.growth_per_minute == 6000.0
    assert c.as_dict()["growth_per_minute"] == 6000.0
    assert TopConsumer("a.py:1", 1, 1).growth_per_minute == 0.0


async def test_two_runs_appended_to_one_log_stay_two_runs(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    for pid, threshold in ((1, 1000.0), (2, 65536.0)):
        async with SnapshotStore(path) as store:
            await store.append(header(pid, threshold))
            for i in range(3):  # each process's monotonic clock starts anew
                await store.append(snap(i))
    log = load_log(path)
    assert [run.header.pid for run in log.runs if run.header] == [1, 2]
    assert [len(run.snapshots) for run in log.runs] == [3, 3]
    assert log.last_run is not None and log.last_run.header is not None
    assert log.last_run.header.settings["leak_threshold"] == 65536.0
    assert len(load_snapshots(path)) == 6
    assert (await read_log(path)) == log


def test_a_log_without_headers_is_split_where_the_clock_goes_backwards() -> None:
    lines = [snap(i).to_json() for i in (0, 1, 2, 0, 1)]
    log = parse_log(lines)
    assert [len(r.snapshots) for r in log.runs] == [3, 2]
    assert all(r.header is None for r in log.runs)


def test_a_deeply_nested_line_is_skipped_and_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    lines = [snap(0).to_json(), deep, '{"v": 1, "type": "run"}', "not json", snap(1).to_json()]
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        log = parse_log(lines, source="hostile.jsonl")
    assert log.skipped == 3
    assert [s.monotonic for s in log.snapshots] == [0.0, 1.0]
    assert any("nested too deeply" in r.getMessage() for r in caplog.records)


def test_many_corrupt_lines_are_summarised_not_logged_one_by_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sanaa.memory"):
        log = parse_log(["garbage"] * 500 + [snap(0).to_json()])
    assert log.skipped == 500 and len(log.snapshots) == 1
    assert len(caplog.records) <= 11


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.text(max_size=200),
            st.builds(
                json.dumps,
                st.recursive(
                    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                    lambda children: (
                        st.lists(children, max_size=4)
                        | st.dictionaries(st.text(max_size=10), children, max_size=4)
                    ),
                    max_leaves=30,
                ),
            ),
        ),
        max_size=20,
    )
)
def test_no_line_can_make_a_log_unreadable(lines: list[str]) -> None:
    good = [snap(0).to_json(), *lines, snap(1).to_json()]
    log = parse_log(good)
    kept = log.snapshots
    assert kept[0] == snap(0) and kept[-1] == snap(1)
    assert log.skipped + len(kept) + sum(1 for r in log.runs if r.header) <= len(
        [x for x in good if x.strip()]
    )
