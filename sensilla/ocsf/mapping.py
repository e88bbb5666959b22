"""Hubble flows as OCSF Network Activity events (class_uid 4001).

``flow_to_ocsf(flow)`` returns one event (a JSON-ready dict) of the released OCSF
schema version ``OCSF_VERSION``; docs/siem.md has the mapping table. In short:

- activity: Refuse (5) for a dropped flow; Close (2) when the connection ends (the
  datapath's end event, or TCP FIN/RST); Open (1) when it starts (the datapath's
  start event, or a TCP SYN without ACK), except on the reply side; else Traffic (6);
- security control: action and disposition for every verdict (forwarded: Allowed /
  Allowed; dropped: Denied / Blocked for a policy drop, Dropped for any other drop;
  audited: Allowed / Detected, the drop that audit mode let through), the policy that
  allowed, denied or (audit) would have denied the flow, "default-deny" when no
  policy allowed the traffic of a pod that policies select;
- endpoints: addresses, ports, the pod in ``container`` (name, uid "ns/pod", labels,
  orchestrator Kubernetes), the destination service in ``svc_name``;
- ``connection_info``: IANA protocol number and name, IP version, direction (from the
  observed pod: ingress = Inbound, egress = Outbound), TCP flags;
- ``traffic``: packets and bytes of both directions since the previous report;
- ``metadata``: product Sensilla (vendor Sensilla, its version), the flow's uuid as
  ``uid``, the node that observed the flow as ``reporter``, the profiles used;
- ``unmapped``: what OCSF has no attribute for (namespaces, identities, workloads,
  Hubble's verdict and drop reason, ICMP type and code, the flow's stream position).
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from sensilla import __version__
from sensilla.filters import flow_extension
from sensilla.protos import extensions_pb2, flow_pb2

OCSF_VERSION = "1.7.0"
CLASS_UID = 4001
CATEGORY_UID = 4

ACTIVITY_OPEN = 1
ACTIVITY_CLOSE = 2
ACTIVITY_REFUSE = 5
ACTIVITY_TRAFFIC = 6
ACTIVITIES = {1: "Open", 2: "Close", 3: "Reset", 4: "Fail", 5: "Refuse", 6: "Traffic"}

ACTION = {0: "Unknown", 1: "Allowed", 2: "Denied"}
DISPOSITION_ALLOWED = 1
DISPOSITION_BLOCKED = 2
DISPOSITION_DROPPED = 6
DISPOSITION_DETECTED = 15
DISPOSITIONS = {0: "Unknown", 1: "Allowed", 2: "Blocked", 6: "Dropped", 15: "Detected"}
SEVERITIES = {1: "Informational", 2: "Low", 3: "Medium"}
STATUSES = {0: "Unknown", 1: "Success", 2: "Failure"}
DIRECTIONS = {0: "Unknown", 1: "Inbound", 2: "Outbound"}
IP_VERSIONS = {
    4: "Internet Protocol version 4 (IPv4)",
    6: "Internet Protocol version 6 (IPv6)",
}
OBSERVATION_POINTS = {1: "Source", 2: "Destination"}

PROTOCOLS = {  # l4 oneof -> (IANA number, name)
    "TCP": (6, "tcp"),
    "UDP": (17, "udp"),
    "ICMPv4": (1, "icmp"),
    "ICMPv6": (58, "ipv6-icmp"),
    "SCTP": (132, "sctp"),
}
TCP_FLAG_BITS = (  # OCSF tcp_flags: the TCP header's flag bits
    ("FIN", 0x01),
    ("SYN", 0x02),
    ("RST", 0x04),
    ("PSH", 0x08),
    ("ACK", 0x10),
    ("URG", 0x20),
    ("ECE", 0x40),
    ("CWR", 0x80),
    ("NS", 0x100),
)
POLICY_DROP_REASONS = frozenset({flow_pb2.POLICY_DENIED, flow_pb2.POLICY_DENY})
ALLOWED_VERDICTS = frozenset(
    {flow_pb2.FORWARDED, flow_pb2.REDIRECTED, flow_pb2.TRACED, flow_pb2.TRANSLATED}
)
DEFAULT_DENY = "default-deny"
PROFILES = ["security_control", "container"]


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def _policy_ref(p: flow_pb2.Policy) -> str:
    return f"{p.namespace}/{p.name}" if p.namespace else p.name


def _policy(p: flow_pb2.Policy, applied: bool, desc: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": _policy_ref(p),
        "uid": _policy_ref(p),
        "type": p.kind or "NetworkPolicy",
        "is_applied": applied,
        "desc": desc,
    }
    if p.revision:
        out["version"] = str(p.revision)
    return out


def _default_deny(applied: bool) -> dict[str, Any]:
    return {
        "name": DEFAULT_DENY,
        "uid": DEFAULT_DENY,
        "type": "NetworkPolicy",
        "is_applied": applied,
        "desc": (
            "No NetworkPolicy allows this traffic of a pod that NetworkPolicies select "
            "(Kubernetes default deny)"
        ),
    }


def _ports(flow: flow_pb2.Flow) -> tuple[int, int] | None:
    which = flow.l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        l4 = getattr(flow.l4, which)
        return int(l4.source_port), int(l4.destination_port)
    return None


def _time_ns(flow: flow_pb2.Flow) -> int:
    """The flow's time; 0 (unknown) when absent or not a valid Timestamp."""
    if not flow.HasField("time"):
        return 0
    try:
        return int(flow.time.ToNanoseconds())
    except ValueError:  # nanos out of range: a peer sent garbage
        return 0


