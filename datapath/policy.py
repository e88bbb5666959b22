"""EndpointPolicy -> the entries of one inner policy trie (see sensilla.h).

Pure functions: no kernel needed. The trie answers "the longest matching
prefix", so the encoding below decides what wins when rules overlap:

- For one peer, a rule for a specific protocol beats a rule for any protocol.
- Among specific-protocol rules of one peer, each port goes to the first rule in
  `EndpointPolicy.rules` that covers it (overlaps are cut into disjoint,
  prefix-aligned port blocks).
- Among any-protocol rules of one peer, the first one wins.
The program looks up the remote identity first, then ANY_PEER, then the CIDR
group of the remote address; the first hit allows, and its attribution is the
one reported. `evaluate()` is a reference model of exactly this.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from datapath import layout as L
from datapath.types import ANY_PEER, ANY_PROTOCOL, CidrEntry, EndpointPolicy, PolicyRule

RULE_ANY_PROTOCOL_BITS = 64  # kind + peer
RULE_PROTOCOL_BITS = 80  # kind + peer + protocol(16)
CONFIG_BITS = 32
CIDR_BASE_BITS = 32


@dataclass(frozen=True, order=True)
class TrieEntry:
    """One entry: prefixlen and the 20 data bytes (kind + w[4]) of a policy_key,
    and the policy_value fields."""

    prefixlen: int
    data: bytes
    id: int
    flags: int = 0
    generation: int = 0

    def key(self) -> L.PolicyKey:
        return L.PolicyKey.from_buffer_copy(struct.pack("<I", self.prefixlen) + self.data)

    def value(self) -> L.PolicyValue:
        return L.PolicyValue(id=self.id, flags=self.flags, generation=self.generation)


def _data(kind: int, w: bytes = b"") -> bytes:
    return struct.pack(">I", kind) + w.ljust(16, b"\0")


def rule_data(peer: int, protocol: int, port: int) -> bytes:
    return _data(L.POLICY_KIND_RULE, struct.pack(">II", peer, (protocol << 16) | port))


def config_data() -> bytes:
    return _data(L.POLICY_KIND_CONFIG)


def cidr_data(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    kind = L.POLICY_KIND_CIDR4 if address.version == 4 else L.POLICY_KIND_CIDR6
    return _data(kind, address.packed)


def port_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """Cover [lo, hi] with prefix-aligned blocks: (base, fixed high bits 0..16)."""
    if not 0 <= lo <= hi <= 0xFFFF:
        raise ValueError(f"bad port range {lo}-{hi}")
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while lo + size - 1 > hi:
            size >>= 1
        out.append((lo, 16 - size.bit_length() + 1))
        lo += size
    return out


def _winners(rules: Sequence[PolicyRule]) -> list[tuple[int, int, int]]:
    """Disjoint (lo, hi, attribution) intervals: each port to the first rule covering it."""
    cuts = sorted({r.port_lo for r in rules} | {r.port_hi + 1 for r in rules})
    out: list[tuple[int, int, int]] = []
    for a, b in itertools.pairwise(cuts):
        for r in rules:
            if r.port_lo <= a and b - 1 <= r.port_hi:
                if out and out[-1][1] == a - 1 and out[-1][2] == r.attribution:
                    out[-1] = (out[-1][0], b - 1, r.attribution)
                else:
                    out.append((a, b - 1, r.attribution))
                break
    return out


def _check_u32(what: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} {value} out of range (0..2^32-1)")


def compile_entries(policy: EndpointPolicy, generation: int) -> list[TrieEntry]:
    """The full content of one endpoint+direction trie for `policy`."""
    _check_u32("generation", generation)
    _check_u32("deny_attribution", policy.deny_attribution)
    flags = (L.POLICY_CFG_ENFORCED if policy.enforced else 0) | (
        L.POLICY_CFG_AUDIT if policy.audit else 0
    )
    entries = [TrieEntry(CONFIG_BITS, config_data(), policy.deny_attribution, flags, generation)]

    any_proto: dict[int, int] = {}
    by_proto: dict[tuple[int, int], list[PolicyRule]] = {}
    for r in policy.rules:
        _check_u32("peer", r.peer)
        _check_u32("attribution", r.attribution)
        if not 0 <= r.protocol <= 255:
            raise ValueError(f"protocol {r.protocol} out of range (0..255)")
        if r.protocol == ANY_PROTOCOL:
            any_proto.setdefault(r.peer, r.attribution)
        else:
            by_proto.setdefault((r.peer, r.protocol), []).append(r)
    for peer, attribution in any_proto.items():
        entries.append(TrieEntry(RULE_ANY_PROTOCOL_BITS, rule_data(peer, 0, 0), attribution))
    for (peer, protocol), rules in by_proto.items():
        for lo, hi, attribution in _winners(rules):
            for base, bits in port_blocks(lo, hi):
                entries.append(
                    TrieEntry(
                        RULE_PROTOCOL_BITS + bits, rule_data(peer, protocol, base), attribution
                    )
                )

    seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for c in policy.cidrs:
        _check_u32("CIDR group", c.group)
        net = c.network
        if net in seen and seen[net] != c.group:
            raise ValueError(f"CIDR {net} given two groups ({seen[net]}, {c.group})")
        if net in seen:
            continue
        seen[net] = c.group
        entries.append(
            TrieEntry(CIDR_BASE_BITS + net.prefixlen, cidr_data(net.network_address), c.group)
        )
    if len(entries) > L.POLICY_INNER_MAX:
        raise ValueError(
            f"policy needs {len(entries)} trie entries; the limit is {L.POLICY_INNER_MAX}"
        )
    return entries


# ---------------------------------------------------------------- reference model


def _matches(entry: TrieEntry, data: bytes) -> bool:
    n = entry.prefixlen
    full, rest = divmod(n, 8)
    if entry.data[:full] != data[:full]:
        return False
    if rest:
        mask = (0xFF << (8 - rest)) & 0xFF
        return (entry.data[full] & mask) == (data[full] & mask)
    return True


def lpm_lookup(entries: Iterable[TrieEntry], data: bytes) -> TrieEntry | None:
    """What the kernel's LPM trie returns for a full-length lookup of `data`."""
    best: TrieEntry | None = None
    for e in entries:
        if _matches(e, data) and (best is None or e.prefixlen > best.prefixlen):
            best = e
    return best


