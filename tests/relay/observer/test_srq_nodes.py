"""Acceptance 1: the hand-written Hubble field-number client (tests/hubble_client.py)
decodes GetFlows, GetNodes, GetNamespaces and ServerStatus from the relay, and
ServerStatus counts both lab nodes (two ingest clients holding their streams, with a
source listing the lab's two nodes); node state follows the ingest streams. Also
gRPC health, `sensilla status` and `sensilla nodes`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from relay.ingest.synthetic import FlowFactory
from sensilla.cli.main import main as cli
from sensilla.filters import compile_request_filters
from sensilla.protos import extensions_pb2, flow_pb2, ingest_pb2
from tests.hubble_client import HubbleClient, encode_flow_filter, encode_get_flows
from tests.relay.observer.support import (
    HeldCollector,
    RelayThread,
    chdb_url,
    make_state_dir,
    running_relay,
)

NODES = ("srqfake-worker", "srqfake-worker2")
PER_NODE = 600


@pytest.fixture
def relay(chdb_dir: Path, tmp_path: Path) -> Iterator[RelayThread]:
    make_state_dir(tmp_path / "state")
    with running_relay(chdb_url(chdb_dir, "srq_nodes"), source=f"lab:{tmp_path / 'state'}") as r:
        yield r


def _position(d: dict[str, Any]) -> tuple[str, int, int]:
    ext = extensions_pb2.FlowExtension()
    any_pb2.Any.FromString(d["extensions"]).Unpack(ext)
    p = ext.position
    return (p.collector_id, p.boot_id, p.sequence)


def _value(d: dict[str, Any], name: str) -> int | None:
    """A google.protobuf.UInt32Value field: None when absent, 0 when empty."""
    if name not in d:
        return None
    return int(d[name].get("value", 0))


def test_srq_hubble_client_decodes_everything_and_counts_nodes(
    relay: RelayThread, capsys: pytest.CaptureFixture[str]
) -> None:
    hc = HubbleClient(relay.address)
    collectors: list[HeldCollector] = []
    try:
        st = hc.server_status()
        assert _value(st, "num_connected_nodes") == 0
        assert _value(st, "num_unavailable_nodes") == 2
        assert sorted(st["unavailable_nodes"]) == list(NODES)

        flows: list[flow_pb2.Flow] = []
        for i, node in enumerate(NODES):
            c = HeldCollector(
                relay.address, node, 10**18 + i, observer_address=f"10.254.0.{i}:4244"
            )
            collectors.append(c)
            c.wait_hello_ack()
            ff = FlowFactory(node, c.boot_id, node_name=node, seed=i)
            now = time.time_ns() - 10**9
            batch = [ff.make(s, now + s * 1000 + i) for s in range(1, PER_NODE + 1)]
            flows += batch
            c.push(ingest_pb2.Batch(boot_id=c.boot_id, sequence=1, flows=batch))

        st = hc.server_status()
        assert _value(st, "num_connected_nodes") == 2
        assert _value(st, "num_unavailable_nodes") == 0
        assert st["num_flows"] == 2 * PER_NODE and st["seen_flows"] == 2 * PER_NODE
        assert st["version"].startswith("sensilla-relay") and st["uptime_ns"] > 0
        assert st["flows_rate"] > 0

        nodes = hc.get_nodes()["nodes"]
        assert [n["name"] for n in nodes] == list(NODES)
        for i, n in enumerate(nodes):
            assert n["state"] == 1  # NODE_CONNECTED
            assert n["address"] == f"10.254.0.{i}:4244"
            assert n["num_flows"] == PER_NODE and n["seen_flows"] == PER_NODE
            assert n["version"] == "srq-held" and n["uptime_ns"] > 0

        names = [ns["namespace"] for ns in hc.get_namespaces()["namespaces"]]
        assert {"x", "y", "z"} <= set(names)

        everything = sorted(flows, key=lambda f: (f.time.ToNanoseconds(), *_pos(f)))
        got = [r for r in hc.get_flows(encode_get_flows()) if "flow" in r]
        assert [_position(r["flow"]) for r in got] == [_pos(f) for f in everything]
        first = got[0]
        assert first["node_name"] == first["flow"]["node_name"] in NODES
        assert first["flow"]["IP"]["source"] and first["flow"]["source"]["namespace"]
        # filters encoded by field number select what the predicate selects
        wl = [encode_flow_filter(source_pod=["x/"], verdict=[1])]
        bl = [encode_flow_filter(destination_port=["81"])]
        got = [r for r in hc.get_flows(encode_get_flows(whitelist=wl, blacklist=bl)) if "flow" in r]
        pred = compile_request_filters(
            [flow_pb2.FlowFilter(source_pod=["x/"], verdict=[flow_pb2.FORWARDED])],
            [flow_pb2.FlowFilter(destination_port=["81"])],
        )
        want = [_pos(f) for f in everything if pred.matches(f)]
        assert 0 < len(want) < len(flows)
        assert [_position(r["flow"]) for r in got] == want
        got = [r for r in hc.get_flows(encode_get_flows(number=5)) if "flow" in r]
        assert [_position(r["flow"]) for r in got] == [_pos(f) for f in everything[-5:]]
        got = [r for r in hc.get_flows(encode_get_flows(number=5, first=True)) if "flow" in r]
        assert [_position(r["flow"]) for r in got] == [_pos(f) for f in everything[:5]]

        # health of every service
        with grpc.insecure_channel(relay.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            for svc in ("", "observer.Observer", "sensilla.query.v1.Query"):
                r = health.Check(health_pb2.HealthCheckRequest(service=svc), timeout=5)
                assert r.status == health_pb2.HealthCheckResponse.SERVING, svc

        # the CLI
        capsys.readouterr()
        assert cli(["status", "--server", relay.address]) == 0
        out = capsys.readouterr().out
        assert f"Healthcheck (via {relay.address}): Ok" in out
        assert "Connected Nodes: 2/2" in out and "Current Flows: 1,200" in out
        assert cli(["nodes", "--server", relay.address, "-o", "json"]) == 0
        rows = json.loads(capsys.readouterr().out)["nodes"]
        assert [(r["name"], r["state"], r["flows_stored"]) for r in rows] == [
            (n, "Connected", PER_NODE) for n in NODES
        ]
        assert all(r["last_seen_ago_s"] is not None and r["in_source"] for r in rows)

        # a collector goes away: its node is unavailable, and streams say so first
        collectors.pop().close()
        deadline = time.monotonic() + 10
        while _value(hc.server_status(), "num_connected_nodes") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        st = hc.server_status()
        assert _value(st, "num_unavailable_nodes") == 1 and st["unavailable_nodes"] == [NODES[1]]
        states = {n["name"]: n["state"] for n in hc.get_nodes()["nodes"]}
        assert states == {NODES[0]: 1, NODES[1]: 2}
        head = hc.get_flows(encode_get_flows(number=1))[0]
        assert head["node_status"]["state_change"] == 2  # NODE_UNAVAILABLE
        assert head["node_status"]["node_names"] == [NODES[1]]
        assert cli(["nodes", "--server", relay.address]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:3] == ["NAME", "STATUS", "AGE"]
        assert table[2].split()[:2] == [NODES[1], "Unavailable"]
    finally:
        for c in collectors:
            c.close()
        hc.close()


def _pos(f: flow_pb2.Flow) -> tuple[str, int, int]:
    ext = extensions_pb2.FlowExtension()
    f.extensions.Unpack(ext)
    return (ext.position.collector_id, ext.position.boot_id, ext.position.sequence)


def test_srq_status_cli_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.relay.clickhouse_server import free_port

    for cmd in ("status", "nodes"):
        assert cli([cmd, "--server", f"127.0.0.1:{free_port()}", "--timeout", "0.3"]) == 1
        assert "cannot reach" in capsys.readouterr().err


def test_srq_store_down_is_unavailable(relay: RelayThread) -> None:
    """Reads that need the store answer UNAVAILABLE (with the reason) when it fails."""
    from relay.store import StoreUnavailable
    from sensilla.protos import observer_pb2, observer_pb2_grpc, query_pb2, query_pb2_grpc

    backend = relay.api.store.backend

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("srq: the server went away")

    original = backend.query
    backend.query = down
    relay.api._cache.clear()
    try:
        with grpc.insecure_channel(relay.address) as ch:
            obs, q = observer_pb2_grpc.ObserverStub(ch), query_pb2_grpc.QueryStub(ch)
            calls = [
                lambda: obs.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10),
                lambda: obs.GetNodes(observer_pb2.GetNodesRequest(), timeout=10),
                lambda: obs.GetNamespaces(observer_pb2.GetNamespacesRequest(), timeout=10),
                lambda: list(obs.GetFlows(observer_pb2.GetFlowsRequest(number=3), timeout=10)),
                lambda: q.ServiceMap(query_pb2.ServiceMapRequest(), timeout=10),
                lambda: q.SearchFlows(query_pb2.SearchFlowsRequest(), timeout=10),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "went away" in (err.value.details() or "")
    finally:
        backend.query = original
