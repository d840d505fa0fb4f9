"""AsyncPool of ``psycopg.AsyncConnection`` objects (extra: ``psycopg``)."""

from __future__ import annotations

import select
import weakref
from collections.abc import Mapping
from typing import Any, Unpack

from ...pools.pool import AsyncPool, PoolOptions
from ._pool import build_pool, documents_pool_options, reset_unless_clean
from ._require import require

__all__ = ["psycopg_pool"]


@documents_pool_options
def psycopg_pool(
    conninfo: str = "",
    *,
    application_name: str | None = None,
    autocommit: bool = False,
    connect_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Unpack[PoolOptions],
) -> AsyncPool[Any]:
    """A pool of psycopg 3 async connections (``connect_kwargs`` go to ``AsyncConnection.connect``); at
    most ``max_size=10`` by default.

    The reset rolls back a transaction left open (or failed) and discards a connection that is broken or
    still mid-query (e.g. the holder was cancelled during a query), like ``psycopg_pool``'s return path.
    Health: ``alive`` runs on every hand-out of an idle connection and costs one non-blocking ``poll()``
    of its socket, no round trip: an idle connection's socket has something to read only when the server
    sent something unasked, typically the FATAL notice that it is closing the session
    (``pg_terminate_backend``, shutdown) or the end of file; libpq then reads it and such a connection is
    dropped. The check (idle
    connections only) runs ``SELECT 1`` and rolls back the transaction it may open.
    ``OperationalError`` (lost connection, admin shutdown...), ``InterfaceError`` and ``OSError`` raised
    in the block discard the connection.
    """
    psycopg = require("psycopg", "psycopg")
    status = psycopg.pq.TransactionStatus
    conn_ok = psycopg.pq.ConnStatus.OK
    kwargs: dict[str, Any] = dict(connect_kwargs or {})
    kwargs.setdefault("autocommit", autocommit)
    if application_name is not None:
        kwargs["application_name"] = application_name

    # Connections whose server sent FATAL while they sat idle (``pg_terminate_backend``, shutdown):
    # libpq hands such an unasked error to the notice handlers, before the socket's end of file arrives.
    doomed: weakref.WeakSet[Any] = weakref.WeakSet()

    async def connect() -> Any:
        conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        ref = weakref.ref(conn)

        def on_notice(diag: Any) -> None:
            if diag.severity_nonlocalized in ("FATAL", "PANIC") and (c := ref()) is not None:
                doomed.add(c)

        conn.add_notice_handler(on_notice)
        return conn

    def alive(conn: Any) -> bool:
        if conn.closed or conn.broken:
            return False
        pgconn = conn.pgconn
        # Read what the server sent unasked, if anything, and let libpq parse it (is_busy): the notice
        # of a closing session, or the end of file, on which consume_input() raises OperationalError (not
        # alive). A few reads at most: an idle connection has little to say (a NOTIFY, a parameter).
        for _ in range(3):
            if not _readable(pgconn.socket):
                break
            pgconn.consume_input()
            pgconn.is_busy()
        return bool(pgconn.status == conn_ok) and conn not in doomed

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

    defaults: dict[str, Any] = {
        "max_size": 10,
        "check": check,
        "alive": alive,
        "reset": reset_unless_clean(clean, reset),
        "close": close,
        "discard_on": (psycopg.OperationalError, psycopg.InterfaceError, OSError),
    }
    return build_pool(connect, defaults, pool_options)


def _readable(fd: int) -> bool:
    """Has the socket something to read (or hit end of file)? Never blocks."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
