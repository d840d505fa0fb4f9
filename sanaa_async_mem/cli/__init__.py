"""The ``sanaa-mem`` command: ``demo`` (a real service under load, with every tool on), ``watch`` (any
process's memory trend), ``top`` (a running service's pools, holders and memory, live, from its
``/memory`` endpoint) and ``report``.

Exit codes, the same for every command:

* 0: done (for ``demo``: every database connection was closed);
* 1: the check failed (``demo``: connections were left open; ``watch --fail-on-leak``: a leak was found);
* 2: bad arguments or settings (a short message on stderr, never a traceback): an unknown option, a missing
  command, a malformed environment variable, a summary file of the wrong shape;
* 3: could not run: a file could not be read or written, a database could not be reached, an optional
  package is missing (the message names the extra to install), or (``watch``) the process does not exist,
  cannot be read, or the command cannot be started; (``top``) the service cannot be reached or its
  answer is not a ``/memory`` document;
* 4: (``watch -- COMMAND``) the command failed: it exited by itself with a non-zero code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .._version import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ERROR = 3
EXIT_COMMAND_FAILED = 4

_EXIT_CODES = """\
exit codes:
  0  done        1  check failed (demo: connections left open; watch --fail-on-leak: leak found)
  2  bad usage   3  could not run (I/O, database, missing optional package, no such process,
                    top: service unreachable or not a /memory endpoint)
  4  the command given to 'watch --' exited by itself with a non-zero code
"""

_DEMO_EXAMPLES = """\
examples:
  sanaa-mem demo                          20 s on an embedded SQLite database
  sanaa-mem demo --leak --duration 10     plant a leak and watch the detector find it
  sanaa-mem demo --dsn postgresql://postgres@127.0.0.1/test
  sanaa-mem demo --json --duration 5 > run.json

The service binds 127.0.0.1 only. Ctrl-C stops the load early; the report is still written.
"""

_WATCH_EXAMPLES = """\
examples:
  sanaa-mem watch --pid 4242                       until it exits or Ctrl-C, one sample a second
  sanaa-mem watch --pid 4242 --duration 600 --log app.jsonl
  sanaa-mem watch --duration 60 --fail-on-leak -- python -m myservice
  sanaa-mem watch --json --interval 0.5 --duration 30 -- ./worker --once > watch.json

With '-- COMMAND ...' the command is started, watched, and ended (SIGTERM, then SIGKILL after 5 s) when
the watch ends; if it exits on its own, the watch stops and reports. The log is the profiler's JSON Lines:
'sanaa-mem report app.jsonl' draws it. The threshold defaults to MEMORY_LEAK_THRESHOLD (1000 B/s).
"""

_TOP_EXAMPLES = """\
examples:
  sanaa-mem top http://127.0.0.1:8000/memory        redrawn every second until Ctrl-C
  sanaa-mem top 127.0.0.1:8000 --interval 0.5       (no path: /memory)
  sanaa-mem top http://127.0.0.1:8000/memory --json  one reading, as JSON, then exit

