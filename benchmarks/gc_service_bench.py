"""GC on a real service: uvicorn + Starlette with a large startup heap, default collector vs ``gc.freeze()``
vs the library turned on exactly as the README shows (``memory_lifespan`` + ``GCRequestMiddleware``).

    python -m benchmarks.gc_service_bench                     # 250 and 400 req/s, 5 rounds of 40 s: ~35 min
    python -m benchmarks.gc_service_bench --rates 250 --rounds 1 --seconds 20   # a quick look

The server runs in its own process (uvicorn, h11, the asyncio loop). At startup it builds an in-memory
catalog of about 630k tracked objects; each request looks an item up, renders it through a small object
graph with parent links (cyclic garbage, freed only by the collector) and goes through a churning LRU cache
of rendered summaries (a miss builds one, with a cycle, and evicts the oldest, which becomes garbage in the
old generation). The load comes from a second process: requests on a fixed schedule (open loop) over
keep-alive HTTP/1.1 connections, latency measured from the *scheduled* time, so a pause delays every
request due during it (no coordinated omission).

Variants, rotated in every round (absolute speeds drift on a shared machine: compare within a round):

* ``default``: the app with CPython's collector untouched;
* ``freeze``: the same app with ``gc.collect(); gc.freeze()`` at the end of its lifespan startup;
* ``library``: ``Starlette(lifespan=memory_lifespan(lifespan=app_lifespan))`` and
  ``app.add_middleware(GCRequestMiddleware)``, nothing else: the README's way, with its defaults.

Measured per run: p50/p99/max latency, server CPU seconds per request (``/proc`` utime + stime of the
server over the measured window), the server's peak RSS (``VmHWM``) and its GC pauses and GC CPU (a
``gc.callbacks`` meter, the same in every variant, read through ``/__gc`` after the window).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from benchmarks._harness import percentile, print_table, ratio, write_results

VARIANTS = ("default", "freeze", "library")
CATALOG_ITEMS = 210_000  # x 3 tracked containers each (dicts holding only atoms are not tracked): ~630k
CACHE_ENTRIES = 5_000
RENDER_NODES = 12  # per request: a small tree whose nodes point back at their parent (cyclic garbage)

# ------------------------------------------------------------------------------------------- the server


class _GCMeter:
    """GC CPU (thread_time) and pauses (perf_counter) per generation, via gc.callbacks."""

    def __init__(self) -> None:
        self.cpu = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.max_pause = [0.0, 0.0, 0.0]
        self.full_pauses: list[float] = []
        self._t0 = 0.0
        self._c0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            self._c0 = time.thread_time()
            return
        g = min(2, info.get("generation", 0))
        pause = time.perf_counter() - self._t0
        self.cpu[g] += time.thread_time() - self._c0
        self.count[g] += 1
        if pause > self.max_pause[g]:
            self.max_pause[g] = pause
        if g == 2:
            self.full_pauses.append(round(pause * 1e3, 2))

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def as_dict(self) -> dict[str, Any]:
        return {
            "gc_cpu_s": sum(self.cpu),
            "gc_cpu_by_generation_s": self.cpu,
            "collections": self.count,
            "max_pause_ms": [p * 1e3 for p in self.max_pause],
            "full_pauses_ms": self.full_pauses,
        }


def build_catalog() -> dict[str, Any]:
    rng = random.Random(7)
    items: dict[int, dict[str, Any]] = {}
    by_tag: dict[str, list[int]] = collections.defaultdict(list)
    for i in range(CATALOG_ITEMS):
        tags = [f"t{rng.randrange(500)}" for _ in range(3)]
        items[i] = {
            "id": i,
            "name": f"item {i}",
            "tags": tags,
            "price": {"amount": rng.randrange(100, 100_000), "currency": "EUR"},
            "related": [rng.randrange(CATALOG_ITEMS) for _ in range(4)],
        }
        for t in tags:
            by_tag[t].append(i)
    return {"items": items, "by_tag": dict(by_tag)}


class _Node:
    __slots__ = ("children", "parent", "value")

    def __init__(self, value: object, parent: _Node | None) -> None:
        self.value = value
        self.parent = parent
        self.children: list[_Node] = []


def _render(item: dict[str, Any]) -> _Node:
    root = _Node(item["name"], None)
    for i in range(RENDER_NODES - 1):
        child = _Node((item["id"], i), root)  # child -> root -> child: a cycle
        root.children.append(child)
    return root


def build_app(variant: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    meter = _GCMeter()
    gc.callbacks.append(meter)
    holder: dict[str, Any] = {}
    cache: collections.OrderedDict[int, Any] = collections.OrderedDict()

    @contextlib.asynccontextmanager
    async def app_lifespan(app: Any) -> AsyncIterator[None]:
        holder["catalog"] = build_catalog()
        if variant == "freeze":
            gc.collect()
            gc.freeze()
        yield

    async def item(request: Request) -> JSONResponse:
        items = holder["catalog"]["items"]
        key = int(request.path_params["key"])
        product = items[key % CATALOG_ITEMS]
        tree = _render(product)  # garbage once the request ends: only the collector frees it
        summary = cache.get(key)
        if summary is None:
            summary = {"item": product["id"], "tree": _render(product), "related": list(product["related"])}
            summary["self"] = summary  # a cycle: an evicted summary waits for a (full) collection
            cache[key] = summary
            if len(cache) > CACHE_ENTRIES:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        await asyncio.sleep(0)  # the handler's "I/O"
        return JSONResponse({"id": product["id"], "name": product["name"], "nodes": len(tree.children)})

    async def gc_stats(request: Request) -> JSONResponse:
        frozen = gc.get_freeze_count()
        return JSONResponse({**meter.as_dict(), "frozen": frozen, "threshold": gc.get_threshold()})

    async def gc_reset(request: Request) -> JSONResponse:
        meter.reset()
        return JSONResponse({"ok": True})

    routes = [Route("/item/{key:int}", item), Route("/__gc", gc_stats), Route("/__gc_reset", gc_reset)]
    if variant == "library":
        from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan

        # Exactly the README's way: the lifespan helper around the app's own lifespan, and the middleware.
        app = Starlette(routes=routes, lifespan=memory_lifespan(lifespan=app_lifespan))
        app.add_middleware(GCRequestMiddleware)
        return app
    return Starlette(routes=routes, lifespan=app_lifespan)


def serve(variant: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        build_app(variant), host="127.0.0.1", port=port, http="h11", loop="asyncio", log_level="warning"
    )


# ------------------------------------------------------------------------------------------- the client


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


def load(port: int, rate: float, seconds: float, out: Any, *, connections: int, seed: int) -> None:
    """Open loop: request i is due at t0 + i/rate on whichever connection is free (latency from due)."""

    async def main() -> dict[str, Any]:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
        idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        for c in conns:
            idle.put_nowait(c)
        rng = random.Random(seed)
        latencies: list[float] = []
        errors = 0
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        async def one(due: float, key: int) -> None:
            nonlocal errors
            conn = await idle.get()
            try:
                await _request(*conn, f"/item/{key}")
                latencies.append(loop.time() - due)
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
            finally:
                idle.put_nowait(conn)

        total = int(rate * seconds)
        t0 = loop.time() + 0.05
        i = 0
        while i < total:
            now = loop.time()
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while i < total and t0 + i / rate <= now:
                # A skewed key distribution, as real caches see: the LRU keeps the popular ones.
                key = int(rng.paretovariate(1.2) * 50) % (CATALOG_ITEMS * 4)
                task = loop.create_task(one(t0 + i / rate, key))
                pending.add(task)
                task.add_done_callback(pending.discard)
                i += 1
        while pending:
            await asyncio.gather(*list(pending))
        for _, w in conns:
            w.close()
        return {"latencies": latencies, "errors": errors}

    out.put(asyncio.run(main()))


def _get(port: int, path: str) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        conn = await asyncio.open_connection("127.0.0.1", port)
        body = await _request(*conn, path)
        conn[1].close()
        return dict(json.loads(body))

    return asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def run_variant(
    variant: str, rate: float, seconds: float, *, connections: int, seed: int, warmup: float
) -> dict[str, Any]:
    port = _free_port()
    cmd = [sys.executable, "-m", "benchmarks.gc_service_bench", "--serve", variant, "--port", str(port)]
    proc = subprocess.Popen(cmd)
    ctx = multiprocessing.get_context("spawn")
    try:
        _wait_listening(port, proc)
        queue = ctx.Queue()
        if warmup > 0:
            warm = ctx.Process(
                target=load,
                args=(port, rate, warmup, queue),
                kwargs={"connections": connections, "seed": seed + 1},
            )
            warm.start()
            queue.get()
            warm.join()
        _get(port, "/__gc_reset")
        cpu0 = _cpu_seconds(proc.pid)
        client = ctx.Process(
            target=load, args=(port, rate, seconds, queue), kwargs={"connections": connections, "seed": seed}
        )
        client.start()
        result = queue.get()
        client.join()
        cpu = _cpu_seconds(proc.pid) - cpu0
        gc_info = _get(port, "/__gc")
        peak = _peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    lat: list[float] = result["latencies"]
    return {
        "requests": len(lat),
        "errors": result["errors"],
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": max(lat, default=0.0) * 1e3,
        "server_cpu_s": cpu,
        "cpu_per_request_us": cpu / max(1, len(lat)) * 1e6,
        "peak_rss_mib": peak,
        "frozen_objects": gc_info["frozen"],
        "thresholds": gc_info["threshold"],
        **{k: v for k, v in gc_info.items() if k not in ("frozen", "threshold")},
    }


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gc_service_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rates", default="250,400", help="comma-separated request rates (req/s)")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before each window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    rates = [float(r) for r in args.rates.split(",")]
    command = (
        f"python -m benchmarks.gc_service_bench --rates {args.rates} --seconds {args.seconds:g} "
        f"--rounds {args.rounds}"
    )
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(args.rounds):
        for rate in rates:
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            results = {}
            for v in order:
                print(f"round {r + 1}/{args.rounds}: {v} at {rate:g} req/s ...", file=sys.stderr, flush=True)
                results[v] = run_variant(
                    v, rate, args.seconds, connections=args.connections, seed=1000 * r + 1, warmup=args.warmup
                )
            load_average = os.getloadavg()
            rounds.append({"round": r + 1, "rate": rate, "load_average": load_average, "variants": results})
            base = results["default"]
            rows = []
            for v in VARIANTS:
                x = results[v]
                rows.append(
                    [
                        v,
                        x["requests"],
                        x["p50_ms"],
                        x["p99_ms"],
                        x["max_ms"],
                        x["cpu_per_request_us"],
                        x["peak_rss_mib"],
                        x["gc_cpu_s"],
                        x["collections"][2],
                        f"{ratio(base['p99_ms'], x['p99_ms']):.1f}x",
                        f"{ratio(base['max_ms'], x['max_ms']):.1f}x",
                        f"{ratio(x['cpu_per_request_us'], base['cpu_per_request_us']):.3f}x",
                        f"{ratio(x['peak_rss_mib'], base['peak_rss_mib']):.2f}x",
                    ]
                )
            print_table(
                f"round {r + 1}, {rate:g} req/s for {args.seconds:g} s (load {os.getloadavg()[0]:.2f})",
                [
                    "variant",
                    "requests",
                    "p50 ms",
                    "p99 ms",
                    "max ms",
                    "CPU us/req",
                    "peak RSS MiB",
                    "GC CPU s",
                    "full GCs",
                    "p99 lower",
                    "max lower",
                    "CPU vs default",
                    "RSS vs default",
                ],
                rows,
            )
    out = {"rounds": rounds, "targets": targets(rounds, rates)}
    rows = [[name, "met" if ok else "MISSED", detail] for name, (ok, detail) in out["targets"].items()]
    print_table("targets (library vs default, every round)", ["target", "status", "measured"], rows)
    write_results("gc_service_bench", out, command)


def targets(rounds: list[dict[str, Any]], rates: list[float]) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    for rate in rates:
        mine = [r["variants"] for r in rounds if r["rate"] == rate]
        p99 = [ratio(v["default"]["p99_ms"], v["library"]["p99_ms"]) for v in mine]
        mx = [ratio(v["default"]["max_ms"], v["library"]["max_ms"]) for v in mine]
        cpu = [ratio(v["library"]["cpu_per_request_us"], v["default"]["cpu_per_request_us"]) for v in mine]
        rss = [ratio(v["library"]["peak_rss_mib"], v["default"]["peak_rss_mib"]) for v in mine]

        def fmt(xs: list[float], unit: str = "x") -> str:
            return ", ".join(f"{x:.2f}{unit}" for x in xs) + f" (median {statistics.median(xs):.2f})"

        out[f"{rate:g}/s p99 >= 8x lower"] = (min(p99) >= 8, fmt(p99))
        out[f"{rate:g}/s max >= 8x lower"] = (min(mx) >= 8, fmt(mx))
        out[f"{rate:g}/s CPU per request <= 1.0x"] = (max(cpu) <= 1.0, fmt(cpu))
        out[f"{rate:g}/s peak RSS <= 1.10x"] = (max(rss) <= 1.10, fmt(rss))
    return out


if __name__ == "__main__":
    main()
