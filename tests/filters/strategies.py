"""Random flows and random Hubble filters for the filter tests.

Values come from small pools chosen so that filters often match (and often not), plus
odd and hostile values (non-canonical addresses, garbage, out-of-range enum numbers,
ports above 65535, labels in every Cilium spelling).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from sensilla.protos import extensions_pb2, flow_pb2

IPS = [
    "10.0.0.1",
    "10.0.0.5",
    "10.0.1.7",
    "10.1.0.1",
    "192.168.5.9",
    "0.0.0.0",
    "255.255.255.255",
    "fd00::1",
    "fd00::a:1",
    "fd00:0:0:1::5",
    "2001:db8::1",
    "::1",
    "::",
    "0:0::1",
    "::ffff:10.0.0.5",
    "::ffff:192.168.5.9",
    "::ffff:0:0",
    "::fffe:1:2",
    "::1.2.3.4",
    "FD00::1",
    "",
    "not-an-ip",
    "10.0.0.256",
    "010.0.0.1",
    "fe80::1%eth0",
    "1.2.3",
    ":::",
]
CIDRS = [
    "10.0.0.0/24",
    "10.0.0.0/8",
    "10.0.0.5/32",
    "10.0.0.7/30",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "::/0",
    "fd00::/64",
    "fd00::/8",
    "fd00::a:1/128",
    "2001:db8::/32",
    "::/80",
    "::/64",
    "::/127",
    "::ffff:10.0.0.0/104",
    "::ffff:0:0/96",
    "::ffff:0:0/95",
    "::/96",
    "fd00::1/100",
]
NAMESPACES = ["x", "y", "z", "default", "", "kube-system"]
PODS = ["a", "ab", "b", "c", "coredns-1", ""]
LABELS = [
    "k8s:app=a",
    "k8s:app=b",
    "container:app=c",
    "k8s:pod=a",
    "reserved:world",
    "reserved:host",
    "$host",
    "app=foo",
    "k8s:tier=5",
    "k8s:tier=10",
    "k8s:tier=-3",
    "k8s:tier=+7",
    "k8s:tier=007",
    "k8s:tier=9223372036854775807",
    "k8s:tier=9223372036854775808",
    "k8s:tier=-9223372036854775808",
    "k8s:tier=abc",
    "k8s:tier=",
    "k8s:io.kubernetes.pod.namespace=x",
    "k8s:io.kubernetes.pod.namespace=y",
    "k8s:app.kubernetes.io/name=web",
    "reserved:=a=b",
    "reserved.health",
    "k8s:a:b=c",
    "",
    "unspec:x",
    "any.key",
    "key",
    "k8s:app=a=b",
]
WORKLOADS = [
    ("web", "Deployment"),
    ("db", "StatefulSet"),
    ("", "Deployment"),
    ("web", ""),
    ("", ""),
]
SERVICES = [
    ("a/b", "c"),
    ("x", "svc-a"),
    ("y", "svc-b"),
    ("default", "kubernetes"),
    ("", "lone"),
    ("x", ""),
]
NODES = [
    "k8s1",
    "k8s2",
    "default/k8s1",
    "cluster-1/k8s1",
    "",
    "K8S1",
    "runtime1",
    "node.example.com",
]
PORTS = [0, 80, 81, 443, 8080, 53, 65535, 65616, 40000]
UUIDS = ["u-1", "u-2", "u-3", "", "'; DROP TABLE sfi_flows; --"]
IFACES = [(0, ""), (3, "lxc1"), (4, "lxc2"), (3, "eth0"), (0, "lxc1")]
EVENT_TYPES = [(1, 133), (4, 0), (4, 5), (4, 11), (5, 0), (129, 0), (0, 0)]
SELECTORS = [
    "app=a",
    "k8s:app in (a,b)",
    "!app",
    "app",
    "tier>4",
    "tier<6",
    "k8s:tier>4",
    "k8s:tier<0",
    "app notin (a)",
    "reserved:world",
    "any:app=c",
    "container:app",
    "",
    "app=a,tier",
    "app!=b",
    "k8s:io.kubernetes.pod.namespace=x",
    "app.kubernetes.io/name=web",
    "k8s:app.kubernetes.io/name in (web, db)",
    "app==b",
    "tier notin ()",
    "tier in (,5)",
    "reserved:host",
    "tier>9223372036854775806",
    "tier<9223372036854775807",
    "unspec:x",
    "key",
    "any:key",
    "pod",
    "k8s:pod=a,!reserved:world",
]
NODE_PATTERNS = [
    "k8s*",
    "k8s1",
    "/",
    "cluster-1/",
    "cluster-*/k8s1",
    "*.com",
    "default/k8s2",
    "runtime1",
    "k8s1.",
    "*",
]
PROTOCOLS = ["tcp", "UDP", "icmp", "icmpv4", "icmpv6", "sctp", "http", "dns"]
PORT_VALUES = ["80", "81", "443", "0", "65535", "080", "40000", "53"]
POD_VALUES = ["x/", "x/a", "y/b", "a", "/a", "default/", "z/c", "kube-system/coredns-", "x/ab"]
SERVICE_VALUES = ["a/b", "x/", "x/svc", "y/svc-b", "kubernetes", "/lone", "default/"]


def _endpoint(rnd: Any, ep: flow_pb2.Endpoint) -> None:
    ep.namespace = rnd.choice(NAMESPACES)
    ep.pod_name = rnd.choice(PODS)
    ep.identity = rnd.choice([0, 1, 2, 6, 256, 257, 4096, 2**32 - 1])
    ep.labels.extend(rnd.sample(LABELS, rnd.randint(0, 4)))
    for _ in range(rnd.randint(0, 2)):
        name, kind = rnd.choice(WORKLOADS)
        ep.workloads.add(name=name, kind=kind)


def build_flow(rnd: Any, seq: int) -> flow_pb2.Flow:
    """A random flow; ``rnd`` is a random.Random or hypothesis' st.randoms() object."""
    f = flow_pb2.Flow()
    f.time.seconds = rnd.randint(0, 2_000_000_000)
    f.time.nanos = rnd.randint(0, 999_999_999)
    f.uuid = rnd.choice(UUIDS)
    f.verdict = rnd.choice([0, 1, 2, 3, 4, 5, 6, 7, 99])
    f.drop_reason_desc = rnd.choice([0, 133, 139, 181, 70000])  # type: ignore[assignment]
    if rnd.random() < 0.95:
        f.IP.source = rnd.choice(IPS)
        f.IP.destination = rnd.choice(IPS)
        f.IP.ipVersion = rnd.choice([0, 1, 2, 9])  # type: ignore[assignment]
    proto = rnd.choice(["tcp", "tcp", "udp", "sctp", "icmpv4", "icmpv6", "none"])
    if proto == "tcp":
        f.l4.TCP.source_port = rnd.choice(PORTS)
        f.l4.TCP.destination_port = rnd.choice(PORTS)
        if rnd.random() < 0.9:
            for name in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"):
                setattr(f.l4.TCP.flags, name, rnd.random() < 0.3)
    elif proto == "udp":
        f.l4.UDP.source_port = rnd.choice(PORTS)
        f.l4.UDP.destination_port = rnd.choice(PORTS)
    elif proto == "sctp":
        f.l4.SCTP.source_port = rnd.choice(PORTS)
        f.l4.SCTP.destination_port = rnd.choice(PORTS)
    elif proto == "icmpv4":
        f.l4.ICMPv4.type = rnd.choice([0, 8, 300])
    elif proto == "icmpv6":
        f.l4.ICMPv6.type = rnd.choice([128, 129])
    if rnd.random() < 0.9:
        _endpoint(rnd, f.source)
    if rnd.random() < 0.9:
        _endpoint(rnd, f.destination)
    if rnd.random() < 0.4:
        ns, name = rnd.choice(SERVICES)
        f.source_service.namespace, f.source_service.name = ns, name
    if rnd.random() < 0.4:
        ns, name = rnd.choice(SERVICES)
        f.destination_service.namespace, f.destination_service.name = ns, name
    f.node_name = rnd.choice(NODES)
    f.traffic_direction = rnd.choice([0, 1, 2, 7])  # type: ignore[assignment]
    r = rnd.random()
    if r < 0.4:
        f.is_reply.value = True
    elif r < 0.8:
        f.is_reply.value = False
    if rnd.random() < 0.9:
        t, sub = rnd.choice(EVENT_TYPES)
        f.event_type.type, f.event_type.sub_type = t, sub
    if rnd.random() < 0.6:
        idx, name = rnd.choice(IFACES)
        f.interface.index, f.interface.name = idx, name
    ext = extensions_pb2.FlowExtension(
        packets=rnd.randint(0, 10),
        bytes=rnd.randint(0, 10_000),
        position=extensions_pb2.Position(collector_id="sfi-node", boot_id=1, sequence=seq),
    )
    f.extensions.Pack(ext)
    return f


