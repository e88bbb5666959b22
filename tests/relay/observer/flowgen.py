"""Realistic synthetic flows for the relay's read-API tests (prefix srq): two nodes,
namespaces with owned and owner-less pods, reserved endpoints (world, host,
remote-node), IPv4 and IPv6, TCP conversations with flag sequences and replies, UDP,
SCTP, ICMP, drops with Cilium's reasons and denying policies (default deny), audit,
services, interfaces, event types; every flow with its Position. Deterministic per
seed, so a test can regenerate the same flows instead of holding them."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from relay.store import IngestBatch
from relay.store.rows import set_flow_extension
from sensilla.protos import extensions_pb2, flow_pb2

NODES = ("srq-worker", "srq-worker2")


@dataclass(frozen=True)
class Peer:
    namespace: str
    pod: str
    ip4: str
    ip6: str
    identity: int
    labels: tuple[str, ...]
    workload: tuple[str, str] | None = None  # (name, kind)
    node: str = NODES[0]
    reserved: str = ""  # world, host, remote-node


def _pods() -> list[Peer]:
    out = []
    n = 0
    for i, ns in enumerate(("x", "y", "z", "kube-system", "monitoring", "shop", "default")):
        names: list[tuple[str, tuple[str, str] | None]]
        if ns == "kube-system":
            names = [
                ("coredns-6d4b75cb6d-7xk2p", ("coredns", "Deployment")),
                ("coredns-6d4b75cb6d-q9z8w", ("coredns", "Deployment")),
            ]
        elif ns == "monitoring":
            names = [("prometheus-0", ("prometheus", "StatefulSet"))]
        elif ns == "shop":
            names = [(f"web-7f9c{k}", ("web", "Deployment")) for k in range(3)]
            names += [("db-0", ("db", "StatefulSet")), ("cache", None)]
        elif ns == "default":
            names = [("a-1", None), ("api-5d8f", ("api", "Deployment"))]
        else:
            names = [("a", None), ("b", None), ("c", None)]
        for pod, wl in names:
            n += 1
            node = NODES[n % 2]
            app = wl[0] if wl else pod
            labels = (
                f"k8s:app={app}" if wl else f"k8s:pod={pod}",
                f"k8s:io.kubernetes.pod.namespace={ns}",
                f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}",
            )
            out.append(
                Peer(
                    ns,
                    pod,
                    f"10.244.{n % 2 + 1}.{10 + n}",
                    f"fd00:10:244:{n % 2 + 1}::{10 + n:x}",
                    300 + i * 10 + (0 if wl else n),
                    labels,
                    wl,
                    node,
                )
            )
    return out


PODS = _pods()
WORLD = [
    Peer("", "", "203.0.113.7", "2001:db8::7", 2, ("reserved:world",), reserved="world"),
    Peer("", "", "198.51.100.20", "2001:db8::20", 2, ("reserved:world",), reserved="world"),
]
HOSTS = [
    Peer(
        "",
        "",
        "172.18.0.2",
        "fc00:f853:ccd:e793::2",
        1,
        ("reserved:host",),
        reserved="host",
        node=NODES[0],
    ),
    Peer(
        "",
        "",
        "172.18.0.3",
        "fc00:f853:ccd:e793::3",
        6,
        ("reserved:remote-node",),
        reserved="remote-node",
        node=NODES[1],
    ),
]
DENYING = {"y": "allow-from-y", "z": "deny-all", "shop": "db-ingress"}
DROP_REASONS = (133, 133, 133, 134, 135, 139, 181)


def _endpoint(ep: flow_pb2.Endpoint, p: Peer) -> None:
    ep.identity = p.identity
    ep.labels.extend(p.labels)
    if p.namespace:
        ep.namespace = p.namespace
        ep.pod_name = p.pod
        ep.cluster_name = "default"
        if p.workload:
            ep.workloads.add(name=p.workload[0], kind=p.workload[1])


class FlowGen:
    """flows(n) -> n flows in time order, split between two collectors."""

    def __init__(self, seed: int = 7, start_ns: int = 0, step_ns: int = 1_000_000) -> None:
        self.rng = random.Random(seed)
        self.start_ns = start_ns
        self.step_ns = step_ns
        self.boot = {
            NODES[0]: 1_700_000_000_000_000_000 + seed,
            NODES[1]: 1_700_000_000_000_000_100 + seed,
        }
        self.seq = {NODES[0]: 0, NODES[1]: 0}

    def _flow(self, t: int) -> flow_pb2.Flow:
        r = self.rng
        roll = r.random()
        if roll < 0.08:
            src, dst = r.choice(WORLD), r.choice(PODS)
        elif roll < 0.14:
            src, dst = r.choice(HOSTS), r.choice(PODS)
        elif roll < 0.18:
            src, dst = r.choice(PODS), r.choice(WORLD)
        else:
            src, dst = r.sample(PODS, 2)
        v6 = r.random() < 0.2
        f = flow_pb2.Flow(Type=flow_pb2.L3_L4)
        f.time.FromNanoseconds(t)
        f.uuid = str(uuid.UUID(int=r.getrandbits(128)))
        f.IP.source = src.ip6 if v6 else src.ip4
        f.IP.destination = dst.ip6 if v6 else dst.ip4
        f.IP.ipVersion = flow_pb2.IPv6 if v6 else flow_pb2.IPv4
        _endpoint(f.source, src)
        _endpoint(f.destination, dst)
        kind = r.random()
        port = r.choice((80, 81, 443, 53, 5432, 9090, 8080))
        sport = r.randint(32768, 60999)
        reply_known = r.random() < 0.9  # else is_reply stays unset (a request's ports)
        reply = reply_known and r.random() < 0.25
        if kind < 0.55:
            flags = r.choice(
                (
                    ("SYN",),
                    ("SYN", "ACK"),
                    ("ACK",),
                    ("ACK", "PSH"),
                    ("FIN", "ACK"),
                    ("RST",),
                    ("ACK", "ECE", "CWR"),
                )
            )
            f.l4.TCP.source_port, f.l4.TCP.destination_port = (
                (port, sport) if reply else (sport, port)
            )
            for fl in flags:
                setattr(f.l4.TCP.flags, fl, True)
        elif kind < 0.8:
            p = 53 if r.random() < 0.4 else port
            f.l4.UDP.source_port, f.l4.UDP.destination_port = (p, sport) if reply else (sport, p)
        elif kind < 0.86:
            f.l4.SCTP.source_port, f.l4.SCTP.destination_port = sport, r.choice((80, 81))
        elif v6:
            f.l4.ICMPv6.type = r.choice((128, 129, 1))
        else:
            f.l4.ICMPv4.type = r.choice((8, 0, 3))
            f.l4.ICMPv4.code = 3 if f.l4.ICMPv4.type == 3 else 0
        if reply_known:
            f.is_reply.value = reply
            f.reply = reply
        observed_at = dst if dst.namespace else src
        f.node_name = observed_at.node if observed_at.namespace else NODES[0]
        f.traffic_direction = flow_pb2.INGRESS if dst.namespace else flow_pb2.EGRESS
        f.trace_observation_point = (
            flow_pb2.TO_ENDPOINT if dst.namespace else flow_pb2.FROM_ENDPOINT
        )
        ifx = r.randint(0, 3)
        f.interface.index = 10 + ifx
        f.interface.name = f"lxc{ifx:04x}ab{ifx}"
        if r.random() < 0.2 and dst.namespace:
            f.destination_service.name = dst.workload[0] if dst.workload else f"svc-{dst.pod}"
            f.destination_service.namespace = dst.namespace
        detail = ""
        v = r.random()
        if v < 0.18 and not reply:
            f.verdict = flow_pb2.DROPPED
            reason = r.choice(DROP_REASONS)
            f.drop_reason = reason
            f.drop_reason_desc = reason  # type: ignore[assignment]
            f.event_type.type = 1
            f.event_type.sub_type = reason
            if reason == 133:
                detail = "default-deny"
                pol = DENYING.get(dst.namespace)
                if pol:
                    f.ingress_denied_by.add(name=pol, namespace=dst.namespace, kind="NetworkPolicy")
                elif src.namespace:
                    f.egress_denied_by.add(
                        name="egress-lockdown", namespace=src.namespace, kind="NetworkPolicy"
                    )
        elif v < 0.22:
            f.verdict = flow_pb2.AUDIT
            f.event_type.type = 5
            detail = "default-deny"
        elif v < 0.225:
            f.verdict = flow_pb2.ERROR
            f.event_type.type = 4
            f.event_type.sub_type = 3
        else:
            f.verdict = flow_pb2.FORWARDED
            f.event_type.type = 4
            f.event_type.sub_type = r.choice((0, 5, 3))
            if dst.namespace and r.random() < 0.5:
                f.ingress_allowed_by.add(name="allow-web", namespace=dst.namespace)
        node = f.node_name
        self.seq[node] += 1
        ext = extensions_pb2.FlowExtension(
            packets=r.randint(1, 20),
            bytes=r.randint(60, 9000),
            reason=extensions_pb2.EVENT_CONNECTION_START,
            drop_detail=detail,
        )
        ext.position.collector_id = node
        ext.position.boot_id = self.boot[node]
        ext.position.sequence = self.seq[node]
        set_flow_extension(f, ext)
        return f

    def flows(self, n: int) -> Iterator[flow_pb2.Flow]:
        for i in range(n):
            # jitter keeps most times increasing but lets a few tie or run backwards
            t = (
                self.start_ns
                + i * self.step_ns
                + self.rng.randint(-self.step_ns, self.step_ns) // 4
            )
            yield self._flow(t)


def batches(flows: list[flow_pb2.Flow], size: int = 2000) -> list[IngestBatch]:
    """Per-collector batches (consecutive sequences, batch numbers from 1)."""
    per: dict[tuple[str, int], list[flow_pb2.Flow]] = {}
    for f in flows:
        ext = extensions_pb2.FlowExtension()
        f.extensions.Unpack(ext)
        per.setdefault((ext.position.collector_id, ext.position.boot_id), []).append(f)
    out = []
    for (c, b), fl in per.items():
        for k in range(0, len(fl), size):
            out.append(IngestBatch(c, b, k // size + 1, fl[k : k + size], node_name=c))
    return out


def position(f: flow_pb2.Flow) -> tuple[str, int, int]:
    ext = extensions_pb2.FlowExtension()
    f.extensions.Unpack(ext)
    p = ext.position
    return (p.collector_id, p.boot_id, p.sequence)


def key(f: flow_pb2.Flow) -> tuple[int, str, int, int]:
    c, b, s = position(f)
    return (f.time.ToNanoseconds(), c, b, s)
