"""Fuzzing the NetworkPolicy parser (collector/policy/parse.py): mutated valid policies
and arbitrary text. A document is either accepted, and then the policy model and the
compiler handle it (verdicts between every pair of pods, both nodes compiled), or
rejected with a PolicyValidationError whose every error names a field path. Nothing
else may escape, hang or eat memory.

Room tests that fuzz the same parser with fewer cases: tests/collector/policy/
test_spo_parse.py (hypothesis over selectors and ports), test_spo_property.py (the
model against the datapath)."""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.compiler.compile import compile_node
from collector.policy.cluster import ClusterState, ContainerPort, Namespace, Node, Pod
from collector.policy.errors import PolicyValidationError
from collector.policy.parse import parse_documents, parse_object
from collector.policy.verdict import verdict
from tests.reliability.protofuzz import HOSTILE
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.unit

A = ipaddress.ip_address
SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

BASE: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "srl-fuzz", "namespace": "x", "labels": {"a": "b"}},
    "spec": {
        "podSelector": {
            "matchLabels": {"pod": "a"},
            "matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"pod": "b"}}},
                    {
                        "namespaceSelector": {
                            "matchExpressions": [{"key": "ns", "operator": "Exists"}]
                        }
                    },
                    {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                ],
                "ports": [
                    {"port": 80, "protocol": "TCP"},
                    {"port": "serve-81-udp", "protocol": "UDP"},
                    {"port": 1000, "endPort": 2000},
                ],
            }
        ],
        "egress": [
            {"to": [{"ipBlock": {"cidr": "fd00::/8"}}], "ports": [{"protocol": "SCTP"}]},
            {},
        ],
    },
}
KEYS = (
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "spec",
    "podSelector",
    "policyTypes",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "ipBlock",
    "cidr",
    "except",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "annotations",
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, 80, 65535, 65536, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(HOSTILE[:-1]),
    st.text(max_size=20),
    st.sampled_from(
        ["In", "NotIn", "Exists", "DoesNotExist", "TCP", "UDP", "SCTP", "Ingress", "Egress"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=4),
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    doc: Any = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            if draw(st.integers(0, 9)) == 0:
                doc = draw(json_values)
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        op = draw(st.integers(0, 3))
        if op == 0:
            parent[last] = draw(json_values)
        elif op == 1:
            del parent[last]
        elif op == 2 and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS))] = draw(json_values)
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = draw(scalars)
    return doc


def cluster() -> ClusterState:
    ports = (
        ContainerPort(80, "TCP", "serve-80-tcp"),
        ContainerPort(81, "UDP", "serve-81-udp"),
    )
    pods = []
    for i, (ns, name) in enumerate([("x", "a"), ("x", "b"), ("y", "a"), ("z", "c")]):
        node = "n1" if i % 2 == 0 else "n2"
        ips = (A(f"10.244.{1 + i % 2}.{10 + i}"), A(f"fd00:10:244:{1 + i % 2}::{10 + i:x}"))
        pods.append(Pod(ns, name, {"pod": name}, node, ips, ports=ports))
    return ClusterState.build(
        nodes=[Node("n1", (A("172.18.0.2"),)), Node("n2", (A("172.18.0.3"),))],
        namespaces=[Namespace(n, {"ns": n}) for n in ("x", "y", "z")],
        pods=pods,
    )


CLUSTER = cluster()


def use(parsed: list[Any]) -> None:
    """An accepted policy must work everywhere policies are used."""
    state = copy.copy(CLUSTER)
    state.policies = {f"{p.policy.namespace}/{p.policy.name}": p.policy for p in parsed}
    for node in ("n1", "n2"):
        compile_node(state, node)
    for src in state.pods:
        for dst in state.pods:
            if src != dst:
                for port, proto in ((80, "TCP"), (81, "UDP"), (1500, "SCTP"), (None, "ICMP")):
                    verdict(src, dst, port, proto, state)


def check_rejection(exc: PolicyValidationError) -> None:
    assert exc.errors, "a rejection names at least one problem"
    for e in exc.errors:
        assert isinstance(e.path, str) and e.kind
    str(exc)


@SETTINGS
@given(mutated())
def test_srl_fuzz_policy_objects(doc: Any) -> None:
    try:
        parsed = parse_object(doc, "fuzz")
    except PolicyValidationError as exc:
        check_rejection(exc)
        return
    use([parsed])


@SETTINGS
@given(mutated(), st.booleans())
def test_srl_fuzz_policy_documents(doc: Any, as_json: bool) -> None:
    text = json.dumps(doc) if as_json else yaml.safe_dump(doc)
    try:
        parsed = parse_documents(text, "fuzz")
    except PolicyValidationError as exc:
        check_rejection(exc)
        return
    use(parsed)


@SETTINGS
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")),
        st.sampled_from(
            [
                "{",
                "[",
                "---\n---\n",
                "kind: List\nitems: 3",
                "a: &a [*a]",
                "!!python/object:os.system {}",
            ]
        ),
    )
)
def test_srl_fuzz_policy_text(text: str) -> None:
    try:
        parsed = parse_documents(text, "fuzz")
    except PolicyValidationError as exc:
        check_rejection(exc)
        return
    use(parsed)
