"""The compiled SQL selects exactly the flows the compiled predicate accepts.

Flows go into a real table (chDB, and ClickHouse 18.16 when installed) through
flow_row; random Hubble filters are compiled once and evaluated both ways.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensilla.filters import FilterError, compile_request_filters, flow_row
from sensilla.protos import flow_pb2
from tests.filters.harness import ChdbWorker, ClickHouse18
from tests.filters.strategies import arbitrary_flow_filters, corpus, flow_filters, flows, requests

pytestmark = pytest.mark.unit

FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"
CORPUS = corpus(400, seed=20240611)


def _rows(batch: list[flow_pb2.Flow]) -> list[dict[str, object]]:
    return [flow_row(f) for f in batch]


@pytest.fixture(scope="module")
def chdb() -> Iterator[ChdbWorker]:
    worker = ChdbWorker()
    try:
        worker.create()
        worker.create("sfi_corpus")
        worker.insert(_rows(CORPUS), "sfi_corpus")
        yield worker
    finally:
        worker.close()


def _expected(compiled: object, batch: list[flow_pb2.Flow]) -> list[int]:
    return [i for i, f in enumerate(batch) if compiled.matches(f)]  # type: ignore[attr-defined]


@settings(
    max_examples=600 if FULL else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(req=requests)
def test_sfi_corpus_sql_matches_predicate(chdb: ChdbWorker, req: tuple[list, list]) -> None:
    whitelist, blacklist = req
    compiled = compile_request_filters(whitelist, blacklist)
    assert chdb.matching(compiled, "sfi_corpus") == _expected(compiled, CORPUS)


@settings(
    max_examples=200 if FULL else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=flows(), req=requests)
def test_sfi_random_flows_sql_matches_predicate(
    chdb: ChdbWorker, batch: list[flow_pb2.Flow], req: tuple[list, list]
) -> None:
    chdb.truncate()
    chdb.insert(_rows(batch))
    compiled = compile_request_filters(*req)
    assert chdb.matching(compiled) == _expected(compiled, batch)


@settings(
    max_examples=300 if FULL else 80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ff=flow_filters())
def test_sfi_each_filter_alone_and_negated(chdb: ChdbWorker, ff: flow_pb2.FlowFilter) -> None:
    as_white = compile_request_filters([ff], [])
    as_black = compile_request_filters([], [ff])
    white = chdb.matching(as_white, "sfi_corpus")
    black = chdb.matching(as_black, "sfi_corpus")
    assert white == _expected(as_white, CORPUS)
    assert black == _expected(as_black, CORPUS)
    assert sorted(white + black) == list(range(len(CORPUS)))


def test_sfi_corpus_exercises_both_outcomes(chdb: ChdbWorker) -> None:
    """The corpus is rich enough that single-field filters split it (not all-or-nothing)."""
    F = flow_pb2.FlowFilter
    for ff in [
        F(source_ip=["10.0.0.0/8"]),
        F(destination_ip=["fd00::/8"]),
        F(source_pod=["x/"]),
        F(source_label=["app=a"]),
        F(source_label=["tier>4"]),
        F(verdict=[flow_pb2.DROPPED]),
        F(drop_reason_desc=[flow_pb2.POLICY_DENIED]),
        F(protocol=["tcp"]),
        F(destination_port=["80"]),
        F(node_name=["k8s*"]),
        F(reply=[True]),
        F(tcp_flags=[flow_pb2.TCPFlags(SYN=True)]),
        F(event_type=[flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)]),
        F(source_service=["x/"]),
        F(source_workload=[flow_pb2.Workload(kind="Deployment")]),
        F(interface=[flow_pb2.NetworkInterface(name="lxc1")]),
        F(ip_version=[flow_pb2.IPv6]),
        F(traffic_direction=[flow_pb2.INGRESS]),
        F(uuid=["u-1"]),
        F(source_identity=[256]),
    ]:
        compiled = compile_request_filters([ff])
        got = chdb.matching(compiled, "sfi_corpus")
        assert got == _expected(compiled, CORPUS), ff
        assert 0 < len(got) < len(CORPUS), ff


@pytest.fixture(scope="module")
def ch18() -> Iterator[ClickHouse18]:
    if not ClickHouse18.available():
        pytest.skip("clickhouse-server (18.16) not installed")
    server = ClickHouse18()
    try:
        server.create("sfi_corpus")
        server.insert(_rows(CORPUS), "sfi_corpus")
        yield server
    finally:
        server.close()


@settings(
    max_examples=300 if FULL else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(req=requests)
def test_sfi_clickhouse18_pyformat_matches_predicate(
    ch18: ClickHouse18, req: tuple[list, list]
) -> None:
    compiled = compile_request_filters(*req)
    assert ch18.matching(compiled, "sfi_corpus") == _expected(compiled, CORPUS)


def test_sfi_empty_request_selects_everything(chdb: ChdbWorker) -> None:
    compiled = compile_request_filters([], [])
    assert compiled.is_trivial
    assert compiled.sql() == ("1", {})
    assert chdb.matching(compiled, "sfi_corpus") == list(range(len(CORPUS)))


@settings(
    max_examples=600 if FULL else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ff=arbitrary_flow_filters(), negate=st.booleans())
def test_sfi_arbitrary_values_compile_or_fail_cleanly(
    chdb: ChdbWorker, ff: flow_pb2.FlowFilter, negate: bool
) -> None:
    wl, bl = ([], [ff]) if negate else ([ff], [])
    try:
        compiled = compile_request_filters(wl, bl)
    except FilterError as exc:
        assert exc.field.startswith("blacklist[0]" if negate else "whitelist[0]")
        return
    assert chdb.matching(compiled, "sfi_corpus") == _expected(compiled, CORPUS)
