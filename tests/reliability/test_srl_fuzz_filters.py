"""Fuzzing the filters: Hubble FlowFilters (any field, hostile values, unknown fields,
mutated wire bytes) through the compiler shared by collector and relay, and
`sensilla observe` command lines (any filter flags with any values, --not, selectors
and times) through the CLI's request builder. A filter is either compiled (its
predicate then runs on arbitrary flows and its SQL renders in every driver style) or
refused with FilterError / a usage error naming the value; nothing else.

Room tests on the same code with fewer cases and semantic oracles: tests/filters/
(test_sfi_sql_agrees.py: the SQL agrees with the predicate on chDB; test_sfi_hubble_cases.py;
test_sfi_injection.py), tests/output/test_sfi_observe_cli.py."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensilla.cli.errors import UsageError
from sensilla.cli.main import build_parser
from sensilla.filters import FilterError, compile_request_filters
from sensilla.filters.hubble_cli import FILTER_FLAGS
from sensilla.protos import flow_pb2
from tests.reliability.protofuzz import HOSTILE, messages, mutate
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.unit

SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _parsed_or_none(data: bytes) -> flow_pb2.FlowFilter | None:
    ff = flow_pb2.FlowFilter()
    try:
        ff.ParseFromString(data)
    except Exception:  # not a FlowFilter at all: the gRPC layer refuses it
        return None
    return ff


flow_filters = st.one_of(
    messages(flow_pb2.FlowFilter),
    messages(flow_pb2.FlowFilter)
    .map(lambda m: m.SerializeToString())
    .flatmap(mutate)
    .map(_parsed_or_none)
    .filter(lambda f: f is not None),
)


@SETTINGS
@given(
    st.lists(flow_filters, max_size=3),
    st.lists(flow_filters, max_size=2),
    st.lists(messages(flow_pb2.Flow), min_size=1, max_size=3),
)
def test_srl_fuzz_filter_compiler(
    white: list[flow_pb2.FlowFilter], black: list[flow_pb2.FlowFilter], flows: list[flow_pb2.Flow]
) -> None:
    try:
        compiled = compile_request_filters(white, black)
    except FilterError as exc:
        text = str(exc)
        assert text.startswith(("whitelist[", "blacklist[")), text
        return
    for style in ("native", "chdb", "pyformat"):
        where, _params = compiled.sql(style)
        assert isinstance(where, str)
    compiled.param_types()
    for f in flows:
        assert compiled.matches(f) in (True, False)


_VALUES = st.one_of(st.sampled_from(HOSTILE[:-1]), st.text(max_size=24))
_SELECTORS = ("--last", "--first", "--since", "--until")


@st.composite
def observe_argv(draw: st.DrawFn) -> list[str]:
    argv: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind <= 5:
            argv += [f"--{draw(st.sampled_from(FILTER_FLAGS))}", draw(_VALUES)]
        elif kind == 6:
            argv.append("--not")
        elif kind == 7:
            argv += [draw(st.sampled_from(_SELECTORS)), draw(_VALUES)]
        elif kind == 8:
            argv.append(draw(st.sampled_from(["--all", "--follow", "-f", "-A"])))
        else:
            argv += [
                draw(st.sampled_from(["-n", "--namespace", "--pod", "--label"])),
                draw(_VALUES),
            ]
    return argv


PARSER = build_parser()


@SETTINGS
@given(observe_argv())
def test_srl_fuzz_observe_command_line(argv: list[str]) -> None:
    from sensilla.cli.commands.observe import build_request

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            args: argparse.Namespace = PARSER.parse_args(["observe", *argv])
    except SystemExit as exc:
        assert exc.code == 2  # argparse's usage error
        return
    args.filter_flags = getattr(args, "filter_flags", None) or []
    try:
        req = build_request(args)
    except UsageError as exc:
        assert str(exc)
        return
    req.SerializeToString()
    compile_request_filters(req.whitelist, req.blacklist)  # what the server will do
