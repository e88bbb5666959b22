"""What a lab cluster contains: nodes, namespaces, pods, and the ports pods serve.

The default spec is the Kubernetes NetworkPolicy test model: namespaces x, y, z,
pods a, b, c in each, every pod serving TCP and UDP on 80 and 81 and SCTP (by raw
socket) on 80 and 81, with the named ports the upstream e2e tests use.
A spec file (YAML or JSON) has the same shape as `LabSpec.to_dict()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROTOCOLS = ("TCP", "UDP", "SCTP")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class SpecError(ValueError):
    """An invalid lab spec; the message names the field."""


@dataclass(frozen=True)
class PortSpec:
    name: str
    port: int
    protocol: str


@dataclass(frozen=True)
class PodSpec:
    namespace: str
    name: str
    node: str
    labels: dict[str, str]
    ports: tuple[PortSpec, ...]
    # the pod's controller as (kind, name), e.g. ("Deployment", "frontend")
    workload: tuple[str, str] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NamespaceSpec:
    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class LabSpec:
    nodes: tuple[str, ...]
    namespaces: tuple[NamespaceSpec, ...]
    pods: tuple[PodSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes),
            "namespaces": [{"name": n.name, "labels": dict(n.labels)} for n in self.namespaces],
            "pods": [
                {
                    "namespace": p.namespace,
                    "name": p.name,
                    "node": p.node,
                    "labels": dict(p.labels),
                    "ports": [
                        {"name": q.name, "port": q.port, "protocol": q.protocol} for q in p.ports
                    ],
                    **(
                        {"workload": {"kind": p.workload[0], "name": p.workload[1]}}
                        if p.workload
                        else {}
                    ),
                }
                for p in self.pods
            ],
        }


def default_ports() -> tuple[PortSpec, ...]:
    return tuple(
        PortSpec(f"serve-{port}-{proto.lower()}", port, proto)
        for port in (80, 81)
        for proto in PROTOCOLS
    )


def namespace_labels(name: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, "ns": name}


def default_spec(node_count: int = 2) -> LabSpec:
    """x, y, z with a, b, c; pods spread round-robin over the nodes so that both
    same-node and cross-node pairs exist in every namespace."""
    node_names = tuple(f"worker{'' if i == 0 else i + 1}" for i in range(node_count))
    namespaces = tuple(NamespaceSpec(ns, namespace_labels(ns)) for ns in ("x", "y", "z"))
    pods = []
    i = 0
    for ns in ("x", "y", "z"):
        for pod in ("a", "b", "c"):
            pods.append(
                PodSpec(ns, pod, node_names[i % node_count], {"pod": pod}, default_ports())
            )
            i += 1
    return LabSpec(node_names, namespaces, tuple(pods))


def _require(cond: bool, path: str, msg: str) -> None:
    if not cond:
        raise SpecError(f"{path}: {msg}")


def parse_spec(data: dict[str, Any]) -> LabSpec:
    """Validate a spec document; errors name the field path."""
    _require(isinstance(data, dict), "spec", "must be a mapping")
    nodes = data.get("nodes")
    _require(isinstance(nodes, list) and len(nodes) >= 1, "nodes", "need a list of node names")
    assert isinstance(nodes, list)
    for i, n in enumerate(nodes):
        _require(isinstance(n, str) and bool(_DNS_LABEL.match(n)), f"nodes[{i}]", "bad node name")
        _require(len(n) <= 20, f"nodes[{i}]", "node names are limited to 20 characters")
    _require(len(set(nodes)) == len(nodes), "nodes", "duplicate node names")
    _require(len(nodes) <= 8, "nodes", "at most 8 nodes")
    namespaces = []
    for i, ns in enumerate(data.get("namespaces") or []):
        path = f"namespaces[{i}]"
        _require(isinstance(ns, dict), path, "must be a mapping")
        name = ns.get("name")
        _require(isinstance(name, str) and bool(_DNS_LABEL.match(name)), f"{path}.name", "bad name")
        labels = dict(namespace_labels(name))
        extra = ns.get("labels") or {}
        _require(isinstance(extra, dict), f"{path}.labels", "must be a mapping")
        labels.update({str(k): str(v) for k, v in extra.items()})
        namespaces.append(NamespaceSpec(name, labels))
    ns_names = {n.name for n in namespaces}
    pods = []
    seen = set()
    for i, pod in enumerate(data.get("pods") or []):
        path = f"pods[{i}]"
        _require(isinstance(pod, dict), path, "must be a mapping")
        ns, name, node = pod.get("namespace"), pod.get("name"), pod.get("node")
        _require(ns in ns_names, f"{path}.namespace", f"unknown namespace {ns!r}")
        _require(
            isinstance(name, str) and bool(_DNS_LABEL.match(name)), f"{path}.name", "bad pod name"
        )
        _require(node in nodes, f"{path}.node", f"unknown node {node!r}")
        _require((ns, name) not in seen, path, f"duplicate pod {ns}/{name}")
        seen.add((ns, name))
        labels = pod.get("labels") or {}
        _require(isinstance(labels, dict), f"{path}.labels", "must be a mapping")
        ports: list[PortSpec] = []
        raw_ports = pod.get("ports")
        if raw_ports is None:
            ports = list(default_ports())
        else:
            for j, q in enumerate(raw_ports):
                qp = f"{path}.ports[{j}]"
                _require(isinstance(q, dict), qp, "must be a mapping")
                proto = str(q.get("protocol", "TCP")).upper()
                _require(proto in PROTOCOLS, f"{qp}.protocol", "must be TCP, UDP or SCTP")
                port = q.get("port")
                _require(
                    isinstance(port, int) and 1 <= port <= 65535, f"{qp}.port", "bad port number"
                )
                pname = q.get("name") or ""
                _require(
                    isinstance(pname, str) and len(pname) <= 15, f"{qp}.name", "bad port name"
                )
                ports.append(PortSpec(pname, int(port), proto))
        workload = None
        raw_workload = pod.get("workload")
        if raw_workload is not None:
            wp = f"{path}.workload"
            _require(isinstance(raw_workload, dict), wp, "must be a mapping with kind and name")
            kind, wname = raw_workload.get("kind"), raw_workload.get("name")
            _require(
                kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"),
                f"{wp}.kind",
                "must be Deployment, StatefulSet, DaemonSet, Job or ReplicaSet",
            )
            _require(
                isinstance(wname, str) and bool(_DNS_LABEL.match(wname)), f"{wp}.name", "bad name"
            )
            workload = (str(kind), str(wname))
        assert isinstance(ns, str) and isinstance(node, str)
        pods.append(
            PodSpec(
                ns,
                name,
                node,
                {str(k): str(v) for k, v in labels.items()},
                tuple(ports),
                workload,
            )
        )
    _require(len(pods) <= 200, "pods", "at most 200 pods")
    extra = {k: v for k, v in data.items() if k not in ("nodes", "namespaces", "pods")}
    return LabSpec(tuple(nodes), tuple(namespaces), tuple(pods), extra)


def load_spec(path: str | Path | None) -> LabSpec:
    if path is None:
        return default_spec()
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec: not YAML or JSON: {exc}") from exc
    return parse_spec(data)
