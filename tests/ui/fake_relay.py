"""A test relay for the UI: an in-process grpc.aio server serving Hubble's
``observer.Observer`` and Sensilla's ``sensilla.query.v1.Query`` from canned but
realistic data that the tests control.

Datasets:

- ``lab``: the lab's namespaces x, y, z (pods a, b, c), plus kube-system (coredns,
  a Deployment) and monitoring (prometheus, a StatefulSet), the host and the world.
  Known traffic: x/b → y/a:80 allowed; x/a → y/b:80/TCP forwarded until a policy
  (y/allow-from-y, selecting y/b) made it drop with POLICY_DENIED in the last
  quarter of the hour (so it is both a top dropped pair and a recent one); z/c →
  x/a:81/UDP; everyone → coredns:53/UDP; prometheus scrapes x/a:9090; the host
  probes y/c; the world reaches z/a:80, denied by an audit-mode policy (AUDIT).
- ``large``: 8 namespaces × 8 deployments (64 workloads) with ~170 edges, for
  readability at scale.
- ``empty``: a relay that knows its nodes but has no flows and no pods.

Aggregates (service map, rates, drop summary) are computed here from the canned
flows, standing in for the relay's ClickHouse queries, so that everything the UI
shows is consistent. Faults: ``fail(method, code)`` makes an RPC fail; a token
makes every RPC require ``authorization: Bearer <token>``; TLS via PEM files.

Run on its own (manual testing): ``python -m tests.ui.fake_relay --listen 127.0.0.1:4299``.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import ipaddress
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from sensilla.protos import (
    extensions_pb2,
    flow_pb2,
    observer_pb2,
    observer_pb2_grpc,
    query_pb2,
    query_pb2_grpc,
    relay_pb2,
)

HOUR = 3600.0

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    ip: str
    labels: tuple[tuple[str, str], ...]
    identity: int
    owner: tuple[str, str] | None = None  # (kind, name)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def workload_id(self) -> str:
        return f"{self.namespace}/{self.owner[1] if self.owner else self.name}"

    @property
    def workload(self) -> tuple[str, str]:
        return (self.owner[1], self.owner[0]) if self.owner else (self.name, "Pod")

    def hubble_labels(self) -> list[str]:
        out = [f"k8s:{k}={v}" for k, v in self.labels]
        out.append(f"k8s:io.kubernetes.pod.namespace={self.namespace}")
        out.append(f"k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name="
                   f"{self.namespace}")
        return sorted(out)


@dataclass(frozen=True)
class Reserved:
    entity: str  # world, host, remote-node
    ip: str
    identity: int

    @property
    def key(self) -> str:
        return f"reserved:{self.entity}"

    workload_id = key


Peer = Pod | Reserved


@dataclass
class Dataset:
    nodes: list[tuple[str, str]]  # (name, address)
    pods: list[Pod]
    flows: list[flow_pb2.Flow] = field(default_factory=list)  # time order
    times: list[float] = field(default_factory=list)  # seconds, parallel to flows
    meta: list[dict[str, Any]] = field(default_factory=list)  # parallel to flows
    unavailable_nodes: list[str] = field(default_factory=list)
    lost_events: dict[str, int] = field(default_factory=dict)


def _identity(labels: Iterable[tuple[str, str]], ns: str) -> int:
    digest = hashlib.sha256(repr((sorted(labels), ns)).encode()).digest()
    return 256 + int.from_bytes(digest[:3], "big") % 60000


def _pod(ns: str, name: str, node: str, ip: str, owner: tuple[str, str] | None = None,
         **labels: str) -> Pod:
    lab = tuple(sorted({"pod": name, **labels}.items())) if not owner else tuple(
        sorted({"app": owner[1], **labels}.items()))
    return Pod(ns, name, node, ip, lab, _identity(lab, ns), owner)


WORLD = Reserved("world", "203.0.113.7", 2)
HOST = Reserved("host", "172.18.0.2", 1)
REMOTE = Reserved("remote-node", "172.18.0.3", 6)


def lab_pods() -> list[Pod]:
    pods = []
    for i, ns in enumerate(("x", "y", "z")):
        for j, name in enumerate(("a", "b", "c")):
            node = "worker" if (i + j) % 2 == 0 else "worker2"
            subnet = 1 if node == "worker" else 2
            pods.append(_pod(ns, name, node, f"10.244.{subnet}.{10 + 3 * i + j}"))
    pods.append(_pod("kube-system", "coredns-6d4b75cb6d-7xk2p", "worker", "10.244.1.53",
                     ("Deployment", "coredns")))
    pods.append(_pod("monitoring", "prometheus-0", "worker2", "10.244.2.90",
                     ("StatefulSet", "prometheus")))
    return pods


# --------------------------------------------------------------------------- flows


class _FlowMaker:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seq: dict[str, int] = defaultdict(int)
        self.items: list[tuple[float, flow_pb2.Flow, dict[str, Any]]] = []

    @staticmethod
    def _endpoint(p: Peer) -> flow_pb2.Endpoint:
        if isinstance(p, Reserved):
            return flow_pb2.Endpoint(identity=p.identity, labels=[f"reserved:{p.entity}"])
        ep = flow_pb2.Endpoint(ID=p.identity % 4000, identity=p.identity,
                               namespace=p.namespace, labels=p.hubble_labels(),
                               pod_name=p.name, cluster_name="default")
        if p.owner:
            ep.workloads.add(name=p.owner[1], kind=p.owner[0])
        return ep

    def add(self, t: float, src: Peer, dst: Peer, proto: str, sport: int, dport: int, *,
            verdict: int = flow_pb2.FORWARDED, reason: int = 0, flags: Sequence[str] = (),
            reply: bool = False, denied_by: Sequence[tuple[str, str]] = (),
            allowed_by: Sequence[tuple[str, str]] = (), packets: int = 1,
            nbytes: int = 74) -> None:
        f = flow_pb2.Flow(verdict=verdict, Type=flow_pb2.L3_L4)  # type: ignore[arg-type]
        ts = Timestamp()
        ts.FromNanoseconds(int(t * 1e9))
        f.time.CopyFrom(ts)
        f.uuid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        f.IP.source = src.ip
        f.IP.destination = dst.ip
        f.IP.ipVersion = flow_pb2.IPv4
        f.source.CopyFrom(self._endpoint(src))
        f.destination.CopyFrom(self._endpoint(dst))
        if proto == "tcp":
            f.l4.TCP.source_port = sport
            f.l4.TCP.destination_port = dport
            for name in flags:
                setattr(f.l4.TCP.flags, name, True)
        elif proto == "udp":
            f.l4.UDP.source_port = sport
            f.l4.UDP.destination_port = dport
        elif proto == "sctp":
            f.l4.SCTP.source_port = sport
            f.l4.SCTP.destination_port = dport
        f.is_reply.CopyFrom(wrappers_pb2.BoolValue(value=reply))
        # Observed at the destination's node for ingress, else at the source's.
        observer_side = dst if isinstance(dst, Pod) else src
        f.node_name = observer_side.node if isinstance(observer_side, Pod) else "worker"
        f.traffic_direction = (flow_pb2.INGRESS if isinstance(dst, Pod)  # type: ignore[assignment]
                               else flow_pb2.EGRESS)
        f.trace_observation_point = flow_pb2.TO_ENDPOINT  # type: ignore[assignment]
        if verdict == flow_pb2.DROPPED:
            f.drop_reason_desc = reason  # type: ignore[assignment]
            f.drop_reason = reason
            f.event_type.type = 1
            for ns, name in denied_by:
                f.ingress_denied_by.add(namespace=ns, name=name, kind="NetworkPolicy")
        else:
            f.event_type.type = 4
            for ns, name in allowed_by:
                f.ingress_allowed_by.add(namespace=ns, name=name, kind="NetworkPolicy")
        self.seq[f.node_name] += 1
        ext = extensions_pb2.FlowExtension(
            packets=packets, bytes=nbytes,
            position=extensions_pb2.Position(collector_id=f.node_name, boot_id=1,
                                             sequence=self.seq[f.node_name]))
        anyext = any_pb2.Any()
        anyext.Pack(ext)
        f.extensions.CopyFrom(anyext)
        meta = {
            "src_wid": src.workload_id, "dst_wid": dst.workload_id,
            "proto": proto, "port": dport, "reply": reply,
            "policies": [f"{ns}/{name}" for ns, name in denied_by],
        }
        self.items.append((t, f, meta))

    def tcp_conversation(self, t: float, src: Peer, dst: Peer, port: int, *,
                         allowed_by: Sequence[tuple[str, str]] = ()) -> None:
        sport = self.rng.randint(32768, 60999)
        self.add(t, src, dst, "tcp", sport, port, flags=("SYN",), allowed_by=allowed_by)
        self.add(t + 0.0004, dst, src, "tcp", port, sport, flags=("SYN", "ACK"), reply=True)
        self.add(t + 0.0008, src, dst, "tcp", sport, port, flags=("ACK", "PSH"), packets=3,
                 nbytes=260, allowed_by=allowed_by)
        self.add(t + 0.0020, src, dst, "tcp", sport, port, flags=("FIN", "ACK"))

    def tcp_denied(self, t: float, src: Peer, dst: Peer, port: int,
                   denied_by: Sequence[tuple[str, str]], *, verdict: int = flow_pb2.DROPPED
                   ) -> None:
        sport = self.rng.randint(32768, 60999)
        for k in range(3):  # the SYN and its retransmissions
            self.add(t + k, src, dst, "tcp", sport, port, flags=("SYN",), verdict=verdict,
                     reason=flow_pb2.POLICY_DENIED if verdict == flow_pb2.DROPPED else 0,
                     denied_by=denied_by)

    def udp_exchange(self, t: float, src: Peer, dst: Peer, port: int) -> None:
        sport = self.rng.randint(32768, 60999)
        self.add(t, src, dst, "udp", sport, port, nbytes=60)
        self.add(t + 0.0003, dst, src, "udp", port, sport, reply=True, nbytes=90)


def build_lab(now: float, seed: int = 7) -> Dataset:
    pods = lab_pods()
    p = {pod.key: pod for pod in pods}
    dns = p["kube-system/coredns-6d4b75cb6d-7xk2p"]
    prom = p["monitoring/prometheus-0"]
    m = _FlowMaker(seed)
    start = now - 0.95 * HOUR
    change = now - 0.18 * HOUR  # y/allow-from-y applied: x/a → y/b starts dropping
    policy = [("y", "allow-from-y")]
    t = start
    step = 60.0
    while t < now - 5:
        m.tcp_conversation(t + 1, p["x/b"], p["y/a"], 80)
        if t < change:
            m.tcp_conversation(t + 2, p["x/a"], p["y/b"], 80)
        else:
            m.tcp_denied(t + 2, p["x/a"], p["y/b"], 80, policy)
        m.udp_exchange(t + 3, p["z/c"], p["x/a"], 81)
        m.tcp_conversation(t + 4, p["y/c"], p["y/b"], 80, allowed_by=policy)
        for client in (p["x/a"], p["y/a"], p["z/b"]):
            m.udp_exchange(t + 5 + m.rng.random(), client, dns, 53)
        if int(t) % 120 < 60:
            m.tcp_conversation(t + 7, prom, p["x/a"], 9090)
            m.tcp_conversation(t + 8, HOST, p["y/c"], 81)
        if int(t) % 300 < 60:
            m.tcp_denied(t + 9, WORLD, p["z/a"], 80, [("z", "audit-ingress")],
                         verdict=flow_pb2.AUDIT)
            m.add(t + 10, p["z/b"], p["x/c"], "udp", 41000, 81, verdict=flow_pb2.DROPPED,
                  reason=flow_pb2.CT_UNKNOWN_L4_PROTOCOL)
        t += step
    ds = Dataset(nodes=[("worker", "10.254.0.2:4244"), ("worker2", "10.254.0.6:4244")],
                 pods=pods)
    _finish(ds, m)
    return ds


def build_large(now: float, seed: int = 11) -> Dataset:
    rng = random.Random(seed)
    pods: list[Pod] = []
    names = ["api", "web", "db", "cache", "queue", "worker", "auth", "search"]
    for i in range(8):
        ns = f"team-{i}"
        for j, name in enumerate(names):
            node = "worker" if (i + j) % 2 == 0 else "worker2"
            pods.append(_pod(ns, f"{name}-7f9c-{i}{j}", node,
                             f"10.244.{1 if node == 'worker' else 2}.{100 + 8 * i + j}",
                             ("Deployment", name)))
    m = _FlowMaker(seed)
    pairs = []
    for src in pods:
        for _ in range(rng.choice((2, 3))):
            dst = rng.choice(pods if rng.random() < 0.25 else
                             [q for q in pods if q.namespace == src.namespace])
            if dst is not src:
                pairs.append((src, dst, rng.choice((80, 443, 5432, 6379)),
                              rng.random() < 0.12))
    t = now - 0.9 * HOUR
    while t < now - 5:
        for src, dst, port, dropped in pairs:
            if rng.random() < 0.5:
                continue
            if dropped:
                m.tcp_denied(t + rng.random() * 50, src, dst, port,
                             [(dst.namespace, "default-deny")])
            else:
                m.tcp_conversation(t + rng.random() * 50, src, dst, port)
        m.tcp_conversation(t + 3, WORLD, pods[1], 443)
        t += 120.0
    ds = Dataset(nodes=[("worker", "10.254.0.2:4244"), ("worker2", "10.254.0.6:4244")],
                 pods=pods)
    _finish(ds, m)
    return ds


def build_empty(now: float) -> Dataset:
    del now
    return Dataset(nodes=[("worker", "10.254.0.2:4244"), ("worker2", "10.254.0.6:4244")],
                   pods=[])


def _finish(ds: Dataset, m: _FlowMaker) -> None:
    m.items.sort(key=lambda item: item[0])
    ds.times = [t for t, _f, _m in m.items]
    ds.flows = [f for _t, f, _m in m.items]
    ds.meta = [meta for _t, _f, meta in m.items]


DATASETS = {"lab": build_lab, "large": build_large, "empty": build_empty}


# --------------------------------------------------------------------------- filters
#
# A compact evaluation of Hubble's filter semantics, enough for what the UI sends.


class Unsupported(Exception):
    pass


def _proto_of(f: flow_pb2.Flow) -> str:
    kind = f.l4.WhichOneof("protocol")
    return kind.lower() if kind else ""


def _ports(f: flow_pb2.Flow) -> tuple[int, int]:
    kind = f.l4.WhichOneof("protocol")
    if kind in ("TCP", "UDP", "SCTP"):
        l4 = getattr(f.l4, kind)
        return l4.source_port, l4.destination_port
    return 0, 0


def _pod_match(ep: flow_pb2.Endpoint, values: Sequence[str]) -> bool:
    for v in values:
        ns, _, prefix = v.rpartition("/")
        if "/" in v:
            if ep.namespace == ns and ep.pod_name.startswith(prefix) and (
                prefix or ep.pod_name or ep.namespace
            ):
                return True
        elif ep.pod_name.startswith(v) and ep.pod_name:
            return True
    return False


def _ip_match(ip: str, values: Sequence[str]) -> bool:
    if not ip:
        return False
    addr = ipaddress.ip_address(ip)
    for v in values:
        try:
            if addr in ipaddress.ip_network(v, strict=False):
                return True
        except ValueError:
            continue
    return False


def _label_match(labels: Sequence[str], values: Sequence[str]) -> bool:
    for v in values:
        want = v if ":" in v.split("=", 1)[0] else f"k8s:{v}"
        if "=" in want and want in labels:
            return True
        if "=" not in want and any(lbl.split("=", 1)[0] == want for lbl in labels):
            return True
    return False


SUPPORTED = {"source_pod", "destination_pod", "source_ip", "destination_ip", "source_label",
             "destination_label", "source_identity", "destination_identity", "verdict",
             "drop_reason_desc", "protocol", "source_port", "destination_port", "node_name",
             "event_type", "reply"}


def matches(f: flow_pb2.Flow, flt: flow_pb2.FlowFilter) -> bool:
    for fd, _v in flt.ListFields():
        if fd.name not in SUPPORTED:
            raise Unsupported(fd.name)
    sport, dport = _ports(f)
    checks: list[tuple[Sequence[Any], Callable[[], bool]]] = [
        (flt.source_pod, lambda: _pod_match(f.source, flt.source_pod)),
        (flt.destination_pod, lambda: _pod_match(f.destination, flt.destination_pod)),
        (flt.source_ip, lambda: _ip_match(f.IP.source, flt.source_ip)),
        (flt.destination_ip, lambda: _ip_match(f.IP.destination, flt.destination_ip)),
        (flt.source_label, lambda: _label_match(f.source.labels, flt.source_label)),
        (flt.destination_label,
         lambda: _label_match(f.destination.labels, flt.destination_label)),
        (flt.source_identity, lambda: f.source.identity in flt.source_identity),
        (flt.destination_identity,
         lambda: f.destination.identity in flt.destination_identity),
        (flt.verdict, lambda: f.verdict in flt.verdict),
        (flt.drop_reason_desc, lambda: f.drop_reason_desc in flt.drop_reason_desc),
        (flt.protocol, lambda: _proto_of(f) in [p.lower() for p in flt.protocol]),
        (flt.source_port, lambda: str(sport) in flt.source_port),
        (flt.destination_port, lambda: str(dport) in flt.destination_port),
        (flt.node_name, lambda: f.node_name in flt.node_name),
        (flt.event_type, lambda: any(e.type == f.event_type.type for e in flt.event_type)),
        (flt.reply, lambda: f.is_reply.value in flt.reply),
    ]
    return all(check() for present, check in checks if len(present))


def selected(f: flow_pb2.Flow, whitelist: Sequence[flow_pb2.FlowFilter],
             blacklist: Sequence[flow_pb2.FlowFilter]) -> bool:
    if whitelist and not any(matches(f, w) for w in whitelist):
        return False
    return not any(matches(f, b) for b in blacklist)


# --------------------------------------------------------------------------- explain

POLICY_Y = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-{sns}-{spod}-to-{dpod}-{proto}-{port}
  namespace: {dns}
spec:
  podSelector:
    matchLabels:
      pod: {dpod}
  policyTypes:
  - Ingress
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {sns}
      podSelector:
        matchLabels:
          pod: {spod}
    ports:
    - protocol: {PROTO}
      port: {port}
"""


