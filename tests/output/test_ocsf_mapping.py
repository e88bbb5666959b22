"""OCSF Network Activity mapping: every kind of flow maps to an event that validates
against the released OCSF schema (Sensilla's strict check and pydantic-ocsf's model);
the validator itself rejects what the schema forbids; ``-o ocsf`` prints one event
per line."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensilla.ocsf import OCSF_VERSION, flow_to_ocsf, model_validate, validate_event
from sensilla.output import PrinterOptions, make_printer
from sensilla.protos import extensions_pb2, flow_pb2, observer_pb2
from tests.output.flows import flow, response

pytestmark = pytest.mark.unit


def _ext(f: flow_pb2.Flow, **kw: Any) -> flow_pb2.Flow:
    ext = extensions_pb2.FlowExtension(**kw)
    ext.position.collector_id = "k8s1"
    ext.position.boot_id = 1_764_131_789_000_000_000
    ext.position.sequence = 42
    f.extensions.Pack(ext)
    return f


def _valid(record: dict[str, Any]) -> dict[str, Any]:
    errors = validate_event(record)
    assert errors == [], errors
    model_validate(record)
    # JSON round trip keeps it valid (what the exporters and -o ocsf write)
    assert validate_event(json.loads(json.dumps(record))) == []
    return record


def _policy(ns: str, name: str) -> flow_pb2.Policy:
    return flow_pb2.Policy(name=name, namespace=ns, kind="NetworkPolicy", revision=3)


def test_ssi_forwarded_tcp_open() -> None:
    f = _ext(
        flow(egress_allowed_by=[_policy("x", "allow-web")], traffic_direction=flow_pb2.EGRESS),
        packets=3,
        bytes=180,
        reply_packets=2,
        reply_bytes=120,
        reason=extensions_pb2.EVENT_CONNECTION_START,
    )
    r = _valid(flow_to_ocsf(f))
    assert (r["class_uid"], r["category_uid"], r["type_uid"]) == (4001, 4, 400101)
    assert (r["activity_id"], r["activity_name"]) == (1, "Open")
    assert (r["action_id"], r["disposition_id"]) == (1, 1)
    assert r["policy"]["name"] == "x/allow-web" and r["policy"]["is_applied"] is True
    assert r["metadata"]["version"] == OCSF_VERSION == "1.7.0"
    assert r["metadata"]["product"]["name"] == "Sensilla"
    assert r["metadata"]["product"]["vendor_name"] == "Sensilla"
    assert r["metadata"]["uid"] == f.uuid
    assert r["time"] == 1764131789123
    assert r["src_endpoint"]["container"]["uid"] == "x/a"
    assert r["dst_endpoint"]["ip"] == "10.244.2.7" and r["dst_endpoint"]["port"] == 80
    assert r["connection_info"] == {
        "protocol_num": 6,
        "protocol_name": "tcp",
        "protocol_ver_id": 4,
        "protocol_ver": "Internet Protocol version 4 (IPv4)",
        "direction_id": 2,
        "direction": "Outbound",
        "tcp_flags": 0x02,
    }
    assert r["traffic"] == {
        "packets": 5,
        "bytes": 300,
        "packets_out": 3,
        "bytes_out": 180,
        "packets_in": 2,
        "bytes_in": 120,
    }
    pos = r["unmapped"]["position"]
    assert pos == {"collector_id": "k8s1", "boot_id": "1764131789000000000", "sequence": "42"}


def test_ssi_tcp_close_and_reply_traffic() -> None:
    fin = flow(
        l4=flow_pb2.Layer4(
            TCP=flow_pb2.TCP(
                source_port=1, destination_port=80, flags=flow_pb2.TCPFlags(FIN=True, ACK=True)
            )
        )
    )
    assert _valid(flow_to_ocsf(fin))["activity_id"] == 2
    end = _ext(flow(l4=flow_pb2.Layer4(UDP=flow_pb2.UDP(source_port=5, destination_port=53))))
    end_ext = extensions_pb2.FlowExtension(reason=extensions_pb2.EVENT_CONNECTION_END)
    end.extensions.Pack(end_ext)
    assert _valid(flow_to_ocsf(end))["activity_id"] == 2
    reply = flow(
        is_reply=wrappers_pb2.BoolValue(value=True),
        l4=flow_pb2.Layer4(
            TCP=flow_pb2.TCP(
                source_port=80, destination_port=1, flags=flow_pb2.TCPFlags(SYN=True, ACK=True)
            )
        ),
    )
    r = _valid(flow_to_ocsf(reply))
    assert r["activity_id"] == 6 and r["is_src_dst_assignment_known"] is False


def test_ssi_dropped_by_policy_carries_disposition_and_policy() -> None:
    f = flow(
        verdict=flow_pb2.DROPPED,
        drop_reason_desc=flow_pb2.POLICY_DENIED,
        ingress_denied_by=[_policy("y", "deny-all")],
    )
    r = _valid(flow_to_ocsf(f))
    assert (r["activity_id"], r["activity_name"]) == (5, "Refuse")
    assert (r["action_id"], r["action"]) == (2, "Denied")
    assert (r["disposition_id"], r["disposition"]) == (2, "Blocked")
    assert r["policy"]["name"] == "y/deny-all" and r["policy"]["version"] == "3"
    assert r["status_detail"] == "POLICY_DENIED" and r["status_id"] == 2
    assert r["severity_id"] == 3


def test_ssi_dropped_default_deny_and_datapath_drop() -> None:
    f = _ext(
        flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED),
        drop_detail="default-deny",
    )
    r = _valid(flow_to_ocsf(f))
    assert r["policy"]["name"] == "default-deny" and r["disposition_id"] == 2
    assert r["unmapped"]["drop_detail"] == "default-deny"
    bad = flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.INVALID_PACKET_DROPPED)
    r = _valid(flow_to_ocsf(bad))
    assert (r["action_id"], r["disposition_id"], r["disposition"]) == (2, 6, "Dropped")
    assert r["policy"]["name"] == "INVALID_PACKET_DROPPED"


def test_ssi_audited_flow() -> None:
    f = _ext(
        flow(verdict=flow_pb2.AUDIT, drop_reason_desc=flow_pb2.POLICY_DENIED),
        drop_detail="default-deny",
    )
    r = _valid(flow_to_ocsf(f))
    assert (r["action_id"], r["disposition_id"], r["disposition"]) == (1, 15, "Detected")
    assert r["policy"]["name"] == "default-deny" and r["policy"]["is_applied"] is False
    with_policy = flow(verdict=flow_pb2.AUDIT, egress_denied_by=[_policy("x", "no-egress")])
    with_policy.traffic_direction = flow_pb2.EGRESS
    r = _valid(flow_to_ocsf(with_policy))
    assert r["policy"]["name"] == "x/no-egress" and r["severity_id"] == 2


@pytest.mark.parametrize(
    ("l4", "num", "name"),
    [
        (flow_pb2.Layer4(UDP=flow_pb2.UDP(source_port=4000, destination_port=81)), 17, "udp"),
        (flow_pb2.Layer4(ICMPv4=flow_pb2.ICMPv4(type=8)), 1, "icmp"),
        (flow_pb2.Layer4(ICMPv6=flow_pb2.ICMPv6(type=128)), 58, "ipv6-icmp"),
        (flow_pb2.Layer4(SCTP=flow_pb2.SCTP(source_port=1, destination_port=80)), 132, "sctp"),
    ],
)
def test_ssi_protocols_and_ipv6(l4: flow_pb2.Layer4, num: int, name: str) -> None:
    f = flow(
        l4=l4,
        IP=flow_pb2.IP(source="fd00::a", destination="fd00::b", ipVersion=flow_pb2.IPv6),
    )
    r = _valid(flow_to_ocsf(f))
    assert r["connection_info"]["protocol_num"] == num
    assert r["connection_info"]["protocol_name"] == name
    assert r["connection_info"]["protocol_ver_id"] == 6
    assert r["src_endpoint"]["ip"] == "fd00::a"
    if num in (1, 58):
        assert "port" not in r["src_endpoint"] and r["unmapped"]["icmp"]["type"] in (8, 128)


def test_ssi_world_endpoint_without_pod() -> None:
    f = flow(source=flow_pb2.Endpoint(identity=2, labels=["reserved:world"]))
    r = _valid(flow_to_ocsf(f))
    assert "container" not in r["src_endpoint"] and r["src_endpoint"]["ip"] == "10.244.1.5"
    empty = flow_pb2.Flow(verdict=flow_pb2.FORWARDED)
    r = _valid(flow_to_ocsf(empty, observed_ns=1_700_000_000_000_000_000))
    assert r["time"] == 1_700_000_000_000


def test_ssi_validator_rejects_what_the_schema_forbids() -> None:
    good = flow_to_ocsf(flow(ingress_allowed_by=[_policy("y", "allow")]))
    assert validate_event(good) == []

    def broken(**changes: Any) -> list[str]:
        r = json.loads(json.dumps(good))
        for path, value in changes.items():
            *parents, leaf = path.split("__")
            node = r
            for p in parents:
                node = node[p]
            if value is KeyError:
                del node[leaf]
            else:
                node[leaf] = value
        return validate_event(r)

    assert any("bogus" in e for e in broken(bogus=1))
    assert any("src_endpoint.nickname" in e for e in broken(src_endpoint__nickname="x"))
    assert any("severity_id" in e for e in broken(severity_id=42))
    assert any("time" in e for e in broken(time="yesterday"))
    assert any("metadata: " in e or "metadata" in e for e in broken(metadata=KeyError))
    assert any("product" in e for e in broken(metadata__product=KeyError))
    assert any("port" in e for e in broken(dst_endpoint__port=70000))
    assert any("ip" in e for e in broken(dst_endpoint__ip="10.0.0.300"))
    assert any("type_uid" in e for e in broken(type_uid=400199))
    assert any("class_uid" in e for e in broken(class_uid=4002))
    assert any("activity_name" in e for e in broken(activity_name="Close"))
    assert any("action_id" in e for e in broken(action_id=99))
    assert any("direction_id" in e for e in broken(connection_info__direction_id=KeyError))
    assert any("at least one" in e for e in broken(src_endpoint={}))
    assert any("is_applied" in e for e in broken(policy__is_applied="yes"))
    assert any("container.labels" in e for e in broken(src_endpoint__container__labels="a=b"))
    # anything goes inside unmapped
    assert broken(unmapped={"anything": [1, {"x": None}]}) == []


_addrs4 = st.ip_addresses(v=4).map(str)
_addrs6 = st.ip_addresses(v=6).map(str)
_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=0, max_size=12)


@st.composite
def _flows(draw: st.DrawFn) -> flow_pb2.Flow:
    v6 = draw(st.booleans())
    f = flow_pb2.Flow(
        uuid=str(draw(st.uuids())),
        node_name=draw(_names),
        verdict=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7])),  # type: ignore[arg-type]
        drop_reason_desc=draw(st.sampled_from([0, 133, 134, 139, 181])),  # type: ignore[arg-type]
        traffic_direction=draw(st.sampled_from([0, 1, 2])),  # type: ignore[arg-type]
        trace_observation_point=draw(st.sampled_from([0, 5, 101, 7])),  # type: ignore[arg-type]
    )
    f.IP.ipVersion = flow_pb2.IPv6 if v6 else flow_pb2.IPv4
    f.IP.source = draw(_addrs6 if v6 else _addrs4)
    f.IP.destination = draw(_addrs6 if v6 else _addrs4)
    kind = draw(st.sampled_from(["TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6", None]))
    port = st.integers(0, 65535)
    if kind in ("TCP", "UDP", "SCTP"):
        l4 = getattr(f.l4, kind)
        l4.source_port, l4.destination_port = draw(port), draw(port)
        if kind == "TCP":
            for name in ("SYN", "ACK", "FIN", "RST", "PSH", "URG", "ECE", "CWR", "NS"):
                setattr(l4.flags, name, draw(st.booleans()))
    elif kind is not None:
        icmp = getattr(f.l4, kind)
        icmp.type, icmp.code = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    for ep in (f.source, f.destination):
        ep.namespace, ep.pod_name = draw(_names), draw(_names)
        ep.identity = draw(st.integers(0, 2**32 - 1))
        ep.labels.extend(draw(st.lists(st.text(max_size=20), max_size=3)))
    if draw(st.booleans()):
        f.is_reply.value = draw(st.booleans())
    for name in ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by"):
        for _ in range(draw(st.integers(0, 2))):
            getattr(f, name).add(name=draw(_names), namespace=draw(_names))
    if draw(st.booleans()):
        ext = extensions_pb2.FlowExtension(
            packets=draw(st.integers(0, 2**40)),
            bytes=draw(st.integers(0, 2**50)),
            reply_packets=draw(st.integers(0, 2**40)),
            reply_bytes=draw(st.integers(0, 2**50)),
            reason=draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6])),  # type: ignore[arg-type]
            drop_detail=draw(st.sampled_from(["", "default-deny"])),
        )
        ext.position.collector_id = "n"
        ext.position.boot_id = draw(st.integers(1, 2**64 - 1))
        ext.position.sequence = draw(st.integers(1, 2**64 - 1))
        f.extensions.Pack(ext)
    f.time.FromNanoseconds(draw(st.integers(0, 2**62)))
    return f


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_flows())
def test_ssi_any_flow_maps_to_a_valid_event(f: flow_pb2.Flow) -> None:
    r = flow_to_ocsf(f, observed_ns=1_700_000_000_000_000_000)
    assert validate_event(json.loads(json.dumps(r))) == []
    if f.verdict == flow_pb2.DROPPED:
        assert r["disposition_id"] in (2, 6) and "policy" in r and r["action_id"] == 2


def test_ssi_printer_writes_ocsf_lines() -> None:
    out, err = io.StringIO(), io.StringIO()
    p = make_printer("ocsf", PrinterOptions(out=out, err=err))
    p.write(response(flow()))
    lost = observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=3)
    )
    p.write(lost)
    p.write(response(flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED)))
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert validate_event(json.loads(line)) == []
    assert json.loads(lines[1])["disposition"] == "Blocked"
    assert '"num_events_lost":"3"' in err.getvalue()
