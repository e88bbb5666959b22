"""Acceptance on the lab, real packets through the loaded programs:

1. every upstream e2e scenario (TCP, UDP, SCTP contexts, with label-change and
   policy-update steps): each probe's 72 non-self cells match upstream's table;
5. `policy explain` (the model on the collectors' snapshot) agrees with the probe on
   every cell;
3. malformed documents are rejected and a probe shows enforcement unchanged.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest

from collector.policy.explain import explain_dict
from collector.policy.verdict import verdict
from collector.sources.lab import LabSource
from sensilla.cli.main import main as cli
from tests.collector.policy.lab_support import PolicyLab, policy_lab
from tests.collector.policy.malformed import MALFORMED, VALID
from tests.collector.policy.scenario_data import (
    Scenario,
    diff_cells,
    expected_table,
    load_scenarios,
    render_table,
    substitute,
)

pytestmark = pytest.mark.needs_root
SCENARIOS = load_scenarios()
FAMILIES = (4, 6) if os.environ.get("SENSILLA_TEST_TIER") == "full" else (4,)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def plab() -> Iterator[PolicyLab]:
    with policy_lab("spo") as p:
        yield p
    if TIMINGS:
        total = sum(TIMINGS.values())
        print(f"\nupstream scenarios on the lab: {len(TIMINGS)} runs, {total:.1f} s")


def _run_scenario(plab: PolicyLab, scenario: Scenario, family: int) -> int:
    plab.reset()
    layout = plab.layout

    def address(key: str) -> str:
        pod = layout.pod(key)
        return pod.ipv4 if family == 4 else pod.ipv6

    probes = 0
    for index, step in enumerate(scenario.steps):
        if "apply" in step:
            plab.apply([substitute(doc, address) for doc in step["apply"]])
        elif "delete_all_policies" in step:
            rc = cli(["policy", "delete", "--all", "--state-dir", str(plab.state_dir)])
            assert rc == 0
        elif "label_pod" in step:
            plab.label("pods", step["label_pod"]["pod"], step["label_pod"]["labels"])
        elif "label_namespace" in step:
            ns = step["label_namespace"]
            plab.label("namespaces", ns["namespace"], ns["labels"])
        elif "probe" in step:
            pr = step["probe"]
            observed = plab.probe(pr["port"], pr["protocol"], family)
            expected = expected_table(pr["expect"])
            full_obs = {**{k: expected[k] for k in expected if k[0] == k[1]}, **observed}
            problems = diff_cells(expected, full_obs, include_self=False)
            assert not problems, (
                f"{scenario.id} step {index} {pr['protocol']}/{pr['port']} IPv{family}:\n"
                + "\n".join(problems)
                + "\n"
                + render_table(full_obs, expected)
                + "\n"
                + plab.collector_logs()
            )
            # Acceptance 5: explain (the model on the same snapshot) agrees on every cell.
            state = LabSource(plab.state_dir).cluster_state()
            for (s, d), connected in observed.items():
                v = verdict(s, d, pr["port"], pr["protocol"], state, family)
                assert explain_dict(v)["allowed"] == connected, (
                    f"{scenario.id} step {index}: explain says {explain_dict(v)['verdict']} "
                    f"for {s} -> {d}, the probe {'connected' if connected else 'failed'}"
                )
            probes += 1
    return probes


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_spo_upstream_scenario_on_lab(plab: PolicyLab, scenario: Scenario, family: int) -> None:
    t0 = time.monotonic()
    probes = _run_scenario(plab, scenario, family)
    TIMINGS[f"{scenario.id}/{family}"] = time.monotonic() - t0
    assert probes == scenario.probes


def test_spo_explain_cli_matches_probe(plab: PolicyLab, capsys: pytest.CaptureFixture[str]) -> None:
    plab.reset()
    plab.apply([VALID])
    observed = plab.probe(80, "TCP")
    capsys.readouterr()
    for s, d in [("x/b", "x/a"), ("y/b", "x/a"), ("x/a", "z/c"), ("x/a", "x/b")]:
        rc = cli(
            [
                "policy",
                "explain",
                "--from",
                s,
                "--to",
                d,
                "--port",
                "80",
                "--state-dir",
                str(plab.state_dir),
                "-o",
                "json",
            ]
        )
        assert rc == 0
        out = json.loads(capsys.readouterr().out)
        assert out["allowed"] == observed[(s, d)], (s, d, out)


def test_spo_malformed_documents_change_nothing(
    plab: PolicyLab, capsys: pytest.CaptureFixture[str]
) -> None:
    plab.reset()
    plab.apply([VALID])  # something is enforced: x/a takes ingress from x/b only, on TCP/80
    before = plab.probe(80, "TCP")
    assert not all(before.values()) and any(before.values())
    revision = plab.lab.state.revision()
    for name, text, path in MALFORMED:
        f = plab.workdir / f"malformed-{name}.yaml"
        f.write_text(text)
        rc = cli(["policy", "apply", "-f", str(f), "--state-dir", str(plab.state_dir)])
        err = capsys.readouterr().err
        assert rc == 1 and "nothing was applied" in err, name
        if path:
            assert f"{path}: " in err, (name, err)
        assert plab.lab.state.revision() == revision, name
        after = plab.probe(80, "TCP", timeout=0.3)
        assert after == before, f"{name}: enforcement changed"


def test_spo_audit_mode_per_namespace_and_pod(plab: PolicyLab) -> None:
    plab.reset()
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-ingress", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": []},
    }
    plab.apply([deny])
    denied = plab.probe(80, "TCP")
    assert not any(v for (s, d), v in denied.items() if d.startswith("x/"))
    plab.label("namespaces", "x", {"policy.sensilla.io/audit": "true"})
    audited = plab.probe(80, "TCP")
    assert all(audited.values())
    state = LabSource(plab.state_dir).cluster_state()
    v = verdict("y/a", "x/a", 80, "TCP", state)
    assert not v.allowed and v.forwarded and explain_dict(v)["verdict"] == "AUDIT"
    plab.reset()
    plab.apply([deny])
    plab.label("pods", "x/b", {"policy.sensilla.io/audit": "true"})
    one = plab.probe(80, "TCP")
    for (s, d), connected in one.items():
        if d.startswith("x/"):
            assert connected == (d == "x/b"), (s, d)


def test_spo_own_node_always_reaches_its_pods(plab: PolicyLab) -> None:
    import socket

    from sensilla.lab import netns as N

    plab.reset()
    plab.apply(
        [
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "deny-all", "namespace": ns},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            }
            for ns in ("x", "y", "z")
        ]
    )
    assert not any(plab.probe(80, "TCP").values())
    for pod in plab.layout.pods:
        for node in plab.layout.nodes:
            with N.entered(node.netns):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                ok = s.connect_ex((pod.ipv4, 80)) == 0
            finally:
                s.close()
            assert ok == (node.name == pod.node.name), (node.name, pod.key)