The endpoint serves MemoryOptimizer.get_memory_status() (as the example apps' /memory does). Each pool
shows who holds its objects: task, purpose, for how long, and the file:line that acquired it.
"""

_REPORT_EXAMPLES = """\
examples:
  sanaa-mem report sanaa-mem-demo.jsonl --out report.html
  sanaa-mem report app.jsonl --summary sanaa-mem-demo.summary.json --out report.html
  sanaa-mem report app.jsonl --threshold 4096 --json

LOG is the JSON Lines file a MemoryProfiler(store=...) writes. The page embeds plotly's JavaScript and
opens without a network (needs the 'report' extra: pip install 'sanaa-async-mem[report]').
"""


class _Parser(argparse.ArgumentParser):
    """argparse with our exit code for bad usage and a one-line hint instead of the whole usage."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message}\n(see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="sanaa-mem",
        description="Pools, resource management and memory health for asyncio services.",
        epilog="examples:\n  sanaa-mem demo\n  sanaa-mem watch --pid 4242 --fail-on-leak --duration 60\n"
        "  sanaa-mem report sanaa-mem-demo.jsonl --out report.html\n\n" + _EXIT_CODES,
        formatter_class=fmt,
    )
    parser.add_argument("-V", "--version", action="version", version=f"sanaa-mem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = sub.add_parser(
        "demo",
        help="run a small HTTP service with a database pool under load, with the memory tools on",
        description="Run an HTTP service on 127.0.0.1 whose handlers use a pooled database connection, load "
        "it from real clients, and show pool use, memory trend, GC pauses and loop lag live; then write the "
        "snapshot log, a JSON summary and an HTML report.",
        epilog=_DEMO_EXAMPLES + "\n" + _EXIT_CODES,
        formatter_class=fmt,
    )
    demo.add_argument("--duration", type=_positive_float, default=20.0, help="seconds of load (default: 20)")
    demo.add_argument(
        "--clients", "--tasks", dest="clients", type=_positive_int, default=16,
        help="concurrent keep-alive HTTP clients (default: 16)",
    )  # fmt: skip
    demo.add_argument("--size", type=_positive_int, default=5, help="database pool size (default: 5)")
    demo.add_argument(
        "--dsn", help="use this PostgreSQL database (asyncpg) instead of an embedded SQLite one"
    )
    demo.add_argument("--leak", action="store_true", help="plant a leak in the handler so the detector fires")
    demo.add_argument(
        "--interval",
        type=_positive_float,
        default=0.2,
        help="seconds between memory snapshots (default: 0.2)",
    )
    demo.add_argument(
        "--leak-threshold", type=_positive_float, default=64 * 1024, metavar="BYTES_PER_S",
        help="growth that counts as a leak (default: 65536 B/s)",
    )  # fmt: skip
    demo.add_argument(
        "--max-requests", type=_positive_int, default=2_000_000, help="stop after this many requests"
    )
    demo.add_argument(
        "--report", type=Path, default=Path("sanaa-mem-demo.html"), metavar="PATH",
        help="HTML report to write; the snapshot log (.jsonl) and summary (.summary.json) go next to it "
        "(default: ./sanaa-mem-demo.html)",
    )  # fmt: skip
    demo.add_argument(
        "--view", choices=("auto", "live", "plain", "none"), default="auto",
        help="live panel (rich, on a terminal), plain periodic lines, or nothing (default: auto)",
    )  # fmt: skip
    demo.add_argument("--seed", type=int, default=1, help="random seed of the load (default: 1)")
    demo.add_argument("--json", action="store_true", help="print the whole result as JSON (no live view)")

    watch = sub.add_parser(
        "watch",
        help="sample a process's memory (--pid PID, or -- COMMAND to start one) and judge its trend",
        description="Sample the memory (RSS, or USS) of a running process, or of a command started for the "
        "occasion, show it live, and run the trend analyzer on it; optionally fail when it leaks (for CI).",
        epilog=_WATCH_EXAMPLES + "\n" + _EXIT_CODES,
        formatter_class=fmt,
        usage="%(prog)s [options] (--pid PID | -- COMMAND [ARG ...])",
    )
    watch.add_argument("--pid", type=_positive_int, help="the process to watch")
    watch.add_argument(
        "target_command", nargs="*", metavar="COMMAND",
        help="a command to start and watch (after '--'); it is ended when the watch ends",
    )  # fmt: skip
    watch.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between samples (default: 1)"
    )
    watch.add_argument(
        "--duration", type=_positive_float,
        help="seconds to watch (default: until the process exits or Ctrl-C)",
    )  # fmt: skip
    watch.add_argument(
        "--threshold", type=_positive_float, metavar="BYTES_PER_S",
        help="growth that counts as a leak (default: MEMORY_LEAK_THRESHOLD, else 1000 B/s)",
    )  # fmt: skip
    watch.add_argument(
        "--warmup", type=_non_negative_float, default=0.0, metavar="SECONDS",
        help="seconds after the start that are sampled but not judged (start-up growth; default: 0)",
    )  # fmt: skip
    watch.add_argument("--uss", action="store_true", help="judge USS (memory unique to the process), not RSS")
    watch.add_argument(
        "--log", type=Path, metavar="PATH",
        help="write the samples as a snapshot log (JSON Lines) that 'sanaa-mem report' reads",
    )  # fmt: skip
    watch.add_argument(
        "--view", choices=("auto", "live", "plain", "none"), default="auto",
        help="live panel (rich, on a terminal), plain periodic lines, or nothing (default: auto)",
    )  # fmt: skip
    watch.add_argument("--json", action="store_true", help="print the result as JSON (no live view)")
    watch.add_argument(
        "--fail-on-leak", action="store_true", help="exit with code 1 when the verdict is a leak"
    )

    top = sub.add_parser(
        "top",
        help="a live view of a running service's pools, holders, memory, GC and loop, from its /memory",
        description="Read a running service's /memory endpoint every --interval seconds and show its pools "
        "(size, use, waiters, counters, and who holds each object, for what and since when), the memory "
        "verdict, GC, loop lag and loop utilization, redrawn in place.",
        epilog=_TOP_EXAMPLES + "\n" + _EXIT_CODES,
        formatter_class=fmt,
    )
    top.add_argument("url", metavar="URL", help="the service's /memory endpoint (no path: /memory)")
    top.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between readings (default: 1)"
    )
    top.add_argument(
        "--duration", type=_positive_float, help="stop after this many seconds (default: Ctrl-C)"
    )
    top.add_argument(
        "--timeout", type=_positive_float, default=5.0, help="seconds to wait for one reading (default: 5)"
    )
    top.add_argument(
        "--view", choices=("auto", "live", "plain"), default="auto",
        help="live panel (rich, on a terminal) or plain lines (default: auto)",
    )  # fmt: skip
    top.add_argument("--json", action="store_true", help="print one reading as JSON and exit")

    report = sub.add_parser(
        "report",
        help="turn a snapshot log (JSON Lines) into a self-contained HTML report with plots",
        description="Render a MemoryProfiler snapshot log as an HTML page: memory over time with the fitted "
        "trend and its confidence band, top consumers, and (with a demo summary) GC pauses, pool waits "
        "and loop lag.",
        epilog=_REPORT_EXAMPLES + "\n" + _EXIT_CODES,
        formatter_class=fmt,
    )
    report.add_argument("log", type=Path, metavar="LOG", help="snapshot log (JSON Lines)")
    report.add_argument(
        "--out", "-o", type=Path, default=Path("report.html"), help="HTML file (default: report.html)"
    )
    report.add_argument("--summary", type=Path, help="a demo's .summary.json: adds GC, pool and lag plots")
    report.add_argument(
        "--threshold", type=_positive_float, metavar="BYTES_PER_S",
        help="growth that counts as a leak (default: the summary's, else 1000 B/s)",
    )  # fmt: skip
    report.add_argument("--json", action="store_true", help="print the verdict and the output path as JSON")
    return parser


