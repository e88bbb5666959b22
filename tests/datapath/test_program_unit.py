"""The TC programs on crafted packets (BPF_PROG_TEST_RUN): parser, conntrack,
policy, verdicts, drop reasons and events. The endpoint is `10.0.0.1`/`fd00::1`
(identity 300, endpoint 7); peers 10.0.0.2 (400), 10.0.0.3 (401), the node
10.0.0.254 (host)."""

from __future__ import annotations

import ipaddress

import pytest

from datapath import layout as L
from datapath.types import (
    CIDR_GROUP_BASE,
    CidrEntry,
    Direction,
    EndpointPolicy,
    PolicyRule,
    Verdict,
)
from tests.datapath import packets as P
from tests.datapath.conftest import UNIT_EP, UnitDatapath

pytestmark = pytest.mark.needs_root

PASS, DROP = 0, 2
ME, PEER, OTHER, NODE = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.254"
ME6, PEER6, OTHER6, NODE6 = "fd00::1", "fd00::2", "fd00::3", "fd00::fe"
DENY_ALL = EndpointPolicy(enforced=True, deny_attribution=77)


def syn(src: str, dst: str, sport: int, dport: int, flags: int = P.TCP_SYN) -> bytes:
    if ":" in src:
        return P.v6(src, dst, 6, P.tcp(sport, dport, flags))
    return P.v4(src, dst, 6, P.tcp(sport, dport, flags))


def reasons(u: UnitDatapath) -> list[tuple[int, int, int]]:
    ev = u.events()
    return [(int(e["reason"]), int(e["verdict"]), int(e["drop_reason"])) for e in ev]


# ------------------------------------------------------------------ basics


def test_no_policy_forwards_and_reports_start(unit_dp: UnitDatapath) -> None:
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == PASS
    ev = unit_dp.events()
    assert len(ev) == 1
    e = ev[0]
    assert int(e["reason"]) == L.EV_START and int(e["verdict"]) == L.VERDICT_FORWARDED
    assert int(e["direction"]) == L.DIR_EGRESS and int(e["endpoint_id"]) == UNIT_EP
    assert (int(e["src_identity"]), int(e["dst_identity"])) == (300, 400)
    assert (int(e["sport"]), int(e["dport"]), int(e["proto"]), int(e["family"])) == (1000, 80, 6, 4)
    assert bytes(e["saddr"][:4]) == ipaddress.IPv4Address(ME).packed
    assert int(e["ct_state"]) == L.CT_STATE_NEW and int(e["packets"]) == 1


def test_unknown_endpoint_is_dropped(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.remove_endpoint(1)
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == DROP
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80)) == DROP
    assert [r[2] for r in reasons(unit_dp)] == [L.DROP_EP_NOT_READY] * 2


def test_arp_and_neighbour_discovery_always_pass(unit_dp: UnitDatapath) -> None:
    for d in Direction:
        unit_dp.dp.install_policy(UNIT_EP, d, DENY_ALL)
    assert unit_dp.egress(P.arp()) == PASS
    assert unit_dp.ingress(P.arp()) == PASS
    for t in (133, 134, 135, 136, 137):
        assert unit_dp.egress(P.v6(ME6, PEER6, 58, P.icmp6(t), hlim=255)) == PASS
        assert unit_dp.ingress(P.v6(PEER6, ME6, 58, P.icmp6(t), hlim=255)) == PASS
        # a forwarded "neighbour discovery" packet (hop limit < 255) is not genuine
        assert unit_dp.ingress(P.v6(PEER6, ME6, 58, P.icmp6(t), hlim=254)) == DROP
    # an echo request is not neighbour discovery
    assert unit_dp.egress(P.v6(ME6, PEER6, 58, P.icmp6(128, ident=5))) == DROP
    # neighbour discovery in a fragment is not genuine
    frag = P.frag_header(58, 0, True, 99) + P.icmp6(135)
    assert unit_dp.egress(P.v6(ME6, PEER6, 44, frag, hlim=255)) == DROP
    assert unit_dp.events() is not None


def test_unsupported_l3_is_dropped(unit_dp: UnitDatapath) -> None:
    assert unit_dp.egress(P.eth(0x88CC, bytes(40))) == DROP  # LLDP
    assert reasons(unit_dp)[-1][2] == L.DROP_UNSUPPORTED_L3_PROTOCOL


