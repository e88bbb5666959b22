"""Benchmarks 1 and 2: throughput with the datapath attached, and its per-packet cost.

One lab (client pod on the first node, server pod on the second), iperf3 TCP from
client to server across the nodes, in rounds; each round runs every configuration
once, in a rotating order:

- none: no program on the pods' interfaces (the throughput baseline);
- baseline: bench/progs/count.c, which only parses and counts (the per-packet
  baseline);
- sensilla, no policy: Sensilla's programs, nothing enforced (visibility only);
- sensilla, 1 entry: Sensilla's programs on both pods' interfaces, the client's
  egress and the server's ingress enforced by a policy allowing exactly this
  traffic;
- sensilla, 10,000 entries: the same with 9,999 more rules per direction (other
  identities, each with an ipcache entry).

Per-packet cost comes from bpf_stats (run_time_ns / run_cnt over the iperf3 run,
both hooks of both pods; a "packet" is an skb as TC sees it, GSO included), with
statistics on for every configuration alike. Established traffic takes
Sensilla's conntrack fast path; the cost of the policy lookup on new connections
is measured by the iptables benchmark (connections per second).
"""

from __future__ import annotations

import json
import time

from bench import procs
from bench.core import Context, Figure, Goal, Skip
from bench.labdp import CLIENT, SERVER, BenchLab, bench_lab

IPERF_PORT = 5201
CONFIGS = ("none", "baseline", "sensilla-0", "sensilla-1", "sensilla-10k")
ENTRIES = {"sensilla-0": 0, "sensilla-1": 1, "sensilla-10k": 10_000}


def _wait_port(bl: BenchLab, host: str, port: int, timeout: float = 10.0) -> None:
    import socket

    from sensilla.lab import netns as N

    def ok() -> bool:
        with N.entered(bl.pod(CLIENT).netns):
            s = socket.socket()
        s.settimeout(0.5)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    if not procs.wait_until(ok, timeout, 0.1):
        raise RuntimeError(f"nothing listens on {host}:{port}")


def iperf(bl: BenchLab, seconds: float, omit: int) -> float:
    """Gbit/s received by the server over one iperf3 run from client to server
    (seconds < 1: a transfer of that many quarter gigabytes instead, for smoke runs)."""
    srv = bl.pod(SERVER)
    argv = ["iperf3", "-c", srv.ipv4, "-p", str(IPERF_PORT), "-J"]
    if seconds >= 1:
        argv += ["-t", str(int(seconds))]
    else:
        argv += ["-n", f"{int(seconds * 256)}M"]
    if omit:
        argv += ["-O", str(omit)]
    out = procs.run(argv, bl.pod(CLIENT).netns, timeout=seconds + omit + 30)
    data = json.loads(out)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9


def apply(bl: BenchLab, config: str, entries_now: list[int]) -> float | None:
    """Switch to `config`; returns the seconds a policy install took, if any."""
    if config in ("none", "baseline"):
        bl.use(config)
        return None
    entries = ENTRIES[config]
    took = None
    if entries_now[0] != entries:
        t0 = time.monotonic()
        if entries == 0:
            bl.clear_policy()
        else:
            bl.install_allow(entries, (IPERF_PORT,))
        entries_now[0] = entries
        took = time.monotonic() - t0
    bl.use("sensilla")
    return took


def _test_run_ns(fd: int, packet: bytes, ifindex: int, repeat: int) -> float:
    from datapath import bpfsys
    from datapath.datapath import _skb_ctx

    return float(bpfsys.prog_test_run(fd, packet, ctx=_skb_ctx(ifindex), repeat=repeat).duration_ns)


PATHS = (
    ("arp", "ARP (parse, pass)"),
    ("fwd", "established, forward packet, policy enforced"),
    ("reply", "established, reply packet"),
    ("fwd-unenforced", "established, forward packet, no policy"),
    ("new", "new connection (identity, policy, conntrack insert, START event)"),
)


