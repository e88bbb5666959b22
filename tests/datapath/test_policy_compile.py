"""The policy compiler: port blocks, trie encoding, and the trie's decisions
against the rules' documented semantics (hypothesis)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datapath import layout as L
from datapath.policy import (
    compile_entries,
    evaluate,
    naive_decision,
    port_blocks,
)
from datapath.types import CIDR_GROUP_BASE, CidrEntry, EndpointPolicy, PolicyRule

pytestmark = pytest.mark.unit


def _covered(blocks: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for base, bits in blocks:
        size = 1 << (16 - bits)
        assert base % size == 0, (base, bits)
        out.extend(range(base, base + size))
    return out


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_port_blocks_cover_exactly(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    blocks = port_blocks(lo, hi)
    assert _covered(blocks) == list(range(lo, hi + 1))
    assert len(blocks) <= 32


def test_port_blocks_examples() -> None:
    assert port_blocks(80, 80) == [(80, 16)]
    assert port_blocks(0, 65535) == [(0, 0)]
    assert port_blocks(80, 81) == [(80, 15)]
    assert port_blocks(1, 65535)[0] == (1, 16)
    with pytest.raises(ValueError):
        port_blocks(5, 4)


def test_config_entry_and_key_encoding() -> None:
    pol = EndpointPolicy(
        enforced=True,
        audit=True,
        rules=(PolicyRule(300, 6, 80, 80, 7),),
        cidrs=(CidrEntry(ipaddress.ip_network("10.0.0.0/8"), CIDR_GROUP_BASE + 1),),
        deny_attribution=99,
    )
    entries = compile_entries(pol, generation=42)
    cfg = entries[0]
    assert cfg.prefixlen == 32 and cfg.id == 99 and cfg.generation == 42
    assert cfg.flags == L.POLICY_CFG_ENFORCED | L.POLICY_CFG_AUDIT
    k = entries[1].key()
    raw = bytes(k)
    assert k.prefixlen == 96
    assert raw[4:8] == (2).to_bytes(4, "big")  # kind RULE, big-endian
    assert raw[8:12] == (300).to_bytes(4, "big")
    assert raw[12:16] == ((6 << 16) | 80).to_bytes(4, "big")
    c = entries[2]
    assert c.prefixlen == 32 + 8 and c.data[4:8] == bytes([10, 0, 0, 0])


def test_conflicting_cidr_groups_rejected() -> None:
    net = ipaddress.ip_network("10.0.0.0/8")
    pol = EndpointPolicy(True, cidrs=(CidrEntry(net, 1 << 24), CidrEntry(net, (1 << 24) + 1)))
    with pytest.raises(ValueError, match="two groups"):
        compile_entries(pol, 1)


PEERS = [256, 257, 258, CIDR_GROUP_BASE, CIDR_GROUP_BASE + 1, 0]
NETS = [
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.3/32", "0.0.0.0/0", "fd00::/8", "fd00::5/128")
]


def _rule(peer: int, proto: int, a: int, b: int, attr: int) -> PolicyRule:
    lo, hi = (min(a, b), max(a, b)) if proto else (0, 65535)
    return PolicyRule(peer, proto, lo, hi, attr)


rules_st = st.builds(
    _rule,
    st.sampled_from(PEERS),
    st.sampled_from([0, 6, 17, 132]),
    st.integers(0, 200),
    st.integers(0, 200),
    st.integers(1, 50),
)
cidrs_st = st.lists(
    st.builds(
        CidrEntry, st.sampled_from(NETS), st.sampled_from([0, CIDR_GROUP_BASE, CIDR_GROUP_BASE + 1])
    ),
    max_size=4,
    unique_by=lambda c: c.network,
)
addrs = [
    ipaddress.ip_address(a)
    for a in ("10.1.2.3", "10.1.9.9", "10.200.0.1", "fd00::5", "fd00::6", "2001::1")
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(rules_st, max_size=6),
    cidrs_st,
    st.booleans(),
    st.booleans(),
    st.sampled_from([256, 257, 258, 2]),
    st.sampled_from(addrs),
    st.sampled_from([6, 17, 132, 1]),
    st.integers(0, 210),
)
def test_trie_decides_like_the_rules(
    rules: list[PolicyRule],
    cidrs: list[CidrEntry],
    enforced: bool,
    audit: bool,
    identity: int,
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
    proto: int,
    port: int,
) -> None:
    pol = EndpointPolicy(enforced, audit, tuple(rules), tuple(cidrs), deny_attribution=5)
    entries = compile_entries(pol, 3)
    assert evaluate(entries, identity, addr, proto, port) == naive_decision(
        pol, identity, addr, proto, port
    )