# ------------------------------------------------------------------ policy


def test_deny_all_drops_every_protocol_with_133(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    pkts = [
        P.v4(PEER, ME, 6, P.tcp(1000, 80)),
        P.v4(PEER, ME, 17, P.udp(1000, 80)),
        P.v4(PEER, ME, 1, P.icmp(8, ident=3)),
        P.v4(PEER, ME, 132, P.sctp_init(1000, 80)),
        P.v6(PEER6, ME6, 6, P.tcp(1000, 80)),
        P.v6(PEER6, ME6, 17, P.udp(1000, 80)),
        P.v6(PEER6, ME6, 58, P.icmp6(128, ident=3)),
        P.v6(PEER6, ME6, 132, P.sctp_init(1000, 80)),
    ]
    for pkt in pkts:
        assert unit_dp.ingress(pkt) == DROP
    rs = reasons(unit_dp)
    assert rs == [(L.EV_DROP, L.VERDICT_DROPPED, L.DROP_POLICY_DENIED)] * len(pkts)
    ev = unit_dp.events(0)
    assert all(int(a) == 77 for a in ev["attribution"]) if len(ev) else True
    # the egress direction is not enforced
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == PASS


def test_own_node_always_passes(unit_dp: UnitDatapath) -> None:
    for d in Direction:
        unit_dp.dp.install_policy(UNIT_EP, d, DENY_ALL)
    assert unit_dp.ingress(syn(NODE, ME, 5000, 80)) == PASS
    assert unit_dp.egress(syn(ME, NODE, 5001, 22)) == PASS
    assert unit_dp.ingress(syn(NODE6, ME6, 5000, 80)) == PASS
    ev = unit_dp.events()
    assert all(int(f) & L.EVF_HOST for f in ev["flags"])


@pytest.mark.parametrize(
    ("rule", "admitted", "refused"),
    [
        # identity, protocol, port
        (
            PolicyRule(400, 6, 80, 80, 1),
            [(PEER, 6, 80)],
            [(PEER, 6, 81), (PEER, 17, 80), (OTHER, 6, 80)],
        ),
        # port range
        (
            PolicyRule(400, 17, 1000, 2000, 2),
            [(PEER, 17, 1000), (PEER, 17, 1500), (PEER, 17, 2000)],
            [(PEER, 17, 999), (PEER, 17, 2001), (PEER, 6, 1500)],
        ),
        # any peer, one protocol, all ports
        (
            PolicyRule(0, 132, 0, 65535, 3),
            [(PEER, 132, 1), (OTHER, 132, 65535)],
            [(PEER, 6, 80)],
        ),
        # one peer, any protocol
        (
            PolicyRule(401, 0, 0, 65535, 4),
            [(OTHER, 6, 80), (OTHER, 17, 9), (OTHER, 1, 0)],
            [(PEER, 6, 80)],
        ),
    ],
)
def test_allow_rules_admit_exactly_what_they_name(
    unit_dp: UnitDatapath,
    rule: PolicyRule,
    admitted: list[tuple[str, int, int]],
    refused: list[tuple[str, int, int]],
) -> None:
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, EndpointPolicy(True, rules=(rule,)))

    def pkt(src: str, proto: int, port: int, sport: int) -> bytes:
        if proto == 6:
            return P.v4(src, ME, 6, P.tcp(sport, port))
        if proto == 17:
            return P.v4(src, ME, 17, P.udp(sport, port))
        if proto == 132:
            return P.v4(src, ME, 132, P.sctp_init(sport, port))
        return P.v4(src, ME, 1, P.icmp(8, ident=sport))

    for i, (src, proto, port) in enumerate(admitted):
        assert unit_dp.ingress(pkt(src, proto, port, 2000 + i)) == PASS, (src, proto, port)
    for i, (src, proto, port) in enumerate(refused):
        assert unit_dp.ingress(pkt(src, proto, port, 3000 + i)) == DROP, (src, proto, port)
    ev = unit_dp.events()
    starts = ev[ev["reason"] == L.EV_START]
    assert len(starts) == len(admitted)
    assert set(int(a) for a in starts["attribution"]) == {rule.attribution}