def _report(args: argparse.Namespace) -> int:
    from .report import ReportError, SummaryError, explanation, label, load_summary, render_report

    try:
        summary = load_summary(args.summary) if args.summary is not None else None
    except SummaryError as exc:
        print(f"sanaa-mem report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"sanaa-mem report: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        report = render_report(args.log, args.out, summary=summary, threshold=args.threshold)
    except (OSError, ReportError, ImportError) as exc:
        print(f"sanaa-mem report: {_describe(exc)}", file=sys.stderr)
        return EXIT_ERROR
    verdict = report.verdict
    source = verdict.get("source", "rss")
    if args.json:
        print(
            json.dumps(
                {
                    "report": str(args.out),
                    "snapshots": len(report.snapshots),
                    "samples": len(report.series.times),
                    "runs": len(report.log.runs),
                    "skipped_lines": report.log.skipped,
                    "source": source,
                    "threshold": report.threshold,
                    "threshold_source": report.threshold_source,
                    "verdict_source": report.verdict_source,
                    "trend": verdict,
                }
            )
        )
    else:
        print(
            f"{len(report.series.times)} samples ({len(report.snapshots)} snapshots); "
            f"trend ({source}): {label(verdict)}: {explanation(verdict)} [{report.verdict_source}]"
        )
        if report.log.skipped:
            print(f"{report.log.skipped} lines of the log were not valid records and were skipped")
        if len(report.log.runs) > 1:
            print(f"the log holds {len(report.log.runs)} runs: the report shows the newest")
        print(f"report: {args.out}")
    return EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    from ..config import get_settings
    from ..errors import ConfigurationError
    from .watch import WatchOptions, run_watch

    if (args.pid is None) == (not args.target_command):
        problem = (
            "give --pid PID or -- COMMAND ..., not both" if args.pid else "give --pid PID or -- COMMAND ..."
        )
        print(f"sanaa-mem watch: {problem}\n(see 'sanaa-mem watch --help')", file=sys.stderr)
        return EXIT_USAGE
    threshold = args.threshold
    if threshold is None:
        try:
            threshold = get_settings().leak_threshold_bytes_per_second
        except ConfigurationError as exc:
            print(f"sanaa-mem watch: {exc}", file=sys.stderr)
            return EXIT_USAGE
    return run_watch(
        WatchOptions(
            pid=args.pid,
            command=tuple(args.target_command),
            interval=args.interval,
            duration=args.duration,
            threshold=threshold,
            warmup=args.warmup,
            uss=args.uss,
            log=args.log,
            view=args.view,
            as_json=args.json,
            fail_on_leak=args.fail_on_leak,
        )
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"no such file: {exc.filename}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parses ``argv`` (default ``sys.argv[1:]``), runs the command, returns its exit
    code (see the module docstring). Ctrl-C outside the demo's own handling exits with 130, quietly."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        # Like any argparse tool: no command is a usage error, with the usage to say what to type.
        parser.print_usage(sys.stderr)
        hint = f"{parser.prog}: a command is needed: demo, watch, top or report (see '{parser.prog} --help')"
        print(hint, file=sys.stderr)
        return EXIT_USAGE
    from ..errors import ConfigurationError

    try:
        return _run(parser, args)
    except ConfigurationError as exc:
        # A malformed environment variable or setting: what it is and what it must be, in one line.
        print(f"sanaa-mem {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sanaa-mem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`sanaa-mem ... | head`): stop quietly, as Unix tools do, and keep the
        # interpreter's final flush of stdout from raising again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "demo":
        from .demo import DemoOptions, run_demo

        return run_demo(
            DemoOptions(
                duration=args.duration,
                clients=args.clients,
                size=args.size,
                dsn=args.dsn,
                leak=args.leak,
                interval=args.interval,
                leak_threshold=args.leak_threshold,
                max_requests=args.max_requests,
                report=args.report,
                view=args.view,
                as_json=args.json,
                seed=args.seed,
            )
        )
    if args.command == "report":
        return _report(args)
    if args.command == "watch":
        return _watch(args)
    if args.command == "top":
        from .top import TopOptions, run_top

        return run_top(
            TopOptions(
                url=args.url,
                interval=args.interval,
                duration=args.duration,
                timeout=args.timeout,
                as_json=args.json,
                view=args.view,
            )
        )
    parser.error(f"unknown command {args.command!r}")  # argparse rejects it first


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
