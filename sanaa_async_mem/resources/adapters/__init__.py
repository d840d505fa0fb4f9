"""Adapters: the right factory, check, reset, close and ``discard_on`` for each client library.

Each function returns an :class:`~sanaa_async_mem.pools.AsyncPool` of that library's connections (register
it with a :class:`~sanaa_async_mem.resources.ResourceManager` or use it alone). The library is imported
only when the function is called, so the core needs none of them; a missing one raises ``ImportError``
naming the extra to install (``pip install 'sanaa-async-mem[asyncpg]'``, ...).

Common rules:

* **check** is cheap and runs only for an object idle at least ``check_skip_within`` seconds (0.5 s by
  default): a closed-flag test, then one round trip (``SELECT 1``, ``PING``).
* **reset** leaves a clean object for the next holder (an open transaction is rolled back); an object
  that cannot be cleaned is discarded.
* **discard_on** lists the connection-level errors (lost connection, server shutdown, socket errors):
  when one escapes an ``async with pool.acquire()`` block the connection is closed and replaced, so after
  a server restart, ``pg_terminate_backend`` or ``CLIENT KILL`` only the calls in flight fail.

Any keyword the function does not know is passed to :class:`AsyncPool` (``timeout``, ``max_lifetime``,
``max_idle``, ``check_skip_within``, ``name``...) and overrides the adapter's defaults, hooks included.
"""

from __future__ import annotations

from .aiohttp import aiohttp_pool, close_session
from .aiosqlite import aiosqlite_pool
from .asyncpg import asyncpg_pool
from .psycopg import psycopg_pool
from .redis import redis_pool

__all__ = ["aiohttp_pool", "aiosqlite_pool", "asyncpg_pool", "close_session", "psycopg_pool", "redis_pool"]