def _ip(text: str) -> str:
    """An address as OCSF's ip_t wants it, or "" when the text is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def _endpoint(
    ep: flow_pb2.Endpoint, ip: str, port: int | None, service: flow_pb2.Service | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ip = _ip(ip) if ip else ""
    if ip:
        out["ip"] = ip
    if port and port <= 65535:  # port_t; a peer may send any uint32
        out["port"] = port
    if ep.pod_name:
        pod = f"{ep.namespace}/{ep.pod_name}" if ep.namespace else ep.pod_name
        out["name"] = pod
        container: dict[str, Any] = {
            "name": ep.pod_name,
            "uid": pod,
            "orchestrator": "Kubernetes",
        }
        if ep.labels:
            container["labels"] = list(ep.labels)
        out["container"] = container
    if ep.ID:
        out["uid"] = str(ep.ID)
    if service is not None and service.name:
        out["svc_name"] = (
            f"{service.namespace}/{service.name}" if service.namespace else service.name
        )
    if not out.keys() & {"ip", "uid", "name", "svc_name"}:
        out["name"] = "unknown"  # the class needs an identifiable endpoint
    return out


def _long(n: int) -> int:
    """A counter as OCSF's long_t (signed 64 bits) can carry it."""
    return min(int(n), 2**63 - 1)


def _k8s(ep: flow_pb2.Endpoint, service: flow_pb2.Service) -> dict[str, Any]:
    out: dict[str, Any] = {"identity": int(ep.identity)}
    if ep.namespace:
        out["namespace"] = ep.namespace
    if ep.pod_name:
        out["pod_name"] = ep.pod_name
    if ep.labels:
        out["labels"] = list(ep.labels)
    if ep.workloads:
        out["workloads"] = [{"name": w.name, "kind": w.kind} for w in ep.workloads]
    if ep.cluster_name:
        out["cluster_name"] = ep.cluster_name
    if service.name:
        out["service"] = {"name": service.name, "namespace": service.namespace}
    return out


def _activity(flow: flow_pb2.Flow, ext: extensions_pb2.FlowExtension | None) -> int:
    if flow.verdict == flow_pb2.DROPPED:
        return ACTIVITY_REFUSE
    reason = ext.reason if ext is not None else extensions_pb2.EVENT_REASON_UNKNOWN
    tcp = flow.l4.TCP if flow.l4.WhichOneof("protocol") == "TCP" else None
    flags = tcp.flags if tcp is not None and tcp.HasField("flags") else None
    if reason == extensions_pb2.EVENT_CONNECTION_END or (
        flags is not None and (flags.FIN or flags.RST)
    ):
        return ACTIVITY_CLOSE
    reply = flow.is_reply.value if flow.HasField("is_reply") else flow.reply
    if not reply and (
        reason == extensions_pb2.EVENT_CONNECTION_START
        or (flags is not None and flags.SYN and not flags.ACK)
    ):
        return ACTIVITY_OPEN
    return ACTIVITY_TRAFFIC