def explain(ds: Dataset, req: query_pb2.ExplainRequest) -> query_pb2.ExplainResponse:
    """The fake's policy model: y/allow-from-y selects y/b for ingress and allows
    only namespace y on 80/TCP; z/audit-ingress selects z/a for ingress in audit
    mode and allows nothing; nothing else is isolated. Answers in the relay's shape
    (plain words one statement per line, reasons, forwarded)."""
    pods = {p.key: p for p in ds.pods}
    for field_name in ("source", "destination"):
        if getattr(req, field_name) not in pods:
            raise ValueError(f"{field_name}: unknown pod {getattr(req, field_name)!r}")
    proto = (req.protocol or "TCP").upper()
    if proto not in ("TCP", "UDP", "SCTP", "ICMP"):
        raise ValueError(f"protocol: {req.protocol!r} is not TCP, UDP, SCTP or ICMP")
    if proto == "ICMP" and req.port:
        raise ValueError("port: ICMP has no port")
    if proto != "ICMP" and not 0 < req.port < 65536:
        raise ValueError(f"port: {req.port} is not in 1-65535")
    src, dst = pods[req.source], pods[req.destination]
    what = f"{proto}/{req.port}" if req.port else proto
    resp = query_pb2.ExplainResponse(revision=7)
    resp.egress.CopyFrom(query_pb2.DirectionVerdict(enforced=False, allowed=True,
                                                    reason="not-isolated", pod=src.key))
    ing = resp.ingress
    ing.pod = dst.key
    lines = [f"Egress from {src.key}: allowed; no NetworkPolicy selects {src.key} for "
             f"egress, so it may send to anyone."]
    if dst.key in ("y/b", "z/a"):
        policy = ("y", "allow-from-y") if dst.key == "y/b" else ("z", "audit-ingress")
        ing.enforced = True
        ing.selected_by.add(namespace=policy[0], name=policy[1])
        ing.audit = dst.key == "z/a"
        ok = dst.key == "y/b" and src.namespace == "y" and req.port == 80 and proto == "TCP"
        ing.allowed = ok
        if ok:
            ing.reason = "allowed"
            ing.allowed_by.add(namespace="y", name="allow-from-y", rule="spec.ingress[0]",
                               peer="pods in namespaces with ns=y", port="TCP/80")
            lines.append(f"Ingress to {dst.key}: allowed by y/allow-from-y spec.ingress[0] "
                         f"(from pods in namespaces with ns=y, on TCP/80).")
        else:
            ing.reason = "default-deny"
            lines.append(f"Ingress to {dst.key}: DENIED by default deny; {dst.key} is "
                         f"selected for ingress by {policy[0]}/{policy[1]}, and no rule of "
                         f"these policies allows {src.key} on {what}.")
    else:
        ing.allowed = True
        ing.reason = "not-isolated"
        lines.append(f"Ingress to {dst.key}: allowed; no NetworkPolicy selects {dst.key} "
                     f"for ingress.")
    resp.allowed = ing.allowed
    resp.audit = not ing.allowed and ing.audit
    resp.forwarded = resp.allowed or resp.audit
    verdict = "ALLOWED" if resp.allowed else "DENIED (audit: forwarded)" if resp.audit else \
        "DENIED"
    resp.explanation = "\n".join([f"{src.key} -> {dst.key} {what}: {verdict}", *lines])
    if not resp.allowed:
        resp.suggested_policy = POLICY_Y.format(
            sns=src.namespace, spod=src.name, dns=dst.namespace, dpod=dst.name,
            proto=proto.lower(), PROTO=proto, port=req.port)
    for f in reversed(ds.flows):
        if (f.source.namespace, f.source.pod_name) == (src.namespace, src.name) and (
            f.destination.namespace, f.destination.pod_name) == (dst.namespace, dst.name) and (
            _ports(f)[1] == req.port and _proto_of(f) == proto.lower()
        ):
            resp.last_observed.CopyFrom(f)
            break
    return resp


