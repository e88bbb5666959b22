"""Issue 3 acceptance on the lab, with real packets: pods in namespaces x, y, z
(a, b, c each) on two nodes, one datapath per node attached to every lxc device.
Identities: one per pod; endpoint ids 1..9."""

from __future__ import annotations

import ipaddress
import socket
import subprocess

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
from sensilla.lab import netns as N
from tests.datapath.conftest import LabDatapath

pytestmark = pytest.mark.needs_root

DENY_ALL = EndpointPolicy(enforced=True, deny_attribution=42)


def all_pairs(ld: LabDatapath) -> list[tuple[str, str]]:
    keys = [p.key for p in ld.layout.pods]
    return [(s, d) for s in keys for d in keys if s != d]


def flush_neighbours(ld: LabDatapath) -> None:
    """Forget every ARP/ND entry, so the probes need neighbour resolution through
    the programs."""
    for ns in [p.netns for p in ld.layout.pods] + [n.netns for n in ld.layout.nodes]:
        subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{ns}", "ip", "neigh", "flush", "all"],
            check=True,
            capture_output=True,
        )


# 1 ----------------------------------------------------------------------


def test_no_policy_every_pair_connects(lab_dp: LabDatapath) -> None:
    flush_neighbours(lab_dp)
    pairs = all_pairs(lab_dp)
    assert len(pairs) == 72
    for proto in ("TCP", "UDP"):
        for family in (4, 6):
            res = lab_dp.probe_many(pairs, 80, proto, family)
            failed = [k for k, ok in res.items() if not ok]
            assert not failed, (proto, family, failed)
    # nothing was dropped anywhere; ARP and ND went through unharmed
    for dp in lab_dp.dps.values():
        drops = {k: v for k, v in dp.read_metrics().items() if k[1] == Verdict.DROPPED}
        assert not drops, drops


# 2 ----------------------------------------------------------------------


def test_enforced_endpoint_without_allows_drops_everything_but_its_node(
    lab_dp: LabDatapath,
) -> None:
    target = "x/a"
    lab_dp.install(target, Direction.INGRESS, DENY_ALL)
    lab_dp.open_readers()
    others = [p.key for p in lab_dp.layout.pods if p.key != target]
    pairs = [(o, target) for o in others]
    for proto in ("TCP", "UDP", "SCTP"):
        for family in (4, 6):
            res = lab_dp.probe_many(pairs, 80, proto, family, timeout=0.6)
            assert not any(res.values()), (proto, family, res)
    # ICMP echo
    pod = lab_dp.pod(target)
    for src in others[:1]:
        for addr in (pod.ipv4, pod.ipv6):
            assert not ping(lab_dp.pod(src).netns, addr)
    ev, _ = lab_dp.drain()
    mine = ev[ev["endpoint_id"] == lab_dp.endpoint_id[target]]
    drops = mine[mine["verdict"] == L.VERDICT_DROPPED]
    assert len(drops) > 0
    assert set(int(r) for r in drops["drop_reason"]) == {L.DROP_POLICY_DENIED}
    assert set(int(p) for p in drops["proto"]) >= {6, 17, 132, 1, 58}
    assert all(int(a) == 42 for a in drops["attribution"])
    # the other pods are unaffected
    assert lab_dp.probe("x/b", "y/b", 80)
    # its own node still reaches it (TCP from the node namespace); neighbour
    # resolution has to pass the enforced hook
    flush_neighbours(lab_dp)
    assert node_connects(lab_dp, pod.node.netns, pod.ipv4, 80)
    assert node_connects(lab_dp, pod.node.netns, pod.ipv6, 80)
    assert ping(pod.node.netns, pod.ipv4)


def ping(netns: str, addr: str) -> bool:
    six = ":" in addr
    r = subprocess.run(
        [
            "nsenter",
            f"--net=/var/run/netns/{netns}",
            "ping",
            "-6" if six else "-4",
            "-c",
            "1",
            "-W",
            "1",
            addr,
        ],
        capture_output=True,
    )
    return r.returncode == 0


