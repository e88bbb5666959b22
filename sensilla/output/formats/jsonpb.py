"""``-o json`` / ``-o jsonpb``: one JSON object per response, as Hubble writes them
(protobuf JSON with the .proto field names, fields in declaration order, compact,
HTML-safe escapes like Go's encoding/json):
``{"flow":{...},"node_name":"k8s1","time":"2024-05-01T10:00:00.123456789Z"}``.
Node status events go to stderr, flows and lost events to stdout."""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format, struct_pb2, symbol_database
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from sensilla.output.base import Printer
from sensilla.protos import observer_pb2

_WELL_KNOWN = frozenset(
    [
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Any",
        "google.protobuf.FieldMask",
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.BoolValue",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.FloatValue",
        "google.protobuf.DoubleValue",
    ]
)
_GO_HTML_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def _reorder(value: Any, desc: Any) -> Any:
    """Put the keys of a MessageToDict result in .proto declaration order (Go's
    protojson order) throughout."""
    if not isinstance(value, dict) or desc.full_name in _WELL_KNOWN:
        return value
    out: dict[str, Any] = {}
    for fd in desc.fields:
        if fd.name not in value:
            continue
        v = value[fd.name]
        mt = fd.message_type
        if (
            fd.type == FieldDescriptor.TYPE_MESSAGE
            and mt is not None
            and not mt.GetOptions().map_entry
        ):
            v = [_reorder(x, mt) for x in v] if isinstance(v, list) else _reorder(v, mt)
        out[fd.name] = v
    for k, v in value.items():  # anything unexpected keeps its place at the end
        out.setdefault(k, v)
    return out


# the range protobuf's JSON mapping can print (0001-01-01 .. 9999-12-31, +-10000 years)
_TS_SECONDS = (-62_135_596_800, 253_402_300_799)
_DURATION_SECONDS = 315_576_000_000


def _printable_any(msg: Any) -> None:
    """An Any whose type is known and whose value parses: its content made printable;
    anything else becomes a Struct holding the type URL and the bytes (base64)."""
    try:
        cls = symbol_database.Default().GetSymbol(msg.type_url.rpartition("/")[2])
        inner = cls()
        inner.ParseFromString(msg.value)
    except (KeyError, DecodeError, ValueError):
        raw = struct_pb2.Struct()
        raw.update({"type_url": msg.type_url, "value": base64.b64encode(msg.value).decode()})
        msg.Pack(raw)
        return
    _printable(inner)
    msg.Pack(inner, type_url_prefix=msg.type_url.rpartition("/")[0] or "type.googleapis.com")


def _printable(msg: Message) -> None:
    """Make `msg` printable by protobuf's JSON mapping, whatever a peer sent: every
    Timestamp and Duration brought into the range it can print, every Any made of a
    known type whose value parses (or turned into a Struct with its bytes)."""
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Any":
        _printable_any(msg)
        return
    if name == "google.protobuf.Timestamp":
        lo, hi = _TS_SECONDS
        msg.seconds = min(max(msg.seconds, lo), hi)  # type: ignore[attr-defined]
        msg.nanos = min(max(msg.nanos, 0), 999_999_999)  # type: ignore[attr-defined]
        return
    if name == "google.protobuf.Duration":
        secs = min(max(msg.seconds, -_DURATION_SECONDS), _DURATION_SECONDS)  # type: ignore[attr-defined]
        nanos = min(max(msg.nanos, -999_999_999), 999_999_999)  # type: ignore[attr-defined]
        if (secs < 0 < nanos) or (nanos < 0 < secs):
            nanos = 0  # seconds and nanos must share a sign
        msg.seconds, msg.nanos = secs, nanos  # type: ignore[attr-defined]
        return
    for fd, value in msg.ListFields():
        mt: Any = fd.message_type
        if fd.type != FieldDescriptor.TYPE_MESSAGE or mt is None:
            continue
        if mt.GetOptions().map_entry:
            value_fd = mt.fields_by_name["value"]
            if value_fd.type == FieldDescriptor.TYPE_MESSAGE:
                for v in value.values():
                    _printable(v)
        elif fd.is_repeated:
            for v in value:
                _printable(v)
        else:
            _printable(value)


def _as_dict(msg: Message) -> Any:
    try:
        return json_format.MessageToDict(msg, preserving_proto_field_name=True)
    except (json_format.SerializeToJsonError, DecodeError, ValueError, TypeError, KeyError):
        fixed = type(msg)()
        fixed.CopyFrom(msg)
        _printable(fixed)
        return json_format.MessageToDict(fixed, preserving_proto_field_name=True)


def to_json(msg: Message) -> str:
    """One line of Hubble-style JSON for a message."""
    as_dict = _as_dict(msg)
    text = json.dumps(_reorder(as_dict, msg.DESCRIPTOR), ensure_ascii=False, separators=(",", ":"))
    for ch, esc in _GO_HTML_ESCAPES.items():
        text = text.replace(ch, esc)
    return text


class JsonPbPrinter(Printer):
    colored = False

    def write_flow(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.out.write(to_json(resp) + "\n")
        self.line += 1

    write_lost_event = write_flow

    def write_node_status(self, resp: observer_pb2.GetFlowsResponse) -> None:
        self.opts.err.write(to_json(resp) + "\n")


FORMATS = {"json": JsonPbPrinter, "jsonpb": JsonPbPrinter}
