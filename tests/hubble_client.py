"""A Hubble Observer client built from a hand-written table of Hubble's field numbers.

Independent of the project's .proto files on purpose: it checks that what Sensilla
puts on the wire is what a Hubble client expects (cilium api/v1/observer and flow).
It encodes requests and decodes responses with a minimal protobuf wire-format codec.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import grpc

# --- Hubble's field numbers (observer.proto, flow.proto, relay.proto) -------------
GET_FLOWS_REQUEST = {
    "number": 1,
    "follow": 3,
    "blacklist": 5,
    "whitelist": 6,
    "since": 7,
    "until": 8,
    "first": 9,
}
FLOW_FILTER = {
    "source_ip": 1,
    "source_pod": 2,
    "destination_ip": 3,
    "destination_pod": 4,
    "verdict": 5,
    "protocol": 12,
    "destination_port": 14,
    "source_identity": 19,
    "node_name": 24,
}
GET_FLOWS_RESPONSE = {
    1: "flow",
    2: "node_status",
    3: "lost_events",
    1000: "node_name",
    1001: "time",
}
FLOW = {
    1: "time",
    2: "verdict",
    3: "drop_reason",
    5: "IP",
    6: "l4",
    8: "source",
    9: "destination",
    10: "Type",
    11: "node_name",
    19: "event_type",
    22: "traffic_direction",
    24: "trace_observation_point",
    25: "drop_reason_desc",
    26: "is_reply",
    34: "uuid",
    100000: "Summary",
    150000: "extensions",
    21001: "egress_allowed_by",
    21002: "ingress_allowed_by",
    21004: "egress_denied_by",
    21005: "ingress_denied_by",
}
TIMESTAMP = {1: "seconds", 2: "nanos"}
IP = {1: "source", 2: "destination", 3: "ipVersion"}
LAYER4 = {1: "TCP", 2: "UDP", 3: "ICMPv4", 4: "ICMPv6", 5: "SCTP"}
PORTS = {1: "source_port", 2: "destination_port", 3: "flags"}
ICMP = {1: "type", 2: "code"}
TCP_FLAGS = {
    1: "FIN",
    2: "SYN",
    3: "RST",
    4: "PSH",
    5: "ACK",
    6: "URG",
    7: "ECE",
    8: "CWR",
    9: "NS",
}
ENDPOINT = {1: "ID", 2: "identity", 3: "namespace", 4: "labels", 5: "pod_name", 6: "workloads"}
WORKLOAD = {1: "name", 2: "kind"}
POLICY = {1: "name", 2: "namespace", 3: "labels", 4: "revision", 5: "kind"}
CILIUM_EVENT_TYPE = {1: "type", 2: "sub_type"}
BOOL_VALUE = {1: "value"}
LOST_EVENT = {1: "source", 2: "num_events_lost", 3: "cpu"}
NODE_STATUS = {1: "state_change", 2: "node_names", 3: "message"}
GET_NODES_RESPONSE = {1: "nodes"}
NODE = {
    1: "name",
    2: "version",
    3: "address",
    4: "state",
    6: "uptime_ns",
    7: "num_flows",
    8: "max_flows",
    9: "seen_flows",
}
GET_NAMESPACES_RESPONSE = {1: "namespaces"}
NAMESPACE = {1: "cluster", 2: "namespace"}
SERVER_STATUS = {
    1: "num_flows",
    2: "max_flows",
    3: "seen_flows",
    4: "uptime_ns",
    5: "num_connected_nodes",
    6: "num_unavailable_nodes",
    7: "unavailable_nodes",
    8: "version",
    9: "flows_rate",
}
UINT32_VALUE = {1: "value"}

# message schemas: field name -> nested schema (messages) or None (scalars/strings)
NESTED: dict[int, Any] = {}
SCHEMAS: dict[str, tuple[dict[int, str], dict[str, str]]] = {
    # schema name: (numbers, {field: nested schema name or "string" / "repeated-string"})
    "GetFlowsResponse": (
        GET_FLOWS_RESPONSE,
        {
            "flow": "Flow",
            "node_status": "NodeStatus",
            "lost_events": "LostEvent",
            "node_name": "string",
            "time": "Timestamp",
        },
    ),
    "Flow": (
        FLOW,
        {
            "time": "Timestamp",
            "IP": "IP",
            "l4": "Layer4",
            "source": "Endpoint",
            "destination": "Endpoint",
            "node_name": "string",
            "event_type": "CiliumEventType",
            "is_reply": "BoolValue",
            "uuid": "string",
            "Summary": "string",
            "extensions": "bytes",
            "egress_allowed_by": "*Policy",
            "ingress_allowed_by": "*Policy",
            "egress_denied_by": "*Policy",
            "ingress_denied_by": "*Policy",
        },
    ),
    "Timestamp": (TIMESTAMP, {}),
    "IP": (IP, {"source": "string", "destination": "string"}),
    "Layer4": (
        LAYER4,
        {"TCP": "Ports", "UDP": "Ports", "SCTP": "Ports", "ICMPv4": "ICMP", "ICMPv6": "ICMP"},
    ),
    "Ports": (PORTS, {"flags": "TCPFlags"}),
    "ICMP": (ICMP, {}),
    "TCPFlags": (TCP_FLAGS, {}),
    "Endpoint": (
        ENDPOINT,
        {
            "namespace": "string",
            "labels": "*string",
            "pod_name": "string",
            "workloads": "*Workload",
        },
    ),
    "Workload": (WORKLOAD, {"name": "string", "kind": "string"}),
    "Policy": (
        POLICY,
        {"name": "string", "namespace": "string", "labels": "*string", "kind": "string"},
    ),
    "CiliumEventType": (CILIUM_EVENT_TYPE, {}),
    "BoolValue": (BOOL_VALUE, {}),
    "LostEvent": (LOST_EVENT, {"cpu": "UInt32Value"}),
    "NodeStatus": (NODE_STATUS, {"node_names": "*string", "message": "string"}),
    "GetNodesResponse": (GET_NODES_RESPONSE, {"nodes": "*Node"}),
    "Node": (NODE, {"name": "string", "version": "string", "address": "string"}),
    "GetNamespacesResponse": (GET_NAMESPACES_RESPONSE, {"namespaces": "*Namespace"}),
    "Namespace": (NAMESPACE, {"cluster": "string", "namespace": "string"}),
    "ServerStatusResponse": (
        SERVER_STATUS,
        {
            "num_connected_nodes": "UInt32Value",
            "num_unavailable_nodes": "UInt32Value",
            "unavailable_nodes": "*string",
            "version": "string",
            "flows_rate": "double",
        },
    ),
    "UInt32Value": (UINT32_VALUE, {}),
}


# --- wire format -----------------------------------------------------------------
def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wt = key >> 3, key & 7
        value: Any
        if wt == 0:
            value, pos = _read_varint(data, pos)
        elif wt == 1:
            value = data[pos : pos + 8]
            pos += 8
        elif wt == 2:
            length, pos = _read_varint(data, pos)
            value = data[pos : pos + length]
            pos += length
        elif wt == 5:
            value = data[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"wire type {wt}")
        yield number, wt, value


def decode(schema: str, data: bytes) -> dict[str, Any]:
    numbers, types = SCHEMAS[schema]
    out: dict[str, Any] = {}
    for number, _wt, value in _fields(data):
        name = numbers.get(number)
        if name is None:
            out.setdefault("_unknown", []).append(number)
            continue
        kind = types.get(name)
        repeated = kind is not None and kind.startswith("*")
        kind = kind[1:] if repeated and kind else kind
        if kind == "string":
            decoded: Any = value.decode()
        elif kind == "bytes":
            decoded = value
        elif kind == "double":
            decoded = struct.unpack("<d", value)[0]
        elif kind is not None and kind in SCHEMAS:
            decoded = decode(kind, value)
        else:
            decoded = value
        if repeated:
            out.setdefault(name, []).append(decoded)
        else:
            out[name] = decoded
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int) -> bytes:
    if isinstance(payload, bool | int):
        return _varint(number << 3) + _varint(int(payload))
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_flow_filter(**fields: list[Any]) -> bytes:
    out = b""
    for name, values in fields.items():
        for v in values:
            out += _field(FLOW_FILTER[name], v.encode() if isinstance(v, str) else v)
    return out


def encode_get_flows(
    number: int = 0,
    follow: bool = False,
    first: bool = False,
    whitelist: list[bytes] | None = None,
    blacklist: list[bytes] | None = None,
) -> bytes:
    out = b""
    if number:
        out += _field(GET_FLOWS_REQUEST["number"], number)
    if follow:
        out += _field(GET_FLOWS_REQUEST["follow"], 1)
    if first:
        out += _field(GET_FLOWS_REQUEST["first"], 1)
    for f in blacklist or []:
        out += _field(GET_FLOWS_REQUEST["blacklist"], f)
    for f in whitelist or []:
        out += _field(GET_FLOWS_REQUEST["whitelist"], f)
    return out


def _raw(data: bytes) -> bytes:
    return data


class HubbleClient:
    """Calls observer.Observer with hand-encoded requests; decodes by the tables above."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)

    def close(self) -> None:
        self.channel.close()

    def _unary(self, method: str, schema: str) -> dict[str, Any]:
        call = self.channel.unary_unary(
            f"/observer.Observer/{method}", request_serializer=_raw, response_deserializer=_raw
        )
        return decode(schema, call(b"", timeout=10))

    def server_status(self) -> dict[str, Any]:
        return self._unary("ServerStatus", "ServerStatusResponse")

    def get_nodes(self) -> dict[str, Any]:
        return self._unary("GetNodes", "GetNodesResponse")

    def get_namespaces(self) -> dict[str, Any]:
        return self._unary("GetNamespaces", "GetNamespacesResponse")

    def get_flows(self, request: bytes, timeout: float = 10) -> list[dict[str, Any]]:
        call = self.channel.unary_stream(
            "/observer.Observer/GetFlows", request_serializer=_raw, response_deserializer=_raw
        )
        return [decode("GetFlowsResponse", r) for r in call(request, timeout=timeout)]
