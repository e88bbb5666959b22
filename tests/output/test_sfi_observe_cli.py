# ruff: noqa: E501  (expected output lines are as wide as Hubble prints them)
"""``sensilla observe`` against a tiny in-test Observer: the request built from the
flags (as hubble observe builds it) and the rendered output."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from sensilla.cli.main import main
from sensilla.filters.hubble_cli import FlagError, parse_time
from sensilla.protos import flow_pb2, observer_pb2, relay_pb2
from tests.output.flows import flow, lost, node_status, response, with_extension
from tests.output.observer_server import ObserverServer

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server() -> Iterator[ObserverServer]:
    srv = ObserverServer()
    try:
        yield srv
    finally:
        srv.close()


def observe(server: ObserverServer, *args: str) -> int:
    return main(["observe", "--server", server.address, *args])


def filters_of(
    req: observer_pb2.GetFlowsRequest,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def conv(fs: Any) -> list[dict[str, Any]]:
        return [json_format.MessageToDict(f, preserving_proto_field_name=True) for f in fs]

    return conv(req.whitelist), conv(req.blacklist)


# --- the request hubble observe sends -------------------------------------------------

REQUEST_CASES: list[tuple[list[str], list[dict[str, Any]], list[dict[str, Any]]]] = [
    ([], [], []),
    (["--pod", "x/a"], [{"source_pod": ["x/a"]}, {"destination_pod": ["x/a"]}], []),
    (
        ["--from-pod", "x/a", "--to-pod", "y/b"],
        [{"source_pod": ["x/a"], "destination_pod": ["y/b"]}],
        [],
    ),
    (["-n", "x"], [{"source_pod": ["x/"]}, {"destination_pod": ["x/"]}], []),
    (
        ["--namespace", "x", "--pod", "a"],
        [{"source_pod": ["x/a"]}, {"destination_pod": ["x/a"]}],
        [],
    ),
    (
        ["--from-namespace", "x", "--to-namespace", "y", "--to-namespace", "z"],
        [{"source_pod": ["x/"], "destination_pod": ["y/", "z/"]}],
        [],
    ),
    (["--from-namespace", "x", "--from-pod", "a"], [{"source_pod": ["x/a"]}], []),
    (["--ip", "10.0.0.1", "--from-ip", "10.1.0.0/16"], [], []),  # conflict, see below
    (
        ["--to-ip", "10.0.0.0/8", "--verdict", "DROPPED", "--verdict", "AUDIT"],
        [{"destination_ip": ["10.0.0.0/8"], "verdict": ["DROPPED", "AUDIT"]}],
        [],
    ),
    (
        ["--label", "k8s:app=web", "--protocol", "tcp"],
        [
            {"source_label": ["k8s:app=web"], "protocol": ["tcp"]},
            {"destination_label": ["k8s:app=web"], "protocol": ["tcp"]},
        ],
        [],
    ),
    (
        ["--from-label", "app", "--to-label", "!app"],
        [{"source_label": ["app"], "destination_label": ["!app"]}],
        [],
    ),
    (
        ["--identity", "world", "--port", "80"],
        [
            {"source_identity": [2], "source_port": ["80"]},
            {"destination_identity": [2], "destination_port": ["80"]},
        ],
        [],
    ),
    (
        ["--from-identity", "256", "--to-identity", "0x10", "--to-port", "81"],
        [{"source_identity": [256], "destination_identity": [16], "destination_port": ["81"]}],
        [],
    ),
    (
        ["--drop-reason-desc", "POLICY_DENIED", "--node-name", "k8s*"],
        [{"drop_reason_desc": ["POLICY_DENIED"], "node_name": ["k8s*"]}],
        [],
    ),
    (
        ["--type", "trace:to-endpoint", "-t", "policy-verdict", "--type", "1:133"],
        [
            {
                "event_type": [
                    {"type": 4, "match_sub_type": True},
                    {"type": 5},
                    {"type": 1, "match_sub_type": True, "sub_type": 133},
                ]
            }
        ],
        [],
    ),
    (["--not", "--verdict", "FORWARDED"], [], [{"verdict": ["FORWARDED"]}]),
    (
        ["-n", "x", "--not", "--to-port", "81"],
        [{"source_pod": ["x/"]}, {"destination_pod": ["x/"]}],
        [{"destination_port": ["81"]}],
    ),
    (
        ["--not", "--from-pod", "x/a", "--not", "--verdict", "DROPPED"],
        [],
        [{"source_pod": ["x/a"], "verdict": ["DROPPED"]}],
    ),
    (
        ["--not", "--namespace", "kube-system"],
        [],
        [{"source_pod": ["kube-system/"]}, {"destination_pod": ["kube-system/"]}],
    ),
    (
        ["--tcp-flags", "syn,ack", "--traffic-direction", "Ingress", "-4"],
        [
            {
                "tcp_flags": [{"SYN": True, "ACK": True}],
                "traffic_direction": ["INGRESS"],
                "ip_version": ["IPv4"],
            }
        ],
        [],
    ),
    (
        ["--workload", "Deployment/web", "--uuid", "u-1", "--interface", "lxc1"],
        [
            {
                "uuid": ["u-1"],
                "source_workload": [{"name": "web", "kind": "Deployment"}],
                "interface": [{"name": "lxc1"}],
            },
            {
                "uuid": ["u-1"],
                "destination_workload": [{"name": "web", "kind": "Deployment"}],
                "interface": [{"name": "lxc1"}],
            },
        ],
        [],
    ),
    (
        ["--service", "y/web", "--ip-version", "v6"],
        [
            {"source_service": ["y/web"], "ip_version": ["IPv6"]},
            {"destination_service": ["y/web"], "ip_version": ["IPv6"]},
        ],
        [],
    ),
]


@pytest.mark.parametrize(("args", "white", "black"), REQUEST_CASES)
def test_sfi_request_filters(
    server: ObserverServer, args: list[str], white: Any, black: Any
) -> None:
    rc = observe(server, *args)
    if args[:2] == ["--ip", "10.0.0.1"]:
        assert rc == 2 and not server.observer.requests  # hubble: --ip and --from-ip conflict
        return
    assert rc == 0
    (req,) = server.observer.requests
    assert filters_of(req) == (white, black)


def test_sfi_request_selectors(server: ObserverServer) -> None:
    assert observe(server) == 0
    assert observe(server, "--last", "5") == 0
    assert observe(server, "--first", "3") == 0
    assert observe(server, "--all") == 0
    assert (
        observe(server, "--since", "2024-05-01T10:00:00.5Z", "--until", "2024-05-01T11:00:00+02:00")
        == 0
    )
    before = time.time()
    assert observe(server, "--since", "5m") == 0
    r = server.observer.requests
    assert (r[0].number, r[0].first, r[0].follow) == (20, False, False)  # hubble's default
    assert r[1].number == 5 and not r[1].first
    assert r[2].number == 3 and r[2].first
    assert r[3].number == 2**64 - 1
    assert r[4].number == 0 and r[4].since.seconds == 1714557600 and r[4].since.nanos == 500_000_000
    assert r[4].until.seconds == 1714554000
    assert r[5].number == 0 and abs(r[5].since.seconds - (before - 300)) < 30
    assert not r[5].HasField("until")


def test_sfi_follow_stream(server: ObserverServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.observer.responses = [response(flow())]
    assert observe(server, "-f", "--until", "1h") == 0  # --until is ignored with --follow
    (req,) = server.observer.requests
    assert req.follow and req.number == 0 and not req.HasField("until")
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--not"], "trailing --not found in the arguments"),
        (["--not", "--not", "--pod", "a"], "consecutive --not statements"),
        (["--pod", "a", "--from-pod", "b"], "filters --from-pod and --pod cannot be combined"),
        (
            ["--namespace", "x", "--to-pod", "a"],
            "filters --to-pod and --namespace cannot be combined",
        ),
        (["--label", "a", "--to-label", "b"], "filters --label and --to-label cannot be combined"),
        (
            ["--from-namespace", "x", "--from-pod", "y/a"],
            'namespace conflict: "x" does not contain "y/a"',
        ),
        (["--verdict", "dropped"], "invalid --verdict value: dropped"),
        (["--drop-reason-desc", "NOPE"], "invalid --drop-reason-desc value: NOPE"),
        (["--type", "bogus"], "unable to parse type 'bogus'"),
        (["--type", "trace:nowhere"], "unable to parse event sub-type 'nowhere'"),
        (["--tcp-flags", "syn,xyz"], "unknown tcp flag: xyz"),
        (["--traffic-direction", "sideways"], "sideways: invalid traffic direction"),
        (["--identity", "nobody"], "invalid security identity"),
        (["--first", "3", "--last", "2"], "cannot set both --first and --last"),
        (["--first", "3", "-f"], "cannot set both --first and --follow"),
        (["--since", "yesterday"], "failed to parse the since time"),
        (["--ip", "10.0.0.0/33"], "invalid filter: whitelist[0].source_ip[0]: invalid CIDR"),
        (["--port", "http"], "invalid filter: whitelist[0].source_port[0]: invalid port"),
        (
            ["--label", "a in b"],
            "invalid filter: whitelist[0].source_label[0]: invalid label selector",
        ),
        (["--node-name", "a/b/c"], "too many slashes in pattern"),
        (["-o", "table", "-f"], "table output format is not compatible with follow mode"),
        (["-o", "yaml"], "invalid output format: yaml"),
    ],
)
def test_sfi_usage_errors(
    server: ObserverServer, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert observe(server, *args) == 2
    assert message in capsys.readouterr().err
    assert not server.observer.requests


# --- output -------------------------------------------------------------------------------


def test_sfi_compact_output(server: ObserverServer, capsys: pytest.CaptureFixture[str]) -> None:
    reply = flow(is_reply=flow_pb2.google_dot_protobuf_dot_wrappers__pb2.BoolValue(value=True))  # type: ignore[attr-defined]
    drop = flow(verdict=flow_pb2.DROPPED, event_type=flow_pb2.CiliumEventType(type=1, sub_type=133))
    server.observer.responses = [
        node_status(relay_pb2.NODE_CONNECTED, ["k8s1", "k8s2"]),
        response(flow()),
        response(reply),
        response(drop),
        lost(7, 1),
        node_status(relay_pb2.NODE_UNAVAILABLE, ["k8s2"]),
    ]
    assert observe(server, "--pod", "x/a") == 0
    out, err = capsys.readouterr()
    assert out == (
        "Nov 26 04:36:29.123: x/a:43210 (ID:1234) -> y/b:80 (ID:5678) to-endpoint FORWARDED (TCP Flags: SYN)\n"
        "Nov 26 04:36:29.123: y/b:80 (ID:5678) <- x/a:43210 (ID:1234) to-endpoint FORWARDED (TCP Flags: SYN)\n"
        "Nov 26 04:36:29.123: x/a:43210 (ID:1234) -> y/b:80 (ID:5678) Policy denied DROPPED (TCP Flags: SYN)\n"
        "EVENTS LOST: PERF_EVENT_RING_BUFFER CPU(1) 7\n"
    )
    assert err == "Nov 26 04:36:29.000 [relay]: 1 nodes are unavailable: k8s2\n"


def test_sfi_json_output(server: ObserverServer, capsys: pytest.CaptureFixture[str]) -> None:
    flows = [with_extension(flow(), 1), with_extension(flow(uuid="second"), 2)]
    server.observer.responses = [response(f) for f in flows]
    for fmt in ("json", "jsonpb"):
        assert observe(server, "-o", fmt, "--last", "100") == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 2
        for line, f in zip(lines, flows, strict=True):
            doc = json.loads(line)
            assert set(doc) == {"flow", "node_name", "time"}
            back = observer_pb2.GetFlowsResponse()
            json_format.Parse(line, back)
            assert back.flow == f
            assert doc["flow"]["source"]["labels"] == [
                "k8s:pod=a",
                "k8s:io.kubernetes.pod.namespace=x",
            ]


def test_sfi_dict_and_table_output(
    server: ObserverServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.observer.responses = [response(flow()), response(flow(Summary="TCP Flags: ACK"))]
    assert observe(server, "-o", "dict") == 0
    out = capsys.readouterr().out
    assert out.count("------------\n") == 1 and out.count("    VERDICT: FORWARDED\n") == 2
    assert observe(server, "-o", "table", "--print-node-name", "--time-format", "RFC3339") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "TIMESTAMP",
        "NODE",
        "SOURCE",
        "DESTINATION",
        "TYPE",
        "VERDICT",
        "SUMMARY",
    ]
    assert lines[1].split()[:6] == [
        "2025-11-26T04:36:29Z",
        "k8s1",
        "x/a:43210",
        "y/b:80",
        "to-endpoint",
        "FORWARDED",
    ]
    assert lines[1].index("x/a:43210") == lines[0].index("SOURCE")


def test_sfi_server_error(server: ObserverServer, capsys: pytest.CaptureFixture[str]) -> None:
    server.observer.error = (
        grpc.StatusCode.INVALID_ARGUMENT,
        "whitelist[0].source_ip[0]: invalid CIDR",
    )
    assert observe(server, "--ip", "10.0.0.0/8") == 1
    assert "INVALID_ARGUMENT: whitelist[0].source_ip[0]: invalid CIDR" in capsys.readouterr().err


def test_sfi_no_server(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["observe", "--server", f"127.0.0.1:{port}", "--timeout", "0.5"]) == 1
    assert "failed to connect" in capsys.readouterr().err


def test_sfi_ctrl_c_ends_a_follow_cleanly(server: ObserverServer) -> None:
    server.observer.responses = [response(flow())]
    server.observer.hold = True
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "sensilla.cli.main", "observe", "--server", server.address, "-f"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "to-endpoint FORWARDED" in first
        assert server.observer.streaming.wait(10)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=15)
        assert rc == 0, proc.stderr.read() if proc.stderr else ""
        assert server.observer.cancelled.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_sfi_parse_time() -> None:
    now = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_time("90m", lambda: now).seconds == int(now.timestamp()) - 5400
    assert (
        parse_time("1h30m0.5s", lambda: now).ToNanoseconds()
        == (int(now.timestamp()) - 5401) * 10**9 + 500_000_000
    )
    assert parse_time("2024-05-01").seconds == 1714521600
    assert parse_time("2024-05-01T10Z").seconds == 1714557600
    assert parse_time("2024-05-01T10:30+01:00").seconds == 1714555800
    assert parse_time("Wed, 01 May 2024 10:00:00 +0000").seconds == 1714557600
    for bad in ("5x", "", "2024-13-01", "tomorrow", "1.2.3s"):
        with pytest.raises(FlagError):
            parse_time(bad, lambda: now)
