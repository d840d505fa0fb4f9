"""The one owner of the interpreter's GC settings: leases taken and given back in any order, from any task
or thread, leave the interpreter exactly as it was; the application's own changes win and are kept.

The last test is a hypothesis state machine over every client the library has (GC optimizers with and
without a frozen heap, GC schedulers, memory-efficient blocks, GC-free sections, on the main thread and on a
worker thread) and the application changing settings in between."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from sanaa_async_mem.collector.kind import CollectorInfo
from sanaa_async_mem.collector.optimizer import GarbageCollectionOptimizer, gc_disabled_sections
from sanaa_async_mem.collector.scheduler import GCScheduler
from sanaa_async_mem.collector.state import INTERPRETER_FROZEN, OUT_OF_REACH, gc_state
from sanaa_async_mem.config import Settings
from sanaa_async_mem.errors import ConfigurationError
from sanaa_async_mem.optimizer import MemoryEfficientContext

pytestmark = pytest.mark.usefixtures("gc_baseline")


@pytest.fixture(autouse=True)
def nothing_left_held() -> Iterator[None]:
    yield
    assert gc_state().stats().leases == {"thresholds": 0, "defer": 0, "disable": 0, "freeze": 0}


def settings_now() -> tuple[tuple[int, ...], bool]:
    return tuple(gc.get_threshold()), gc.isenabled()


# --------------------------------------------------------------------------------------- basic leases


def test_newest_thresholds_lease_wins_and_any_release_order_restores() -> None:
    state = gc_state()
    a = state.set_thresholds("a", young=1000)
    b = state.set_thresholds("b", young=2000, middle=20)
    assert gc.get_threshold() == (2000, 20, 10)
    b.release()
    assert gc.get_threshold() == (1000, 10, 10)
    b2 = state.set_thresholds("b", young=3000)
    a.release()  # the older one goes first this time
    assert gc.get_threshold() == (3000, 10, 10)
    b2.release()
    assert gc.get_threshold() == (700, 10, 10)
    assert not b2.release()  # idempotent


def test_update_changes_a_held_thresholds_lease_in_place() -> None:
    state = gc_state()
    with state.set_thresholds("x", young=1000) as lease, state.set_thresholds("y", middle=30):
        lease.update(young=1500)
        assert gc.get_threshold() == (1500, 30, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_deferring_beats_every_thresholds_lease_on_the_oldest_generation() -> None:
    state = gc_state()
    defer = state.defer_full_collections("scheduler")
    thresholds = state.set_thresholds("optimizer", young=900, oldest=50)
    assert gc.get_threshold() == (900, 10, OUT_OF_REACH)
    defer.release()
    assert gc.get_threshold() == (900, 10, 50)
    thresholds.release()
    assert gc.get_threshold() == (700, 10, 10)


def test_disable_leases_are_counted_and_a_disabled_collector_stays_disabled() -> None:
    state = gc_state()
    first, second = state.disable("a"), state.disable("b")
    assert not gc.isenabled()
    first.release()
    assert not gc.isenabled()
    second.release()
    assert gc.isenabled()
    gc.disable()  # the application's choice
    with state.disable("c"):
        assert not gc.isenabled()
    assert not gc.isenabled()


@pytest.mark.parametrize("bad", [-1, 10**400, 2**31, 1.5, "7"])
def test_bad_threshold_values_are_configuration_errors_and_change_nothing(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"thresholds\.young"):
        gc_state().set_thresholds("x", young=bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == (700, 10, 10)
    with gc_state().set_thresholds("x", young=800) as lease:
        with pytest.raises(ConfigurationError, match=r"thresholds\.middle"):
            lease.update(middle=bad)  # type: ignore[arg-type]
        assert gc.get_threshold() == (800, 10, 10)


def test_freeze_leases_unfreeze_only_when_the_last_goes_and_nothing_else_froze(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")
    state = gc_state()
    first = state.freeze("a", collect_first=False)
    assert first.froze > 0 and gc.get_freeze_count() > 0
    second = state.freeze("b", collect_first=False)
    first.release()
    assert gc.get_freeze_count() > 0  # the second still holds the permanent generation
    second.release()
    assert gc.get_freeze_count() == 0

    # Something froze beside the library: nobody can tell whose objects are whose, so all stay frozen.
    ours = state.freeze("a", collect_first=False)
    gc.freeze()
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        ours.release()
    assert gc.get_freeze_count() > 0
    assert "leaving all" in caplog.text


# ----------------------------------------------------------------------------- the application's changes


def test_application_changing_an_overridden_threshold_wins_and_keeps_its_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = gc_state()
    defer = state.defer_full_collections("scheduler")
    assert defer.in_force
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        gc.set_threshold(700, 10, 25)  # the application takes full collections back
        state.check()
        state.check()  # noticed once, warned once
    assert caplog.text.count("oldest GC threshold was changed to 25") == 1
    assert not defer.in_force
    assert state.stats().taken_over == ("oldest",)
    block = state.defer_full_collections("memory_efficient_context")
    assert gc.get_threshold() == (700, 10, 25)  # no longer overridden while the application has it
    block.release()
    defer.release()
    assert gc.get_threshold() == (700, 10, 25)  # kept, not "restored" to 10
    assert state.stats().taken_over == ()
    with state.defer_full_collections("later"):  # a new episode overrides again
        assert gc.get_threshold() == (700, 10, OUT_OF_REACH)


def test_application_changing_a_setting_no_lease_overrides_is_what_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = gc_state()
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        with state.defer_full_collections("scheduler"):
            gc.set_threshold(1234, 10, OUT_OF_REACH)  # only the young threshold differs from ours
            gc.disable()
            state.check()
            assert gc.get_threshold() == (1234, 10, OUT_OF_REACH)
        assert settings_now() == ((1234, 10, 10), False)
    assert caplog.text == ""  # nothing overridden was touched: nothing to warn about


def test_application_enabling_gc_inside_a_section_keeps_it_enabled(
    optimizer_restored: GarbageCollectionOptimizer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        with optimizer_restored.disable_gc_temporarily():
            gc.enable()
            with optimizer_restored.disable_gc_temporarily():  # noticed here
                assert gc.isenabled()
            assert gc_disabled_sections() == 1
        assert gc.isenabled()
    assert "collector was enabled outside the library" in caplog.text


@pytest.fixture
def optimizer_restored() -> Iterator[GarbageCollectionOptimizer]:
    opt = GarbageCollectionOptimizer(Settings())
    yield opt
    opt.restore_gc_settings()


async def test_scheduler_leaves_full_collections_to_the_interpreter_once_the_application_takes_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = CollectorInfo("generational", 3, 700, "test")
    with caplog.at_level(logging.WARNING, logger="sanaa.gc"):
        async with GCScheduler(
            settings=Settings(), memory_cap_bytes=0, check_interval=0.01, collector=info
        ) as s:
            assert s.mode == "deferred"
            gc.set_threshold(700, 10, 30)
            async with asyncio.timeout(30):
                while s.mode != "passive":
                    await asyncio.sleep(0.01)
    assert gc.get_threshold() == (700, 10, 30)
    assert "leaves full collections to the interpreter" in caplog.text


# ----------------------------------------------------------------------------------- the state machine

GENERATIONAL = CollectorInfo("generational", 3, 700, "test")
LEASE_VALUES = st.integers(100, 199)  # never equal to what the application sets (1000-1999)
APP_VALUES = st.integers(1000, 1999)


class Client:
    """One user of the GC state, bound to a thread (its sections must close where they opened)."""

    def __init__(self, kind: str, on_worker: bool, obj: Any, sets: tuple[int | None, ...] = ()) -> None:
        self.kind = kind
        self.on_worker = on_worker
        self.obj = obj
        self.sets = sets  # the thresholds an optimizer's lease sets (None: not that one)


class GCStateMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gc-state-test")
        self.callbacks = list(gc.callbacks)
        self.frozen_before = gc.get_freeze_count()
        gc.set_threshold(700, 10, 10)
        gc.enable()
        self.app_thresholds = [700, 10, 10]
        self.app_enabled = True
        self.app_froze = False
        self.we_froze = False
        self.held: set[int] = set()  # ids of started clients
        self.made: list[Client] = []
        self.kinds: dict[int, str] = {}
        # Settings the application changed while a lease overrode them: the application's from then on,
        # until nothing is held.
        self.taken: set[int | str] = set()

    def run(self, client: Client, fn: Any) -> Any:
        if client.on_worker:
            return self.worker.submit(fn).result()
        return fn()

    def nothing_held(self) -> bool:
        return not self.held

    def start(self, client: Client) -> None:
        self.made.append(client)
        self.held.add(id(client))
        self.kinds[id(client)] = client.kind

    def stop(self, client: Client) -> None:
        self.held.discard(id(client))
        self.kinds.pop(id(client), None)
        if not self.held:
            self.taken.clear()

    # -- clients

    @rule(
        target=clients,
        on_worker=st.booleans(),
        thresholds=st.none() | st.tuples(LEASE_VALUES, LEASE_VALUES, LEASE_VALUES),
        freeze=st.booleans(),
    )
    def optimizer(self, on_worker: bool, thresholds: tuple[int, int, int] | None, freeze: bool) -> Client:
        # Young threshold 2500 by default: above every interpreter's default and every application value.
        opt = GarbageCollectionOptimizer(Settings(gc_collection_threshold=2500))
        client = Client("optimizer", on_worker, opt, thresholds or (2500, None, None))

        def go() -> None:
            opt.optimize_gc_settings(thresholds=thresholds)
            if freeze:
                opt.freeze_startup_heap(collect_first=False)
                self.we_froze = True

        self.run(client, go)
        self.start(client)
        return client

    @rule(target=clients)
    def scheduler(self) -> Client:
        sch = GCScheduler(
            settings=Settings(), memory_cap_bytes=0, check_interval=3600, collector=GENERATIONAL
        )
        self.loop.run_until_complete(sch.start())  # a task of its own; stop() runs in another
        client = Client("scheduler", False, sch)
        self.start(client)
        return client

    @rule(target=clients, on_worker=st.booleans())
    def memory_efficient_block(self, on_worker: bool) -> Client:
        block = MemoryEfficientContext(collect=False)
        client = Client("block", on_worker, block)
        self.run(client, block.__enter__)
        self.start(client)
        return client

    @rule(target=clients, on_worker=st.booleans())
    def gc_free_section(self, on_worker: bool) -> Client:
        section = GarbageCollectionOptimizer(Settings()).disable_gc_temporarily(max_duration=3600)
        client = Client("section", on_worker, section)
        self.run(client, section.__enter__)
        self.start(client)
        return client

    @rule(client=consumes(clients))
    def stop_client(self, client: Client) -> None:
        if client.kind == "optimizer":
            self.run(client, client.obj.restore_gc_settings)
        elif client.kind == "scheduler":
            self.loop.run_until_complete(client.obj.stop())
        else:
            self.run(client, lambda: client.obj.__exit__(None, None, None))
        self.stop(client)

    # -- the application

    @rule(field=st.integers(0, 2), value=APP_VALUES)
    def application_sets_a_threshold(self, field: int, value: int) -> None:
        current = list(gc.get_threshold())
        current[field] = value
        if self.overridden(field):
            self.taken.add(field)
        gc.set_threshold(*current)
        self.app_thresholds[field] = value
        gc_state().check()  # as a running scheduler's tick does: a change undone before any check is unseen

    @rule()
    def application_toggles_the_collector(self) -> None:
        if self.overridden("enabled"):
            self.taken.add("enabled")
        if gc.isenabled():
            gc.disable()
            self.app_enabled = False
        else:
            gc.enable()
            self.app_enabled = True
        gc_state().check()

    @rule()
    def application_freezes(self) -> None:
        gc.freeze()
        self.app_froze = True

    # -- what must hold

    def held_clients(self) -> list[Client]:
        return [c for c in self.made if id(c) in self.held]

    def overridden(self, field: int | str) -> bool:
        held = self.held_clients()
        if field == "enabled":
            return any(c.kind == "section" for c in held)
        if field == 2 and any(c.kind in ("scheduler", "block") for c in held):
            return True
        return any(c.kind == "optimizer" and c.sets[field] is not None for c in held)  # type: ignore[index]

    def expected(self) -> tuple[list[int], bool]:
        """The settings in force according to the documented rules."""
        held = self.held_clients()
        thresholds = list(self.app_thresholds)
        for field in range(3):
            if field in self.taken:
                continue
            for c in held:  # the newest lease that sets a threshold wins
                if c.kind == "optimizer" and c.sets[field] is not None:
                    thresholds[field] = c.sets[field]  # type: ignore[assignment]
            if field == 2 and any(c.kind in ("scheduler", "block") for c in held):
                thresholds[field] = OUT_OF_REACH
        enabled = self.app_enabled
        if "enabled" not in self.taken and any(c.kind == "section" for c in held):
            enabled = False
        return thresholds, enabled

    @invariant()
    def settings_are_what_the_leases_and_the_application_say(self) -> None:
        thresholds, enabled = self.expected()
        assert list(gc.get_threshold()) == thresholds
        assert gc.isenabled() == enabled

    def teardown(self) -> None:
        try:
            # What is still held is given back in the order the clients were made (hypothesis varies the
            # rest of the order through stop_client).
            for client in self.made:
                if id(client) in self.held:
                    self.stop_client(client)
            assert not self.held
            assert list(gc.get_threshold()) == self.app_thresholds
            assert gc.isenabled() == self.app_enabled
            assert gc.callbacks == self.callbacks  # every pause recorder uninstalled
            if self.app_froze:
                assert gc.get_freeze_count() > 0  # the application's freeze is not undone for it
            elif self.we_froze:
                # Ours unfrozen, with the interpreter's own immortal objects (3.12) if it had any.
                assert gc.get_freeze_count() == 0
            else:
                assert gc.get_freeze_count() == self.frozen_before
            assert gc_state().stats().leases == {"thresholds": 0, "defer": 0, "disable": 0, "freeze": 0}
        finally:
            if self.app_froze and self.frozen_before <= INTERPRETER_FROZEN:
                gc.unfreeze()
            self.worker.shutdown()
            self.loop.close()
            gc.set_threshold(700, 10, 10)
            gc.enable()


def test_any_set_of_clients_in_any_order_leaves_the_interpreter_as_it_found_it() -> None:
    if gc.get_freeze_count() > INTERPRETER_FROZEN:
        pytest.skip("the permanent generation is not empty in this process")
    machine = GCStateMachine.TestCase
    machine.settings = settings(
        max_examples=60,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    machine().runTest()


def test_deferring_changes_nothing_where_there_is_no_separate_full_collection() -> None:
    from sanaa_async_mem.collector.state import GCState

    state = GCState()  # as on an incremental or free-threaded interpreter
    state.defers = False
    with state.defer_full_collections("scheduler") as lease:
        assert gc.get_threshold() == (700, 10, 10)
        assert state.count("defer") == 1 and lease.in_force
    assert gc.get_threshold() == (700, 10, 10)
