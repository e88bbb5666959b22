# ruff: noqa: E501  (expected output lines are as wide as Hubble prints them)
"""The flow printers against Hubble's formats."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import json_format, timestamp_pb2, wrappers_pb2

from sensilla.output import PrinterOptions, available_formats, make_printer
from sensilla.output.tabwriter import format_table
from sensilla.output.timefmt import format_timestamp
from sensilla.protos import flow_pb2, observer_pb2, relay_pb2
from tests.output.flows import flow, lost, node_status, response, with_extension

pytestmark = pytest.mark.unit


def render(fmt: str, *responses: observer_pb2.GetFlowsResponse, **opts: object) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    printer = make_printer(fmt, PrinterOptions(out=out, err=err, **opts))  # type: ignore[arg-type]
    for r in responses:
        printer.write(r)
    printer.close()
    return out.getvalue(), err.getvalue()


def compact(f: flow_pb2.Flow, **opts: object) -> str:
    return render("compact", response(f), **opts)[0]


def test_sfi_formats_registered() -> None:
    assert {"compact", "dict", "json", "jsonpb", "table"} <= set(available_formats())
    with pytest.raises(ValueError, match="invalid output format"):
        make_printer("yaml")


def test_sfi_compact_line() -> None:
    assert compact(flow()) == (
        "Nov 26 04:36:29.123: x/a:43210 (ID:1234) -> y/b:80 (ID:5678) to-endpoint FORWARDED (TCP Flags: SYN)\n"
    )


def test_sfi_compact_reply_unknown_and_nodes() -> None:
    reply = flow(is_reply=wrappers_pb2.BoolValue(value=True), Summary="TCP Flags: SYN, ACK")
    assert compact(reply) == (
        "Nov 26 04:36:29.123: y/b:80 (ID:5678) <- x/a:43210 (ID:1234) to-endpoint FORWARDED "
        "(TCP Flags: SYN, ACK)\n"
    )
    unknown = flow()
    unknown.ClearField("is_reply")
    assert " x/a:43210 (ID:1234) <> y/b:80 (ID:5678) " in compact(unknown)
    assert compact(flow(), node_name=True).startswith("Nov 26 04:36:29.123 [k8s1]: x/a:43210")


def test_sfi_compact_drop_and_reserved_identities() -> None:
    f = flow(
        verdict=flow_pb2.DROPPED,
        drop_reason_desc=flow_pb2.POLICY_DENIED,
        event_type=flow_pb2.CiliumEventType(type=1, sub_type=133),
    )
    f.destination.identity = 2
    f.source.identity = 0
    assert compact(f) == (
        "Nov 26 04:36:29.123: x/a:43210 (unknown) -> y/b:80 (world) Policy denied DROPPED (TCP Flags: SYN)\n"
    )
    f.event_type.sub_type = 250
    assert " 250, 0 DROPPED " in compact(f)


def test_sfi_compact_policy_verdict_and_icmp() -> None:
    f = flow(
        event_type=flow_pb2.CiliumEventType(type=5),
        policy_match_type=2,
        traffic_direction=flow_pb2.EGRESS,
    )
    assert " policy-verdict:L3-L4 EGRESS ALLOWED " in compact(f)
    f.verdict = flow_pb2.DROPPED
    assert " policy-verdict:L3-L4 EGRESS DENIED " in compact(f)
    icmp = flow(l4=flow_pb2.Layer4(ICMPv4=flow_pb2.ICMPv4(type=8)), Summary="ICMPv4 EchoRequest")
    assert (
        ": x/a (ID:1234) -> y/b (ID:5678) to-endpoint FORWARDED (ICMPv4 EchoRequest)\n"
        in compact(icmp)
    )


def test_sfi_compact_addresses_services_and_numeric() -> None:
    f = flow(IP=flow_pb2.IP(source="fd00::5", destination="fd00::7", ipVersion=flow_pb2.IPv6))
    f.ClearField("source")
    f.ClearField("destination")
    assert ": [fd00::5]:43210 (unknown) -> [fd00::7]:80 (unknown) " in compact(f)
    svc = flow(destination_service=flow_pb2.Service(namespace="y", name="web"))
    svc.destination.pod_name = ""
    assert " -> y/web:80 (ID:5678) " in compact(svc)
    assert ": 10.244.1.5:43210 (ID:1234) -> 10.244.2.7:80 " in compact(flow(), ip_translation=False)
    assert " (world) -> 10.244.2.7:80 " in compact(
        flow(source=flow_pb2.Endpoint(identity=2), destination=flow_pb2.Endpoint(identity=3))
    )


def test_sfi_compact_no_time_and_escaping() -> None:
    f = flow(Summary="evil \x1b[31mred\r")
    f.ClearField("time")
    f.source.pod_name = "a\x1b]0;x"
    line = compact(f)
    assert line.startswith("N/A: x/a^[]0;x:43210 ")
    assert "\x1b" not in line and "\r" not in line
    assert line.endswith("(evil ^[[31mred\\r)\n")


def test_sfi_compact_colors() -> None:
    line = compact(flow(), color="always")
    assert "\x1b[32mFORWARDED\x1b[0m" in line
    assert "\x1b[35m(ID:1234)\x1b[0m" in line
    assert "\x1b[36mx/a:\x1b[33m43210\x1b[0m\x1b[0m" in line
    assert "\x1b" not in compact(flow(), color="auto")  # not a terminal


def test_sfi_lost_events_and_node_status() -> None:
    out, err = render(
        "compact",
        lost(),
        node_status(relay_pb2.NODE_UNAVAILABLE, ["k8s2"]),
        node_status(relay_pb2.NODE_CONNECTED, ["k8s1", "k8s2"]),
        node_status(relay_pb2.NODE_ERROR, ["k8s2"], 'dial "x" failed'),
    )
    assert out == "EVENTS LOST: PERF_EVENT_RING_BUFFER CPU(3) 42\n"
    assert err == (
        "Nov 26 04:36:29.000 [relay]: 1 nodes are unavailable: k8s2\n"
        'Nov 26 04:36:29.000 [relay]: Error "dial \\"x\\" failed" on 1 nodes: k8s2\n'
    )
    _, err = render("compact", node_status(relay_pb2.NODE_CONNECTED, ["k8s1", "k8s2"]), debug=True)
    assert err == "Nov 26 04:36:29.000 [relay]: Receiving flows from 2 nodes: k8s1, k8s2\n"
    names = [f"node-{i:02d}" for i in range(10)]
    _, err = render("table", node_status(relay_pb2.NODE_UNAVAILABLE, names))
    assert err.endswith(
        "10 nodes are unavailable: node-00, node-01, node-02, node-03, node-04 (and 5 more)\n"
    )


def test_sfi_dict_format() -> None:
    out, err = render(
        "dict", response(flow()), lost(), node_status(relay_pb2.NODE_ERROR, ["k8s2"], "boom")
    )
    assert out == (
        "  TIMESTAMP: Nov 26 04:36:29.123\n"
        "     SOURCE: x/a:43210\n"
        "DESTINATION: y/b:80\n"
        "       TYPE: to-endpoint\n"
        "    VERDICT: FORWARDED\n"
        "    SUMMARY: TCP Flags: SYN\n"
        "------------\n"
        "  TIMESTAMP: \n"
        "     SOURCE: PERF_EVENT_RING_BUFFER\n"
        "       TYPE: EVENTS LOST\n"
        "    VERDICT: \n"
        "    SUMMARY: CPU(3) - 42\n"
    )
    assert err == (
        "------------\n"
        "  TIMESTAMP: Nov 26 04:36:29.000\n"
        "      STATE: NODE_ERROR\n"
        "      NODES: k8s2\n"
        '    MESSAGE: "boom"\n'
    )


def test_sfi_table_format() -> None:
    drop = flow(
        verdict=flow_pb2.DROPPED,
        event_type=flow_pb2.CiliumEventType(type=1, sub_type=133),
        Summary="UDP",
    )
    drop.source.namespace = "kube-system"
    out, _ = render("table", response(flow()), response(drop), lost())
    assert out == (
        "TIMESTAMP             SOURCE                   DESTINATION   TYPE            VERDICT     SUMMARY\n"
        "Nov 26 04:36:29.123   x/a:43210                y/b:80        to-endpoint     FORWARDED   TCP Flags: SYN\n"
        "Nov 26 04:36:29.123   kube-system/a:43210      y/b:80        Policy denied   DROPPED     UDP\n"
        "                      PERF_EVENT_RING_BUFFER                 EVENTS LOST                 CPU(3) - 42\n"
    )
    out, _ = render("table", response(flow()), node_name=True)
    assert out.splitlines()[0].split() == [
        "TIMESTAMP",
        "NODE",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ]
    assert "   k8s1   x/a:43210" in out


def test_sfi_jsonpb_format() -> None:
    f = with_extension(flow(), seq=7)
    f.source.labels.append("k8s:app=<b&c>")
    out, _ = render("json", response(f), lost())
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith('{"flow":{"time":"2025-11-26T04:36:29.123456789Z","uuid":"11111111-')
    assert lines[0].endswith('"node_name":"k8s1","time":"2025-11-26T04:36:29.123456789Z"}')
    assert "\\u003cb\\u0026c\\u003e" in lines[0]  # Go's encoding/json HTML escapes
    doc = json.loads(lines[0])
    assert list(doc) == ["flow", "node_name", "time"]
    assert list(doc["flow"])[:5] == ["time", "uuid", "verdict", "IP", "l4"]
    assert doc["flow"]["source"]["pod_name"] == "a"
    assert doc["flow"]["is_reply"] is False
    assert (
        doc["flow"]["extensions"]["@type"] == "type.googleapis.com/sensilla.flow.v1.FlowExtension"
    )
    assert doc["flow"]["extensions"]["position"]["sequence"] == "7"
    back = observer_pb2.GetFlowsResponse()
    json_format.Parse(lines[0], back)
    assert back == response(f)
    assert json.loads(lines[1]) == {
        "lost_events": {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "42", "cpu": 3}
    }
    out2, _ = render("jsonpb", response(f), lost())
    assert out2 == out


def test_sfi_time_formats() -> None:
    ts = timestamp_pb2.Timestamp(seconds=1764131789, nanos=120_000_000)
    assert format_timestamp(ts) == "Nov 26 04:36:29.120"
    assert format_timestamp(ts, "RFC3339") == "2025-11-26T04:36:29Z"
    assert format_timestamp(ts, "rfc3339milli") == "2025-11-26T04:36:29.12Z"
    assert format_timestamp(ts, "RFC3339Nano") == "2025-11-26T04:36:29.12Z"
    assert (
        format_timestamp(timestamp_pb2.Timestamp(seconds=1764131789), "RFC3339Micro")
        == "2025-11-26T04:36:29Z"
    )
    assert format_timestamp(ts, "YearMonthDay") == "2025-11-26"
    assert format_timestamp(ts, "YearMonthDayHourMinute") == "2025-11-26T04:36Z"
    assert format_timestamp(ts, "RFC1123Z") == "Wed, 26 Nov 2025 04:36:29 +0000"
    assert format_timestamp(timestamp_pb2.Timestamp(seconds=1762400000)) == "Nov  6 03:33:20.000"
    assert format_timestamp(timestamp_pb2.Timestamp(seconds=10**12)) == "N/A"
    assert format_timestamp(None) == "N/A"


def test_sfi_tabwriter_follows_go() -> None:
    # cells are tab-terminated; the last cell of a line is not aligned
    assert format_table("a\tbbb\tc\naaaa\tb\tc\n") == "a      bbb   c\naaaa   b     c\n"
    # a line with fewer cells ends the column block above it
    assert format_table("aaaaaa\tb\nx\ny\tzz\n") == "aaaaaa   b\nx\ny   zz\n"
    assert format_table("\t\tc\n") == "      c\n"