def program_paths(bl: BenchLab, ctx: Context, entries: int) -> dict[str, list[float]]:
    """ns per run of Sensilla's to_pod/from_pod on crafted packets of one connection
    (BPF_PROG_TEST_RUN with a repeat count), and of the baseline on the same packet."""
    from datapath.types import Direction, EndpointPolicy
    from sensilla.lab import netns as N
    from tests.datapath import packets as P

    repeat = ctx.pick(200_000, 50_000, 5_000)
    reps = ctx.pick(5, 3, 1)
    cli, srv = bl.pod(CLIENT), bl.pod(SERVER)
    dp = bl.dp_of(SERVER)
    ifi = bl.ifindex[SERVER]
    progs = dp._p.progs
    assert bl.baseline is not None
    base_fd = bl.baseline.progs["to_pod"][0]
    fwd = P.v4(cli.ipv4, srv.ipv4, 6, P.tcp(40000, IPERF_PORT, P.TCP_ACK, b"x" * 64))
    syn = P.v4(cli.ipv4, srv.ipv4, 6, P.tcp(40000, IPERF_PORT, P.TCP_SYN))
    reply = P.v4(srv.ipv4, cli.ipv4, 6, P.tcp(IPERF_PORT, 40000, P.TCP_ACK, b"y" * 64))
    out: dict[str, list[float]] = {}
    bl.install_allow(entries, (IPERF_PORT,))
    with N.entered(srv.node.netns):
        dp.flush_conntrack()
        for _ in range(reps):
            out.setdefault("baseline", []).append(_test_run_ns(base_fd, fwd, ifi, repeat))
            out.setdefault("arp", []).append(_test_run_ns(progs["to_pod"], P.arp(), ifi, repeat))
            dp.test_run("to_pod", syn, ifi)  # the connection, allowed by the policy
            out.setdefault("fwd", []).append(_test_run_ns(progs["to_pod"], fwd, ifi, repeat))
            out.setdefault("reply", []).append(_test_run_ns(progs["from_pod"], reply, ifi, repeat))
            # new connections: with a 1 ns SYN timeout every run finds its entry
            # expired, deletes it and judges the SYN as a new connection (policy,
            # conntrack insert, START event): a new connection plus one delete
            dp.set_conntrack_timeouts(tcp_syn_s=1e-9)
            out.setdefault("new", []).append(_test_run_ns(progs["to_pod"], syn, ifi, repeat))
            dp.set_conntrack_timeouts(tcp_syn_s=60.0)
            dp.flush_conntrack()
        dp.install_policy(bl.endpoint_id[SERVER], Direction.INGRESS, EndpointPolicy(enforced=False))
        dp.test_run("to_pod", fwd, ifi)  # rechecked once under the new generation
        dp.test_run("to_pod", syn, ifi)
        dp.test_run("to_pod", fwd, ifi)
        for _ in range(reps):
            out.setdefault("fwd-unenforced", []).append(
                _test_run_ns(progs["to_pod"], fwd, ifi, repeat)
            )
        dp.flush_conntrack()
    bl.install_allow(entries, (IPERF_PORT,))
    return out


