"""Adapters: the right factory, check, alive test, reset, close and ``discard_on`` for each client library.

Each function returns an :class:`~sanaa_async_mem.pools.AsyncPool` of that library's connections (register
it with a :class:`~sanaa_async_mem.resources.ResourceManager` or use it alone). The library is imported
only when the function is called, so the core needs none of them; a missing one raises ``ImportError``
naming the extra to install (``pip install 'sanaa-async-mem[asyncpg]'``, ...).

Common rules:

* **alive** is a look at the driver's own state (no round trip) on every hand-out of an idle connection:
  a connection the server closed while it sat idle (``pg_terminate_backend``, ``CLIENT KILL``, a restart)
  is replaced before anyone uses it, even when it was used a moment ago.
* **check** costs one round trip (``SELECT 1``, ``PING``) and runs only for a connection idle at least
  ``check_skip_within`` seconds (0.5 s by default).
* **reset** leaves a clean object for the next holder (an open transaction is rolled back); an object
  that cannot be cleaned is discarded.
* **discard_on** lists the connection-level errors (lost connection, server shutdown, socket errors):
  when one escapes an ``async with pool.acquire()`` block the connection is closed and replaced, so after
  a server restart, ``pg_terminate_backend`` or ``CLIENT KILL`` only the calls in flight fail.

Every :class:`AsyncPool` option can be given as a keyword (each adapter's docstring lists them:
``name``, ``timeout``, ``max_lifetime``, ``max_idle``, ``check_skip_within``...); it overrides the
adapter's default, hooks included. An unknown keyword raises ``ConfigurationError`` naming it.
"""

from __future__ import annotations

from .aiohttp import aiohttp_pool, close_session
from .aiosqlite import aiosqlite_pool
from .asyncpg import asyncpg_pool
from .psycopg import psycopg_pool
from .redis import redis_pool

__all__ = ["aiohttp_pool", "aiosqlite_pool", "asyncpg_pool", "close_session", "psycopg_pool", "redis_pool"]
