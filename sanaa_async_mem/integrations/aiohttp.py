"""aiohttp: a ``cleanup_ctx`` that runs a MemoryOptimizer, typed ``web.AppKey`` keys, and a middleware.

::

    from sanaa_async_mem.integrations.aiohttp import OPTIMIZER_KEY, RESOURCES_KEY, setup

    app = web.Application()
    setup(app, MemoryOptimizer)          # first: the contexts appended after it can use the manager
    app.cleanup_ctx.append(open_db)      # e.g. app[RESOURCES_KEY].register_resource("db", pool)

    async def handler(request: web.Request) -> web.Response:
        async with request.app[RESOURCES_KEY].acquire("db", "load user") as conn: ...

aiohttp runs ``cleanup_ctx`` generators in order on startup and in reverse on shutdown; if one fails on
startup, the ones already entered are cleaned up. Ours makes the optimizer (from the factory, on the serving
loop), stores it under :data:`OPTIMIZER_KEY` and its resource manager under :data:`RESOURCES_KEY`, starts
it, and on shutdown stops it and closes the resource manager (after the later contexts' clean-ups ran).
:func:`gc_request_middleware` tells the GC scheduler when each request starts and ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..optimizer import MemoryOptimizer
from ..resources.manager import ResourceManager

__all__ = ["OPTIMIZER_KEY", "RESOURCES_KEY", "gc_request_middleware", "memory_cleanup_ctx", "setup"]

OPTIMIZER_KEY: web.AppKey[MemoryOptimizer] = web.AppKey("sanaa_memory_optimizer", MemoryOptimizer)
RESOURCES_KEY: web.AppKey[ResourceManager] = web.AppKey("sanaa_resource_manager", ResourceManager)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def memory_cleanup_ctx(
    optimizer: MemoryOptimizer | Callable[[], MemoryOptimizer] = MemoryOptimizer,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry running ``optimizer`` (an instance, or a factory called on each startup).

    Startup errors propagate after what was started is stopped; shutdown stops the optimizer and closes
    its resource manager (raising :class:`~sanaa_async_mem.errors.ResourceCleanupError` if a cleanup
    failed, which aiohttp collects and reports).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        opt = optimizer if isinstance(optimizer, MemoryOptimizer) else optimizer()
        app[OPTIMIZER_KEY] = opt
        app[RESOURCES_KEY] = opt.resource_manager
        try:
            await opt.start_optimization()
            yield
        finally:
            await opt.aclose()

    return ctx


@web.middleware
async def gc_request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts the request as in flight for the app's GC scheduler, however the handler ends.

    Without an optimizer in the app (or with GC scheduling off) the request passes through.
    """
    opt = request.app.get(OPTIMIZER_KEY)
    scheduler = opt.gc_scheduler if opt is not None else None
    if scheduler is None:
        return await handler(request)
    scheduler.request_started()
    try:
        return await handler(request)
    finally:
        scheduler.request_finished()


def setup(
    app: web.Application,
    optimizer: MemoryOptimizer | Callable[[], MemoryOptimizer] = MemoryOptimizer,
    *,
    middleware: bool = True,
) -> None:
    """Append :func:`memory_cleanup_ctx` to ``app.cleanup_ctx`` and (unless ``middleware=False``)
    :func:`gc_request_middleware` to ``app.middlewares``. Call before the app is frozen (before serving)."""
    app.cleanup_ctx.append(memory_cleanup_ctx(optimizer))
    if middleware:
        app.middlewares.append(gc_request_middleware)
