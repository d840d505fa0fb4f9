"""AsyncPool of ``psycopg.AsyncConnection`` objects (extra: ``psycopg``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...pools.pool import AsyncPool
from ._pool import reset_unless_clean
from ._require import require

__all__ = ["psycopg_pool"]


def psycopg_pool(
    conninfo: str = "",
    *,
    min_size: int = 0,
    max_size: int = 10,
    application_name: str | None = None,
    autocommit: bool = False,
    connect_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Any,
) -> AsyncPool[Any]:
    """A pool of psycopg 3 async connections (``connect_kwargs`` go to ``AsyncConnection.connect``).

    The reset rolls back a transaction left open (or failed) and discards a connection that is broken or
    still mid-query (e.g. the holder was cancelled during a query), like ``psycopg_pool``'s return path.
    The check (idle connections only) runs ``SELECT 1`` and rolls back the transaction it may open.
    ``OperationalError`` (lost connection, admin shutdown...), ``InterfaceError`` and ``OSError`` raised
    in the block discard the connection.
    """
    psycopg = require("psycopg", "psycopg")
    status = psycopg.pq.TransactionStatus
    kwargs: dict[str, Any] = dict(connect_kwargs or {})
    kwargs.setdefault("autocommit", autocommit)
    if application_name is not None:
        kwargs["application_name"] = application_name

    async def connect() -> Any:
        return await psycopg.AsyncConnection.connect(conninfo, **kwargs)

    async def check(conn: Any) -> bool:
        if conn.closed or conn.broken:
            return False
        await conn.execute("SELECT 1")
        if conn.info.transaction_status != status.IDLE:
            await conn.rollback()
        return True

    async def reset(conn: Any) -> None:
        state = conn.info.transaction_status
        if conn.broken or state in (status.UNKNOWN, status.ACTIVE):
            raise psycopg.OperationalError(f"connection not reusable (transaction status {state.name})")
        if state != status.IDLE:
            await conn.rollback()

    async def close(conn: Any) -> None:
        await conn.close()

    def clean(conn: Any) -> bool:
        return not conn.broken and conn.info.transaction_status == status.IDLE

    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "check": check,
        "reset": reset_unless_clean(clean, reset),
        "close": close,
        "discard_on": (psycopg.OperationalError, psycopg.InterfaceError, OSError),
    }
    options.update(pool_options)
    return AsyncPool(connect, **options)
