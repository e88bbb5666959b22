"""Benchmark 7 (and 9): from a packet on a lab veth to the flow at an
`observe --follow` client of the relay, p50 and p99.

A lab with a relay (chDB) and a collector per node, default settings (aggregation
medium: a new connection is one START event at each endpoint it crosses). Two
`sensilla observe -f -o json` processes follow the client pod's UDP flows: one on
the relay (what is measured) and one on the client node's collector (its local
Observer: the baseline, without shipping, storing and fanning out). At random idle
moments (50-250 ms apart) the client pod sends one UDP datagram to a new port of the
server pod; each trial's latency is the time from send() to the first line of that
flow (seen at the client's node) on each follower's stdout. The trials are cut into
3 runs (full mode); each figure is the median of the runs' percentiles, paired with
the collector's in the same run. A note gives the relay's store writes over the
trials (count, mean, how many took over 0.5 s and 1 s).

Collector and relay peak RSS (VmHWM) over the run are recorded too.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import procs
from bench.core import PREFIX, ROOT, Context, Figure, Goal, percentile

PORT_BASE = 20000


class Follower:
    """`sensilla observe -f -o json` on one server; arrival time of each flow's first
    line by (node, destination port)."""

    def __init__(self, server: str, args: list[str], log: Path) -> None:
        argv = [
            sys.executable,
            "-m",
            "sensilla.cli.main",
            "observe",
            "--server",
            server,
            "--insecure",  # the lab's plaintext links (loopback, management)
            "-f",
            "-o",
            "json",
            *args,
        ]
        self.arrivals: dict[tuple[str, int], float] = {}
        self.lines = 0
        self.log = log
        self._err = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = procs.Proc(
            argv,
            stdout=subprocess.PIPE,
            stderr=self._err,
            env={"PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        out = self.proc.popen.stdout
        assert out is not None
        for raw in out:
            now = time.monotonic()
            self.lines += 1
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            flow = data.get("flow") or {}
            udp = (flow.get("l4") or {}).get("UDP") or {}
            port = int(udp.get("destination_port") or 0)
            if port:
                self.arrivals.setdefault((flow.get("node_name", ""), port), now)

    def stop(self) -> None:
        self.proc.stop()
        self.thread.join(5)
        self._err.close()

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""


WRITE_HIST = "sensilla_relay_store_write_seconds"


def _slow_writes(h0: dict[float, float], h1: dict[float, float]) -> str:
    """How many store writes over the trials took longer than 0.5 and 1 s."""
    total = h1.get(float("inf"), 0.0) - h0.get(float("inf"), 0.0)
    parts = []
    for limit in (0.5, 1.0):
        les = [le for le in h1 if le >= limit]
        if not les or not total:
            continue
        le = min(les)
        within = h1.get(le, 0.0) - h0.get(le, 0.0)
        parts.append(f"{total - within:.0f} took over {le:g} s")
    return ("; store writes: " + ", ".join(parts)) if parts else ""


def _relay_breakdown(m0: dict[str, float], m1: dict[str, float]) -> str:
    """Where the relay's part of the latency goes, from its metrics over the trials."""

    def mean(name: str) -> float:
        n = m1.get(f"{name}_count", 0.0) - m0.get(f"{name}_count", 0.0)
        s = m1.get(f"{name}_sum", 0.0) - m0.get(f"{name}_sum", 0.0)
        return s / n if n else 0.0

    def delta(name: str) -> float:
        return m1.get(f"{name}_count", 0.0) - m0.get(f"{name}_count", 0.0)

    return (
        f"relay over the trials: {delta('sensilla_relay_store_write_seconds'):.0f} store "
        f"writes, {mean('sensilla_relay_store_write_seconds') * 1000:.0f} ms each on average "
        f"({mean('sensilla_relay_store_write_flows'):.1f} flows per write); batch received "
        f"-> acked {mean('sensilla_relay_batch_latency_seconds') * 1000:.0f} ms on average"
    )


