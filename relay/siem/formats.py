"""Exporter record formats: Hubble JSON (one GetFlowsResponse per line, as Hubble's
exporter writes: ``{"flow":{…},"node_name":"…","time":"…"}``, lost events as
``{"lost_events":{…},…}``) and OCSF (one Network Activity event per line).

The field mask (Hubble's exporter ``fieldMask``) keeps only the listed flow fields;
for OCSF it applies to the flow before the mapping (the event's required attributes
are always there)."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import field_mask_pb2

from relay.siem.resume import FLOW, StreamItem
from sensilla.filters.fieldmask import masked_flow
from sensilla.ocsf import flow_to_ocsf
from sensilla.output.formats.jsonpb import to_json
from sensilla.protos import flow_pb2, observer_pb2

# syslog severities by verdict (RFC 5424: 4 warning, 5 notice, 6 informational)
SEVERITY = {flow_pb2.DROPPED: 4, flow_pb2.AUDIT: 5, flow_pb2.ERROR: 3}


def encode(item: StreamItem, fmt: str, mask: field_mask_pb2.FieldMask | None) -> bytes | None:
    """One record (no newline); None when the format has nothing for the item (OCSF
    has no event for a loss notice)."""
    if item.kind == FLOW and item.flow is not None:
        flow = masked_flow(item.flow, mask)
        if fmt == "ocsf":
            record = flow_to_ocsf(flow, observed_ns=item.time_ns)
            return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        resp = observer_pb2.GetFlowsResponse(flow=flow, node_name=item.node_name)
        resp.time.CopyFrom(item.flow.time)
        return to_json(resp).encode()
    if fmt == "ocsf" or item.lost is None:
        return None
    resp = observer_pb2.GetFlowsResponse(lost_events=item.lost, node_name=item.node_name)
    if item.time_ns:
        resp.time.FromNanoseconds(item.time_ns)
    return to_json(resp).encode()


def syslog_meta(item: StreamItem) -> dict[str, Any]:
    """Header fields of a syslog message: severity, time, host, structured data
    (the flow's uuid and position, for receivers that drop duplicates)."""
    if item.kind == FLOW and item.flow is not None:
        f = item.flow
        c, b = item.key
        return {
            "severity": SEVERITY.get(f.verdict, 6),
            "time_ns": item.time_ns,
            "hostname": item.node_name,
            "sd": {"uuid": f.uuid, "collector": c, "boot": str(b), "seq": str(item.seq)},
        }
    return {"severity": 4, "time_ns": item.time_ns, "hostname": item.node_name, "sd": {}}
