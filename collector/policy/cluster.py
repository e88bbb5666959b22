"""The cluster as the policy model sees it: nodes, namespaces, pods, policies, and
the Service frontends pods may address.

Built from Kubernetes-shaped objects (v1 Node, Namespace, Pod, NetworkPolicy), the
same whether they come from the lab state directory or from an API server. Service
frontends come from Services and EndpointSlices (collector.sources.k8s_services):
egress to a ClusterIP is judged on the backends behind it (docs/kubernetes.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.policy.model import IPAddress, NetworkPolicy

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Audit mode: set on a Namespace or a Pod, as a label or an annotation.
AUDIT_KEY = "policy.sensilla.io/audit"


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1", "yes", "on")


@dataclass(frozen=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def effective_labels(self) -> dict[str, str]:
        """The labels selectors see; the API server always sets the name label."""
        out = dict(self.labels)
        out[NAMESPACE_NAME_LABEL] = self.name
        return out

    @property
    def audit(self) -> bool:
        return _truthy(self.labels.get(AUDIT_KEY)) or _truthy(self.annotations.get(AUDIT_KEY))


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    node: str = ""
    ips: tuple[IPAddress, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    uid: str = ""
    # the controlling owner (metadata.ownerReferences with controller: true)
    owner_kind: str = ""
    owner_name: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def ip(self, family: int = 4) -> IPAddress | None:
        for a in self.ips:
            if a.version == family:
                return a
        return None

    def resolve_port(self, name: str, protocol: str) -> list[int]:
        """Numbers of this pod's container ports called `name` with `protocol`."""
        return sorted({p.port for p in self.ports if p.name == name and p.protocol == protocol})

    @property
    def audit(self) -> bool:
        return _truthy(self.labels.get(AUDIT_KEY)) or _truthy(self.annotations.get(AUDIT_KEY))