def run(ctx: Context) -> None:
    from bench.labdp import CLIENT, SERVER, spec, write_spec
    from sensilla.lab import Options, temporary_lab
    from sensilla.lab import netns as N
    from sensilla.lab.processes import list_processes

    trials = ctx.pick(450, 200, 15)  # in 3, 2, 1 runs
    spec_path = write_spec(ctx.workdir / "e2e-spec.yaml", spec())
    options = Options(relay=True, collectors=True, relay_args=["--metrics", "127.0.0.1:0"])
    with temporary_lab(PREFIX, spec_path, options) as lab:
        layout = lab.layout()
        desc = lab.description()
        cli, srv = layout.pod(CLIENT), layout.pod(SERVER)
        node = cli.node.name
        pids = {p.name: p.pid for p in list_processes(lab.dir)}
        watched = {"relay": pids["relay"]}
        for n in layout.nodes:
            watched[f"collector ({n.short})"] = pids[f"collector-{n.name}"]
        for pid in watched.values():
            procs.reset_peak_rss(pid)
        filters = ["--from-pod", CLIENT, "--protocol", "udp"]
        relay_f = Follower(desc["relay"]["address"], filters, ctx.workdir / "observe-relay.log")
        local_f = Follower(cli.node.observer_address, filters, ctx.workdir / "observe-local.log")
        try:
            with N.entered(cli.netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                # warm-up: both followers see flows before the clock runs
                port = PORT_BASE - 1
                warm: set[tuple[str, int]] = set()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    sock.sendto(b"w", (srv.ipv4, port))
                    warm.add((node, port))
                    time.sleep(0.3)
                    if warm & set(relay_f.arrivals) & set(local_f.arrivals):
                        break
                    port -= 1
                else:
                    raise RuntimeError(
                        "followers saw no flow: relay "
                        f"{relay_f.tail()!r}, collector {local_f.tail()!r}"
                    )
                time.sleep(1.0)  # the warm-up's flows drain
                m0 = procs.scrape(desc["relay"]["metrics"])
                h0 = procs.histogram(desc["relay"]["metrics"], WRITE_HIST)
                sent: dict[int, float] = {}
                for i in range(trials):
                    time.sleep(random.uniform(0.05, 0.25))
                    port = PORT_BASE + i
                    sent[port] = time.monotonic()
                    sock.sendto(b"x", (srv.ipv4, port))
                procs.wait_until(lambda: all((node, p) in relay_f.arrivals for p in sent), 10, 0.1)
                m1 = procs.scrape(desc["relay"]["metrics"])
                h1 = procs.histogram(desc["relay"]["metrics"], WRITE_HIST)
            finally:
                sock.close()
        finally:
            relay_f.stop()
            local_f.stop()
        peaks = {k: procs.peak_rss_bytes(pid) for k, pid in watched.items()}
    runs = ctx.pick(3, 2, 1)
    ports = list(sent)
    per_run = max(1, len(ports) // runs)
    groups = [ports[i * per_run : (i + 1) * per_run] for i in range(runs)]

    def lat(f: Follower, group: list[int]) -> list[float]:
        return [(f.arrivals[(node, p)] - sent[p]) * 1000 for p in group if (node, p) in f.arrivals]

    lat_relay = lat(relay_f, ports)
    ctx.note(_relay_breakdown(m0, m1) + _slow_writes(h0, h1))
    missing = len(sent) - len(lat_relay)
    if missing:
        ctx.note(f"{missing} of {len(sent)} trials never reached the relay's follower")
    for q in (50, 99):
        ctx.record(
            Figure(
                "e2e",
                f"packet on a veth -> observe --follow client of the relay, p{q}",
                "ms",
                [percentile(lat(relay_f, g), q) or 0.0 for g in groups],
                f"p{q} at the collector's own Observer",
                [percentile(lat(local_f, g), q) or 0.0 for g in groups],
                paired=True,
                goal=Goal("value", "<=", 1000.0, "p99 <= 1 s") if q == 99 else None,
                note=f"{runs} runs of {per_run} trials; p{q} over all "
                f"{len(lat_relay)}: {percentile(lat_relay, q) or 0:.0f} ms; "
                f"max {max(lat_relay, default=0):.0f} ms",
            )
        )
    for who, peak in peaks.items():
        ctx.record(Figure("e2e", f"{who} peak RSS during the run", "MiB", [peak / 2**20]))
