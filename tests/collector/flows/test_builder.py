"""Datapath events -> Hubble flows, on synthetic events."""

from __future__ import annotations

import ipaddress
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.compiler.compile import AttributionRegistry, RuleRef
from collector.flows.builder import BuildContext, Sequencer, build_flows, event_array
from collector.flows.directory import build_directory
from collector.identity import identities_for
from collector.policy.cluster import ClusterState, Namespace, Node, Pod
from datapath import layout as L
from sensilla.filters import flow_extension
from sensilla.protos import flow_pb2

pytestmark = pytest.mark.unit

A = ipaddress.ip_address


def cluster() -> ClusterState:
    return ClusterState.build(
        nodes=[Node("n1", (A("10.244.1.1"), A("172.18.0.2"))), Node("n2", (A("172.18.0.3"),))],
        namespaces=[Namespace("x", {"ns": "x"}), Namespace("y", {"ns": "y"})],
        pods=[
            Pod("x", "a", {"pod": "a"}, "n1", (A("10.244.1.10"), A("fd00:10:244:1::a"))),
            Pod("y", "b", {"pod": "b"}, "n2", (A("10.244.2.10"), A("fd00:10:244:2::a"))),
        ],
    )


def ctx() -> tuple[BuildContext, AttributionRegistry, dict[str, int]]:
    state = cluster()
    ids = identities_for(state)
    reg = AttributionRegistry()
    directory = build_directory("n1", state, ids, {"x/a": 42})
    return BuildContext("n1", directory, reg, {7: "lxc123"}), reg, dict(ids.by_pod)


def event(**kw: object) -> np.ndarray:
    ev = np.zeros(1, dtype=L.EVENT_DTYPE)
    for k, v in kw.items():
        if k in ("saddr", "daddr"):
            raw = A(str(v)).packed
            ev[k] = np.frombuffer(raw + bytes(16 - len(raw)), dtype=np.uint8)
        else:
            ev[k] = v
    return ev


def test_allowed_tcp_connection_start() -> None:
    c, reg, ids = ctx()
    att = reg.allow("Egress", [RuleRef("x/allow-b", "Egress", 0)])
    ev = event(
        ts_ns=time.monotonic_ns(),
        family=4,
        proto=6,
        saddr="10.244.1.10",
        daddr="10.244.2.10",
        sport=40000,
        dport=80,
        direction=L.DIR_EGRESS,
        verdict=L.VERDICT_FORWARDED,
        tcp_flags=0x02,
        reason=L.EV_START,
        ifindex=7,
        endpoint_id=42,
        src_identity=ids["x/a"],
        dst_identity=ids["y/b"],
        attribution=att,
        packets=1,
        bytes=60,
        ct_state=L.CT_STATE_NEW,
    )
    [f] = build_flows(ev, c, Sequencer("n1", 99))
    assert f.verdict == flow_pb2.FORWARDED and f.Type == flow_pb2.L3_L4
    assert (f.IP.source, f.IP.destination, f.IP.ipVersion) == (
        "10.244.1.10",
        "10.244.2.10",
        flow_pb2.IPv4,
    )
    assert (f.l4.TCP.source_port, f.l4.TCP.destination_port, f.l4.TCP.flags.SYN) == (
        40000,
        80,
        True,
    )
    assert (f.source.namespace, f.source.pod_name, f.source.ID) == ("x", "a", 42)
    assert "k8s:pod=a" in f.source.labels
    assert (f.destination.namespace, f.destination.pod_name, f.destination.ID) == ("y", "b", 0)
    assert f.source.identity == ids["x/a"] and f.destination.identity == ids["y/b"]
    assert f.traffic_direction == flow_pb2.EGRESS and not f.is_reply.value
    assert f.trace_observation_point == flow_pb2.FROM_ENDPOINT
    assert [(p.namespace, p.name) for p in f.egress_allowed_by] == [("x", "allow-b")]
    assert f.interface.name == "lxc123" and f.Summary == "TCP Flags: SYN"
    ext = flow_extension(f)
    assert ext is not None
    assert (ext.position.collector_id, ext.position.boot_id, ext.position.sequence) == ("n1", 99, 1)
    assert (ext.packets, ext.bytes) == (1, 60)
    assert abs(f.time.ToNanoseconds() - time.time_ns()) < 5e9


def test_policy_drop_at_ingress_with_default_deny() -> None:
    c, reg, _ids = ctx()
    att = reg.deny("Ingress", ["x/deny-all"])
    ev = event(
        family=6,
        proto=17,
        saddr="fd00:10:244:2::a",
        daddr="fd00:10:244:1::a",
        sport=5353,
        dport=81,
        direction=L.DIR_INGRESS,
        verdict=L.VERDICT_DROPPED,
        drop_reason=133,
        reason=L.EV_DROP,
        attribution=att,
        suppressed=3,
    )
    [f] = build_flows(ev, c, Sequencer("n1", 1))
    assert f.verdict == flow_pb2.DROPPED and f.drop_reason_desc == flow_pb2.POLICY_DENIED
    assert f.drop_reason == 133
    assert f.event_type.type == 1 and f.event_type.sub_type == 133
    assert f.traffic_direction == flow_pb2.INGRESS
    assert f.trace_observation_point == flow_pb2.TO_ENDPOINT
    assert (f.source.pod_name, f.destination.pod_name) == ("b", "a")
    assert f.IP.ipVersion == flow_pb2.IPv6 and f.l4.UDP.destination_port == 81
    assert [p.name for p in f.ingress_denied_by] == ["deny-all"]
    ext = flow_extension(f)
    assert ext is not None and ext.suppressed_drops == 3 and ext.drop_detail == "default-deny"


