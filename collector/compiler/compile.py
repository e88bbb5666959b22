"""Compile the policy model into what one node's datapath enforces.

    plan = compile_node(state, "sensilla-worker", registry)

gives the node's ipcache (own addresses -> host, other nodes -> remote-node, pods ->
their identities; anything else is world), and for every pod on the node an
EndpointPolicy per direction: rules by remote identity, by CIDR group or for any
peer, by protocol and port range, each with an attribution id that maps back to the
policy rules that allow the traffic (or, for default deny, the policies that select
the pod).

Precision. Selectors only look at pod labels, namespace labels and the namespace
name, which is exactly what an identity stands for, so selector peers compile to
identities. ipBlocks compile to CIDR groups matched on the remote address itself,
pods' addresses included. Named ports resolve against the destination pod: on
ingress that is the endpoint itself; on egress, when pods sharing an identity
resolve a name differently, the rule is installed per pod address (an address atom
in the CIDR partition) instead of per identity. Service frontends (ClusterIPs)
whose every ready backend the pod's egress allows compile to an exact-address entry
for the frontend and its service port, attributed to the rules that allow the
backends (at the pod's veth the packet still carries the ClusterIP).
"""

from __future__ import annotations

import ipaddress
import itertools
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from collector.compiler import cidr as C
from collector.identity import IdentityTable, identities_for
from collector.policy.cluster import ClusterState, Pod
from collector.policy.model import (
    EGRESS,
    INGRESS,
    PROTOCOL_NUMBERS,
    IPAddress,
    IPNetwork,
    NetworkPolicy,
    Peer,
    PortSpec,
)
from collector.policy.verdict import frontend_egress, selecting_policies
from datapath.types import (
    ANY_PEER,
    ANY_PROTOCOL,
    CIDR_GROUP_BASE,
    CidrEntry,
    Direction,
    EndpointPolicy,
    PolicyRule,
    ReservedIdentity,
)

HOST_INTERFACE_ANNOTATION = "sensilla.io/host-interface"
MAX_ENDPOINT_ID = 65535


@dataclass(frozen=True)
class RuleRef:
    policy: str  # "ns/name"
    direction: str  # Ingress | Egress
    rule: int  # index in spec.ingress / spec.egress

    def __str__(self) -> str:
        field_ = "ingress" if self.direction == INGRESS else "egress"
        return f"{self.policy} spec.{field_}[{self.rule}]"


@dataclass(frozen=True)
class Attribution:
    """What an attribution id in a flow event means.

    verdict "allow": `rules` allow the traffic. verdict "deny": default deny, the pod
    being selected by `policies`."""

    id: int
    verdict: str
    direction: str
    rules: tuple[RuleRef, ...] = ()
    deny_policies: tuple[str, ...] = ()

    @property
    def policies(self) -> tuple[str, ...]:
        if self.verdict == "deny":
            return self.deny_policies
        return tuple(dict.fromkeys(r.policy for r in self.rules))