def _security(
    flow: flow_pb2.Flow, ext: extensions_pb2.FlowExtension | None
) -> tuple[int, int, dict[str, Any] | None]:
    """(action_id, disposition_id, policy)."""
    ingress = flow.traffic_direction == flow_pb2.INGRESS
    v = flow.verdict
    detail = ext.drop_detail if ext is not None else ""
    if v in ALLOWED_VERDICTS:
        allowed = list(flow.ingress_allowed_by if ingress else flow.egress_allowed_by) or list(
            flow.egress_allowed_by
        ) + list(flow.ingress_allowed_by)
        policy = (
            _policy(allowed[0], True, "This NetworkPolicy allowed the flow") if allowed else None
        )
        return 1, DISPOSITION_ALLOWED, policy
    denied = list(flow.ingress_denied_by if ingress else flow.egress_denied_by) or list(
        flow.egress_denied_by
    ) + list(flow.ingress_denied_by)
    if v == flow_pb2.DROPPED:
        policy_drop = flow.drop_reason_desc in POLICY_DROP_REASONS or bool(denied) or bool(detail)
        if denied and detail == DEFAULT_DENY:
            policy = _policy(
                denied[0],
                True,
                "No NetworkPolicy allows this traffic of a pod this policy selects "
                "(Kubernetes default deny)",
            )
        elif denied:
            policy = _policy(denied[0], True, "This policy denied the flow")
        elif policy_drop:
            policy = _default_deny(True)
        else:
            reason = _enum_name(flow_pb2.DropReason, flow.drop_reason_desc)
            policy = {
                "name": reason,
                "uid": reason,
                "type": "Datapath",
                "is_applied": True,
                "desc": "The datapath drops such packets whatever the NetworkPolicies say",
            }
        return 2, DISPOSITION_BLOCKED if policy_drop else DISPOSITION_DROPPED, policy
    if v == flow_pb2.AUDIT:
        # audit mode: a flow that policy would have dropped, let through and logged
        if denied:
            policy = _policy(
                denied[0],
                False,
                "Audit mode: this policy's default deny would drop the flow"
                if detail == DEFAULT_DENY
                else "Audit mode: this policy would deny the flow",
            )
        else:
            policy = _default_deny(False)
        return 1, DISPOSITION_DETECTED, policy
    return 0, 0, None


def flow_to_ocsf(flow: flow_pb2.Flow, *, observed_ns: int | None = None) -> dict[str, Any]:
    """One OCSF Network Activity event for a Hubble flow."""
    ext = flow_extension(flow)
    t_ns = _time_ns(flow)
    if t_ns <= 0:
        t_ns = observed_ns if observed_ns is not None else time.time_ns()
    activity = _activity(flow, ext)
    action, disposition, policy = _security(flow, ext)
    verdict = _enum_name(flow_pb2.Verdict, flow.verdict)
    dropped = flow.verdict == flow_pb2.DROPPED
    severity = 3 if dropped else 2 if flow.verdict == flow_pb2.AUDIT else 1
    status = 2 if dropped else 1 if action == 1 else 0
    which = flow.l4.WhichOneof("protocol")
    ports = _ports(flow)
    src = _endpoint(flow.source, flow.IP.source, ports[0] if ports else None, flow.source_service)
    dst = _endpoint(
        flow.destination, flow.IP.destination, ports[1] if ports else None, flow.destination_service
    )
    record: dict[str, Any] = {
        "activity_id": activity,
        "activity_name": ACTIVITIES[activity],
        "category_uid": CATEGORY_UID,
        "category_name": "Network Activity",
        "class_uid": CLASS_UID,
        "class_name": "Network Activity",
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"Network Activity: {ACTIVITIES[activity]}",
        "severity_id": severity,
        "severity": SEVERITIES[severity],
        "status_id": status,
        "status": STATUSES[status],
        "time": t_ns // 1_000_000,
        "metadata": _metadata(flow, ext, verdict),
        "src_endpoint": src,
        "dst_endpoint": dst,
    }
    if action or disposition:
        record["action_id"] = action
        record["action"] = ACTION[action]
        record["disposition_id"] = disposition
        record["disposition"] = DISPOSITIONS[disposition]
    if policy is not None:
        record["policy"] = policy
    if dropped:
        record["status_detail"] = _enum_name(flow_pb2.DropReason, flow.drop_reason_desc)
    conn: dict[str, Any] = {}
    if which in PROTOCOLS:
        conn["protocol_num"], conn["protocol_name"] = PROTOCOLS[which]
    if flow.IP.ipVersion in (flow_pb2.IPv4, flow_pb2.IPv6):
        ver = 4 if flow.IP.ipVersion == flow_pb2.IPv4 else 6
        conn["protocol_ver_id"] = ver
        conn["protocol_ver"] = IP_VERSIONS[ver]
    direction = {flow_pb2.INGRESS: 1, flow_pb2.EGRESS: 2}.get(flow.traffic_direction, 0)
    conn["direction_id"] = direction
    conn["direction"] = DIRECTIONS[direction]
    if which == "TCP" and flow.l4.TCP.HasField("flags"):
        bits = 0
        for name, bit in TCP_FLAG_BITS:
            if getattr(flow.l4.TCP.flags, name):
                bits |= bit
        conn["tcp_flags"] = bits
    record["connection_info"] = conn
    if ext is not None:
        record["traffic"] = {
            "packets": _long(ext.packets + ext.reply_packets),
            "bytes": _long(ext.bytes + ext.reply_bytes),
            "packets_out": _long(ext.packets),
            "bytes_out": _long(ext.bytes),
            "packets_in": _long(ext.reply_packets),
            "bytes_in": _long(ext.reply_bytes),
        }
    obs = {flow_pb2.FROM_ENDPOINT: 1, flow_pb2.TO_ENDPOINT: 2}.get(flow.trace_observation_point)
    if obs is not None:
        record["observation_point_id"] = obs
        record["observation_point"] = OBSERVATION_POINTS[obs]
    if flow.HasField("is_reply"):
        record["is_src_dst_assignment_known"] = not flow.is_reply.value
    record["message"] = _message(flow, src, dst, which, verdict)
    record["unmapped"] = _unmapped(flow, ext, verdict, which)
    return record


