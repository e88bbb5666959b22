"""Endpoint discovery on the lab's veths, as if a CNI had made them.

Discovery gets only Pod objects (from the lab's state directory, in Kubernetes
shapes) and the node namespace's kernel tables; the lab's own bookkeeping (host
interface names in lab.json) is used only to check the answers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from pyroute2 import NetNS, netns

from collector.discovery import EndpointDiscovery, NotFound, Unsupported
from collector.policy.cluster import ClusterState, Pod

pytestmark = pytest.mark.needs_root


def cluster(lab: Any) -> ClusterState:
    snap = lab.state.snapshot()
    return ClusterState.from_objects(
        nodes=snap.objects["nodes"].values(),
        namespaces=snap.objects["namespaces"].values(),
        pods=snap.objects["pods"].values(),
    )


def _index(ns: str, ifname: str) -> int:
    with NetNS(ns) as h:
        return int(h.link_lookup(ifname=ifname)[0])


def test_sk8_discovers_every_local_pod_on_the_lab(bare_lab: Any) -> None:
    layout = bare_lab.layout()
    state = cluster(bare_lab)
    for node in layout.nodes:
        with EndpointDiscovery(node.name, netns=node.netns) as disc:
            diff = disc.reconcile(state.pods.values())
            expected = {p.key: p for p in layout.pods if p.node.name == node.name}
            assert set(disc.endpoints) == set(expected)
            assert {e.pod for e in diff.added} == set(expected)
            assert not diff.removed and not diff.changed
            assert disc.pending == {} and disc.refused == {}
            for key, ep in disc.endpoints.items():
                truth = expected[key]
                assert ep.ifname == truth.host_if and ep.via == "route"
                assert ep.ifindex == _index(node.netns, truth.host_if)
                assert ep.peer_ifindex == _index(truth.netns, "eth0")
                assert {str(a) for a in ep.ips} == {truth.ipv4, truth.ipv6}
            # nothing changed: a second pass reports nothing
            assert not disc.reconcile(state.pods.values())
            # a pod of the other node is reached through a gateway: not ours
            other = next(p for p in layout.pods if p.node.name != node.name)
            with pytest.raises(NotFound, match="gateway"):
                disc.interface_for(other.ipv4)
            with pytest.raises(NotFound, match="gateway"):
                disc.interface_for(other.ipv6)
            # the node's own address (host network) is refused, not skipped
            with pytest.raises(Unsupported, match="host network"):
                disc.interface_for(node.host_v4)


@contextlib.contextmanager
def cni_pod(node_ns: str, ipv4: str, ipv6: str) -> Iterator[tuple[str, str]]:
    """Plumb a pod the way a point-to-point CNI does: a namespace, a veth pair,
    host routes to the pod's addresses. Removed on exit."""
    tag = secrets.token_hex(3)
    pod_ns, host_if = f"sk8pod{tag}", f"sk8v{tag}"
    netns.create(pod_ns)
    try:
        with NetNS(node_ns) as h:
            h.link("add", ifname=host_if, kind="veth",
                   peer={"ifname": "eth0", "net_ns_fd": pod_ns})
            idx = h.link_lookup(ifname=host_if)[0]
            h.link("set", index=idx, state="up")
            h.route("add", dst=f"{ipv4}/32", oif=idx)
            h.route("add", dst=f"{ipv6}/128", oif=idx, family=10)
        yield pod_ns, host_if
    finally:
        with NetNS(node_ns) as h:
            found = h.link_lookup(ifname=host_if)
            if found:
                h.link("del", index=found[0])
        netns.remove(pod_ns)