@dataclass(frozen=True)
class Decision:
    allowed: bool
    attribution: int
    audit: bool = False


def evaluate(
    entries: Sequence[TrieEntry],
    remote_identity: int,
    remote_address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    protocol: int,
    port: int,
) -> Decision:
    """The program's decision for a new connection, computed on trie entries
    (mirrors policy_decide() in sensilla.c; the host identity is handled before)."""
    cfg = lpm_lookup(entries, config_data())
    if cfg is None:
        return Decision(False, 0)
    if not cfg.flags & L.POLICY_CFG_ENFORCED:
        return Decision(True, 0)
    for peer in (remote_identity, ANY_PEER):
        hit = lpm_lookup(entries, rule_data(peer, protocol, port))
        if hit is not None:
            return Decision(True, hit.id)
    g = lpm_lookup(entries, cidr_data(remote_address))
    if g is not None and g.id:
        hit = lpm_lookup(entries, rule_data(g.id, protocol, port))
        if hit is not None:
            return Decision(True, hit.id)
    audit = bool(cfg.flags & L.POLICY_CFG_AUDIT)
    return Decision(audit, cfg.id, audit)


def naive_decision(
    policy: EndpointPolicy,
    remote_identity: int,
    remote_address: ipaddress.IPv4Address | ipaddress.IPv6Address,
    protocol: int,
    port: int,
) -> Decision:
    """The documented semantics stated directly on the rules (for tests)."""
    if not policy.enforced:
        return Decision(True, 0)

    def for_peer(peer: int) -> int | None:
        specific = [
            r
            for r in policy.rules
            if r.peer == peer and r.protocol == protocol and r.port_lo <= port <= r.port_hi
        ]
        if specific:
            return specific[0].attribution
        anyp = [r for r in policy.rules if r.peer == peer and r.protocol == ANY_PROTOCOL]
        return anyp[0].attribution if anyp else None

    for peer in (remote_identity, ANY_PEER):
        a = for_peer(peer)
        if a is not None:
            return Decision(True, a)
    best: CidrEntry | None = None
    for c in policy.cidrs:
        inside = c.network.version == remote_address.version and remote_address in c.network
        if inside and (best is None or c.network.prefixlen > best.network.prefixlen):
            best = c
    if best is not None and best.group:
        a = for_peer(best.group)
        if a is not None:
            return Decision(True, a)
    return Decision(policy.audit, policy.deny_attribution, policy.audit)
