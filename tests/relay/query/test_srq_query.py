"""sensilla.query.v1.Query against stored flows (in-process relay on chDB), every
answer compared with the same computation in memory (tests/relay/query/model.py):
service map (namespaces, noise toggles, truncation, minute and hour rollups), flow
rates (rollups and raw steps), drop summary (reasons, top pairs with denying
policies and default deny, new drops), SearchFlows (pages, workload ids, tokens),
and the limits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from relay.observer.limits import Limits
from sensilla.filters import compile_request_filters
from sensilla.protos import flow_pb2, query_pb2, query_pb2_grpc
from tests.relay.observer.flowgen import PODS, FlowGen, batches, key
from tests.relay.observer.support import RelayThread, chdb_url, load_store, running_relay
from tests.relay.query import model

N = 30_000


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def window(since: float, until: float) -> query_pb2.TimeWindow:
    return query_pb2.TimeWindow(since=ts(since), until=ts(until))


class Data:
    def __init__(self, url: str) -> None:
        self.end = int(time.time()) - 300
        self.start = self.end - 3 * 3600
        gen = FlowGen(3, start_ns=self.start * 10**9, step_ns=3 * 3600 * 10**9 // N)
        self.flows = list(gen.flows(N))
        self.url = url
        load_store(url, batches(self.flows))
        self.since = self.start - 600
        self.until = int(time.time()) + 1


@pytest.fixture(scope="module", params=["chdb", "ch18"])
def data(request: pytest.FixtureRequest) -> Data:
    """The same flows on chDB and on clickhouse-server 18.16 (native protocol)."""
    if request.param == "chdb":
        return Data(chdb_url(request.getfixturevalue("chdb_dir"), "srq_query"))
    server = request.getfixturevalue("ch18")
    return Data(server.url.rsplit("/", 1)[0] + "/srq_query?send_receive_timeout=60")


MAX_EDGES = 20_000  # random synthetic traffic makes a dense map


@pytest.fixture(scope="module")
def relay(data: Data) -> Iterator[RelayThread]:
    with running_relay(data.url, limits=Limits(max_edges=MAX_EDGES)) as r:
        yield r


@pytest.fixture(scope="module")
def q(relay: RelayThread) -> Iterator[query_pb2_grpc.QueryStub]:
    with grpc.insecure_channel(relay.address) as ch:
        yield query_pb2_grpc.QueryStub(ch)


def edges_of(resp: query_pb2.ServiceMapResponse) -> dict[tuple[str, str, str, int, int], tuple]:
    return {
        (e.source_id, e.destination_id, e.protocol, e.port, e.verdict): (
            e.flows,
            e.packets,
            e.bytes,
            list(e.drop_reasons),
        )
        for e in resp.edges
    }


@pytest.mark.parametrize(
    "namespaces,hide",
    [
        ((), {}),
        (("shop",), {}),
        (("x", "kube-system"), {"dns": True}),
        ((), {"dns": True, "host": True, "monitoring": True, "world": True}),
        ((), {"world": True}),
    ],
)
def test_srq_service_map_equals_memory(
    q: query_pb2_grpc.QueryStub, data: Data, namespaces: tuple[str, ...], hide: dict[str, bool]
) -> None:
    req = query_pb2.ServiceMapRequest(
        window=window(data.since, data.until),
        namespaces=list(namespaces),
        hide_dns=hide.get("dns", False),
        hide_host=hide.get("host", False),
        hide_monitoring=hide.get("monitoring", False),
        hide_world=hide.get("world", False),
        max_edges=MAX_EDGES,
    )
    resp = q.ServiceMap(req, timeout=60)
    want = model.edges(data.flows, data.since, data.until, namespaces, hide)
    assert edges_of(resp) == want and not resp.truncated
    ids = {i for k in want for i in k[:2]}
    assert {w.id for w in resp.workloads} == ids
    by_id = {w.id: w for w in resp.workloads}
    for p in PODS:
        wid = f"{p.namespace}/{p.workload[0] if p.workload else p.pod}"
        if wid in by_id:
            w = by_id[wid]
            assert (w.namespace, w.kind) == (p.namespace, p.workload[1] if p.workload else "Pod")
            assert w.name == (p.workload[0] if p.workload else p.pod)
    for w in resp.workloads:
        if w.id.startswith("reserved:"):
            assert w.kind == "reserved" and w.name == w.id.split(":", 1)[1] and not w.namespace


def test_srq_service_map_truncation_and_hour_rollup(
    q: query_pb2_grpc.QueryStub, data: Data
) -> None:
    want = model.edges(data.flows, data.since, data.until)
    top = sorted(want.items(), key=lambda kv: (-kv[1][0], kv[0]))[:7]
    resp = q.ServiceMap(
        query_pb2.ServiceMapRequest(window=window(data.since, data.until), max_edges=7)
    )
    assert resp.truncated and list(edges_of(resp).items()) == top
    wide = q.ServiceMap(
        query_pb2.ServiceMapRequest(
            window=window(data.until - 3 * 86400, data.until), max_edges=MAX_EDGES
        )
    )
    assert edges_of(wide) == want  # hour buckets hold the same flows
    with pytest.raises(grpc.RpcError) as err:
        q.ServiceMap(query_pb2.ServiceMapRequest(max_edges=MAX_EDGES + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_srq_flow_rates_equal_memory(q: query_pb2_grpc.QueryStub, data: Data) -> None:
    for step, namespaces in ((600, ()), (1800, ("y",)), (0, ())):
        resp = q.FlowRates(
            query_pb2.FlowRatesRequest(
                window=window(data.since, data.until), step_seconds=step, namespaces=namespaces
            )
        )
        if step:
            assert resp.step_seconds == step
        else:
            assert resp.step_seconds % 60 == 0 and resp.step_seconds >= 60
        got = {(int(p.time.seconds), p.verdict): p.flows for p in resp.points}
        assert got == model.rates(data.flows, data.since, data.until, resp.step_seconds, namespaces)
    # steps under a minute read raw flows (minute-aligned window)
    lo = (data.start + 3600) // 60 * 60
    hi = lo + 1200
    resp = q.FlowRates(query_pb2.FlowRatesRequest(window=window(lo, hi), step_seconds=15))
    assert resp.step_seconds == 15
    got = {(int(p.time.seconds), p.verdict): p.flows for p in resp.points}
    assert got == model.rates(data.flows, lo, hi, 15) and got


def test_srq_drop_summary_equals_memory(q: query_pb2_grpc.QueryStub, data: Data) -> None:
    for namespaces in ((), ("shop", "z")):
        resp = q.DropSummary(
            query_pb2.DropSummaryRequest(
                window=window(data.since, data.until),
                namespaces=namespaces,
                step_seconds=900,
                limit=100,
            ),
            timeout=60,
        )
        assert resp.step_seconds == 900
        reasons = {(int(p.time.seconds), int(p.reason)): p.drops for p in resp.reasons}
        want_r: dict[tuple[int, int], int] = {}
        for f in data.flows:
            t = f.time.seconds
            if f.verdict == flow_pb2.DROPPED and model.in_namespaces(f, namespaces):
                k = (t // 900 * 900, int(f.drop_reason_desc))
                want_r[k] = want_r.get(k, 0) + 1
        assert reasons == want_r
        pairs = model.drop_pairs(data.flows, data.since, data.until, namespaces)
        top = sorted(pairs.items(), key=lambda kv: (-kv[1].drops, kv[0]))[:100]
        assert len(resp.top_pairs) == len(top) > 0
        for got, (pk, p) in zip(resp.top_pairs, top, strict=True):
            assert (got.source.id, got.destination.id, got.protocol, got.port, got.reason) == pk
            assert got.drops == p.drops
            assert list(got.policies) == sorted(p.policies)
            assert got.default_deny == p.default_deny
            assert got.first_seen.ToNanoseconds() == p.first
            assert got.last_seen.ToNanoseconds() == p.last
        assert any(g.default_deny and g.policies for g in resp.top_pairs)
        assert any(not g.default_deny for g in resp.top_pairs)
    with pytest.raises(grpc.RpcError) as err:
        q.DropSummary(query_pb2.DropSummaryRequest(limit=101))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _newest_first(flows: list[flow_pb2.Flow]) -> list[tuple[int, str, int, int]]:
    return sorted((key(f) for f in flows), reverse=True)


def test_srq_search_flows_pages_equal_memory(q: query_pb2_grpc.QueryStub, data: Data) -> None:
    wl = [
        flow_pb2.FlowFilter(source_pod=["shop/"]),
        flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED]),
    ]
    bl = [flow_pb2.FlowFilter(protocol=["udp"])]
    lo, hi = data.start + 1800, data.start + 7200
    pred = compile_request_filters(wl, bl)
    want = _newest_first(
        [
            f
            for f in data.flows
            if lo * 10**9 <= f.time.ToNanoseconds() <= hi * 10**9 and pred.matches(f)
        ]
    )
    assert len(want) > 1500
    got: list[tuple[int, str, int, int]] = []
    token = ""
    pages = 0
    while True:
        resp = q.SearchFlows(
            query_pb2.SearchFlowsRequest(
                window=window(lo, hi), whitelist=wl, blacklist=bl, page_size=700, page_token=token
            )
        )
        pages += 1
        got += [key(f) for f in resp.flows]
        assert len(resp.flows) <= 700
        token = resp.next_page_token
        if not token:
            break
    assert got == want and pages == -(-len(want) // 700)
    # the window is pinned by the token: a later page ignores a changed window
    first = q.SearchFlows(
        query_pb2.SearchFlowsRequest(window=window(lo, hi), whitelist=wl, blacklist=bl, page_size=5)
    )
    second = q.SearchFlows(
        query_pb2.SearchFlowsRequest(
            window=window(0, 1),
            whitelist=wl,
            blacklist=bl,
            page_size=5,
            page_token=first.next_page_token,
        )
    )
    assert [key(f) for f in second.flows] == want[5:10]
    # a token of another search, or not a token at all
    for bad in (
        query_pb2.SearchFlowsRequest(page_token=first.next_page_token, whitelist=wl),
        query_pb2.SearchFlowsRequest(page_token="not-a-token"),
        query_pb2.SearchFlowsRequest(page_token=first.next_page_token[:-4] + "AAAA"),
        query_pb2.SearchFlowsRequest(page_size=1001),
        query_pb2.SearchFlowsRequest(whitelist=[flow_pb2.FlowFilter()] * 65),
        query_pb2.SearchFlowsRequest(source_workload_id="x" * 2000),
    ):
        with pytest.raises(grpc.RpcError) as err:
            q.SearchFlows(bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad


def test_srq_search_by_workload_ids_matches_service_map_edges(
    q: query_pb2_grpc.QueryStub, data: Data
) -> None:
    """The flows behind an edge: its workload ids, port, protocol and verdict, no
    replies; as many as the edge counts."""
    sm = q.ServiceMap(
        query_pb2.ServiceMapRequest(window=window(data.since, data.until), max_edges=MAX_EDGES)
    )
    chosen = [e for e in sm.edges if e.protocol in ("tcp", "udp")][:: max(1, len(sm.edges) // 12)]
    chosen += [e for e in sm.edges if e.source_id.startswith("reserved:")][:2]
    for e in chosen:
        flt = flow_pb2.FlowFilter(protocol=[e.protocol], verdict=[e.verdict], reply=[False])
        if e.protocol in ("tcp", "udp", "sctp"):
            flt.destination_port.append(str(e.port))
        n, token = 0, ""
        while True:
            resp = q.SearchFlows(
                query_pb2.SearchFlowsRequest(
                    window=window(data.since, data.until),
                    source_workload_id=e.source_id,
                    destination_workload_id=e.destination_id,
                    whitelist=[flt],
                    page_size=1000,
                    page_token=token,
                )
            )
            for f in resp.flows:
                assert model.workload_id(f.source) == e.source_id
                assert model.workload_id(f.destination) == e.destination_id
            n += len(resp.flows)
            token = resp.next_page_token
            if not token:
                break
        # flows with is_reply unknown count on the map; the reply filter matches them
        # only when dropped (Hubble reads a drop as not a reply)
        unknown = sum(
            1
            for f in data.flows
            if not f.HasField("is_reply")
            and f.verdict != flow_pb2.DROPPED
            and model.workload_id(f.source) == e.source_id
            and model.workload_id(f.destination) == e.destination_id
            and model.proto_port(f) == (e.protocol, e.port)
            and f.verdict == e.verdict
        )
        assert n + unknown == e.flows, (e.source_id, e.destination_id, e.port)