def node_connects(ld: LabDatapath, netns: str, addr: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with N.entered(netns):
        s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect((addr, port))
        s.sendall(b"hello\n")
        return bool(s.recv(100))
    except OSError:
        return False
    finally:
        s.close()


# 3 ----------------------------------------------------------------------


def test_allow_entries_admit_exactly_what_they_name(lab_dp: LabDatapath) -> None:
    target = "x/a"
    ident = lab_dp.identity
    pol = EndpointPolicy(
        True,
        rules=(
            PolicyRule(ident["y/b"], 6, 80, 80, 1),  # identity + protocol + port
            PolicyRule(ident["z/c"], 17, 80, 81, 2),  # a port range
            PolicyRule(ident["y/c"], 0, 0, 65535, 3),  # any protocol
        ),
    )
    lab_dp.install(target, Direction.INGRESS, pol)
    others = [p.key for p in lab_dp.layout.pods if p.key != target]
    expect = {
        ("TCP", 80): {"y/b", "y/c"},
        ("TCP", 81): {"y/c"},
        ("UDP", 80): {"z/c", "y/c"},
        ("UDP", 81): {"z/c", "y/c"},
        ("SCTP", 80): {"y/c"},
    }
    for (proto, port), allowed in expect.items():
        for family in (4, 6):
            res = lab_dp.probe_many([(o, target) for o in others], port, proto, family, 0.6)
            got = {s for (s, _), ok in res.items() if ok}
            assert got == allowed, (proto, port, family)


def test_cidr_rule_on_pod_addresses_with_except(lab_dp: LabDatapath) -> None:
    target = "x/a"
    g = CIDR_GROUP_BASE + 7
    excluded = lab_dp.pod("y/b")
    pol = EndpointPolicy(
        True,
        rules=(PolicyRule(g, 6, 80, 80, 11),),
        cidrs=(
            CidrEntry(ipaddress.ip_network("10.244.0.0/16"), g),
            CidrEntry(ipaddress.ip_network(f"{excluded.ipv4}/32"), 0),
            CidrEntry(ipaddress.ip_network("fd00:10:244::/48"), g),
        ),
    )
    lab_dp.install(target, Direction.INGRESS, pol)
    others = [p.key for p in lab_dp.layout.pods if p.key != target]
    res4 = lab_dp.probe_many([(o, target) for o in others], 80, "TCP", 4, 0.6)
    assert {s for (s, _), ok in res4.items() if ok} == set(others) - {"y/b"}
    res6 = lab_dp.probe_many([(o, target) for o in others], 80, "TCP", 6, 0.6)
    assert all(res6.values())  # the except is IPv4 only
    res81 = lab_dp.probe_many([(o, target) for o in others], 81, "TCP", 4, 0.6)
    assert not any(res81.values())


def test_replies_pass_through_conntrack(lab_dp: LabDatapath) -> None:
    src = "x/a"
    lab_dp.install(
        src,
        Direction.EGRESS,
        EndpointPolicy(True, rules=(PolicyRule(lab_dp.identity["y/b"], 6, 80, 80, 1),)),
    )
    lab_dp.install(src, Direction.INGRESS, DENY_ALL)
    lab_dp.install(
        "y/b", Direction.INGRESS, EndpointPolicy(True, rules=(PolicyRule(0, 6, 80, 80, 2),))
    )
    lab_dp.install("y/b", Direction.EGRESS, DENY_ALL)
    flush_neighbours(lab_dp)  # ARP and ND must pass both enforced directions
    for family in (4, 6):
        assert lab_dp.probe(src, "y/b", 80, "TCP", family)  # replies come back in
        assert not lab_dp.probe("y/b", src, 80, "TCP", family, 0.6)
        assert not lab_dp.probe(src, "y/c", 80, "TCP", family, 0.6)
        assert not lab_dp.probe(src, "y/b", 81, "TCP", family, 0.6)


def test_spoofed_replies_to_a_denied_endpoint_are_dropped(lab_dp: LabDatapath) -> None:
    """y/b sends packets that look like replies (SYN-ACK, ACK, UDP from port 80)
    to x/a, which never opened a connection: x/a's ingress policy judges them."""
    from tests.datapath.rawsend import RawCapture, send_ip

    target, spoofer = lab_dp.pod("x/a"), lab_dp.pod("y/b")
    lab_dp.install("x/a", Direction.INGRESS, DENY_ALL)
    lab_dp.open_readers()
    from tests.datapath import packets as P

    with RawCapture(target.netns) as cap:
        for flags in (P.TCP_SYN | P.TCP_ACK, P.TCP_ACK, P.TCP_ACK | P.TCP_PSH, P.TCP_RST):
            send_ip(spoofer, P.ipv4(spoofer.ipv4, target.ipv4, 6, P.tcp(80, 45000, flags)))
        send_ip(spoofer, P.ipv4(spoofer.ipv4, target.ipv4, 17, P.udp(80, 45000)))
        send_ip(spoofer, P.ipv4(spoofer.ipv4, target.ipv4, 1, P.icmp(0, ident=45000)))
        got = cap.collect(0.5, lambda pkt: pkt.src == spoofer.ipv4)
    assert got == []
    ev, _ = lab_dp.drain()
    mine = ev[ev["endpoint_id"] == lab_dp.endpoint_id["x/a"]]
    drops = mine[mine["verdict"] == L.VERDICT_DROPPED]
    assert len(drops) >= 3
    assert set(int(r) for r in drops["drop_reason"]) == {L.DROP_POLICY_DENIED}


# 4 ----------------------------------------------------------------------


def test_audit_mode_forwards_would_be_drops(lab_dp: LabDatapath) -> None:
    lab_dp.install("x/a", Direction.INGRESS, EndpointPolicy(True, audit=True, deny_attribution=9))
    lab_dp.open_readers()
    for family in (4, 6):
        assert lab_dp.probe("y/b", "x/a", 80, "TCP", family)
        assert lab_dp.probe("y/b", "x/a", 81, "UDP", family)
    ev, _ = lab_dp.drain()
    mine = ev[ev["endpoint_id"] == lab_dp.endpoint_id["x/a"]]
    starts = mine[mine["reason"] == L.EV_START]
    assert len(starts) == 4
    assert all(int(v) == L.VERDICT_AUDIT for v in starts["verdict"])
    assert all(int(r) == L.DROP_POLICY_DENIED for r in starts["drop_reason"])
    assert not any(int(v) == L.VERDICT_DROPPED for v in mine["verdict"])
