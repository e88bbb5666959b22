"""``-o json`` / ``-o jsonpb``: one JSON object per response, as Hubble writes them
(protobuf JSON with the .proto field names, fields in declaration order, compact,
HTML-safe escapes like Go's encoding/json):
``{"flow":{...},"node_name":"k8s1","time":"2024-05-01T10:00:00.123456789Z"}``.
Node status events go to stderr, flows and lost events to stdout."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

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


def to_json(msg: Message) -> str:
    """One line of Hubble-style JSON for a message."""
    as_dict = json_format.MessageToDict(msg, preserving_proto_field_name=True)
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
