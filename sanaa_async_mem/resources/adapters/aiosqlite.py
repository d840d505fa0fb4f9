"""AsyncPool of ``aiosqlite.Connection`` objects (extra: ``aiosqlite``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import Any, Unpack

from ...pools.pool import AsyncPool, PoolOptions
from ._pool import build_pool, documents_pool_options, reset_unless_clean
from ._require import require

__all__ = ["aiosqlite_pool"]


@documents_pool_options
def aiosqlite_pool(
    database: str | os.PathLike[str],
    *,
    connect_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Unpack[PoolOptions],
) -> AsyncPool[Any]:
    """A pool of aiosqlite connections to ``database`` (``connect_kwargs`` go to ``aiosqlite.connect``).

    Each connection has a thread of its own, so ``max_size`` is also a thread count (default 5). The reset
    rolls back a transaction left open; ``alive`` (every hand-out) sees a connection that was closed or
    whose worker thread has stopped; the check (idle connections only) runs ``SELECT 1``.
    ``sqlite3.InterfaceError`` raised in the block discards the connection.
    """
    aiosqlite = require("aiosqlite", "aiosqlite")
    kwargs = dict(connect_kwargs or {})

    async def connect() -> Any:
        return await aiosqlite.connect(database, **kwargs)

    def alive(conn: Any) -> bool:
        # aiosqlite's own state (no I/O): running, connected, and its worker thread still there.
        thread = getattr(conn, "_thread", None)
        return bool(
            getattr(conn, "_running", True)
            and getattr(conn, "_connection", True) is not None
            and (thread is None or thread.is_alive())
        )

    async def check(conn: Any) -> bool:
        async with conn.execute("SELECT 1") as cursor:
            row = await cursor.fetchone()
        return bool(row == (1,))

    async def reset(conn: Any) -> None:
        if conn.in_transaction:
            await conn.rollback()

    async def close(conn: Any) -> None:
        await conn.close()

    defaults: dict[str, Any] = {
        "max_size": 5,
        "check": check,
        "alive": alive,
        "reset": reset_unless_clean(lambda conn: not conn.in_transaction, reset),
        "close": close,
        "discard_on": (sqlite3.InterfaceError,),
    }
    return build_pool(connect, defaults, pool_options)
