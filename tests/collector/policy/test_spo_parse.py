"""Parsing and validation: field-path errors as the API server reports them."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.policy.errors import PolicyValidationError
from collector.policy.model import EGRESS, INGRESS, SCTP, TCP, UDP
from collector.policy.parse import parse_documents, parse_object
from tests.collector.policy.malformed import MALFORMED, VALID

pytestmark = pytest.mark.unit


def test_spo_valid_document_parses() -> None:
    (p,) = parse_documents(yaml.safe_dump(VALID), "v.yaml")
    pol = p.policy
    assert pol.key == "x/spo-malformed"
    assert pol.policy_types == (INGRESS, EGRESS)
    assert pol.ingress[0].ports[0].port == 80
    assert str(pol.egress[0].peers[0].ip_block.cidr) == "10.0.0.0/8"  # type: ignore[union-attr]


@pytest.mark.parametrize(("name", "text", "path"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_spo_malformed_rejected_with_field_path(name: str, text: str, path: str) -> None:
    with pytest.raises(PolicyValidationError) as info:
        parse_documents(text, "bad.yaml")
    err = info.value
    assert err.errors, name
    paths = [e.path for e in err.errors]
    assert path in paths, f"{name}: expected an error at {path!r}, got {err}"
    # The message names the file, the document and the field.
    assert str(err).startswith("bad.yaml")
    if path:
        assert "bad.yaml document" in str(err)
        assert f"{path}: " in str(err)


def test_spo_malformed_catalogue_is_large_enough() -> None:
    assert len(MALFORMED) >= 20


def test_spo_error_format_matches_api_server() -> None:
    doc = json.loads(json.dumps(VALID))
    doc["spec"]["ingress"][0]["from"] = [
        {"podSelector": {}},
        {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/8"]}},
    ]
    with pytest.raises(PolicyValidationError) as info:
        parse_object(doc)
    assert str(info.value.errors[0]) == (
        'spec.ingress[0].from[1].ipBlock.except[0]: Invalid value: "10.0.0.0/8": '
        "must be a strict subset of `cidr`"
    )


def test_spo_defaults() -> None:
    text = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a}
spec:
  podSelector: {}
  egress: [{ports: [{port: 53}, {protocol: UDP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b, namespace: y}
spec: {podSelector: {}}
"""
    a, b = (p.policy for p in parse_documents(text, default_namespace="x"))
    assert a.key == "x/a" and a.policy_types == (INGRESS, EGRESS)
    assert a.egress[0].ports[0].protocol == TCP and a.egress[0].ports[0].port == 53
    assert a.egress[0].ports[1].protocol == UDP and a.egress[0].ports[1].port is None
    assert b.key == "y/b" and b.policy_types == (INGRESS,) and b.ingress == ()


def test_spo_json_stream_and_list() -> None:
    one = json.dumps(VALID)
    other = dict(VALID, metadata={"name": "two", "namespace": "y"})
    docs = parse_documents(one + "\n" + json.dumps(other))
    assert [d.policy.key for d in docs] == ["x/spo-malformed", "y/two"]
    listed = {"apiVersion": "v1", "kind": "List", "items": [VALID, other]}
    docs = parse_documents(yaml.safe_dump(listed))
    assert [d.policy.key for d in docs] == ["x/spo-malformed", "y/two"]
    with pytest.raises(PolicyValidationError) as info:
        parse_documents(yaml.safe_dump({**listed, "items": [VALID, {**other, "kind": "Pod"}]}))
    assert "items[1]" in str(info.value)


def test_spo_ipv6_and_end_port_and_sctp() -> None:
    doc = json.loads(json.dumps(VALID))
    doc["spec"]["ingress"][0] = {
        "from": [{"ipBlock": {"cidr": "fd00:10:244::/48", "except": ["fd00:10:244:1::/64"]}}],
        "ports": [{"port": 8000, "endPort": 9000, "protocol": SCTP}],
    }
    pol = parse_object(doc).policy
    block = pol.ingress[0].peers[0].ip_block
    assert block is not None
    assert block.contains(ipaddress.ip_address("fd00:10:244:2::a"))
    assert not block.contains(ipaddress.ip_address("fd00:10:244:1::a"))
    assert not block.contains(ipaddress.ip_address("10.0.0.1"))
    assert pol.ingress[0].ports[0].end_port == 9000


def test_spo_host_bits_allowed_like_go() -> None:
    doc = json.loads(json.dumps(VALID))
    doc["spec"]["egress"][0]["to"][0]["ipBlock"] = {"cidr": "10.244.1.10/4"}
    pol = parse_object(doc).policy
    assert str(pol.egress[0].peers[0].ip_block.cidr) == "0.0.0.0/4"  # type: ignore[union-attr]


def test_spo_all_errors_reported_at_once() -> None:
    doc = json.loads(json.dumps(VALID))
    doc["spec"]["ingress"][0]["ports"] = [{"port": 0}, {"port": "x--y", "protocol": "ICMP"}]
    doc["metadata"]["name"] = "Bad"
    with pytest.raises(PolicyValidationError) as info:
        parse_object(doc)
    paths = {e.path for e in info.value.errors}
    assert {
        "metadata.name",
        "spec.ingress[0].ports[0].port",
        "spec.ingress[0].ports[1].port",
        "spec.ingress[0].ports[1].protocol",
    } <= paths


# --- hypothesis: the parser never crashes, and round-trips what it accepts ----------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "podSelector",
                    "namespaceSelector",
                    "ipBlock",
                    "cidr",
                    "except",
                    "ports",
                    "port",
                    "endPort",
                    "protocol",
                    "from",
                    "to",
                    "matchLabels",
                    "matchExpressions",
                    "key",
                    "operator",
                    "values",
                    "ingress",
                    "egress",
                    "policyTypes",
                    "junk",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(spec=json_values)
def test_spo_fuzz_spec_never_crashes(spec: Any) -> None:
    doc = {**VALID, "spec": spec}
    try:
        parsed = parse_object(doc)
    except PolicyValidationError as exc:
        assert exc.errors and all(isinstance(e.path, str) for e in exc.errors)
        return
    # Accepted: the canonical object parses to the same model.
    again = parse_object(parsed.policy.to_object()).policy
    assert again == parsed.policy


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_spo_fuzz_text_never_crashes(text: str) -> None:
    try:
        parse_documents(text)
    except PolicyValidationError:
        pass
