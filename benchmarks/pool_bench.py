"""Pool benchmark: our ``AsyncPool`` against the floor, reference variants and the peers, in one run.

    python -m benchmarks.pool_bench                # both loops, ~1 minute, writes results/pool_bench.json
    python -m benchmarks.pool_bench --quick        # a few seconds, smoke test (no JSON unless --write)
    python -m benchmarks.pool_bench --loops uvloop
    python -m benchmarks.pool_bench --compare-with ../before   # also the AsyncPool of another checkout

Two scenarios, each on the default asyncio loop and on uvloop, every pool holding 10 dummy objects:

* uncontended: ``async with acquire(): pass`` in one task, us per op;
* contended: 200 tasks share the 10 objects, each doing ``--per-task`` acquires and holding the object
  across ``await asyncio.sleep(0)``: us per op overall, and the wait per acquire (from calling
  ``acquire()`` to holding the object) at p50, p99 and max.

Every figure is compared with the floor (``asyncio.Semaphore`` + ``deque``, a ``__slots__`` class as the
async context manager) measured in the same round. A "bare hand-off" row shows the least a fair pool can
do in pure Python (idle list, FIFO of waiter futures, direct hand-off; no timeouts, stats or misuse checks),
and ``--compare-with PATH`` adds the AsyncPool of another checkout (e.g. the commit before a change), so a
before/after comparison is measured side by side too: the machine is shared and absolute times drift, so each
"x floor" is the median over rounds of (contender / floor in that round). Contenders run in a rotated order
each round so that none always runs first or last after a collection.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import importlib
import importlib.util
import statistics
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TypeVar

from benchmarks._harness import percentile, print_table, ratio, write_results
from benchmarks._peers import OURS, POOL_SIZE, Acquire, Contender, Opened, Thing, contenders

COMMAND = "python -m benchmarks.pool_bench"
LOOP_NAMES = ("asyncio", "uvloop")
CLOSE_TIMEOUT = 10.0

# the targets of issue 2, as ratios to the floor in the same run
TARGET_UNCONTENDED = 1.0
TARGET_CONTENDED = 1.3
TARGET_MAX_WAIT = 1.5

SampleT = TypeVar("SampleT")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    repeats: int  # rounds; every figure is a median over them
    ops: int  # uncontended acquires per round
    tasks: int  # contended: tasks sharing the POOL_SIZE objects
    per_task: int  # contended: acquires per task per round
    warmup: int  # uncontended acquires before the first round (caches, lazily created objects)
    run_timeout: float  # seconds one round may take before the contender is reported as hung


FULL = Settings(repeats=7, ops=20_000, tasks=200, per_task=100, warmup=2_000, run_timeout=120.0)
QUICK = Settings(repeats=3, ops=2_000, tasks=200, per_task=5, warmup=200, run_timeout=30.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Contended:
    """One contended round. Waits are in seconds."""

    us_per_op: float
    wait_p50: float
    wait_p99: float
    wait_max: float
    double_handouts: int  # an object given to a task while another task still held it
    max_held: int  # most objects held at one moment (more than POOL_SIZE breaks the limit)


@dataclasses.dataclass(slots=True)
class Entry:
    """One contender's progress through a scenario: its samples by round, or why it stopped."""

    contender: Contender
    stack: AsyncExitStack = dataclasses.field(default_factory=AsyncExitStack)
    opened: Opened | None = None
    samples: dict[int, Any] = dataclasses.field(default_factory=dict)
    failure: str | None = None
    close_error: str | None = None
    stats: dict[str, Any] | None = None


# --- rows this benchmark adds to the peers' -----------------------------------------------------------


class BarePool:
    """The least a fair pool can do in pure Python: an idle list, a FIFO of waiter futures, direct hand-off
    to the oldest live waiter, and a cancelled waiter passing its object on. No timeouts, no stats, no
    misuse checks, no hooks: a measure of what the language costs, not a pool anyone should use."""

    __slots__ = ("_idle", "_waiters")

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._idle = [Thing() for _ in range(size)]
        self._waiters: deque[asyncio.Future[Thing]] = deque()

    def acquire(self) -> _BareLease:
        return _BareLease(self)

    def give(self, obj: Thing) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(obj)
                return
        self._idle.append(obj)


