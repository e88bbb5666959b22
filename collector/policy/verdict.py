"""The verdict of NetworkPolicy for one connection, as a pure function.

    verdict(src, dst, port, protocol, state) -> Verdict

A connection passes when the source's egress side and the destination's ingress
side both allow it. A side allows everything unless some policy in the pod's
namespace selects the pod for that direction (policyTypes); then it allows exactly
the union of the rules of every such policy, and default deny applies to the rest.
Traffic between a pod and its own node always passes. Pod-to-itself is judged like
any other pair (upstream e2e tables do the same; loopback never reaches the datapath).

Egress to a Service frontend (a ClusterIP: the address a pod's packets carry before
kube-proxy translates them) is also allowed when the frontend has ready backends and
the pod's egress allows every one of them (kube-proxy may pick any); see
docs/kubernetes.md, "Traffic to a ClusterIP".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from collector.policy.cluster import ClusterState, Pod, ServiceFrontend
from collector.policy.model import (
    EGRESS,
    INGRESS,
    IPAddress,
    NetworkPolicy,
    Peer,
    PortSpec,
    Rule,
)

Endpoint = Pod | IPAddress


@dataclass(frozen=True)
class RuleMatch:
    """A rule of a policy that allows the connection.

    peer/port are indexes into the rule's from|to / ports lists, or None when the
    list is empty (the rule then allows every peer / every port)."""

    policy: str
    direction: str
    rule: int
    peer: int | None
    port: int | None
    peer_text: str
    port_text: str

    @property
    def path(self) -> str:
        field = "ingress" if self.direction == INGRESS else "egress"
        peers = "from" if self.direction == INGRESS else "to"
        out = f"{self.policy} spec.{field}[{self.rule}]"
        if self.peer is not None:
            out += f".{peers}[{self.peer}]"
        if self.port is not None:
            out += f" ports[{self.port}]"
        return out


@dataclass(frozen=True)
class SideVerdict:
    """One direction of the connection, decided by one pod's policies.

    reason: "not-a-pod" (the endpoint is an address: nothing to enforce),
    "own-node" (pod <-> its node), "not-isolated" (no policy selects the pod for
    this direction), "allowed" (some rule allows it), "default-deny".
    service: the Service ("ns/name") whose backends the egress was judged on, when
    the destination is its frontend and the rules allow every backend."""

    direction: str
    pod: str | None
    reason: str
    selecting: tuple[str, ...] = ()
    matches: tuple[RuleMatch, ...] = ()
    audit: bool = False
    service: str = ""

    @property
    def allowed(self) -> bool:
        return self.reason != "default-deny"

    @property
    def isolated(self) -> bool:
        return bool(self.selecting)

    @property
    def forwarded(self) -> bool:
        return self.allowed or self.audit


@dataclass(frozen=True)
class Verdict:
    src: str
    dst: str
    port: int | None
    protocol: str
    egress: SideVerdict
    ingress: SideVerdict

    @property
    def allowed(self) -> bool:
        """What NetworkPolicy says."""
        return self.egress.allowed and self.ingress.allowed

    @property
    def forwarded(self) -> bool:
        """What happens to packets: denials on a side in audit mode still pass."""
        return self.egress.forwarded and self.ingress.forwarded

    @property
    def audited(self) -> bool:
        return self.forwarded and not self.allowed


def describe_endpoint(e: Endpoint) -> str:
    return e.key if isinstance(e, Pod) else str(e)


def endpoint_address(e: Endpoint, family: int) -> IPAddress | None:
    if isinstance(e, Pod):
        return e.ip(family)
    return e


def peer_matches(
    peer: Peer, policy: NetworkPolicy, other: Endpoint, state: ClusterState, family: int
) -> bool:
    """Does `other` (the remote end, seen from the selected pod) match this peer?"""
    if peer.ip_block is not None:
        addr = endpoint_address(other, family)
        return addr is not None and peer.ip_block.contains(addr)
    if not isinstance(other, Pod) or other.host_network:
        return False
    if peer.namespace_selector is None:
        if other.namespace != policy.namespace:
            return False
    elif not peer.namespace_selector.matches(state.namespace_labels(other.namespace)):
        return False
    return peer.pod_selector is None or peer.pod_selector.matches(other.labels)


def port_matches(spec: PortSpec, port: int | None, protocol: str, dst: Endpoint) -> bool:
    """Does traffic to `port`/`protocol` at `dst` match this ports entry? Named ports
    resolve against the destination pod's container ports."""
    if spec.protocol != protocol:
        return False
    if spec.port is None:
        return True
    if port is None:
        return False
    if isinstance(spec.port, str):
        return isinstance(dst, Pod) and port in dst.resolve_port(spec.port, protocol)
    hi = spec.end_port if spec.end_port is not None else spec.port
    return spec.port <= port <= hi


