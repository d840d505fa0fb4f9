"""AsyncPool of single-connection ``redis.asyncio.Redis`` clients (extra: ``redis``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

from ...pools.pool import AsyncPool, PoolOptions
from ._pool import build_pool, documents_pool_options
from ._require import require

__all__ = ["redis_pool"]


@documents_pool_options
def redis_pool(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    client_name: str | None = None,
    retries: int = 0,
    client_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Unpack[PoolOptions],
) -> AsyncPool[Any]:
    """A pool of ``redis.asyncio.Redis`` clients, each bound to one connection of its own
    (``single_connection_client=True``), so a holder has the connection to itself (pipelines,
    ``WATCH``/``MULTI`` and blocking commands cannot interleave with other tasks); at most
    ``max_size=10`` by default.

    ``client_name`` is set with ``CLIENT SETNAME`` on each connection (visible in ``CLIENT LIST``).
    ``retries`` is redis-py's own retry on connection errors; the default 0 lets the error reach the
    pool, which discards the client (``redis.ConnectionError``, ``redis.TimeoutError``, ``OSError``) and
    counts it, instead of redis-py reconnecting behind the pool's back.
    Health: ``alive`` runs on every hand-out of an idle client: its connection must still be there and
    not at end of file (the event loop sees the server close an idle socket, e.g. ``CLIENT KILL`` or a
    restart, without any I/O of ours). The check (idle clients only) is ``PING``. The reset discards a
    client whose connection redis-py has dropped or the server has closed (after a connection error
    caught inside the block, or a command cancelled mid-reply), so the next holder never pays for the
    reconnect; a connected client goes back without any I/O.
    """
    redis_asyncio = require("redis.asyncio", "redis")
    retry_mod = require("redis.asyncio.retry", "redis")
    backoff_mod = require("redis.backoff", "redis")
    redis_exceptions = require("redis.exceptions", "redis")
    kwargs: dict[str, Any] = dict(client_kwargs or {})
    kwargs["single_connection_client"] = True
    kwargs.setdefault("retry", retry_mod.Retry(backoff_mod.NoBackoff(), retries))
    if client_name is not None:
        kwargs["client_name"] = client_name

    async def connect() -> Any:
        client = redis_asyncio.Redis.from_url(url, **kwargs)
        try:
            await client.initialize()  # connects now, so a bad URL fails here and not in the block
        except BaseException:
            await client.aclose()
            raise
        return client

    async def check(client: Any) -> bool:
        return bool(await client.ping())

    async def close(client: Any) -> None:
        await client.aclose()

    def reset(client: Any) -> None:
        if not _alive(client):
            raise redis_exceptions.ConnectionError("connection dropped while held")

    defaults: dict[str, Any] = {
        "max_size": 10,
        "check": check,
        "alive": _alive,
        "reset": reset,
        "close": close,
        "discard_on": (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError),
    }
    return build_pool(connect, defaults, pool_options)


def _alive(client: Any) -> bool:
    conn = client.connection
    if conn is None or not conn.is_connected:
        return False
    reader = conn._reader  # the asyncio StreamReader: fed end-of-file by the loop when the server closes
    return not (reader is None or reader.at_eof())
