"""The ``sanaa-mem`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sanaa-mem",
        description="Pools, resource management and memory health for asyncio services.",
    )
    parser.add_argument("--version", action="version", version=f"sanaa-mem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a small async workload through a pool and print what happened")
    demo.add_argument("--tasks", type=int, default=500, help="concurrent tasks (default: 500)")
    demo.add_argument("--size", type=int, default=10, help="pool size (default: 10)")
    demo.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    demo.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(tasks=args.tasks, size=args.size, seed=args.seed, as_json=args.json)
    parser.error(f"unknown command {args.command!r}")  # argparse rejects it first; NoReturn


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
