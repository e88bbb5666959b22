"""Property: for random clusters and policies, the compiled maps (evaluated with the
datapath's lookup semantics by collector.compiler.reference) give the policy model's
verdict for every sampled pair, port, protocol and address family."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.compiler import AttributionRegistry, compile_node
from collector.compiler.reference import PROTOCOL_BY_NAME, evaluate, remote_identity
from collector.policy.cluster import ClusterState
from collector.policy.verdict import verdict
from datapath.policy import TrieEntry, compile_entries
from datapath.policy import evaluate as trie_evaluate
from datapath.types import ReservedIdentity
from tests.collector.policy.random_cluster import NODES, PROBES, clusters

pytestmark = pytest.mark.unit
FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"


@settings(
    max_examples=2000 if FULL else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(state=clusters(), family=st.sampled_from((4, 6)))
def test_spo_compiled_maps_equal_model(state: ClusterState, family: int) -> None:
    registry = AttributionRegistry()
    plans = {n: compile_node(state, n, registry) for n in NODES}
    pods = sorted(state.pods)
    tries: dict[tuple[str, str, str], list[TrieEntry]] = {}
    for src in pods:
        for dst in pods:
            for port, proto in PROBES:
                model = verdict(src, dst, port, proto, state, family)
                eg, ing = evaluate(plans, state, src, dst, port, proto, family)
                # The datapath's own encoding (LPM tries) of the same policies.
                s, d = state.pods[src], state.pods[dst]
                sa, da = s.ip(family), d.ip(family)
                assert sa is not None and da is not None
                trie = []
                for plan, pod, policy, remote in (
                    (plans[s.node], src, "egress", da),
                    (plans[d.node], dst, "ingress", sa),
                ):
                    rid = remote_identity(plan, remote)
                    ep = plan.endpoints[pod]
                    entries = tries.setdefault(
                        (plan.node, pod, policy), compile_entries(getattr(ep, policy), 1)
                    )
                    trie.append(
                        rid == ReservedIdentity.HOST
                        or trie_evaluate(
                            entries, rid, remote, PROTOCOL_BY_NAME[proto], port
                        ).allowed
                    )
                assert tuple(trie) == (model.egress.allowed, model.ingress.allowed)
                assert (eg.allowed, ing.allowed) == (model.egress.allowed, model.ingress.allowed), (
                    f"{src} -> {dst} {proto}/{port} IPv{family}: maps say egress={eg.allowed} "
                    f"ingress={ing.allowed}, model says egress={model.egress.reason} "
                    f"ingress={model.ingress.reason}"
                )
