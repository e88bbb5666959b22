"""Benchmark 4 (and 9): the flow-event pipeline, stage by stage, ramped until loss.

Events are made in the kernel: a producer process (bench/producer.py) runs
Sensilla's TC program with BPF_PROG_TEST_RUN and a repeat count on a crafted UDP
packet of an allowed connection at aggregation level `none` (one event per run),
paced at a chosen rate. Real senders top out near 200k packets/s on two cores;
the producer reaches millions.

In-process stages (a unit datapath on the loopback device, nothing attached), each
the pipeline truncated after that stage, reading every CPU's perf ring:

- ceiling: a reader that only counts perf samples (moves the ring's tail);
- read+decode: the datapath's EventReader (numpy records), as the collector uses it;
- +enrichment: collector.flows.builder.build_flows (Hubble Flow messages, endpoints
  from a Directory, policy attribution);
- +protobuf: each flow serialized and put into ingest batches (wire.encode_batch).

End to end: a lab with a relay (chDB) and one `sensilla collector` per node at
level `none`; the producer runs the client node's pinned from_pod program; a rate
passes if the collector reports no lost event and the relay acknowledged every
flow within a grace period.

Each stage is ramped over increasing rates (a few seconds each) until the first
loss; its figure is the highest rate without loss (full mode bisects once more),
against the ceiling's. Collector and relay peak RSS (VmHWM) during the end-to-end
ramp are figures too, and a py-spy profile of the collector at the first losing
rate names the bottleneck.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.core import PREFIX, ROOT, Context, Figure, Goal, median
from bench.profile import Profiler, describe
from datapath import Datapath, bpfsys
from datapath.perf import RECORD_SIZE, Ring
from datapath.types import Direction, EndpointInfo, EndpointPolicy, PolicyRule, Protocol

UNIT_IFINDEX = 1  # the loopback device
UNIT_EP = 7
UNIT_IDENTITY = 300
PEER_IDENTITY = 400
UNIT_ADDR = "10.0.0.1"
PEER_ADDR = "10.0.0.2"
UDP_PORT = 9
ATTRIBUTION_ID = 1  # the first id of a fresh AttributionRegistry

STAGES = ("ceiling", "decode", "enrich", "protobuf")
STAGE_NAMES = {
    "ceiling": "ceiling: reader that only counts perf samples",
    "decode": "perf read + decode (EventReader)",
    "enrich": "+ enrichment (build_flows)",
    "protobuf": "+ protobuf (serialize, batches)",
    "e2e": "shipped and acked by the relay (collector + relay)",
}


def udp_packet(src: str, dst: str, sport: int, dport: int) -> bytes:
    from tests.datapath import packets as P

    return P.v4(src, dst, 17, P.udp(sport, dport, b"x" * 32))


# --- the producer ------------------------------------------------------------------


class Producer:
    def __init__(self, prog: str, ifindex: int, packet: bytes, netns: str | None = None) -> None:
        argv = [
            sys.executable,
            "-m",
            "bench.producer",
            "--prog",
            prog,
            "--ifindex",
            str(ifindex),
            "--packet",
            packet.hex(),
        ]
        self.proc = procs.Proc(
            argv,
            netns,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        line = self._readline(30)
        if not line or not json.loads(line).get("ready"):
            err = b""
            if self.proc.popen.stderr is not None:
                with contextlib.suppress(Exception):
                    self.proc.stop()
                    err = self.proc.popen.stderr.read() or b""
            raise RuntimeError(f"producer did not start: {err.decode(errors='replace')[-500:]}")

    def _readline(self, timeout: float) -> str:
        out = self.proc.popen.stdout
        assert out is not None
        r, _, _ = select.select([out], [], [], timeout)
        return out.readline().decode().strip() if r else ""

    def start(self, rate: float, seconds: float) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        stdin.write(f"run {rate} {seconds}\n".encode())
        stdin.flush()

    def result(self, timeout: float = 0.0) -> dict[str, float] | None:
        line = self._readline(timeout)
        return json.loads(line) if line else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            stdin = self.proc.popen.stdin
            assert stdin is not None
            stdin.write(b"quit\n")
            stdin.flush()
            self.proc.popen.wait(5)
        self.proc.stop()


# --- readers ---------------------------------------------------------------------


class CountingReader:
    """The ceiling: one ring per CPU, samples counted from the ring's head and tail
    (record size is fixed), never copied or decoded."""

    def __init__(self, events_pin: str, pages: int = 256, wakeup_events: int = 32) -> None:
        import ctypes

        self._events = bpfsys.BpfMap.from_pin(
            events_pin, ctypes.c_uint32, ctypes.c_uint32, "events"
        )
        self._rings: list[Ring] = []
        self._epoll = select.epoll()
        self._key = ctypes.c_uint32
        for cpu in bpfsys.online_cpus():
            if cpu >= self._events.max_entries:
                continue
            ring = Ring(cpu, pages, wakeup_events)
            self._rings.append(ring)
            self._events.update_fd(ctypes.c_uint32(cpu), ring.fd)
            self._epoll.register(ring.fd, select.EPOLLIN)

    def drain(self) -> int:
        n = 0
        for ring in self._rings:
            head = int(ring._head.value)
            tail = int(ring._tail.value)
            if head > tail:
                n += (head - tail) // RECORD_SIZE
                ring._tail.value = head
        return n

    def poll(self, timeout: float) -> int:
        n = self.drain()
        if n:
            return n
        self._epoll.poll(min(timeout, 0.025))
        return self.drain()

    def close(self) -> None:
        for ring in self._rings:
            with contextlib.suppress(OSError):
                self._events.delete(self._key(ring.cpu))
            ring.close()
        self._epoll.close()
        self._events.close()


@dataclass
class Step:
    rate: float
    produced: int
    consumed: int
    lost: int
    seconds: float
    cpu_s: float

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.consumed >= self.produced

    def as_text(self) -> str:
        return (
            f"{self.rate / 1000:7.0f}k/s: produced {self.produced}, got {self.consumed}, "
            f"lost {self.lost}, {self.consumed / max(self.seconds, 1e-9) / 1000:.0f}k/s, "
            f"{self.cpu_s * 1e6 / max(1, self.consumed):.2f} us CPU/event"
            f" -> {'ok' if self.ok else 'LOSS'}"
        )


def _stage_consumer(stage: str, dp: Datapath) -> tuple[Callable[[float], int], Callable[[], None]]:
    """poll(timeout) -> events handled, and close()."""
    if stage == "ceiling":
        cr = CountingReader(str(dp._p.dir / "events"))
        return cr.poll, cr.close
    reader = dp.event_reader()
    process = _processor(stage)

    def poll(timeout: float) -> int:
        ev, _ = reader.poll(timeout)
        if not len(ev):
            return 0
        return process(ev)

    return poll, reader.close


def _processor(stage: str) -> Callable[[Any], int]:
    from collector.compiler.compile import AttributionRegistry, RuleRef
    from collector.flows.builder import BuildContext, Sequencer, build_flows
    from collector.flows.directory import Directory, addr16
    from collector.shipping import wire
    from sensilla.protos import flow_pb2

    if stage == "decode":
        return len
    import ipaddress

    directory = Directory("sbe-node")
    for addr, ident, pod in (
        (UNIT_ADDR, UNIT_IDENTITY, "server"),
        (PEER_ADDR, PEER_IDENTITY, "client"),
    ):
        directory.by_ip[addr16(ipaddress.ip_address(addr))] = flow_pb2.Endpoint(
            ID=UNIT_EP if pod == "server" else 0,
            identity=ident,
            namespace="bench",
            pod_name=pod,
            labels=[f"k8s:app={pod}", "k8s:io.kubernetes.pod.namespace=bench"],
            workloads=[flow_pb2.Workload(name=pod, kind="Deployment")],
        )
    registry = AttributionRegistry()
    aid = registry.allow("Ingress", [RuleRef("bench/allow-client", "Ingress", 0)])
    assert aid == ATTRIBUTION_ID  # what the unit datapath's rule carries
    bctx = BuildContext("sbe-node", directory, registry, {1: "lo"})
    seq = Sequencer("sbe-node", time.time_ns())
    batch_seq = [0]

    def enrich(ev: Any) -> int:
        return len(build_flows(ev, bctx, seq))

    def protobuf(ev: Any) -> int:
        flows = build_flows(ev, bctx, seq)
        raw = [f.SerializeToString() for f in flows]
        for i in range(0, len(raw), 2000):
            batch_seq[0] += 1
            wire.encode_batch(seq.boot_id, batch_seq[0], raw[i : i + 2000], (), time.time_ns())
        return len(raw)

    return enrich if stage == "enrich" else protobuf


@contextlib.contextmanager
def unit_datapath() -> Iterator[Datapath]:
    """A datapath whose only endpoint is the loopback device, policy enforced (the
    peer allowed on UDP 9), aggregation none. Attached nowhere."""
    dp = Datapath.open(f"{PREFIX}-u{secrets.token_hex(3)}")
    try:
        dp.ensure_loaded()
        dp.sync_ipcache({f"{UNIT_ADDR}/32": UNIT_IDENTITY, f"{PEER_ADDR}/32": PEER_IDENTITY})
        dp.install_policy(
            UNIT_EP,
            Direction.INGRESS,
            EndpointPolicy(
                enforced=True,
                rules=(
                    PolicyRule(PEER_IDENTITY, Protocol.UDP, UDP_PORT, UDP_PORT, ATTRIBUTION_ID),
                ),
            ),
        )
        dp.install_policy(UNIT_EP, Direction.EGRESS, EndpointPolicy(enforced=False))
        dp.set_endpoint(EndpointInfo(UNIT_IFINDEX, UNIT_EP, UNIT_IDENTITY))
        dp.set_aggregation("none")
        yield dp
    finally:
        with contextlib.suppress(Exception):
            dp.unload()
        dp.close()


def _lost(dp: Datapath) -> int:
    f = dp.failed_outputs()
    return f["ring_full"] + f["other"]


def one_step(
    poll: Callable[[float], int],
    producer: Producer,
    rate: float,
    seconds: float,
    lost: Callable[[], int],
) -> Step:
    l0 = lost()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    producer.start(rate, seconds)
    consumed = 0
    result = None
    quiet_since = None
    last_event = t0
    while True:
        n = poll(0.02)
        now = time.monotonic()
        consumed += n
        if n:
            last_event = now
        if result is None:
            result = producer.result(0)
        if result is not None:
            if n:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since > 0.15:
                break
        if now - t0 > seconds + 60:
            raise RuntimeError("the producer did not finish")
    cpu = time.process_time() - cpu0
    assert result is not None
    return Step(rate, int(result["produced"]), consumed, lost() - l0, last_event - t0, cpu)


def ramp(
    run_step: Callable[[float], Step],
    rates: list[float],
    bisect: bool,
    log: Callable[[str], None],
    retry: bool = True,
) -> tuple[float, list[Step]]:
    """Highest rate without loss (0 if even the first lost; a losing rate is tried
    twice), and every step."""
    steps: list[Step] = []
    best = 0.0
    failed: float | None = None
    for rate in rates:
        st = run_step(rate)
        steps.append(st)
        log(st.as_text())
        if not st.ok and retry:
            # one more try: on a shared machine a reader descheduled for longer than
            # its ring holds (256 pages: ~19 ms at 400k events/s) loses events
            st = run_step(rate)
            steps.append(st)
            log(st.as_text() + " (retry)")
        if not st.ok:
            failed = rate
            break
        best = rate
    if bisect and failed is not None and best:
        mid = round((best + failed) / 2, -3)
        if best < mid < failed:
            st = run_step(mid)
            steps.append(st)
            log(st.as_text() + " (bisect)")
            if st.ok:
                best = mid
    return best, steps


def in_process_stages(ctx: Context, rates: list[float], seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with unit_datapath() as dp:
        packet = udp_packet(PEER_ADDR, UNIT_ADDR, 40000, UDP_PORT)
        producer = Producer(str(dp._p.dir / "to_pod"), UNIT_IFINDEX, packet)
        try:
            for stage in STAGES:
                poll, close = _stage_consumer(stage, dp)
                try:
                    ctx.log(f"stage {stage}")
                    best, steps = ramp(
                        lambda r, poll=poll: one_step(  # type: ignore[misc]
                            poll, producer, r, seconds, lambda: _lost(dp)
                        ),
                        rates,
                        not ctx.smoke and not ctx.quick,
                        ctx.log,
                    )
                finally:
                    close()
                out[stage] = (best, steps)
        finally:
            producer.close()
    return out


# --- end to end through the collector and the relay -----------------------------------


def _e2e(ctx: Context, rates: list[float], seconds: float) -> dict[str, Any]:
    from pyroute2 import NetNS

    from bench.labdp import CLIENT, SERVER, spec, write_spec
    from sensilla.lab import Options, temporary_lab
    from sensilla.lab.processes import list_processes

    spec_path = write_spec(ctx.workdir / "pipeline-spec.yaml", spec())
    options = Options(
        relay=True,
        collectors=True,
        collector_args=["--monitor-aggregation", "none"],
        relay_args=["--metrics", "127.0.0.1:0"],
    )
    out: dict[str, Any] = {}
    with temporary_lab(PREFIX, spec_path, options) as lab:
        layout = lab.layout()
        desc = lab.description()
        relay_metrics = desc["relay"]["metrics"]
        cli, srv = layout.pod(CLIENT), layout.pod(SERVER)
        node = cli.node
        coll_metrics = f"{node.mgmt_node_v4}:9965"
        pids = {p.name: p.pid for p in list_processes(lab.dir)}
        relay_pid = pids["relay"]
        coll_pid = pids[f"collector-{node.name}"]
        with NetNS(node.netns, flags=0) as ipr:
            ifindex = int(ipr.link_lookup(ifname=cli.host_if)[0])
        prog = f"/sys/fs/bpf/sensilla/{node.name}/from_pod"
        procs.wait_until(lambda: _attached(node.netns, cli.host_if), 30, 0.2)
        procs.wait_until(
            lambda: procs.scrape(coll_metrics).get("sensilla_shipper_connected") == 1.0, 30, 0.2
        )

        def counters() -> tuple[float, float, float]:
            r = procs.scrape(relay_metrics)
            c = procs.scrape(coll_metrics)
            return (
                r.get("sensilla_relay_ingested_flows", 0.0),
                c.get("sensilla_lost_events", 0.0),
                c.get("sensilla_datapath_events_read", 0.0),
            )

        idle = {"relay": procs.rss_bytes(relay_pid), "collector": procs.rss_bytes(coll_pid)}
        for pid in (relay_pid, coll_pid):
            procs.reset_peak_rss(pid)
        packet = udp_packet(cli.ipv4, srv.ipv4, 40000, UDP_PORT)
        producer = Producer(prog, ifindex, packet, node.netns)
        profile_note = ""
        try:
            grace = max(5.0, 2 * seconds)

            def step(rate: float) -> Step:
                nonlocal profile_note
                a0, l0, _ = counters()
                t0 = time.monotonic()
                producer.start(rate, seconds)
                prof_cm: Any = contextlib.nullcontext()
                profile = not ctx.smoke and not profile_note and rate >= 20_000
                if profile:
                    prof_cm = Profiler(coll_pid, ctx.workdir / f"collector-{int(rate)}.pyspy")
                with prof_cm as prof:
                    res = producer.result(seconds + 60)
                    assert res is not None
                    produced = int(res["produced"])
                    deadline = time.monotonic() + grace
                    acked = 0.0
                    last_change = time.monotonic()
                    while time.monotonic() < deadline:
                        a, _, _ = counters()
                        if a - a0 != acked:
                            acked = a - a0
                            last_change = time.monotonic()
                        if acked >= produced:
                            break
                        time.sleep(0.1)
                a1, l1, _ = counters()
                st = Step(rate, produced, int(a1 - a0), int(l1 - l0), last_change - t0, 0.0)
                if profile and prof is not None and (not st.ok or rate >= max(rates)):
                    summary = prof.summary(8)
                    if summary:
                        profile_note = (
                            f"collector profile at {rate / 1000:.0f}k events/s "
                            f"(py-spy, busy samples): {describe(summary)}"
                        )
                        incl = prof.inclusive(
                            "build_flows",
                            "SerializeToString",
                            "observe (",
                            "append_threadsafe",
                            "_handle",
                            "poll (",
                            "add (",
                        )
                        profile_note += "; inclusive: " + ", ".join(
                            f"{k.strip(' (')} {v:.0f}%" for k, v in incl.items()
                        )
                    elif prof.error:
                        profile_note = f"py-spy: {prof.error}"
                if not st.ok:
                    # let the backlog drain before anything else runs
                    procs.wait_until(lambda: counters()[0] - a0 >= produced, 60, 0.5)
                return st

            ctx.log("stage e2e (collector + relay)")
            best, steps = ramp(step, rates, not ctx.smoke and not ctx.quick, ctx.log)
        finally:
            producer.close()
        out["e2e"] = (best, steps)
        out["memory"] = {
            "relay": (procs.peak_rss_bytes(relay_pid), idle["relay"]),
            "collector": (procs.peak_rss_bytes(coll_pid), idle["collector"]),
        }
        out["profile"] = profile_note
        stuck = [st for st in steps if st.produced and st.consumed == 0]
        if stuck:
            # nothing acked for a whole step: keep the processes' logs for a look
            keep = save_logs(lab.dir / "logs", "pipeline")
            ctx.note(
                f"{len(stuck)} step(s) had nothing acked by the relay at all "
                f"(shipping stalled); the lab's logs are kept in {keep}"
            )
    return out


def save_logs(logs: Path, what: str) -> Path:
    import shutil

    from bench.core import RESULTS_DIR

    dest = RESULTS_DIR / "logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{what}"
    shutil.copytree(logs, dest, dirs_exist_ok=True)
    return dest


def _attached(netns: str, dev: str) -> bool:
    from datapath import tc

    with tc.netlink(netns) as ipr:
        ifi = tc.resolve(ipr, dev)
        return len(tc.list_filters(ipr, ifi)) == 2


def _ramp_text(steps: list[Step]) -> str:
    return "ramp: " + ", ".join(f"{s.rate / 1000:.0f}k {'ok' if s.ok else 'loss'}" for s in steps)


def run(ctx: Context) -> None:
    seconds = ctx.pick(2.0, 1.0, 0.3)
    rates = ctx.pick(
        [10e3, 20e3, 30e3, 50e3, 75e3, 100e3, 150e3, 200e3, 300e3, 400e3, 600e3, 800e3, 1.2e6],
        [10e3, 20e3, 50e3, 100e3, 200e3, 400e3, 800e3],
        [50e3],
    )
    e2e_rates = ctx.pick(
        [5e3, 10e3, 20e3, 30e3, 40e3, 60e3, 80e3, 120e3, 160e3, 200e3, 300e3],
        [10e3, 20e3, 40e3, 80e3, 160e3, 200e3],
        [2e3],
    )
    e2e_seconds = ctx.pick(3.0, 2.0, 0.5)
    res = in_process_stages(ctx, rates, seconds)
    ceiling = res["ceiling"][0]
    for stage in STAGES:
        best, steps = res[stage]
        ok = [s for s in steps if s.ok]
        cpu = [s.cpu_s / max(1, s.consumed) * 1e6 for s in ok if s.consumed]
        note = _ramp_text(steps)
        if cpu:
            note += f"; {median(cpu):.2f} us CPU per event at the rates without loss"
        over = [s for s in steps if not s.ok]
        if over:
            s = over[0]
            handled = s.consumed / max(s.seconds, 1e-9)
            note += f"; at {s.rate / 1000:.0f}k/s it handled {handled / 1000:.0f}k/s"
        ctx.record(
            Figure(
                "pipeline",
                f"zero-loss rate, {STAGE_NAMES[stage]}",
                "events/s",
                [best],
                "ceiling" if stage != "ceiling" else "",
                [ceiling] if stage != "ceiling" else [],
                note=note,
            )
        )
    e = _e2e(ctx, e2e_rates, e2e_seconds)
    best, steps = e["e2e"]
    note = (
        f"ramp: {', '.join(f'{s.rate / 1000:.0f}k ' + ('ok' if s.ok else 'loss') for s in steps)}"
    )
    if e["profile"]:
        ctx.note(e["profile"])
    ctx.record(
        Figure(
            "pipeline",
            f"zero-loss rate, {STAGE_NAMES['e2e']}",
            "events/s",
            [best],
            "ceiling",
            [ceiling],
            goal=Goal("value", ">=", 200_000, ">= 200k events/s"),
            note=note,
        )
    )
    for who, (peak, idle) in e["memory"].items():
        ctx.record(
            Figure(
                "pipeline",
                f"{who} peak RSS during the end-to-end ramp",
                "MiB",
                [peak / 2**20],
                "idle",
                [idle / 2**20],
            )
        )
