"""Services, EndpointSlices and a small cluster with ClusterIPs, shared by the
model/compiler tests (tests/collector/kubernetes) and the loaded-program test
(test_spo_property_bpf)."""

from __future__ import annotations

from typing import Any

from collector.policy.cluster import ClusterState
from collector.sources.k8s_services import ServiceIndex, service_frontends


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


def clusterip_cluster(db_backend_port: int = 5432) -> ClusterState:
    """x/client may reach pod=db on 5432 only. Three Services: db (two db pods),
    mixed (a db pod and another pod), empty (no ready backend)."""
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
    svcs = [service("x", "db", "10.96.1.1", ("pg", 5432, "TCP")),
            service("x", "mixed", "10.96.1.2", ("pg", 5432, "TCP")),
            service("x", "empty", "10.96.1.3", ("pg", 5432, "TCP"))]
    pg = ("pg", db_backend_port, "TCP")
    slices = [slice_("x", "db", "db-1", [("10.0.2.1", "db1", True), ("10.0.2.2", "db2", True)],
                     pg),
              slice_("x", "mixed", "m-1", [("10.0.2.1", "db1", True),
                                           ("10.0.3.1", "other", True)], pg),
              slice_("x", "empty", "e-1", [("10.0.2.1", "db1", False)], pg)]
    frontends = service_frontends(ServiceIndex.from_objects(svcs, slices))
    return ClusterState.from_objects(nodes=nodes, pods=objs, policies=[policy],
                                     frontends=frontends)
