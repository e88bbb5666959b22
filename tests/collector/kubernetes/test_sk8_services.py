"""Service lookups for enrichment, and ClusterIP egress judged on the backends."""

from __future__ import annotations

import ipaddress

import pytest

from collector.compiler import AttributionRegistry, compile_node
from collector.policy.explain import explain_text
from collector.policy.verdict import verdict
from collector.sources.k8s_services import Backend, ServiceIndex
from tests.collector.policy.clusterip_data import clusterip_cluster, service, slice_

pytestmark = pytest.mark.unit


def test_sk8_lookup_frontends_then_backends() -> None:
    idx = ServiceIndex.from_objects(
        [service("x", "web", "10.96.0.10", ("http", 80, "TCP"), ("dns", 53, "UDP")),
         service("x", "headless", None, ("http", 80, "TCP")),
         service("y", "also-a", "10.96.0.11", ("", 81, "TCP"))],
        [slice_("x", "web", "web-1", [("10.0.0.1", "a", True), ("10.0.0.2", "b", False)],
                ("http", 8080, "TCP"), ("dns", 5353, "UDP")),
         slice_("x", "headless", "h-1", [("10.0.0.3", "c", None)], ("http", 80, "TCP")),
         slice_("y", "also-a", "aa-1", [("10.0.0.1", "a", True)], ("", 81, "TCP"))],
    )
    assert str(idx.lookup("10.96.0.10")) == "x/web"
    assert str(idx.lookup("10.96.0.10", 80)) == "x/web"
    assert idx.lookup("10.96.0.10", 8080) is None  # not a port of the frontend
    assert idx.is_frontend("10.96.0.11") and not idx.is_frontend("10.0.0.1")
    # a backend of two services: the first by namespace/name; by port, the right one
    assert str(idx.lookup("10.0.0.1")) == "x/web"
    assert str(idx.lookup("10.0.0.1", 81)) == "y/also-a"
    assert str(idx.lookup("10.0.0.3")) == "x/headless"  # headless: backends only
    assert idx.lookup("10.9.9.9") is None and idx.lookup("not an ip") is None
    # backends: ready only, the slice port of the same name, per protocol
    assert idx.backends("10.96.0.10", 80) == [
        Backend(ipaddress.ip_address("10.0.0.1"), 8080, "TCP", "x/a")]
    assert [b.port for b in idx.backends("10.96.0.10", 53, "UDP")] == [5353]
    assert idx.backends("10.96.0.10", 53, "TCP") == []


def test_sk8_clusterip_egress_judged_on_every_backend() -> None:
    """The db Service's ClusterIP is allowed while every ready backend is a db pod;
    a backend the client may not reach makes the whole frontend denied (kube-proxy
    could pick it); no ready backend, no allowance."""
    state = clusterip_cluster()
    v = verdict("x/client", "10.96.1.1", 5432, "TCP", state)
    assert v.egress.allowed and v.egress.service == "x/db"
    assert [m.path for m in v.egress.matches] == [
        "x/client-to-db spec.egress[0].to[0] ports[0]"]
    text = explain_text(v)
    assert "10.96.1.1 is a frontend of Service x/db" in text, text
    assert "x/client-to-db spec.egress[0].to[0] ports[0] allows it" in text, text
    for ip in ("10.96.1.2", "10.96.1.3"):
        assert not verdict("x/client", ip, 5432, "TCP", state).egress.allowed, ip
    assert not verdict("x/client", "10.96.1.1", 5433, "TCP", state).egress.allowed
    assert not verdict("x/client", "10.96.1.1", 5432, "UDP", state).egress.allowed
    # the same Service whose backends listen on another port is not allowed
    moved = clusterip_cluster(db_backend_port=6432)
    assert not verdict("x/client", "10.96.1.1", 5432, "TCP", moved).egress.allowed


def test_sk8_clusterip_egress_compiles_to_the_frontend_address() -> None:
    """The compiler gives x/client an exact entry for the db ClusterIP and its
    service port, attributed to the rule that allows the backends; nothing for the
    mixed and empty Services."""
    state = clusterip_cluster()
    registry = AttributionRegistry()
    plan = compile_node(state, "n1", registry)
    egress = plan.endpoints["x/client"].egress
    assert egress.enforced
    by_group = {c.group: str(c.network) for c in egress.cidrs if c.group}
    frontend_rules = [
        (by_group[r.peer], r.protocol, r.port_lo, r.port_hi, r.attribution)
        for r in egress.rules
        if r.peer in by_group
    ]
    assert [(net, proto, lo, hi) for net, proto, lo, hi, _ in frontend_rules] == [
        ("10.96.1.1/32", 6, 5432, 5432)]
    att = registry.lookup(frontend_rules[0][4])
    assert att is not None and att.verdict == "allow"
    assert [str(r) for r in att.rules] == ["x/client-to-db spec.egress[0]"]
    assert not any("10.96.1.2" in n or "10.96.1.3" in n for n in by_group.values())
    # a backend that moves to another port: the frontend is no longer compiled in
    moved = compile_node(clusterip_cluster(db_backend_port=6432), "n1").endpoints
    assert not any(c.group for c in moved["x/client"].egress.cidrs)
