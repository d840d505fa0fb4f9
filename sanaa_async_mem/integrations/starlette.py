"""Starlette / FastAPI: a ``lifespan`` that runs a MemoryOptimizer, and a middleware for request boundaries.

Starlette 1.x has no ``on_startup``/``on_shutdown``; everything happens in the ``lifespan`` async context
manager, whose yielded mapping becomes ``request.state``::

    from sanaa_async_mem.integrations.starlette import GCRequestMiddleware, memory_lifespan

    app = FastAPI(lifespan=memory_lifespan(MemoryOptimizer, lifespan=my_lifespan))
    app.add_middleware(GCRequestMiddleware)

    @app.get("/users/{uid}")
    async def user(request: Request, uid: int):
        async with request.state.resource_manager.acquire("db", "load user") as conn: ...

On startup: the optimizer is made (from the factory, so it belongs to the serving loop) and put on
``app.state.memory_optimizer`` / ``app.state.resource_manager``; the application's own lifespan runs (it
can register and open resources through them); then, at the end of startup, the optimizer starts. With
:class:`GCRequestMiddleware` installed, "the end of startup" is the moment the application reports
``lifespan.startup.complete`` to the server: after every startup hook, including lifespans nested inside
this one (FastAPI routers' own lifespans). Without the middleware it is the end of the application's
lifespan given here. Starting at the end of startup is what lets the optimizer freeze the startup heap
(see :meth:`~sanaa_async_mem.optimizer.MemoryOptimizer.start_optimization`). On shutdown, in reverse: the
application's lifespan exits, the optimizer stops (every GC setting restored, the heap unfrozen) and the
resource manager is closed. If startup fails half-way, whatever was already started is stopped and
closed, then the error propagates (the server reports a failed startup).

Only Starlette's conventions are used here (``app.state``, ASGI scopes); this module imports nothing from
Starlette, so it works with any ASGI framework that runs a lifespan context manager.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from ..collector.scheduler import GCScheduler
from ..optimizer import MemoryOptimizer

__all__ = ["OPTIMIZER_STATE_KEY", "RESOURCES_STATE_KEY", "GCRequestMiddleware", "memory_lifespan"]

#: Keys of the lifespan state (``request.state.<key>``) and of ``app.state``.
OPTIMIZER_STATE_KEY = "memory_optimizer"
RESOURCES_STATE_KEY = "resource_manager"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AppLifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Mapping[str, Any] | None]]

# Set by GCRequestMiddleware around a lifespan scope: what memory_lifespan runs when the application
# reports its startup complete (the middleware sees that message; the lifespan only sees its own part).
_AT_STARTUP_COMPLETE: contextvars.ContextVar[list[Callable[[], Awaitable[None]]] | None] = (
    contextvars.ContextVar("sanaa_at_startup_complete", default=None)
)


def memory_lifespan(
    optimizer: MemoryOptimizer | Callable[[], MemoryOptimizer] = MemoryOptimizer,
    *,
    lifespan: AppLifespan | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``Starlette(lifespan=...)`` / ``FastAPI(lifespan=...)``.

    ``optimizer`` is a MemoryOptimizer or a callable making one (default: ``MemoryOptimizer`` from the
    environment); a factory is called on each startup, so a server restarted on a new loop gets fresh
    objects. ``lifespan`` is the application's own lifespan; the mapping it yields is merged into the state
    (its keys win). The yielded state holds ``memory_optimizer`` and ``resource_manager``.

    Errors: whatever the optimizer's start or the application's lifespan raises, after the parts already
    started have been stopped and closed. Cancellation (a server killed during startup or shutdown) is
    handled the same way.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[dict[str, Any]]:
        opt = optimizer if isinstance(optimizer, MemoryOptimizer) else optimizer()
        state: dict[str, Any] = {OPTIMIZER_STATE_KEY: opt, RESOURCES_STATE_KEY: opt.resource_manager}
        app_state = getattr(app, "state", None)
        if app_state is not None:
            setattr(app_state, OPTIMIZER_STATE_KEY, opt)
            setattr(app_state, RESOURCES_STATE_KEY, opt.resource_manager)
        async with contextlib.AsyncExitStack() as stack:
            # Registered first, so it runs last: resources close after the application's shutdown code.
            stack.push_async_callback(opt.aclose)
            if lifespan is not None:
                extra = await stack.enter_async_context(lifespan(app))
                if extra:
                    state.update(extra)
            at_complete = _AT_STARTUP_COMPLETE.get()
            if at_complete is not None:
                # The middleware starts it once every startup hook has run (nested lifespans included).
                at_complete.append(lambda: opt.start_optimization(startup_complete=True))
            else:
                await opt.start_optimization(startup_complete=True)
            yield state

    return run


class GCRequestMiddleware:
    """Pure ASGI middleware: tells the GC scheduler when each HTTP request starts and ends, and starts the
    :func:`memory_lifespan` optimizer when the application reports its startup complete.

    The scheduler then runs full collections only when no request is in flight (or when its deadline or
    memory cap forces one). The scheduler is ``scheduler`` if given, else the one of the optimizer in the
    lifespan state (``scope["state"]["memory_optimizer"]``); without either the middleware passes requests
    through untouched. WebSocket scopes are not counted: a long-lived connection would keep the loop
    "busy" for ever. In the lifespan scope it passes every message through and, just before
    ``lifespan.startup.complete`` reaches the server, starts the optimizer (an error there fails the
    startup, as a failing startup hook would).

    Cost per request: two dict lookups and two counter updates (no allocation, no task, no await of its
    own); see ``benchmarks/service_bench.py``. The request is counted as finished however it ends,
    cancellation included.
    """

    __slots__ = ("app", "scheduler")

    def __init__(self, app: ASGIApp, scheduler: GCScheduler | None = None) -> None:
        self.app = app
        self.scheduler = scheduler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        scheduler = self.scheduler
        if scheduler is None:
            state = scope.get("state")
            opt = state.get(OPTIMIZER_STATE_KEY) if state is not None else None
            scheduler = opt.gc_scheduler if opt is not None else None
            if scheduler is None:
                await self.app(scope, receive, send)
                return
        scheduler.request_started()
        try:
            await self.app(scope, receive, send)
        finally:
            scheduler.request_finished()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        hooks: list[Callable[[], Awaitable[None]]] = []

        async def send_after_hooks(message: Message) -> None:
            if message.get("type") == "lifespan.startup.complete":
                while hooks:
                    await hooks.pop(0)()
            await send(message)

        token = _AT_STARTUP_COMPLETE.set(hooks)
        try:
            await self.app(scope, receive, send_after_hooks)
        finally:
            _AT_STARTUP_COMPLETE.reset(token)