class AttributionRegistry:
    """Stable attribution ids for one agent: the same meaning keeps its id across
    recompiles (flow events carry ids; the agent resolves them later)."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str, tuple[object, ...]], int] = {}
        self._by_id: dict[int, Attribution] = {}

    def allow(self, direction: str, rules: Iterable[RuleRef]) -> int:
        refs = tuple(sorted(set(rules), key=lambda r: (r.policy, r.rule)))
        return self._get("allow", direction, refs)

    def deny(self, direction: str, policies: Iterable[str]) -> int:
        return self._get("deny", direction, tuple(sorted(set(policies))))

    def _get(self, verdict: str, direction: str, what: tuple[object, ...]) -> int:
        key = (verdict, direction, what)
        n = self._ids.get(key)
        if n is None:
            n = len(self._ids) + 1
            self._ids[key] = n
            if verdict == "allow":
                att = Attribution(n, verdict, direction, rules=what)  # type: ignore[arg-type]
            else:
                att = Attribution(n, verdict, direction, deny_policies=what)  # type: ignore[arg-type]
            self._by_id[n] = att
        return n

    def lookup(self, attribution_id: int) -> Attribution | None:
        return self._by_id.get(attribution_id)

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True)
class EndpointPlan:
    pod: str
    endpoint_id: int
    identity: int
    interface: str  # host-side veth ("lxc…"), from the pod's annotation
    ingress: EndpointPolicy
    egress: EndpointPolicy

    def policy(self, direction: Direction) -> EndpointPolicy:
        return self.ingress if direction == Direction.INGRESS else self.egress


@dataclass(frozen=True)
class NodePlan:
    node: str
    revision: int
    identities: IdentityTable
    ipcache: Mapping[IPNetwork, int]
    endpoints: Mapping[str, EndpointPlan] = field(default_factory=dict)  # pod key -> plan


# --- endpoint ids ----------------------------------------------------------------------


def endpoint_ids(pods: Iterable[str], previous: Mapping[str, int] | None = None) -> dict[str, int]:
    """Endpoint ids for the node's pods: kept from `previous` when present, else a
    hash of the pod key probed to the next free id (deterministic for a given set)."""
    previous = previous or {}
    out: dict[str, int] = {}
    taken: set[int] = set()
    keys = sorted(set(pods))
    for k in keys:
        if k in previous and previous[k] not in taken:
            out[k] = previous[k]
            taken.add(previous[k])
    for k in keys:
        if k in out:
            continue
        n = 1 + zlib.crc32(k.encode()) % MAX_ENDPOINT_ID
        while n in taken:
            n = 1 if n == MAX_ENDPOINT_ID else n + 1
        out[k] = n
        taken.add(n)
    return out


# --- the ipcache -------------------------------------------------------------------------


def host_prefix(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    return ipaddress.ip_network(addr)


def build_ipcache(
    state: ClusterState, node: str, identities: IdentityTable
) -> dict[IPNetwork, int]:
    out: dict[IPNetwork, int] = {}
    for key, pod in sorted(state.pods.items()):
        if key not in identities.by_pod:
            continue
        for a in pod.ips:
            out[host_prefix(a)] = identities.by_pod[key]
    for name, n in sorted(state.nodes.items()):
        reserved = ReservedIdentity.HOST if name == node else ReservedIdentity.REMOTE_NODE
        for a in n.addresses:
            out[host_prefix(a)] = int(reserved)
    return out


# --- per-endpoint policy -----------------------------------------------------------------

# A target of a rule before CIDR groups exist: ("any",), ("id", n) or ("atom", atom).
Target = tuple[object, ...]
Entry = tuple[Target, int, int, int, RuleRef]  # target, protocol, lo, hi, ref


class CompileCache:
    """Shared by the pods of one compile (one cluster snapshot and identity table).

    - identity -> one of its pods: pods with the same identity have the same labels,
      namespace and namespace labels (collector.identity), so selectors are matched
      once per identity, not once per pod;
    - backend address -> pod, and identity -> the egress entries of the Service
      frontends it may reach (the verdict on a backend depends on the source pod only
      through its namespace and labels)."""

    def __init__(self, state: ClusterState, ident: IdentityTable) -> None:
        self.frontends_by_identity: dict[int, list[Entry]] = {}
        self.representatives: dict[int, Pod] = {}
        for key, n in sorted(ident.by_pod.items()):
            self.representatives.setdefault(n, state.pods[key])
        self._pods: dict[IPAddress, Pod] = {}
        for pod in state.pods.values():
            if not pod.host_network:
                for a in pod.ips:
                    self._pods.setdefault(a, pod)

    def endpoint(self, addr: IPAddress) -> Pod | IPAddress:
        return self._pods.get(addr, addr)

    def peer_identities(self, peer: Peer, policy: NetworkPolicy, state: ClusterState) -> set[int]:
        out = set()
        ns_match: dict[str, bool] = {}
        for n, pod in self.representatives.items():
            if peer.namespace_selector is None:
                if pod.namespace != policy.namespace:
                    continue
            else:
                ok = ns_match.get(pod.namespace)
                if ok is None:
                    ok = peer.namespace_selector.matches(state.namespace_labels(pod.namespace))
                    ns_match[pod.namespace] = ok
                if not ok:
                    continue
            if peer.pod_selector is None or peer.pod_selector.matches(pod.labels):
                out.add(n)
        return out


def _numeric(spec: PortSpec) -> tuple[int, int, int]:
    proto = PROTOCOL_NUMBERS[spec.protocol]
    if spec.port is None:
        return proto, 0, 65535
    assert isinstance(spec.port, int)
    return proto, spec.port, spec.end_port if spec.end_port is not None else spec.port


class _DirectionCompiler:
    def __init__(
        self,
        pod: Pod,
        direction: str,
        state: ClusterState,
        ident: IdentityTable,
        registry: AttributionRegistry,
        cache: CompileCache,
    ) -> None:
        self.pod = pod
        self.direction = direction
        self.state = state
        self.ident = ident
        self.registry = registry
        self.cache = cache
        self.entries: list[Entry] = []

    # Destination pods reachable through a target, for egress named ports.
    def _pods_of_identity(self, n: int) -> list[Pod]:
        return [self.state.pods[k] for k in self.ident.pods_of(n)]

    def _add_named_egress(
        self, targets: list[Target], spec: PortSpec, ref: RuleRef, block: C.BlockAtom | None
    ) -> None:
        """Egress to a named port: resolve per destination pod."""
        proto = PROTOCOL_NUMBERS[spec.protocol]
        assert isinstance(spec.port, str)
        name = spec.port
        if block is not None:
            # Pods whose address lies in the block, rule per address.
            for pod in self.state.pods.values():
                if pod.host_network:
                    continue
                for port in pod.resolve_port(name, spec.protocol):
                    for a in pod.ips:
                        if block.block.contains(a):
                            self.entries.append(
                                (("atom", C.AddressAtom(a)), proto, port, port, ref)
                            )
            return
        idents: set[int] = set()
        for t in targets:
            if t[0] == "any":
                idents.update(self.ident.by_pod.values())
            elif t[0] == "id":
                idents.add(int(t[1]))  # type: ignore[call-overload]
        for n in sorted(idents):
            pods = self._pods_of_identity(n)
            resolved = {p.key: tuple(p.resolve_port(name, spec.protocol)) for p in pods}
            if len(set(resolved.values())) <= 1:
                for port in next(iter(resolved.values()), ()):
                    self.entries.append((("id", n), proto, port, port, ref))
            else:
                for p in pods:
                    for port in resolved[p.key]:
                        for a in p.ips:
                            self.entries.append(
                                (("atom", C.AddressAtom(a)), proto, port, port, ref)
                            )

    def compile(self, audit: bool) -> EndpointPolicy:
        selecting = selecting_policies(self.pod, self.direction, self.state)
        if not selecting:
            return EndpointPolicy(enforced=False, audit=audit)
        for policy in selecting:
            for i, rule in enumerate(policy.rules(self.direction)):
                ref = RuleRef(policy.key, self.direction, i)
                # Peers: (targets, block atom or None)
                peer_groups: list[tuple[list[Target], C.BlockAtom | None]] = []
                if not rule.peers:
                    peer_groups.append(([("any",)], None))
                for j, peer in enumerate(rule.peers):
                    if peer.ip_block is not None:
                        atom = C.BlockAtom(peer.ip_block, (policy.key, self.direction, i, j))
                        peer_groups.append(([("atom", atom)], atom))
                    else:
                        ids = self.cache.peer_identities(peer, policy, self.state)
                        peer_groups.append(([("id", n) for n in sorted(ids)], None))
                specs = rule.ports or (None,)
                for targets, block in peer_groups:
                    for spec in specs:
                        if spec is None:
                            for t in targets:
                                self.entries.append((t, ANY_PROTOCOL, 0, 65535, ref))
                        elif isinstance(spec.port, str):
                            if self.direction == INGRESS:
                                proto = PROTOCOL_NUMBERS[spec.protocol]
                                for port in self.pod.resolve_port(spec.port, spec.protocol):
                                    for t in targets:
                                        self.entries.append((t, proto, port, port, ref))
                            else:
                                self._add_named_egress(targets, spec, ref, block)
                        else:
                            proto, lo, hi = _numeric(spec)
                            for t in targets:
                                self.entries.append((t, proto, lo, hi, ref))
        if self.direction == EGRESS:
            self.entries.extend(self._frontend_entries())
        rules, cidrs = self._finish()
        deny = self.registry.deny(self.direction, (p.key for p in selecting))
        return EndpointPolicy(
            enforced=True, audit=audit, rules=rules, cidrs=cidrs, deny_attribution=deny
        )

    def _frontend_entries(self) -> list[Entry]:
        """Service frontends whose every ready backend this pod may reach: the
        frontend address and service port, by the rules that allow the backends."""
        cache = self.cache
        identity = self.ident.by_pod.get(self.pod.key)
        cached = cache.frontends_by_identity.get(identity) if identity is not None else None
        if cached is not None:
            return cached
        out: list[Entry] = []
        for fe in self.state.frontends.values():
            proto = PROTOCOL_NUMBERS.get(fe.protocol)
            if proto is None:
                continue  # not a protocol a Service may carry
            via = frontend_egress(self.pod, fe, self.state, cache.endpoint)
            if via is None:
                continue
            target: Target = ("atom", C.AddressAtom(fe.address))
            for m in via.matches:
                out.append((target, proto, fe.port, fe.port, RuleRef(m.policy, EGRESS, m.rule)))
        if identity is not None:
            cache.frontends_by_identity[identity] = out
        return out

    def _finish(self) -> tuple[tuple[PolicyRule, ...], tuple[CidrEntry, ...]]:
        atoms = [t[1] for t, *_ in self.entries if t[0] == "atom"]
        part = C.partition(atoms)  # type: ignore[arg-type]
        cidrs = tuple(
            CidrEntry(net, CIDR_GROUP_BASE + g if g >= 0 else 0) for net, g in part.entries
        )
        # Expand atom targets to the group ids containing them.
        by_peer: dict[tuple[int, int], list[tuple[int, int, RuleRef]]] = {}
        for target, proto, lo, hi, ref in self.entries:
            if target[0] == "any":
                peers = [ANY_PEER]
            elif target[0] == "id":
                peers = [int(target[1])]  # type: ignore[call-overload]
            else:
                peers = [CIDR_GROUP_BASE + g for g in part.groups_with(target[1])]  # type: ignore[arg-type]
            for peer in peers:
                by_peer.setdefault((peer, proto), []).append((lo, hi, ref))
        rules: list[PolicyRule] = []
        for (peer, proto), ranges in sorted(by_peer.items()):
            extra = []
            if proto != ANY_PROTOCOL:
                extra = [ref for _, _, ref in by_peer.get((peer, ANY_PROTOCOL), [])]
            for lo, hi, refs in _segments(ranges):
                att = self.registry.allow(self.direction, [*refs, *extra])
                rules.append(PolicyRule(peer, proto, lo, hi, att))
        return tuple(rules), cidrs


def _segments(ranges: list[tuple[int, int, RuleRef]]) -> list[tuple[int, int, frozenset[RuleRef]]]:
    """Split overlapping port ranges into disjoint segments, each with the refs that
    cover it; adjacent segments with the same refs are merged."""
    bounds = sorted({lo for lo, _, _ in ranges} | {hi + 1 for _, hi, _ in ranges})
    out: list[tuple[int, int, frozenset[RuleRef]]] = []
    for a, b in itertools.pairwise(bounds):
        refs = frozenset(ref for lo, hi, ref in ranges if lo <= a and b - 1 <= hi)
        if not refs:
            continue
        if out and out[-1][1] == a - 1 and out[-1][2] == refs:
            out[-1] = (out[-1][0], b - 1, refs)
        else:
            out.append((a, b - 1, refs))
    return out


def compile_endpoint(
    pod: Pod,
    state: ClusterState,
    ident: IdentityTable,
    registry: AttributionRegistry,
    cache: CompileCache | None = None,
) -> tuple[EndpointPolicy, EndpointPolicy]:
    """(ingress, egress) policies of one pod. `cache` shares selector matches and
    Service frontend verdicts between the pods of one compile."""
    audit = state.audit(pod)
    cache = cache if cache is not None else CompileCache(state, ident)
    ingress = _DirectionCompiler(pod, INGRESS, state, ident, registry, cache).compile(audit)
    egress = _DirectionCompiler(pod, EGRESS, state, ident, registry, cache).compile(audit)
    return ingress, egress


def compile_node(
    state: ClusterState,
    node: str,
    registry: AttributionRegistry | None = None,
    previous_ids: Mapping[str, int] | None = None,
) -> NodePlan:
    """Everything `node` enforces for this cluster snapshot."""
    registry = registry if registry is not None else AttributionRegistry()
    ident = identities_for(state)
    local = [k for k, p in state.pods.items() if p.node == node and k in ident.by_pod]
    ids = endpoint_ids(local, previous_ids)
    endpoints = {}
    cache = CompileCache(state, ident)
    for key in sorted(local):
        pod = state.pods[key]
        ingress, egress = compile_endpoint(pod, state, ident, registry, cache)
        endpoints[key] = EndpointPlan(
            pod=key,
            endpoint_id=ids[key],
            identity=ident.by_pod[key],
            interface=pod.annotations.get(HOST_INTERFACE_ANNOTATION, ""),
            ingress=ingress,
            egress=egress,
        )
    return NodePlan(node, state.revision, ident, build_ipcache(state, node, ident), endpoints)


__all__ = [
    "EGRESS",
    "INGRESS",
    "Attribution",
    "AttributionRegistry",
    "EndpointPlan",
    "NodePlan",
    "RuleRef",
    "build_ipcache",
    "compile_endpoint",
    "compile_node",
    "endpoint_ids",
]
