"""flow_row(flow): the FLOW_COLUMNS values of a flow.Flow (what the store inserts next
to the serialized flow, and what the compiled SQL conditions read)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from sensilla.filters.base import l4_protocol
from sensilla.filters.ip import address_halves
from sensilla.filters.selector import canonical_label
from sensilla.filters.service import service_key
from sensilla.filters.tcp_flags import flags_mask
from sensilla.filters.workload import first_workload
from sensilla.protos import extensions_pb2, flow_pb2

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_UINT32_MAX = 2**32 - 1


def _clamp(value: int, hi: int, lo: int = 0) -> int:
    """Out-of-range enum numbers become ``hi`` (never another, valid, number)."""
    return value if lo <= value <= hi else hi


def flow_extension(flow: flow_pb2.Flow) -> extensions_pb2.FlowExtension | None:
    """The Sensilla FlowExtension in Flow.extensions, if any."""
    if not flow.HasField("extensions"):
        return None
    ext = extensions_pb2.FlowExtension()
    try:
        if not flow.extensions.Unpack(ext):
            return None
    except DecodeError:  # a FlowExtension that does not parse is none at all
        return None
    return ext


def _labels(labels: Any) -> list[str]:
    out = []
    for text in labels:
        canon = canonical_label(text)
        if canon is not None:
            out.append(canon)
    return out


def _policies(*groups: Any) -> list[str]:
    return [f"{p.namespace}/{p.name}" for group in groups for p in group]


def flow_row(flow: flow_pb2.Flow) -> dict[str, Any]:
    """Exactly the FLOW_COLUMNS keys, with Python values ready for the drivers
    (``time`` as integer seconds, which clickhouse-driver and ClickHouse accept for
    DateTime)."""
    ext = flow_extension(flow)
    pos = ext.position if ext is not None else extensions_pb2.Position()
    seconds, nanos = flow.time.seconds, flow.time.nanos
    time_ns = max(_INT64_MIN, min(_INT64_MAX, seconds * 1_000_000_000 + nanos))
    src_ip, src_hi, src_lo = address_halves(flow.IP.source)
    dst_ip, dst_hi, dst_lo = address_halves(flow.IP.destination)
    proto = l4_protocol(flow)
    src_port = dst_port = icmp_type = icmp_code = tcp_flags = 0
    if proto in ("tcp", "udp", "sctp"):
        m = getattr(flow.l4, proto.upper())
        src_port, dst_port = m.source_port & 0xFFFF, m.destination_port & 0xFFFF
        if proto == "tcp":
            tcp_flags = flags_mask(m.flags)
    elif proto in ("icmpv4", "icmpv6"):
        m = flow.l4.ICMPv4 if proto == "icmpv4" else flow.l4.ICMPv6
        icmp_type, icmp_code = m.type & 0xFF, m.code & 0xFF
    is_reply = (2 if flow.is_reply.value else 1) if flow.HasField("is_reply") else 0
    src, dst = flow.source, flow.destination
    src_wl, src_wl_kind = first_workload(src)
    dst_wl, dst_wl_kind = first_workload(dst)
    iface = flow.interface
    return {
        "collector_id": pos.collector_id,
        "boot_id": pos.boot_id,
        "seq": pos.sequence,
        "time_ns": time_ns,
        "time": max(0, min(_UINT32_MAX, seconds)),
        "uuid": flow.uuid,
        "node_name": flow.node_name,
        "verdict": _clamp(flow.verdict, 0xFF),
        "drop_reason": _clamp(flow.drop_reason_desc, 0xFFFF),
        "event_type": flow.event_type.type,
        "event_subtype": flow.event_type.sub_type,
        "traffic_direction": _clamp(flow.traffic_direction, 0xFF),
        "is_reply": is_reply,
        "ip_version": _clamp(flow.IP.ipVersion, 0xFF),
        "src_ip": src_ip,
        "dst_ip": dst_ip,
        "protocol": proto,
        "src_port": src_port,
        "dst_port": dst_port,
        "tcp_flags": tcp_flags,
        "icmp_type": icmp_type,
        "icmp_code": icmp_code,
        "src_namespace": src.namespace,
        "src_pod": src.pod_name,
        "src_identity": src.identity,
        "src_labels": _labels(src.labels),
        "src_workload": src_wl,
        "src_workload_kind": src_wl_kind,
        "src_service": service_key(flow.source_service),
        "dst_namespace": dst.namespace,
        "dst_pod": dst.pod_name,
        "dst_identity": dst.identity,
        "dst_labels": _labels(dst.labels),
        "dst_workload": dst_wl,
        "dst_workload_kind": dst_wl_kind,
        "dst_service": service_key(flow.destination_service),
        "packets": ext.packets if ext is not None else 0,
        "bytes": ext.bytes if ext is not None else 0,
        "suppressed_drops": ext.suppressed_drops if ext is not None else 0,
        "policies_allowed": _policies(flow.ingress_allowed_by, flow.egress_allowed_by),
        "policies_denied": _policies(flow.ingress_denied_by, flow.egress_denied_by),
        "interface_index": iface.index,
        "interface_name": iface.name,
        "src_ip_hi": src_hi,
        "src_ip_lo": src_lo,
        "dst_ip_hi": dst_hi,
        "dst_ip_lo": dst_lo,
    }
