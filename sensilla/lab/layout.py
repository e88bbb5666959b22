"""Concrete names and addresses of a lab, derived from its spec, name and slot.

Everything here is a pure function of (spec, lab name, slot), so `lab down` and the
tests can recompute what a lab created. Only the management links live in the root
namespace; their addresses and the relay's loopback port depend on the slot, so
several labs can run side by side.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from sensilla.lab.spec import LabSpec, PodSpec

LAB_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
DEFAULT_LAB = "sensilla"
MAX_SLOTS = 64
RELAY_PORT = 4245  # Hubble Relay's port
OBSERVER_PORT = 4244  # Hubble server's port on each node
FABRIC_V4 = ipaddress.ip_network("172.18.0.0/16")
FABRIC_V6 = ipaddress.ip_network("fc00:f853:ccd:e793::/64")
POD_GATEWAY_V6 = "fe80::1"


def check_lab_name(name: str) -> str:
    if not LAB_NAME_RE.match(name):
        raise ValueError(f"lab name {name!r}: 1-8 characters, [a-z][a-z0-9]*")
    return name


@dataclass(frozen=True)
class NodeLayout:
    short: str  # name in the spec ("worker")
    name: str  # Kubernetes node name ("sensilla-worker")
    index: int  # 1-based
    netns: str
    pod_cidr_v4: str
    pod_cidr_v6: str
    host_v4: str  # the node's address towards its pods (pods' gateway)
    host_v6: str
    fabric_v4: str  # the node's address on the inter-node fabric
    fabric_v6: str
    mgmt_root_if: str  # management veth, root side
    mgmt_root_v4: str
    mgmt_node_v4: str
    mgmt_prefixlen: int

    @property
    def observer_address(self) -> str:
        return f"{self.mgmt_node_v4}:{OBSERVER_PORT}"

    @property
    def relay_address(self) -> str:
        """The relay as this node's collector reaches it (over the management link)."""
        return f"{self.mgmt_root_v4}:{RELAY_PORT}"

    @property
    def addresses(self) -> list[str]:
        return [self.host_v4, self.host_v6, self.fabric_v4, self.fabric_v6, self.mgmt_node_v4]


@dataclass(frozen=True)
class PodLayout:
    spec: PodSpec
    node: NodeLayout
    index: int  # 1-based within its node
    netns: str
    host_if: str  # host-side veth in the node namespace ("lxc…")
    ipv4: str
    ipv6: str

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True)
class LabLayout:
    name: str
    slot: int
    nodes: tuple[NodeLayout, ...]
    pods: tuple[PodLayout, ...]

    @property
    def fabric_netns(self) -> str:
        return f"{self.name}-fabric"

    @property
    def relay_loopback(self) -> str:
        port = RELAY_PORT if self.slot == 0 else 42450 + self.slot
        return f"127.0.0.1:{port}"

    @property
    def netns_names(self) -> list[str]:
        return [self.fabric_netns] + [n.netns for n in self.nodes] + [p.netns for p in self.pods]

    def node(self, name: str) -> NodeLayout:
        for n in self.nodes:
            if name in (n.name, n.short):
                return n
        raise KeyError(name)

    def pod(self, key: str) -> PodLayout:
        for p in self.pods:
            if p.key == key:
                return p
        raise KeyError(key)


def host_if_name(lab: str, namespace: str, pod: str) -> str:
    digest = hashlib.sha1(f"{lab}/{namespace}/{pod}".encode()).hexdigest()
    return "lxc" + digest[:11]


def mgmt_network(slot: int, node_index: int) -> ipaddress.IPv4Network:
    """A /30 per node: 10.254.<slot>.<4*index>/30."""
    return ipaddress.IPv4Network(f"10.254.{slot}.{4 * node_index}/30")


def build_layout(spec: LabSpec, lab: str, slot: int) -> LabLayout:
    check_lab_name(lab)
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot {slot} out of range")
    nodes = []
    for i, short in enumerate(spec.nodes, start=1):
        mgmt = mgmt_network(slot, i)
        hosts = list(mgmt.hosts())
        nodes.append(
            NodeLayout(
                short=short,
                name=f"{lab}-{short}",
                index=i,
                netns=f"{lab}-{short}",
                pod_cidr_v4=f"10.244.{i}.0/24",
                pod_cidr_v6=f"fd00:10:244:{i}::/64",
                host_v4=f"10.244.{i}.1",
                host_v6=f"fd00:10:244:{i}::1",
                fabric_v4=str(FABRIC_V4.network_address + 1 + i),
                fabric_v6=str(FABRIC_V6.network_address + 1 + i),
                mgmt_root_if=f"{lab}m{i}",
                mgmt_root_v4=str(hosts[0]),
                mgmt_node_v4=str(hosts[1]),
                mgmt_prefixlen=mgmt.prefixlen,
            )
        )
    by_short = {n.short: n for n in nodes}
    counters: dict[str, int] = {}
    pods = []
    for p in spec.pods:
        node = by_short[p.node]
        k = counters.get(node.short, 0) + 1
        counters[node.short] = k
        host = 9 + k  # .10, .11, ...
        pods.append(
            PodLayout(
                spec=p,
                node=node,
                index=k,
                netns=f"{lab}-pod-{p.namespace}-{p.name}",
                host_if=host_if_name(lab, p.namespace, p.name),
                ipv4=f"10.244.{node.index}.{host}",
                ipv6=f"fd00:10:244:{node.index}::{host:x}",
            )
        )
    return LabLayout(lab, slot, tuple(nodes), tuple(pods))