def corpus(n: int, seed: int) -> list[flow_pb2.Flow]:
    rnd = random.Random(seed)
    return [build_flow(rnd, i) for i in range(n)]


@st.composite
def flows(draw: Any, max_size: int = 25) -> list[flow_pb2.Flow]:
    rnd = draw(st.randoms(use_true_random=False))
    n = draw(st.integers(min_value=0, max_value=max_size))
    return [build_flow(rnd, i) for i in range(n)]


def _sub(draw: Any, pool: list[Any], max_size: int = 3) -> list[Any]:
    return draw(st.lists(st.sampled_from(pool), min_size=1, max_size=max_size))


@st.composite
def flow_filters(draw: Any) -> flow_pb2.FlowFilter:
    """A valid FlowFilter with a random set of fields."""
    ff = flow_pb2.FlowFilter()
    fields = draw(
        st.sets(
            st.sampled_from(
                [
                    "source_ip",
                    "destination_ip",
                    "source_pod",
                    "destination_pod",
                    "source_label",
                    "destination_label",
                    "source_identity",
                    "destination_identity",
                    "verdict",
                    "drop_reason_desc",
                    "protocol",
                    "source_port",
                    "destination_port",
                    "node_name",
                    "traffic_direction",
                    "reply",
                    "tcp_flags",
                    "ip_version",
                    "event_type",
                    "source_service",
                    "destination_service",
                    "source_workload",
                    "destination_workload",
                    "uuid",
                    "interface",
                ]
            ),
            max_size=3,
        )
    )
    for name in fields:
        if name in ("source_ip", "destination_ip"):
            getattr(ff, name).extend(_sub(draw, [*IPS[:20], *CIDRS]))
        elif name in ("source_pod", "destination_pod"):
            getattr(ff, name).extend(_sub(draw, POD_VALUES))
        elif name in ("source_label", "destination_label"):
            getattr(ff, name).extend(_sub(draw, SELECTORS))
        elif name in ("source_identity", "destination_identity"):
            getattr(ff, name).extend(_sub(draw, [0, 1, 2, 256, 4096, 2**32 - 1]))
        elif name == "verdict":
            ff.verdict.extend(_sub(draw, [1, 2, 3, 4, 0]))
        elif name == "drop_reason_desc":
            ff.drop_reason_desc.extend(_sub(draw, [133, 139, 181, 0]))
        elif name == "protocol":
            ff.protocol.extend(_sub(draw, PROTOCOLS))
        elif name in ("source_port", "destination_port"):
            getattr(ff, name).extend(_sub(draw, PORT_VALUES))
        elif name == "node_name":
            ff.node_name.extend(_sub(draw, NODE_PATTERNS))
        elif name == "traffic_direction":
            ff.traffic_direction.extend(_sub(draw, [0, 1, 2]))
        elif name == "reply":
            ff.reply.extend(_sub(draw, [True, False], 2))
        elif name == "tcp_flags":
            for _ in range(draw(st.integers(1, 2))):
                names = draw(
                    st.sets(st.sampled_from(["SYN", "ACK", "FIN", "RST", "PSH", "NS"]), max_size=2)
                )
                ff.tcp_flags.add(**{n: True for n in names})
        elif name == "ip_version":
            ff.ip_version.extend(_sub(draw, [0, 1, 2]))
        elif name == "event_type":
            for _ in range(draw(st.integers(1, 2))):
                t = draw(st.sampled_from([0, 1, 4, 5, 129]))
                match_sub = draw(st.booleans())
                ff.event_type.add(
                    type=t,
                    match_sub_type=match_sub,
                    sub_type=draw(st.sampled_from([0, 5, 11, 133])) if match_sub else 0,
                )
        elif name in ("source_service", "destination_service"):
            getattr(ff, name).extend(_sub(draw, SERVICE_VALUES))
        elif name in ("source_workload", "destination_workload"):
            for n, k in _sub(draw, WORKLOADS):
                getattr(ff, name).add(name=n, kind=k)
        elif name == "uuid":
            ff.uuid.extend(_sub(draw, UUIDS))
        elif name == "interface":
            for idx, nm in _sub(draw, IFACES):
                ff.interface.add(index=idx, name=nm)
    return ff


requests = st.tuples(st.lists(flow_filters(), max_size=3), st.lists(flow_filters(), max_size=2))


_TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from("0123456789./:abfx*-=!,() ink8s"), max_size=16),
)


@st.composite
def arbitrary_flow_filters(draw: Any) -> flow_pb2.FlowFilter:
    """A FlowFilter with arbitrary values (mostly invalid): fuzzing the compiler."""
    ff = flow_pb2.FlowFilter()
    for name in draw(
        st.sets(
            st.sampled_from(
                [
                    "source_ip",
                    "destination_ip",
                    "source_pod",
                    "destination_pod",
                    "source_label",
                    "destination_label",
                    "protocol",
                    "source_port",
                    "destination_port",
                    "node_name",
                    "source_service",
                    "destination_service",
                    "uuid",
                ]
            ),
            min_size=1,
            max_size=2,
        )
    ):
        getattr(ff, name).extend(draw(st.lists(_TEXT, min_size=1, max_size=2)))
    if draw(st.booleans()):
        ff.verdict.extend(draw(st.lists(st.integers(-3, 10), min_size=1, max_size=2)))  # type: ignore[arg-type]
    if draw(st.booleans()):
        ff.source_identity.extend(draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=2)))
    return ff
