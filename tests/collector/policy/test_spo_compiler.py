"""The compiler: identities, ipcache, CIDR partitions, and per-endpoint maps that,
evaluated with the datapath's lookup semantics, give the model's verdicts."""

from __future__ import annotations

import ipaddress

import pytest

from collector.compiler import AttributionRegistry, compile_node, endpoint_ids
from collector.compiler import cidr as C
from collector.compiler.reference import evaluate
from collector.identity import (
    IDENTITY_MAX,
    IDENTITY_MIN,
    allocate,
    identities_for,
    preferred_identity,
)
from collector.policy.model import IPBlock
from datapath.types import CIDR_GROUP_BASE, ReservedIdentity
from tests.collector.policy.scenario_data import (
    PODS,
    ModelRunner,
    Scenario,
    diff_cells,
    load_scenarios,
    render_table,
    run_steps,
)

pytestmark = pytest.mark.unit
net = ipaddress.ip_network
ip = ipaddress.ip_address


def test_spo_identities_deterministic_and_shared() -> None:
    runner = ModelRunner()
    state = runner.state
    a = identities_for(state)
    # Same label set, same number, whatever the order things were seen in.
    b = identities_for(
        type(state).build(
            reversed(list(state.nodes.values())),
            reversed(list(state.namespaces.values())),
            reversed(list(state.pods.values())),
        )
    )
    assert a.by_pod == b.by_pod
    assert len(set(a.by_pod.values())) == 9  # every lab pod differs (namespace or pod label)
    for n in a.by_pod.values():
        assert IDENTITY_MIN <= n <= IDENTITY_MAX < CIDR_GROUP_BASE
    labels = dict(a.labels(a.of_pod("x/a")) or ())
    assert labels["pod"] == "a"
    assert labels["io.kubernetes.pod.namespace"] == "x"
    assert labels["io.cilium.k8s.namespace.labels.ns"] == "x"
    assert labels["io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name"] == "x"


def test_spo_identity_collisions_probe_in_stable_order() -> None:
    sets = [(("k", str(i)),) for i in range(2000)]
    first = allocate(sets)
    assert len(set(first.values())) == len(sets)
    assert allocate(reversed(sets)) == first
    # Force collisions: label sets whose preferred numbers coincide keep stable numbers.
    pref = {ls: preferred_identity(ls) for ls in sets}
    assert all(first[ls] == pref[ls] for ls in sets if list(pref.values()).count(pref[ls]) == 1)


def test_spo_namespace_labels_change_identity() -> None:
    from dataclasses import replace

    runner = ModelRunner()
    before = identities_for(runner.state).of_pod("y/a")
    ns = runner.state.namespaces["y"]
    runner.state.namespaces["y"] = replace(ns, labels={**ns.labels, "ns2": "updated"})
    assert identities_for(runner.state).of_pod("y/a") != before


def test_spo_ipcache_per_node() -> None:
    state = ModelRunner().state
    nodes = sorted(state.nodes)
    plan = compile_node(state, nodes[0])
    ident = identities_for(state)
    for key, pod in state.pods.items():
        for a in pod.ips:
            assert plan.ipcache[ipaddress.ip_network(a)] == ident.of_pod(key)
    for a in state.nodes[nodes[0]].addresses:
        assert plan.ipcache[ipaddress.ip_network(a)] == ReservedIdentity.HOST
    for a in state.nodes[nodes[1]].addresses:
        assert plan.ipcache[ipaddress.ip_network(a)] == ReservedIdentity.REMOTE_NODE
    assert set(plan.endpoints) == {k for k, p in state.pods.items() if p.node == nodes[0]}
    assert all(e.interface.startswith("lxc") for e in plan.endpoints.values())


def test_spo_endpoint_ids_stable() -> None:
    ids = endpoint_ids(["x/a", "x/b", "y/a"])
    assert len(set(ids.values())) == 3
    again = endpoint_ids(["x/a", "y/a", "z/z"], previous=ids)
    assert again["x/a"] == ids["x/a"] and again["y/a"] == ids["y/a"]


def test_spo_cidr_partition_sets() -> None:
    b1 = C.BlockAtom(IPBlock(net("10.0.0.0/8"), (net("10.1.0.0/16"),)), "b1")
    b2 = C.BlockAtom(IPBlock(net("10.1.0.0/16"), (net("10.1.2.0/24"),)), "b2")
    b3 = C.BlockAtom(IPBlock(net("0.0.0.0/0")), "b3")
    a1 = C.AddressAtom(ip("10.1.2.3"))
    part = C.partition([b1, b2, b3, a1])

    def atoms_at(addr: str) -> set[object]:
        g = C.lookup(part.entries, ip(addr))
        return set(part.groups[g]) if g >= 0 else set()

    for addr in ["10.0.0.1", "10.1.0.1", "10.1.2.3", "10.1.2.4", "11.0.0.1", "10.255.0.1"]:
        expected: set[object] = {a for a in (b1, b2, b3) if a.block.contains(ip(addr))}
        if ip(addr) == a1.address:
            expected.add(a1)
        assert atoms_at(addr) == expected, addr
    assert C.lookup(part.entries, ip("fd00::1")) == -1  # no IPv6 entries at all


SCENARIOS = load_scenarios()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_spo_compiled_maps_match_model_on_scenarios(scenario: Scenario, family: int) -> None:
    runner = ModelRunner(family=family)
    registry = AttributionRegistry()
    for index, probe in run_steps(scenario, runner):
        plans = {n: compile_node(runner.state, n, registry) for n in runner.state.nodes}
        model = runner.verdicts(probe["port"], probe["protocol"])
        compiled = {}
        for s in PODS:
            for d in PODS:
                eg, ing = evaluate(
                    plans, runner.state, s, d, probe["port"], probe["protocol"], family
                )
                compiled[(s, d)] = eg.allowed and ing.allowed
                v = model[(s, d)]
                # Attribution: the ids name policies the model also names.
                if not eg.allowed:
                    att = registry.lookup(eg.attribution)
                    assert att is not None and att.verdict == "deny"
                    assert set(att.policies) == set(v.egress.selecting)
                elif eg.attribution:
                    att = registry.lookup(eg.attribution)
                    assert att is not None and set(att.policies) <= {
                        m.policy for m in v.egress.matches
                    }
                if not ing.allowed:
                    att = registry.lookup(ing.attribution)
                    assert att is not None and set(att.policies) == set(v.ingress.selecting)
        expected = {k: v.allowed for k, v in model.items()}
        problems = diff_cells(expected, compiled)
        assert not problems, (
            f"{scenario.id} step {index} IPv{family}:\n"
            + "\n".join(problems)
            + "\n"
            + render_table(compiled, expected)
        )