def test_sk8_follows_pod_churn(bare_lab: Any) -> None:
    layout = bare_lab.layout()
    node = layout.nodes[0]
    state = cluster(bare_lab)
    net4 = ipaddress.ip_network(node.pod_cidr_v4)
    net6 = ipaddress.ip_network(node.pod_cidr_v6)
    ip4, ip6 = str(net4[200]), str(net6[0xD200])
    newpod = Pod("x", "sk8-new", {"pod": "new"}, node.name,
                 (ipaddress.ip_address(ip4), ipaddress.ip_address(ip6)), uid="u1")
    pods = [*state.pods.values(), newpod]
    with EndpointDiscovery(node.name, netns=node.netns) as disc:
        disc.reconcile(state.pods.values())
        before = dict(disc.endpoints)
        # scheduled, address assigned, but the CNI has not plumbed it yet: pending
        assert not disc.reconcile(pods)
        assert "x/sk8-new" in disc.pending
        # nothing plumbs it meanwhile; the node's namespace is shared, so unrelated
        # netlink events may arrive (CI saw one): it stays pending through them
        disc.wait_for_events(0.05)
        assert not disc.reconcile(pods)
        assert "x/sk8-new" in disc.pending
        with cni_pod(node.netns, ip4, ip6) as (pod_ns, host_if):
            assert disc.wait_for_events(10.0)
            diff = disc.reconcile(pods)
            assert [e.pod for e in diff.added] == ["x/sk8-new"]
            ep = disc.endpoints["x/sk8-new"]
            assert ep.ifname == host_if and ep.peer_ifindex == _index(pod_ns, "eth0")
            assert disc.pending == {}
            first = ep
        # the pod's interface went away (the pod was deleted by the runtime first)
        diff = disc.reconcile(pods)
        assert [e.pod for e in diff.removed] == ["x/sk8-new"]
        assert "x/sk8-new" in disc.pending
        # recreated with the same name: a new interface
        with cni_pod(node.netns, ip4, ip6) as (_, host_if2):
            diff = disc.reconcile(pods)
            assert [e.pod for e in diff.added] == ["x/sk8-new"]
            assert disc.endpoints["x/sk8-new"].ifname == host_if2 != first.ifname
            # the API object goes away: removed
            diff = disc.reconcile(state.pods.values())
            assert [e.pod for e in diff.removed] == ["x/sk8-new"]
            assert "x/sk8-new" not in disc.pending
        # the lab's pods were never disturbed
        assert disc.endpoints == before


def test_sk8_non_veth_interface_is_refused(bare_lab: Any) -> None:
    layout = bare_lab.layout()
    node = layout.nodes[0]
    ip4 = str(ipaddress.ip_network(node.pod_cidr_v4)[201])
    pod = Pod("x", "sk8-dummy", {}, node.name, (ipaddress.ip_address(ip4),))
    dev = f"sk8x{secrets.token_hex(3)}"
    with NetNS(node.netns) as h:
        h.link("add", ifname=dev, kind="vxlan", vxlan_id=4242)
        try:
            idx = h.link_lookup(ifname=dev)[0]
            h.link("set", index=idx, state="up")
            h.route("add", dst=f"{ip4}/32", oif=idx)
            with EndpointDiscovery(node.name, netns=node.netns) as disc:
                with pytest.raises(Unsupported, match=r"\(vxlan\), not a veth"):
                    disc.interface_for(ip4)
                disc.reconcile([pod])
                assert "not a veth" in disc.refused["x/sk8-dummy"]
                assert "Calico" in disc.refused["x/sk8-dummy"]
                assert disc.endpoints == {}
        finally:
            h.link("del", index=h.link_lookup(ifname=dev)[0])


def test_sk8_bridge_cni_port_is_found() -> None:
    """A bridge CNI (Flannel's cni0, the bridge plugin): the route leads to the
    bridge; the neighbour table and the bridge's FDB lead to the pod's veth."""
    tag = secrets.token_hex(3)
    node_ns, pod_ns = f"sk8bn{tag}", f"sk8bp{tag}"
    netns.create(node_ns)
    netns.create(pod_ns)
    try:
        with NetNS(node_ns) as h:
            h.link("set", index=h.link_lookup(ifname="lo")[0], state="up")
            h.link("add", ifname="cni0", kind="bridge")
            br = h.link_lookup(ifname="cni0")[0]
            h.addr("add", index=br, address="10.77.0.1", prefixlen=24)
            h.link("set", index=br, state="up")
            h.link("add", ifname="veth1234", kind="veth",
                   peer={"ifname": "eth0", "net_ns_fd": pod_ns})
            port = h.link_lookup(ifname="veth1234")[0]
            h.link("set", index=port, master=br, state="up")
        with NetNS(pod_ns) as p:
            eth0 = p.link_lookup(ifname="eth0")[0]
            p.addr("add", index=eth0, address="10.77.0.5", prefixlen=24)
            p.link("set", index=eth0, state="up")
            p.link("set", index=p.link_lookup(ifname="lo")[0], state="up")
        pod = Pod("x", "bridged", {}, "bnode", (ipaddress.ip_address("10.77.0.5"),))
        with EndpointDiscovery("bnode", netns=node_ns) as disc:
            disc.reconcile([pod])
            assert "no neighbour entry" in disc.pending["x/bridged"]
            # traffic (the pod's first packets) teaches the node its MAC and port
            subprocess.run(
                ["nsenter", f"--net=/var/run/netns/{node_ns}", "ping", "-c", "1", "-W", "2",
                 "10.77.0.5"], check=True, capture_output=True,
            )
            diff = disc.reconcile([pod])
            assert [e.pod for e in diff.added] == ["x/bridged"]
            ep = disc.endpoints["x/bridged"]
            assert ep.ifname == "veth1234" and ep.via == "bridge:cni0"
            assert ep.ifindex == port and ep.peer_ifindex == _index(pod_ns, "eth0")
    finally:
        netns.remove(pod_ns)
        netns.remove(node_ns)
