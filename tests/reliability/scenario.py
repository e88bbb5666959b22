"""One fault on a lab under steady traffic, and the checks every fault must pass.

    run_fault(lab, Fault(...)) -> Figures

1. Policies make some pairs allowed and others denied; the traffic loop (traffic.py)
   connects all of them in rounds, before, during and after the fault.
2. Just before the fault: each collector's acked flows (sensilla_shipped_flows) and
   every position the relay holds.
3. The fault, held for a while, then repaired (or not: a fault may repair itself).
4. Traffic goes on a little, stops; the system must drain by itself (no manual step):
   spools empty, collectors connected, every built flow stored or reported lost.
5. Checks:
   - enforcement never fails open: no denied connection ever connected; allowed ones
     kept connecting (none of these faults touches the datapath);
   - exactly once: no position stored twice; every position stored before the fault
     is still there; per collector, at least as many as it had seen acked;
   - nothing lost silently: for each running collector boot, flows built = flows
     stored + flows reported lost by the spool; gaps in a boot's sequences are
     exactly the spool losses reported for that node; every connection is stored by
     each node that must see it, unless that node reported losses (LostEvent in the
     relay's stream and sensilla_lost_events_total), and only for nodes the fault
     may legitimately cost flows.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import cli, scrape
from tests.reliability import labfaults, ledger
from tests.reliability.traffic import POLICY, POLICY_NAMES, Conn, Traffic

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "reliability"
FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"
# events a collector had not read yet when it died (the reader drains every 25 ms)
RING_RISK_NS = 100_000_000


@dataclass
class Fault:
    name: str
    inject: Callable[[], object]
    restore: Callable[[], object] | None
    hold_s: float = 3.0
    # nodes whose flows the fault may legitimately cost (reported, never silent)
    may_lose: frozenset[str] = frozenset()
    # the fault kills a collector (its last events may die in the perf ring)
    kills_collector: bool = False
    # losses may go on after the repair until a backlog drains (a full spool)
    lingers: bool = False
    # extra figures the fault wants in its row
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Figures:
    fault: str
    backend: str
    connections: int = 0
    allowed_connected: int = 0
    allowed_failed: int = 0
    denied_connected: int = 0
    denied_blocked: int = 0
    during_fault_allowed: int = 0
    during_fault_denied: int = 0
    flows_built: int = 0  # by the collector boots still running (exact)
    flows_stored: int = 0  # distinct positions at the relay
    duplicates: int = 0
    acked_before: int = 0  # sum of sensilla_shipped_flows just before the fault
    stored_before: int = 0  # positions the relay held just before the fault
    lost_reported_stream: dict[str, int] = field(default_factory=dict)  # source -> n
    lost_reported_metrics: dict[str, int] = field(default_factory=dict)
    observations_expected: int = 0
    observations_missing: int = 0
    silent_losses: int = 0
    recovery_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        lost = sum(self.lost_reported_stream.values())
        return (
            f"srl {self.fault} [{self.backend}]: connections {self.connections} "
            f"(allowed ok {self.allowed_connected}, failed {self.allowed_failed}; "
            f"denied blocked {self.denied_blocked}, connected {self.denied_connected}; "
            f"during the fault {self.during_fault_allowed}+{self.during_fault_denied}); "
            f"flows built {self.flows_built}, stored {self.flows_stored}, "
            f"duplicates {self.duplicates}, acked before {self.acked_before} "
            f"(stored before {self.stored_before}); lost reported {lost} "
            f"{self.lost_reported_stream} metrics {self.lost_reported_metrics}; "
            f"connection sightings missing {self.observations_missing}/"
            f"{self.observations_expected}, silent {self.silent_losses}; "
            f"drained in {self.recovery_s:.1f} s {self.notes}"
        )


def apply_policy(lab: Any) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="srl-") as f:
        f.write(POLICY)
        f.flush()
        out = cli("policy", "apply", "--lab", lab.name, "-f", f.name)
    assert out.returncode == 0, out.stderr


def delete_policy(lab: Any) -> None:
    cli("policy", "delete", "--lab", lab.name, *POLICY_NAMES)


def _metrics(lab: Any) -> dict[str, dict[str, float]]:
    out = {}
    for node, c in labfaults.collectors(lab).items():
        try:
            out[node] = scrape(c["metrics"])
        except OSError:
            out[node] = {}
    return out


def _boot_ids(lab: Any) -> dict[str, int]:
    """node -> the boot id of its running collector (from its status file)."""
    out = {}
    for f in (Path(lab.dir) / "status" / "collectors").glob("*.json"):
        data = json.loads(f.read_text())
        boot = (data.get("observer") or {}).get("boot_id")
        if boot:
            out[f.stem] = int(boot)
    return out


def drained(lab: Any, relay: str) -> tuple[bool, Any]:
    """Every running collector connected, its spool empty and every flow it built
    stored or reported lost by its spool."""
    metrics = _metrics(lab)
    boots = _boot_ids(lab)
    stored = ledger.read_stored(relay)
    per_boot = stored.boots()
    state = {}
    ok = True
    for node, m in metrics.items():
        built = int(m.get("sensilla_datapath_events_read", -1))
        spool_lost = int(m.get('sensilla_lost_events_total{source="spool_full"}', 0))
        have = len(per_boot.get((node, boots.get(node, 0)), ()))
        node_ok = (
            m.get("sensilla_shipper_connected") == 1.0
            and m.get("sensilla_spool_batches") == 0.0
            and built == have + spool_lost
        )
        state[node] = {"built": built, "stored": have, "spool_lost": spool_lost}
        ok = ok and node_ok
    return ok, state


def _wait_drained(lab: Any, relay: str, what: str, nodes: list[str]) -> tuple[float, Any]:
    state: Any = None

    def check() -> bool:
        nonlocal state
        ok, state = drained(lab, relay)
        return ok

    try:
        took = ledger.wait_for(what, check, timeout=180, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstate {state}\n{_logs(lab, nodes)}") from exc
    return took, state


def run_fault(lab: Any, fault: Fault, backend: str, settle_s: float = 1.0) -> Figures:
    relay = labfaults.relay_address(lab)
    nodes = sorted(labfaults.collectors(lab))
    apply_policy(lab)
    traffic = Traffic(lab.layout()).start()
    try:
        traffic.wait_rounds(4)
        # just before the fault: acked by each collector, then what the relay holds
        # (acks follow storage, so everything acked by then is in what we read)
        before_metrics = _metrics(lab)
        acked_before = {
            n: int(m.get("sensilla_shipped_flows", 0)) for n, m in before_metrics.items()
        }
        stored_before = ledger.read_stored(relay)
        t_inject = time.time_ns()
        fault.inject()
        time.sleep(fault.hold_s)
        t_restore = time.time_ns()
        if fault.restore is not None:
            fault.restore()
        t_restored = time.time_ns()
        traffic.wait_rounds(4, timeout=60)
    finally:
        conns = traffic.stop()
    time.sleep(settle_s)
    drain_s, state = _wait_drained(lab, relay, f"{fault.name}: drain", nodes)
    final = ledger.read_stored(relay)
    metrics = _metrics(lab)
    figures = check_everything(
        fault,
        backend,
        conns,
        final,
        stored_before,
        acked_before,
        metrics,
        _boot_ids(lab),
        (t_inject, t_restore, t_restored),
        state,
    )
    figures.recovery_s = round(drain_s + settle_s, 1)
    problems: list[str] = figures.notes.pop("problems")
    # afterwards, without any manual step, everything works as before the fault:
    # every connection is seen by every node that must see it, nothing more is lost
    after = Traffic(lab.layout()).start()
    try:
        after.wait_rounds(3)
    finally:
        later = after.stop()
    time.sleep(settle_s)
    _wait_drained(lab, relay, f"{fault.name}: after recovery", nodes)
    final2 = ledger.read_stored(relay)
    obs = ledger.observations(later, final2)
    figures.notes["after_recovery"] = f"{obs.seen}/{obs.expected} sightings"
    if obs.missing:
        problems.append(f"after recovery, {len(obs.missing)} sightings missing: {obs.missing[:3]}")
    if final2.lost != final.lost:
        problems.append(f"losses after recovery: {final2.lost - final.lost}")
    if final2.duplicates:
        problems.append(f"{final2.duplicates} flows stored twice after recovery")
    if any(c.connected != c.allowed for c in later):
        problems.append("enforcement changed after recovery")
    delete_policy(lab)
    print("\n" + figures.line())
    save(figures)
    assert not problems, "\n".join(problems) + "\n" + _logs(lab, nodes)
    return figures


def _logs(lab: Any, nodes: list[str]) -> str:
    return f"relay log:\n{labfaults.log_tail(lab, 'relay')}\n" + "\n".join(
        f"collector {n} log:\n{labfaults.log_tail(lab, f'collector-{n}')}" for n in nodes
    )


def save(figures: Figures) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tier = "full" if FULL else "fast"
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", f"{figures.fault}-{figures.backend}")
    name = f"{slug}-{tier}-{time.time_ns()}.json"
    (ARTIFACTS / name).write_text(json.dumps(asdict(figures), indent=1))


def check_everything(
    fault: Fault,
    backend: str,
    conns: list[Conn],
    final: ledger.Stored,
    before: ledger.Stored,
    acked_before: dict[str, int],
    metrics: dict[str, dict[str, float]],
    running_boots: dict[str, int],
    window: tuple[int, int, int],
    state: Any,
) -> Figures:
    t_inject, _t_restore, t_restored = window
    fig = Figures(fault.name, backend, notes={**fault.notes, "hold_s": fault.hold_s})
    problems: list[str] = []

    def expect(ok: bool, what: object) -> None:
        if not ok:
            problems.append(str(what))

    fig.connections = len(conns)
    allowed = [c for c in conns if c.allowed]
    denied = [c for c in conns if not c.allowed]
    fig.allowed_connected = sum(c.connected for c in allowed)
    fig.allowed_failed = len(allowed) - fig.allowed_connected
    fig.denied_connected = sum(c.connected for c in denied)
    fig.denied_blocked = len(denied) - fig.denied_connected

    def during(c: Conn) -> bool:
        return c.ended_ns >= t_inject and c.started_ns <= t_restored

    fig.during_fault_allowed = sum(1 for c in allowed if during(c))
    fig.during_fault_denied = sum(1 for c in denied if during(c))
    # 1. enforcement never fails open, and the datapath kept working
    opened = [c for c in denied if c.connected]
    expect(not opened, f"denied connections connected: {opened[:5]}")
    expect(fig.during_fault_denied > 0 and fig.during_fault_allowed > 0, "no probe in the fault")
    failed = [c for c in allowed if not c.connected]
    expect(not failed, f"allowed connections failed: {failed[:5]}")

    # 2. exactly once; what was stored (so acked) before the fault is still there
    fig.flows_stored = final.flows
    fig.duplicates = final.duplicates
    fig.stored_before = before.flows
    fig.acked_before = sum(acked_before.values())
    expect(final.without_position == 0, f"{final.without_position} flows without position")
    expect(
        fig.duplicates == 0,
        f"stored twice: {[p for p, n in final.positions.items() if n > 1][:10]}",
    )
    gone = [p for p in before.positions if p not in final.positions]
    expect(not gone, f"{len(gone)} flows stored before the fault are gone: {gone[:5]}")
    for node, acked in acked_before.items():
        held = sum(1 for c, _b, _s in before.positions if c == node)
        expect(held >= acked, f"{node}: {acked} flows acked before the fault, {held} stored")

    # 3. nothing silent: built = stored + spool losses (running boots, exact) ...
    for node, st in state.items():
        fig.flows_built += st["built"]
        expect(st["built"] == st["stored"] + st["spool_lost"], (node, st))
    # ... and a killed run built its highest stored sequence plus what its successor
    # reported lost from its open batch
    for (node, boot), seqs in final.boots().items():
        if boot != running_boots.get(node):
            restart = int(
                metrics.get(node, {}).get(
                    'sensilla_lost_events_total{source="collector_restart"}', 0
                )
            )
            fig.flows_built += max(seqs) + restart
    fig.flows_stored = final.flows
    fig.notes["datapath_lost_no_reader"] = final.lost_total(source="PERF_EVENT_RING_BUFFER")
    for (_node, source), n in final.lost.items():
        fig.lost_reported_stream[source] = fig.lost_reported_stream.get(source, 0) + n
    for m in metrics.values():
        for k, v in m.items():
            if k.startswith("sensilla_lost_events_total{"):
                src = k.split('"')[1]
                fig.lost_reported_metrics[src] = fig.lost_reported_metrics.get(src, 0) + int(v)
    # ... gaps in each boot's sequences are exactly the spool losses the node reported
    gaps: dict[str, int] = {}
    for (node, _boot), seqs in final.boots().items():
        gaps[node] = gaps.get(node, 0) + (max(seqs) - len(seqs))
    for node, n in gaps.items():
        reported = final.lost_total(node, "OBSERVER_EVENTS_QUEUE")
        expect(n <= reported, f"{node}: {n} sequences missing, {reported} reported lost")
    # ... and every connection was stored by the nodes that must see it, except where
    # the fault may cost flows and the node reported losses
    obs = ledger.observations(conns, final)
    fig.observations_expected = obs.expected
    fig.observations_missing = len(obs.missing)
    # A missing sighting is at least one lost flow. Where it may be lost, the node must
    # have reported at least as many lost events: for connections over before the
    # fault (only a SIGKILLed collector's open batch can hold those) as lost in the
    # collector's queue (OBSERVER_EVENTS_QUEUE, reported by its next run); for those
    # during the fault, of any kind. Connections that ended in the last RING_RISK
    # before a collector died may still have had their events in the kernel's perf
    # ring, which dies with the reader: counted apart (docs/reliability.md).
    silent: list[tuple[Conn, str]] = []
    miss_before: dict[str, list[Conn]] = {}
    miss_during: dict[str, list[Conn]] = {}
    miss_at_risk: dict[str, list[Conn]] = {}
    for c, node in obs.missing:
        if node not in fault.may_lose or (c.started_ns > t_restored and not fault.lingers):
            silent.append((c, node))
        elif c.ended_ns < t_inject - RING_RISK_NS:
            miss_before.setdefault(node, []).append(c)
        elif c.ended_ns < t_inject and fault.kills_collector:
            miss_at_risk.setdefault(node, []).append(c)
        else:
            miss_during.setdefault(node, []).append(c)
    at_risk = 0
    for node in set(miss_before) | set(miss_at_risk):
        reported = final.lost_total(node, "OBSERVER_EVENTS_QUEUE")
        cs = miss_before.get(node, [])
        silent += [(c, node) for c in cs[reported:]]
        at_risk += max(0, len(miss_at_risk.get(node, [])) - max(0, reported - len(cs)))
    for node, cs in miss_during.items():
        reported = final.lost_total(node)
        silent += [(c, node) for c in cs[reported:]]
    fig.silent_losses = len(silent)
    fig.notes["missing_before_fault"] = sum(len(v) for v in miss_before.values())
    # of those in the last RING_RISK before a collector died: not covered by its report
    fig.notes["missing_at_risk_unreported"] = at_risk
    expect(
        not silent,
        f"{len(silent)} connection sightings lost without a report: "
        + "; ".join(f"{n}: {c}" for c, n in silent[:3]),
    )
    for node in fault.may_lose:
        fig.notes.setdefault("lost_by_node", {})[node] = final.lost_total(node)
    unexpected = {n: final.lost_total(n) for n, _ in final.lost if n not in fault.may_lose}
    expect(not any(unexpected.values()), f"losses where the fault allows none: {unexpected}")
    fig.notes["problems"] = problems
    return fig
