"""OpenTelemetry: pool metrics under the ``db.client.connection.*`` semantic conventions (API package only).

::

    from sanaa_async_mem.integrations.otel import instrument_pools
    instrument_pools(optimizer)               # the global MeterProvider, or meter_provider=...

Instruments (attribute ``db.client.connection.pool.name`` on all of them):

==========================================  ==========================  =================================
``db.client.connection.count``              observable up-down counter  objects, ``db.client.connection
                                                                        .state`` = ``idle`` or ``used``
``db.client.connection.idle.max``           observable up-down counter  ``max_size`` (idle objects kept)
``db.client.connection.idle.min``           observable up-down counter  ``min_size``
``db.client.connection.max``                observable up-down counter  ``max_size``
``db.client.connection.pending_requests``   observable up-down counter  callers waiting
``db.client.connection.timeouts``           observable counter          acquisitions that timed out
``db.client.connection.create_time``        histogram (s)               factory calls
``db.client.connection.wait_time``          histogram (s)               waits for an object
``db.client.connection.use_time``           histogram (s)               time objects were held
==========================================  ==========================  =================================

The figures are read from the same ``PoolStats`` the Prometheus exporter reads, at collection time (on the
reader's thread). OpenTelemetry has no asynchronous histogram, so the three time histograms are brought up
to date from the pools' own histograms at each collection: the new samples of each bucket are recorded at
that bucket's upper bound (bucket boundaries are advised to match, one per doubling, so the exported
buckets are exact). That costs one ``record`` per new sample, off the event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from .._stats import HistogramSnapshot
from ..optimizer import MemoryOptimizer
from ..pools.pool import PoolStats

__all__ = ["POOL_NAME", "PoolInstruments", "instrument_pools"]

POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"

# One bound per doubling, from 10 us to ~9 min: a subset of the library histogram's bounds.
_BOUNDS = tuple(1e-5 * 2.0**i for i in range(26))


class PoolInstruments:
    """The instruments of one :func:`instrument_pools` call. Keep a reference while you want them."""

    def __init__(self, optimizer: MemoryOptimizer, meter: metrics.Meter) -> None:
        self.optimizer = optimizer
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[int, ...]] = {}
        self._stats: dict[str, PoolStats] = {}
        advice = {"explicit_bucket_boundaries_advisory": _BOUNDS}
        self._histograms: dict[str, Histogram] = {
            field: meter.create_histogram(
                f"db.client.connection.{field}_time", unit="s", description=desc, **advice
            )
            for field, desc in (
                ("create", "The time it took to create a new connection"),
                ("wait", "The time it took to obtain an open connection from the pool"),
                ("use", "The time between borrowing a connection and returning it to the pool"),
            )
        }
        meter.create_observable_up_down_counter(
            "db.client.connection.count",
            [self._observe_count],
            unit="{connection}",
            description="The number of connections that are currently in the state of the state attribute",
        )
        for suffix, field, desc in (
            ("idle.max", "max_size", "The maximum number of idle open connections allowed"),
            ("idle.min", "min_size", "The minimum number of idle open connections allowed"),
            ("max", "max_size", "The maximum number of open connections allowed"),
        ):
            meter.create_observable_up_down_counter(
                f"db.client.connection.{suffix}", [self._gauge(field)], unit="{connection}", description=desc
            )
        meter.create_observable_up_down_counter(
            "db.client.connection.pending_requests",
            [self._gauge("waiting")],
            unit="{request}",
            description="The number of current pending requests for an open connection",
        )
        meter.create_observable_counter(
            "db.client.connection.timeouts",
            [self._gauge("timeouts")],
            unit="{timeout}",
            description="The number of connection timeouts that have occurred trying to obtain a connection",
        )

    def _observe_count(self, options: CallbackOptions) -> Iterable[Observation]:
        # The first callback of a collection: read the stats once for every instrument of this collection,
        # and bring the histograms up to date (the SDK collects synchronous instruments after callbacks).
        with self._lock:
            self._stats = self.optimizer.pool_stats()
            for name, st in self._stats.items():
                for field, hist in self._histograms.items():
                    self._catch_up(name, field, getattr(st, field), hist)
            stats = self._stats
        out = []
        for name, st in stats.items():
            out.append(Observation(st.idle, {POOL_NAME: name, STATE: "idle"}))
            out.append(Observation(st.in_use, {POOL_NAME: name, STATE: "used"}))
        return out

    def _gauge(self, field: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(getattr(st, field), {POOL_NAME: name}) for name, st in self._stats.items()]

        return observe

    def _catch_up(self, name: str, field: str, snap: HistogramSnapshot, hist: Histogram) -> None:
        key = (name, field)
        counts = snap.counts
        last = self._last.get(key)
        if last is None or len(last) != len(counts) or any(c < p for c, p in zip(counts, last, strict=True)):
            last = (0,) * len(counts)  # first sight, or the pool's stats were reset: start over
        self._last[key] = counts
        attributes = {POOL_NAME: name}
        for i, (now, before) in enumerate(zip(counts, last, strict=True)):
            new = now - before
            if not new:
                continue
            value = snap.bounds[i] if i < len(snap.bounds) else snap.max
            for _ in range(new):
                hist.record(value, attributes)


def instrument_pools(
    optimizer: MemoryOptimizer,
    *,
    meter_provider: MeterProvider | None = None,
    meter: metrics.Meter | None = None,
) -> PoolInstruments:
    """Create the ``db.client.connection.*`` instruments for every AsyncPool ``optimizer`` knows (its
    ``pools`` and its resource manager's pools, looked up at each collection, so pools registered later
    are included). ``meter`` wins over ``meter_provider``, which defaults to the global provider."""
    if meter is None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("sanaa_async_mem")
    return PoolInstruments(optimizer, meter)
