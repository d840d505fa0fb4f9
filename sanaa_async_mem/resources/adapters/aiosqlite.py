"""AsyncPool of ``aiosqlite.Connection`` objects (extra: ``aiosqlite``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from typing import Any

from ...pools.pool import AsyncPool
from ._pool import reset_unless_clean
from ._require import require

__all__ = ["aiosqlite_pool"]


def aiosqlite_pool(
    database: str | os.PathLike[str],
    *,
    min_size: int = 0,
    max_size: int = 5,
    connect_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Any,
) -> AsyncPool[Any]:
    """A pool of aiosqlite connections to ``database`` (``connect_kwargs`` go to ``aiosqlite.connect``).

    Each connection has a thread of its own, so ``max_size`` is also a thread count (default 5). The reset
    rolls back a transaction left open; the check (idle connections only) runs ``SELECT 1``;
    ``sqlite3.InterfaceError`` raised in the block discards the connection, and a connection whose worker
    thread has stopped fails the check (aiosqlite raises ``ValueError``) and is replaced.
    """
    aiosqlite = require("aiosqlite", "aiosqlite")
    kwargs = dict(connect_kwargs or {})

    async def connect() -> Any:
        return await aiosqlite.connect(database, **kwargs)

    async def check(conn: Any) -> bool:
        async with conn.execute("SELECT 1") as cursor:
            row = await cursor.fetchone()
        return bool(row == (1,))

    async def reset(conn: Any) -> None:
        if conn.in_transaction:
            await conn.rollback()

    async def close(conn: Any) -> None:
        await conn.close()

    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "check": check,
        "reset": reset_unless_clean(lambda conn: not conn.in_transaction, reset),
        "close": close,
        "discard_on": (sqlite3.InterfaceError,),
    }
    options.update(pool_options)
    return AsyncPool(connect, **options)
