"""Acceptance 5: SQL-injection strings in every filter field (GetFlows and SearchFlows)
and every query field (namespaces, workload ids, page tokens, Explain's pods and
protocol) give the correct result (the in-memory predicate or model) or
INVALID_ARGUMENT, never another error; afterwards every table is intact (same
tables, same rows, rollups exact). On chDB and on clickhouse-server 18.16. Some
stored flows carry the hostile strings themselves, so filters for them must find
exactly those."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from relay.store import open_store
from sensilla.filters import FilterError, compile_request_filters
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc, query_pb2, query_pb2_grpc
from tests.relay.helpers import assert_rollups_exact
from tests.relay.observer.flowgen import FlowGen, batches, key
from tests.relay.observer.support import (
    RelayThread,
    chdb_url,
    load_store,
    make_state_dir,
    running_relay,
)
from tests.relay.query import model

HOSTILE = [
    "'",
    '"',
    "\\",
    "\\'",
    "'; DROP TABLE flows; --",
    "x' OR '1'='1",
    "x/' OR 1=1 --",
    "') OR ('1'='1",
    "1; SELECT 1",
    "{flt_0:String}",
    "{fq_since:Int64}",
    "%(flt_0)s",
    "%s %% %",
    "`flows`",
    "a\nb\tc\r",
    "\x00",
    "é/ü/\u2215",
    "$(rm -rf /)",
    "x/" + "a" * 300,
    "k8s:app=web' OR '1'='1",
    "unhex('41')",
    "*",
    "/",
]
STRING_FIELDS = [
    "uuid",
    "source_ip",
    "destination_ip",
    "source_pod",
    "destination_pod",
    "source_label",
    "destination_label",
    "source_service",
    "destination_service",
    "protocol",
    "source_port",
    "destination_port",
    "node_name",
]
N = 1200


def hostile_flows(start_ns: int) -> list[flow_pb2.Flow]:
    """Flows whose names, labels and services are the hostile strings."""
    gen = FlowGen(13, start_ns=start_ns, step_ns=10**7)
    out = []
    for i, f in enumerate(gen.flows(len(HOSTILE) * 2)):
        h = HOSTILE[i % len(HOSTILE)]
        if i % 2 == 0:
            f.source.namespace, f.source.pod_name = "inj", h
            f.source.labels.append(f"k8s:app={h}")
        else:
            f.destination_service.namespace, f.destination_service.name = "inj", h
            f.node_name = h
        out.append(f)
    return out


class Env:
    def __init__(self, relay: RelayThread, flows: list[flow_pb2.Flow], url: str) -> None:
        self.relay, self.flows, self.url = relay, flows, url
        self.channel = grpc.insecure_channel(relay.address)
        self.obs = observer_pb2_grpc.ObserverStub(self.channel)
        self.q = query_pb2_grpc.QueryStub(self.channel)


@pytest.fixture(scope="module", params=["chdb", "ch18"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if request.param == "chdb":
        url = chdb_url(request.getfixturevalue("chdb_dir"), "srq_inj")
    else:
        url = request.getfixturevalue("ch18").url.rsplit("/", 1)[0] + "/srq_inj"
    start = (int(time.time()) - 3600) * 10**9
    flows = list(FlowGen(17, start_ns=start, step_ns=10**9).flows(N))
    flows += hostile_flows(start + 10**9 // 2)
    load_store(url, batches(flows, 300))
    state = Path(tmp_path_factory.mktemp("srq-inj")) / "state"
    make_state_dir(state)
    with running_relay(url, source=f"lab:{state}") as relay:
        e = Env(relay, flows, url)
        try:
            yield e
        finally:
            e.channel.close()


def _get_flows(env: Env, **req: Any) -> list[tuple[int, str, int, int]] | None:
    """The keys returned, or None for INVALID_ARGUMENT."""
    try:
        return [
            key(r.flow)
            for r in env.obs.GetFlows(observer_pb2.GetFlowsRequest(**req), timeout=60)
            if r.HasField("flow")
        ]
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, err.code(), err.details())
        return None


def _expected(env: Env, wl: list[Any], bl: list[Any]) -> list[tuple[int, str, int, int]] | None:
    try:
        c = compile_request_filters(wl, bl)
    except FilterError:
        return None
    return sorted(key(f) for f in env.flows if c.matches(f))


@pytest.mark.parametrize("field", [*STRING_FIELDS, "workload", "interface"])
def test_srq_hostile_filter_values(env: Env, field: str) -> None:
    found = 0
    for h in HOSTILE:
        if field == "workload":
            ff = flow_pb2.FlowFilter(source_workload=[flow_pb2.Workload(name=h, kind=h)])
        elif field == "interface":
            ff = flow_pb2.FlowFilter(interface=[flow_pb2.NetworkInterface(name=h)])
        else:
            ff = flow_pb2.FlowFilter()
            values = getattr(ff, field)
            if field.endswith(("_pod", "_service")):
                values.extend([h, f"inj/{h}"])  # stored under namespace inj
            elif field.endswith("_label"):
                values.extend([h, f"k8s:app={h}"])
            else:
                values.append(h)
        narrow = flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED, flow_pb2.AUDIT])
        for wl, bl in (([ff], []), ([narrow], [ff])):
            want = _expected(env, wl, bl)
            got = _get_flows(env, whitelist=wl, blacklist=bl)
            assert got == want, (field, h, "blacklist" if bl else "whitelist")
            if want and not bl:
                found += 1
            # SearchFlows compiles the same way, newest first
            try:
                page = env.q.SearchFlows(
                    query_pb2.SearchFlowsRequest(
                        whitelist=wl, blacklist=bl, page_size=5, window=_all()
                    ),
                    timeout=30,
                )
                assert want is not None and [key(f) for f in page.flows] == want[::-1][:5]
            except grpc.RpcError as err:
                assert want is None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    if field in ("source_pod", "destination_service"):
        assert found >= 10, f"{field}: stored hostile values were not found"


def _all() -> query_pb2.TimeWindow:
    w = query_pb2.TimeWindow()
    w.since.FromNanoseconds((int(time.time()) - 7200) * 10**9)
    w.until.FromNanoseconds(time.time_ns() + 10**9)
    return w


def test_srq_hostile_query_fields(env: Env) -> None:
    since, until = int(time.time()) - 7200, int(time.time()) + 1
    for h in HOSTILE:
        nul = "\x00" in h
        for ns in ([h], ["x", h]):
            calls = [
                (
                    env.q.ServiceMap,
                    query_pb2.ServiceMapRequest(namespaces=ns, window=_all(), max_edges=5000),
                ),
                (env.q.FlowRates, query_pb2.FlowRatesRequest(namespaces=ns, window=_all())),
                (env.q.DropSummary, query_pb2.DropSummaryRequest(namespaces=ns, window=_all())),
                (env.q.ListEndpoints, query_pb2.ListEndpointsRequest(namespaces=ns)),
            ]
            for call, req in calls:
                try:
                    resp = call(req, timeout=30)
                except grpc.RpcError as err:
                    assert nul and err.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, err)
                    continue
                assert not nul, h
                if isinstance(resp, query_pb2.ServiceMapResponse):
                    got = {
                        (e.source_id, e.destination_id, e.protocol, e.port, e.verdict): e.flows
                        for e in resp.edges
                    }
                    want = {k: v[0] for k, v in model.edges(env.flows, since, until, ns).items()}
                    assert got == want, (h, ns)
        for field in ("source_workload_id", "destination_workload_id"):
            for wid in (h, f"inj/{h}"):
                _check_workload_search(env, field, wid, nul)
        with pytest.raises(grpc.RpcError) as tok_err:
            env.q.SearchFlows(query_pb2.SearchFlowsRequest(page_token=h), timeout=10)
        assert tok_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for req in (
            query_pb2.ExplainRequest(source=h, destination="y/b", port=80),
            query_pb2.ExplainRequest(source="x/a", destination=h, port=80),
            query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80, protocol=h),
        ):
            with pytest.raises(grpc.RpcError) as ex_err:
                env.q.Explain(req, timeout=10)
            assert ex_err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (req, ex_err.value)


def _check_workload_search(env: Env, field: str, wid: str, nul: bool) -> None:
    req = query_pb2.SearchFlowsRequest(window=_all(), page_size=1000)
    setattr(req, field, wid)
    try:
        resp = env.q.SearchFlows(req, timeout=30)
    except grpc.RpcError as err:
        assert nul and err.code() == grpc.StatusCode.INVALID_ARGUMENT
        return
    side = "source" if field.startswith("source") else "destination"
    want = sorted(
        (key(f) for f in env.flows if model.workload_id(getattr(f, side)) == wid), reverse=True
    )
    assert [key(f) for f in resp.flows] == want, (field, wid)


def test_srq_tables_intact_afterwards(env: Env) -> None:
    """Runs after the hostile requests (module order): nothing was dropped or added."""
    st = open_store(env.url, migrate=False)
    try:
        assert st.count_distinct() == st.count_rows() == len(env.flows)
        tables = {
            r[0]
            for r in st.backend.query(
                "SELECT name FROM system.tables WHERE database = {d:String}", {"d": st.db}
            )
        }
        assert {
            "flows", "flows_minute", "flows_hour", "flows_minute_mv", "flows_hour_mv",
            "ingest_batches", "ingest_positions", "collectors", "schema_version", "store_options",
        } <= tables  # fmt: skip
        assert_rollups_exact(st)
    finally:
        st.close()
    # and the relay still answers
    assert len(_get_flows(env, number=3) or []) == 3
