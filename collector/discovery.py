"""Endpoint discovery on a node: each local pod's host-side interface.

For every pod scheduled on this node (spec.nodeName, not hostNetwork, with
addresses), ask the kernel of the node's network namespace how it reaches the
pod's address, as a CNI plugin left it:

1. route lookup (RTM_GETROUTE) for the pod's address -> output interface;
2. when that interface is a veth: it is the pod's host-side end (point-to-point
   CNIs: Calico in iptables mode, kindnet, the lab); its IFLA_LINK is the
   pod-side peer's ifindex (in the pod's namespace);
3. when it is a Linux bridge (bridge CNIs: Flannel's cni0, the `bridge` plugin):
   the pod's MAC from the neighbour table, then the bridge's forwarding database
   (AF_BRIDGE neighbours) for the port that MAC lives behind, which must be a veth.

Anything else is refused with a reason, never silently skipped: a route through a
gateway (the pod is not on this node), a local route (host network), an interface
that is not a veth (ipvlan, macvlan, vxlan, a device of an eBPF CNI ...), a bridge
port that is not a veth. Addresses of one pod that lead to different interfaces are
refused too. Pods whose interface does not exist yet (the CNI is still plumbing it,
or the neighbour entry is not learnt yet) are *pending* and retried on the next
reconcile; netlink events (links, routes, neighbours) wake the caller
(`wait_for_events`).

No lab shortcut: discovery reads only Pod objects (name, node, addresses) and the
kernel's tables, exactly as on a node of a real cluster. Whether another program
already holds the TC hook of the interface is the datapath's check at attach.

    with EndpointDiscovery("worker") as disc:          # in the node's netns
        diff = disc.reconcile(state.pods.values())      # Diff(added, removed, changed)
        for ep in diff.added: datapath.attach(ep.ifindex, ...)
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.policy.cluster import Pod

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RTN_UNICAST = 1
RTN_LOCAL = 2
AF_BRIDGE = 7
NUD_FAILED = 0x20
NUD_INCOMPLETE = 0x01
# netlink multicast groups: links, IPv4/IPv6 routes, neighbours
RTMGRP_LINK = 0x1
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400

SUPPORTED_CNIS = (
    "veth-per-pod CNIs that run no TC programs of their own on the host-side veth: "
    "Calico (iptables or nftables data plane), Flannel, kindnet, the bridge and ptp "
    "reference plugins; not Cilium, Calico eBPF, or ipvlan/macvlan-based CNIs"
)


class DiscoveryError(Exception):
    """A pod's interface cannot be used by Sensilla; the message says why."""


class Unsupported(DiscoveryError):
    """The CNI's plumbing is out of scope (not a veth per pod)."""


class NotFound(DiscoveryError):
    """Nothing (yet) for this address: retry later."""


@dataclass(frozen=True)
class Endpoint:
    pod: str  # "ns/name"
    uid: str
    ips: tuple[IPAddress, ...]
    ifindex: int  # host-side interface, in the node's namespace
    ifname: str
    peer_ifindex: int  # the pod-side end's ifindex, in the pod's namespace
    mac: str  # host-side interface's MAC
    via: str = "route"  # "route", or "bridge:<name>"


@dataclass
class Diff:
    added: list[Endpoint] = field(default_factory=list)
    removed: list[Endpoint] = field(default_factory=list)
    changed: list[tuple[Endpoint, Endpoint]] = field(default_factory=list)  # (old, new)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name) if hasattr(msg, "get_attr") else msg.get(name)


def _kind(link: Any) -> str:
    info = _attr(link, "IFLA_LINKINFO")
    if info is None:
        return ""
    kind = info.get_attr("IFLA_INFO_KIND") if hasattr(info, "get_attr") else None
    return str(kind or "")


