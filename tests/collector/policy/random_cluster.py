"""Hypothesis strategies for random clusters and policies (property tests of the
compiler against the model, and of the loaded programs against the model)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from collector.policy.cluster import ClusterState, ContainerPort, Namespace, Node, Pod
from collector.policy.parse import parse_object

NODES = ("n1", "n2")
NS_NAMES = ("red", "green", "blue")
LABEL_VOCAB = {"app": ("web", "db"), "tier": ("one", "two")}
NS_VOCAB = {"env": ("prod", "dev"), "team": ("t1", "t2")}
# Named ports that differ per pod: (name, protocol) -> candidate numbers.
NAMED = {("http", "TCP"): (80, 81, 8080), ("dns", "UDP"): (53, 5353), ("sig", "SCTP"): (80, 81)}
PROBES = [(80, "TCP"), (81, "TCP"), (8080, "TCP"), (53, "UDP"), (5353, "UDP"), (80, "SCTP")]


def _labels(draw: Any, vocab: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    out = {}
    for k, values in vocab.items():
        v = draw(st.sampled_from((None, *values)))
        if v is not None:
            out[k] = v
    return out


@st.composite
def clusters(draw: Any, max_pods: int = 7) -> ClusterState:
    namespaces = [Namespace(n, _labels(draw, NS_VOCAB)) for n in NS_NAMES]
    n_pods = draw(st.integers(2, max_pods))
    # Few label sets, so several pods share one (and so one identity).
    label_sets = [_labels(draw, LABEL_VOCAB) for _ in range(draw(st.integers(1, 3)))]
    pods = []
    for i in range(n_pods):
        node_i = draw(st.integers(0, len(NODES) - 1))
        ports = []
        for (name, proto), numbers in NAMED.items():
            n = draw(st.sampled_from((None, *numbers)))
            if n is not None:
                ports.append(ContainerPort(n, proto, name))
        v4 = ipaddress.ip_address(f"10.9.{node_i + 1}.{10 + i}")
        v6 = ipaddress.ip_address(f"fd00:9:{node_i + 1}::{10 + i:x}")
        pods.append(
            Pod(
                namespace=draw(st.sampled_from(NS_NAMES)),
                name=f"p{i}",
                labels=dict(draw(st.sampled_from(label_sets))),
                node=NODES[node_i],
                ips=(v4, v6),
                ports=tuple(ports),
            )
        )
    nodes = [
        Node(
            n, (ipaddress.ip_address(f"10.9.{i + 1}.1"), ipaddress.ip_address(f"172.19.0.{i + 2}"))
        )
        for i, n in enumerate(NODES)
    ]
    state = ClusterState.build(nodes, namespaces, pods)
    n_policies = draw(st.integers(0, 4))
    for j in range(n_policies):
        obj = draw(policy_objects(pods, f"pol{j}"))
        pol = parse_object(obj).policy
        state.policies[pol.key] = pol
    return state


def _selector(draw: Any, vocab: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    kind = draw(st.sampled_from(("empty", "labels", "expr")))
    if kind == "empty":
        return {}
    key = draw(st.sampled_from(sorted(vocab)))
    if kind == "labels":
        return {"matchLabels": {key: draw(st.sampled_from(vocab[key]))}}
    op = draw(st.sampled_from(("In", "NotIn", "Exists", "DoesNotExist")))
    expr: dict[str, Any] = {"key": key, "operator": op}
    if op in ("In", "NotIn"):
        expr["values"] = draw(
            st.lists(st.sampled_from(vocab[key]), min_size=1, max_size=2, unique=True)
        )
    return {"matchExpressions": [expr]}


def _ip_block(draw: Any, pods: list[Pod]) -> dict[str, Any]:
    pod = draw(st.sampled_from(pods))
    family = draw(st.sampled_from((4, 6)))
    addr = pod.ip(family)
    assert addr is not None
    max_len = addr.max_prefixlen
    plen = draw(st.sampled_from((8, 16, 24, max_len) if family == 4 else (32, 64, 112, max_len)))
    cidr = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
    block: dict[str, Any] = {"cidr": str(cidr)}
    if plen < max_len and draw(st.booleans()):
        others = [p.ip(family) for p in pods]
        inside = sorted({str(o) for o in others if o is not None and o in cidr})
        hole = draw(st.sampled_from(inside))
        hole_len = draw(st.sampled_from((max_len, max_len - 2)))
        exc = ipaddress.ip_network(f"{hole}/{max(hole_len, plen + 1)}", strict=False)
        block["except"] = [str(exc)]
    return block


def _peer(draw: Any, pods: list[Pod]) -> dict[str, Any]:
    kind = draw(st.sampled_from(("pod", "ns", "both", "block")))
    if kind == "block":
        return {"ipBlock": _ip_block(draw, pods)}
    peer: dict[str, Any] = {}
    if kind in ("pod", "both"):
        peer["podSelector"] = _selector(draw, LABEL_VOCAB)
    if kind in ("ns", "both"):
        ns_vocab = {**NS_VOCAB, "kubernetes.io/metadata.name": NS_NAMES}
        peer["namespaceSelector"] = _selector(draw, ns_vocab)
    return peer


def _port(draw: Any) -> dict[str, Any]:
    kind = draw(st.sampled_from(("number", "range", "named", "proto")))
    proto = draw(st.sampled_from(("TCP", "UDP", "SCTP")))
    if kind == "number":
        return {"protocol": proto, "port": draw(st.sampled_from((53, 80, 81, 8080, 5353)))}
    if kind == "range":
        lo = draw(st.sampled_from((53, 80, 81)))
        return {"protocol": proto, "port": lo, "endPort": lo + draw(st.sampled_from((0, 1, 8000)))}
    if kind == "named":
        name, nproto = draw(st.sampled_from(sorted(NAMED)))
        return {"protocol": draw(st.sampled_from((nproto, nproto, proto))), "port": name}
    return {"protocol": proto}


@st.composite
def policy_objects(draw: Any, pods: list[Pod], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": _selector(draw, LABEL_VOCAB)}
    types = draw(st.sampled_from(((), ("Ingress",), ("Egress",), ("Ingress", "Egress"))))
    if types:
        spec["policyTypes"] = list(types)
    for direction, peers_key in (("ingress", "from"), ("egress", "to")):
        rules = []
        for _ in range(draw(st.integers(0, 2))):
            rule: dict[str, Any] = {}
            peers = [_peer(draw, pods) for _ in range(draw(st.integers(0, 2)))]
            if peers:
                rule[peers_key] = peers
            ports = [_port(draw) for _ in range(draw(st.integers(0, 2)))]
            if ports:
                rule["ports"] = ports
            rules.append(rule)
        if rules or draw(st.booleans()):
            spec[direction] = rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": draw(st.sampled_from(NS_NAMES))},
        "spec": spec,
    }
