"""AsyncPool of ``aiohttp.ClientSession`` objects (extra: ``aiohttp``), and a cleanup for a shared one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from ...pools.pool import AsyncPool, PoolOptions
from ._pool import build_pool, documents_pool_options
from ._require import require

__all__ = ["aiohttp_pool", "close_session"]


async def close_session(session: Any) -> None:
    """Close a ``ClientSession`` (usable as ``cleanup=`` for a session registered as a shared resource)."""
    if not session.closed:
        await session.close()


@documents_pool_options
def aiohttp_pool(
    *, session_kwargs: Mapping[str, Any] | None = None, **pool_options: Unpack[PoolOptions]
) -> AsyncPool[Any]:
    """A pool of ``aiohttp.ClientSession`` objects (``session_kwargs`` go to ``ClientSession``); at most
    ``max_size=10`` by default.

    One shared session is usually right (register it with ``close_session`` as cleanup); a pool fits when
    each holder needs a session of its own (cookies, headers, per-holder connection limits). A session's
    connector already drops broken connections, so a session is discarded only when it was closed (the
    ``alive`` test, on every hand-out); connection errors raised in the block
    (``aiohttp.ClientConnectionError``) do not discard it.
    """
    aiohttp = require("aiohttp", "aiohttp")
    kwargs = dict(session_kwargs or {})

    async def create() -> Any:
        # Made inside the factory, so on the running loop (aiohttp binds a session to it).
        return aiohttp.ClientSession(**kwargs)

    def alive(session: Any) -> bool:
        return not session.closed

    defaults: dict[str, Any] = {"max_size": 10, "alive": alive, "close": close_session}
    return build_pool(create, defaults, pool_options)
