"""What the metrics exporters read: sources by protocol, one frozen :class:`Readings` per read, and a cache
that lets any thread ask for them without touching state the event loop is changing.

Sources are the objects a service already has, passed as they are::

    SanaaCollector(optimizer)                 # everything a MemoryOptimizer runs
    SanaaCollector(pool, manager, profiler)   # pools and memory without the GC tuner

A source is one of:

* a **pool** (:class:`PoolSource`: ``name``, ``stats()``, ``trim_idle()``): an :class:`AsyncPool`, a
  :class:`MemoryPool`, or any object of that shape whose ``stats()`` returns one of their stats types;
* a :class:`ResourceManager` (its resources, and the pools behind them under the resource's name);
* a :class:`MemoryProfiler` (its cached verdict: status, slope when there is one, time to the limit);
* a :class:`GCPauseRecorder` (or a :class:`GarbageCollectionOptimizer`, for its recorder), a
  :class:`GCScheduler`, a :class:`LoopLagMonitor`;
* a **group** (:class:`SourceGroup`, e.g. a :class:`MemoryOptimizer`): ``metric_sources()`` returns more
  sources, asked again at every read so that pools added later are included;
* anything with a ``metric_readings()`` method returning ``(kind, name, stats)`` triples (how a component
  such as the fleet budget contributes without this module knowing its class).

Reading is synchronous and cheap (counters and histogram copies; no heap walk, no I/O, no analysis: the
profiler's verdict is the one its sampler cached). It must run on the thread of the event loop that owns
the sources, because a pool folds its buffered samples into its histograms when asked for stats; the
:class:`ReadingCache` sees to that for readers on other threads (prometheus_client's HTTP server threads,
OpenTelemetry's export thread).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
import typing
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from .._logging import get_logger
from .._stats import HistogramSnapshot
from ..collector.optimizer import GarbageCollectionOptimizer, GCPauseRecorder
from ..collector.scheduler import GCScheduler, SchedulerStats
from ..config import duration
from ..errors import ConfigurationError
from ..loop_monitor import LoopLagMonitor
from ..memory import trend
from ..memory.profiler import MemoryProfiler
from ..pools.keyed import MemoryPoolStats
from ..pools.pool import PoolStats
from ..resources.manager import ResourceManager, ResourceStats

__all__ = [
    "STATUSES",
    "MemoryReading",
    "PoolSource",
    "ReadingCache",
    "Readings",
    "SourceGroup",
    "read_sources",
    "resolve_sources",
]

_log = get_logger("metrics")

_EMPTY: Mapping[Any, Any] = MappingProxyType({})

#: Every status a verdict can have, in the analyzer's order (read from its ``Status`` type, so a renamed
#: vocabulary is exported as it is). The status gauge has one series per status, 1 for the current one.
STATUSES: tuple[str, ...] = tuple(typing.get_args(trend.Status))
# The status of a profiler with no verdict yet, and the statuses in plain words where the analyzer has them.
_COLLECTING = "collecting" if "collecting" in STATUSES else STATUSES[0]
_LABELS: Mapping[str, str] = getattr(trend, "LABELS", {})


@runtime_checkable
class PoolSource(Protocol):
    """What exporters and integrations need of a pool: its name, its stats, and a way to shed idle objects
    (``trim_idle(older_than)`` returns how many were closed). :class:`AsyncPool` and :class:`MemoryPool`
    are both pool sources."""

    @property
    def name(self) -> str: ...

    def stats(self) -> object: ...

    def trim_idle(self, older_than: float | None = None) -> int: ...


@runtime_checkable
class SourceGroup(Protocol):
    """A source made of other sources (a :class:`MemoryOptimizer`): asked again at every read."""

    def metric_sources(self) -> Iterable[object]: ...


@runtime_checkable
class _ReadingsProvider(Protocol):
    def metric_readings(self) -> Iterable[tuple[str, str, object]]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryReading:
    """The profiler's cached verdict as the exporters show it. Bytes, bytes per second, seconds.

    ``status`` is one of :data:`STATUSES` (``collecting`` until there is a verdict); ``slope`` is None when
    the verdict has none (still collecting), never a 0 that would read as "healthy".
    ``seconds_to_limit`` is the projected time until RSS reaches ``limit`` at the current slope (None
    without growth). ``samples`` counts the cheap samples the trend is judged on, ``snapshots`` the stored
    snapshots, ``failures`` the samples that failed; ``source`` is what was judged (``rss`` or ``traced``).
    """

    status: str
    label: str
    is_leak: bool
    slope: float | None
    slope_low: float | None
    slope_high: float | None
    threshold: float
    limit: float
    seconds_to_limit: float | None
    source: str
    samples: int
    snapshots: int
    failures: int
    leak_alert_active: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Readings:
    """One read of every source, all taken in one synchronous step on the sources' loop.

    Mappings are read-only and keyed by the name each object is exported under. ``taken_at`` is
    ``time.monotonic()`` at the read. ``other`` holds what ``metric_readings()`` providers gave, by kind.
    """

    taken_at: float
    pools: Mapping[str, PoolStats]
    object_pools: Mapping[str, MemoryPoolStats]
    resources: Mapping[str, ResourceStats]
    gc_pauses: Mapping[int, HistogramSnapshot]
    gc_scheduler: SchedulerStats | None
    loop_lag: HistogramSnapshot | None
    memory: MemoryReading | None
    other: Mapping[str, Mapping[str, object]]
    #: The loop monitor's utilization (0..1, see :meth:`LoopLagMonitor.utilization`), None without one.
    loop_utilization: float | None = None

    @classmethod
    def empty(cls) -> Readings:
        return cls(time.monotonic(), _EMPTY, _EMPTY, _EMPTY, _EMPTY, None, None, None, _EMPTY)


def resolve_sources(sources: Iterable[object]) -> tuple[object, ...]:
    """Check every source once (at construction): a ConfigurationError names the first one that is not a
    pool, a known component, a group or a readings provider."""
    out = tuple(sources)
    for i, source in enumerate(out):
        if not _known(source):
            raise ConfigurationError(
                f"sources[{i}]",
                source,
                "is not a metrics source (a pool, ResourceManager, MemoryProfiler, GC pause recorder or "
                "optimizer, GCScheduler, LoopLagMonitor, or an object with metric_sources())",
            )
    return out


def _known(source: object) -> bool:
    return isinstance(
        source,
        ResourceManager
        | MemoryProfiler
        | GCPauseRecorder
        | GarbageCollectionOptimizer
        | GCScheduler
        | LoopLagMonitor
        | SourceGroup
        | _ReadingsProvider
        | PoolSource,
    )


class _Builder:
    """Collects one read; every ``add_*`` is one kind of source."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolStats] = {}
        self.object_pools: dict[str, MemoryPoolStats] = {}
        self.resources: dict[str, ResourceStats] = {}
        # Pools behind resources, by the resource's name: exported under that name, once.
        self.managed: dict[str, PoolStats] = {}
        self.pauses: dict[int, HistogramSnapshot] = {}
        self.scheduler: SchedulerStats | None = None
        self.lag: HistogramSnapshot | None = None
        self.utilization: float | None = None
        self.memory: MemoryReading | None = None
        self.other: dict[str, dict[str, object]] = {}
        self.seen: set[int] = set()

    def add(self, source: object, depth: int = 0) -> None:
        if id(source) in self.seen or depth > 4:  # one object once; groups cannot nest for ever
            return
        self.seen.add(id(source))
        # Components first (they are matched by what they are), then the structural protocols.
        match source:
            case ResourceManager():
                self.add_resources(source)
            case MemoryProfiler():
                self.add_memory(source)
            case GCPauseRecorder():
                self.pauses = source.snapshot()
            case GarbageCollectionOptimizer():
                self.pauses = source.pauses.snapshot()
            case GCScheduler():
                self.scheduler = source.stats()
            case LoopLagMonitor():
                self.lag = source.snapshot()
                self.utilization = source.utilization()
            case SourceGroup():
                for part in source.metric_sources():
                    self.add(part, depth + 1)
            case _ReadingsProvider():
                for kind, name, stats in source.metric_readings():
                    self.other.setdefault(kind, {})[name] = stats
            case PoolSource():
                self.add_pool(source)
            case _:
                raise ConfigurationError("source", source, "is not a metrics source")

    def add_pool(self, pool: PoolSource) -> None:
        st = pool.stats()
        if isinstance(st, PoolStats):
            self.pools.setdefault(st.name, st)
        elif isinstance(st, MemoryPoolStats):
            self.object_pools.setdefault(st.name, st)
        else:
            raise ConfigurationError("source", pool, f"stats() returned {type(st).__name__}, not pool stats")

    def add_resources(self, manager: ResourceManager) -> None:
        for name, res in manager.get_stats().resources.items():
            self.resources[name] = res
            if res.pool is not None:
                self.managed[name] = res.pool

    def add_memory(self, profiler: MemoryProfiler) -> None:
        # Only the verdict the sampler cached: a read never judges the history again.
        verdict = profiler.verdict
        if verdict is None:
            status, label, is_leak, has_slope = (
                _COLLECTING,
                _LABELS.get(_COLLECTING, "collecting data"),
                False,
                False,
            )
        else:
            status = str(verdict.status)
            is_leak = bool(verdict.is_leak)
            has_slope = bool(getattr(verdict, "has_slope", status not in ("insufficient_data", "collecting")))
            label = str(getattr(verdict, "label", _LABELS.get(status, status.replace("_", " "))))
        self.memory = MemoryReading(
            status=status,
            label=label,
            is_leak=is_leak,
            slope=_finite(verdict.slope) if verdict is not None and has_slope else None,
            slope_low=_finite(verdict.slope_low) if verdict is not None and has_slope else None,
            slope_high=_finite(verdict.slope_high) if verdict is not None and has_slope else None,
            threshold=float(profiler.leak_threshold),
            limit=float(profiler.high_memory_bytes),
            seconds_to_limit=_finite(verdict.seconds_to_limit) if verdict is not None and has_slope else None,
            source=profiler.trend_source,
            samples=profiler.samples,
            snapshots=profiler.ticks,
            failures=profiler.failures,
            leak_alert_active=profiler.leak_alert_active,
        )

    def build(self) -> Readings:
        # A pool registered as a resource is exported under the resource's name only.
        managed_names = {st.name for st in self.managed.values()}
        pools = {name: st for name, st in self.pools.items() if name not in managed_names}
        for name, st in self.managed.items():
            pools.setdefault(name, st if st.name == name else dataclasses.replace(st, name=name))
        return Readings(
            taken_at=time.monotonic(),
            pools=MappingProxyType(pools),
            object_pools=MappingProxyType(self.object_pools),
            resources=MappingProxyType(self.resources),
            gc_pauses=MappingProxyType(self.pauses),
            gc_scheduler=self.scheduler,
            loop_lag=self.lag,
            loop_utilization=self.utilization,
            memory=self.memory,
            other=MappingProxyType({k: MappingProxyType(v) for k, v in self.other.items()}),
        )


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def read_sources(sources: Iterable[object]) -> Readings:
    """Read every source now, on the calling thread (which must be the sources' event-loop thread while
    that loop runs: see :class:`ReadingCache`)."""
    builder = _Builder()
    for source in sources:
        builder.add(source)
    return builder.build()


