"""WeakReferenceCache: a keyed cache that does not keep its values alive.

A value stays cached while something else holds it; once the last strong reference goes (and, for cycles,
the garbage collector has run), its entry disappears by itself and the optional ``on_expire`` callback is
called with the key.

Values that cannot be weakly referenced (``int``, ``str``, ``bytes``, ``tuple``, ``list``, ``dict``, ``None``
and instances of ``__slots__`` classes without ``__weakref__``) are refused with a ``TypeError`` unless the
caller opts in to holding them strongly: per entry with ``put(key, value, strong=True)``, or for the whole
cache with ``WeakReferenceCache(strong_fallback=True)``. Strong entries never expire; they stay until
:meth:`~WeakReferenceCache.pop`, :meth:`~WeakReferenceCache.clear` or a new ``put`` under their key.

Threads and the garbage collector
    Every method may be called from any thread. Weak-reference callbacks run wherever the object dies: in
    any thread, in the middle of a garbage collection, possibly while this thread is inside the cache. So the
    callback only queues the dead entry and removes it if it can take the lock without waiting; otherwise
    the thread holding the lock removes it as it leaves. ``on_expire`` therefore runs in whichever thread
    removed the entry, never while the cache's lock is held (it may use the cache), at most once per entry,
    and only for entries that died while cached (not for replaced, popped or cleared ones).
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, overload

from .._logging import get_logger
from ..errors import ConfigurationError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
D = TypeVar("D")

_log = get_logger("memory")


class _WeakEntry(weakref.ref):  # type: ignore[type-arg]
    """A weak reference that knows its key (the callback receives only the reference)."""

    __slots__ = ("key",)

    key: Any

    def __new__(cls, value: object, callback: Callable[[Any], None], key: object) -> _WeakEntry:
        self = super().__new__(cls, value, callback)
        self.key = key
        return self

    def __init__(self, value: object, callback: Callable[[Any], None], key: object) -> None:
        super().__init__(value, callback)  # type: ignore[call-arg]


class _StrongEntry:
    """An opted-in strong entry; called like a weak reference, it returns its value."""

    __slots__ = ("key", "value")

    def __init__(self, key: object, value: object) -> None:
        self.key = key
        self.value = value

    def __call__(self) -> object:
        return self.value


def _reaper(cache_ref: weakref.ref[WeakReferenceCache[Any, Any]]) -> Callable[[Any], None]:
    # Holds the cache weakly: the entries hold this callback, and the cache must not keep itself alive
    # through its own entries.
    def reap(entry: Any) -> None:
        cache = cache_ref()
        if cache is not None:
            cache._pending.append(entry)
            cache._reap_pending()

    return reap


class WeakReferenceCache(Generic[K, V]):
    """A thread-safe ``key -> value`` cache holding its values by weak reference.

    ``on_expire``
        Called with the key when a cached value dies (see the module notes for when and where). Exceptions
        it raises are logged (logger ``sanaa.memory``) and counted in ``callback_errors``; they never reach
        the garbage collector or the thread that happened to drop the value.
    ``strong_fallback``
        Hold values that cannot be weakly referenced strongly instead of refusing them.

    Raises ``TypeError`` for a non-callable ``on_expire`` and ConfigurationError for a non-bool
    ``strong_fallback`` or an empty ``name``.
    """

    def __init__(
        self,
        on_expire: Callable[[K], object] | None = None,
        *,
        strong_fallback: bool = False,
        name: str = "weak_cache",
    ) -> None:
        if on_expire is not None and not callable(on_expire):
            raise TypeError(
                f"on_expire must be callable or None, got {type(on_expire).__name__} {on_expire!r}"
            )
        if not isinstance(strong_fallback, bool):
            raise ConfigurationError("strong_fallback", strong_fallback, "must be a bool")
        if not isinstance(name, str) or not name:
            raise ConfigurationError("name", name, "must be a non-empty string")
        self._on_expire = on_expire
        self._strong_fallback = strong_fallback
        self._name = name
        # A plain Lock, and critical sections that neither allocate container objects nor drop the last
        # reference to anything: so no garbage collection, weakref callback or __del__ can run while it is
        # held, and nothing can re-enter the cache and deadlock on it.
        self._lock = threading.Lock()
        self._data: dict[K, _WeakEntry | _StrongEntry] = {}
        # Entries whose value died, queued by the weakref callback (deque.append is atomic).
        self._pending: deque[_WeakEntry] = deque()
        self._reap = _reaper(weakref.ref(self))
        self._hits = 0
        self._misses = 0
        self._expired = 0
        self._puts = 0
        self._callback_errors = 0

    @property
    def name(self) -> str:
        return self._name

    def put(self, key: K, value: V, *, strong: bool = False) -> None:
        """Cache ``value`` under ``key`` (replacing any entry; the replaced one does not expire).

        ``strong=True`` holds the value strongly (needed for ``int``, ``str``, ``list``, ``dict``, ...): the
        entry then stays until popped, cleared or replaced.

        Raises ``TypeError`` for ``None``, for an unhashable key, and for a value that cannot be weakly
        referenced when neither ``strong=True`` nor ``strong_fallback`` is set; the cache is then unchanged.
        """
        if value is None:
            raise TypeError("WeakReferenceCache cannot hold None: get() returns None for a missing key")
        hash(key)
        entry: _WeakEntry | _StrongEntry
        if strong:
            entry = _StrongEntry(key, value)
        else:
            try:
                entry = _WeakEntry(value, self._reap, key)
            except TypeError:
                if not self._strong_fallback:
                    kind = type(value).__name__
                    raise TypeError(
                        f"objects of type {kind!r} cannot be weakly referenced, so WeakReferenceCache "
                        f"cannot hold one without keeping it alive; pass put(key, value, strong=True) (or "
                        f"construct the cache with strong_fallback=True) to hold it strongly, or cache an "
                        f"object that supports weak references (a class instance with __weakref__)"
                    ) from None
                entry = _StrongEntry(key, value)
        with self._lock:
            # Keep the replaced entry referenced until the lock is released (see the note on _lock).
            replaced = self._data.get(key)
            self._data[key] = entry
            self._puts += 1
        del replaced
        if self._pending:
            self._reap_pending()

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        """The cached value (a hit), or ``default`` if there is none or it has died (a miss)."""
        with self._lock:
            entry = self._data.get(key)
            value = entry() if entry is not None else None
            if value is None:
                self._misses += 1
            else:
                self._hits += 1
        if self._pending:
            self._reap_pending()
        return default if value is None else value

    @overload
    def pop(self, key: K) -> V | None: ...
    @overload
    def pop(self, key: K, default: D) -> V | D: ...

    def pop(self, key: K, default: object = None) -> object:
        """Remove the entry of ``key``; its value if it was alive, else ``default``. Not a lookup: hits and
        misses are not counted. A dead entry removed here counts as expired (and ``on_expire`` runs)."""
        with self._lock:
            entry = self._data.pop(key, None)
            value = entry() if entry is not None else None
            died = entry is not None and value is None
            if died:
                self._expired += 1
        if died:
            self._notify(key)
        if self._pending:
            self._reap_pending()
        return default if value is None else value

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` has a live entry (not counted as a lookup)."""
        entry = self._data.get(key)  # type: ignore[arg-type]
        return entry is not None and entry() is not None

    def __len__(self) -> int:
        """Live entries. (A value dying in another thread at this very moment may still be counted until
        its weakref callback has run.)"""
        if self._pending:
            self._reap_pending()
        return len(self._data)

    def clear(self) -> int:
        """Remove every entry (``on_expire`` is not called); returns how many entries there were."""
        fresh: dict[K, _WeakEntry | _StrongEntry] = {}
        with self._lock:
            old, self._data = self._data, fresh
        n = len(old)
        del old  # drops the entries outside the lock: values held strongly may die here
        if self._pending:
            self._reap_pending()
        return n

    def stats(self) -> WeakCacheStats:
        """A frozen snapshot of the cache's size and counters (see :class:`WeakCacheStats`)."""
        if self._pending:
            self._reap_pending()
        with self._lock:
            size = len(self._data)
            hits, misses, expired = self._hits, self._misses, self._expired
            puts, callback_errors = self._puts, self._callback_errors
        strong = sum(1 for e in list(self._data.values()) if isinstance(e, _StrongEntry))
        return WeakCacheStats(
            name=self._name,
            size=size,
            strong=strong,
            hits=hits,
            misses=misses,
            expired=expired,
            puts=puts,
            callback_errors=callback_errors,
        )

    def get_stats(self) -> dict[str, Any]:
        """:meth:`stats` as a plain dict with stable keys (the original name of the call)."""
        return self.stats().as_dict()

    def __repr__(self) -> str:
        return f"<WeakReferenceCache {self._name!r} size={len(self._data)}>"

    # -- dead entries --------------------------------------------------------------------------------------

    def _reap_pending(self) -> None:
        """Remove queued dead entries, then run ``on_expire`` for them outside the lock.

        Never waits for the lock (this runs inside weakref callbacks, possibly while this very thread holds
        it): if it is taken, its holder runs this again after releasing it, so no queued entry is stranded.
        """
        while self._pending:
            # Allocated before taking the lock, and holding every popped entry until it is released (see the
            # note on _lock).
            popped: list[_WeakEntry] = []
            dead: list[K] = []
            if not self._lock.acquire(blocking=False):
                return
            try:
                while self._pending:
                    entry = self._pending.popleft()
                    popped.append(entry)
                    # The key may have been given a new value since; only the entry that died goes.
                    if self._data.get(entry.key) is entry:
                        del self._data[entry.key]
                        self._expired += 1
                        dead.append(entry.key)
            finally:
                self._lock.release()
            del popped
            for key in dead:
                self._notify(key)

    def _notify(self, key: K) -> None:
        if self._on_expire is None:
            return
        try:
            self._on_expire(key)
        except Exception:
            with self._lock:
                self._callback_errors += 1
            _log.warning(
                "weak cache %r: on_expire(%r) raised",
                self._name,
                key,
                exc_info=True,
                extra={"sanaa_cache": self._name, "sanaa_key": repr(key)},
            )


@dataclasses.dataclass(frozen=True, slots=True)
class WeakCacheStats:
    """A snapshot of a :class:`WeakReferenceCache`: ``size`` (entries, live or awaiting removal),
    ``strong`` (entries held strongly), ``hits``, ``misses``, ``hit_ratio`` (0.0 before any lookup),
    ``expired`` (entries removed because their value died), ``puts``, ``callback_errors`` (``on_expire``
    raised)."""

    name: str
    size: int
    strong: int
    hits: int
    misses: int
    expired: int
    puts: int
    callback_errors: int

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain values with stable keys."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["hit_ratio"] = self.hit_ratio
        return out


__all__ = ["WeakCacheStats", "WeakReferenceCache"]
