"""Fuzzing the programs with BPF_PROG_TEST_RUN: with every direction denied,
no frame passes unless it is ARP or genuine IPv6 neighbour discovery, whatever
its bytes; and the programs always return a TC verdict."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datapath.types import Direction, EndpointPolicy, ReservedIdentity
from tests.datapath import packets as P
from tests.datapath.conftest import UNIT_EP, UNIT_IPCACHE, UnitDatapath

pytestmark = pytest.mark.needs_root

FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"
EXAMPLES = 3000 if FULL else 300
ME, PEER, ME6, PEER6 = "10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"
EXT = (0, 43, 60, 51)


def _bases() -> list[bytes]:
    tcp, udp = P.tcp(1000, 80, payload=bytes(20)), P.udp(1000, 80, bytes(20))
    chain = P.ext_header(60) + P.ext_header(43, 1) + P.ext_header(6)
    return [
        P.v4(PEER, ME, 6, tcp),
        P.v4(PEER, ME, 17, udp),
        P.v4(PEER, ME, 1, P.icmp(8, ident=3)),
        P.v4(PEER, ME, 1, P.icmp(3, 3, payload=P.ipv4(ME, PEER, 17, udp))),
        P.v4(PEER, ME, 132, P.sctp_init(1, 80)),
        P.v4(PEER, ME, 6, tcp, options=b"\x01" * 8),
        P.v4(PEER, ME, 6, tcp[:24], ident=5, more_fragments=True),
        P.v4(PEER, ME, 6, tcp[24:], ident=5, frag_offset=3),
        P.v6(PEER6, ME6, 6, tcp),
        P.v6(PEER6, ME6, 0, chain + tcp),
        P.v6(PEER6, ME6, 44, P.frag_header(6, 0, True, 1) + tcp[:32]),
        P.v6(PEER6, ME6, 44, P.frag_header(6, 4, False, 1) + tcp[32:]),
        P.v6(PEER6, ME6, 58, P.icmp6(128, ident=3)),
        P.v6(PEER6, ME6, 58, P.icmp6(135), hlim=255),
        P.v6(PEER6, ME6, 58, P.icmp6(136), hlim=254),
        P.v6(PEER6, ME6, 58, P.icmp6(1, 4, payload=P.ipv6(ME6, PEER6, 17, udp))),
    ]


BASES = _bases()


HOST_ADDRESSES = {
    ipaddress.ip_network(cidr).network_address
    for cidr, identity in UNIT_IPCACHE.items()
    if identity == int(ReservedIdentity.HOST)
}


def remote_is_host(frame: bytes, egress: bool) -> bool:
    """The frame's remote address (the destination of a pod's egress, the source of
    its ingress) is the node's: a pod and its own node always talk, whatever the
    policy (docs/policy.md)."""
    (proto,) = struct.unpack_from("!H", frame, 12)
    if proto == P.ETH_P_IP and len(frame) >= 34:
        addr = frame[30:34] if egress else frame[26:30]
    elif proto == P.ETH_P_IPV6 and len(frame) >= 54:
        addr = frame[38:54] if egress else frame[22:38]
    else:
        return False
    return ipaddress.ip_address(addr) in HOST_ADDRESSES


def may_pass_deny_all(frame: bytes, egress: bool) -> bool:
    """What a deny-all endpoint may let through: ARP, genuine neighbour discovery, and
    traffic with its own node."""
    return is_arp_or_nd(frame) or remote_is_host(frame, egress)


def is_arp_or_nd(frame: bytes) -> bool:
    """What may pass a deny-all endpoint: mirrors the program's parser."""
    (proto,) = struct.unpack_from("!H", frame, 12)
    if proto == P.ETH_P_ARP:
        return True
    if proto != P.ETH_P_IPV6 or len(frame) < 54 or frame[14] >> 4 != 6 or frame[21] != 255:
        return False
    (plen,) = struct.unpack_from("!H", frame, 18)
    end = 54 + plen
    if end > len(frame):
        return False
    return _walk(frame, end)


def _walk(frame: bytes, end: int) -> bool:
    nh, off = frame[20], 54
    for _ in range(8):
        if nh in EXT:
            if off + 8 > end:
                return False
            nxt, hl = frame[off], frame[off + 1]
            off += (hl + 2) * 4 if nh == 51 else (hl + 1) * 8
            nh = nxt
            continue
        if nh == 44:
            return False
        break
    return nh == 58 and off + 8 <= end and 133 <= frame[off] <= 137


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    base = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(12, len(base) - 1))
        base[pos] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        base = base[: draw(st.integers(14, len(base)))]
    if draw(st.integers(0, 9)) == 0:
        base += draw(st.binary(max_size=64))
    return bytes(base)


@pytest.fixture(scope="module")
def deny_all(unit_dp_module: UnitDatapath) -> UnitDatapath:
    unit_dp_module.reset()
    for d in Direction:
        unit_dp_module.dp.install_policy(UNIT_EP, d, EndpointPolicy(enforced=True))
    unit_dp_module.dp.set_aggregation("maximum", 60.0)  # keep the rings quiet
    return unit_dp_module


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames())
def test_nothing_but_arp_and_nd_passes_deny_all(deny_all: UnitDatapath, frame: bytes) -> None:
    u = deny_all
    for run, egress in ((u.ingress, False), (u.egress, True)):
        try:
            verdict = run(frame)
        except OSError:
            # the kernel's test runner refuses frames shorter than an L3 header
            (proto,) = struct.unpack_from("!H", frame, 12)
            assert len(frame) < (54 if proto == P.ETH_P_IPV6 else 34)
            continue
        assert verdict in (0, 2)
        if verdict == 0:
            assert may_pass_deny_all(frame, egress), frame.hex()
