"""Stream positions: where a SIEM client (or an exporter) stands in the relay's flows.

A position maps each collector boot ``(collector_id, boot_id)`` to the highest flow
sequence delivered from it. The relay delivers each boot's flows in sequence order
and never skips a sequence that could still arrive, so "the highest sequence seen
per boot" is a complete description of what was delivered: every flow of that boot
with a sequence at or below it was delivered (or was lost before it reached the
relay, which the stream reported with a LostEvent), none above it. Boots absent from
a position have had nothing delivered.

On the wire it is a ``sensilla.flow.v1.StreamPosition`` (one Position per boot); in
files it is JSON ``{"positions": [{"collector_id": …, "boot_id": "…", "sequence":
"…"}]}`` (protobuf's JSON mapping, 64-bit numbers as strings).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import json_format

from sensilla.filters import flow_extension
from sensilla.protos import extensions_pb2, flow_pb2, observer_pb2

BootKey = tuple[str, int]
Positions = dict[BootKey, int]

RESUME_TYPE_URL = "type.googleapis.com/sensilla.flow.v1.ResumeRequest"
MAX_POSITIONS = 100_000  # boots in one StreamPosition
MAX_COLLECTOR_ID = 253


class PositionError(ValueError):
    """A position a client sent is malformed; the message names the field."""


def flow_position(flow: flow_pb2.Flow) -> tuple[str, int, int] | None:
    """The (collector_id, boot_id, sequence) a flow carries, if any."""
    ext = flow_extension(flow)
    if ext is None or not ext.HasField("position"):
        return None
    p = ext.position
    return (p.collector_id, p.boot_id, p.sequence)


def advance(positions: Positions, collector_id: str, boot_id: int, seq: int) -> None:
    key = (collector_id, boot_id)
    if seq > positions.get(key, 0):
        positions[key] = seq


def advance_with_flow(positions: Positions, flow: flow_pb2.Flow) -> bool:
    """Move ``positions`` past a received flow; False if the flow carries none."""
    pos = flow_position(flow)
    if pos is None:
        return False
    advance(positions, *pos)
    return True


def from_proto(msg: extensions_pb2.StreamPosition, field: str = "after") -> Positions:
    """A StreamPosition as a dict; raises PositionError naming the bad entry."""
    if len(msg.positions) > MAX_POSITIONS:
        raise PositionError(
            f"{field}.positions: {len(msg.positions)} entries; at most {MAX_POSITIONS}"
        )
    out: Positions = {}
    for i, p in enumerate(msg.positions):
        where = f"{field}.positions[{i}]"
        if not p.collector_id or len(p.collector_id) > MAX_COLLECTOR_ID:
            raise PositionError(f"{where}.collector_id must be 1..{MAX_COLLECTOR_ID} characters")
        if not p.collector_id.isprintable():
            raise PositionError(f"{where}.collector_id must be printable")
        if p.boot_id <= 0:
            raise PositionError(f"{where}.boot_id must be positive")
        key = (p.collector_id, p.boot_id)
        if key in out:
            raise PositionError(f"{where}: boot {p.collector_id}/{p.boot_id} listed twice")
        out[key] = p.sequence
    return out


def to_proto(positions: Mapping[BootKey, int]) -> extensions_pb2.StreamPosition:
    msg = extensions_pb2.StreamPosition()
    for (c, b), s in sorted(positions.items()):
        msg.positions.add(collector_id=c, boot_id=b, sequence=s)
    return msg


def to_json(positions: Mapping[BootKey, int]) -> dict[str, Any]:
    return json_format.MessageToDict(to_proto(positions), preserving_proto_field_name=True)


def from_json(data: Any, field: str = "position") -> Positions:
    msg = extensions_pb2.StreamPosition()
    try:
        json_format.ParseDict(data or {}, msg)
    except json_format.ParseError as exc:
        raise PositionError(f"{field}: {exc}") from None
    return from_proto(msg, field)


def resume_request(request: observer_pb2.GetFlowsRequest) -> extensions_pb2.ResumeRequest | None:
    """The ResumeRequest in GetFlowsRequest.extensions; None when the request carries
    no extension. Raises PositionError for another extension type or a bad value."""
    if not request.HasField("extensions"):
        return None
    ext = request.extensions
    if not ext.type_url and not ext.value:
        return None
    if ext.type_url.rsplit("/", 1)[-1] != extensions_pb2.ResumeRequest.DESCRIPTOR.full_name:
        raise PositionError(f"extensions: {ext.type_url or 'this extension'} is not supported")
    out = extensions_pb2.ResumeRequest()
    try:
        out.ParseFromString(ext.value)
    except Exception:
        raise PositionError("extensions: not a valid sensilla.flow.v1.ResumeRequest") from None
    from_proto(out.after, "extensions.after")  # validate
    return out


def pack_resume(
    positions: Mapping[BootKey, int] | extensions_pb2.StreamPosition | None,
    request: observer_pb2.GetFlowsRequest | None = None,
) -> observer_pb2.GetFlowsRequest:
    """A GetFlowsRequest (``request`` or a new one) that resumes after ``positions``."""
    req = request if request is not None else observer_pb2.GetFlowsRequest()
    rr = extensions_pb2.ResumeRequest()
    if isinstance(positions, extensions_pb2.StreamPosition):
        rr.after.CopyFrom(positions)
    elif positions:
        rr.after.CopyFrom(to_proto(positions))
    req.extensions.Pack(rr)
    return req


def merged(positions: Iterable[Mapping[BootKey, int]]) -> Positions:
    out: Positions = {}
    for p in positions:
        for (c, b), s in p.items():
            advance(out, c, b, s)
    return out
