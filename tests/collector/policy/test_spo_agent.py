"""The enforcing agent on a lab state directory (no root: a temporary directory,
a fake datapath): recompile on change, program in a safe order, publish the
revision, never fail open."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.agent import Agent, Enforcer, EnforcerComponent, StatusPublisher
from collector.compiler.compile import EndpointPlan
from collector.policy.cluster import Pod
from collector.sources.lab import LabSource, read_status, wait_for_collectors, write_status
from datapath.types import Direction
from sensilla.lab.layout import build_layout
from sensilla.lab.runtime import k8s_objects
from sensilla.lab.spec import default_spec
from sensilla.lab.state import StateDir
from tests.collector.policy.fake_datapath import FakeDatapath, cluster_decision, fake_ifindex
from tests.collector.policy.scenario_data import PODS

pytestmark = pytest.mark.unit

DENY_X = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-ingress", "namespace": "x"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []},
}


def resolver(plan: EndpointPlan, pod: Pod) -> int:
    return fake_ifindex(plan.interface)


@pytest.fixture
def lab_state(tmp_path: Path) -> StateDir:
    spec = default_spec()
    state = StateDir(tmp_path / "spo-lab" / "state")
    state.apply(k8s_objects(build_layout(spec, "spolab", 0), spec))
    return state


def publisher(state: StateDir, node: str) -> Callable[[Mapping[str, Any]], None]:
    def write(st: Mapping[str, Any]) -> None:
        write_status(state.path, node, st)

    return write


def agents(state: StateDir) -> dict[str, tuple[Enforcer, FakeDatapath]]:
    out = {}
    for node in sorted(state.objects("nodes")):
        dp = FakeDatapath()
        status = StatusPublisher(node, publisher(state, node))
        out[node] = (Enforcer(node, LabSource(state.path), dp, status, resolver), dp)
    return out


def matrix(
    state: StateDir, ags: dict[str, tuple[Enforcer, FakeDatapath]], port: int = 80
) -> dict[tuple[str, str], bool]:
    cs = LabSource(state.path).cluster_state()
    dps = {n: dp for n, (_, dp) in ags.items()}
    return {
        (s, d): cluster_decision(dps, cs, s, d, port, "TCP") for s in PODS for d in PODS if s != d
    }


def test_spo_agent_programs_and_publishes(lab_state: StateDir) -> None:
    ags = agents(lab_state)
    for node, (enf, dp) in ags.items():
        r = enf.sync()
        assert r.ok and r.revision == lab_state.revision()
        assert dp.loaded and len(dp.attached) in (4, 5)
        assert read_status(lab_state.path, node)["revision"] == lab_state.revision()  # type: ignore[index]
        # Endpoints were created policies first, then entry, then attach (asserted in fake).
    assert all(matrix(lab_state, ags).values())
    rev = lab_state.put("networkpolicies", DENY_X)
    for enf, _ in ags.values():
        assert enf.sync().ok
    assert wait_for_collectors(lab_state.path, rev, timeout=0.1).ok
    m = matrix(lab_state, ags)
    assert all(m[(s, d)] == (not d.startswith("x/")) for (s, d) in m)


def test_spo_agent_only_reprograms_what_changed(lab_state: StateDir) -> None:
    enf, dp = next(iter(agents(lab_state).values()))
    enf.sync()
    dp.calls.clear()
    lab_state.put("networkpolicies", {**DENY_X, "metadata": {"name": "d", "namespace": "z"}})
    enf.sync()
    local_z = [k for k, e in enf.plan.endpoints.items() if k.startswith("z/")]  # type: ignore[union-attr]
    assert dp.calls.count("install_policy") == len(local_z)  # ingress of z pods only
    assert "attach" not in dp.calls and "sync_ipcache" not in dp.calls


def test_spo_agent_invalid_policy_keeps_enforcement(lab_state: StateDir) -> None:
    ags = agents(lab_state)
    rev = lab_state.put("networkpolicies", DENY_X)
    for enf, _ in ags.values():
        assert enf.sync().ok
    before = {n: (dict(dp.policies), dict(dp.ipcache)) for n, (_, dp) in ags.items()}
    # Someone writes a broken policy straight into the state directory.
    bad = json.loads(json.dumps(DENY_X))
    bad["metadata"]["name"] = "broken"
    bad["spec"]["ingress"] = [{"ports": [{"port": 0}]}]
    bad_rev = lab_state.put("networkpolicies", bad)
    for node, (enf, dp) in ags.items():
        r = enf.sync()
        assert not r.ok and "spec.ingress[0].ports[0].port" in (r.error or "")
        assert (dict(dp.policies), dict(dp.ipcache)) == before[node]
        st = read_status(lab_state.path, node)
        assert st is not None and st["revision"] == rev and "port" in st["error"]
    w = wait_for_collectors(lab_state.path, bad_rev, timeout=0.05)
    assert not w.ok and all("last error" in why for why in w.lagging.values())


def test_spo_agent_datapath_failure_is_retried(lab_state: StateDir) -> None:
    enf, dp = next(iter(agents(lab_state).values()))
    assert enf.sync().ok
    rev_before = enf.enforced_revision
    lab_state.put("networkpolicies", DENY_X)
    dp.fail_on["install_policy"] = 1
    r = enf.sync()
    assert not r.ok and enf.enforced_revision == rev_before
    r = enf.sync()
    assert r.ok and enf.enforced_revision == lab_state.revision()
    for key, ep in enf.plan.endpoints.items():  # type: ignore[union-attr]
        assert dp.policies[(ep.endpoint_id, Direction.INGRESS)] == ep.ingress, key


def test_spo_agent_label_change_moves_identity(lab_state: StateDir) -> None:
    ags = agents(lab_state)
    pol = {
        **DENY_X,
        "metadata": {"name": "from-updated", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"pod": "a"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns2": "updated"}}}]}],
        },
    }
    lab_state.put("networkpolicies", pol)
    for enf, _ in ags.values():
        enf.sync()
    assert not matrix(lab_state, ags)[("y/b", "x/a")]
    lab_state.label("namespaces", "y", ["ns2=updated"])
    for enf, _ in ags.values():
        assert enf.sync().ok
    m = matrix(lab_state, ags)
    assert m[("y/b", "x/a")] and not m[("z/b", "x/a")]


def test_spo_agent_pending_interface_then_attached(lab_state: StateDir) -> None:
    missing = {"x/a"}
    node = lab_state.read("pods", "x/a")["spec"]["nodeName"]  # type: ignore[index]
    dp = FakeDatapath()

    def resolve(plan: EndpointPlan, pod: Pod) -> int | None:
        return None if plan.pod in missing else fake_ifindex(plan.interface)

    enf = Enforcer(node, LabSource(lab_state.path), dp, resolve_ifindex=resolve)
    assert enf.sync().ok and enf.pending == {"x/a"}
    missing.clear()
    assert enf.sync().ok and not enf.pending
    assert len(dp.attached) == len(enf.plan.endpoints)  # type: ignore[union-attr]


def test_spo_agent_loop_follows_revisions(lab_state: StateDir) -> None:
    node = sorted(lab_state.objects("nodes"))[0]
    dp = FakeDatapath()
    status = StatusPublisher(node, lambda st: write_status(lab_state.path, node, st))
    enf = Enforcer(node, LabSource(lab_state.path, poll_interval=0.01), dp, status, resolver)
    stop = threading.Event()
    t = threading.Thread(target=enf.run, args=(stop, 0.05))
    t.start()
    try:
        assert wait_for_collectors(lab_state.path, lab_state.revision(), 5, [node]).ok
        rev = lab_state.put("networkpolicies", DENY_X)
        assert wait_for_collectors(lab_state.path, rev, 5, [node]).ok
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_spo_agent_main_runs_and_stops(lab_state: StateDir) -> None:
    node = sorted(lab_state.objects("nodes"))[0]
    status = StatusPublisher(node, lambda st: write_status(lab_state.path, node, st))
    enf = Enforcer(node, LabSource(lab_state.path, 0.01), FakeDatapath(), status, resolver)
    agent = Agent(node, status, [EnforcerComponent(enf, poll=0.05)])

    async def main() -> int:
        stop = asyncio.Event()
        task = asyncio.ensure_future(agent.run(stop))
        for _ in range(200):
            if enf.enforced_revision == lab_state.revision():
                break
            await asyncio.sleep(0.01)
        stop.set()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == 0
    assert enf.enforced_revision == lab_state.revision()


def test_spo_policy_documents_roundtrip_into_state(lab_state: StateDir) -> None:
    # What `policy apply` writes is what the agent reads back.
    text = yaml.safe_dump(DENY_X)
    from collector.policy.parse import parse_documents

    (parsed,) = parse_documents(text)
    lab_state.put("networkpolicies", parsed.obj)
    cs = LabSource(lab_state.path).cluster_state()
    assert cs.policies["x/deny-ingress"] == parsed.policy.__class__(
        **{**parsed.policy.__dict__, "resource_version": str(lab_state.revision())}
    )


def test_spo_agent_restart_on_reused_maps_removes_stale_endpoints(lab_state: StateDir) -> None:
    node = lab_state.read("pods", "x/a")["spec"]["nodeName"]  # type: ignore[index]
    dp = FakeDatapath()
    first = Enforcer(node, LabSource(lab_state.path), dp, resolve_ifindex=resolver)
    assert first.sync().ok
    before = set(dp.endpoints())
    # While no agent runs, x/a goes away; a new agent finds the old maps (pins reused).
    lab_state.apply([("pods", None, "x/a")])
    second = Enforcer(node, LabSource(lab_state.path), dp, resolve_ifindex=resolver)
    assert second.sync().ok
    gone = before - set(dp.endpoints())
    assert len(gone) == 1 and set(dp.endpoints()) <= before
    assert "x/a" not in second.plan.endpoints  # type: ignore[union-attr]
