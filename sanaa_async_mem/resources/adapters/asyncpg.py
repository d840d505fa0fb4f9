"""AsyncPool of ``asyncpg.Connection`` objects (extra: ``asyncpg``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Unpack

from ...errors import ConfigurationError
from ...pools.pool import AsyncPool, PoolSettings
from ._pool import build_pool, documents_pool_options
from ._require import require

__all__ = ["AsyncpgPoolOptions", "asyncpg_pool"]

# Seconds given to a polite close (Terminate message) before the socket is simply dropped.
_CLOSE_TIMEOUT = 5.0


class AsyncpgPoolOptions(PoolSettings, total=False):
    """The pool options :func:`asyncpg_pool` passes on (``reset`` is the adapter's own, a mode)."""

    check: Callable[[Any], Any] | None
    alive: Callable[[Any], bool] | None
    close: Callable[[Any], Any] | None
    discard_on: tuple[type[BaseException], ...]


@documents_pool_options
def asyncpg_pool(
    dsn: str | None = None,
    *,
    application_name: str | None = None,
    reset: Literal["rollback", "full"] | None = "rollback",
    connect_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Unpack[AsyncpgPoolOptions],
) -> AsyncPool[Any]:
    """A pool of asyncpg connections to ``dsn`` (``connect_kwargs`` go to ``asyncpg.connect``); at most
    ``max_size=10`` by default.

    ``application_name`` is set on every connection (visible in ``pg_stat_activity``).

    ``reset``, run when a connection comes back:

    * ``"rollback"`` (default): roll back a transaction left open, nothing else. A connection back from
      a plain query is in no transaction, so this costs no round trip (nor the pool's reset task: the
      hook looks at the driver's state and returns an awaitable only when there is something to do);
    * ``"full"``: asyncpg's own ``Connection.reset()`` (also closes cursors, unlistens, resets session
      state with ``RESET ALL``...: one extra round trip per release, as ``asyncpg.Pool`` does);
    * ``None``: no reset at all (fastest; only for code that never leaves a transaction open).

    Health: ``alive`` is ``not conn.is_closed()``, on every hand-out of an idle connection (asyncpg
    notices a connection the server closed, e.g. ``pg_terminate_backend`` or a restart, without I/O);
    the check (a connection idle for ``check_skip_within``) is ``SELECT 1``. Lost connections and server
    shutdowns raised in the block (``InterfaceError``, ``PostgresConnectionError`` such as
    ``ConnectionDoesNotExistError``, ``AdminShutdownError``, ``OSError``...) discard the connection.
    """
    asyncpg = require("asyncpg", "asyncpg")
    exceptions = asyncpg.exceptions
    kwargs: dict[str, Any] = dict(connect_kwargs or {})
    if application_name is not None:
        settings = dict(kwargs.get("server_settings") or {})
        settings["application_name"] = application_name
        kwargs["server_settings"] = settings

    async def connect() -> Any:
        return await asyncpg.connect(dsn, **kwargs)

    def alive(conn: Any) -> bool:
        return not conn.is_closed()

    async def check(conn: Any) -> bool:
        if conn.is_closed():
            return False
        await conn.fetchval("SELECT 1")
        return True

    async def rollback(conn: Any) -> None:
        if conn.is_closed():
            raise exceptions.ConnectionDoesNotExistError("connection closed while held")
        if conn.is_in_transaction() or conn._top_xact is not None:
            # What asyncpg's own reset does: forget the client-side transaction too, or the next
            # conn.transaction() would think it is nested and send SAVEPOINT outside any transaction.
            conn._top_xact = None
            await conn.execute("ROLLBACK")

    def rollback_if_dirty(conn: Any) -> Any:
        # The pool calls this inline on every release; it looks at the driver's state (no I/O) and returns
        # the awaitable rollback only for a connection left in a transaction, or closed while held. It
        # reads what is_in_transaction() and is_closed() read, without their two extra Python calls.
        protocol = conn._protocol
        if (
            protocol.is_in_transaction()
            or conn._top_xact is not None
            or conn._aborted
            or not protocol.is_connected()
        ):
            return rollback(conn)
        return None

    async def full_reset(conn: Any) -> None:
        if conn.is_closed():
            raise exceptions.ConnectionDoesNotExistError("connection closed while held")
        await conn.reset()

    async def close(conn: Any) -> None:
        try:
            await conn.close(timeout=_CLOSE_TIMEOUT)
        except Exception:
            conn.terminate()  # already broken: just drop the socket

    if reset not in ("rollback", "full", None):
        raise ConfigurationError("reset", reset, "must be 'rollback', 'full' or None")
    defaults: dict[str, Any] = {
        "max_size": 10,
        "check": check,
        "alive": alive,
        "reset": {"rollback": rollback_if_dirty, "full": full_reset, None: None}[reset],
        "close": close,
        "discard_on": (
            asyncpg.InterfaceError,
            exceptions.PostgresConnectionError,
            exceptions.AdminShutdownError,
            exceptions.CrashShutdownError,
            exceptions.CannotConnectNowError,
            # asyncpg's protocol state machine breaks when the server drops the connection mid-operation
            # ("cannot switch to state ..."): the connection is unusable.
            exceptions.InternalClientError,
            OSError,
        ),
    }
    return build_pool(connect, defaults, pool_options)
