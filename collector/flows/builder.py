"""Datapath flow events -> Hubble flow.Flow messages.

Events arrive in batches as a numpy structured array (datapath.layout.EVENT_DTYPE);
columns are converted to Python lists once per batch, then each event becomes a
Flow. Per-address endpoint messages come ready-made from the Directory, per-id
policy lists from the attribution registry, so the per-event work is small.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from collector.flows.directory import Directory
from datapath import layout as L
from sensilla.protos import extensions_pb2, flow_pb2

# Cilium monitor message types and trace observation points (Hubble's event_type)
MSG_DROP = 1
MSG_TRACE = 4
MSG_POLICY_VERDICT = 5
TRACE_TO_LXC = 0
TRACE_FROM_LXC = 5

EVENT_REASONS = {
    L.EV_START: extensions_pb2.EVENT_CONNECTION_START,
    L.EV_FLAGS: extensions_pb2.EVENT_NEW_TCP_FLAGS,
    L.EV_PERIODIC: extensions_pb2.EVENT_PERIODIC,
    L.EV_END: extensions_pb2.EVENT_CONNECTION_END,
    L.EV_DROP: extensions_pb2.EVENT_DROP,
    L.EV_PACKET: extensions_pb2.EVENT_PACKET,
}
CT_STATES = {
    L.CT_STATE_NEW: extensions_pb2.CT_NEW,
    L.CT_STATE_ESTABLISHED: extensions_pb2.CT_ESTABLISHED,
    L.CT_STATE_REPLY: extensions_pb2.CT_REPLY,
    L.CT_STATE_RELATED: extensions_pb2.CT_RELATED,
}
AGGREGATION_NAMES = {
    L.AGG_NONE: "none",
    L.AGG_LOW: "low",
    L.AGG_MEDIUM: "medium",
    L.AGG_MAXIMUM: "maximum",
}
TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")
ICMP4_TYPES = {
    0: "EchoReply",
    3: "DestinationUnreachable",
    5: "Redirect",
    8: "EchoRequest",
    11: "TimeExceeded",
}
ICMP6_TYPES = {
    1: "DestinationUnreachable",
    2: "PacketTooBig",
    3: "TimeExceeded",
    128: "EchoRequest",
    129: "EchoReply",
    135: "NeighborSolicitation",
    136: "NeighborAdvertisement",
}
EXTENSION_TYPE_URL = "type.googleapis.com/sensilla.flow.v1.FlowExtension"


class Attributions(Protocol):
    def lookup(self, attribution_id: int) -> Any: ...


class Sequencer:
    """Per-boot flow sequence numbers: 1, 2, 3, ..."""

    def __init__(self, collector_id: str, boot_id: int) -> None:
        self.collector_id = collector_id
        self.boot_id = boot_id
        self.next = 1

    def take(self, n: int) -> int:
        first = self.next
        self.next += n
        return first


@dataclass
class BuildContext:
    node_name: str
    directory: Directory
    attributions: Attributions
    interfaces: dict[int, str]  # ifindex -> name on this node
    aggregation: int = L.AGG_MEDIUM


_addr_cache: dict[tuple[int, bytes], str] = {}


def _addr(family: int, raw: bytes) -> str:
    key = (family, raw)
    text = _addr_cache.get(key)
    if text is None:
        if family == 4:
            text = str(ipaddress.IPv4Address(raw[:4]))
        elif family == 6:
            text = str(ipaddress.IPv6Address(raw))
        else:
            text = ""
        if len(_addr_cache) > 65536:
            _addr_cache.clear()
        _addr_cache[key] = text
    return text


def _policy(name: str) -> flow_pb2.Policy:
    ns, _, n = name.partition("/")
    return flow_pb2.Policy(namespace=ns, name=n, kind="NetworkPolicy")


def _tcp_flags(bits: int) -> flow_pb2.TCPFlags:
    return flow_pb2.TCPFlags(
        **{name: True for i, name in enumerate(TCP_FLAG_NAMES) if bits >> i & 1}
    )


def _summary(proto: int, bits: int, icmp_type: int, family: int) -> str:
    if proto == 6:
        names = [n for i, n in enumerate(TCP_FLAG_NAMES) if bits >> i & 1]
        return "TCP Flags: " + ", ".join(names) if names else "TCP"
    if proto == 17:
        return "UDP"
    if proto == 132:
        return "SCTP"
    if proto == 1:
        return f"ICMPv4 {ICMP4_TYPES.get(icmp_type, str(icmp_type))}"
    if proto == 58:
        return f"ICMPv6 {ICMP6_TYPES.get(icmp_type, str(icmp_type))}"
    return f"IPv{family} protocol {proto}" if family else "unparsed"


_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def random_uuids(n: int) -> list[str]:
    """n random version-4 UUIDs, as str(uuid.uuid4()) makes them, from one read of the
    OS's randomness (uuid4() reads it once per call, which cost ~10 % of
    build_flows; bench/pipeline.py)."""
    raw = os.urandom(16 * n).hex()
    out = []
    for i in range(0, 32 * n, 32):
        h = raw[i : i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}")
    return out


def build_flows(
    events: np.ndarray,
    ctx: BuildContext,
    sequencer: Sequencer,
    mono_to_wall_ns: int | None = None,
    new_uuid: Callable[[], str] | None = None,
) -> list[flow_pb2.Flow]:
    """One Flow per event, in order, each with its Position (and a random uuid, or
    new_uuid()'s)."""
    n = len(events)
    if n == 0:
        return []
    offset = (
        mono_to_wall_ns if mono_to_wall_ns is not None else time.time_ns() - time.monotonic_ns()
    )
    names = events.dtype.names or ()
    cols = {name: events[name].tolist() for name in names if name not in ("saddr", "daddr")}
    saddr = [bytes(a) for a in events["saddr"]]
    daddr = [bytes(a) for a in events["daddr"]]
    first_seq = sequencer.take(n)
    uuids = random_uuids(n) if new_uuid is None else [new_uuid() for _ in range(n)]
    lookup = ctx.directory.lookup
    services = ctx.directory.services
    out: list[flow_pb2.Flow] = []
    for i in range(n):
        family = cols["family"][i]
        proto = cols["proto"][i]
        hook_dir = cols["direction"][i]
        verdict = cols["verdict"][i]
        is_reply = bool(cols["is_reply"][i])
        reason = cols["reason"][i]
        src_id = cols["src_identity"][i]
        dst_id = cols["dst_identity"][i]
        f = flow_pb2.Flow(
            uuid=uuids[i],
            verdict=verdict,
            Type=flow_pb2.L3_L4,
            node_name=ctx.node_name,
            source=lookup(saddr[i], src_id) if family else None,
            destination=lookup(daddr[i], dst_id) if family else None,
            Summary=_summary(proto, cols["tcp_flags"][i], cols["icmp_type"][i], family),
        )
        f.time.FromNanoseconds(cols["ts_ns"][i] + offset)
        if family:
            f.IP.source = _addr(family, saddr[i])
            f.IP.destination = _addr(family, daddr[i])
            f.IP.ipVersion = flow_pb2.IPv4 if family == 4 else flow_pb2.IPv6
            # identities as the datapath saw them win over the directory's view
            if src_id:
                f.source.identity = src_id
            if dst_id:
                f.destination.identity = dst_id
        sport, dport = cols["sport"][i], cols["dport"][i]
        if proto == 6:
            f.l4.TCP.source_port = sport
            f.l4.TCP.destination_port = dport
            if cols["tcp_flags"][i]:
                f.l4.TCP.flags.CopyFrom(_tcp_flags(cols["tcp_flags"][i]))
        elif proto == 17:
            f.l4.UDP.source_port = sport
            f.l4.UDP.destination_port = dport
        elif proto == 132:
            f.l4.SCTP.source_port = sport
            f.l4.SCTP.destination_port = dport
        elif proto == 1:
            f.l4.ICMPv4.type = cols["icmp_type"][i]
            f.l4.ICMPv4.code = cols["icmp_code"][i]
        elif proto == 58:
            f.l4.ICMPv6.type = cols["icmp_type"][i]
            f.l4.ICMPv6.code = cols["icmp_code"][i]
        if services and proto in (6, 17, 132):
            svc = services.get((saddr[i], sport))
            if svc is not None:
                f.source_service.CopyFrom(svc)
            svc = services.get((daddr[i], dport))
            if svc is not None:
                f.destination_service.CopyFrom(svc)
        # the connection's direction from the endpoint's point of view
        conn_dir = hook_dir ^ 1 if is_reply else hook_dir
        f.traffic_direction = flow_pb2.INGRESS if conn_dir == L.DIR_INGRESS else flow_pb2.EGRESS
        f.is_reply.value = is_reply
        f.reply = is_reply
        ifindex = cols["ifindex"][i]
        f.interface.index = ifindex
        f.interface.name = ctx.interfaces.get(ifindex, "")
        if hook_dir == L.DIR_INGRESS:
            f.trace_observation_point = flow_pb2.TO_ENDPOINT
            obs = TRACE_TO_LXC
        else:
            f.trace_observation_point = flow_pb2.FROM_ENDPOINT
            obs = TRACE_FROM_LXC
        drop_reason = cols["drop_reason"][i]
        detail = ""
        attribution = (
            ctx.attributions.lookup(cols["attribution"][i]) if cols["attribution"][i] else None
        )
        if verdict == flow_pb2.DROPPED:
            f.drop_reason = drop_reason
            f.drop_reason_desc = drop_reason  # type: ignore[assignment]
            f.event_type.type = MSG_DROP
            f.event_type.sub_type = drop_reason
        else:
            f.event_type.type = MSG_TRACE
            f.event_type.sub_type = obs
        if attribution is not None:
            policies = [_policy(p) for p in attribution.policies]
            ingress = attribution.direction == "Ingress"
            if attribution.verdict == "allow":
                (f.ingress_allowed_by if ingress else f.egress_allowed_by).extend(policies)
            else:
                (f.ingress_denied_by if ingress else f.egress_denied_by).extend(policies)
                detail = "default-deny"
        elif verdict in (flow_pb2.DROPPED, flow_pb2.AUDIT) and drop_reason == L.DROP_POLICY_DENIED:
            detail = "default-deny"
        ext = extensions_pb2.FlowExtension(
            packets=cols["packets"][i],
            bytes=cols["bytes"][i],
            reply_packets=cols["reply_packets"][i],
            reply_bytes=cols["reply_bytes"][i],
            suppressed_drops=cols["suppressed"][i],
            position=extensions_pb2.Position(
                collector_id=sequencer.collector_id,
                boot_id=sequencer.boot_id,
                sequence=first_seq + i,
            ),
            ct_state=CT_STATES.get(cols["ct_state"][i], extensions_pb2.CT_UNKNOWN),
            reason=EVENT_REASONS.get(reason, extensions_pb2.EVENT_REASON_UNKNOWN),
            aggregation=AGGREGATION_NAMES.get(ctx.aggregation, ""),
            drop_detail=detail,
        )
        f.extensions.type_url = EXTENSION_TYPE_URL
        f.extensions.value = ext.SerializeToString()
        out.append(f)
    return out


def lost_event(source: int, count: int, cpu: int | None = None) -> flow_pb2.LostEvent:
    ev = flow_pb2.LostEvent(source=source, num_events_lost=count)  # type: ignore[arg-type]
    if cpu is not None:
        ev.cpu.value = cpu
    return ev


def event_array(records: Sequence[bytes]) -> np.ndarray:
    """A structured array over raw perf records (each exactly one flow_event)."""
    return np.frombuffer(b"".join(records), dtype=L.EVENT_DTYPE)
