"""A small Python model of the datapath's lookup, for testing the compiler.

For a new connection the datapath decides each side on the endpoint's own node:

- egress at the source pod's host-side veth: remote = the destination address;
- ingress at the destination pod's host-side veth: remote = the source address.

A side allows when its EndpointPolicy is not enforced, when the remote identity is
`host` (the pod's own node), or when some rule matches: its peer is ANY, the remote
identity (longest-prefix match in the node's ipcache; unknown = world) or the CIDR
group of the remote address (longest-prefix match in the endpoint's CIDR entries;
group 0 = none), its protocol is ANY or the packet's, and the destination port is in
its range. A denied side in audit mode forwards with verdict AUDIT.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from collector.compiler.compile import NodePlan
from collector.policy.cluster import ClusterState
from collector.policy.model import PROTOCOL_NUMBERS, IPAddress, IPNetwork
from datapath.types import ANY_PEER, ANY_PROTOCOL, EndpointPolicy, ReservedIdentity

PROTOCOL_BY_NAME = {**PROTOCOL_NUMBERS, "ICMP": 1, "ICMPV6": 58}


def lpm(
    table: Mapping[IPNetwork, int] | Iterable[tuple[IPNetwork, int]], addr: IPAddress
) -> int | None:
    items = table.items() if isinstance(table, Mapping) else table
    best_len, best = -1, None
    for net, value in items:
        if net.version == addr.version and addr in net and net.prefixlen > best_len:
            best_len, best = net.prefixlen, value
    return best


@dataclass(frozen=True)
class SideDecision:
    allowed: bool
    attribution: int  # of the matching rule, or the deny attribution
    forwarded: bool


def decide(
    policy: EndpointPolicy, remote_identity: int, remote: IPAddress, protocol: int, port: int
) -> SideDecision:
    if not policy.enforced or remote_identity == ReservedIdentity.HOST:
        return SideDecision(True, 0, True)
    group = lpm(((e.network, e.group) for e in policy.cidrs), remote) or 0
    for r in policy.rules:
        if r.peer != ANY_PEER and r.peer != remote_identity and (group == 0 or r.peer != group):
            continue
        if r.protocol != ANY_PROTOCOL and r.protocol != protocol:
            continue
        if r.port_lo <= port <= r.port_hi:
            return SideDecision(True, r.attribution, True)
    return SideDecision(False, policy.deny_attribution, policy.audit)


def remote_identity(plan: NodePlan, addr: IPAddress) -> int:
    n = lpm(plan.ipcache, addr)
    return int(ReservedIdentity.WORLD) if n is None else n


def evaluate(
    plans: Mapping[str, NodePlan],
    state: ClusterState,
    src: str,
    dst: str,
    port: int | None,
    protocol: str,
    family: int = 4,
) -> tuple[SideDecision, SideDecision]:
    """(egress, ingress) decisions the compiled maps give for pod `src` -> pod `dst`."""
    s, d = state.pod(src), state.pod(dst)
    saddr, daddr = s.ip(family), d.ip(family)
    assert saddr is not None and daddr is not None
    proto = PROTOCOL_BY_NAME[protocol.upper()]
    p = port or 0
    splan, dplan = plans[s.node], plans[d.node]
    eg = decide(splan.endpoints[src].egress, remote_identity(splan, daddr), daddr, proto, p)
    ing = decide(dplan.endpoints[dst].ingress, remote_identity(dplan, saddr), saddr, proto, p)
    return eg, ing


def allowed(
    plans: Mapping[str, NodePlan],
    state: ClusterState,
    src: str,
    dst: str,
    port: int | None,
    protocol: str,
    family: int = 4,
) -> bool:
    eg, ing = evaluate(plans, state, src, dst, port, protocol, family)
    return eg.allowed and ing.allowed
