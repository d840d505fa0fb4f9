"""The demo's load generator, run as a process of its own so every figure the demo shows is the service's.

``python -m sanaa_async_mem.cli._load PORT --clients N --max-requests M --seed S``: ``clients`` keep-alive
HTTP clients request random items from ``127.0.0.1:PORT`` with a little think time, until SIGTERM or
SIGINT, until standard input closes (the service went away), or until ``max-requests`` were sent. Every
``--every`` seconds, and once more at the end, it prints one JSON line of cumulative figures: ``sent``,
``ok``, ``errors``, ``latency`` (histogram quantiles in seconds) and ``done`` on the last line. The first
line comes at once, before any request: it says the process is up.

Its memory, CPU and event loop are its own: the service's RSS, leak verdict and loop lag do not include it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import Sequence

from .._stats import Histogram
from ._http import HTTPClient

ROWS = 500


class Load:
    """``clients`` keep-alive clients requesting random items until told to stop or the count is reached."""

    def __init__(self, port: int, clients: int, max_requests: int, seed: int) -> None:
        self.port = port
        self.clients = clients
        self.max_requests = max_requests
        self.rng = random.Random(seed)
        self.sent = 0
        self.ok = 0
        self.errors = 0
        self.latency = Histogram()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.clients):
                tg.create_task(self._client())

    async def _client(self) -> None:
        client = HTTPClient(self.port)
        try:
            while not self.stop.is_set() and self.sent < self.max_requests:
                self.sent += 1
                started = time.perf_counter()
                try:
                    status, _ = await client.get(f"/items/{self.rng.randint(1, ROWS)}")
                except (OSError, ValueError):
                    self.errors += 1
                    await asyncio.sleep(0.01)  # the service is restarting or gone: do not spin
                    continue
                self.latency.record(time.perf_counter() - started)
                if status == 200:
                    self.ok += 1
                else:
                    self.errors += 1
                # Think time: keeps the load (and a leak) bounded in rate, and leaves the loop idle moments.
                await asyncio.sleep(self.rng.uniform(0.0, 0.004))
        finally:
            await client.aclose()

    def figures(self, *, done: bool = False) -> dict[str, object]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "errors": self.errors,
            "latency": self.latency.snapshot().as_dict(),
            "done": done,
        }


async def _watch_stdin(stop: asyncio.Event) -> None:
    # The parent keeps our stdin open; when it closes (the service ended, even by SIGKILL), stop.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()
    stop.set()


async def _main(port: int, clients: int, max_requests: int, seed: int, every: float) -> None:
    load = Load(port, clients, max_requests, seed)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, load.stop.set)
    watcher = asyncio.create_task(_watch_stdin(load.stop))
    print(json.dumps(load.figures()), flush=True)  # ready: the service starts its clock on this line
    runner = asyncio.create_task(load.run())
    try:
        while not runner.done():
            await asyncio.wait({runner}, timeout=every)
            print(json.dumps(load.figures()), flush=True)
            if load.stop.is_set():
                break
        await runner
    finally:
        watcher.cancel()
        print(json.dumps(load.figures(done=True)), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sanaa-mem-load", description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.25)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_main(args.port, args.clients, args.max_requests, args.seed, args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())