def test_cidr_rule_matches_addresses_including_pods_with_except(unit_dp: UnitDatapath) -> None:
    g = CIDR_GROUP_BASE + 1
    pol = EndpointPolicy(
        True,
        rules=(PolicyRule(g, 6, 80, 80, 9),),
        cidrs=(
            CidrEntry(ipaddress.ip_network("10.0.0.0/24"), g),
            CidrEntry(ipaddress.ip_network("10.0.0.3/32"), 0),  # except
        ),
    )
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, pol)
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80)) == PASS  # a pod address (identity 400)
    assert unit_dp.ingress(syn("10.0.0.77", ME, 1000, 80)) == PASS  # world, in the block
    assert unit_dp.ingress(syn(OTHER, ME, 1000, 80)) == DROP  # the except
    assert unit_dp.ingress(syn(PEER, ME, 1001, 81)) == DROP  # port not named
    assert unit_dp.ingress(syn("10.0.1.1", ME, 1000, 80)) == DROP  # outside
    assert unit_dp.ingress(syn(PEER6, ME6, 1000, 80)) == DROP  # IPv6 not in an IPv4 block


def test_audit_forwards_would_be_drops(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.INGRESS, EndpointPolicy(True, audit=True, deny_attribution=5)
    )
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80)) == PASS
    assert unit_dp.egress(syn(ME, PEER, 80, 1000, P.TCP_SYN | P.TCP_ACK)) == PASS
    ev = unit_dp.events()
    assert int(ev[0]["verdict"]) == L.VERDICT_AUDIT
    assert int(ev[0]["drop_reason"]) == L.DROP_POLICY_DENIED
    assert int(ev[0]["attribution"]) == 5
    m = unit_dp.dp.read_metrics()
    assert any(k[1] == L.VERDICT_AUDIT for k in m)


# ------------------------------------------------------------------ conntrack


def test_replies_pass_through_conntrack_and_spoofed_replies_do_not(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.EGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    )
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.egress(syn(ME, PEER, 40000, 80)) == PASS
    assert unit_dp.ingress(syn(PEER, ME, 80, 40000, P.TCP_SYN | P.TCP_ACK)) == PASS  # reply
    assert unit_dp.egress(syn(ME, PEER, 40000, 80, P.TCP_ACK)) == PASS
    # a "reply" of a connection that was never allowed
    assert unit_dp.ingress(syn(PEER, ME, 80, 40001, P.TCP_SYN | P.TCP_ACK)) == DROP
    assert unit_dp.ingress(syn(OTHER, ME, 80, 40000, P.TCP_ACK)) == DROP
    assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(80, 40000))) == DROP  # wrong protocol
    ev = unit_dp.events()
    replies = ev[ev["is_reply"] == 1]
    assert len(replies) >= 1 and all(int(s) == L.CT_STATE_REPLY for s in replies["ct_state"])


def test_icmp_echo_reply_and_related_errors(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.EGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 0, 0, 65535, 1),))
    )
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.egress(P.v4(ME, PEER, 1, P.icmp(8, ident=42))) == PASS
    assert unit_dp.ingress(P.v4(PEER, ME, 1, P.icmp(0, ident=42))) == PASS
    assert unit_dp.ingress(P.v4(PEER, ME, 1, P.icmp(0, ident=43))) == DROP  # unknown id
    assert unit_dp.ingress(P.v4(PEER, ME, 1, P.icmp(8, ident=42))) == DROP  # a request
    # an ICMP error about an allowed UDP flow is related to it
    assert unit_dp.egress(P.v4(ME, PEER, 17, P.udp(5000, 53))) == PASS
    inner = P.ipv4(ME, PEER, 17, P.udp(5000, 53))
    assert unit_dp.ingress(P.v4(OTHER, ME, 1, P.icmp(3, 3, payload=inner))) == PASS
    unrelated = P.ipv4(ME, PEER, 17, P.udp(5001, 53))
    assert unit_dp.ingress(P.v4(OTHER, ME, 1, P.icmp(3, 3, payload=unrelated))) == DROP
    # IPv6: echo and a related error
    assert unit_dp.egress(P.v6(ME6, PEER6, 58, P.icmp6(128, ident=7))) == PASS
    assert unit_dp.ingress(P.v6(PEER6, ME6, 58, P.icmp6(129, ident=7))) == PASS
    assert unit_dp.egress(P.v6(ME6, PEER6, 17, P.udp(5000, 53))) == PASS
    inner6 = P.ipv6(ME6, PEER6, 17, P.udp(5000, 53))
    assert unit_dp.ingress(P.v6(OTHER6, ME6, 58, P.icmp6(1, 4, payload=inner6))) == PASS
    ev = unit_dp.events()
    assert any(int(s) == L.CT_STATE_RELATED for s in ev["ct_state"])


