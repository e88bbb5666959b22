"""DropSummary's new drops on a crafted history (a pair forwarded, then dropping in
the last quarter of the window, is new; one dropping all along, or never forwarded,
is not), and schema migration 2 (rollups gain src/dst_unowned_pod) from a store made
by migration 1, on chDB and clickhouse-server 18.16."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from relay.store import aggregates as agg
from relay.store import open_store, schema
from relay.store.store import Store
from sensilla.protos import extensions_pb2, flow_pb2, query_pb2, query_pb2_grpc
from tests.relay.helpers import assert_rollups_exact
from tests.relay.observer.flowgen import PODS, FlowGen, batches, position
from tests.relay.observer.support import chdb_url, load_store, running_relay


def ts(seconds: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def crafted(t0: int) -> list[flow_pb2.Flow]:
    """Over [t0, t0 + 4000): x/a->y/b:80 forwarded until t0+3200, then dropped;
    x/b->y/c:80 dropped all along; z/a->x/c:81 only dropped, from t0+3300."""
    template = next(iter(FlowGen(5, start_ns=t0 * 10**9).flows(1)))
    pods = {f"{p.namespace}/{p.pod}": p for p in PODS}
    out = []
    seq = 0

    def add(t: float, src: str, dst: str, port: int, verdict: int) -> None:
        nonlocal seq
        seq += 1
        f = flow_pb2.Flow()
        f.CopyFrom(template)
        f.time.FromNanoseconds(int(t * 1e9))
        f.uuid = f"srq-{seq}"
        s, d = pods[src], pods[dst]
        for ep, p in ((f.source, s), (f.destination, d)):
            ep.Clear()
            ep.namespace, ep.pod_name, ep.identity = p.namespace, p.pod, p.identity
            ep.labels.extend(p.labels)
        f.l4.Clear()
        f.l4.TCP.source_port, f.l4.TCP.destination_port = 40000, port
        f.l4.TCP.flags.SYN = True
        f.is_reply.value = False
        f.verdict = verdict  # type: ignore[assignment]
        f.ClearField("ingress_denied_by")
        f.ClearField("drop_reason_desc")
        if verdict == flow_pb2.DROPPED:
            f.drop_reason_desc = flow_pb2.POLICY_DENIED
            f.ingress_denied_by.add(namespace=d.namespace, name="deny-all")
        ext = extensions_pb2.FlowExtension()
        f.extensions.Unpack(ext)
        ext.position.sequence = seq
        ext.drop_detail = "default-deny" if verdict == flow_pb2.DROPPED else ""
        f.extensions.Pack(ext)
        out.append(f)

    for k in range(40):
        t = t0 + k * 100
        add(t + 1, "x/a", "y/b", 80, flow_pb2.FORWARDED if t < t0 + 3200 else flow_pb2.DROPPED)
        add(t + 2, "x/b", "y/c", 80, flow_pb2.DROPPED)
        if t >= t0 + 3300:
            add(t + 3, "z/a", "x/c", 81, flow_pb2.DROPPED)
    return out


def test_srq_new_drops(chdb_dir: Path) -> None:
    t0 = (int(time.time()) - 5000) // 60 * 60
    flows = crafted(t0)
    url = chdb_url(chdb_dir, "srq_newdrops")
    load_store(url, batches(flows, 50))
    with running_relay(url) as relay, grpc.insecure_channel(relay.address) as ch:
        q = query_pb2_grpc.QueryStub(ch)
        resp = q.DropSummary(
            query_pb2.DropSummaryRequest(
                window=query_pb2.TimeWindow(since=ts(t0), until=ts(t0 + 4000))
            ),
            timeout=30,
        )
        new = [(p.source.id, p.destination.id, p.port) for p in resp.new_drops]
        assert new == [("x/a", "y/b", 80)]
        p = resp.new_drops[0]
        assert p.first_seen.ToNanoseconds() == int((t0 + 3201) * 1e9)
        assert p.drops == 8 and p.default_deny and list(p.policies) == ["y/deny-all"]
        top = {(t.source.id, t.destination.id): t.drops for t in resp.top_pairs}
        assert top == {("x/b", "y/c"): 40, ("x/a", "y/b"): 8, ("z/a", "x/c"): 7}
        # over a window where the change is old news, nothing is new
        resp = q.DropSummary(
            query_pb2.DropSummaryRequest(
                window=query_pb2.TimeWindow(since=ts(t0 + 3000), until=ts(t0 + 4000))
            ),
            timeout=30,
        )
        assert list(resp.new_drops) == []


@pytest.mark.parametrize("kind", ["chdb", "ch18"])
def test_srq_migration_2_from_a_version_1_store(
    kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.relay.conftest import store_url

    url = store_url(kind, request)
    flows = list(FlowGen(9, start_ns=(int(time.time()) - 3000) * 10**9, step_ns=10**8).flows(3000))
    parts = batches(flows, 500)
    half = len(parts) // 2
    with monkeypatch.context() as m:  # a relay of the first schema
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        m.setattr(schema, "SCHEMA_VERSION", 1)
        m.setattr(schema, "ROLLUP_DIMS", schema._ROLLUP_DIMS_V1)
        old = open_store(url)
        try:
            assert old.schema_version() == 1
            old.write_batches(parts[:half])
            assert not old._has_column("flows_minute", "src_unowned_pod")
        finally:
            old.close()
    st: Store = open_store(url)  # migrates to 2
    try:
        assert st.schema_version() == 2
        assert st._has_column("flows_minute", "dst_unowned_pod")
        assert st._has_column("flows_hour", "src_unowned_pod")
        st.migrate()  # again: nothing changes, nothing fails
        st.write_batches(parts[half:])
        # new rows carry owner-less pods by name; old rows have "" there
        w = agg.Window(int(time.time()) - 4000, int(time.time()) + 60)
        edges, _ = agg.service_map(st, w)
        ids = {e.source["id"] for e in edges}
        assert "x/a" in ids or "y/a" in ids
        # reconciling every collector's range makes old rows exact too
        for c in {position(f)[0] for f in flows}:
            st.reconcile_rollups(c, [(w.since, w.until)])
        assert_rollups_exact(st)
        for dims in (["src_unowned_pod", "dst_unowned_pod"], ["bucket", "dst_unowned_pod"]):
            assert st.rollup("minute", 0, 2**32 - 1, dims) == st.aggregate_raw(
                "minute", 0, 2**32 - 1, dims
            )
    finally:
        st.close()
