"""Flows as table rows, in Hubble's words. Names and the compact line come from
``sensilla.output`` (the printers of ``sensilla observe``)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from sensilla.output import PrinterOptions, fields, make_printer
from sensilla.protos import flow_pb2, observer_pb2

_PLAIN = fields.Colorer(False)

TCP_FLAG_NAMES = ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS")

# What the Flows table shows, in this order (the export has every column of
# ROW_COLUMNS).
TABLE_COLUMNS = ["time", "source", "destination", "port", "verdict", "drop_reason",
                 "tcp_flags", "node"]
ROW_COLUMNS = [*TABLE_COLUMNS, "is_reply", "direction", "type", "source_ip", "source_port",
               "destination_ip", "destination_port", "protocol", "source_identity",
               "destination_identity", "source_workload", "destination_workload",
               "policies", "uuid"]
TABLE_LABELS = {
    "time": "Time",
    "source": "Source",
    "destination": "Destination",
    "port": "Port/Protocol",
    "verdict": "Verdict",
    "drop_reason": "Drop reason",
    "tcp_flags": "TCP flags",
    "node": "Node",
}


def flow_time(f: flow_pb2.Flow) -> datetime | None:
    if not f.HasField("time"):
        return None
    return f.time.ToDatetime(tzinfo=UTC)


def endpoint_name(ep: flow_pb2.Endpoint, ip: str, *, service: flow_pb2.Service | None = None,
                  names: Sequence[str] = ()) -> str:
    """Hubble's name for one end (``namespace/pod``, a service, DNS names, else the
    address, as sensilla.output prints it), except that a reserved entity is shown
    by name (``world``, ``host``…) rather than by address, as Hubble UI does."""
    ns, pod = ep.namespace, ep.pod_name
    svc = service.name if service is not None and service.name else ""
    if svc and not pod:
        ns = service.namespace if service is not None else ns
    name = fields.hostname(_PLAIN, ip, "", ns, pod, svc, list(names), True)
    if not pod and not svc and not names:
        for label in ep.labels:
            if label.startswith("reserved:"):
                return label.split(":", 1)[1]
    return name or (f"identity {ep.identity}" if ep.identity else "?")


def protocol_and_ports(f: flow_pb2.Flow) -> tuple[str, int, int]:
    """(protocol, source port, destination port); ICMP reports type and code."""
    l4 = f.l4
    kind = l4.WhichOneof("protocol")
    if kind == "TCP":
        return "TCP", l4.TCP.source_port, l4.TCP.destination_port
    if kind == "UDP":
        return "UDP", l4.UDP.source_port, l4.UDP.destination_port
    if kind == "SCTP":
        return "SCTP", l4.SCTP.source_port, l4.SCTP.destination_port
    if kind == "ICMPv4":
        return "ICMPv4", l4.ICMPv4.type, l4.ICMPv4.code
    if kind == "ICMPv6":
        return "ICMPv6", l4.ICMPv6.type, l4.ICMPv6.code
    return "", 0, 0


def tcp_flags(f: flow_pb2.Flow) -> str:
    if f.l4.WhichOneof("protocol") != "TCP" or not f.l4.TCP.HasField("flags"):
        return ""
    flags = f.l4.TCP.flags
    return ", ".join(n for n in TCP_FLAG_NAMES if getattr(flags, n))


def _workload(ep: flow_pb2.Endpoint) -> str:
    if not ep.workloads:
        return ""
    w = ep.workloads[0]
    return f"{w.kind}/{w.name}" if w.kind else w.name


def _policies(f: flow_pb2.Flow) -> str:
    parts = []
    for label, items in (("egress allowed", f.egress_allowed_by),
                         ("ingress allowed", f.ingress_allowed_by),
                         ("egress denied", f.egress_denied_by),
                         ("ingress denied", f.ingress_denied_by)):
        names = [f"{p.namespace}/{p.name}" if p.namespace else p.name for p in items]
        if names:
            parts.append(f"{label} by {', '.join(names)}")
    return "; ".join(parts)


def flow_row(f: flow_pb2.Flow) -> dict[str, Any]:
    proto, sport, dport = protocol_and_ports(f)
    src_ip, dst_ip = f.IP.source, f.IP.destination
    is_icmp = proto.startswith("ICMP")
    if is_icmp:
        port = f"{proto} type {sport}/{dport}"
    elif proto:
        port = f"{dport}/{proto}"
    else:
        port = ""
    try:
        verdict = flow_pb2.Verdict.Name(f.verdict)
    except ValueError:
        verdict = str(f.verdict)
    drop = ""
    if f.drop_reason_desc:
        try:
            drop = flow_pb2.DropReason.Name(f.drop_reason_desc)
        except ValueError:
            drop = str(f.drop_reason_desc)
    reply = ""
    if f.HasField("is_reply"):
        reply = "yes" if f.is_reply.value else "no"
    return {
        "time": flow_time(f),
        "source": endpoint_name(f.source, src_ip, service=f.source_service,
                                names=f.source_names),
        "destination": endpoint_name(f.destination, dst_ip, service=f.destination_service,
                                     names=f.destination_names),
        "port": port,
        "verdict": verdict,
        "drop_reason": drop,
        "tcp_flags": tcp_flags(f),
        "node": f.node_name,
        "is_reply": reply,
        "direction": flow_pb2.TrafficDirection.Name(f.traffic_direction)
        if f.traffic_direction in flow_pb2.TrafficDirection.values() else "",
        "type": flow_pb2.FlowType.Name(f.Type) if f.Type in flow_pb2.FlowType.values() else "",
        "source_ip": src_ip,
        "source_port": None if is_icmp or not proto else sport,
        "destination_ip": dst_ip,
        "destination_port": None if is_icmp or not proto else dport,
        "protocol": proto,
        "source_identity": f.source.identity,
        "destination_identity": f.destination.identity,
        "source_workload": _workload(f.source),
        "destination_workload": _workload(f.destination),
        "policies": _policies(f),
        "uuid": f.uuid,
    }


def flows_frame(flows: Iterable[flow_pb2.Flow]) -> pd.DataFrame:
    """One row per flow, every column of ROW_COLUMNS, in the order given."""
    return pd.DataFrame([flow_row(f) for f in flows], columns=ROW_COLUMNS)


def to_csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    out = frame.copy()
    if "time" in out and len(out):
        out["time"] = [t.isoformat() if isinstance(t, datetime) else "" for t in out["time"]]
    out.to_csv(buf, index=False)
    return buf.getvalue()


def compact(f: flow_pb2.Flow) -> str:
    """The flow as ``sensilla observe -o compact`` prints it (with the node name)."""
    out = io.StringIO()
    printer = make_printer("compact", PrinterOptions(out=out, err=io.StringIO(), color="never",
                                                     node_name=True))
    resp = observer_pb2.GetFlowsResponse(flow=f, node_name=f.node_name)
    if f.HasField("time"):
        resp.time.CopyFrom(f.time)
    printer.write(resp)
    printer.close()
    return out.getvalue().rstrip("\n")
