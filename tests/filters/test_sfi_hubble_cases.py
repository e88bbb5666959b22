"""Hubble's documented filter behaviours, table by table (cases follow Cilium's
pkg/hubble/filters tests). Every case is evaluated by the predicate and by the SQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sensilla.filters import FilterError, compile_request_filters
from sensilla.protos import flow_pb2
from tests.filters.engine import evaluate
from tests.filters.harness import ChdbWorker

pytestmark = pytest.mark.unit

F: Any = flow_pb2.FlowFilter
Flow: Any = flow_pb2.Flow


@pytest.fixture(scope="module")
def engine() -> Iterator[ChdbWorker]:
    worker = ChdbWorker()
    try:
        worker.create()
        yield worker
    finally:
        worker.close()


def ep(
    ns: str = "", pod: str = "", labels: tuple[str, ...] = (), identity: int = 0, **kw: Any
) -> Any:
    e = flow_pb2.Endpoint(namespace=ns, pod_name=pod, labels=list(labels), identity=identity)
    for name, kind in kw.get("workloads", []):
        e.workloads.add(name=name, kind=kind)
    return e


def tcp(sport: int = 0, dport: int = 0, **flags: bool) -> flow_pb2.Layer4:
    return flow_pb2.Layer4(
        TCP=flow_pb2.TCP(
            source_port=sport, destination_port=dport, flags=flow_pb2.TCPFlags(**flags)
        )
    )


def run(
    engine: ChdbWorker, wl: list[Any], flows: list[Flow], bl: list[Any] | None = None
) -> list[bool]:
    got, _ = evaluate(engine, wl, bl or [], flows)
    return got


# --- pods and namespaces ----------------------------------------------------------


def test_sfi_source_pod(engine: ChdbWorker) -> None:
    flows = [
        Flow(source=ep("default", "xwing")),
        Flow(source=ep("default", "tiefighter")),
        Flow(source=ep("kube-system", "xwing")),
        Flow(destination=ep("default", "xwing")),
    ]
    assert run(engine, [F(source_pod=["xwing", "default/tiefighter"])], flows) == [
        True,
        True,
        False,
        False,
    ]


def test_sfi_destination_pod(engine: ChdbWorker) -> None:
    flows = [
        Flow(destination=ep("default", "xwing")),
        Flow(destination=ep("default", "tiefighter")),
        Flow(destination=ep("kube-system", "xwing")),
        Flow(source=ep("default", "xwing")),
    ]
    got = run(engine, [F(destination_pod=["xwing", "default/tiefighter"])], flows)
    assert got == [True, True, False, False]


def test_sfi_source_and_destination_pod_and_or(engine: ChdbWorker) -> None:
    def fl(s: str, d: str) -> Flow:
        return Flow(source=ep("default", s), destination=ep("default", d))

    flows = [
        fl("xwing", "deathstar"),
        fl("tiefighter", "deathstar"),
        fl("deathstar", "xwing"),
        fl("tiefighter", "xwing"),
    ]
    both = [F(source_pod=["xwing", "tiefighter"], destination_pod=["deathstar"])]
    assert run(engine, both, flows) == [True, True, False, False]
    either = [F(source_pod=["xwing"]), F(destination_pod=["deathstar"])]
    assert run(engine, either, flows) == [True, True, False, False]


def test_sfi_namespace_filter(engine: ChdbWorker) -> None:
    def fl(sn: str, sp: str, dn: str, dp: str) -> Flow:
        return Flow(source=ep(sn, sp), destination=ep(dn, dp))

    flows = [
        fl("kube-system", "coredns", "kube-system", "kube-proxy"),
        fl("default", "tiefighter", "kube-system", "coredns"),
        fl("kube-system", "coredns", "default", "xwing"),
        fl("default", "tiefighter", "default", "xwing"),
    ]
    got = run(engine, [F(source_pod=["kube-system/"]), F(destination_pod=["kube-system/"])], flows)
    assert got == [True, True, True, False]


def test_sfi_pod_prefix(engine: ChdbWorker) -> None:
    flows = [
        Flow(source=ep("default", "xwing")),
        Flow(source=ep("default", "xwing-t-65b")),
        Flow(source=ep("kube-system", "coredns-12345")),
        Flow(source=ep("kube-system", "-coredns-12345")),
        Flow(source=ep("default", "tiefighter")),
    ]
    got = run(engine, [F(source_pod=["xwing", "kube-system/coredns-"])], flows)
    assert got == [True, True, True, False, False]


def test_sfi_pod_without_endpoint_data(engine: ChdbWorker) -> None:
    flows = [Flow(), Flow(source=ep("", "xwing")), Flow(source=ep("", ""))]
    assert run(engine, [F(source_pod=["xwing"])], flows) == [False, False, False]
    # "/xwing" asks for the empty namespace explicitly
    assert run(engine, [F(source_pod=["/xwing"])], flows) == [False, True, False]


@pytest.mark.parametrize(
    "field", ["source_pod", "destination_pod", "source_service", "destination_service"]
)
def test_sfi_empty_name_is_an_error(field: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([F(**{field: ["x/", "/"]})])
    assert err.value.field == f"whitelist[0].{field}[1]"
    assert "must be [namespace/][<name>]" in str(err.value)


def test_sfi_service_filter(engine: ChdbWorker) -> None:
    S = flow_pb2.Service
    flows = [
        Flow(source_service=S(namespace="default", name="xwing")),
        Flow(source_service=S(namespace="default", name="deathstar")),
        Flow(source_service=S(namespace="kube-system", name="kube-dns")),
        Flow(destination_service=S(namespace="kube-system", name="deathstar")),
    ]
    got = run(engine, [F(source_service=["deathstar", "kube-system/kube-dns"])], flows)
    assert got == [False, True, True, False]
    flows = [
        Flow(destination_service=S(namespace="default", name="xwing")),
        Flow(destination_service=S(namespace="default", name="deathstar")),
        Flow(destination_service=S(namespace="kube-system", name="kube-dns")),
        Flow(source_service=S(namespace="kube-system", name="deathstar")),
    ]
    got = run(engine, [F(destination_service=["default/", "kube-system/kube-"])], flows)
    assert got == [True, True, True, False]


# --- labels -------------------------------------------------------------------------


def _src(*labels: str) -> Flow:
    return Flow(source=ep(labels=labels))


def test_sfi_label_without_value(engine: ChdbWorker) -> None:
    flows = [
        _src("label1"),
        _src("label1=val1"),
        _src("label2", "label3", "label4=val4"),
        _src("label3"),
    ]
    assert run(engine, [F(source_label=["label1", "label2"])], flows) == [True, True, True, False]


def test_sfi_label_with_value(engine: ChdbWorker) -> None:
    flows = [
        _src("label1"),
        _src("label1=val1"),
        _src("label1=val2", "label2=val1", "label3"),
        _src("label2=val2", "label3"),
        _src("label3=val1"),
        _src(""),
        _src(),
        _src("label1=val1=toomuch"),
    ]
    got = run(engine, [F(source_label=["label1=val1", "label2=val2"])], flows)
    assert got == [False, True, False, True, False, False, False, False]


def test_sfi_label_set_based(engine: ChdbWorker) -> None:
    flows = [
        _src("label1"),
        _src("label1=val1"),
        _src("label1=val2", "label2=val1", "label3=val3"),
        _src("label2=val2", "label3"),
        _src("label1=val1", "label3=val3"),
    ]
    got = run(engine, [F(source_label=["label1 in (val1, val2), label3 notin ()"])], flows)
    assert got == [False, True, True, False, True]


def test_sfi_label_source_and_destination(engine: ChdbWorker) -> None:
    flows = [
        Flow(source=ep(labels=("src1", "src2=val2")), destination=ep(labels=("dst1", "dst2=val2"))),
        _src("label1=val1"),
        Flow(destination=ep(labels=("dst1", "dst2=val2"))),
        Flow(source=ep(labels=("dst1", "dst2=val2")), destination=ep(labels=("src1", "src2=val2"))),
        Flow(source=ep(labels=("src1",)), destination=ep(labels=("dst1",))),
    ]
    wl = [F(source_label=["src1, src2=val2"], destination_label=["dst1, dst2=val2"])]
    assert run(engine, wl, flows) == [True, False, False, False, False]


def test_sfi_label_empty_selector_matches_all(engine: ChdbWorker) -> None:
    flows = [_src("src1", "src2=val2"), _src(), _src("")]
    assert run(engine, [F(source_label=[""])], flows) == [True, True, True]


def test_sfi_label_cilium_sources(engine: ChdbWorker) -> None:
    flows = [
        _src("k8s:app=bar"),
        _src("k8s:foo=baz"),
        _src("k8s.app=bar"),
        _src("container:foo=bar", "reserved:host"),
    ]
    got = run(engine, [F(source_label=["k8s:app=bar", "foo", "reserved:host"])], flows)
    assert got == [True, True, False, True]
    flows = [_src("key"), _src("reserved:key"), _src("any.key")]
    assert run(engine, [F(source_label=["any:key"])], flows) == [True, True, False]


def test_sfi_label_first_match_decides(engine: ChdbWorker) -> None:
    """With an "any" source the first label with the key is the one compared."""
    flows = [_src("k8s:app=a", "container:app=b"), _src("container:app=b", "k8s:app=a")]
    assert run(engine, [F(source_label=["app=a"])], flows) == [True, False]
    assert run(engine, [F(source_label=["k8s:app=a"])], flows) == [True, True]


def test_sfi_label_numeric_comparisons(engine: ChdbWorker) -> None:
    flows = [
        _src("k8s:tier=5"),
        _src("k8s:tier=10"),
        _src("k8s:tier=abc"),
        _src("k8s:tier=+7"),
        _src("k8s:tier=007"),
        _src("k8s:tier=-3"),
        _src("k8s:tier=9223372036854775808"),
        _src(),
    ]
    assert run(engine, [F(source_label=["tier>6"])], flows) == [
        False,
        True,
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert run(engine, [F(source_label=["tier<6"])], flows) == [
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
    ]


def test_sfi_label_lab_namespaces(engine: ChdbWorker) -> None:
    flows = [
        _src(
            "k8s:pod=a",
            "k8s:io.kubernetes.pod.namespace=x",
            "k8s:io.cilium.k8s.namespace.labels.ns=x",
        ),
        _src("k8s:pod=b", "k8s:io.kubernetes.pod.namespace=y"),
        _src("reserved:world"),
    ]
    assert run(engine, [F(source_label=["k8s:io.kubernetes.pod.namespace=x"])], flows) == [
        True,
        False,
        False,
    ]
    assert run(engine, [F(source_label=["pod in (a, b)"])], flows) == [True, True, False]
    assert run(engine, [F(source_label=["!pod"])], flows) == [False, False, True]
    assert run(engine, [F(source_label=["reserved:world"])], flows) == [False, False, True]
    assert run(engine, [F(source_label=["io.cilium.k8s.namespace.labels.ns=x"])], flows) == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    "selector",
    [
        "()",
        "=",
        "any:k8s:bla",
        "app in a",
        "tier>a",
        "tier>-1",
        "app=a b",
        "a,,b",
        "app=(x",
        "!app=a",
        "a/b/c",
        "app=" + "v" * 64,
        "app\0=x",
        "   ",
        "app,",
    ],
)
def test_sfi_invalid_selectors(selector: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([], [F(destination_label=["app", selector])])
    assert err.value.field == "blacklist[0].destination_label[1]"
    assert "invalid label selector" in err.value.message


# --- node names ---------------------------------------------------------------------

NODE_CASES = [
    (["/"], {"default/k8s1": True, "k8s1": True, "": False}),
    (
        ["cluster-name/"],
        {
            "cluster-name/k8s1": True,
            "cluster-name/k8s2": True,
            "default/k8s1": False,
            "k8s1": False,
        },
    ),
    (["k8s1"], {"default/k8s1": True, "default/k8s2": False, "k8s1": True}),
    (
        ["k8s1", "runtime1"],
        {"default/k8s1": True, "default/k8s2": False, "default/runtime1": True, "k8s1": True},
    ),
    (["k8s*"], {"default/k8s1": True, "default/runtime1": False, "k8s1": True}),
    (
        ["cluster-*/k8s1"],
        {"cluster-1/k8s1": True, "cluster-1/k8s2": False, "default/k8s1": False, "k8s1": False},
    ),
    (
        ["cluster-name/*.com"],
        {
            "cluster-name/foo.com": True,
            "cluster-name/foo.bar.com": True,
            "cluster-name/foo.com.org": False,
            "default/foo.com": False,
            "k8s1": False,
        },
    ),
    (["K8S1."], {"k8s1": True, "K8S1": False}),
]


@pytest.mark.parametrize(("patterns", "want"), NODE_CASES)
def test_sfi_node_name_patterns(
    engine: ChdbWorker, patterns: list[str], want: dict[str, bool]
) -> None:
    names = list(want)
    got = run(engine, [F(node_name=patterns)], [Flow(node_name=n) for n in names])
    assert dict(zip(names, got, strict=True)) == want


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty pattern"),
        ("cluster|name/", "invalid rune in pattern"),
        ("cluster-name/node|name", "invalid rune in pattern"),
        ("cluster-name/node-name/more", "too many slashes in pattern"),
        ("k8s1..", "multiple trailing dots"),
    ],
)
def test_sfi_node_name_invalid(pattern: str, message: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([F(node_name=[pattern])])
    assert err.value.field == "whitelist[0].node_name[0]"
    assert message in str(err.value)


# --- addresses ----------------------------------------------------------------------


def _ips(pairs: list[tuple[str, str]]) -> list[Flow]:
    return [Flow(IP=flow_pb2.IP(source=s, destination=d)) for s, d in pairs]


def test_sfi_ip_exact_and_cidr(engine: ChdbWorker) -> None:
    flows = _ips([("1.1.1.1", "2.2.2.2"), ("2.2.2.2", "1.1.1.1"), ("1.1.1.2", "3.3.3.3"), ("", "")])
    assert run(engine, [F(source_ip=["1.1.1.1"])], flows) == [True, False, False, False]
    assert run(engine, [F(destination_ip=["1.1.1.1", "3.3.3.3"])], flows) == [
        False,
        True,
        True,
        False,
    ]
    assert run(engine, [F(source_ip=["1.1.1.0/24"])], flows) == [True, False, True, False]
    assert run(engine, [F(source_ip=["1.1.1.0/24"], destination_ip=["2.0.0.0/8"])], flows) == [
        True,
        False,
        False,
        False,
    ]


def test_sfi_ip_exact_is_string_equality(engine: ChdbWorker) -> None:
    flows = _ips([("::1", ""), ("0::1", ""), ("FD00::1", ""), ("fd00::1", "")])
    assert run(engine, [F(source_ip=["::1"])], flows) == [True, False, False, False]
    assert run(engine, [F(source_ip=["::1/128", "fd00::1/128"])], flows) == [True, True, True, True]


def test_sfi_ip_families_follow_go(engine: ChdbWorker) -> None:
    flows = _ips(
        [
            ("10.0.0.5", ""),
            ("::ffff:10.0.0.5", ""),
            ("::a00:5", ""),
            ("fd00::5", ""),
            ("garbage", ""),
        ]
    )
    assert run(engine, [F(source_ip=["10.0.0.0/8"])], flows) == [True, True, False, False, False]
    assert run(engine, [F(source_ip=["::ffff:10.0.0.0/104"])], flows) == [
        True,
        True,
        False,
        False,
        False,
    ]
    # an IPv6 range that contains the IPv4-mapped block numerically still never matches IPv4
    assert run(engine, [F(source_ip=["::/64"])], flows) == [False, False, True, False, False]
    assert run(engine, [F(source_ip=["::/0"])], flows) == [False, False, True, True, False]
    assert run(engine, [F(source_ip=["0.0.0.0/0"])], flows) == [True, True, False, False, False]
    assert run(engine, [F(source_ip=["10.0.0.5/8"])], flows) == [True, True, False, False, False]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.1.1.1/1234", "invalid CIDR"),
        ("1.1.1.1/", "invalid CIDR"),
        ("/8", "invalid CIDR"),
        ("10.0.0.0/255.0.0.0", "invalid CIDR"),
        ("fd00::/129", "invalid CIDR"),
        ("999.1.1.1", "invalid IP address"),
        ("fe80::1%eth0", "invalid IP address"),
        ("010.0.0.1", "invalid IP address"),
        ("", "invalid IP address"),
        ("1.1.1.1 ", "invalid IP address"),
    ],
)
def test_sfi_ip_invalid(value: str, message: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([F(), F(source_ip=["1.1.1.1", "10.0.0.0/8", value])])
    assert err.value.field == "whitelist[1].source_ip[2]"
    assert message in str(err.value)


# --- L4 -------------------------------------------------------------------------------


def test_sfi_ports(engine: ChdbWorker) -> None:
    L4 = flow_pb2.Layer4
    flows = [
        Flow(l4=tcp(40000, 80)),
        Flow(l4=L4(UDP=flow_pb2.UDP(source_port=53, destination_port=80))),
        Flow(l4=L4(SCTP=flow_pb2.SCTP(source_port=1, destination_port=80))),
        Flow(l4=L4(ICMPv4=flow_pb2.ICMPv4(type=80))),
        Flow(l4=tcp(80, 65616)),  # Hubble reads ports as uint16: 65616 is 80
        Flow(),
    ]
    assert run(engine, [F(destination_port=["80"])], flows) == [
        True,
        True,
        True,
        False,
        True,
        False,
    ]
    assert run(engine, [F(source_port=["80", "53"])], flows) == [
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    assert run(engine, [F(source_port=["080"])], flows) == [False, False, False, False, True, False]


@pytest.mark.parametrize("value", ["65536", "-1", "+80", "abc", "", " 80", "8_0", "0x50"])
def test_sfi_port_invalid(value: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([F(destination_port=["80", value])])
    assert err.value.field == "whitelist[0].destination_port[1]"
    assert "invalid port" in str(err.value)


def test_sfi_protocols(engine: ChdbWorker) -> None:
    L4 = flow_pb2.Layer4
    flows = [
        Flow(l4=tcp(1, 2)),
        Flow(l4=L4(UDP=flow_pb2.UDP())),
        Flow(l4=L4(ICMPv4=flow_pb2.ICMPv4())),
        Flow(l4=L4(ICMPv6=flow_pb2.ICMPv6())),
        Flow(l4=L4(SCTP=flow_pb2.SCTP())),
        Flow(),
    ]
    assert run(engine, [F(protocol=["TCP"])], flows) == [True, False, False, False, False, False]
    assert run(engine, [F(protocol=["icmp"])], flows) == [False, False, True, True, False, False]
    assert run(engine, [F(protocol=["icmpv6", "sctp"])], flows) == [
        False,
        False,
        False,
        True,
        True,
        False,
    ]
    assert run(engine, [F(protocol=["http", "dns", "kafka"])], flows) == [False] * 6
    with pytest.raises(
        FilterError, match=r"whitelist\[0\]\.protocol\[1\]: unknown protocol: 'foo'"
    ):
        compile_request_filters([F(protocol=["tcp", "foo"])])


def test_sfi_tcp_flags(engine: ChdbWorker) -> None:
    flows = [
        Flow(l4=tcp(SYN=True)),
        Flow(l4=tcp(SYN=True, ACK=True)),
        Flow(l4=tcp(ACK=True)),
        Flow(l4=flow_pb2.Layer4(UDP=flow_pb2.UDP())),
        Flow(),
    ]
    syn = flow_pb2.TCPFlags(SYN=True)
    synack = flow_pb2.TCPFlags(SYN=True, ACK=True)
    assert run(engine, [F(tcp_flags=[syn])], flows) == [True, True, False, False, False]
    assert run(engine, [F(tcp_flags=[synack])], flows) == [False, True, False, False, False]
    assert run(engine, [F(tcp_flags=[synack, flow_pb2.TCPFlags(ACK=True)])], flows) == [
        False,
        True,
        True,
        False,
        False,
    ]


# --- verdicts, reasons, direction, reply, versions --------------------------------------


def test_sfi_verdicts_and_drop_reasons(engine: ChdbWorker) -> None:
    flows = [
        Flow(verdict=flow_pb2.FORWARDED),
        Flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.POLICY_DENIED),
        Flow(verdict=flow_pb2.DROPPED, drop_reason_desc=flow_pb2.UNSUPPORTED_L3_PROTOCOL),
        Flow(verdict=flow_pb2.AUDIT, drop_reason_desc=flow_pb2.POLICY_DENIED),
    ]
    assert run(engine, [F(verdict=[flow_pb2.DROPPED])], flows) == [False, True, True, False]
    assert run(engine, [F(verdict=[flow_pb2.FORWARDED, flow_pb2.AUDIT])], flows) == [
        True,
        False,
        False,
        True,
    ]
    assert run(engine, [F(drop_reason_desc=[flow_pb2.POLICY_DENIED])], flows) == [
        False,
        True,
        False,
        False,
    ]
    assert run(engine, [], flows, [F(verdict=[flow_pb2.DROPPED])]) == [True, False, False, True]


@pytest.mark.parametrize(
    ("ff", "field", "message"),
    [
        (F(verdict=[1, 99]), "verdict[1]", "unknown verdict 99"),
        (F(drop_reason_desc=[133, 159]), "drop_reason_desc[1]", "unknown drop reason 159"),
        (F(traffic_direction=[3]), "traffic_direction[0]", "unknown traffic direction 3"),
        (F(ip_version=[1, 2, 4]), "ip_version[2]", "unknown IP version 4"),
    ],
)
def test_sfi_unknown_enum_values(ff: flow_pb2.FlowFilter, field: str, message: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([], [ff])
    assert err.value.field == f"blacklist[0].{field}"
    assert message in str(err.value)


def test_sfi_reply(engine: ChdbWorker) -> None:
    B = flow_pb2.google_dot_protobuf_dot_wrappers__pb2.BoolValue  # type: ignore[attr-defined]
    flows = [
        Flow(is_reply=B(value=True)),
        Flow(is_reply=B(value=False)),
        Flow(),
        Flow(verdict=flow_pb2.DROPPED),
        Flow(verdict=flow_pb2.DROPPED, is_reply=B(value=True)),
    ]
    assert run(engine, [F(reply=[True])], flows) == [True, False, False, False, True]
    assert run(engine, [F(reply=[False])], flows) == [False, True, False, True, False]
    assert run(engine, [F(reply=[True, False])], flows) == [True, True, False, True, True]


def test_sfi_direction_version_identity_uuid(engine: ChdbWorker) -> None:
    flows = [
        Flow(
            traffic_direction=flow_pb2.INGRESS,
            IP=flow_pb2.IP(ipVersion=flow_pb2.IPv4),
            uuid="a",
            source=ep(identity=256),
            destination=ep(identity=2),
        ),
        Flow(
            traffic_direction=flow_pb2.EGRESS,
            IP=flow_pb2.IP(ipVersion=flow_pb2.IPv6),
            uuid="b",
            source=ep(identity=2),
            destination=ep(identity=257),
        ),
        Flow(),
    ]
    assert run(engine, [F(traffic_direction=[flow_pb2.EGRESS])], flows) == [False, True, False]
    assert run(engine, [F(ip_version=[flow_pb2.IPv6, flow_pb2.IP_NOT_USED])], flows) == [
        False,
        True,
        True,
    ]
    assert run(engine, [F(uuid=["b", "c"])], flows) == [False, True, False]
    assert run(engine, [F(source_identity=[2]), F(destination_identity=[2])], flows) == [
        True,
        True,
        False,
    ]


# --- event types, workloads, interfaces -------------------------------------------------


def test_sfi_event_types(engine: ChdbWorker) -> None:
    CT = flow_pb2.CiliumEventType
    E = flow_pb2.EventTypeFilter
    flows = [
        Flow(event_type=CT(type=4, sub_type=0)),
        Flow(event_type=CT(type=4, sub_type=5)),
        Flow(event_type=CT(type=1, sub_type=133)),
        Flow(event_type=CT(type=5)),
    ]
    assert run(engine, [F(event_type=[E(type=4)])], flows) == [True, True, False, False]
    assert run(engine, [F(event_type=[E(type=4, match_sub_type=True, sub_type=5)])], flows) == [
        False,
        True,
        False,
        False,
    ]
    assert run(engine, [F(event_type=[E(type=1), E(type=5)])], flows) == [False, False, True, True]
    assert run(engine, [F(event_type=[E(match_sub_type=True, sub_type=133)])], flows) == [
        False,
        False,
        True,
        False,
    ]


def test_sfi_workloads(engine: ChdbWorker) -> None:
    W = flow_pb2.Workload
    flows = [
        Flow(source=ep(workloads=[("web", "Deployment")])),
        Flow(source=ep(workloads=[("db", "StatefulSet")])),
        Flow(source=ep()),
        Flow(destination=ep(workloads=[("web", "Deployment")])),
    ]
    assert run(engine, [F(source_workload=[W(name="web")])], flows) == [True, False, False, False]
    assert run(
        engine,
        [F(source_workload=[W(kind="StatefulSet"), W(name="web", kind="Deployment")])],
        flows,
    ) == [True, True, False, False]
    assert run(engine, [F(source_workload=[W()])], flows) == [True, True, False, False]


def test_sfi_interfaces(engine: ChdbWorker) -> None:
    I = flow_pb2.NetworkInterface  # noqa: E741
    flows = [
        Flow(interface=I(index=3, name="lxc1")),
        Flow(interface=I(index=4, name="lxc2")),
        Flow(),
    ]
    assert run(engine, [F(interface=[I(index=3)])], flows) == [True, False, False]
    assert run(engine, [F(interface=[I(name="lxc2")])], flows) == [False, True, False]
    assert run(engine, [F(interface=[I(index=3, name="lxc2")])], flows) == [False, False, False]


# --- combination -------------------------------------------------------------------------


def test_sfi_whitelist_or_and_blacklist_none(engine: ChdbWorker) -> None:
    flows = [
        Flow(source=ep("x", "a"), verdict=flow_pb2.FORWARDED),
        Flow(source=ep("x", "b"), verdict=flow_pb2.DROPPED),
        Flow(source=ep("y", "a"), verdict=flow_pb2.DROPPED),
        Flow(source=ep("z", "c"), verdict=flow_pb2.FORWARDED),
    ]
    wl = [F(source_pod=["x/"]), F(verdict=[flow_pb2.DROPPED])]
    assert run(engine, wl, flows) == [True, True, True, False]
    assert run(engine, wl, flows, [F(source_pod=["x/b"]), F(source_pod=["y/"])]) == [
        True,
        False,
        False,
        False,
    ]
    # the AND inside one filter
    assert run(engine, [F(source_pod=["x/"], verdict=[flow_pb2.DROPPED])], flows) == [
        False,
        True,
        False,
        False,
    ]
    # an empty filter matches everything
    assert run(engine, [F()], flows) == [True] * 4
    assert run(engine, [], flows, [F()]) == [False] * 4
    assert run(engine, [], flows, [F(source_pod=["x/"], verdict=[flow_pb2.DROPPED])]) == [
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize(
    "field",
    [
        "source_fqdn",
        "destination_fqdn",
        "http_status_code",
        "http_method",
        "http_path",
        "http_url",
        "dns_query",
        "trace_id",
        "source_cluster_name",
        "destination_cluster_name",
        "node_labels",
        "source_ip_xlated",
    ],
)
def test_sfi_unsupported_fields_are_rejected(field: str) -> None:
    with pytest.raises(FilterError) as err:
        compile_request_filters([F(), F(**{field: ["x"]})])
    assert err.value.field == f"whitelist[1].{field}"
    assert "not supported" in str(err.value)
    with pytest.raises(FilterError):
        compile_request_filters([], [F(http_header=[flow_pb2.HTTPHeader(key="a", value="b")])])


def test_sfi_unknown_filter_fields_are_rejected() -> None:
    # field 39 (a newer Hubble's cel_expression) arrives as an unknown field
    raw = F(verdict=[1]).SerializeToString() + bytes([0xBA, 0x02, 0x03]) + b"a>b"
    ff = flow_pb2.FlowFilter.FromString(raw)
    with pytest.raises(FilterError) as err:
        compile_request_filters([], [ff])
    assert err.value.field == "blacklist[0]"
    assert "39" in str(err.value)