def rule_matches(
    rule: Rule,
    rule_index: int,
    policy: NetworkPolicy,
    direction: str,
    other: Endpoint,
    dst: Endpoint,
    port: int | None,
    protocol: str,
    state: ClusterState,
    family: int,
) -> RuleMatch | None:
    peer_index: int | None = None
    if rule.peers:
        for i, peer in enumerate(rule.peers):
            if peer_matches(peer, policy, other, state, family):
                peer_index = i
                break
        else:
            return None
    port_index: int | None = None
    if rule.ports:
        for i, spec in enumerate(rule.ports):
            if port_matches(spec, port, protocol, dst):
                port_index = i
                break
        else:
            return None
    peer_text = (
        rule.peers[peer_index].describe(policy.namespace) if peer_index is not None else "any peer"
    )
    port_text = rule.ports[port_index].describe() if port_index is not None else "any port"
    return RuleMatch(
        policy.key, direction, rule_index, peer_index, port_index, peer_text, port_text
    )


def selecting_policies(pod: Pod, direction: str, state: ClusterState) -> list[NetworkPolicy]:
    """The policies that isolate `pod` in `direction`."""
    return [
        p
        for p in state.policies_in(pod.namespace)
        if p.affects(direction) and p.pod_selector.matches(pod.labels)
    ]


def side_verdict(
    pod: Pod,
    direction: str,
    other: Endpoint,
    dst: Endpoint,
    port: int | None,
    protocol: str,
    state: ClusterState,
    family: int,
) -> SideVerdict:
    audit = state.audit(pod)
    selecting = selecting_policies(pod, direction, state)
    if not selecting:
        return SideVerdict(direction, pod.key, "not-isolated", audit=audit)
    matches = []
    for policy in selecting:
        for i, rule in enumerate(policy.rules(direction)):
            m = rule_matches(rule, i, policy, direction, other, dst, port, protocol, state, family)
            if m is not None:
                matches.append(m)
    return SideVerdict(
        direction,
        pod.key,
        "allowed" if matches else "default-deny",
        tuple(p.key for p in selecting),
        tuple(matches),
        audit,
    )


def frontend_egress(
    pod: Pod,
    fe: ServiceFrontend,
    state: ClusterState,
    resolve: Callable[[IPAddress], Endpoint] | None = None,
) -> SideVerdict | None:
    """`pod`'s egress to a Service frontend judged on the backends behind it: allowed
    (with the rules that allow the backends) when there is at least one ready backend
    and the pod's rules allow every one; None otherwise. Never fails open: one backend
    the pod may not reach denies the frontend, since kube-proxy may pick it.
    `resolve` maps a backend address to its pod (default: a scan of the state)."""
    if not fe.backends:
        return None
    matches: list[RuleMatch] = []
    last: SideVerdict | None = None
    for b in fe.backends:
        ep = resolve(b.address) if resolve is not None else resolve_endpoint(b.address, state)
        last = side_verdict(pod, EGRESS, ep, ep, b.port, b.protocol, state, b.address.version)
        if last.reason != "allowed":
            return None
        matches.extend(last.matches)
    assert last is not None
    return SideVerdict(
        EGRESS,
        pod.key,
        "allowed",
        last.selecting,
        tuple(dict.fromkeys(matches)),
        last.audit,
        service=fe.service,
    )


def on_own_node(pod: Pod, other: Endpoint, state: ClusterState) -> bool:
    if isinstance(other, Pod):
        if not other.host_network:
            return False
        return bool(pod.node) and other.node == pod.node
    node = state.nodes.get(pod.node)
    return node is not None and other in node.addresses


def resolve_endpoint(e: Endpoint | str, state: ClusterState) -> Endpoint:
    """A Pod, "ns/name", an address or an address string -> an Endpoint (the address
    of a known pod means that pod)."""
    if isinstance(e, Pod):
        return e
    addr: IPAddress
    if isinstance(e, str):
        try:
            addr = ipaddress.ip_address(e)
        except ValueError:
            return state.pod(e)
    else:
        addr = e
    pod = state.pod_by_ip(addr)
    return pod if pod is not None else addr


def verdict(
    src: Endpoint | str,
    dst: Endpoint | str,
    port: int | None,
    protocol: str,
    state: ClusterState,
    family: int = 4,
) -> Verdict:
    """Decide a connection from `src` to `dst` on `protocol`/`port`.

    src/dst: Pods, "ns/name" strings or addresses (an address of a known pod means
    that pod). `family` picks which of a pod's addresses ipBlocks see."""
    s = resolve_endpoint(src, state)
    d = resolve_endpoint(dst, state)
    protocol = protocol.upper()
    if isinstance(s, Pod):
        if on_own_node(s, d, state):
            egress = SideVerdict(EGRESS, s.key, "own-node", audit=state.audit(s))
        else:
            egress = side_verdict(s, EGRESS, d, d, port, protocol, state, family)
            fe = None if isinstance(d, Pod) else state.frontend(d, port, protocol)
            if not egress.allowed and fe is not None:
                egress = frontend_egress(s, fe, state) or egress
    else:
        egress = SideVerdict(EGRESS, None, "not-a-pod")
    if isinstance(d, Pod):
        if on_own_node(d, s, state):
            ingress = SideVerdict(INGRESS, d.key, "own-node", audit=state.audit(d))
        else:
            ingress = side_verdict(d, INGRESS, s, d, port, protocol, state, family)
    else:
        ingress = SideVerdict(INGRESS, None, "not-a-pod")
    return Verdict(describe_endpoint(s), describe_endpoint(d), port, protocol, egress, ingress)
