"""AsyncPool against a model: random acquire/release/cancel/timeout/broken/close sequences.

Hypothesis drives a real event loop step by step. At every step the pool's books must balance
(created - closed == idle + in use + returning), nothing is above max_size, no object is held by two
clients at once, and no held object has been closed. At the end every object ever made is closed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sanaa_async_mem.errors import PoolClosed, PoolTimeout
from sanaa_async_mem.pools.pool import AsyncPool

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

MAX_SIZE = 3


class Obj:
    _ids = itertools.count()

    def __init__(self) -> None:
        self.id = next(self._ids)
        self.closed = False


class Broken(Exception):
    """Raised out of a client's block to discard its object (discard_on)."""


class Client:
    def __init__(self, machine: PoolModel, timeout: float) -> None:
        self.release = asyncio.Event()
        self.raise_broken = False
        self.obj: Obj | None = None
        self.outcome = "pending"
        self.task = machine.loop.create_task(self.run(machine, timeout))

    async def run(self, machine: PoolModel, timeout: float) -> None:
        try:
            async with machine.pool.acquire(timeout=timeout) as obj:
                if any(obj is other for other in machine.held()):
                    machine.violations.append(f"{obj.id} handed out twice")
                if obj.closed:
                    machine.violations.append(f"{obj.id} handed out after close")
                self.obj = obj
                try:
                    await self.release.wait()
                    if self.raise_broken:
                        raise Broken
                finally:
                    self.obj = None
            self.outcome = "done"
        except (PoolTimeout, PoolClosed, ConnectionRefusedError, Broken) as exc:
            self.outcome = type(exc).__name__


class PoolModel(RuleBasedStateMachine):
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop

    def __init__(self) -> None:
        super().__init__()
        self.loop = type(self).loop_factory()
        self.made: list[Obj] = []
        self.factory_fails = False
        self.clients: list[Client] = []
        self.violations: list[str] = []
        self.closing: asyncio.Task[None] | None = None

        async def factory() -> Obj:
            await asyncio.sleep(0)
            if self.factory_fails:
                raise ConnectionRefusedError("down")
            obj = Obj()
            self.made.append(obj)
            return obj

        async def reset(obj: Obj) -> None:
            await asyncio.sleep(0)

        def close(obj: Obj) -> None:
            if obj.closed:
                self.violations.append(f"{obj.id} closed twice")
            if any(obj is other for other in self.held()):
                self.violations.append(f"{obj.id} closed while held")
            obj.closed = True

        self.pool: AsyncPool[Obj] = AsyncPool(
            factory, max_size=MAX_SIZE, timeout=30, reset=reset, close=close, discard_on=(Broken,)
        )
        self.run(self.pool.open())

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    async def _finish_clients(self) -> None:
        await asyncio.gather(*(c.task for c in self.clients), return_exceptions=True)

    def held(self) -> list[Obj]:
        return [c.obj for c in self.clients if c.obj is not None]

    def live(self) -> list[Client]:
        return [c for c in self.clients if not c.task.done()]

    # ------------------------------------------------------------------ rules

    @rule(short_timeout=st.booleans())
    def start_client(self, short_timeout: bool) -> None:
        self.clients.append(Client(self, 0.02 if short_timeout else 30.0))

    @rule(steps=st.integers(1, 5))
    def spin(self, steps: int) -> None:
        for _ in range(steps):
            self.run(asyncio.sleep(0))

    @rule()
    def let_timers_fire(self) -> None:
        self.run(asyncio.sleep(0.03))

    @precondition(lambda self: any(c.obj is not None for c in self.clients))
    @rule(data=st.data(), broken=st.booleans())
    def release(self, data: st.DataObject, broken: bool) -> None:
        holding = [c for c in self.clients if c.obj is not None and not c.release.is_set()]
        if holding:
            client = data.draw(st.sampled_from(holding))
            client.raise_broken = broken
            client.release.set()

    @precondition(lambda self: any(c.obj is not None for c in self.clients))
    @rule(data=st.data())
    def mark_broken(self, data: st.DataObject) -> None:
        holding = [c for c in self.clients if c.obj is not None]
        client = data.draw(st.sampled_from(holding))
        assert client.obj is not None
        self.pool.mark_broken(client.obj)  # the loop's thread, between two runs of the loop

    @precondition(lambda self: any(not c.task.done() for c in self.clients))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        client = data.draw(st.sampled_from(self.live()))
        client.task.cancel()

    @rule()
    def toggle_factory(self) -> None:
        self.factory_fails = not self.factory_fails

    @precondition(lambda self: self.closing is None)
    @rule()
    def close_pool(self) -> None:
        self.closing = self.loop.create_task(self.pool.close(timeout=30))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def books_balance(self) -> None:
        s = self.pool.stats()
        assert s.created - s.closed == s.idle + s.in_use + s.returning, s
        assert s.size == s.idle + s.in_use + s.creating + s.returning, s
        assert s.size <= MAX_SIZE and s.in_use <= MAX_SIZE, s
        assert s.waiting >= 0, s

    @invariant()
    def nothing_held_twice_or_closed(self) -> None:
        assert self.violations == []
        held = self.held()
        assert len({id(o) for o in held}) == len(held)
        assert not any(o.closed for o in held)

    @invariant()
    def held_objects_are_checked_out(self) -> None:
        checked_out = {id(e.obj) for e in self.pool._entries.values() if e.holder is not None}
        for obj in self.held():
            assert id(obj) in checked_out

    def teardown(self) -> None:
        try:
            for client in self.clients:
                client.release.set()
            self.factory_fails = False
            self.run(self._finish_clients())
            s = self.pool.stats()
            assert s.in_use == 0 and s.waiting == 0, s
            if self.closing is None:
                self.run(self.pool.close(timeout=30))
            else:
                self.run(self.closing)
            self.run(asyncio.sleep(0.01))
            assert self.violations == []
            assert [o.id for o in self.made if not o.closed] == []
        finally:
            self.loop.close()


SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestPoolModelAsyncio(PoolModel.TestCase):  # type: ignore[name-defined,misc]
    settings = SETTINGS


if uvloop is not None:

    class UvloopPoolModel(PoolModel):
        loop_factory = uvloop.new_event_loop

    class TestPoolModelUvloop(UvloopPoolModel.TestCase):  # type: ignore[name-defined,misc]
        settings = SETTINGS


def test_model_runs_against_a_pool() -> None:
    # Guard against a silently empty machine: one hand-written sequence through the same rules.
    machine = PoolModel()
    machine.start_client(short_timeout=False)
    machine.spin(3)
    assert machine.held(), "the first client should hold an object"
    machine.clients[0].task.cancel()
    machine.spin(3)
    machine.books_balance()
    assert machine.pool.stats().idle == 1
    machine.teardown()