def test_policy_change_rechecks_established_forward_packets(unit_dp: UnitDatapath) -> None:
    allow = EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, allow)
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80)) == PASS
    assert unit_dp.egress(syn(ME, PEER, 80, 1000, P.TCP_SYN | P.TCP_ACK)) == PASS
    # the same rules under a new generation: still allowed
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, allow)
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80, P.TCP_ACK)) == PASS
    # the allow is removed: the next forward packet is judged again and dropped
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.ingress(syn(PEER, ME, 1000, 80, P.TCP_ACK)) == DROP
    ev = unit_dp.events()
    last = ev[-1]
    assert int(last["drop_reason"]) == L.DROP_POLICY_DENIED
    assert int(last["flags"]) & L.EVF_RECHECK
    # the connection is gone: its replies are judged as new packets of the egress side
    unit_dp.dp.install_policy(UNIT_EP, Direction.EGRESS, DENY_ALL)
    assert unit_dp.egress(syn(ME, PEER, 80, 1000, P.TCP_ACK)) == DROP


def test_replies_are_never_rechecked(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.EGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    )
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == PASS
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.ingress(syn(PEER, ME, 80, 1000, P.TCP_SYN | P.TCP_ACK)) == PASS


def test_conntrack_entries_expire(unit_dp: UnitDatapath) -> None:
    import time

    unit_dp.dp.set_conntrack_timeouts(other_s=0.2)
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.EGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 17, 53, 53, 1),))
    )
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.egress(P.v4(ME, PEER, 17, P.udp(5000, 53))) == PASS
    assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(53, 5000))) == PASS
    time.sleep(0.4)
    assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(53, 5000))) == DROP


def test_tcp_close_shortens_lifetime_and_reports_end(unit_dp: UnitDatapath) -> None:
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == PASS
    assert unit_dp.ingress(syn(PEER, ME, 80, 1000, P.TCP_SYN | P.TCP_ACK)) == PASS
    assert unit_dp.egress(syn(ME, PEER, 1000, 80, P.TCP_FIN | P.TCP_ACK)) == PASS
    assert unit_dp.ingress(syn(PEER, ME, 80, 1000, P.TCP_FIN | P.TCP_ACK)) == PASS
    ((_, entry),) = unit_dp.dp.conntrack()
    assert entry.state & L.CT_S_ENDED
    ttl = entry.expires_ns - entry.created_ns
    assert ttl < 60 * 10**9  # the close timeout, not the established one
    ev = unit_dp.events()
    assert int(ev[-1]["reason"]) == L.EV_END


def test_ct_is_scoped_by_direction(unit_dp: UnitDatapath) -> None:
    """An egress connection does not make the same tuple arriving from outside
    an allowed ingress connection."""
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    assert unit_dp.egress(syn(ME, PEER, 1000, 80)) == PASS
    # the identical tuple seen towards the pod is not a reply (ports not swapped)
    assert unit_dp.ingress(syn(ME, PEER, 1000, 80)) == DROP


# ------------------------------------------------------------------ parser


def test_ipv4_options_are_skipped(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.INGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    )
    opts = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL
    assert unit_dp.ingress(P.v4(PEER, ME, 6, P.tcp(1000, 80), options=opts)) == PASS
    assert unit_dp.ingress(P.v4(PEER, ME, 6, P.tcp(1000, 81), options=opts * 10)) == DROP
    assert reasons(unit_dp)[-1][2] == L.DROP_POLICY_DENIED


