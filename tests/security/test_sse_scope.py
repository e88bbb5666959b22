"""Acceptance 2 (relay APIs): a namespace-scoped token sees exactly the flows whose
source or destination namespace is in its scope — GetFlows (history, with filters,
live follow, resumable streams), GetNamespaces, the query API (service map, rates,
drop summary, SearchFlows, Explain) — and nothing else; checked both ways against
an admin token's view of the same relay (in-process, chDB, realistic synthetic
flows of namespaces x, y, z, shop, default, kube-system, monitoring and reserved
endpoints). Tokens: missing or unknown -> UNAUTHENTICATED; an ingest token cannot
read, a reading token cannot push."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from relay.server import RelayConfig
from relay.siem.position import pack_resume
from sensilla.protos import (
    flow_pb2,
    ingest_pb2,
    ingest_pb2_grpc,
    observer_pb2,
    observer_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
)
from sensilla.security.tls import ClientSecurity, secure_channel
from sensilla.security.tokens import TokenStore
from tests.relay.observer.flowgen import FlowGen, batches
from tests.relay.observer.support import RelayThread, chdb_url, load_store, to_batch
from tests.security.conftest import Tokens

N = 6000
SCOPES = {"team-x": {"x"}, "team-shop": {"shop", "default"}}


def in_scope(f: flow_pb2.Flow, names: set[str]) -> bool:
    return f.source.namespace in names or f.destination.namespace in names


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


class Setup:
    def __init__(self, relay: RelayThread, tokens: Tokens, flows: list[flow_pb2.Flow]) -> None:
        self.relay = relay
        self.tokens = tokens
        self.flows = flows
        self.window = query_pb2.TimeWindow(
            since=ts(time.time() - 3000), until=ts(time.time() + 600)
        )
        self.channels: dict[str, grpc.Channel] = {}

    def channel(self, who: str) -> grpc.Channel:
        if who not in self.channels:
            token = str(self.tokens.files[who]) if who in self.tokens.files else ""
            sec = ClientSecurity(token_file=token)
            self.channels[who] = secure_channel(self.relay.address, sec)
        return self.channels[who]

    def observer(self, who: str) -> observer_pb2_grpc.ObserverStub:
        return observer_pb2_grpc.ObserverStub(self.channel(who))

    def query(self, who: str) -> query_pb2_grpc.QueryStub:
        return query_pb2_grpc.QueryStub(self.channel(who))

    def get_flows(self, who: str, req: observer_pb2.GetFlowsRequest) -> list[flow_pb2.Flow]:
        return [r.flow for r in self.observer(who).GetFlows(req, timeout=60) if r.HasField("flow")]


@pytest.fixture(scope="module")
def setup(tokens: Tokens, chdb_dir: Path) -> Iterator[Setup]:
    now = time.time()
    gen = FlowGen(11, start_ns=int((now - 1800) * 1e9), step_ns=int(1500e9) // N)
    flows = list(gen.flows(N))
    url = chdb_url(chdb_dir, "sse_scope")
    load_store(url, batches(flows))
    cfg = RelayConfig(
        store_url=url,
        listen=["127.0.0.1:0"],
        max_round_delay=0.02,
        retention_interval_s=0,
        auth=TokenStore(str(tokens.file)),
    )
    r = RelayThread(cfg).start()
    s = Setup(r, tokens, flows)
    try:
        yield s
    finally:
        for ch in s.channels.values():
            ch.close()
        r.stop()


def uuids(flows: list[flow_pb2.Flow]) -> set[str]:
    return {f.uuid for f in flows}


# --- GetFlows ---------------------------------------------------------------------------


@pytest.mark.parametrize("who", sorted(SCOPES))
def test_sse_get_flows_history_is_exactly_the_scope(setup: Setup, who: str) -> None:
    names = SCOPES[who]
    req = observer_pb2.GetFlowsRequest(since=ts(0))
    admin = setup.get_flows("admin", req)
    assert uuids(admin) == uuids(setup.flows), "the admin token sees every flow"
    scoped = setup.get_flows(who, req)
    want = {f.uuid for f in admin if in_scope(f, names)}
    outside = {f.uuid for f in admin if not in_scope(f, names)}
    assert want and outside, "the data has flows on both sides of the scope"
    assert uuids(scoped) == want  # everything it should see, nothing it should not
    assert all(in_scope(f, names) for f in scoped)
    # with the request's own filters (ANDed with the scope) and a count
    dropped = observer_pb2.GetFlowsRequest(
        since=ts(0), whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
    )
    got = setup.get_flows(who, dropped)
    assert uuids(got) == {
        f.uuid for f in admin if in_scope(f, names) and f.verdict == flow_pb2.DROPPED
    }
    last = setup.get_flows(who, observer_pb2.GetFlowsRequest(number=25))
    assert len(last) == 25 and all(in_scope(f, names) for f in last)
    # asking for another namespace explicitly yields nothing of it
    other = observer_pb2.GetFlowsRequest(
        since=ts(0), whitelist=[flow_pb2.FlowFilter(source_pod=["kube-system/"])]
    )
    assert all(f.destination.namespace in names for f in setup.get_flows(who, other))


def test_sse_resumable_stream_is_scoped(setup: Setup) -> None:
    names = SCOPES["team-x"]
    scoped = setup.get_flows("team-x", pack_resume({}))
    assert uuids(scoped) == {f.uuid for f in setup.flows if in_scope(f, names)}


class Pusher:
    """An ingest stream with a token (Hello, batches, acks)."""

    def __init__(self, channel: grpc.Channel, hello: ingest_pb2.Hello) -> None:
        self.out: list[ingest_pb2.PushRequest | None] = [ingest_pb2.PushRequest(hello=hello)]
        self.cond = threading.Condition()
        self.responses: list[ingest_pb2.PushResponse] = []
        self.error: grpc.RpcError | None = None
        self.call = ingest_pb2_grpc.IngestStub(channel).Push(self._requests())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _requests(self) -> Iterator[ingest_pb2.PushRequest]:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: bool(self.out))
                req = self.out.pop(0)
            if req is None:
                return
            yield req

    def _read(self) -> None:
        try:
            for r in self.call:
                with self.cond:
                    self.responses.append(r)
                    self.cond.notify_all()
        except grpc.RpcError as err:
            with self.cond:
                self.error = err
                self.cond.notify_all()

    def push(self, batch: ingest_pb2.Batch) -> None:
        with self.cond:
            self.out.append(ingest_pb2.PushRequest(batch=batch))
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 30) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(lambda: pred(self.responses) or self.error, timeout))

    def close(self) -> None:
        with self.cond:
            self.out.append(None)
            self.cond.notify_all()
        self.call.cancel()


def test_sse_live_follow_is_scoped(setup: Setup) -> None:
    names = SCOPES["team-shop"]
    follow = observer_pb2.GetFlowsRequest(follow=True)
    calls = {who: setup.observer(who).GetFlows(follow) for who in ("admin", "team-shop")}
    got: dict[str, list[flow_pb2.Flow]] = {"admin": [], "team-shop": []}

    def read(who: str) -> None:
        try:
            for r in calls[who]:
                if r.HasField("flow"):
                    got[who].append(r.flow)
        except grpc.RpcError:
            pass

    for c in calls.values():
        c.initial_metadata()  # the follow is in place
    readers = [threading.Thread(target=read, args=(w,), daemon=True) for w in calls]
    for t in readers:
        t.start()
    gen = FlowGen(12, start_ns=time.time_ns() - 10**9, step_ns=1_000_000)
    new = list(gen.flows(800))
    for b in batches(new, size=200):
        hello = ingest_pb2.Hello(
            collector_id=b.collector_id, node_name=b.collector_id, boot_id=b.boot_id
        )
        p = Pusher(setup.channel("ingest"), hello)
        try:
            p.push(to_batch(b))
            assert p.wait(lambda rs: any(r.HasField("ack") for r in rs)), p.error
        finally:
            p.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(got["admin"]) < len(new):
        time.sleep(0.05)
    time.sleep(0.5)  # anything more for the scoped follower has arrived by now
    for c in calls.values():
        c.cancel()
    for t in readers:
        t.join(10)
    assert uuids(got["admin"]) == uuids(new)
    assert uuids(got["team-shop"]) == {f.uuid for f in new if in_scope(f, names)}
    assert any(not in_scope(f, names) for f in new)


def test_sse_get_namespaces_is_scoped(setup: Setup) -> None:
    req = observer_pb2.GetNamespacesRequest()
    admin = {n.namespace for n in setup.observer("admin").GetNamespaces(req).namespaces}
    for who, names in SCOPES.items():
        got = {n.namespace for n in setup.observer(who).GetNamespaces(req).namespaces}
        assert got == admin & names and got


# --- the query API ------------------------------------------------------------------------


def edges(resp: query_pb2.ServiceMapResponse) -> set[tuple[Any, ...]]:
    return {
        (e.source_id, e.destination_id, e.protocol, e.port, e.verdict, e.flows)
        for e in resp.edges
    }


def ns_of(workload_id: str) -> str:
    return "" if workload_id.startswith("reserved:") else workload_id.split("/", 1)[0]


def search_all(q: query_pb2_grpc.QueryStub, w: query_pb2.TimeWindow) -> list[flow_pb2.Flow]:
    seen: list[flow_pb2.Flow] = []
    token = ""
    while True:
        resp = q.SearchFlows(
            query_pb2.SearchFlowsRequest(window=w, page_size=1000, page_token=token)
        )
        seen.extend(resp.flows)
        token = resp.next_page_token
        if not token:
            return seen


@pytest.mark.parametrize("who", sorted(SCOPES))
def test_sse_query_api_is_scoped(setup: Setup, who: str) -> None:
    names = sorted(SCOPES[who])
    q, qa = setup.query(who), setup.query("admin")
    w = setup.window
    # service map: what the admin sees for these namespaces, and nothing outside
    scoped = q.ServiceMap(query_pb2.ServiceMapRequest(window=w, max_edges=5000))
    admin_ns = qa.ServiceMap(query_pb2.ServiceMapRequest(window=w, namespaces=names,
                                                         max_edges=5000))  # fmt: skip
    admin_all = qa.ServiceMap(query_pb2.ServiceMapRequest(window=w, max_edges=5000))
    assert edges(scoped) == edges(admin_ns) and edges(scoped)
    assert all(
        ns_of(e.source_id) in names or ns_of(e.destination_id) in names for e in scoped.edges
    )
    assert edges(admin_all) - edges(scoped), "the admin sees edges the scope hides"
    # a namespace outside the scope, asked for explicitly: nothing
    outside = q.ServiceMap(query_pb2.ServiceMapRequest(window=w, namespaces=["kube-system"]))
    assert not outside.edges and not outside.workloads
    # rates and drops
    rates = q.FlowRates(query_pb2.FlowRatesRequest(window=w))
    rates_admin = qa.FlowRates(query_pb2.FlowRatesRequest(window=w, namespaces=names))
    assert list(rates.points) == list(rates_admin.points) and rates.points
    assert not q.FlowRates(query_pb2.FlowRatesRequest(window=w, namespaces=["y"])).points
    drops = q.DropSummary(query_pb2.DropSummaryRequest(window=w, limit=100))
    drops_admin = qa.DropSummary(query_pb2.DropSummaryRequest(window=w, namespaces=names,
                                                              limit=100))  # fmt: skip
    assert list(drops.reasons) == list(drops_admin.reasons) and drops.reasons
    assert list(drops.top_pairs) == list(drops_admin.top_pairs)
    for p in drops.top_pairs:
        assert p.source.namespace in names or p.destination.namespace in names
    # SearchFlows, every page
    seen, every = search_all(q, w), search_all(qa, w)
    assert uuids(seen) == {f.uuid for f in every if in_scope(f, SCOPES[who])}
    assert uuids(seen) >= {f.uuid for f in setup.flows if in_scope(f, SCOPES[who])}
    # a workload of another namespace: nothing
    other = q.SearchFlows(
        query_pb2.SearchFlowsRequest(window=w, source_workload_id="kube-system/coredns")
    )
    assert all(in_scope(f, SCOPES[who]) for f in other.flows)


def test_sse_explain_outside_scope_is_refused(setup: Setup) -> None:
    q = setup.query("team-x")
    with pytest.raises(grpc.RpcError) as err:
        q.Explain(query_pb2.ExplainRequest(source="y/a", destination="z/b", port=80))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # inside the scope it gets past the check (this relay watches no source)
    with pytest.raises(grpc.RpcError) as err:
        q.Explain(query_pb2.ExplainRequest(source="y/a", destination="x/b", port=80))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


# --- who may call at all ------------------------------------------------------------------


def test_sse_tokens_decide_who_may_call(setup: Setup, tokens: Tokens, tmp_path: Path) -> None:
    def status_code(sec: ClientSecurity) -> str:
        ch = secure_channel(setup.relay.address, sec)
        try:
            observer_pb2_grpc.ObserverStub(ch).ServerStatus(
                observer_pb2.ServerStatusRequest(), timeout=5
            )
            return "OK"
        except grpc.RpcError as err:
            assert tokens.plain["admin"] not in (err.details() or "")
            return err.code().name
        finally:
            ch.close()

    wrong = tmp_path / "wrong.token"
    wrong.write_text(tokens.plain["admin"][:-2] + "xx\n")
    assert status_code(ClientSecurity()) == "UNAUTHENTICATED"
    assert status_code(ClientSecurity(token_file=str(wrong))) == "UNAUTHENTICATED"
    assert status_code(ClientSecurity(token_file=str(tokens.files["ingest"]))) == (
        "PERMISSION_DENIED"
    )
    assert status_code(ClientSecurity(token_file=str(tokens.files["team-x"]))) == "OK"
    # a reading token may not push flows
    p = Pusher(setup.channel("team-x"), ingest_pb2.Hello(collector_id="sse", boot_id=1))
    try:
        assert p.wait(lambda rs: False, timeout=10)
        assert p.error is not None and p.error.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        p.close()


# --- the UI behind a scoped token ---------------------------------------------------------


def _ui_flows(relay_address: str, token_file: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlit.testing.v1 import AppTest

    from tests.ui.conftest import APP, clear_ui_caches

    monkeypatch.setenv("SENSILLA_UI_RELAY", relay_address)
    monkeypatch.setenv("SENSILLA_UI_TOKEN_FILE", token_file)
    for name in ("SENSILLA_UI_TLS_CA", "SENSILLA_UI_TLS_CERT", "SENSILLA_UI_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    clear_ui_caches()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.session_state["fl_page_size"] = 500
    at.run()
    at.switch_page("views/flows.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [df.value for df in at.dataframe if "tcp_flags" in df.value.columns]
    assert tables, "the flows page shows its table"
    clear_ui_caches()
    return tables[0]


def test_sse_ui_with_a_scoped_token_shows_only_its_namespaces(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard passes its token; the relay enforces: the Flows page of the
    team-x token lists only flows from or to x; the admin's lists others too."""

    def ns(cell: str) -> str:
        return cell.split("/", 1)[0] if "/" in cell else ""

    admin = _ui_flows(setup.relay.address, str(setup.tokens.files["admin"]), monkeypatch)
    scoped = _ui_flows(setup.relay.address, str(setup.tokens.files["team-x"]), monkeypatch)
    assert len(scoped) > 0
    assert all(
        ns(s) == "x" or ns(d) == "x"
        for s, d in zip(scoped["source"], scoped["destination"], strict=True)
    )
    assert any(
        ns(s) != "x" and ns(d) != "x"
        for s, d in zip(admin["source"], admin["destination"], strict=True)
    ), "the admin token's page shows flows the scoped one must not"


