"""What the adapters share: how a pool is built from the adapter's defaults and the caller's options,
the text that documents those options, and a reset that costs nothing for connections that come back
clean."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from ...pools.pool import AsyncPool, pool_options

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

POOL_OPTIONS_DOC = """

    Pool options: every keyword of :class:`~sanaa_async_mem.pools.AsyncPool` may be given and overrides
    what this adapter sets. ``name`` (shown in logs, errors and metrics); ``min_size`` (objects kept
    ready, default 0) and ``max_size`` (at most); ``timeout`` (the longest wait in ``acquire``, default
    30 s); ``create_timeout`` (one connect, 30 s); ``hook_timeout`` (one check, reset or close, 10 s);
    ``check_skip_within`` (objects used this recently skip the check, 0.5 s; the cheap ``alive`` test
    still runs); ``max_lifetime`` and ``lifetime_jitter`` (replace connections after a time); ``max_idle``
    (close idle ones beyond ``min_size``); ``max_waiting`` (refuse callers beyond this many waiting);
    ``max_creating`` (connects in flight at once); ``held_warning`` (log connections held longer, with the
    acquiring stack); ``maintenance_interval``; ``budget`` (a :class:`~sanaa_async_mem.fleet.FleetBudget`:
    connections across every process sharing it stay within its total); and the hooks ``check``,
    ``alive``, ``reset``, ``close`` and ``discard_on``. An unknown keyword raises
    :class:`~sanaa_async_mem.errors.ConfigurationError` naming it.
"""


def documents_pool_options(fn: F) -> F:
    """Append the pool options to an adapter's docstring (one text for all adapters, so none drifts)."""
    fn.__doc__ = (fn.__doc__ or "").rstrip() + POOL_OPTIONS_DOC
    return fn


def build_pool(
    factory: Callable[[], Awaitable[Any]], defaults: dict[str, Any], options: Mapping[str, Any]
) -> AsyncPool[Any]:
    """``AsyncPool(factory, **defaults)`` with the caller's ``options`` on top (unknown names refused)."""
    merged = dict(defaults)
    merged.update(pool_options(dict(options)))
    return AsyncPool(factory, **merged)


def reset_unless_clean(is_clean: Callable[[T], bool], reset: Callable[[T], Any]) -> Callable[[T], Any]:
    """A pool ``reset`` hook that calls ``reset(obj)`` only when ``is_clean(obj)`` is false.

    Why: almost every connection comes back clean (no transaction open), and the pool awaits a reset in
    a task of its own only when the hook returns an awaitable. ``is_clean`` is a synchronous look at the
    driver's own state (no I/O), so clean connections go back at once. An ``is_clean`` that raises counts
    as dirty.
    """

    def maybe_reset(obj: T) -> Any:
        try:
            clean = is_clean(obj)
        except Exception:
            clean = False
        return None if clean else reset(obj)

    return maybe_reset
