"""Who is behind an address: the enrichment table of the observing half.

Built from the source's cluster state (the lab now, Kubernetes later) and the
identity table, so remote addresses on other nodes resolve to their pods too.
Each entry is a ready-made flow.Endpoint message, shared by every flow that
mentions the address.

Services (source_service / destination_service) by address and port: a Service
frontend (what a pod addressed, before kube-proxy translates it) first, then a
ready backend (what the destination pod's veth sees after the translation).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from collector.identity import IdentityTable
from collector.policy.cluster import ClusterState, Pod
from datapath.types import ReservedIdentity
from sensilla.protos import flow_pb2

RESERVED_NAMES = {
    int(ReservedIdentity.HOST): "host",
    int(ReservedIdentity.WORLD): "world",
    int(ReservedIdentity.UNMANAGED): "unmanaged",
    int(ReservedIdentity.HEALTH): "health",
    int(ReservedIdentity.INIT): "init",
    int(ReservedIdentity.REMOTE_NODE): "remote-node",
    int(ReservedIdentity.KUBE_APISERVER): "kube-apiserver",
}

# Cilium's label sources: pod and namespace labels come from Kubernetes ("k8s:").
NS_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."
POD_NS_LABEL = "io.kubernetes.pod.namespace"
POD_SA_LABEL = "io.cilium.k8s.policy.serviceaccount"


def pod_labels(pod: Pod, ns_labels: Mapping[str, str]) -> list[str]:
    labels = [f"k8s:{k}={v}" for k, v in pod.labels.items()]
    labels += [f"k8s:{NS_LABEL_PREFIX}{k}={v}" for k, v in ns_labels.items()]
    labels.append(f"k8s:{POD_NS_LABEL}={pod.namespace}")
    return sorted(labels)


def workloads(pod: Pod) -> list[flow_pb2.Workload]:
    """The pod's controller, as Hubble reports it: a ReplicaSet whose name ends in a
    pod-template hash belongs to the Deployment named by the rest."""
    kind, name = pod.owner_kind, pod.owner_name
    if not kind or not name:
        return []
    if kind == "ReplicaSet" and "-" in name:
        kind, name = "Deployment", name.rsplit("-", 1)[0]
    return [flow_pb2.Workload(name=name, kind=kind)]


def reserved_endpoint(identity: int) -> flow_pb2.Endpoint:
    name = RESERVED_NAMES.get(identity, "world")
    return flow_pb2.Endpoint(identity=identity, labels=[f"reserved:{name}"])


@dataclass
class Directory:
    node_name: str
    by_ip: dict[bytes, flow_pb2.Endpoint] = field(default_factory=dict)  # 16-byte address
    by_pod: dict[str, flow_pb2.Endpoint] = field(default_factory=dict)
    # (16-byte address, port) -> the Service there
    services: dict[tuple[bytes, int], flow_pb2.Service] = field(default_factory=dict)

    def lookup(self, addr16: bytes, identity: int) -> flow_pb2.Endpoint:
        ep = self.by_ip.get(addr16)
        if ep is not None:
            return ep
        return reserved_endpoint(identity or int(ReservedIdentity.WORLD))

    def service(self, addr16: bytes, port: int) -> flow_pb2.Service | None:
        return self.services.get((addr16, port))


def addr16(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """Addresses as the datapath's events carry them: IPv4 in the first 4 bytes."""
    packed = addr.packed
    return packed + bytes(16 - len(packed))


def build_directory(
    node_name: str,
    state: ClusterState,
    identities: IdentityTable,
    endpoint_ids: Mapping[str, int],
) -> Directory:
    directory = Directory(node_name)
    for node in state.nodes.values():
        identity = ReservedIdentity.HOST if node.name == node_name else ReservedIdentity.REMOTE_NODE
        ep = reserved_endpoint(int(identity))
        for a in node.addresses:
            directory.by_ip[addr16(a)] = ep
    for key, pod in sorted(state.pods.items()):
        if pod.host_network or key not in identities.by_pod:
            continue
        ns_labels = state.namespace_labels(pod.namespace)
        ep = flow_pb2.Endpoint(
            ID=endpoint_ids.get(key, 0) if pod.node == node_name else 0,
            identity=identities.by_pod[key],
            namespace=pod.namespace,
            labels=pod_labels(pod, ns_labels),
            pod_name=pod.name,
            workloads=workloads(pod),
        )
        directory.by_pod[key] = ep
        for a in pod.ips:
            directory.by_ip[addr16(a)] = ep
    add_services(directory, state)
    return directory


def add_services(directory: Directory, state: ClusterState) -> None:
    """Frontends first, then backends; the first Service (by namespace/name) wins
    where several share an address and port."""
    frontends = sorted(state.frontends.values(), key=lambda fe: fe.service)
    for fe in frontends:
        directory.services.setdefault((addr16(fe.address), fe.port), _service(fe.service))
    for fe in frontends:
        for b in fe.backends:
            directory.services.setdefault((addr16(b.address), b.port), _service(fe.service))


def _service(key: str) -> flow_pb2.Service:
    namespace, _, name = key.partition("/")
    return flow_pb2.Service(namespace=namespace, name=name)
