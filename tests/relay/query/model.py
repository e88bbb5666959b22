"""The query API's answers computed in memory from flows, independently of the SQL:
workload ids as the proto defines them, service-map edges, rates, drop pairs.
Used to check the relay's ClickHouse aggregations (prefix srq)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sensilla.protos import extensions_pb2, flow_pb2

ENTITIES = {
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
}


def entity(identity: int) -> str:
    if identity in ENTITIES:
        return ENTITIES[identity]
    if identity >= 1 << 24:
        return "world"
    return "unknown" if identity == 0 else f"identity-{identity}"


def workload_id(ep: flow_pb2.Endpoint) -> str:
    """ "<namespace>/<workload or pod>", or "reserved:<entity>" without a namespace."""
    if not ep.namespace:
        return f"reserved:{entity(ep.identity)}"
    name = ep.workloads[0].name if ep.workloads and ep.workloads[0].name else ep.pod_name
    return f"{ep.namespace}/{name}"


def proto_port(f: flow_pb2.Flow) -> tuple[str, int]:
    kind = f.l4.WhichOneof("protocol")
    if kind in ("TCP", "UDP", "SCTP"):
        return kind.lower(), getattr(f.l4, kind).destination_port
    return (kind or "").lower(), 0


def is_reply(f: flow_pb2.Flow) -> bool:
    return f.HasField("is_reply") and f.is_reply.value


def ext(f: flow_pb2.Flow) -> extensions_pb2.FlowExtension:
    e = extensions_pb2.FlowExtension()
    f.extensions.Unpack(e)
    return e


def secs(f: flow_pb2.Flow) -> int:
    return f.time.seconds


def in_namespaces(f: flow_pb2.Flow, namespaces: Iterable[str]) -> bool:
    ns = set(namespaces)
    return not ns or f.source.namespace in ns or f.destination.namespace in ns


def edges(
    flows: Iterable[flow_pb2.Flow],
    since: int,
    until: int,
    namespaces: Iterable[str] = (),
    hide: dict[str, bool] | None = None,
) -> dict[tuple[str, str, str, int, int], tuple[int, int, int, list[int]]]:
    """Service-map edges over minute buckets [minute(since), until)."""
    hide = hide or {}
    lo = since - since % 60
    acc: dict[tuple[str, str, str, int, int], list[Any]] = {}
    for f in flows:
        t = secs(f) - secs(f) % 60
        if not lo <= t < until or is_reply(f) or not in_namespaces(f, namespaces):
            continue
        proto, port = proto_port(f)
        sid, did = f.source.identity, f.destination.identity
        if hide.get("dns") and port == 53:
            continue
        if hide.get("host") and ({sid, did} & {1, 6}):
            continue
        if hide.get("world") and ({sid, did} & {2} or max(sid, did) >= 1 << 24):
            continue
        if hide.get("monitoring") and any(
            "monitoring" in ns.lower() for ns in (f.source.namespace, f.destination.namespace)
        ):
            continue
        key = (workload_id(f.source), workload_id(f.destination), proto, port, f.verdict)
        e = ext(f)
        a = acc.setdefault(key, [0, 0, 0, set()])
        a[0] += 1
        a[1] += e.packets
        a[2] += e.bytes
        if f.drop_reason_desc:
            a[3].add(int(f.drop_reason_desc))
    return {k: (a[0], a[1], a[2], sorted(a[3])) for k, a in acc.items()}


def rates(
    flows: Iterable[flow_pb2.Flow],
    since: int,
    until: int,
    step: int,
    namespaces: Iterable[str] = (),
) -> dict[tuple[int, int], int]:
    lo = since - since % 60
    out: dict[tuple[int, int], int] = defaultdict(int)
    for f in flows:
        t = secs(f)
        if lo <= t - t % 60 < until and in_namespaces(f, namespaces):
            out[(t // step * step, f.verdict)] += 1
    return dict(out)


@dataclass
class Pair:
    drops: int = 0
    first: int = 2**63
    last: int = 0
    last_flow: flow_pb2.Flow | None = None
    policies: set[str] = field(default_factory=set)

    @property
    def default_deny(self) -> bool:
        return self.last_flow is not None and ext(self.last_flow).drop_detail == "default-deny"


def drop_pairs(
    flows: Iterable[flow_pb2.Flow], since: int, until: int, namespaces: Iterable[str] = ()
) -> dict[tuple[str, str, str, int, int], Pair]:
    lo = since - since % 60
    out: dict[tuple[str, str, str, int, int], Pair] = {}
    for f in flows:
        t = secs(f)
        if f.verdict != flow_pb2.DROPPED or is_reply(f) or not in_namespaces(f, namespaces):
            continue
        if not lo <= t - t % 60 < until:
            continue
        proto, port = proto_port(f)
        key = (workload_id(f.source), workload_id(f.destination), proto, port, f.drop_reason_desc)
        p = out.setdefault(key, Pair())
        ns = f.time.ToNanoseconds()
        p.drops += 1
        p.first = min(p.first, ns)
        if ns >= p.last:
            p.last, p.last_flow = ns, f
        p.policies.update(
            f"{q.namespace}/{q.name}" for q in [*f.ingress_denied_by, *f.egress_denied_by]
        )
    return out