class EndpointDiscovery:
    """Find and follow the host-side interfaces of this node's pods."""

    def __init__(self, node: str, netns: str | None = None) -> None:
        """`netns`: a named network namespace to look in (None: the caller's own,
        which is how the collector runs: inside the node's namespace)."""
        self.node = node
        self.netns = netns
        self._ipr = self._open()
        self._events: Any = None
        self.endpoints: dict[str, Endpoint] = {}  # "ns/name" -> Endpoint
        self.pending: dict[str, str] = {}  # "ns/name" -> why not (yet) found
        self.refused: dict[str, str] = {}  # "ns/name" -> why it is out of scope

    def _open(self) -> Any:
        if self.netns is None:
            from pyroute2 import IPRoute

            return IPRoute()
        from pyroute2 import NetNS

        return NetNS(self.netns)

    def close(self) -> None:
        for h in (self._events, self._ipr):
            if h is not None:
                with contextlib.suppress(Exception):
                    h.close()
        self._events = None

    def __enter__(self) -> EndpointDiscovery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one address --------------------------------------------------------------------
    def _link(self, index: int) -> Any:
        links = self._ipr.link("get", index=index)
        if not links:
            raise NotFound(f"no interface with index {index}")
        return links[0]

    def _veth(self, link: Any, what: str) -> tuple[int, str, int, str]:
        kind = _kind(link)
        name = str(_attr(link, "IFLA_IFNAME"))
        if kind != "veth":
            raise Unsupported(
                f"{what} leads to {name} ({kind or 'no kind'}), not a veth: "
                f"Sensilla supports {SUPPORTED_CNIS}"
            )
        peer = _attr(link, "IFLA_LINK")
        if not peer:
            raise Unsupported(f"{what} leads to veth {name} with no peer")
        return int(link["index"]), name, int(peer), str(_attr(link, "IFLA_ADDRESS") or "")

    def interface_for(self, ip: IPAddress | str) -> tuple[int, str, int, str, str]:
        """(ifindex, ifname, peer ifindex, mac, via) of the host-side veth that
        reaches `ip`; Unsupported or NotFound otherwise."""
        addr = ipaddress.ip_address(str(ip))
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        try:
            routes = self._ipr.route("get", dst=str(addr), family=family)
        except Exception as exc:
            raise NotFound(f"no route to {addr}: {exc}") from exc
        if not routes:
            raise NotFound(f"no route to {addr}")
        route = routes[0]
        if route["type"] == RTN_LOCAL:
            raise Unsupported(f"{addr} is an address of this node (host network)")
        if route["type"] != RTN_UNICAST:
            raise NotFound(f"no unicast route to {addr} (type {route['type']})")
        if _attr(route, "RTA_GATEWAY"):
            raise NotFound(
                f"{addr} is reached through gateway {_attr(route, 'RTA_GATEWAY')}: "
                "not a pod of this node (yet)"
            )
        oif = _attr(route, "RTA_OIF")
        if not oif:
            raise NotFound(f"route to {addr} has no output interface")
        link = self._link(int(oif))
        if _kind(link) == "bridge":
            return self._through_bridge(addr, link)
        idx, name, peer, mac = self._veth(link, f"the route to {addr}")
        return idx, name, peer, mac, "route"

    def _through_bridge(self, addr: IPAddress, bridge: Any) -> tuple[int, str, int, str, str]:
        bname = str(_attr(bridge, "IFLA_IFNAME"))
        bidx = int(bridge["index"])
        family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
        neigh = [
            n
            for n in self._ipr.get_neighbours(family=family, ifindex=bidx)
            if str(_attr(n, "NDA_DST")) == str(addr)
            and _attr(n, "NDA_LLADDR")
            and not n["state"] & (NUD_FAILED | NUD_INCOMPLETE)
        ]
        if not neigh:
            raise NotFound(f"{addr} on bridge {bname}: no neighbour entry (MAC) learnt yet")
        mac = str(_attr(neigh[0], "NDA_LLADDR")).lower()
        ports = [
            int(f["ifindex"])
            for f in self._ipr.get_neighbours(family=AF_BRIDGE)
            if str(_attr(f, "NDA_LLADDR") or "").lower() == mac
            and _attr(f, "NDA_MASTER") in (None, bidx)
            and int(f["ifindex"]) != bidx
        ]
        if not ports:
            raise NotFound(f"{addr} ({mac}) on bridge {bname}: not in the forwarding database")
        link = self._link(ports[0])
        if _attr(link, "IFLA_MASTER") != bidx:
            raise NotFound(f"{addr} ({mac}): port {ports[0]} is not on bridge {bname}")
        idx, name, peer, hmac = self._veth(link, f"{addr} (bridge {bname} port)")
        return idx, name, peer, hmac, f"bridge:{bname}"

    # --- one pod ------------------------------------------------------------------------
    def is_local(self, pod: Pod) -> bool:
        return pod.node == self.node and not pod.host_network

    def resolve(self, pod: Pod) -> Endpoint:
        """The pod's endpoint: every address must lead to the same veth."""
        if not pod.ips:
            raise NotFound(f"pod {pod.key} has no address yet")
        found: dict[int, tuple[int, str, int, str, str]] = {}
        for ip in pod.ips:
            hit = self.interface_for(ip)
            found[hit[0]] = hit
        if len(found) > 1:
            names = ", ".join(sorted(h[1] for h in found.values()))
            raise Unsupported(f"pod {pod.key}: its addresses lead to several interfaces ({names})")
        idx, name, peer, mac, via = next(iter(found.values()))
        return Endpoint(pod.key, pod.uid, tuple(pod.ips), idx, name, peer, mac, via)

    # --- the node ---------------------------------------------------------------------------
    def reconcile(self, pods: Iterable[Pod]) -> Diff:
        """Bring `endpoints` in line with the pods (all of the cluster's, or only
        this node's); returns what changed. Interface index or name changes (a pod
        recreated with the same name) come out as `changed`."""
        diff = Diff()
        pending: dict[str, str] = {}
        refused: dict[str, str] = {}
        current: dict[str, Endpoint] = {}
        for pod in pods:
            if not self.is_local(pod):
                continue
            try:
                ep = self.resolve(pod)
            except Unsupported as exc:
                refused[pod.key] = str(exc)
                continue
            except NotFound as exc:
                # not there (yet), or gone: nothing stale stays attached
                pending[pod.key] = str(exc)
                continue
            current[pod.key] = ep
        for key, old in self.endpoints.items():
            new = current.get(key)
            if new is None:
                diff.removed.append(old)
            elif new != old:
                diff.changed.append((old, new))
        for key, ep in current.items():
            if key not in self.endpoints:
                diff.added.append(ep)
        self.endpoints = current
        self.pending = pending
        self.refused = refused
        return diff

    # --- following churn ----------------------------------------------------------------------
    def wait_for_events(self, timeout: float) -> bool:
        """Block until the node's links, routes or neighbours change (True) or the
        timeout passes (False). Call reconcile afterwards."""
        if self._events is None:
            self._events = self._open()
            self._events.bind(
                groups=RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
            )
        ready, _, _ = select.select([self._events], [], [], timeout)
        if not ready:
            return False
        # drain what is there without blocking
        while True:
            self._events.get()
            more, _, _ = select.select([self._events], [], [], 0)
            if not more:
                return True
