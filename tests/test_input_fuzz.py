"""Every parser of outside input, fuzzed: environment variables, demo summaries, the CLI's arguments. Each
either accepts the input or refuses it with the documented error (ConfigurationError naming the variable;
SummaryError; exit code 2 with one line) and never raises anything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sanaa_async_mem.cli import main
from sanaa_async_mem.cli.report import SummaryError, validate_summary
from sanaa_async_mem.config import ENVIRONMENT_VARIABLES, Settings
from sanaa_async_mem.errors import ConfigurationError

env_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        ["", "0", "-1", "1e400", "nan", "inf", "10" * 30, "2147483648", "true", "off", " 5 ", "0x10"]
    ),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(ENVIRONMENT_VARIABLES), env_values, max_size=4))
def test_environment_is_accepted_or_refused_by_name(environ: dict[str, str]) -> None:
    try:
        Settings.from_env(environ)
    except ConfigurationError as exc:
        assert isinstance(exc, ValueError)
        assert any(var in str(exc) for var in environ), str(exc)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
summary_like = st.fixed_dictionaries(
    {},
    optional={
        "memory": json_values
        | st.fixed_dictionaries(
            {}, optional={"thresholds": json_values, "trend": json_values, "gc": json_values}
        ),
        "pool": json_values,
        "gc": json_values,
        "timeline": json_values,
        "service": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, summary_like))
def test_a_summary_is_accepted_or_refused_with_summary_error(data: object) -> None:
    try:
        validate_summary(data)
    except SummaryError as exc:
        assert str(exc)


arg_words = st.sampled_from(
    [
        "demo",
        "watch",
        "report",
        "top",
        "--duration",
        "-1",
        "nan",
        "1e400",
        "abc",
        "--interval",
        "0",
        "--threshold",
        "--pid",
        "999999999",
        "--json",
        "--view",
        "bogus",
        "--out",
        "--summary",
        "--",
        "-V",
        "--clients",
        "--size",
        "--leak-threshold",
        "http://127.0.0.1:9/memory",
        "--max-requests",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(arg_words, max_size=5))
def test_cli_arguments_never_raise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    if not args or (args[0] in ("demo", "watch", "top") and "--help" not in args):
        # Starting a demo, a watch or a live view is not what this test is about: only arguments that are
        # refused before anything starts, and report/usage paths, run here.
        args = ["report", *args[1:]] if args else []
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: --help/-V exit 0, usage errors exit 2
        code = int(exc.code or 0)
    assert code in (0, 1, 2, 3), code
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_the_fuzzed_summary_shapes_include_real_ones(tmp_path: Path) -> None:
    good = {"memory": {"thresholds": {"leak_bytes_per_second": 1000}}}
    assert (
        validate_summary(json.loads(json.dumps(good)))["memory"]["thresholds"]["leak_bytes_per_second"]
        == 1000
    )
