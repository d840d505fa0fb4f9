"""The ``leak_check`` pytest plugin, run on real test files through ``pytester``."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

# Plugins are loaded explicitly, so the runs are the same whether or not the package's pytest11 entry point
# is installed (loading it twice, by entry point and by -p, would be an error).
PLUGINS = (
    "-p",
    "sanaa_async_mem.integrations.pytest_plugin",
    "-p",
    "pytest_asyncio.plugin",
    "--strict-markers",
)


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_leaking_test_fails_and_names_the_leaking_line(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_leaky="""
        import pytest

        kept = []

        @pytest.mark.leak_check(iterations=30, warmup=3)
        def test_leaks():
            kept.append(bytearray(10_000))  # line 7
        """
    )
    result = run.runpytest(*PLUGINS)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*leak_check: memory leaks 10,* B per iteration*threshold 1,024 B*",
            "*top allocation sites*",
            "*test_leaky.py:7: +*,* B in +* blocks*",
        ]
    )


def test_clean_test_passes_and_runs_every_iteration(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_clean="""
        import json
        import pytest

        calls = []

        @pytest.mark.leak_check(iterations=40, warmup=5)
        def test_clean():
            data = [bytearray(10_000) for _ in range(10)]  # allocated and freed each time
            json.dumps({"n": len(data)})
            calls.append(None)

        def test_iterations_ran():
            assert len(calls) == 45
        """
    )
    run.runpytest(*PLUGINS).assert_outcomes(passed=2)


def test_cache_that_fills_then_stays_flat_passes(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_cache="""
        import itertools
        import pytest

        counter = itertools.count()
        cache = {}

        @pytest.mark.leak_check(iterations=40, warmup=10)
        def test_fills_during_warmup():
            key = next(counter) % 8  # full after 8 calls, inside the warm-up
            cache.setdefault(key, bytearray(50_000))

        later = itertools.count()
        slow_cache = {}

        @pytest.mark.leak_check(iterations=60, warmup=2)
        def test_fills_past_the_warmup_then_flat():
            key = min(next(later), 15)  # grows for the first 13 measured iterations, then never again
            slow_cache.setdefault(key, bytearray(50_000))
        """
    )
    run.runpytest(*PLUGINS).assert_outcomes(passed=2)


def test_async_leaking_test_fails(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_async_leak="""
        import asyncio
        import pytest

        kept = []

        @pytest.mark.leak_check(iterations=30, warmup=3)
        async def test_async_leaks():
            await asyncio.sleep(0)
            kept.append(bytearray(10_000))  # line 9

        @pytest.mark.leak_check(iterations=30, warmup=3)
        async def test_async_clean():
            task = asyncio.ensure_future(asyncio.sleep(0, result=bytearray(10_000)))
            assert len(await task) == 10_000
        """
    )
    result = run.runpytest(*PLUGINS)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_async_leak.py:9: +*", "FAILED *test_async_leaks*"])


def test_fixtures_are_set_up_once_and_unmarked_tests_run_once(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_fixtures="""
        import pytest

        setups = []
        runs = []

        @pytest.fixture
        def resource():
            setups.append(None)
            return bytearray(1000)

        @pytest.mark.leak_check(iterations=10, warmup=0)
        def test_marked(resource):
            runs.append(len(resource))

        def test_unmarked():
            runs.append(0)

        def test_counts():
            assert len(setups) == 1
            assert runs == [1000] * 10 + [0]
        """
    )
    run.runpytest(*PLUGINS, "-p", "no:randomly").assert_outcomes(passed=3)


def test_bad_marker_arguments_fail_with_one_line(run: pytest.Pytester) -> None:
    run.makepyfile(
        test_bad="""
        import pytest

        @pytest.mark.leak_check(iterations=3)
        def test_too_few():
            pass

        @pytest.mark.leak_check(itrations=30)
        def test_typo():
            pass
        """
    )
    result = run.runpytest(*PLUGINS)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*leak_check: iterations must be an integer >= 10, got 3*",
            "*leak_check: unknown argument 'itrations'*",
        ]
    )