def test_reserved_and_unknown_addresses() -> None:
    c, _, _ = ctx()
    evs = np.concatenate(
        [
            event(
                family=4,
                proto=1,
                saddr="10.244.1.1",
                daddr="10.244.1.10",
                icmp_type=8,
                direction=L.DIR_INGRESS,
                verdict=1,
                src_identity=1,
            ),
            event(
                family=4,
                proto=6,
                saddr="10.244.1.10",
                daddr="8.8.8.8",
                direction=L.DIR_EGRESS,
                verdict=1,
                dst_identity=2,
            ),
            event(
                family=4,
                proto=6,
                saddr="172.18.0.3",
                daddr="10.244.1.10",
                direction=L.DIR_INGRESS,
                verdict=1,
                src_identity=6,
            ),
        ]
    )
    f1, f2, f3 = build_flows(evs, c, Sequencer("n1", 1))
    assert f1.source.labels == ["reserved:host"] and f1.source.identity == 1
    assert f1.l4.ICMPv4.type == 8 and f1.Summary == "ICMPv4 EchoRequest"
    assert f2.destination.labels == ["reserved:world"] and f2.destination.identity == 2
    assert f3.source.labels == ["reserved:remote-node"]
    seqs = [flow_extension(f).position.sequence for f in (f1, f2, f3)]  # type: ignore[union-attr]
    assert seqs == [1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=L.EVENT_DTYPE.itemsize, max_size=L.EVENT_DTYPE.itemsize * 4))
def test_arbitrary_event_bytes_never_crash(raw: bytes) -> None:
    c, _, _ = ctx()
    usable = len(raw) - len(raw) % L.EVENT_DTYPE.itemsize
    flows = build_flows(event_array([raw[:usable]]), c, Sequencer("n1", 1))
    for f in flows:
        f.SerializeToString()


def test_workloads_from_the_controller() -> None:
    from collector.flows.directory import workloads
    from collector.policy.cluster import pod_from_object
    from sensilla.lab.runtime import owner_references

    obj = {
        "metadata": {
            "name": "frontend-7c9d-abcde",
            "namespace": "shop",
            "ownerReferences": owner_references(("Deployment", "frontend")),
        },
        "spec": {},
        "status": {},
    }
    [w] = workloads(pod_from_object(obj))
    assert (w.kind, w.name) == ("Deployment", "frontend")
    obj["metadata"]["ownerReferences"] = owner_references(("StatefulSet", "db"))
    [w] = workloads(pod_from_object(obj))
    assert (w.kind, w.name) == ("StatefulSet", "db")
    obj["metadata"]["ownerReferences"] = []
    assert workloads(pod_from_object(obj)) == []


def test_services_by_frontend_then_backend() -> None:
    """x/a connects to the Service y/web (ClusterIP 10.96.0.10:80, backend y/b:8080):
    the egress flow names it as destination_service by its frontend, the ingress flow
    at y/b's veth (after kube-proxy's DNAT) by its backend, and the reply names it as
    source_service; other ports and addresses name no Service."""
    from collector.policy.cluster import ServiceBackend, ServiceFrontend

    base = cluster()
    state = ClusterState.build(
        nodes=base.nodes.values(),
        namespaces=base.namespaces.values(),
        pods=base.pods.values(),
        frontends=[
            ServiceFrontend(
                "y/web",
                A("10.96.0.10"),
                80,
                "TCP",
                (ServiceBackend(A("10.244.2.10"), 8080, "TCP"),),
            )
        ],
    )
    directory = build_directory("n1", state, identities_for(state), {"x/a": 42})
    c = BuildContext("n1", directory, AttributionRegistry(), {})

    def flow(saddr: str, sport: int, daddr: str, dport: int, proto: int = 6) -> flow_pb2.Flow:
        ev = event(family=4, proto=proto, saddr=saddr, daddr=daddr, sport=sport, dport=dport)
        [f] = build_flows(ev, c, Sequencer("n1", 1))
        return f

    def names(f: flow_pb2.Flow) -> tuple[str, str]:
        return (
            f"{f.source_service.namespace}/{f.source_service.name}".strip("/"),
            f"{f.destination_service.namespace}/{f.destination_service.name}".strip("/"),
        )

    assert names(flow("10.244.1.10", 40000, "10.96.0.10", 80)) == ("", "y/web")
    assert names(flow("10.96.0.10", 80, "10.244.1.10", 40000)) == ("y/web", "")
    assert names(flow("10.244.1.10", 40000, "10.244.2.10", 8080)) == ("", "y/web")
    assert names(flow("10.244.1.10", 40000, "10.96.0.10", 81)) == ("", "")
    assert names(flow("10.244.1.10", 40000, "10.244.2.10", 80)) == ("", "")
    assert names(flow("10.244.1.10", 0, "10.96.0.10", 0, proto=1)) == ("", "")