def run(ctx: Context) -> None:
    import shutil

    if not shutil.which("iperf3"):
        raise Skip("iperf3 is not installed")
    rounds = ctx.pick(5, 3, 1)
    seconds = ctx.pick(4, 2, 0.5)
    omit = ctx.pick(1, 1, 0)
    gbps: dict[str, list[float]] = {c: [] for c in CONFIGS}
    ns_pkt: dict[str, list[float]] = {c: [] for c in CONFIGS}
    pkts: dict[str, list[float]] = {c: [] for c in CONFIGS}
    with bench_lab(ctx.workdir) as bl:
        dp = next(iter(bl.dps.values()))
        with (
            dp.enable_stats(),
            procs.running(["iperf3", "-s", "-p", str(IPERF_PORT)], bl.pod(SERVER).netns),
        ):
            _wait_port(bl, bl.pod(SERVER).ipv4, IPERF_PORT)
            entries_now = [-1]
            installs: list[float] = []
            for r in range(rounds):
                order = CONFIGS[r % len(CONFIGS) :] + CONFIGS[: r % len(CONFIGS)]
                for config in order:
                    took = apply(bl, config, entries_now)
                    if took is not None and config == "sensilla-10k":
                        installs.append(took)
                    c0, t0 = bl.stats()
                    g = iperf(bl, seconds, omit)
                    c1, t1 = bl.stats()
                    gbps[config].append(g)
                    if c1 > c0:
                        ns_pkt[config].append((t1 - t0) / (c1 - c0))
                        pkts[config].append(float(c1 - c0))
                    ctx.log(
                        f"round {r + 1}/{rounds} {config:13s} {g:6.2f} Gbit/s"
                        + (f"  {(t1 - t0) / (c1 - c0):6.0f} ns/pkt" if c1 > c0 else "")
                    )
            bl.use("none")
            paths = {n: program_paths(bl, ctx, n) for n in (1, 10_000)}
            if installs:
                ctx.note(
                    f"installing 10,000 entries per direction took {_med(installs, 2)} s "
                    "(median, both directions)"
                )
    tput = "iperf3 TCP across nodes"
    ctx.record(
        Figure(
            "datapath",
            f"{tput}, allow policy (1 entry)",
            "Gbit/s",
            gbps["sensilla-1"],
            "no program",
            gbps["none"],
            paired=True,
            goal=Goal("ratio", ">=", 0.95),
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{tput}, 10,000 policy entries",
            "Gbit/s",
            gbps["sensilla-10k"],
            "no program",
            gbps["none"],
            paired=True,
            goal=Goal("ratio", ">=", 0.95),
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{tput}, no policy (visibility only)",
            "Gbit/s",
            gbps["sensilla-0"],
            "no program",
            gbps["none"],
            paired=True,
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{tput}, parse-and-count program",
            "Gbit/s",
            gbps["baseline"],
            "no program",
            gbps["none"],
            paired=True,
            note="reference: what the cheapest TC program costs",
        )
    )
    _record_paths(ctx, paths)
    pp = "per-packet cost (bpf_stats, iperf3)"
    ctx.record(
        Figure(
            "datapath",
            f"{pp}, 1 entry",
            "ns",
            ns_pkt["sensilla-1"],
            "parse-and-count",
            ns_pkt["baseline"],
            paired=True,
            goal=Goal("ratio", "<=", 2.0),
            note=f"skbs per run: {_med(pkts['sensilla-1'])}",
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{pp}, 10,000 entries",
            "ns",
            ns_pkt["sensilla-10k"],
            "parse-and-count",
            ns_pkt["baseline"],
            paired=True,
            goal=Goal("ratio", "<=", 2.0),
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{pp}, no policy",
            "ns",
            ns_pkt["sensilla-0"],
            "parse-and-count",
            ns_pkt["baseline"],
            paired=True,
            note="diagnostic: established path without the policy generation check",
        )
    )
    ctx.record(
        Figure(
            "datapath",
            f"{pp}, 10,000 vs 1 entry",
            "ns",
            ns_pkt["sensilla-10k"],
            "1 entry",
            ns_pkt["sensilla-1"],
            paired=True,
            goal=Goal("ratio", "<=", 1.2),
        )
    )


def _record_paths(ctx: Context, paths: dict[int, dict[str, list[float]]]) -> None:
    for entries, got in paths.items():
        for key, label in PATHS:
            if key == "new" or entries == 1:
                ctx.record(
                    Figure(
                        "datapath",
                        f"program cost (test_run), {label}"
                        + (f", {entries:,} entries" if key == "new" else ""),
                        "ns",
                        got[key],
                        "parse-and-count",
                        got["baseline"],
                        paired=True,
                        note="diagnostic: where the per-packet cost goes",
                    )
                )


def _med(xs: list[float], digits: int = 0) -> str:
    from bench.core import median

    m = median(xs)
    return f"{m:.{digits}f}" if m is not None else "-"
