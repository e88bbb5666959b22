"""The observing half on the lab: known traffic appears as the right Hubble flows at
the collectors' Observer API; losses are reported; metrics match."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from collector.identity import identities_for
from collector.policy.cluster import ClusterState
from sensilla.lab import Options
from sensilla.lab.probe import probe, select_pairs
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc
from tests import hubble_client as hc
from tests.helpers import cli, scrape

pytestmark = pytest.mark.needs_root

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: obs-deny, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: obs-allow-web, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
    ports: [{port: 80, protocol: TCP}]
"""


def lab_cli(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("lab", "--name", lab.name, *args)


def collector_of(lab: Any, pod_key: str) -> dict[str, Any]:
    status = lab.status()
    node = next(p["node"] for p in status["pods"] if f"{p['namespace']}/{p['name']}" == pod_key)
    return next(c for c in status["collectors"] if c["node"] == node)


def observe_json(address: str, *flags: str) -> list[dict[str, Any]]:
    # the lab's collectors serve plaintext on their management links (--insecure)
    out = cli("observe", "--server", address, "--insecure", "-o", "json", *flags)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def traffic(full_lab: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    lab = full_lab
    policy = tmp_path_factory.mktemp("obs") / "policy.yaml"
    policy.write_text(POLICY)
    applied = cli("policy", "apply", "--lab", lab.name, "-f", str(policy))
    assert applied.returncode == 0, applied.stderr
    layout = lab.layout()
    try:
        allowed = probe(layout, select_pairs(layout, ["x/a"], ["y/b"]), 80, "TCP")
        denied = probe(layout, select_pairs(layout, ["x/a"], ["y/c"]), 80, "TCP", timeout=0.8)
        udp = probe(layout, select_pairs(layout, ["x/b"], ["z/a"]), 81, "UDP")
        ping = subprocess.run(
            [
                "nsenter",
                f"--net=/var/run/netns/{layout.pod('x/a').netns}",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                layout.pod("z/b").ipv4,
            ],
            capture_output=True,
            text=True,
        )
        assert [r.connected for r in allowed + denied + udp] == [True, False, True]
        assert ping.returncode == 0, ping.stdout + ping.stderr
        time.sleep(0.5)  # the drain timer delivers within 100 ms
        snap = lab.state.snapshot()
        objs = snap.objects
        state = ClusterState.from_objects(
            objs["nodes"].values(),
            objs["namespaces"].values(),
            objs["pods"].values(),
            [],
        )
        yield {"layout": layout, "identities": identities_for(state).by_pod}
    finally:
        cli("policy", "delete", "--lab", lab.name, "y/obs-deny", "y/obs-allow-web")


def _flows(lab: Any, pod: str, *flags: str) -> list[dict[str, Any]]:
    return [
        r["flow"]
        for r in observe_json(collector_of(lab, pod)["address"], "--last", "100", *flags)
        if "flow" in r
    ]


def test_allowed_tcp_connection(full_lab: Any, traffic: dict[str, Any]) -> None:
    ids = traffic["identities"]
    flows = _flows(full_lab, "x/a", "--from-pod", "x/a", "--to-pod", "y/b", "--port", "80")
    egress = [f for f in flows if f["trace_observation_point"] == "FROM_ENDPOINT"]
    syn = next(f for f in egress if f["l4"]["TCP"].get("flags", {}).get("SYN"))
    assert syn["verdict"] == "FORWARDED" and syn["traffic_direction"] == "EGRESS"
    assert syn["source"]["namespace"] == "x" and syn["source"]["pod_name"] == "a"
    assert syn["destination"]["namespace"] == "y" and syn["destination"]["pod_name"] == "b"
    assert syn["source"]["identity"] == ids["x/a"]
    assert syn["destination"]["identity"] == ids["y/b"]
    assert "k8s:pod=a" in syn["source"]["labels"]
    assert syn["l4"]["TCP"]["destination_port"] == 80
    assert syn["IP"]["source"] == traffic["layout"].pod("x/a").ipv4
    # at the destination, the ingress side names the allowing policy
    dest = _flows(full_lab, "y/b", "--from-pod", "x/a", "--to-pod", "y/b", "--port", "80")
    ingress = [f for f in dest if f["trace_observation_point"] == "TO_ENDPOINT"]
    assert ingress and all(f["traffic_direction"] == "INGRESS" for f in ingress)
    assert any(
        {"name": "obs-allow-web", "namespace": "y", "kind": "NetworkPolicy"}.items() <= p.items()
        for f in ingress
        for p in f.get("ingress_allowed_by", [])
    )
    flags = set()
    for f in ingress:
        flags |= set(f["l4"]["TCP"].get("flags", {}))
    assert {"SYN", "ACK", "FIN"} <= flags


def test_denied_tcp_connection(full_lab: Any, traffic: dict[str, Any]) -> None:
    flows = _flows(full_lab, "y/c", "--to-pod", "y/c", "--verdict", "DROPPED")
    assert flows, "no drop seen at y/c"
    f = flows[0]
    assert f["drop_reason_desc"] == "POLICY_DENIED" and f["verdict"] == "DROPPED"
    assert f["source"]["pod_name"] == "a" and f["destination"]["pod_name"] == "c"
    assert f["l4"]["TCP"]["flags"]["SYN"] and f["traffic_direction"] == "INGRESS"
    assert f["event_type"]["type"] == 1 and f["event_type"]["sub_type"] == 133
    assert {p["name"] for p in f["ingress_denied_by"]} == {"obs-deny"}
    assert f["extensions"]["drop_detail"] == "default-deny"
    assert f["destination"]["identity"] == traffic["identities"]["y/c"]


def test_udp_exchange_and_icmp_echo(full_lab: Any, traffic: dict[str, Any]) -> None:
    udp = _flows(full_lab, "x/b", "--from-pod", "x/b", "--to-pod", "z/a", "--protocol", "udp")
    assert udp and udp[0]["l4"]["UDP"]["destination_port"] == 81
    assert udp[0]["verdict"] == "FORWARDED"
    icmp = _flows(full_lab, "x/a", "--from-pod", "x/a", "--protocol", "icmp")
    assert any(f["l4"].get("ICMPv4", {}).get("type") == 8 for f in icmp), icmp
    assert all(f["destination"]["pod_name"] == "b" for f in icmp)


def test_cross_node_connection_resolves_remote_pod(full_lab: Any, traffic: dict[str, Any]) -> None:
    layout = traffic["layout"]
    src, dst = layout.pod("x/b"), layout.pod("z/a")
    assert src.node.name != dst.node.name
    flows = _flows(full_lab, "z/a", "--to-pod", "z/a", "--from-pod", "x/b")
    assert flows and flows[0]["source"]["pod_name"] == "b"
    assert flows[0]["source"]["namespace"] == "x"
    assert flows[0]["source"]["identity"] == traffic["identities"]["x/b"]
    assert "ID" not in flows[0]["source"]  # endpoint ids are node-local
    assert flows[0]["destination"]["ID"] > 0
    assert flows[0]["node_name"] == dst.node.name


def test_hubble_field_number_client_against_a_collector(
    full_lab: Any, traffic: dict[str, Any]
) -> None:
    client = hc.HubbleClient(collector_of(full_lab, "y/c")["address"])
    try:
        flows = client.get_flows(hc.encode_get_flows(number=50))
        assert flows and all("flow" in r or "lost_events" in r for r in flows)
        drops = client.get_flows(
            hc.encode_get_flows(number=50, whitelist=[hc.encode_flow_filter(verdict=[2])])
        )
        assert drops and all(r["flow"]["verdict"] == 2 for r in drops if "flow" in r)
        assert {n["namespace"] for n in client.get_namespaces()["namespaces"]} >= {"x", "y", "z"}
        status = client.server_status()
        assert status["max_flows"] == 4095 and status["seen_flows"] >= len(flows)
    finally:
        client.close()


def test_metrics_match_a_known_workload(full_lab: Any, traffic: dict[str, Any]) -> None:
    collector = collector_of(full_lab, "y/c")
    key = 'sensilla_drop_total{protocol="TCP",reason="POLICY_DENIED"}'
    before = scrape(collector["metrics"]).get(key, 0.0)
    seen_before = _flows(
        full_lab, "y/c", "--to-pod", "y/c", "--verdict", "DROPPED", "--protocol", "tcp"
    )
    layout = traffic["layout"]
    for _ in range(3):
        probe(layout, select_pairs(layout, ["z/b"], ["y/c"]), 80, "TCP", timeout=0.3)
    time.sleep(0.5)
    after = scrape(collector["metrics"]).get(key, 0.0)
    seen_after = _flows(
        full_lab, "y/c", "--to-pod", "y/c", "--verdict", "DROPPED", "--protocol", "tcp"
    )
    assert after - before == len(seen_after) - len(seen_before) > 0
    m = scrape(collector["metrics"])
    processed = sum(v for k, v in m.items() if k.startswith("sensilla_flows_processed_total"))
    assert processed == m["sensilla_datapath_events_read"]


def test_perf_overflow_is_reported_as_lost_events(lab_factory: Any) -> None:
    lab = lab_factory(
        "to",
        options=Options(
            relay=False, collectors=True, collector_args=["--monitor-aggregation", "none"]
        ),
    )
    layout = lab.layout()
    server, client = layout.pod("x/a"), layout.pod("x/c")  # same node
    assert server.node.name == client.node.name
    pid = next(p.pid for p in _procs(lab) if p.name == f"collector-{server.node.name}")
    iperf = subprocess.Popen(
        ["nsenter", f"--net=/var/run/netns/{server.netns}", "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    collector = next(c for c in lab.status()["collectors"] if c["node"] == server.node.name)
    channel = grpc.insecure_channel(collector["address"])
    stub = observer_pb2_grpc.ObserverStub(channel)
    # follow only drops: flows are filtered out, loss notices always pass
    stream = stub.GetFlows(
        observer_pb2.GetFlowsRequest(
            follow=True, whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
        ),
        timeout=30,
    )
    lost = 0
    try:
        time.sleep(0.3)
        os.kill(pid, signal.SIGSTOP)
        try:
            subprocess.run(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{client.netns}",
                    "iperf3",
                    "-c",
                    server.ipv4,
                    "-p",
                    "5201",
                    "-t",
                    "1",
                ],
                capture_output=True,
                timeout=30,
                check=True,
            )
        finally:
            os.kill(pid, signal.SIGCONT)
        for resp in stream:
            if (
                resp.HasField("lost_events")
                and resp.lost_events.source == flow_pb2.PERF_EVENT_RING_BUFFER
            ):
                lost += resp.lost_events.num_events_lost
                break
    finally:
        stream.cancel()
        channel.close()
        iperf.kill()
        iperf.wait()
    time.sleep(0.5)
    assert lost > 0, "no perf loss reported"
    metrics = scrape(collector["metrics"])
    # every reported loss is counted; later reports may add to the metric
    assert metrics['sensilla_lost_events_total{source="perf_event_ring_buffer"}'] >= lost
    assert os.path.exists(f"/proc/{pid}")  # still running
    print(f"perf overflow: {lost} events reported lost")


def _procs(lab: Any) -> list[Any]:
    from sensilla.lab import processes

    return processes.list_processes(lab.dir)
