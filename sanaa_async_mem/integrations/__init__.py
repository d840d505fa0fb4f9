"""Integrations with frameworks and telemetry, one module per optional extra; none is imported by the package.

* :mod:`.starlette` (extra ``starlette`` or ``fastapi``): a ``lifespan`` that starts a
  :class:`~sanaa_async_mem.optimizer.MemoryOptimizer` and hands it to handlers through ``request.state``,
  and a pure-ASGI middleware that reports request boundaries to the GC scheduler;
* :mod:`.aiohttp` (extra ``aiohttp``): the same through ``app.cleanup_ctx``, typed ``web.AppKey`` keys and
  a middleware;
* :mod:`.prometheus` (extra ``prometheus``): a collector of pool, resource, GC and memory-trend metrics,
  and a multiprocess-safe exporter;
* :mod:`.otel` (extra ``otel``, API package only): pool metrics under ``db.client.connection.*``.

Import the module of the integration you use, e.g. ``from sanaa_async_mem.integrations.starlette import
memory_lifespan``; ``import sanaa_async_mem`` never needs any of these libraries.
"""
