"""On the lab (root): the lab's own relay (chDB, started by `lab up`, watching the
lab's state directory) and its collectors shipping real flows.

- acceptance 3: a follower started before traffic receives every flow of the lab
  traffic that follows (every flow the relay stores from then on), from both nodes,
  in order per node;
- acceptance 6: Explain from the relay agrees with the probe on every cell of a set
  of the upstream NetworkPolicy scenarios (tests/collector/policy/scenarios), and a
  suggested policy, applied, makes exactly that probe connect;
- the last observed flow for a denied pair is the real dropped flow.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from collector.sources.lab import read_status
from sensilla.cli.main import main as cli
from sensilla.lab import Options, down, up
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc, query_pb2, query_pb2_grpc
from tests.collector.policy.lab_support import PolicyLab
from tests.collector.policy.scenario_data import Scenario, load_scenarios, substitute
from tests.relay.observer.flowgen import position
from tests.relay.observer.history_checks import ts
from tests.relay.observer.support import Follower

pytestmark = pytest.mark.needs_root

# a set of upstream scenarios: deny-all, namespace and pod selectors, ports, egress,
# ipBlock, policy updates and label changes
WANTED = (
    "default-deny-ingress",
    "pod-selector-match-expressions",
    "namespace-selector",
    "ports",
    "named-port-ingress",
    "deny-egress-namespace",
    "client-side-egress-denial",
    "egress-cidr-except",
    "updated-policy",
    "updated-namespace-labels",
)


@contextlib.contextmanager
def relay_lab() -> Iterator[PolicyLab]:
    name = ("srq" + secrets.token_hex(3))[:8]
    opts = Options(relay=True, collectors=True)  # the lab's relay watches its state dir
    with tempfile.TemporaryDirectory(prefix="srq-") as tmp:
        try:
            lab = up(name, None, opts)
            plab = PolicyLab(lab, lab.layout(), Path(tmp))
            deadline = time.monotonic() + 60
            while True:
                st = [read_status(plab.state_dir, n.name) for n in plab.layout.nodes]
                if all(s is not None and s.get("revision", -1) >= 1 for s in st):
                    break
                assert time.monotonic() < deadline, "collectors did not start"
                time.sleep(0.05)
            yield plab
        finally:
            left = down(name)
            assert not left, f"lab {name} left {left}"


@pytest.fixture(scope="module")
def lab() -> Iterator[PolicyLab]:
    with relay_lab() as p:
        yield p


def relay_address(plab: PolicyLab) -> str:
    return str(plab.lab.description()["relay"]["address"])


def stored_since(address: str, since_ns: int) -> list[flow_pb2.Flow]:
    with grpc.insecure_channel(address) as ch:
        stub = observer_pb2_grpc.ObserverStub(ch)
        req = observer_pb2.GetFlowsRequest(since=ts(since_ns))
        return [r.flow for r in stub.GetFlows(req, timeout=60) if r.HasField("flow")]


def test_srq_lab_follower_gets_every_flow_of_the_traffic(lab: PolicyLab) -> None:
    address = relay_address(lab)
    lab.reset()
    follower = Follower(address, observer_pb2.GetFlowsRequest(follow=True))
    try:
        t0 = time.time_ns()
        for port, proto in ((80, "TCP"), (81, "UDP")):
            lab.probe(port, proto)
        # collectors ship on a short timer, each on its own (one may still be
        # reconnecting to the relay): wait until the store holds flows of every
        # node, stops growing, and the follower has every stored flow
        every_node = {n.name for n in lab.layout.nodes}
        deadline = time.monotonic() + 60
        last = -1
        while True:
            stored = stored_since(address, t0)
            got = {position(f) for f in follower.flows}
            from_nodes = {f.node_name for f in stored}
            all_got = {position(f) for f in stored} <= got
            if from_nodes == every_node and len(stored) == last and all_got:
                break
            assert time.monotonic() < deadline, (len(stored), len(got), from_nodes)
            last = len(stored)
            time.sleep(1.0)
        flows = follower.flows
        positions = [position(f) for f in flows]
        assert len(positions) == len(set(positions)), "a flow twice"
        # every flow stored since the traffic started reached the follower...
        assert {position(f) for f in stored} <= set(positions)
        # ...and the follower got nothing the store does not hold
        everything = {position(f) for f in stored_since(address, t0 - 60 * 10**9)}
        assert set(positions) <= everything
        nodes = {f.node_name for f in flows}
        assert nodes == every_node, nodes
        per: dict[str, list[tuple[int, int]]] = {}
        for c, b, s in positions:
            per.setdefault(c, []).append((b, s))
        for c, ps in per.items():
            assert ps == sorted(ps), f"{c}: out of order"
        assert follower.lost == 0 and follower.error is None
        print(f"\nlab traffic: {len(flows)} flows from {sorted(nodes)}")
    finally:
        follower.close()


def _run(plab: PolicyLab, scenario: Scenario, q: query_pb2_grpc.QueryStub) -> int:
    plab.reset()
    layout = plab.layout
    cells = 0
    for step in scenario.steps:
        if "apply" in step:
            plab.apply([substitute(doc, lambda k: layout.pod(k).ipv4) for doc in step["apply"]])
        elif "delete_all_policies" in step:
            assert cli(["policy", "delete", "--all", "--state-dir", str(plab.state_dir)]) == 0
        elif "label_pod" in step:
            plab.label("pods", step["label_pod"]["pod"], step["label_pod"]["labels"])
        elif "label_namespace" in step:
            ns = step["label_namespace"]
            plab.label("namespaces", ns["namespace"], ns["labels"])
        elif "probe" in step:
            pr = step["probe"]
            observed = plab.probe(pr["port"], pr["protocol"])
            for (s, d), connected in observed.items():
                resp = q.Explain(
                    query_pb2.ExplainRequest(
                        source=s, destination=d, port=pr["port"], protocol=pr["protocol"]
                    ),
                    timeout=10,
                )
                assert resp.forwarded == connected, (
                    f"{scenario.id}: Explain says {'forwarded' if resp.forwarded else 'dropped'}"
                    f" for {s} -> {d} {pr['protocol']}/{pr['port']}, the probe "
                    f"{'connected' if connected else 'failed'}:\n{resp.explanation}"
                )
                assert resp.allowed == resp.forwarded  # no audit mode in these scenarios
                cells += 1
    return cells


def test_srq_lab_explain_agrees_with_the_probe(lab: PolicyLab) -> None:
    by_name = {s.name: s for s in load_scenarios() if s.context == "tcp"}
    chosen = [by_name[n] for n in WANTED if n in by_name]
    assert len(chosen) == len(WANTED), sorted(set(WANTED) - set(by_name))
    cells = 0
    with grpc.insecure_channel(relay_address(lab)) as ch:
        q = query_pb2_grpc.QueryStub(ch)
        for s in chosen:
            cells += _run(lab, s, q)
    print(f"\nExplain vs probe: {len(chosen)} scenarios, {cells} cells agree")


def test_srq_lab_suggestion_makes_exactly_that_probe_connect(lab: PolicyLab) -> None:
    lab.reset()
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-ingress", "namespace": "y"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    lab.apply([deny])
    before = lab.probe(80, "TCP")
    assert not before[("x/a", "y/b")]
    address = relay_address(lab)
    with grpc.insecure_channel(address) as ch:
        q = query_pb2_grpc.QueryStub(ch)
        resp = q.Explain(
            query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80), timeout=10
        )
        assert not resp.allowed and resp.suggested_policy
        # the probe's SYN was dropped and stored: Explain shows it (earlier tests of
        # this module left forwarded flows of the same pair, so wait for the drop)
        deadline = time.monotonic() + 30
        while not (
            resp.HasField("last_observed") and resp.last_observed.verdict == flow_pb2.DROPPED
        ):
            assert time.monotonic() < deadline, "the dropped flow never reached the relay"
            time.sleep(0.5)
            resp = q.Explain(
                query_pb2.ExplainRequest(source="x/a", destination="y/b", port=80), timeout=10
            )
        assert resp.last_observed.verdict == flow_pb2.DROPPED
        assert resp.last_observed.drop_reason_desc == flow_pb2.POLICY_DENIED
    lab.apply_text(resp.suggested_policy)
    after = lab.probe(80, "TCP")
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("x/a", "y/b")}, changed
