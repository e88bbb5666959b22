"""Build and tear down the lab's network: a fabric, nodes, pods, management links.

    root ns ── <lab>m<i> ═ mgmt0 ── node ns <lab>-<node> ── eth0 ═ n<i> ── fabric ns (br0)
                                         │ lo: the pods' gateway address
                                         └─ lxc… ═ eth0 ── pod ns <lab>-pod-<ns>-<pod>

Pods have a /32 (IPv4) and /128 (IPv6) address and a default route through their
node: IPv4 via the node's host address (answered by ARP, since it is local to the
node), IPv6 via fe80::1 on the host-side veth. Nodes route other nodes' pod CIDRs
over the fabric and forward between pods.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from sensilla.lab import netns as N
from sensilla.lab.layout import (
    FABRIC_V4,
    FABRIC_V6,
    POD_GATEWAY_V6,
    LabLayout,
    NodeLayout,
    PodLayout,
)

log = logging.getLogger(__name__)

Journal = Callable[[str, str], None]  # (kind, name): record before creating


def _node_sysctls(ns: str) -> None:
    for key, value in (
        ("net.ipv4.ip_forward", 1),
        ("net.ipv6.conf.all.forwarding", 1),
        ("net.ipv4.conf.all.rp_filter", 0),
        ("net.ipv4.conf.default.rp_filter", 0),
        ("net.ipv6.conf.all.accept_dad", 0),
        ("net.ipv6.conf.default.accept_dad", 0),
        ("net.ipv4.conf.all.arp_ignore", 0),
    ):
        N.sysctl(ns, key, value)


def build_fabric(layout: LabLayout, journal: Journal) -> None:
    ns = layout.fabric_netns
    journal("netns", ns)
    N.create(ns)
    with N.ipr(ns) as h:
        h.link("add", ifname="br0", kind="bridge")
        N.set_up(h, N.link_index(h, "br0"))
        N.set_up(h, N.link_index(h, "lo"))


def build_node(layout: LabLayout, node: NodeLayout, journal: Journal) -> None:
    journal("netns", node.netns)
    N.create(node.netns)
    N.sysctl(node.netns, "net.ipv6.conf.default.accept_dad", 0)
    _node_sysctls(node.netns)
    fabric_if = f"n{node.index}"
    with N.ipr(layout.fabric_netns) as fab:
        fab.link(
            "add", ifname=fabric_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": node.netns}
        )
        idx = N.link_index(fab, fabric_if)
        fab.link("set", index=idx, master=N.link_index(fab, "br0"))
        N.set_up(fab, idx)
    # management link: created in the root namespace, node end moved into the node
    journal("rootlink", node.mgmt_root_if)
    with N.ipr(None) as root:
        with contextlib.suppress(Exception):
            old = root.link_lookup(ifname=node.mgmt_root_if)
            if old:
                root.link("del", index=old[0])
        root.link(
            "add",
            ifname=node.mgmt_root_if,
            kind="veth",
            peer={"ifname": "mgmt0", "net_ns_fd": node.netns},
        )
        ridx = N.link_index(root, node.mgmt_root_if)
        N.add_address(root, ridx, node.mgmt_root_v4, node.mgmt_prefixlen)
        N.set_up(root, ridx)
    with N.ipr(node.netns) as h:
        N.set_up(h, N.link_index(h, "lo"))
        eth0 = N.link_index(h, "eth0")
        N.add_address(h, eth0, node.fabric_v4, FABRIC_V4.prefixlen)
        N.add_address(h, eth0, node.fabric_v6, FABRIC_V6.prefixlen)
        N.set_up(h, eth0)
        mgmt = N.link_index(h, "mgmt0")
        N.add_address(h, mgmt, node.mgmt_node_v4, node.mgmt_prefixlen)
        N.set_up(h, mgmt)
        # the pods' gateway address lives on lo (no dummy devices on every kernel);
        # with arp_ignore=0 the node answers ARP for it on every lxc device
        lo = N.link_index(h, "lo")
        N.add_address(h, lo, node.host_v4, 32)
        N.add_address(h, lo, node.host_v6, 128)


def route_nodes(layout: LabLayout) -> None:
    for node in layout.nodes:
        with N.ipr(node.netns) as h:
            for other in layout.nodes:
                if other is node:
                    continue
                h.route("add", dst=other.pod_cidr_v4, gateway=other.fabric_v4)
                h.route("add", dst=other.pod_cidr_v6, gateway=other.fabric_v6, family=10)


def build_pod(pod: PodLayout, journal: Journal) -> None:
    node = pod.node
    journal("netns", pod.netns)
    N.create(pod.netns)
    N.sysctl(pod.netns, "net.ipv6.conf.default.accept_dad", 0)
    N.sysctl(pod.netns, "net.ipv6.conf.all.accept_dad", 0)
    with N.ipr(node.netns) as h:
        h.link(
            "add", ifname=pod.host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": pod.netns}
        )
        lxc = N.link_index(h, pod.host_if)
        N.sysctl(node.netns, f"net.ipv6.conf.{pod.host_if}.accept_dad", 0)
        N.add_address(h, lxc, POD_GATEWAY_V6, 64)
        N.set_up(h, lxc)
        h.route("add", dst=f"{pod.ipv4}/32", oif=lxc, prefsrc=node.host_v4, scope=253)
        h.route("add", dst=f"{pod.ipv6}/128", oif=lxc, family=10)
    with N.ipr(pod.netns) as h:
        N.set_up(h, N.link_index(h, "lo"))
        eth0 = N.link_index(h, "eth0")
        N.sysctl(pod.netns, "net.ipv6.conf.eth0.accept_dad", 0)
        N.add_address(h, eth0, pod.ipv4, 32)
        N.add_address(h, eth0, pod.ipv6, 128)
        N.set_up(h, eth0)
        h.route("add", dst=f"{node.host_v4}/32", oif=eth0, scope=253)
        h.route("add", dst="0.0.0.0/0", gateway=node.host_v4, oif=eth0)
        h.route("add", dst="::/0", gateway=POD_GATEWAY_V6, oif=eth0, family=10)


def build(layout: LabLayout, journal: Journal) -> None:
    build_fabric(layout, journal)
    for node in layout.nodes:
        build_node(layout, node, journal)
    route_nodes(layout)
    for pod in layout.pods:
        build_pod(pod, journal)


def destroy(netns_names: list[str], root_links: list[str]) -> list[str]:
    """Delete namespaces and root-namespace links; returns what could not be removed."""
    leftovers = []
    for name in netns_names:
        N.delete(name)
        if N.exists(name):
            leftovers.append(f"netns {name}")
    with N.ipr(None) as root:
        for ifname in root_links:
            found = root.link_lookup(ifname=ifname)
            if found:
                try:
                    root.link("del", index=found[0])
                except Exception as exc:  # gone meanwhile: the peer's namespace died
                    if root.link_lookup(ifname=ifname):
                        leftovers.append(f"link {ifname}: {exc}")
    return leftovers
