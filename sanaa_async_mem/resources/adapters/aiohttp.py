"""AsyncPool of ``aiohttp.ClientSession`` objects (extra: ``aiohttp``), and a cleanup for a shared one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...pools.pool import AsyncPool
from ._require import require

__all__ = ["aiohttp_pool", "close_session"]


async def close_session(session: Any) -> None:
    """Close a ``ClientSession`` (usable as ``cleanup=`` for a session registered as a shared resource)."""
    if not session.closed:
        await session.close()


def aiohttp_pool(
    *,
    min_size: int = 0,
    max_size: int = 10,
    session_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Any,
) -> AsyncPool[Any]:
    """A pool of ``aiohttp.ClientSession`` objects (``session_kwargs`` go to ``ClientSession``).

    One shared session is usually right (register it with ``close_session`` as cleanup); a pool fits when
    each holder needs a session of its own (cookies, headers, per-holder connection limits). A session's
    connector already drops broken connections, so a session is discarded only when it was closed (the
    check); connection errors raised in the block (``aiohttp.ClientConnectionError``) do not discard it.
    """
    aiohttp = require("aiohttp", "aiohttp")
    kwargs = dict(session_kwargs or {})

    async def create() -> Any:
        # Made inside the factory, so on the running loop (aiohttp binds a session to it).
        return aiohttp.ClientSession(**kwargs)

    def check(session: Any) -> bool:
        return not session.closed

    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "check": check,
        "close": close_session,
    }
    options.update(pool_options)
    return AsyncPool(create, **options)
