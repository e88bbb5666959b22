"""Issue 3 acceptance on the lab: atomic swaps under load (5), SIGKILL and
restart (6), malformed packets (7), detach and unload (8), refusing a busy hook."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from datapath import Datapath, HookBusyError, LoadResult
from datapath import layout as L
from datapath.types import Direction, EndpointPolicy, PolicyRule, Verdict
from tests.datapath import packets as P
from tests.datapath.conftest import lab_datapath
from tests.datapath.echo import TcpServer, connect, exchange
from tests.datapath.labdp import LabDatapath, node_name
from tests.datapath.rawsend import RawCapture, send_ip

pytestmark = pytest.mark.needs_root

REPO = Path(__file__).resolve().parents[2]
DENY_ALL = EndpointPolicy(enforced=True)


# 5 ----------------------------------------------------------------------


def test_500_swaps_under_continuous_probing(lab_dp: LabDatapath) -> None:
    ident = lab_dp.identity
    target = "x/a"
    set_a = EndpointPolicy(
        True,
        rules=(PolicyRule(ident["y/b"], 6, 80, 80, 1), PolicyRule(ident["z/c"], 6, 80, 80, 2)),
    )
    set_b = EndpointPolicy(
        True,
        rules=(PolicyRule(ident["y/b"], 6, 80, 80, 1), PolicyRule(ident["y/c"], 6, 80, 80, 3)),
    )
    both_allowed = [("y/b", target)]
    both_denied = [("z/a", target), ("z/b", target), ("x/b", target), ("y/a", target)]
    lab_dp.install(target, Direction.INGRESS, set_a)
    stop = threading.Event()
    stats = {"allowed_ok": 0, "allowed_failed": 0, "denied_ok": 0, "denied_refused": 0}
    failures: list[str] = []

    def probe_allowed() -> None:
        fam = 4
        while not stop.is_set():
            res = lab_dp.probe_many(both_allowed * 4, 80, "TCP", fam, timeout=1.0)
            for k, ok in res.items():
                stats["allowed_ok" if ok else "allowed_failed"] += 1
                if not ok:
                    failures.append(f"allowed pair {k} failed (IPv{fam})")
            fam = 10 - fam

    def probe_denied() -> None:
        fam = 4
        while not stop.is_set():
            res = lab_dp.probe_many(both_denied, 80, "TCP", fam, timeout=0.15)
            for k, ok in res.items():
                stats["denied_ok" if ok else "denied_refused"] += 1
                if ok:
                    failures.append(f"denied pair {k} connected (IPv{fam})")
            fam = 10 - fam

    threads = [threading.Thread(target=probe_allowed), threading.Thread(target=probe_denied)]
    for t in threads:
        t.start()
    try:
        for i in range(500):
            lab_dp.install(target, Direction.INGRESS, set_b if i % 2 == 0 else set_a)
            time.sleep(0.004)
    finally:
        stop.set()
        for t in threads:
            t.join()
    print(f"swap test: {stats}")
    assert not failures, failures[:10]
    assert stats["allowed_ok"] > 100 and stats["denied_refused"] > 20


# 6 ----------------------------------------------------------------------


def test_sigkill_of_the_loader_keeps_enforcement_and_conntrack() -> None:
    from sensilla.lab import Options, temporary_lab

    with temporary_lab("sdp", options=Options(relay=False, collectors=False)) as lab:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.datapath.loader_proc", lab.name],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        ld = LabDatapath(lab, lab.layout())
        server = None
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert set(first["load"].values()) <= {"loaded", "replaced"}
            # this process uses the same pins (nothing compiled)
            for node in ld.layout.nodes:
                dp = Datapath.open(node_name("sdp", lab.name, node.short), netns=node.netns)
                ld.dps[node.short] = dp
                assert dp.ensure_loaded() == LoadResult.REUSED
            for i, p in enumerate(ld.layout.pods):
                ld.identity[p.key] = 256 + i
                ld.endpoint_id[p.key] = 1 + i
            ident = ld.identity
            # x/a may only talk to y/b on 80 and 7000; nothing may reach x/a
            ld.install(
                "x/a",
                Direction.EGRESS,
                EndpointPolicy(
                    True,
                    rules=(
                        PolicyRule(ident["y/b"], 6, 80, 80, 1),
                        PolicyRule(ident["y/b"], 6, 7000, 7000, 2),
                    ),
                ),
            )
            ld.install("x/a", Direction.INGRESS, DENY_ALL)
            server = TcpServer(ld.pod("y/b").netns, 7000)
            conn = connect(ld.pod("x/a").netns, ld.pod("y/b").ipv4, 7000)
            assert exchange(conn)
            before = {
                k.sport: (e.created_ns, e.generation)
                for k, e in ld.dp_of("x/a").conntrack()
                if k.dport == 7000
            }
            assert len(before) == 1
            progs_before = {k: dp.prog_stats()["from_pod"].prog_id for k, dp in ld.dps.items()}

            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

            assert exchange(conn, b"after the kill")  # replies still pass via conntrack
            assert ld.probe("x/a", "y/b", 80)
            assert not ld.probe("y/b", "x/a", 80, timeout=0.5)
            assert not ld.probe("x/a", "y/c", 80, timeout=0.5)
            assert not ld.probe("x/a", "y/b", 81, timeout=0.5)

            # restart: a new process re-opens the pins, attaches, compiles nothing
            again = subprocess.run(
                [sys.executable, "-m", "tests.datapath.loader_proc", lab.name, "--once"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert again.returncode == 0, again.stderr
            second = json.loads(again.stdout.splitlines()[-1])
            assert set(second["load"].values()) == {"reused"}
            assert not any(second["attach_changed"].values())
            after = {
                k.sport: (e.created_ns, e.generation)
                for k, e in ld.dp_of("x/a").conntrack()
                if k.dport == 7000
            }
            assert after == before  # conntrack not flushed
            progs_after = {k: dp.prog_stats()["from_pod"].prog_id for k, dp in ld.dps.items()}
            assert progs_after == progs_before
            assert exchange(conn, b"after the restart")
            assert not ld.probe("y/b", "x/a", 80, timeout=0.5)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            if server is not None:
                server.close()
            ld.teardown()


# 7 ----------------------------------------------------------------------


def test_malformed_packets_never_pass_where_policy_denies(lab_dp: LabDatapath) -> None:
    src, dst, other = lab_dp.pod("x/a"), lab_dp.pod("y/b"), lab_dp.pod("z/a")
    ident = lab_dp.identity
    lab_dp.install(
        "x/a",
        Direction.EGRESS,
        EndpointPolicy(
            True,
            rules=(PolicyRule(ident["y/b"], 6, 80, 80, 1), PolicyRule(ident["y/b"], 17, 80, 80, 2)),
        ),
    )
    dp = lab_dp.dp_of("x/a")
    s4, d4, o4 = src.ipv4, dst.ipv4, other.ipv4
    s6, d6 = src.ipv6, dst.ipv6
    tcp80 = P.tcp(40000, 80)
    malformed = [
        P.ipv4(s4, d4, 6, tcp80)[:10],  # truncated IPv4 header
        P.ipv4(s4, d4, 6, tcp80, ihl=4),  # IHL below 5
        P.ipv4(s4, d4, 6, tcp80, ihl=15),  # IHL past the packet
        P.ipv4(s4, d4, 6, tcp80, total_length=1400),  # longer than the frame
        P.ipv4(s4, d4, 6, tcp80[:12]),  # truncated TCP header
        P.ipv4(s4, d4, 6, P.tcp(40000, 80, doff=3)),  # bad TCP data offset
        P.ipv4(s4, d4, 17, P.udp(40000, 80)[:6]),  # truncated UDP header
        P.ipv4(s4, o4, 6, P.tcp(40000, 80)),  # well formed, denied peer
        P.ipv4(s4, d4, 6, P.tcp(40000, 81)),  # well formed, denied port
        P.ipv6(s6, d6, 6, tcp80)[:30],  # truncated IPv6 header
        P.ipv6(s6, d6, 6, tcp80, payload_length=1000),  # payload length past the frame
        P.ipv6(s6, d6, 60, b"".join(P.ext_header(60) for _ in range(11)) + P.ext_header(6) + tcp80),
        P.ipv6(s6, d6, 0, b"\x3c\x05"),  # truncated extension header
        P.ipv4(s4, d4, 6, tcp80[:8], ident=7, more_fragments=True),  # tiny first fragment
        P.ipv4(s4, d4, 6, bytes(24), ident=8, frag_offset=2),  # no first fragment
        P.ipv6(s6, d6, 44, P.frag_header(6, 0, True, 9) + tcp80[:8]),  # tiny, IPv6
        P.ipv6(s6, d6, 44, P.frag_header(6, 3, False, 10) + bytes(16)),  # no first, IPv6
    ]
    # a well-formed first fragment to an allowed port, then an overlapping one
    # (RFC 1858) that would rewrite the header: the first passes, the second not
    first = P.ipv4(s4, d4, 6, P.tcp(40001, 80, payload=bytes(16)), ident=11, more_fragments=True)
    overlap = P.ipv4(s4, d4, 6, P.tcp(40001, 81)[:16], ident=11, frag_offset=1)

    def counts() -> tuple[int, int]:
        m = dp.read_metrics()
        fwd = sum(
            v.packets for k, v in m.items() if k[0] == Direction.EGRESS and k[1] != Verdict.DROPPED
        )
        drop = sum(
            v.packets for k, v in m.items() if k[0] == Direction.EGRESS and k[1] == Verdict.DROPPED
        )
        return fwd, drop

    fwd0, drop0 = counts()
    with RawCapture(dst.netns) as cap_d, RawCapture(other.netns) as cap_o:
        for _ in range(20):  # repeated: nothing accumulates into a pass
            send_ip(src, *malformed)
        send_ip(src, first, overlap)
        got = cap_d.collect(0.5, lambda c: c.src in (s4, s6)) + cap_o.collect(
            0.05, lambda c: c.src in (s4, s6)
        )
    fwd1, drop1 = counts()
    assert fwd1 - fwd0 == 1  # the legitimate first fragment, nothing else
    assert drop1 - drop0 == 20 * len(malformed) + 1
    assert [c.src for c in got] == [s4]  # only that fragment arrived
    # the program still works
    assert lab_dp.probe("x/a", "y/b", 80, "TCP", 4)
    assert lab_dp.probe("x/a", "y/b", 80, "TCP", 6)
    assert not lab_dp.probe("x/a", "y/b", 81, "TCP", 4, timeout=0.5)
    reasons = {k[2] for k in dp.read_metrics() if k[1] == Verdict.DROPPED}
    assert reasons >= {
        L.DROP_INVALID_PACKET,
        L.DROP_CT_TRUNCATED_OR_INVALID_HEADER,
        L.DROP_INVALID_IPV6_EXTENSION_HEADER,
        L.DROP_FRAG_NOT_FOUND,
        L.DROP_POLICY_DENIED,
    }


# 8 ----------------------------------------------------------------------


def _tc_state(netns: str, dev: str) -> str:
    out = []
    for what in (
        ["qdisc", "show", "dev", dev],
        ["filter", "show", "dev", dev, "ingress"],
        ["filter", "show", "dev", dev, "egress"],
    ):
        r = subprocess.run(
            ["nsenter", f"--net=/var/run/netns/{netns}", "tc", *what],
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(r.stdout)
    return "".join(out)


def test_detach_and_unload_leave_nothing() -> None:
    with lab_datapath() as ld:
        pods = list(ld.layout.pods)
        for p in pods:
            state = _tc_state(p.node.netns, p.host_if)
            assert "clsact" in state and "sensilla:" in state
        # detach one device: its filters and qdisc go, the others stay
        one = pods[0]
        assert ld.dp_of(one.key).detach(one.host_if)
        assert "clsact" not in _tc_state(one.node.netns, one.host_if)
        assert "sensilla:" not in _tc_state(one.node.netns, one.host_if)
        assert not ld.dp_of(one.key).detach(one.host_if)  # twice is fine
        dirs = [dp.pin_dir for dp in ld.dps.values()]
        assert all(d.exists() for d in dirs)
        for dp in ld.dps.values():
            dp.unload()
        for p in pods:
            state = _tc_state(p.node.netns, p.host_if)
            assert "clsact" not in state and "filter" not in state and "bpf" not in state
        assert not any(d.exists() for d in dirs)


def test_attach_refuses_a_hook_held_by_another_program(lab_dp: LabDatapath) -> None:
    p = lab_dp.pod("z/c")
    dp = lab_dp.dp_of("z/c")
    assert dp.detach(p.host_if)
    ns = ["nsenter", f"--net=/var/run/netns/{p.node.netns}"]
    subprocess.run([*ns, "tc", "qdisc", "add", "dev", p.host_if, "clsact"], check=True)
    try:
        subprocess.run(
            [
                *ns,
                "tc",
                "filter",
                "add",
                "dev",
                p.host_if,
                "egress",
                "prio",
                "5",
                "protocol",
                "all",
                "u32",
                "match",
                "u32",
                "0",
                "0",
            ],
            check=True,
        )
        with pytest.raises(HookBusyError, match="egress"):
            dp.attach(p.host_if)
        state = _tc_state(p.node.netns, p.host_if)
        assert "u32" in state and "sensilla:" not in state
    finally:
        subprocess.run([*ns, "tc", "qdisc", "del", "dev", p.host_if, "clsact"], check=False)
        dp.attach(p.host_if)
    assert lab_dp.probe("x/a", "z/c", 80)


def test_a_changed_source_is_recompiled_and_reattached_in_place() -> None:
    """Pins of another source (an upgrade): ensure_loaded compiles and re-pins
    (REPLACED); the old programs keep forwarding until attach replaces them."""
    import ctypes

    from datapath import loader

    with lab_datapath() as ld:
        node = ld.layout.nodes[0]
        dp = ld.dps[node.short]
        meta = loader.read_meta(dp._p.meta)
        meta.source_hash[0] ^= 0xFF  # pretend the pins came from other sources
        dp._p.meta.update(ctypes.c_uint32(loader.META_LOAD), meta)
        old_id = dp.prog_stats()["from_pod"].prog_id
        dp.close()
        fresh = Datapath.open(dp.node_name, netns=node.netns)
        ld.dps[node.short] = fresh
        assert fresh.ensure_loaded() == LoadResult.REPLACED
        assert fresh.prog_stats()["from_pod"].prog_id != old_id
        pods = [p for p in ld.layout.pods if p.node is node]
        # old filters still run the old programs: traffic flows meanwhile
        assert ld.probe(pods[0].key, pods[1].key, 80)
        fresh.sync_ipcache(ld.ipcache_for(node))
        for p in pods:
            from datapath.types import EndpointInfo

            fresh.set_endpoint(
                EndpointInfo(ld.ifindex[p.key], ld.endpoint_id[p.key], ld.identity[p.key])
            )
            assert fresh.attach(p.host_if)  # replaced in place
            assert not fresh.attach(p.host_if)
        assert ld.probe(pods[0].key, pods[1].key, 80)
        state = _tc_state(node.netns, pods[0].host_if)
        new_id = fresh.prog_stats()["from_pod"].prog_id
        assert re.search(rf"from_pod:{new_id}\b", state)
        assert not re.search(rf"from_pod:{old_id}\b", state)