class _BareLease:
    __slots__ = ("_obj", "_pool")

    def __init__(self, pool: BarePool) -> None:
        self._pool = pool

    async def __aenter__(self) -> Thing:
        pool = self._pool
        if pool._idle:
            obj = self._obj = pool._idle.pop()
            return obj
        fut: asyncio.Future[Thing] = asyncio.get_running_loop().create_future()
        pool._waiters.append(fut)
        try:
            obj = self._obj = await fut
        except BaseException:
            if not fut.cancelled() and fut.exception() is None:
                pool.give(fut.result())
            raise
        return obj

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.give(self._obj)


async def _open_bare(stack: AsyncExitStack) -> Opened:
    return Opened(BarePool().acquire)


BARE = Contender(
    "bare hand-off (pure-Python minimum)",
    "reference",
    "idle list + FIFO of futures + direct hand-off, nothing else: what pure Python costs",
    _open_bare,
)


def load_checkout(path: str) -> tuple[str, ModuleType]:
    """The ``sanaa_async_mem`` package of another checkout at ``path``, imported under another name so
    that it runs beside this one. Returns a label (the directory's name) and the package."""
    root = Path(path).expanduser().resolve() / "sanaa_async_mem"
    if not (root / "__init__.py").is_file():
        raise SystemExit(f"--compare-with {path}: no sanaa_async_mem package in it")
    alias = f"_sanaa_checkout_{len([m for m in sys.modules if m.startswith('_sanaa_checkout_')])}"
    spec = importlib.util.spec_from_file_location(
        alias, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None and spec.loader is not None
    package = importlib.util.module_from_spec(spec)
    sys.modules[alias] = package
    spec.loader.exec_module(package)
    return root.parent.name, package


def checkout_contender(path: str) -> Contender:
    label, package = load_checkout(path)
    pool_class = importlib.import_module(f"{package.__name__}.pools.pool").AsyncPool

    async def open_(stack: AsyncExitStack) -> Opened:
        pool: Any = pool_class(Thing, min_size=POOL_SIZE, max_size=POOL_SIZE)
        await stack.enter_async_context(pool)
        return Opened(pool.acquire, stats=pool.stats)

    return Contender(
        f"ours @ {label}", "reference", f"AsyncPool of the checkout at {path}, same settings as ours", open_
    )


# --- one round --------------------------------------------------------------------------------------


async def uncontended_round(acquire: Acquire, settings: Settings) -> float:
    """us per ``async with acquire(): pass``, in one task with nothing else on the loop."""
    clock = time.perf_counter
    n = settings.ops
    async with _hang_guard(settings):
        start = clock()
        for _ in range(n):
            async with acquire():
                pass
        elapsed = clock() - start
    return elapsed / n * 1e6


@contextlib.asynccontextmanager
async def _hang_guard(settings: Settings) -> AsyncIterator[None]:
    """Turn a round that never finishes into a failure that says so (not a bare TimeoutError)."""
    try:
        async with asyncio.timeout(settings.run_timeout):
            yield
    except TimeoutError as exc:
        raise TimeoutError(f"hung: no result within {settings.run_timeout:.0f} s") from exc


async def contended_round(acquire: Acquire, settings: Settings) -> Contended:
    """``settings.tasks`` tasks, each doing ``settings.per_task`` acquires, holding across ``sleep(0)``."""
    waits: list[float] = []
    held: set[int] = set()
    counters = {"double": 0, "max_held": 0}

    async def worker() -> None:
        clock = time.perf_counter
        sleep = asyncio.sleep
        record = waits.append
        for _ in range(settings.per_task):
            asked = clock()
            async with acquire() as obj:
                record(clock() - asked)
                key = id(obj)
                if key in held:
                    counters["double"] += 1
                    await sleep(0)
                    continue
                held.add(key)
                if len(held) > counters["max_held"]:
                    counters["max_held"] = len(held)
                await sleep(0)
                held.discard(key)

    start = time.perf_counter()
    tasks = [asyncio.create_task(worker()) for _ in range(settings.tasks)]
    _, pending = await asyncio.wait(tasks, timeout=settings.run_timeout)
    elapsed = time.perf_counter() - start
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        raise TimeoutError(
            f"hung: {len(pending)} of {settings.tasks} tasks unfinished after {settings.run_timeout:.0f} s"
            f" ({len(waits)} acquires done)"
        )
    for task in tasks:
        exc = task.exception()
        if exc is not None:
            raise exc
    total = settings.tasks * settings.per_task
    return Contended(
        us_per_op=elapsed / total * 1e6,
        wait_p50=percentile(waits, 50),
        wait_p99=percentile(waits, 99),
        wait_max=max(waits),
        double_handouts=counters["double"],
        max_held=counters["max_held"],
    )


async def warm_up(acquire: Acquire, settings: Settings) -> None:
    """Let lazy pools create their objects and the interpreter specialise the hot paths."""
    async with _hang_guard(settings):
        for _ in range(settings.warmup):
            async with acquire():
                pass
    await contended_round(acquire, dataclasses.replace(settings, per_task=2))


# --- one scenario on one loop -----------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _should_propagate(exc: BaseException) -> bool:
    """A cancellation aimed at the benchmark itself (Ctrl-C) must end it, not be filed as a failure."""
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling() > 0


async def run_scenario(
    found: Sequence[Contender],
    one_round: Callable[[Acquire, Settings], Awaitable[Any]],
    settings: Settings,
) -> list[Entry]:
    entries = [Entry(c) for c in found]
    for entry in entries:
        try:
            entry.opened = await asyncio.wait_for(entry.contender.open(entry.stack), settings.run_timeout)
            await warm_up(entry.opened.acquire, settings)
        except (Exception, asyncio.CancelledError) as exc:
            if _should_propagate(exc):
                raise
            entry.failure = f"open/warm-up: {describe(exc)}"

    for rnd in range(settings.repeats):
        shift = rnd % len(entries)
        for entry in entries[shift:] + entries[:shift]:
            if entry.failure is not None or entry.opened is None:
                continue
            gc.collect()
            try:
                entry.samples[rnd] = await one_round(entry.opened.acquire, settings)
            except (Exception, asyncio.CancelledError) as exc:
                if _should_propagate(exc):
                    raise
                entry.failure = f"round {rnd + 1}: {describe(exc)}"

    for entry in entries:
        if entry.opened is not None and entry.opened.stats is not None:
            try:
                entry.stats = compact_stats(entry.opened.stats())
            except Exception as exc:
                entry.stats = {"error": f"stats() raised {describe(exc)}"}
        try:
            await asyncio.wait_for(entry.stack.aclose(), CLOSE_TIMEOUT)
        except (Exception, asyncio.CancelledError) as exc:
            if _should_propagate(exc):
                raise
            entry.close_error = describe(exc)
    return entries


async def measure_loop(found: Sequence[Contender], settings: Settings) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    print(f"  uncontended: {len(found)} pools x {settings.repeats} rounds x {settings.ops:,} ops", flush=True)
    uncontended = await run_scenario(found, uncontended_round, settings)
    print(
        f"  contended: {settings.tasks} tasks x {settings.per_task} acquires, {settings.repeats} rounds",
        flush=True,
    )
    contended = await run_scenario(found, contended_round, settings)
    return {
        "loop_class": f"{type(loop).__module__}.{type(loop).__qualname__}",
        "uncontended": summarise_uncontended(uncontended),
        "contended": summarise_contended(contended),
    }


def compact_stats(stats: object) -> dict[str, Any]:
    """A pool's stats object as plain numbers: scalars as they are, time summaries as count/p50/p99/max."""
    if not dataclasses.is_dataclass(stats) or isinstance(stats, type):
        return {"repr": repr(stats)[:1000]}
    out: dict[str, Any] = {}
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if value is None or isinstance(value, int | float | str):
            out[field.name] = value
        elif hasattr(value, "quantile") and hasattr(value, "count"):
            out[field.name] = {
                "count": value.count,
                "p50_s": value.quantile(0.50),
                "p99_s": value.quantile(0.99),
                "max_s": value.max,
            }
    return out


def _format_stats(stats: dict[str, Any]) -> str:
    parts = []
    for key, value in stats.items():
        if isinstance(value, dict):
            parts.append(
                f"{key}: n={value['count']} p50={value['p50_s'] * 1e6:.0f}us "
                f"p99={value['p99_s'] * 1e6:.0f}us max={value['max_s'] * 1e6:.0f}us"
            )
        elif value not in (0, None):
            parts.append(f"{key}={value}")
    return ", ".join(parts)


# --- summaries --------------------------------------------------------------------------------------


def _paired(
    samples: dict[int, SampleT], floor: dict[int, SampleT], value: Callable[[SampleT], float]
) -> float | None:
    """Median over the rounds both ran of value(contender) / value(floor)."""
    ratios = [ratio(value(s), value(floor[r])) for r, s in samples.items() if r in floor]
    return statistics.median(ratios) if ratios else None


def _status(entry: Entry) -> str:
    if entry.failure is not None:
        return f"failed ({entry.failure})"
    return "ok"


def summarise_uncontended(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    floor = entries[0].samples
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        samples: dict[int, float] = entry.samples
        row: dict[str, Any] = {"role": entry.contender.role, "status": _status(entry)}
        if samples:
            row["us_per_op"] = statistics.median(samples.values())
            row["x_floor"] = _paired(samples, floor, float)
            row["rounds_us_per_op"] = [samples[r] for r in sorted(samples)]
        if entry.close_error:
            row["close_error"] = entry.close_error
        if entry.stats:
            row["pool_stats"] = entry.stats
        out[entry.contender.name] = row
    return out


_CONTENDED_FIELDS: dict[str, Callable[[Contended], float]] = {
    "us_per_op": lambda s: s.us_per_op,
    "wait_p50_us": lambda s: s.wait_p50 * 1e6,
    "wait_p99_us": lambda s: s.wait_p99 * 1e6,
    "wait_max_ms": lambda s: s.wait_max * 1e3,
}


def summarise_contended(entries: list[Entry]) -> dict[str, dict[str, Any]]:
    floor: dict[int, Contended] = entries[0].samples
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        samples: dict[int, Contended] = entry.samples
        row: dict[str, Any] = {"role": entry.contender.role, "status": _status(entry)}
        if samples:
            rounds = [samples[r] for r in sorted(samples)]
            for key, value in _CONTENDED_FIELDS.items():
                row[key] = statistics.median(value(s) for s in rounds)
                row[f"{key}_x_floor"] = _paired(samples, floor, value)
            row["double_handouts"] = sum(s.double_handouts for s in rounds)
            row["max_held"] = max(s.max_held for s in rounds)
            row["rounds"] = [dataclasses.asdict(s) for s in rounds]
        if entry.close_error:
            row["close_error"] = entry.close_error
        if entry.stats:
            row["pool_stats"] = entry.stats
        out[entry.contender.name] = row
    return out


# --- printing and the verdict -----------------------------------------------------------------------


def _cell(row: dict[str, Any], key: str) -> Any:
    value = row.get(key)
    return "-" if value is None else value


def _x(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.01 else f"{value:.4f}x"


def _note(row: dict[str, Any]) -> str:
    notes = [] if row["status"] == "ok" else [row["status"]]
    if row.get("close_error"):
        notes.append(f"close: {row['close_error']}")
    if row.get("double_handouts"):
        notes.append(f"{row['double_handouts']} DOUBLE HANDOUTS")
    if row.get("max_held", 0) > POOL_SIZE:
        notes.append(f"{row['max_held']} held at once > {POOL_SIZE}")
    return "; ".join(notes)


def print_loop(loop_name: str, measured: dict[str, Any], settings: Settings) -> None:
    unc = measured["uncontended"]
    print_table(
        f"[{loop_name}] uncontended `async with acquire(): pass` "
        f"({settings.repeats} rounds x {settings.ops:,} ops; median; x floor = median of per-round ratios)",
        ["pool", "role", "us/op", "x floor", "note"],
        [
            [name, row["role"], _cell(row, "us_per_op"), _x(row, "x_floor"), _note(row)]
            for name, row in unc.items()
        ],
    )
    con = measured["contended"]
    print_table(
        f"[{loop_name}] contended: {settings.tasks} tasks / {POOL_SIZE} objects, "
        f"{settings.per_task} acquires each, hold across sleep(0) ({settings.repeats} rounds; median)",
        ["pool", "us/op", "x", "wait p50 us", "x", "wait p99 us", "x", "wait max ms", "x", "note"],
        [
            [
                name,
                _cell(row, "us_per_op"),
                _x(row, "us_per_op_x_floor"),
                _cell(row, "wait_p50_us"),
                _x(row, "wait_p50_us_x_floor"),
                _cell(row, "wait_p99_us"),
                _x(row, "wait_p99_us_x_floor"),
                _cell(row, "wait_max_ms"),
                _x(row, "wait_max_ms_x_floor"),
                _note(row),
            ]
            for name, row in con.items()
        ],
    )
    for scenario in ("uncontended", "contended"):
        for name, row in measured[scenario].items():
            if row.get("pool_stats"):
                print(f"  {name} stats() after {scenario}: {_format_stats(row['pool_stats'])}")


def _check(label: str, value: float | None, limit: float) -> dict[str, Any]:
    ok = value is not None and value <= limit
    return {"check": label, "value": value, "limit": limit, "pass": ok}


def verdict(loops: dict[str, dict[str, Any]], skipped: dict[str, str]) -> dict[str, Any]:
    """Issue 2's targets for ours on every loop measured."""
    if OURS in skipped:
        return {"status": f"no verdict: {OURS} skipped ({skipped[OURS]})", "loops": {}}
    out: dict[str, Any] = {"loops": {}}
    for loop_name, measured in loops.items():
        unc, con = measured["uncontended"], measured["contended"]
        mine_u, mine_c = unc[OURS], con[OURS]
        checks = [
            _check("uncontended x floor", mine_u.get("x_floor"), TARGET_UNCONTENDED),
            _check("contended us/op x floor", mine_c.get("us_per_op_x_floor"), TARGET_CONTENDED),
            _check("contended max wait x floor", mine_c.get("wait_max_ms_x_floor"), TARGET_MAX_WAIT),
        ]
        peers = {n: r.get("x_floor") for n, r in unc.items() if r["role"] == "peer" and r.get("x_floor")}
        if peers and mine_u.get("x_floor") is not None:
            closest = min(peers, key=lambda n: peers[n])
            checks.append(
                {
                    "check": f"uncontended faster than every peer (closest: {closest})",
                    "value": mine_u["x_floor"],
                    "limit": peers[closest],
                    "pass": mine_u["x_floor"] < peers[closest],
                }
            )
        for key in ("double_handouts",):
            checks.append(_check(f"contended {key.replace('_', ' ')}", mine_c.get(key, 0), 0))
        if mine_u["status"] != "ok" or mine_c["status"] != "ok":
            checks.append(
                {
                    "check": "ran to the end",
                    "value": f"{mine_u['status']} / {mine_c['status']}",
                    "limit": "ok",
                    "pass": False,
                }
            )
        out["loops"][loop_name] = checks
    everything = [c["pass"] for checks in out["loops"].values() for c in checks]
    out["status"] = "all targets met" if everything and all(everything) else "targets missed"
    return out


def print_verdict(result: dict[str, Any]) -> None:
    print(f"\nverdict: {result['status']}")
    for loop_name, checks in result["loops"].items():
        for c in checks:
            value, limit = c["value"], c["limit"]
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            bound = f"{limit:.2f}" if isinstance(limit, float) else str(limit)
            mark = "PASS" if c["pass"] else "FAIL"
            print(f"  [{loop_name}] {mark}  {c['check']}: {shown} (target {bound})")


# --- the command ------------------------------------------------------------------------------------


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loop_factories(names: Sequence[str]) -> tuple[dict[str, LoopFactory], dict[str, str]]:
    found: dict[str, LoopFactory] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if name == "asyncio":
            # named explicitly: whatever policy another import may have installed, this is the stdlib loop
            found[name] = asyncio.SelectorEventLoop
        elif name == "uvloop":
            try:
                import uvloop
            except ImportError as exc:
                skipped[name] = describe(exc)
            else:
                found[name] = uvloop.new_event_loop
        else:
            raise SystemExit(f"unknown loop {name!r}: choose from {', '.join(LOOP_NAMES)}")
    return found, skipped


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few seconds in all: a smoke test")
    parser.add_argument("--loops", default=",".join(LOOP_NAMES), help="comma-separated: asyncio,uvloop")
    parser.add_argument("--repeats", type=int, help="rounds per scenario (median taken)")
    parser.add_argument("--ops", type=int, help="uncontended acquires per round")
    parser.add_argument("--per-task", type=int, help="contended acquires per task per round")
    parser.add_argument("--write", action="store_true", help="write the JSON even with --quick")
    parser.add_argument("--no-write", action="store_true", help="do not write the JSON")
    parser.add_argument(
        "--compare-with",
        action="append",
        default=[],
        metavar="PATH",
        help="also measure the AsyncPool of the checkout at PATH (e.g. the commit before a change)",
    )
    parser.add_argument("--no-peers", action="store_true", help="only the floor, references and ours")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    overrides = {"repeats": args.repeats, "ops": args.ops, "per_task": args.per_task}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if settings.repeats < 1 or settings.ops < 1 or settings.per_task < 1:
        raise SystemExit("--repeats, --ops and --per-task must be at least 1")

    found, skipped = contenders()
    if args.no_peers:
        found = [c for c in found if c.role != "peer"]
    # The bare hand-off and other checkouts go just before ours (the floor stays first).
    extra = [BARE, *(checkout_contender(path) for path in args.compare_with)]
    at = next((i for i, c in enumerate(found) if c.name == OURS), len(found))
    found[at:at] = extra
    factories, skipped_loops = loop_factories([n.strip() for n in args.loops.split(",") if n.strip()])
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for name, reason in skipped_loops.items():
        print(f"skipped loop {name}: {reason}")

    print("\nrows:")
    for c in found:
        print(f"  {c.name} [{c.role}]: {c.what}")

    started = time.perf_counter()
    loops: dict[str, dict[str, Any]] = {}
    for loop_name, factory in factories.items():
        print(f"\n== {loop_name} ==", flush=True)
        with asyncio.Runner(loop_factory=factory) as runner:
            loops[loop_name] = runner.run(measure_loop(found, settings))
        print_loop(loop_name, loops[loop_name], settings)

    judged = verdict(loops, skipped)
    print_verdict(judged)
    elapsed = time.perf_counter() - started
    print(f"\nmeasured in {elapsed:.1f} s")

    results = {
        "settings": {
            **dataclasses.asdict(settings),
            "pool_size": POOL_SIZE,
            "quick": args.quick,
            "compare_with": args.compare_with,
            "no_peers": args.no_peers,
        },
        "contenders": {c.name: {"role": c.role, "what": c.what} for c in found},
        "skipped": skipped,
        "skipped_loops": skipped_loops,
        "loops": loops,
        "targets": {
            "uncontended_x_floor": TARGET_UNCONTENDED,
            "contended_us_per_op_x_floor": TARGET_CONTENDED,
            "contended_wait_max_x_floor": TARGET_MAX_WAIT,
        },
        "verdict": judged,
        "elapsed_s": elapsed,
    }
    if not args.no_write and (args.write or not args.quick):
        write_results("pool_bench", results, command=COMMAND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