# (BPF_PROG_TEST_RUN refuses frames shorter than a full L3 header: truncated IP
# headers are sent for real from a pod in test_lab_malformed.)
@pytest.mark.parametrize(
    ("pkt", "reason"),
    [
        (P.v4(PEER, ME, 6, P.tcp(1, 80), ihl=4), L.DROP_INVALID_PACKET),  # IHL < 5
        (P.v4(PEER, ME, 6, P.tcp(1, 80), ihl=15), L.DROP_INVALID_PACKET),  # IHL > length
        (P.v4(PEER, ME, 6, P.tcp(1, 80), total_length=400), L.DROP_INVALID_PACKET),
        (P.v4(PEER, ME, 6, P.tcp(1, 80)[:12]), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v4(PEER, ME, 6, P.tcp(1, 80, doff=2)), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v4(PEER, ME, 17, P.udp(1, 80)[:6]), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v4(PEER, ME, 1, b"\x08\x00"), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v4(PEER, ME, 132, b"\x00\x01\x00\x50"), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v6(PEER6, ME6, 6, P.tcp(1, 80), payload_length=999), L.DROP_INVALID_PACKET),
        (P.v6(PEER6, ME6, 6, P.tcp(1, 80)[:10]), L.DROP_CT_TRUNCATED_OR_INVALID_HEADER),
        (P.v6(PEER6, ME6, 0, b"\x06\x05"), L.DROP_INVALID_IPV6_EXTENSION_HEADER),  # truncated
    ],
)
def test_malformed_packets_are_dropped_with_their_reason(
    unit_dp: UnitDatapath, pkt: bytes, reason: int
) -> None:
    for run in (unit_dp.ingress, unit_dp.egress):
        assert run(pkt) == DROP
    rs = reasons(unit_dp)
    assert [r[2] for r in rs] == [reason, reason]


def test_ipv6_extension_headers(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.INGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    )
    chain = P.ext_header(60) + P.ext_header(43, 1) + P.ext_header(6)
    assert unit_dp.ingress(P.v6(PEER6, ME6, 0, chain + P.tcp(1000, 80))) == PASS
    chain81 = P.ext_header(60) + P.ext_header(43, 1) + P.ext_header(6)
    assert unit_dp.ingress(P.v6(PEER6, ME6, 0, chain81 + P.tcp(1001, 81))) == DROP
    # the walk is bounded: 8 headers are parsed, a 9th is refused
    eight = b"".join(P.ext_header(60) for _ in range(7)) + P.ext_header(6)
    assert unit_dp.ingress(P.v6(PEER6, ME6, 60, eight + P.tcp(1002, 80))) == PASS
    nine = b"".join(P.ext_header(60) for _ in range(8)) + P.ext_header(6)
    assert unit_dp.ingress(P.v6(PEER6, ME6, 60, nine + P.tcp(1003, 80))) == DROP
    assert reasons(unit_dp)[-1][2] == L.DROP_INVALID_IPV6_EXTENSION_HEADER


def test_ipv4_fragments(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.INGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 17, 53, 53, 1),))
    )
    body = P.udp(5000, 53, bytes(64))
    first = P.v4(PEER, ME, 17, body[:24], ident=77, more_fragments=True)
    later = P.v4(PEER, ME, 17, body[24:], ident=77, frag_offset=3)
    assert unit_dp.ingress(first) == PASS
    assert unit_dp.ingress(later) == PASS
    # a later fragment whose first fragment was never seen
    orphan = P.v4(PEER, ME, 17, body[24:], ident=78, frag_offset=3)
    assert unit_dp.ingress(orphan) == DROP
    assert reasons(unit_dp)[-1][2] == L.DROP_FRAG_NOT_FOUND
    # a denied first fragment: its later fragments are denied the same way
    body81 = P.udp(5000, 81, bytes(64))
    assert unit_dp.ingress(P.v4(PEER, ME, 17, body81[:24], ident=79, more_fragments=True)) == DROP
    assert unit_dp.ingress(P.v4(PEER, ME, 17, body81[24:], ident=79, frag_offset=3)) == DROP
    # a tiny first fragment that does not hold the whole TCP header
    tiny = P.v4(PEER, ME, 6, P.tcp(1000, 80)[:8], ident=80, more_fragments=True)
    assert unit_dp.ingress(tiny) == DROP
    # RFC 1858: a TCP fragment at offset 8 bytes
    overlap = P.v4(PEER, ME, 6, bytes(16), ident=81, frag_offset=1)
    assert unit_dp.ingress(overlap) == DROP
    rs = reasons(unit_dp)
    # (the second fragment's drop has the first's tuple and reason: rate-limited)
    assert [r[2] for r in rs[-3:]] == [
        L.DROP_POLICY_DENIED,
        L.DROP_CT_TRUNCATED_OR_INVALID_HEADER,
        L.DROP_INVALID_PACKET,
    ]