# --- exporters ------------------------------------------------------------------------------


def test_sse_exporter_with_a_namespace_scope_writes_only_those_flows(
    chdb_dir: Path, tmp_path: Path
) -> None:
    """An exporter whose config carries ``namespaces: [x]`` writes exactly the flows
    from or to x (the same rule as a scoped token)."""
    import asyncio
    import json
    from concurrent.futures import ThreadPoolExecutor

    from relay.siem.config import ConfigError, parse_config
    from relay.siem.exporter import ExporterManager
    from relay.store import open_store

    with pytest.raises(ConfigError, match=r"namespaces: a non-empty list"):
        parse_config({"exporters": [{"name": "e", "type": "stdout", "namespaces": []}]})
    flows = list(FlowGen(13, start_ns=time.time_ns() - 600 * 10**9, step_ns=10**8).flows(3000))
    url = chdb_url(chdb_dir, "sse_export")
    load_store(url, batches(flows))
    out = tmp_path / "x.log"
    config = parse_config({
        "state_dir": str(tmp_path / "state"),
        "exporters": [{"name": "team-x", "type": "file", "namespaces": ["x"],
                       "file": {"path": str(out), "fsync": False}}],
    })  # fmt: skip
    want = {f.uuid for f in flows if in_scope(f, {"x"})}

    def lines() -> list[dict[str, Any]]:
        if not out.exists():
            return []
        return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]

    async def run() -> list[dict[str, Any]]:
        store = open_store(url)
        pool = ThreadPoolExecutor(2)
        manager = ExporterManager(store, pool, config)
        manager.start()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(lines()) < len(want):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # nothing more should come
            return lines()
        finally:
            await manager.stop()
            pool.shutdown()
            store.close()

    got = asyncio.run(run())
    assert {r["flow"]["uuid"] for r in got} == want and len(got) == len(want)
    assert len(want) < len(flows)
