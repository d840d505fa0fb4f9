"""aiohttp: a ``cleanup_ctx`` that runs a MemoryOptimizer, typed ``web.AppKey`` keys, and a middleware.

::

    from sanaa_async_mem.integrations.aiohttp import OPTIMIZER_KEY, RESOURCES_KEY, setup

    app = web.Application()
    setup(app, MemoryOptimizer)          # first: the contexts appended after it can use the manager
    app.cleanup_ctx.append(open_db)      # e.g. app[RESOURCES_KEY].register_resource("db", pool)

    async def handler(request: web.Request) -> web.Response:
        async with request.app[RESOURCES_KEY].acquire("db", "load user") as conn: ...

aiohttp runs ``cleanup_ctx`` generators in order on startup and in reverse on shutdown (all of them as the
first ``on_startup`` handler); if one fails on startup, the ones already entered are cleaned up. Ours makes
the optimizer (from the factory, on the serving loop) and stores it under :data:`OPTIMIZER_KEY` and its
resource manager under :data:`RESOURCES_KEY`, so the contexts and handlers after it can use them. It starts
the optimizer at the end of startup, after every ``cleanup_ctx`` entry and every ``on_startup`` handler,
however they were ordered: within a few milliseconds of aiohttp freezing the application, which it does
right after startup, as the server begins to serve (``web.run_app``, ``AppRunner``, ``TestServer`` and
gunicorn's worker all do). Starting then is what lets the optimizer freeze the startup heap (see
:meth:`~sanaa_async_mem.optimizer.MemoryOptimizer.start_optimization`). On shutdown it stops the optimizer
(every GC setting restored) and closes the resource manager, after the later contexts' clean-ups ran.
:func:`gc_request_middleware` tells the GC scheduler when each request starts and ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .._logging import get_logger
from ..optimizer import MemoryOptimizer
from ..resources.manager import ResourceManager

__all__ = ["OPTIMIZER_KEY", "RESOURCES_KEY", "gc_request_middleware", "memory_cleanup_ctx", "setup"]

OPTIMIZER_KEY: web.AppKey[MemoryOptimizer] = web.AppKey("sanaa_memory_optimizer", MemoryOptimizer)
RESOURCES_KEY: web.AppKey[ResourceManager] = web.AppKey("sanaa_resource_manager", ResourceManager)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = get_logger("memory")


def memory_cleanup_ctx(
    optimizer: MemoryOptimizer | Callable[[], MemoryOptimizer] = MemoryOptimizer,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry running ``optimizer`` (an instance, or a factory called on each startup).

    The optimizer starts at the end of startup (see the module documentation); an error in its start is
    logged on ``sanaa.memory`` and leaves it stopped (the server is already serving by then, so the error
    cannot fail the startup). Shutdown stops the optimizer and closes its resource manager (raising
    :class:`~sanaa_async_mem.errors.ResourceCleanupError` if a cleanup failed, which aiohttp collects and
    reports).
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        opt = optimizer if isinstance(optimizer, MemoryOptimizer) else optimizer()
        app[OPTIMIZER_KEY] = opt
        app[RESOURCES_KEY] = opt.resource_manager
        starter = asyncio.get_running_loop().create_task(
            _start_after_startup(app, opt), name="sanaa-start-after-startup"
        )
        try:
            yield
        finally:
            starter.cancel()
            await asyncio.wait({starter})
            await opt.aclose()

    return ctx


async def _start_after_startup(app: web.Application, opt: MemoryOptimizer) -> None:
    # aiohttp freezes the application right after its on_startup signal (every cleanup_ctx entry and
    # every on_startup handler) and before it serves; it has no signal for that moment, so look for it
    # every few ms (nothing measurable during a startup). A request that arrives within those few ms
    # waits for the one collection that precedes the heap's freeze.
    while not app.frozen:
        await asyncio.sleep(_STARTUP_POLL)
    try:
        await opt.start_optimization(startup_complete=True)
    except Exception:
        _log.exception("memory optimizer failed to start after startup; it stays stopped")


_STARTUP_POLL = 0.002


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
