"""The one owner of the interpreter's cyclic-GC settings: reference-counted leases.

The collector's settings are process-global: its thresholds, whether it is enabled, and the permanent
generation (``gc.freeze()``). Every part of this library that changes them takes a lease from
:func:`gc_state` and gives it back; nothing else in the library calls ``gc.set_threshold``,
``gc.enable``/``gc.disable``, ``gc.freeze`` or ``gc.unfreeze``. The state computes the settings in force
from the leases held:

* **thresholds** (:meth:`GCState.set_thresholds`): the newest lease that sets a threshold wins;
* **defer full collections** (:meth:`GCState.defer_full_collections`): while any is held the oldest
  threshold is out of reach, so the interpreter starts no full collection by itself (young collections
  stay automatic). On collectors without a separate full collection (``incremental``, ``unknown``: see
  :func:`~sanaa_async_mem.collector.detect_collector`) the lease changes nothing;
* **disable** (:meth:`GCState.disable`): while any is held the collector is off. A lease with a
  ``max_duration`` is expired by a watchdog thread when it overstays, so a forgotten one cannot leave the
  collector off, even when the event loop itself is blocked;
* **freeze** (:meth:`GCState.freeze`): what is tracked now moves to the permanent generation.

When the last lease is released, from whichever task or thread and in whatever order, the interpreter is
left exactly as the state found it when the first lease was taken. Objects frozen by leases are unfrozen
when the last freeze lease goes, but only if the permanent generation held nothing but the interpreter's
own objects before the first one (:data:`INTERPRETER_FROZEN`) and nothing else froze meanwhile
(``gc.unfreeze()`` cannot tell whose objects are whose); otherwise they stay frozen and a warning is
logged.

**The application's own changes win.** If the application (or any code not using leases) changes a
setting that a lease held sets (a threshold, or enabled/disabled), the state notices at its next operation
(every lease taken or released, and :meth:`GCState.check`, which a running
:class:`~sanaa_async_mem.collector.GCScheduler` calls on every tick): it logs one warning on ``sanaa.gc``
naming the setting, stops overriding it until no lease is held any more, and keeps the application's
value then. A change to a setting no lease sets becomes the value to restore (a lease taken later may
override it, as the newest). Changes are seen as differences from what the state last wrote, so one
undone before the next check (``gc.enable()`` then ``gc.disable()`` inside a GC-free section) is not
seen. A lease whose every setting was taken over reports ``in_force == False`` (the scheduler then
leaves full collections to the interpreter).

All methods are thread-safe (one re-entrant lock: a finalizer run by a collection that an allocation
here triggers may itself take or release a lease on the same thread) and never await.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import threading
import time
from types import TracebackType
from typing import Literal

from .._logging import get_logger
from ..config import MAX_C_INT, positive_int
from .kind import detect_collector

_log = get_logger("gc")

#: The oldest-generation threshold that the interpreter never reaches: ``gc.set_threshold`` takes C ints,
#: and the middle generation is not collected 2**31 times between two of our full collections.
OUT_OF_REACH = MAX_C_INT

LeaseKind = Literal["thresholds", "defer", "disable", "freeze"]
_FIELDS = ("young", "middle", "oldest")


class GCLease:
    """One client's hold on the collector's settings; release it (or use ``with``) to give them back.

    ``kind`` and ``owner`` say what it holds and for whom. :meth:`release` is idempotent and may be called
    from any task or thread; it returns True if the lease had already expired (a ``disable`` lease whose
    ``max_duration`` passed: the watchdog released it then). ``in_force`` is False once released, expired,
    or when the application took over every setting the lease overrides.
    """

    __slots__ = (
        "_seq",
        "_state",
        "deadline",
        "expired",
        "froze",
        "kind",
        "max_duration",
        "owner",
        "released",
        "values",
    )

    def __init__(self, state: GCState, kind: LeaseKind, owner: str, seq: int) -> None:
        self._state = state
        self._seq = seq
        self.kind: LeaseKind = kind
        self.owner = owner
        self.released = False
        self.expired = False
        self.values: tuple[int | None, ...] = ()
        self.max_duration: float | None = None
        self.deadline: float | None = None
        self.froze = 0

    def release(self) -> bool:
        """Give the lease back; True if it had expired before (nothing left to give back)."""
        return self._state._release(self)

    def update(
        self,
        *,
        young: int | None = None,
        middle: int | None = None,
        oldest: int | None = None,
        reassert: bool = False,
    ) -> None:
        """Change the thresholds a ``thresholds`` lease sets (None: leave that one to others).

        ``reassert=True`` also takes back the ones it sets from the application, if it had taken them
        over (for a user's explicit request, such as calling ``optimize_gc_settings()`` again).
        """
        self._state._update(self, (young, middle, oldest), reassert)

    @property
    def in_force(self) -> bool:
        return self._state._in_force(self)

    def __enter__(self) -> GCLease:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "expired" if self.expired else "released" if self.released else "held"
        return f"<GCLease {self.kind} for {self.owner!r} {state}>"


@dataclasses.dataclass(frozen=True, slots=True)
class GCStateStats:
    """Who holds what now: lease counts by kind, their owners, settings the application took over."""

    leases: dict[str, int]
    owners: tuple[str, ...]
    taken_over: tuple[str, ...]
    expired_total: int
    full_collections_deferred: bool
    disabled_by_leases: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "leases": dict(self.leases),
            "owners": list(self.owners),
            "taken_over": list(self.taken_over),
            "expired_total": self.expired_total,
            "full_collections_deferred": self.full_collections_deferred,
            "disabled_by_leases": self.disabled_by_leases,
        }


class GCState:
    """The process's collector settings, owned through leases (see the module documentation).

    Use the process-wide instance from :func:`gc_state`; a second instance would fight the first.
    """

    def __init__(self) -> None:
        self._init_locks()
        self._leases: dict[int, GCLease] = {}  # acquisition order
        self._seq = itertools.count()
        self._version = 0
        # What the application has (captured with the first lease, updated by its own changes) and what we
        # last wrote; None while no lease is held.
        self._base_thresholds: list[int] | None = None
        self._base_enabled = True
        self._written: tuple[tuple[int, ...], bool] | None = None
        self._taken_over: set[str] = set()
        # The permanent generation: its size before our first freeze, and right after our last one.
        self._freeze_base = 0
        self._freeze_left = 0
        self._foreign_freeze = False
        self._sentinel: list[object] = []
        self.expired_total = 0
        #: Seconds per object of the full collection before the last freeze (None before any).
        self.full_scan_per_object: float | None = None
        # On collectors without a separate full collection (incremental, free-threaded, PyPy) there is
        # nothing to defer: a defer lease is held and counted but changes no setting.
        self.defers = detect_collector().kind == "generational"

    def _init_locks(self) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._watchdog: threading.Thread | None = None

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay held for ever in the child, and the
        # watchdog thread does not exist there.
        self._init_locks()

    # ----------------------------------------------------------------------------------- leases

    def set_thresholds(
        self,
        owner: str,
        *,
        young: int | None = None,
        middle: int | None = None,
        oldest: int | None = None,
    ) -> GCLease:
        """A lease setting the given thresholds (validated by the caller: C ints >= 0)."""
        lease = self._new("thresholds", owner)
        lease.values = _checked((young, middle, oldest))
        return self._add(lease)

    def defer_full_collections(self, owner: str) -> GCLease:
        """A lease keeping the interpreter from starting full collections by itself."""
        return self._add(self._new("defer", owner))

    def disable(self, owner: str, max_duration: float | None = None) -> GCLease:
        """A lease turning the collector off; expired by the watchdog after ``max_duration`` seconds."""
        lease = self._new("disable", owner)
        if max_duration is not None:
            lease.max_duration = max_duration
            lease.deadline = time.monotonic() + max_duration
        with self._lock:
            self._add(lease)
            if lease.deadline is not None:
                if self._watchdog is None or not self._watchdog.is_alive():
                    self._watchdog = threading.Thread(
                        target=self._watch, name="sanaa-gc-watchdog", daemon=True
                    )
                    self._watchdog.start()
                self._wake.notify()
        return lease

    def freeze(self, owner: str, *, collect_first: bool = True) -> GCLease:
        """A lease that moved every object tracked now to the permanent generation (``lease.froze`` of them).

        Collects first (unless ``collect_first=False``) so that garbage is not frozen for ever; the
        collection runs outside the lock and blocks the caller for its duration. Counting the permanent
        generation walks it (milliseconds at 1e6 objects).
        """
        # Plain locals, not a tuple: a tracked temporary alive during gc.freeze() would be frozen and die
        # right after, and the count of what we froze would be off by one.
        scan_seconds = -1.0
        collected = 0
        if collect_first:
            started = time.perf_counter()
            collected = gc.collect()
            scan_seconds = time.perf_counter() - started
        lease = self._new("freeze", owner)
        # Not ``with self._lock``: the bound ``__exit__`` it keeps alive during gc.freeze() would be frozen
        # and die right after, and the count of what we froze would be one too many.
        self._lock.acquire()
        try:
            count = gc.get_freeze_count()
            if not self._has("freeze"):
                self._freeze_base = count
                self._foreign_freeze = False
            elif count > self._freeze_left or self._sentinel_frozen():
                self._foreign_freeze = True
            gc.freeze()
            # Made after our freeze, so it is not frozen unless someone else freezes later: the one sure
            # sign of a foreign gc.freeze() (the count alone cannot tell when deaths offset it). The old one
            # was just frozen and dies here: count after that.
            self._sentinel = []
            self._freeze_left = gc.get_freeze_count()
            lease.froze = self._freeze_left - count
            if scan_seconds >= 0 and lease.froze > 0:
                # What one full collection of the whole heap costs per object here: the default collector's
                # cost of re-scanning what is now frozen (the scheduler's measure of "costs nothing").
                self.full_scan_per_object = scan_seconds / (lease.froze + collected)
            self._leases[lease._seq] = lease
            self._version += 1
        finally:
            self._lock.release()
        return lease

    def check(self) -> None:
        """Notice settings the application changed while leases are held (see the module documentation).

        Cheap: two reads of the collector's settings. Called by the scheduler on every tick.
        """
        with self._lock:
            if self._written is not None:
                self._apply()

    # --------------------------------------------------------------------------------- reading

    def application_thresholds(self) -> tuple[int, ...]:
        """The thresholds the application has: what would be in force without any lease."""
        with self._lock:
            if self._written is not None:
                self._notice()
            if self._base_thresholds is None:
                return tuple(gc.get_threshold())
            return tuple(self._base_thresholds)

    @property
    def frozen_objects(self) -> int:
        """Objects in the permanent generation after the library's last freeze (0 while none is held).

        Read without walking the permanent generation (``gc.get_freeze_count()`` does).
        """
        with self._lock:
            return self._freeze_left if self._has("freeze") else 0

    def count(self, kind: LeaseKind) -> int:
        """Leases of ``kind`` held now."""
        with self._lock:
            return sum(1 for lease in self._leases.values() if lease.kind == kind)

    def stats(self) -> GCStateStats:
        with self._lock:
            counts = dict.fromkeys(("thresholds", "defer", "disable", "freeze"), 0)
            for lease in self._leases.values():
                counts[lease.kind] += 1
            return GCStateStats(
                leases=counts,
                owners=tuple(f"{lease.kind}:{lease.owner}" for lease in self._leases.values()),
                taken_over=tuple(sorted(self._taken_over)),
                expired_total=self.expired_total,
                full_collections_deferred=counts["defer"] > 0 and "oldest" not in self._taken_over,
                disabled_by_leases=counts["disable"] > 0 and "enabled" not in self._taken_over,
            )

    # -------------------------------------------------------------------------------- internals

    def _new(self, kind: LeaseKind, owner: str) -> GCLease:
        return GCLease(self, kind, owner, next(self._seq))

    def _has(self, kind: LeaseKind) -> bool:
        return any(lease.kind == kind for lease in self._leases.values())

    def _add(self, lease: GCLease) -> GCLease:
        with self._lock:
            self._leases[lease._seq] = lease
            self._version += 1
            self._apply()
        return lease

    def _release(self, lease: GCLease) -> bool:
        with self._lock:
            if lease.expired:
                lease.released = True
                return True
            if lease.released:
                return False
            lease.released = True
            del self._leases[lease._seq]
            self._version += 1
            if lease.kind == "freeze" and not self._has("freeze"):
                self._unfreeze()
            self._apply()
            return False

    def _update(self, lease: GCLease, values: tuple[int | None, ...], reassert: bool) -> None:
        with self._lock:
            if lease.kind != "thresholds":
                raise TypeError(f"update() is for thresholds leases, not {lease.kind}")
            lease.values = _checked(values)
            if reassert and self._written is not None:
                self._notice()
                for name, v in zip(_FIELDS, lease.values, strict=True):
                    if v is not None:
                        self._taken_over.discard(name)
            if not lease.released:
                self._version += 1
                self._apply()

    def _in_force(self, lease: GCLease) -> bool:
        with self._lock:
            if lease.released or lease.expired:
                return False
            if self._written is not None:
                self._notice()
            if lease.kind == "defer":
                return "oldest" not in self._taken_over
            if lease.kind == "disable":
                return "enabled" not in self._taken_over
            if lease.kind == "thresholds":
                return any(
                    v is not None and name not in self._taken_over
                    for name, v in zip(_FIELDS, lease.values, strict=False)
                )
            return True

    def _unfreeze(self) -> None:
        count = gc.get_freeze_count()
        foreign = self._foreign_freeze or self._sentinel_frozen()
        if self._freeze_base <= INTERPRETER_FROZEN and not foreign and count <= self._freeze_left:
            gc.unfreeze()
        elif count:
            _log.warning(
                "objects were frozen before or beside the library's own freeze; leaving all %d frozen "
                "(gc.unfreeze() cannot tell whose they are)",
                count,
                extra={"sanaa_frozen": count},
            )

    def _sentinel_frozen(self) -> bool:
        # Walks the unfrozen heap once (milliseconds once the startup heap is frozen).
        sentinel = self._sentinel
        return not any(o is sentinel for o in gc.get_objects())

    def _notice(self) -> None:
        """Adopt the application's own changes since we last wrote (see the module documentation)."""
        written = self._written
        base = self._base_thresholds
        assert written is not None and base is not None
        current = gc.get_threshold()
        for i, value in enumerate(current[: len(base)]):
            if value != written[0][i]:
                name = _FIELDS[i] if i < len(_FIELDS) else f"threshold{i}"
                if self._asks_for(i) and name not in self._taken_over:
                    self._taken_over.add(name)
                    _log.warning(
                        "the %s GC threshold was changed to %d outside the library (it had set %d): "
                        "keeping the application's value",
                        name,
                        value,
                        written[0][i],
                        extra={"sanaa_setting": name, "sanaa_value": value, "sanaa_ours": written[0][i]},
                    )
                base[i] = value
        enabled = gc.isenabled()
        if enabled != written[1]:
            if self._has("disable") and "enabled" not in self._taken_over:
                self._taken_over.add("enabled")
                _log.warning(
                    "the collector was %s outside the library while a GC-free section is open: keeping it so",
                    "enabled" if enabled else "disabled",
                    extra={"sanaa_setting": "enabled", "sanaa_value": enabled},
                )
            self._base_enabled = enabled
        self._written = (tuple(current), enabled)

    def _asks_for(self, i: int) -> bool:
        """Whether a lease held sets threshold ``i`` (the oldest: deferring counts)."""
        for lease in self._leases.values():
            if lease.kind == "thresholds" and i < len(lease.values) and lease.values[i] is not None:
                return True
            if lease.kind == "defer" and i == 2 and self.defers:
                return True
        return False

    def _apply(self) -> None:
        """Put in force what the leases held now ask for (or, with none, what the application has)."""
        while True:
            version = self._version
            if self._written is not None:
                self._notice()
            if not self._leases:
                if self._written is not None and self._base_thresholds is not None:
                    self._write(tuple(self._base_thresholds), self._base_enabled)
                self._written = None
                self._base_thresholds = None
                self._taken_over = set()
            else:
                if self._written is None:
                    self._base_thresholds = list(gc.get_threshold())
                    self._base_enabled = gc.isenabled()
                    self._taken_over = set()
                base = self._base_thresholds
                assert base is not None
                wanted = list(base)
                deferred = disabled = False
                for lease in self._leases.values():
                    if lease.kind == "thresholds":
                        for i, v in enumerate(lease.values[: len(wanted)]):
                            if v is not None:
                                wanted[i] = v
                    elif lease.kind == "defer":
                        deferred = True
                    elif lease.kind == "disable":
                        disabled = True
                if deferred and self.defers and len(wanted) >= 3:
                    wanted[2] = OUT_OF_REACH
                for i, name in enumerate(_FIELDS[: len(wanted)]):
                    if name in self._taken_over:
                        wanted[i] = base[i]
                if "enabled" in self._taken_over:
                    enabled = self._base_enabled
                else:
                    enabled = self._base_enabled and not disabled
                self._write(tuple(wanted), enabled)
                self._written = (tuple(gc.get_threshold()), gc.isenabled())
            if version == self._version:
                return

    @staticmethod
    def _write(thresholds: tuple[int, ...], enabled: bool) -> None:
        if tuple(gc.get_threshold()) != thresholds:
            gc.set_threshold(*thresholds)
        if gc.isenabled() != enabled:
            if enabled:
                gc.enable()
            else:
                gc.disable()

    def _watch(self) -> None:
        with self._lock:
            while True:
                deadlines = [lease.deadline for lease in self._leases.values() if lease.deadline is not None]
                if not deadlines:
                    self._wake.wait()
                    continue
                now = time.monotonic()
                nearest = min(deadlines)
                if nearest > now:
                    self._wake.wait(nearest - now)
                    continue
                for lease in [
                    lease
                    for lease in self._leases.values()
                    if lease.deadline is not None and lease.deadline <= now
                ]:
                    lease.expired = True
                    del self._leases[lease._seq]
                    self._version += 1
                    self.expired_total += 1
                    _log.warning(
                        "GC-free section open for more than %.3f s: closing it so GC is not left disabled",
                        lease.max_duration,
                        extra={
                            "sanaa_max_duration": lease.max_duration,
                            "sanaa_owner": lease.owner,
                            "sanaa_open_sections": self.count("disable"),
                        },
                    )
                self._apply()


def _checked(values: tuple[int | None, ...]) -> tuple[int | None, ...]:
    # gc.set_threshold takes C ints: a bad value must fail here, by name, not half-way through _apply.
    return tuple(
        None if v is None else positive_int(f"thresholds.{name}", v, minimum=0, maximum=MAX_C_INT)
        for name, v in zip(_FIELDS, values, strict=True)
    )


#: Objects the interpreter itself had put in the permanent generation when this module was imported:
#: CPython 3.12 starts with a few hundred immortal tuples there, 3.11 and 3.13 with none. Unfreezing them
#: with the library's own (``gc.unfreeze()`` moves all or nothing) changes nothing but the count: they are
#: immortal. Anything frozen beyond them was frozen by someone else and is never unfrozen for them.
INTERPRETER_FROZEN = min(gc.get_freeze_count(), 10_000)

_STATE = GCState()
if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX platform has it
    os.register_at_fork(after_in_child=_STATE._after_fork)


def gc_state() -> GCState:
    """The process's one :class:`GCState`."""
    return _STATE


__all__ = [
    "INTERPRETER_FROZEN",
    "OUT_OF_REACH",
    "GCLease",
    "GCState",
    "GCStateStats",
    "LeaseKind",
    "gc_state",
]