def test_ipv6_fragments(unit_dp: UnitDatapath) -> None:
    unit_dp.dp.install_policy(
        UNIT_EP, Direction.INGRESS, EndpointPolicy(True, rules=(PolicyRule(400, 6, 80, 80, 1),))
    )
    seg = P.tcp(1000, 80, payload=bytes(40))
    first = P.frag_header(6, 0, True, 1234) + seg[:32]
    later = P.frag_header(6, 4, False, 1234) + seg[32:]
    assert unit_dp.ingress(P.v6(PEER6, ME6, 44, first)) == PASS
    assert unit_dp.ingress(P.v6(PEER6, ME6, 44, later)) == PASS
    orphan = P.frag_header(6, 4, False, 999) + seg[32:]
    assert unit_dp.ingress(P.v6(PEER6, ME6, 44, orphan)) == DROP
    tiny = P.frag_header(6, 0, True, 1235) + seg[:8]
    assert unit_dp.ingress(P.v6(PEER6, ME6, 44, tiny)) == DROP
    rs = reasons(unit_dp)
    assert [r[2] for r in rs[-2:]] == [
        L.DROP_FRAG_NOT_FOUND,
        L.DROP_CT_TRUNCATED_OR_INVALID_HEADER,
    ]


def test_drops_are_rate_limited_per_tuple_with_a_suppressed_count(unit_dp: UnitDatapath) -> None:
    import time

    unit_dp.dp.set_aggregation("medium", 5.0, drop_interval_s=0.3)
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    key = (Direction.INGRESS, Verdict.DROPPED, L.DROP_POLICY_DENIED)
    before = unit_dp.dp.read_metrics().get(key)
    for _ in range(5):
        assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(999, 80))) == DROP
    assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(998, 80))) == DROP  # another tuple
    time.sleep(0.35)
    assert unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(999, 80))) == DROP
    ev = unit_dp.events()
    assert [(int(e["sport"]), int(e["suppressed"])) for e in ev] == [(999, 0), (998, 0), (999, 4)]
    # every drop is counted in the metrics, reported or not
    after = unit_dp.dp.read_metrics()[key]
    assert after.packets - (before.packets if before else 0) == 7
    # level low reports every drop
    unit_dp.dp.set_aggregation("low", 5.0)
    for _ in range(3):
        unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(997, 80)))
    assert len(unit_dp.events()) == 3


def test_suppressed_drops_nobody_reported_are_swept(unit_dp: UnitDatapath) -> None:
    import time

    unit_dp.dp.set_aggregation("medium", 5.0, drop_interval_s=0.2)
    unit_dp.dp.install_policy(UNIT_EP, Direction.INGRESS, DENY_ALL)
    for _ in range(5):
        unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(996, 80)))
    assert len(unit_dp.events()) == 1
    assert len(unit_dp.dp.sweep_suppressed_drops()) == 0  # not due yet
    time.sleep(0.25)
    swept = unit_dp.dp.sweep_suppressed_drops()
    assert len(swept) == 1
    e = swept[0]
    assert int(e["suppressed"]) == 4 and int(e["flags"]) & L.EVF_SYNTHETIC
    assert int(e["drop_reason"]) == L.DROP_POLICY_DENIED and int(e["sport"]) == 996
    assert (int(e["src_identity"]), int(e["dst_identity"])) == (400, 300)
    assert int(e["attribution"]) == DENY_ALL.deny_attribution
    assert int(e["endpoint_id"]) == UNIT_EP and int(e["direction"]) == L.DIR_INGRESS
    assert len(unit_dp.dp.sweep_suppressed_drops()) == 0  # taken once
    unit_dp.ingress(P.v4(PEER, ME, 17, P.udp(996, 80)))  # reported at once again
    ev = unit_dp.events()
    assert len(ev) == 1 and int(ev[0]["suppressed"]) == 0


def test_run_statistics_for_benchmarks(unit_dp: UnitDatapath) -> None:
    before = unit_dp.dp.prog_stats()["from_pod"]
    with unit_dp.dp.enable_stats():
        for i in range(10):
            unit_dp.egress(syn(ME, PEER, 2000 + i, 80))
    after = unit_dp.dp.prog_stats()["from_pod"]
    assert after.run_cnt - before.run_cnt == 10
    assert after.run_time_ns > before.run_time_ns
    assert after.verified_insns > 0 and after.prog_id == before.prog_id
