"""flow_row: exactly the FLOW_COLUMNS, with values their ClickHouse types hold."""

from __future__ import annotations

import ipaddress

import pytest
from google.protobuf import wrappers_pb2
from hypothesis import given, settings

from sensilla.filters import FLOW_COLUMNS, flow_extension, flow_row
from sensilla.protos import extensions_pb2, flow_pb2
from tests.filters.strategies import flows

pytestmark = pytest.mark.unit

_RANGES = {
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "DateTime": (0, 2**32 - 1),
}


@settings(max_examples=200, deadline=None)
@given(flows(max_size=5))
def test_sfi_row_types(batch: list[flow_pb2.Flow]) -> None:
    for f in batch:
        row = flow_row(f)
        assert list(row) == list(FLOW_COLUMNS)
        for name, ch_type in FLOW_COLUMNS.items():
            value = row[name]
            if ch_type == "String":
                assert isinstance(value, str), name
            elif ch_type == "Array(String)":
                assert isinstance(value, list) and all(isinstance(v, str) for v in value), name
            else:
                lo, hi = _RANGES[ch_type]
                assert isinstance(value, int) and lo <= value <= hi, (name, value)


def test_sfi_row_values() -> None:
    f = flow_pb2.Flow(
        uuid="u1",
        node_name="k8s1",
        verdict=flow_pb2.DROPPED,
        drop_reason_desc=flow_pb2.POLICY_DENIED,
        traffic_direction=flow_pb2.INGRESS,
        is_reply=wrappers_pb2.BoolValue(value=False),
        IP=flow_pb2.IP(source="10.0.0.1", destination="fd00::2", ipVersion=flow_pb2.IPv4),
        l4=flow_pb2.Layer4(
            TCP=flow_pb2.TCP(
                source_port=43210, destination_port=80, flags=flow_pb2.TCPFlags(SYN=True, ACK=True)
            )
        ),
        source=flow_pb2.Endpoint(
            namespace="x",
            pod_name="a",
            identity=300,
            labels=["k8s:pod=a", "$host"],
            workloads=[flow_pb2.Workload(name="a", kind="Pod"), flow_pb2.Workload(name="b")],
        ),
        destination=flow_pb2.Endpoint(namespace="y", pod_name="b", identity=2),
        destination_service=flow_pb2.Service(namespace="y", name="svc"),
        event_type=flow_pb2.CiliumEventType(type=1, sub_type=133),
        interface=flow_pb2.NetworkInterface(index=7, name="lxc0"),
        ingress_denied_by=[flow_pb2.Policy(namespace="y", name="deny-all")],
        egress_allowed_by=[flow_pb2.Policy(namespace="x", name="allow")],
    )
    f.time.seconds, f.time.nanos = 1_700_000_000, 123
    f.extensions.Pack(
        extensions_pb2.FlowExtension(
            packets=3,
            bytes=180,
            suppressed_drops=2,
            position=extensions_pb2.Position(collector_id="k8s1", boot_id=99, sequence=7),
        )
    )
    row = flow_row(f)
    assert row["collector_id"] == "k8s1" and row["boot_id"] == 99 and row["seq"] == 7
    assert row["time_ns"] == 1_700_000_000_000_000_123 and row["time"] == 1_700_000_000
    assert (row["verdict"], row["drop_reason"], row["is_reply"]) == (2, 133, 1)
    assert (row["protocol"], row["src_port"], row["dst_port"], row["tcp_flags"]) == (
        "tcp",
        43210,
        80,
        0b10010,
    )
    assert row["src_labels"] == ["k8s:pod=a", "reserved:host"]
    assert (row["src_workload"], row["src_workload_kind"]) == ("a", "Pod")
    assert row["dst_service"] == "y/svc" and row["src_service"] == ""
    assert (row["event_type"], row["event_subtype"]) == (1, 133)
    assert (row["packets"], row["bytes"], row["suppressed_drops"]) == (3, 180, 2)
    assert row["policies_allowed"] == ["x/allow"] and row["policies_denied"] == ["y/deny-all"]
    assert (row["interface_index"], row["interface_name"]) == (7, "lxc0")
    assert (row["src_ip_hi"], row["src_ip_lo"]) == (0, int(ipaddress.ip_address("::ffff:10.0.0.1")))
    v6 = int(ipaddress.ip_address("fd00::2"))
    assert (row["dst_ip_hi"], row["dst_ip_lo"]) == (v6 >> 64, v6 & (2**64 - 1))
    assert flow_extension(f) is not None


def test_sfi_row_odd_values() -> None:
    f = flow_pb2.Flow(IP=flow_pb2.IP(source="garbage", destination="::ffff:1.2.3.4"))
    f.verdict = 300  # type: ignore[assignment]
    f.drop_reason_desc = 70000  # type: ignore[assignment]
    f.l4.UDP.source_port = 65616
    f.source_service.namespace, f.source_service.name = "a/b", "c"
    f.time.seconds = -5
    row = flow_row(f)
    assert (row["src_ip"], row["src_ip_hi"], row["src_ip_lo"]) == ("", 0, 0)
    assert row["dst_ip"] == "::ffff:1.2.3.4" and row["dst_ip_lo"] == (0xFFFF << 32) | 0x01020304
    assert row["verdict"] == 255 and row["drop_reason"] == 65535
    assert row["src_port"] == 80
    assert "/" not in row["src_service"]
    assert row["time"] == 0 and row["time_ns"] == -5_000_000_000
    assert flow_row(flow_pb2.Flow())["collector_id"] == ""
