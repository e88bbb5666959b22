"""Service lookups for enrichment, and ClusterIP egress judged on the backends."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from collector.policy.cluster import ClusterState
from collector.policy.verdict import verdict
from collector.sources.k8s_services import Backend, ServiceIndex, allowed_frontends

pytestmark = pytest.mark.unit


def service(ns: str, name: str, ip: str | None, *ports: tuple[str, int, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}
    spec["clusterIP"] = ip or "None"
    if ip:
        spec["clusterIPs"] = [ip]
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


def slice_(ns: str, svc: str, name: str, eps: list[tuple[str, str, bool | None]],
           *ports: tuple[str, int, str]) -> dict[str, Any]:
    endpoints = []
    for ip, pod, ready in eps:
        ep: dict[str, Any] = {"addresses": [ip],
                              "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        endpoints.append(ep)
    return {"metadata": {"namespace": ns, "name": name,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": n, "port": p, "protocol": pr} for n, p, pr in ports]}


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
    """x/client may reach pod=db on 5432 only. The db Service's ClusterIP is allowed
    while every ready backend is a db pod; a backend it may not reach makes the
    whole frontend denied (kube-proxy could pick it)."""
    def pod(name: str, ip: str, **labels: str) -> dict[str, Any]:
        return {"metadata": {"namespace": "x", "name": name, "labels": labels},
                "spec": {"nodeName": "n1"}, "status": {"podIP": ip}}

    objs = [pod("client", "10.0.1.1", app="client"), pod("db1", "10.0.2.1", app="db"),
            pod("db2", "10.0.2.2", app="db"), pod("other", "10.0.3.1", app="other")]
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"namespace": "x", "name": "client-to-db"},
              "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                       "policyTypes": ["Egress"],
                       "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                                   "ports": [{"port": 5432, "protocol": "TCP"}]}]}}
    nodes = [{"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "InternalIP", "address": "192.0.2.1"}]}}]
    state = ClusterState.from_objects(nodes=nodes, pods=objs, policies=[policy])

    def egress_allows(b: Backend) -> bool:
        v = verdict("x/client", b.address, b.port, b.protocol, state)
        return v.egress.allowed

    svcs = [service("x", "db", "10.96.1.1", ("pg", 5432, "TCP")),
            service("x", "mixed", "10.96.1.2", ("pg", 5432, "TCP")),
            service("x", "empty", "10.96.1.3", ("pg", 5432, "TCP"))]
    slices = [slice_("x", "db", "db-1", [("10.0.2.1", "db1", True), ("10.0.2.2", "db2", True)],
                     ("pg", 5432, "TCP")),
              slice_("x", "mixed", "m-1", [("10.0.2.1", "db1", True),
                                           ("10.0.3.1", "other", True)], ("pg", 5432, "TCP")),
              slice_("x", "empty", "e-1", [("10.0.2.1", "db1", False)], ("pg", 5432, "TCP"))]
    allowed = allowed_frontends(ServiceIndex.from_objects(svcs, slices), egress_allows)
    assert [(str(f.service), str(f.address), f.port) for f in allowed] == [
        ("x/db", "10.96.1.1", 5432)]
    # the same Service whose backend listens on another port is not allowed
    slices[0]["ports"][0]["port"] = 6432
    assert allowed_frontends(ServiceIndex.from_objects(svcs, slices), egress_allows) == []