def _metadata(
    flow: flow_pb2.Flow, ext: extensions_pb2.FlowExtension | None, verdict: str
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {
            "name": "Sensilla",
            "vendor_name": "Sensilla",
            "version": __version__,
            "feature": {"name": "Network flows"},
        },
        "log_name": "flows",
        "log_provider": "Sensilla relay",
        "event_code": verdict,
        "profiles": list(PROFILES),
    }
    if flow.uuid:
        meta["uid"] = flow.uuid
    if flow.node_name:
        meta["reporter"] = {"name": flow.node_name, "hostname": flow.node_name}
    return meta


def _message(
    flow: flow_pb2.Flow, src: dict[str, Any], dst: dict[str, Any], which: str | None, verdict: str
) -> str:
    def side(ep: dict[str, Any]) -> str:
        who = ep.get("name") or ep.get("ip") or "?"
        return f"{who}:{ep['port']}" if "port" in ep else str(who)

    proto = PROTOCOLS[which][1].upper() if which in PROTOCOLS else "IP"
    return f"{side(src)} -> {side(dst)} {proto} {verdict}"


def _unmapped(
    flow: flow_pb2.Flow, ext: extensions_pb2.FlowExtension | None, verdict: str, which: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "verdict": verdict,
        "node_name": flow.node_name,
        "traffic_direction": _enum_name(flow_pb2.TrafficDirection, flow.traffic_direction),
        "src": _k8s(flow.source, flow.source_service),
        "dst": _k8s(flow.destination, flow.destination_service),
    }
    if flow.HasField("is_reply"):
        out["is_reply"] = flow.is_reply.value
    if flow.verdict == flow_pb2.DROPPED:
        out["drop_reason_desc"] = _enum_name(flow_pb2.DropReason, flow.drop_reason_desc)
    if which in ("ICMPv4", "ICMPv6"):
        icmp = getattr(flow.l4, which)
        out["icmp"] = {"type": int(icmp.type), "code": int(icmp.code)}
    policies = {
        name: [_policy_ref(p) for p in getattr(flow, name)]
        for name in (
            "ingress_allowed_by",
            "egress_allowed_by",
            "ingress_denied_by",
            "egress_denied_by",
        )
        if len(getattr(flow, name))
    }
    if policies:
        out["policies"] = policies
    if flow.interface.name or flow.interface.index:
        out["interface"] = {"index": int(flow.interface.index), "name": flow.interface.name}
    if ext is not None:
        if ext.drop_detail:
            out["drop_detail"] = ext.drop_detail
        if ext.suppressed_drops:
            out["suppressed_drops"] = int(ext.suppressed_drops)
        out["event_reason"] = _enum_name(extensions_pb2.EventReason, ext.reason)
        out["ct_state"] = _enum_name(extensions_pb2.ConntrackState, ext.ct_state)
        if ext.HasField("position"):
            p = ext.position
            # 64-bit numbers as strings (JSON readers lose precision past 2^53)
            out["position"] = {
                "collector_id": p.collector_id,
                "boot_id": str(p.boot_id),
                "sequence": str(p.sequence),
            }
    return out
