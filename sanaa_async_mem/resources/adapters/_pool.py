"""What the adapters share: a reset that costs nothing for connections that come back clean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


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
