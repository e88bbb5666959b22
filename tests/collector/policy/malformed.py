"""Malformed NetworkPolicy documents the API server rejects, each with the field path
its error must name. Used by the unit tests and by the lab test that checks nothing
changes when `policy apply` rejects them."""

from __future__ import annotations

import copy
from typing import Any

import yaml

VALID: dict[str, Any] = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "spo-malformed", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                "ports": [{"port": 80, "protocol": "TCP"}],
            }
        ],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
    },
}


def _with(path: str, value: Any) -> str:
    """VALID with the value at a dotted path (list indexes as numbers) replaced;
    value DELETE removes the key."""
    doc = copy.deepcopy(VALID)
    parts = path.split(".")
    cur: Any = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if value is DELETE:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return yaml.safe_dump(doc, sort_keys=False)


DELETE = object()
ING = "spec.ingress.0"
EXPR = {"key": "pod", "operator": "In", "values": ["a"]}

# (name, document text, field path the error must name)
MALFORMED: list[tuple[str, str, str]] = [
    (
        "operator-unknown",
        _with("spec.podSelector", {"matchExpressions": [{**EXPR, "operator": "Equals"}]}),
        "spec.podSelector.matchExpressions[0].operator",
    ),
    (
        "in-without-values",
        _with("spec.podSelector", {"matchExpressions": [{"key": "pod", "operator": "In"}]}),
        "spec.podSelector.matchExpressions[0].values",
    ),
    (
        "exists-with-values",
        _with("spec.podSelector", {"matchExpressions": [{**EXPR, "operator": "Exists"}]}),
        "spec.podSelector.matchExpressions[0].values",
    ),
    (
        "selector-key-invalid",
        _with(f"{ING}.from.0.podSelector", {"matchExpressions": [{**EXPR, "key": "a/b/c"}]}),
        "spec.ingress[0].from[0].podSelector.matchExpressions[0].key",
    ),
    (
        "match-labels-key-invalid",
        _with("spec.podSelector", {"matchLabels": {"-pod": "a"}}),
        "spec.podSelector.matchLabels",
    ),
    (
        "match-labels-value-too-long",
        _with("spec.podSelector", {"matchLabels": {"pod": "a" * 64}}),
        "spec.podSelector.matchLabels",
    ),
    (
        "match-labels-value-not-string",
        _with("spec.podSelector", {"matchLabels": {"pod": 1}}),
        "spec.podSelector.matchLabels.pod",
    ),
    (
        "cidr-prefix-too-long",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "10.0.0.0/33"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        "cidr-without-prefix",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "10.0.0.1"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        "cidr-leading-zeros",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "010.0.0.0/8"}}),
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        "except-outside-cidr",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "except-equal-to-cidr",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "except-other-family",
        _with(f"{ING}.from.0", {"ipBlock": {"cidr": "fd00::/8", "except": ["10.0.0.0/16"]}}),
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    (
        "except-not-a-cidr",
        _with(
            "spec.egress.0.to.0", {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16x"]}}
        ),
        "spec.egress[0].to[0].ipBlock.except[0]",
    ),
    (
        "ipblock-with-selector",
        _with(
            f"{ING}.from.0",
            {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {"matchLabels": {"pod": "b"}}},
        ),
        "spec.ingress[0].from[0]",
    ),
    ("empty-peer", _with(f"{ING}.from.0", {}), "spec.ingress[0].from[0]"),
    ("port-zero", _with(f"{ING}.ports.0", {"port": 0}), "spec.ingress[0].ports[0].port"),
    ("port-too-big", _with(f"{ING}.ports.0", {"port": 65536}), "spec.ingress[0].ports[0].port"),
    (
        "port-name-uppercase",
        _with(f"{ING}.ports.0", {"port": "Serve-80"}),
        "spec.ingress[0].ports[0].port",
    ),
    (
        "port-name-too-long",
        _with(f"{ING}.ports.0", {"port": "serve-80-tcp-abc"}),
        "spec.ingress[0].ports[0].port",
    ),
    (
        "port-name-digits-only",
        _with(f"{ING}.ports.0", {"port": "80"}),
        "spec.ingress[0].ports[0].port",
    ),
    (
        "port-name-double-hyphen",
        _with(f"{ING}.ports.0", {"port": "serve--80"}),
        "spec.ingress[0].ports[0].port",
    ),
    (
        "end-port-with-named-port",
        _with(f"{ING}.ports.0", {"port": "serve-80-tcp", "endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
    ),
    (
        "end-port-without-port",
        _with(f"{ING}.ports.0", {"endPort": 90}),
        "spec.ingress[0].ports[0].endPort",
    ),
    (
        "end-port-below-port",
        _with(f"{ING}.ports.0", {"port": 81, "endPort": 80}),
        "spec.ingress[0].ports[0].endPort",
    ),
    (
        "protocol-icmp",
        _with(f"{ING}.ports.0", {"port": 80, "protocol": "ICMP"}),
        "spec.ingress[0].ports[0].protocol",
    ),
    (
        "protocol-lowercase",
        _with(f"{ING}.ports.0", {"port": 80, "protocol": "tcp"}),
        "spec.ingress[0].ports[0].protocol",
    ),
    (
        "policy-types-three",
        _with("spec.policyTypes", ["Ingress", "Egress", "Ingress"]),
        "spec.policyTypes",
    ),
    ("policy-type-unknown", _with("spec.policyTypes", ["Both"]), "spec.policyTypes[0]"),
    ("name-invalid", _with("metadata.name", "Bad_Name"), "metadata.name"),
    ("name-missing", _with("metadata.name", DELETE), "metadata.name"),
    ("namespace-invalid", _with("metadata.namespace", "X"), "metadata.namespace"),
    (
        "unknown-field",
        _with(f"{ING}", {"form": [{"podSelector": {}}]}),
        "spec.ingress[0].form",
    ),
    ("ingress-not-a-list", _with("spec.ingress", {"from": []}), "spec.ingress"),
    ("kind-wrong", _with("kind", "Pod"), "kind"),
    ("api-version-wrong", _with("apiVersion", "networking.k8s.io/v1beta1"), "apiVersion"),
    (
        "duplicate-field",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: spo-malformed, namespace: x}\n"
        "spec:\n  podSelector: {}\n  podSelector: {matchLabels: {pod: a}}\n",
        "",
    ),
    ("yaml-syntax", "apiVersion: networking.k8s.io/v1\nkind: [NetworkPolicy\n", ""),
    (
        "second-document-invalid",
        yaml.safe_dump(VALID) + "---\n" + _with(f"{ING}.ports.0", {"port": 0}),
        "spec.ingress[0].ports[0].port",
    ),
]
