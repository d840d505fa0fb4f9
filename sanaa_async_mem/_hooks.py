"""Calling user hooks: sync or async callables, validated once at construction."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError


def require_callable(name: str, value: object, *, allow_none: bool = True) -> None:
    """Raise :class:`ConfigurationError` naming ``name`` unless ``value`` is callable (or allowed None)."""
    if value is None and allow_none:
        return
    if not callable(value):
        what = "a callable (sync or async) or None" if allow_none else "a callable (sync or async)"
        raise ConfigurationError(name, value, f"must be {what}")


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async callable and return its result (awaited if it is awaitable)."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
