"""Benchmark 3: Sensilla against iptables and ipset at 1, 100, 1,000 and 10,000 rules.

The same allow policy three ways, for the server pod's ingress, in the server's node
namespace (never the root namespace): N peers may reach it on TCP 5201 (iperf3) and
5300 (connection-rate server), the client being one of them (the last rule).

- iptables, as iptables-based NetworkPolicy controllers (kube-router, Calico in
  iptables mode) write it: FORWARD jumps to a per-pod chain for traffic out of the
  pod's host-side interface; the chain accepts ESTABLISHED,RELATED first, then one
  rule per peer address (`-s PEER/32 -p tcp -m multiport --dports … -j ACCEPT`),
  then DROP. New connections walk the rules; established ones do not.
- ipset: the same chain with one rule matching a hash:ip set of the N peers.
- sensilla: the datapath on the server's interface, the server's ingress enforced
  by N rules (one per peer identity and port), the ipcache holding the N peers; an
  event reader drains the flow events as the collector's would.
- none: nothing (reference);
- sensilla-quiet (diagnostic, not in smoke runs): Sensilla with no event reader, for
  connections per second only: what reading the events costs.

Figures per N: TCP connections per second (connect, 1-byte request and response,
close; bench/tools/crr.c) and iperf3 throughput, as ratios of Sensilla to iptables
and to ipset, measured in rounds that rotate the order of the four setups. Sensilla's
per-packet cost on this new-connection traffic (bpf_stats) at 10,000 vs 1 rules is
recorded too.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import procs
from bench.core import Context, Figure, Goal, Skip
from bench.datapath_bench import IPERF_PORT, _wait_port, iperf
from bench.labdp import CLIENT, SERVER, BenchLab, bench_lab

CRR_PORT = 5300
CHAIN = "SBE-POD-FW"
IPSET = "sbe-peers"
SETUPS = ("none", "iptables", "ipset", "sensilla")
QUIET = "sensilla-quiet"  # diagnostic: Sensilla with nobody reading its events
PEER_NET = ipaddress.IPv4Network("10.112.0.0/12")  # filler peers' addresses


def _peers(n: int, client_ip: str) -> list[str]:
    base = int(PEER_NET.network_address)
    return [str(ipaddress.IPv4Address(base + 1 + i)) for i in range(n - 1)] + [client_ip]


class Netfilter:
    """The iptables/ipset policy in one node namespace; remove() leaves nothing."""

    def __init__(self, netns: str, lxc: str, workdir: Path) -> None:
        self.netns = netns
        self.lxc = lxc
        self.workdir = workdir
        self.active = ""

    def _restore(self, lines: list[str]) -> None:
        path = self.workdir / "iptables.rules"
        path.write_text("\n".join(["*filter", *lines, "COMMIT", ""]))
        procs.run(["iptables-restore", "--noflush", str(path)], self.netns)

    def install(self, kind: str, peers: list[str]) -> None:
        self.remove()
        ports = f"{IPERF_PORT},{CRR_PORT}"
        lines = [
            f":{CHAIN} - [0:0]",
            f"-A FORWARD -o {self.lxc} -j {CHAIN}",
            f"-A {CHAIN} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        ]
        if kind == "iptables":
            lines += [
                f"-A {CHAIN} -s {p}/32 -p tcp -m multiport --dports {ports} -j ACCEPT"
                for p in peers
            ]
        else:
            path = self.workdir / "ipset.restore"
            path.write_text(
                "\n".join(
                    [f"create {IPSET} hash:ip family inet hashsize 16384 maxelem 131072"]
                    + [f"add {IPSET} {p}" for p in peers]
                )
                + "\n"
            )
            procs.run(["ipset", "restore", "-file", str(path)], self.netns)
            lines.append(
                f"-A {CHAIN} -m set --match-set {IPSET} src -p tcp -m multiport "
                f"--dports {ports} -j ACCEPT"
            )
        lines.append(f"-A {CHAIN} -j DROP")
        self.active = kind
        self._restore(lines)

    def remove(self) -> None:
        rules = procs.run(["iptables", "-S", "FORWARD"], self.netns)
        if f"-j {CHAIN}" in rules:
            procs.run(["iptables", "-D", "FORWARD", "-o", self.lxc, "-j", CHAIN], self.netns)
        chains = procs.run(["iptables", "-S"], self.netns)
        if f"-N {CHAIN}" in chains:
            procs.run(["iptables", "-F", CHAIN], self.netns)
            procs.run(["iptables", "-X", CHAIN], self.netns)
        sets = procs.run(["ipset", "list", "-n"], self.netns)
        if IPSET in sets.split():
            procs.run(["ipset", "destroy", IPSET], self.netns)
        self.active = ""


def crr(bl: BenchLab, seconds: float, threads: int) -> dict[str, float]:
    out = procs.run(
        [
            str(procs.tool("crr")),
            "client",
            bl.pod(SERVER).ipv4,
            str(CRR_PORT),
            str(seconds),
            str(threads),
        ],
        bl.pod(CLIENT).netns,
        timeout=seconds + 30,
    )
    data: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return data


class EventDrain:
    """Drains the server node's flow events in a thread, as the collector's reader
    would (stop() closes the rings: the programs then count no-reader failures)."""

    def __init__(self, bl: BenchLab) -> None:
        self.dp = bl.dp_of(SERVER)
        self.count = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        reader = self.dp.event_reader()
        self._stop.clear()

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    ev, _ = reader.poll(0.1)
                    self.count += len(ev)
            finally:
                reader.close()

        self._thread = threading.Thread(target=loop, name="sbe-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        self._thread = None


@contextmanager
def _drain(bl: BenchLab) -> Iterator[EventDrain]:
    d = EventDrain(bl)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def run(ctx: Context) -> None:
    for binary in ("iperf3", "iptables", "iptables-restore", "ipset", "cc"):
        if not shutil.which(binary):
            raise Skip(f"{binary} is not installed")
    sizes = ctx.pick((1, 100, 1000, 10_000), (1, 100, 1000, 10_000), (100,))
    rounds = ctx.pick(3, 2, 1)
    crr_s = ctx.pick(3.0, 1.5, 0.3)
    iperf_s = ctx.pick(3, 2, 0.5)
    threads = 2
    setups = SETUPS if ctx.smoke else (*SETUPS, QUIET)
    procs.tool("crr")
    cps: dict[tuple[str, int], list[float]] = {}
    gbps: dict[tuple[str, int], list[float]] = {}
    ns_pkt: dict[int, list[float]] = {}
    errors = 0
    with bench_lab(ctx.workdir) as bl:
        srv = bl.pod(SERVER)
        nf = Netfilter(srv.node.netns, srv.host_if, ctx.workdir)
        dp0 = next(iter(bl.dps.values()))
        try:
            with (
                dp0.enable_stats(),
                procs.running(["iperf3", "-s", "-p", str(IPERF_PORT)], srv.netns),
                procs.running([str(procs.tool("crr")), "server", str(CRR_PORT), "2"], srv.netns),
                _drain(bl) as events,
            ):
                _wait_port(bl, srv.ipv4, IPERF_PORT)
                _wait_port(bl, srv.ipv4, CRR_PORT)
                for n in sizes:
                    peers = _peers(n, bl.pod(CLIENT).ipv4)
                    installed_entries = 0
                    for r in range(rounds):
                        order = setups[r % len(setups) :] + setups[: r % len(setups)]
                        for setup in order:
                            nf.remove()
                            bl.use("none")
                            events.start()
                            if setup in ("iptables", "ipset"):
                                nf.install(setup, peers)
                            elif setup.startswith("sensilla"):
                                if setup == QUIET:
                                    events.stop()
                                if installed_entries != n:
                                    bl.install_allow(n, (IPERF_PORT, CRR_PORT))
                                    installed_entries = n
                                bl.use("sensilla", (SERVER,))
                            c0, t0 = bl.sensilla_stats()
                            res = crr(bl, crr_s, threads)
                            c1, t1 = bl.sensilla_stats()
                            errors += int(res["errors"])
                            g = iperf(bl, iperf_s, 0) if setup != QUIET else float("nan")
                            cps.setdefault((setup, n), []).append(float(res["rate"]))
                            gbps.setdefault((setup, n), []).append(g)
                            if setup == "sensilla" and c1 > c0:
                                ns_pkt.setdefault(n, []).append((t1 - t0) / (c1 - c0))
                            ctx.log(
                                f"N={n:<6d} round {r + 1}/{rounds} {setup:9s} "
                                f"{res['rate']:8.0f} conn/s ({res['errors']:.0f} errors)  "
                                f"{g:6.2f} Gbit/s"
                            )
                    nf.remove()
                    bl.use("none")
                ctx.note(f"flow events read while Sensilla ran: {events.count}")
        finally:
            nf.remove()
    if errors:
        ctx.note(f"{errors} connection attempts failed in total (timeouts or resets)")
    for n in sizes:
        for other in ("iptables", "ipset"):
            if other == "iptables" and n == 10_000:
                goal = Goal("ratio", ">=", 2.0)
            else:
                goal = Goal("ratio", ">=", 0.95, "ratio >= 0.95 (never slower, within noise)")
            ctx.record(
                Figure(
                    "iptables",
                    f"connections/s, {n:,} rules, sensilla vs {other}",
                    "conn/s",
                    cps[("sensilla", n)],
                    other,
                    cps[(other, n)],
                    paired=True,
                    goal=goal,
                )
            )
        for other in ("iptables", "ipset"):
            ctx.record(
                Figure(
                    "iptables",
                    f"iperf3 throughput, {n:,} rules, sensilla vs {other}",
                    "Gbit/s",
                    gbps[("sensilla", n)],
                    other,
                    gbps[(other, n)],
                    paired=True,
                    goal=Goal("ratio", ">=", 0.95, "ratio >= 0.95 (never slower, noise)"),
                )
            )
        if (QUIET, n) in cps:
            ctx.record(
                Figure(
                    "iptables",
                    f"connections/s, {n:,} rules, sensilla vs sensilla without event reader",
                    "conn/s",
                    cps[("sensilla", n)],
                    "no reader",
                    cps[(QUIET, n)],
                    paired=True,
                    note="diagnostic: the cost of reading the flow events (a thread of this "
                    "process drains them; the programs' perf output then succeeds)",
                )
            )
        ctx.record(
            Figure(
                "iptables",
                f"connections/s, {n:,} rules, iptables vs no rules",
                "conn/s",
                cps[("iptables", n)],
                "none",
                cps[("none", n)],
                paired=True,
                note="reference",
            )
        )
    lo, hi = min(sizes), max(sizes)
    if ns_pkt.get(lo) and ns_pkt.get(hi):
        ctx.record(
            Figure(
                "iptables",
                f"sensilla per-packet cost, new connections, {hi:,} vs {lo} rules",
                "ns",
                ns_pkt[hi],
                f"{lo} rule",
                ns_pkt[lo],
                paired=True,
                goal=Goal("ratio", "<=", 1.2),
            )
        )