class ReadingCache:
    """The latest :class:`Readings` of ``sources``, safe to ask for from any thread, at a bounded cost.

    :meth:`get` returns readings at most ``max_age`` seconds old. On the loop's own thread (or when no loop
    is running the sources) it reads inline. From any other thread it asks the loop to read
    (``call_soon_threadsafe``) and waits up to ``wait`` seconds; concurrent askers share that one read, so
    a hundred scraper threads cost the loop one read per ``max_age``. If the loop does not answer in time
    (blocked, or shutting down) the previous readings are returned, never an error, and ``stale`` counts
    it. ``loop`` defaults to the loop running where the cache is created, or the first loop that reads.
    ``on_read`` is called with each new readings object on the thread that read it.
    """

    def __init__(
        self,
        sources: Iterable[object],
        *,
        max_age: float = 1.0,
        wait: float = 2.0,
        loop: asyncio.AbstractEventLoop | None = None,
        on_read: Callable[[Readings], None] | None = None,
    ) -> None:
        self.sources = resolve_sources(sources)
        self.max_age = duration("max_age", max_age)
        self.wait = duration("wait", wait)
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self._on_read = on_read
        self._lock = threading.Lock()
        self._pending: threading.Event | None = None
        self._latest: Readings | None = None
        #: Reads answered with older readings because the loop did not answer within ``wait``.
        self.stale = 0
        #: Reads done (on any thread).
        self.reads = 0

    @property
    def latest(self) -> Readings | None:
        """The newest readings, without reading (None before the first read)."""
        return self._latest

    def get(self) -> Readings:
        """Readings at most ``max_age`` old (see the class documentation). Never raises for a busy loop."""
        latest = self._latest
        if latest is not None and time.monotonic() - latest.taken_at < self.max_age:
            return latest
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        loop = self._loop
        if loop is None and running is not None:
            self._loop = loop = running
        if loop is None or running is loop or not loop.is_running():
            return self._read()
        return self._ask(loop, latest)

    def _read(self) -> Readings:
        readings = read_sources(self.sources)
        self._latest = readings
        self.reads += 1
        if self._on_read is not None:
            self._on_read(readings)
        return readings

    def _ask(self, loop: asyncio.AbstractEventLoop, latest: Readings | None) -> Readings:
        with self._lock:
            pending = self._pending
            if pending is None:
                pending = self._pending = threading.Event()
                try:
                    loop.call_soon_threadsafe(self._read_on_loop, pending)
                except RuntimeError:  # the loop closed between our check and the call
                    self._pending = None
                    return self._read()
        if pending.wait(self.wait):
            answered = self._latest
            if answered is not None:
                return answered
        self.stale += 1
        _log.debug(
            "metrics read: the event loop did not answer within %.3g s; serving older readings", self.wait
        )
        return latest if latest is not None else Readings.empty()

    def _read_on_loop(self, pending: threading.Event) -> None:
        try:
            self._read()
        except Exception:  # a failing source must not leave every scraper waiting
            _log.exception("metrics read failed")
        finally:
            with self._lock:
                if self._pending is pending:
                    self._pending = None
            pending.set()