# --------------------------------------------------------------------------- aggregates


def _window(w: query_pb2.TimeWindow, now: float) -> tuple[float, float]:
    until = w.until.ToNanoseconds() / 1e9 if w.HasField("until") else now
    since = w.since.ToNanoseconds() / 1e9 if w.HasField("since") else until - HOUR
    return since, until


def _slice(ds: Dataset, since: float, until: float) -> range:
    return range(bisect.bisect_left(ds.times, since), bisect.bisect_right(ds.times, until))


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _in_namespaces(meta: dict[str, Any], namespaces: Sequence[str]) -> bool:
    if not namespaces:
        return True
    ends = [meta["src_wid"], meta["dst_wid"]]
    return any(e.split("/", 1)[0] in namespaces for e in ends if not e.startswith("reserved:"))


def _step(since: float, until: float, step: int) -> int:
    if step > 0:
        return step
    return max(10, int((until - since) / 60))


def _workload(ds: Dataset, wid: str) -> query_pb2.Workload:
    if wid.startswith("reserved:"):
        entity = wid.split(":", 1)[1]
        ident = {"world": 2, "host": 1, "remote-node": 6}.get(entity, 0)
        return query_pb2.Workload(id=wid, name=entity, kind="reserved", identity=ident)
    for p in ds.pods:
        if p.workload_id == wid:
            name, kind = p.workload
            return query_pb2.Workload(id=wid, namespace=p.namespace, name=name, kind=kind,
                                      identity=p.identity)
    ns, _, name = wid.partition("/")
    return query_pb2.Workload(id=wid, namespace=ns, name=name, kind="Pod")


