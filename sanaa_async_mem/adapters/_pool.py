"""The pool the adapters return: an AsyncPool that skips the reset for objects already clean."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..pool import AsyncPool, _Entry

T = TypeVar("T")


class CleanSkippingPool(AsyncPool[T]):
    """An :class:`AsyncPool` whose ``reset`` runs only when ``is_clean(obj)`` says it is needed.

    Why: the pool runs every reset in a task of its own (shielded, so a cancelled holder still returns its
    object), and that task costs about as much as a ``SELECT 1`` round trip's client-side work. Almost
    every connection comes back clean (no transaction open), so ``is_clean`` — a synchronous look at the
    driver's own state, no I/O — lets those go back at once and keeps the reset for the few that need it.
    """

    def __init__(self, factory: Callable[[], Any], *, is_clean: Callable[[T], bool], **options: Any) -> None:
        super().__init__(factory, **options)
        self._is_clean = is_clean

    async def _return_with_reset(self, entry: _Entry[T], discard: bool) -> None:
        if not discard and not entry.broken and self._is_open:
            try:
                clean = self._is_clean(entry.obj)
            except Exception:
                clean = False
            if clean:
                self._release(entry, False)
                return
        await super()._return_with_reset(entry, discard)
