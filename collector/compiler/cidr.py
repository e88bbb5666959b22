"""Partition an endpoint's address atoms into longest-prefix-match entries.

An atom is a set of addresses a rule refers to: an ipBlock (cidr minus its excepts)
or one pod address. The datapath looks the remote address up in a longest-prefix
trie of CidrEntry and gets one group id; each group stands for the exact set of atoms
that contain every address the entry decides. Rules that name an atom are then
installed once per group whose set holds it.

For an entry E (any cidr, except or host prefix among the atoms), an address whose
longest match is E lies in a block's cidr exactly when E lies inside that cidr (no
entry between them is longer), and likewise for excepts; so the set of E is the atoms
that contain E as a whole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from collector.policy.model import IPAddress, IPBlock, IPNetwork


@dataclass(frozen=True)
class BlockAtom:
    block: IPBlock
    label: Hashable  # who asked for it (policy, rule, peer)

    def prefixes(self) -> list[IPNetwork]:
        return [self.block.cidr, *self.block.excepts]

    def covers(self, net: IPNetwork) -> bool:
        cidr = self.block.cidr
        if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
            return False
        return not any(net.subnet_of(e) for e in self.block.excepts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class AddressAtom:
    address: IPAddress

    @cached_property
    def network(self) -> IPNetwork:
        return ipaddress.ip_network(self.address)

    def prefixes(self) -> list[IPNetwork]:
        return [self.network]

    def covers(self, net: IPNetwork) -> bool:
        return net == self.network


Atom = BlockAtom | AddressAtom


@dataclass(frozen=True)
class Partition:
    entries: tuple[tuple[IPNetwork, int], ...]  # (prefix, group index or -1 for none)
    groups: tuple[frozenset[Atom], ...]  # group index -> atoms
    _by_atom: dict[Atom, list[int]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for i, atoms in enumerate(self.groups):
            for a in atoms:
                self._by_atom.setdefault(a, []).append(i)

    def groups_with(self, atom: Atom) -> list[int]:
        return list(self._by_atom.get(atom, ()))


def _sort_key(net: IPNetwork) -> tuple[int, int, int]:
    return (net.version, int(net.network_address), net.prefixlen)


def partition(atoms: Iterable[Atom]) -> Partition:
    atoms = list(dict.fromkeys(atoms))
    prefixes = sorted({p for a in atoms for p in a.prefixes()}, key=_sort_key)
    # An address atom covers its own host prefix only: look those up rather than ask
    # every atom about every prefix (pods' addresses and Service frontends are many).
    blocks = [a for a in atoms if isinstance(a, BlockAtom)]
    hosts: dict[IPNetwork, list[Atom]] = {}
    for a in atoms:
        if isinstance(a, AddressAtom):
            hosts.setdefault(a.network, []).append(a)
    sets: dict[IPNetwork, frozenset[Atom]] = {
        p: frozenset([*(a for a in blocks if a.covers(p)), *hosts.get(p, ())]) for p in prefixes
    }
    # Group ids in a stable order: by the first prefix (in address order) using them.
    group_index: dict[frozenset[Atom], int] = {}
    for p in prefixes:
        s = sets[p]
        if s and s not in group_index:
            group_index[s] = len(group_index)
    parents = _parents(prefixes)
    entries: list[tuple[IPNetwork, int]] = []
    for p in prefixes:
        parent = parents.get(p)
        parent_set: frozenset[Atom] = sets[parent] if parent is not None else frozenset()
        if sets[p] == parent_set:
            continue  # decided the same way without it
        entries.append((p, group_index[sets[p]] if sets[p] else -1))
    groups = tuple(s for s, _ in sorted(group_index.items(), key=lambda kv: kv[1]))
    return Partition(tuple(entries), groups)


def _parents(prefixes: list[IPNetwork]) -> Mapping[IPNetwork, IPNetwork]:
    """Each prefix's longest strictly-containing prefix in the list."""
    out: dict[IPNetwork, IPNetwork] = {}
    stack: list[IPNetwork] = []
    for p in prefixes:  # sorted by (version, address, prefixlen): parents come first
        while stack and not (
            stack[-1].version == p.version and p.subnet_of(stack[-1]) and stack[-1] != p  # type: ignore[arg-type]
        ):
            stack.pop()
        if stack:
            out[p] = stack[-1]
        stack.append(p)
    return out


def lookup(entries: Iterable[tuple[IPNetwork, int]], addr: IPAddress) -> int:
    """Longest-prefix match (the datapath's semantics); -1 when nothing matches."""
    best: tuple[int, int] = (-1, -1)
    for net, group in entries:
        if addr.version == net.version and addr in net and net.prefixlen > best[0]:
            best = (net.prefixlen, group)
    return best[1]