def service_map(ds: Dataset, req: query_pb2.ServiceMapRequest, now: float
                ) -> query_pb2.ServiceMapResponse:
    since, until = _window(req.window, now)
    acc: dict[tuple[str, str, str, int, int], list[Any]] = {}
    for i in _slice(ds, since, until):
        meta, f = ds.meta[i], ds.flows[i]
        if meta["reply"] or not _in_namespaces(meta, req.namespaces):
            continue
        ends = (meta["src_wid"], meta["dst_wid"])
        if req.hide_dns and meta["port"] == 53:
            continue
        if req.hide_host and any(e in ("reserved:host", "reserved:remote-node") for e in ends):
            continue
        if req.hide_world and "reserved:world" in ends:
            continue
        if req.hide_monitoring and any("monitoring" in e.split("/", 1)[0] for e in ends):
            continue
        key = (meta["src_wid"], meta["dst_wid"], meta["proto"], meta["port"], f.verdict)
        ext = extensions_pb2.FlowExtension()
        f.extensions.Unpack(ext)
        entry = acc.setdefault(key, [0, 0, 0, set()])
        entry[0] += 1
        entry[1] += ext.packets
        entry[2] += ext.bytes
        if f.drop_reason_desc:
            entry[3].add(f.drop_reason_desc)
    limit = req.max_edges or 500
    ordered = sorted(acc.items(), key=lambda kv: -kv[1][0])
    resp = query_pb2.ServiceMapResponse(truncated=len(ordered) > limit)
    wids: set[str] = set()
    for (s, d, proto, port, verdict), (flows, packets, nbytes, reasons) in ordered[:limit]:
        resp.edges.add(source_id=s, destination_id=d, protocol=proto, port=port,
                       verdict=verdict, flows=flows, packets=packets, bytes=nbytes,
                       drop_reasons=sorted(reasons))
        wids.update((s, d))
    for wid in sorted(wids):
        resp.workloads.append(_workload(ds, wid))
    return resp