@dataclass(frozen=True)
class Node:
    name: str
    addresses: tuple[IPAddress, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceBackend:
    """A ready endpoint behind a frontend: where kube-proxy may send the traffic."""

    address: IPAddress
    port: int
    protocol: str


@dataclass(frozen=True)
class ServiceFrontend:
    """A Service frontend (ClusterIP, externalIP or load-balancer IP) and service
    port, as pods' packets carry it before kube-proxy translates it."""

    service: str  # "ns/name"
    address: IPAddress
    port: int
    protocol: str
    backends: tuple[ServiceBackend, ...] = ()

    @property
    def key(self) -> tuple[IPAddress, int, str]:
        return (self.address, self.port, self.protocol)


@dataclass
class ClusterState:
    """A consistent snapshot of everything policy depends on."""

    nodes: dict[str, Node] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    pods: dict[str, Pod] = field(default_factory=dict)  # "ns/name" -> Pod
    policies: dict[str, NetworkPolicy] = field(default_factory=dict)  # "ns/name" -> policy
    revision: int = 0
    # (address, service port, protocol) -> frontend
    frontends: dict[tuple[IPAddress, int, str], ServiceFrontend] = field(default_factory=dict)

    # --- lookups ------------------------------------------------------------------
    def namespace(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        return ns if ns is not None else Namespace(name)

    def namespace_labels(self, name: str) -> dict[str, str]:
        return self.namespace(name).effective_labels

    def pod(self, key: str) -> Pod:
        try:
            return self.pods[key]
        except KeyError:
            raise KeyError(f"no pod {key}") from None

    def policies_in(self, namespace: str) -> list[NetworkPolicy]:
        return [p for k, p in sorted(self.policies.items()) if p.namespace == namespace]

    def pod_by_ip(self, addr: IPAddress) -> Pod | None:
        for pod in self.pods.values():
            if addr in pod.ips and not pod.host_network:
                return pod
        return None

    def node_by_ip(self, addr: IPAddress) -> Node | None:
        for node in self.nodes.values():
            if addr in node.addresses:
                return node
        return None

    def audit(self, pod: Pod) -> bool:
        return pod.audit or self.namespace(pod.namespace).audit

    def frontend(self, addr: IPAddress, port: int | None, protocol: str) -> ServiceFrontend | None:
        if port is None:
            return None
        return self.frontends.get((addr, port, protocol.upper()))

    # --- building -----------------------------------------------------------------
    @classmethod
    def build(
        cls,
        nodes: Iterable[Node] = (),
        namespaces: Iterable[Namespace] = (),
        pods: Iterable[Pod] = (),
        policies: Iterable[NetworkPolicy] = (),
        revision: int = 0,
        frontends: Iterable[ServiceFrontend] = (),
    ) -> ClusterState:
        state = cls(revision=revision)
        for n in nodes:
            state.nodes[n.name] = n
        for ns in namespaces:
            state.namespaces[ns.name] = ns
        for p in pods:
            state.pods[p.key] = p
            state.namespaces.setdefault(p.namespace, Namespace(p.namespace))
        for pol in policies:
            state.policies[pol.key] = pol
        for fe in frontends:
            old = state.frontends.get(fe.key)
            if old is not None:
                # an address and port of two Services (shared externalIPs): either's
                # backends may receive the traffic, so both are judged
                backends = tuple(dict.fromkeys(old.backends + fe.backends))
                fe = ServiceFrontend(old.service, fe.address, fe.port, fe.protocol, backends)
            state.frontends[fe.key] = fe
        return state

    @classmethod
    def from_objects(
        cls,
        nodes: Iterable[Mapping[str, Any]] = (),
        namespaces: Iterable[Mapping[str, Any]] = (),
        pods: Iterable[Mapping[str, Any]] = (),
        policies: Iterable[Mapping[str, Any]] = (),
        revision: int = 0,
        frontends: Iterable[ServiceFrontend] = (),
    ) -> ClusterState:
        """From Kubernetes objects. Policies are validated (PolicyValidationError)."""
        from collector.policy.parse import policy_from_object

        return cls.build(
            [node_from_object(o) for o in nodes],
            [namespace_from_object(o) for o in namespaces],
            [pod_from_object(o) for o in pods],
            [policy_from_object(o) for o in policies],
            revision,
            frontends,
        )


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata") or {}
    if not isinstance(meta, Mapping):
        raise ValueError("metadata must be an object")
    return meta


def _str_map(value: Any) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("labels and annotations must be objects")
    return {str(k): str(v) for k, v in value.items()}


def namespace_from_object(obj: Mapping[str, Any]) -> Namespace:
    meta = _meta(obj)
    return Namespace(
        str(meta["name"]), _str_map(meta.get("labels")), _str_map(meta.get("annotations"))
    )


def node_from_object(obj: Mapping[str, Any]) -> Node:
    meta = _meta(obj)
    addrs: list[IPAddress] = []
    status = obj.get("status") or {}
    texts = [
        a.get("address", "")
        for a in status.get("addresses") or []
        if a.get("type") in ("InternalIP", "ExternalIP")
    ]
    # Lab extension: every address the node owns (pod gateway, fabric, management).
    texts += list(status.get("sensillaHostAddresses") or [])
    for text in texts:
        try:
            addrs.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    spec = obj.get("spec") or {}
    cidrs = tuple(spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []))
    return Node(str(meta["name"]), tuple(dict.fromkeys(addrs)), cidrs, _str_map(meta.get("labels")))


def _controller(meta: Mapping[str, Any]) -> dict[str, str]:
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return {"kind": str(ref.get("kind") or ""), "name": str(ref.get("name") or "")}
    return {}


def pod_from_object(obj: Mapping[str, Any]) -> Pod:
    meta = _meta(obj)
    owner = _controller(meta)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ips: list[IPAddress] = []
    for entry in status.get("podIPs") or []:
        ips.append(ipaddress.ip_address(entry["ip"]))
    if status.get("podIP"):
        ips.append(ipaddress.ip_address(status["podIP"]))
    ports: list[ContainerPort] = []
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for p in c.get("ports") or []:
            ports.append(
                ContainerPort(
                    int(p["containerPort"]),
                    str(p.get("protocol") or "TCP"),
                    str(p.get("name") or ""),
                )
            )
    return Pod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta["name"]),
        labels=_str_map(meta.get("labels")),
        node=str(spec.get("nodeName") or ""),
        ips=tuple(dict.fromkeys(ips)),
        ports=tuple(ports),
        annotations=_str_map(meta.get("annotations")),
        host_network=bool(spec.get("hostNetwork")),
        uid=str(meta.get("uid") or ""),
        owner_kind=owner.get("kind", ""),
        owner_name=owner.get("name", ""),
    )
