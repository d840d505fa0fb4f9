"""AsyncPool of single-connection ``redis.asyncio.Redis`` clients (extra: ``redis``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...pools.pool import AsyncPool
from ._require import require

__all__ = ["redis_pool"]


def redis_pool(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    min_size: int = 0,
    max_size: int = 10,
    client_name: str | None = None,
    retries: int = 0,
    client_kwargs: Mapping[str, Any] | None = None,
    **pool_options: Any,
) -> AsyncPool[Any]:
    """A pool of ``redis.asyncio.Redis`` clients, each bound to one connection of its own
    (``single_connection_client=True``), so a holder has the connection to itself (pipelines,
    ``WATCH``/``MULTI`` and blocking commands cannot interleave with other tasks).

    ``client_name`` is set with ``CLIENT SETNAME`` on each connection (visible in ``CLIENT LIST``).
    ``retries`` is redis-py's own retry on connection errors; the default 0 lets the error reach the
    pool, which discards the client (``redis.ConnectionError``, ``redis.TimeoutError``, ``OSError``) and
    counts it, instead of redis-py reconnecting behind the pool's back.
    The check (idle clients only) is ``PING``. The reset discards a client whose connection redis-py has
    dropped (after a connection error caught inside the block, or a command cancelled mid-reply), so the
    next holder never pays for the reconnect; a connected client goes back without any I/O.
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
        if not _connected(client):
            raise redis_exceptions.ConnectionError("connection dropped while held")

    options: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "check": check,
        "reset": reset,
        "close": close,
        "discard_on": (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError),
    }
    options.update(pool_options)
    return AsyncPool(connect, **options)


def _connected(client: Any) -> bool:
    conn = client.connection
    return conn is not None and bool(conn.is_connected)