def flow_rates(ds: Dataset, req: query_pb2.FlowRatesRequest, now: float
               ) -> query_pb2.FlowRatesResponse:
    since, until = _window(req.window, now)
    step = _step(since, until, req.step_seconds)
    counts: dict[tuple[int, int], int] = defaultdict(int)
    for i in _slice(ds, since, until):
        if _in_namespaces(ds.meta[i], req.namespaces):
            bucket = int(ds.times[i] // step * step)
            counts[(bucket, ds.flows[i].verdict)] += 1
    resp = query_pb2.FlowRatesResponse(step_seconds=step)
    for (bucket, verdict), n in sorted(counts.items()):
        resp.points.add(time=_ts(bucket), verdict=verdict, flows=n)  # type: ignore[arg-type]
    return resp


def drop_summary(ds: Dataset, req: query_pb2.DropSummaryRequest, now: float
                 ) -> query_pb2.DropSummaryResponse:
    since, until = _window(req.window, now)
    step = _step(since, until, req.step_seconds)
    reasons: dict[tuple[int, int], int] = defaultdict(int)
    pairs: dict[tuple[str, str, str, int, int], dict[str, Any]] = {}
    forwarded_first: dict[tuple[str, str, str, int], float] = {}
    for i in _slice(ds, since, until):
        meta, f, t = ds.meta[i], ds.flows[i], ds.times[i]
        if not _in_namespaces(meta, req.namespaces) or meta["reply"]:
            continue
        base = (meta["src_wid"], meta["dst_wid"], meta["proto"], meta["port"])
        if f.verdict == flow_pb2.FORWARDED:
            forwarded_first.setdefault(base, t)
        if f.verdict != flow_pb2.DROPPED:
            continue
        reasons[(int(t // step * step), f.drop_reason_desc)] += 1
        entry = pairs.setdefault((*base, f.drop_reason_desc),
                                 {"drops": 0, "first": t, "last": t, "policies": set()})
        entry["drops"] += 1
        entry["last"] = t
        entry["policies"].update(meta["policies"])
    resp = query_pb2.DropSummaryResponse(step_seconds=step)
    for (bucket, reason), n in sorted(reasons.items()):
        resp.reasons.add(time=_ts(bucket), reason=reason, drops=n)  # type: ignore[arg-type]

    def fill(pair: query_pb2.DroppedPair, key: tuple[str, str, str, int, int],
             e: dict[str, Any]) -> None:
        s, d, proto, port, reason = key
        pair.source.CopyFrom(_workload(ds, s))
        pair.destination.CopyFrom(_workload(ds, d))
        pair.protocol = proto
        pair.port = port
        pair.reason = reason  # type: ignore[assignment]
        pair.drops = e["drops"]
        pair.policies.extend(sorted(e["policies"]))
        pair.default_deny = reason == flow_pb2.POLICY_DENIED and bool(e["policies"])
        pair.first_seen.CopyFrom(_ts(e["first"]))
        pair.last_seen.CopyFrom(_ts(e["last"]))

    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1]["drops"], kv[0]))
    for key, e in ordered[: req.limit or 20]:
        fill(resp.top_pairs.add(), key, e)
    recent = since + 0.75 * (until - since)
    for key, e in ordered:
        fwd = forwarded_first.get(key[:4])
        if e["first"] >= recent and fwd is not None and fwd < e["first"]:
            fill(resp.new_drops.add(), key, e)
    return resp


# --------------------------------------------------------------------------- services


class FakeRelay:
    """The fake relay; ``start()`` serves it on a background thread."""

    def __init__(self, dataset: str = "lab", *, token: str | None = None,
                 tls: tuple[bytes, bytes] | None = None,
                 client_ca: bytes | None = None) -> None:
        self.now = time.time()
        self.dataset_name = dataset
        self.data = DATASETS[dataset](self.now)
        self.token = token
        self.tls = tls  # (key PEM, certificate chain PEM)
        self.client_ca = client_ca
        self.failures: dict[str, tuple[grpc.StatusCode, str]] = {}
        self.calls: list[tuple[str, Any]] = []
        self.address = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- control

    def use(self, dataset: str) -> None:
        self.now = time.time()
        self.data = DATASETS[dataset](self.now)
        self.dataset_name = dataset

    def fail(self, method: str, code: grpc.StatusCode = grpc.StatusCode.INTERNAL,
             message: str = "injected failure") -> None:
        self.failures[method] = (code, message)

    def heal(self) -> None:
        self.failures.clear()

    def requests(self, method: str) -> list[Any]:
        return [req for m, req in self.calls if m == method]

    # -- lifecycle

    def start(self, listen: str = "127.0.0.1:0") -> str:
        self._thread = threading.Thread(target=self._run, args=(listen,), daemon=True,
                                        name="fake-relay")
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("fake relay did not start")
        if self._error is not None:
            raise RuntimeError(f"fake relay failed: {self._error}")
        return self.address

    def stop(self) -> None:
        """Stop serving (safe to call twice)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None
        self._loop = None

    def _run(self, listen: str) -> None:
        try:
            asyncio.run(self._serve(listen))
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._started.set()

    async def _serve(self, listen: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        observer_pb2_grpc.add_ObserverServicer_to_server(_Observer(self), server)
        query_pb2_grpc.add_QueryServicer_to_server(_Query(self), server)
        host = listen.rsplit(":", 1)[0]
        if self.tls:
            creds = grpc.ssl_server_credentials([self.tls], root_certificates=self.client_ca,
                                                require_client_auth=self.client_ca is not None)
            port = server.add_secure_port(listen, creds)
        else:
            port = server.add_insecure_port(listen)
        await server.start()
        self.address = f"{host}:{port}"
        self._started.set()
        await self._stop.wait()
        await server.stop(grace=0)

    # -- per-call checks

    async def guard(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((method, request))
        if self.token is not None:
            md = dict(context.invocation_metadata() or ())
            if md.get("authorization") != f"Bearer {self.token}":
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        if method in self.failures:
            code, message = self.failures[method]
            await context.abort(code, message)


class _Observer(observer_pb2_grpc.ObserverServicer):
    def __init__(self, relay: FakeRelay) -> None:
        self.r = relay

    async def ServerStatus(self, request: Any, context: Any) -> Any:
        await self.r.guard("ServerStatus", request, context)
        ds = self.r.data
        resp = observer_pb2.ServerStatusResponse(
            num_flows=len(ds.flows), max_flows=10_000_000, seen_flows=len(ds.flows),
            uptime_ns=int(3 * HOUR * 1e9), version="sensilla-fake-relay 0.1",
            flows_rate=len(ds.flows) / HOUR)
        connected = len(ds.nodes) - len(ds.unavailable_nodes)
        resp.num_connected_nodes.value = connected
        resp.num_unavailable_nodes.value = len(ds.unavailable_nodes)
        resp.unavailable_nodes.extend(ds.unavailable_nodes)
        return resp

    async def GetNodes(self, request: Any, context: Any) -> Any:
        await self.r.guard("GetNodes", request, context)
        ds = self.r.data
        resp = observer_pb2.GetNodesResponse()
        for name, address in ds.nodes:
            seen = sum(1 for f in ds.flows if f.node_name == name)
            resp.nodes.add(
                name=name, version="sensilla 0.1.0", address=address,
                state=(relay_pb2.NODE_UNAVAILABLE if name in ds.unavailable_nodes
                       else relay_pb2.NODE_CONNECTED),
                uptime_ns=int(2 * HOUR * 1e9), num_flows=seen, max_flows=65536,
                seen_flows=seen)
        return resp

    async def GetNamespaces(self, request: Any, context: Any) -> Any:
        await self.r.guard("GetNamespaces", request, context)
        resp = observer_pb2.GetNamespacesResponse()
        for ns in sorted({p.namespace for p in self.r.data.pods}):
            resp.namespaces.add(cluster="default", namespace=ns)
        return resp

    async def GetFlows(self, request: Any, context: Any) -> Any:
        await self.r.guard("GetFlows", request, context)
        ds = self.r.data
        since = request.since.ToNanoseconds() / 1e9 if request.HasField("since") else 0.0
        until = request.until.ToNanoseconds() / 1e9 if request.HasField("until") else 1e12
        try:
            chosen = [f for i in _slice(ds, since, until) for f in (ds.flows[i],)
                      if selected(f, request.whitelist, request.blacklist)]
        except Unsupported as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"filter field {exc} is not supported by the fake relay")
        number = request.number or len(chosen)
        chosen = chosen[:number] if request.first else chosen[-number:]
        for f in chosen:
            yield observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name, time=f.time)


class _Query(query_pb2_grpc.QueryServicer):
    def __init__(self, relay: FakeRelay) -> None:
        self.r = relay

    async def ServiceMap(self, request: Any, context: Any) -> Any:
        await self.r.guard("ServiceMap", request, context)
        return service_map(self.r.data, request, time.time())

    async def FlowRates(self, request: Any, context: Any) -> Any:
        await self.r.guard("FlowRates", request, context)
        return flow_rates(self.r.data, request, time.time())

    async def DropSummary(self, request: Any, context: Any) -> Any:
        await self.r.guard("DropSummary", request, context)
        return drop_summary(self.r.data, request, time.time())

    async def SearchFlows(self, request: Any, context: Any) -> Any:
        await self.r.guard("SearchFlows", request, context)
        ds = self.r.data
        since, until = _window(request.window, time.time())
        page_size = min(request.page_size or 100, 1000)
        offset = 0
        if request.page_token:
            if not (request.page_token.isascii() and request.page_token.isdigit()):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    "page_token: not a token from this relay")
            offset = int(request.page_token)
        out = []
        try:
            for i in reversed(_slice(ds, since, until)):
                meta, f = ds.meta[i], ds.flows[i]
                if request.source_workload_id and meta["src_wid"] != request.source_workload_id:
                    continue
                if request.destination_workload_id and (
                    meta["dst_wid"] != request.destination_workload_id
                ):
                    continue
                if selected(f, request.whitelist, request.blacklist):
                    out.append(f)
                    if len(out) > offset + page_size:
                        break
        except Unsupported as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"filter field {exc} is not supported by the fake relay")
        page = out[offset:offset + page_size]
        more = len(out) > offset + page_size
        return query_pb2.SearchFlowsResponse(
            flows=page, next_page_token=str(offset + page_size) if more else "")

    async def ListEndpoints(self, request: Any, context: Any) -> Any:
        await self.r.guard("ListEndpoints", request, context)
        resp = query_pb2.ListEndpointsResponse()
        for p in self.r.data.pods:
            if request.namespaces and p.namespace not in request.namespaces:
                continue
            ep = resp.endpoints.add(namespace=p.namespace, name=p.name, node=p.node,
                                    ips=[p.ip], identity=p.identity)
            ep.labels.update(dict(p.labels))
            for port in (80, 81):
                for proto in ("tcp", "udp", "sctp"):
                    ep.ports.add(name=f"serve-{port}-{proto}", port=port,
                                 protocol=proto.upper())
        return resp

    async def Nodes(self, request: Any, context: Any) -> Any:
        await self.r.guard("Nodes", request, context)
        ds = self.r.data
        resp = query_pb2.NodesResponse(flows_rate=len(ds.flows) / HOUR)
        for name, address in ds.nodes:
            mine = [t for t, f in zip(ds.times, ds.flows, strict=True) if f.node_name == name]
            node = resp.nodes.add(
                name=name, collector_id=name, address=address, version="sensilla 0.1.0",
                state=(relay_pb2.NODE_UNAVAILABLE if name in ds.unavailable_nodes
                       else relay_pb2.NODE_CONNECTED),
                boot_id=1, flows_stored=len(mine), flows_seen=len(mine),
                lost_events=ds.lost_events.get(name, 0), in_source=True)
            if mine:
                node.last_seen.CopyFrom(_ts(mine[-1]))
        return resp

    async def Explain(self, request: Any, context: Any) -> Any:
        await self.r.guard("Explain", request, context)
        try:
            return explain(self.r.data, request)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:4299")
    parser.add_argument("--dataset", default="lab", choices=sorted(DATASETS))
    args = parser.parse_args()
    relay = FakeRelay(args.dataset)
    print(f"fake relay ({args.dataset}) on {relay.start(args.listen)}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        relay.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
