"""Acceptance 2 on the loaded programs: for random clusters and policies, compiled
and installed into two nodes' real datapaths, the first packet of every sampled
connection (BPF_PROG_TEST_RUN on crafted frames: from_pod on the source's
endpoint, to_pod on the destination's) is passed or dropped exactly as the policy
model's verdict says."""

from __future__ import annotations

import ipaddress
import itertools
import os
import secrets
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.compiler import AttributionRegistry, compile_node
from collector.policy.cluster import ClusterState
from collector.policy.verdict import verdict
from datapath import Datapath
from datapath.types import Direction, EndpointInfo
from sensilla.lab import netns as N
from tests.collector.policy.clusterip_data import clusterip_cluster
from tests.collector.policy.packets import first_packet
from tests.collector.policy.random_cluster import NODES, PROBES, clusters

pytestmark = pytest.mark.needs_root
FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"
TC_ACT_OK = 0
TC_ACT_SHOT = 2
MAX_PODS = 7


class Bench:
    """Two node datapaths and one veth per pod slot, in a private netns."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.netns = f"spo-bpf-{tag}"
        self.datapaths: dict[str, Datapath] = {}
        self.ifindex: list[int] = []
        self.sport = itertools.count(20000)
        N.create(self.netns)
        try:
            with N.ipr(self.netns) as ipr:
                for i in range(MAX_PODS):
                    ipr.link("add", ifname=f"spo{i}", kind="veth", peer=f"spo{i}p")
                    idx = ipr.link_lookup(ifname=f"spo{i}")[0]
                    ipr.link("set", index=idx, state="up")
                    self.ifindex.append(idx)
            for n in NODES:
                dp = Datapath.open(f"spo-bpf-{tag}-{n}", netns=self.netns)
                self.datapaths[n] = dp
                dp.ensure_loaded()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for dp in self.datapaths.values():
            dp.unload()
        if N.exists(self.netns):
            N.delete(self.netns)

    def install(self, state: ClusterState) -> dict[str, int]:
        """Program both nodes as the agent would; returns pod -> ifindex."""
        pods = sorted(state.pods)
        slot = {k: self.ifindex[i] for i, k in enumerate(pods)}
        registry = AttributionRegistry()
        for node, dp in self.datapaths.items():
            plan = compile_node(state, node, registry)
            dp.sync_ipcache(plan.ipcache)
            for info in dp.endpoints().values():
                dp.remove_endpoint(info.ifindex)
            for key, ep in plan.endpoints.items():
                dp.install_policy(ep.endpoint_id, Direction.INGRESS, ep.ingress)
                dp.install_policy(ep.endpoint_id, Direction.EGRESS, ep.egress)
                dp.set_endpoint(EndpointInfo(slot[key], ep.endpoint_id, ep.identity))
            dp.flush_conntrack()
        return slot

    def run(self, node: str, program: str, packet: bytes, ifindex: int) -> int:
        with N.entered(self.netns):
            return self.datapaths[node].test_run(program, packet, ifindex)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    b = Bench()
    try:
        yield b
    finally:
        b.close()


@settings(
    max_examples=400 if FULL else 80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(state=clusters(max_pods=MAX_PODS), family=st.sampled_from((4, 6)))
def test_spo_loaded_programs_equal_model(bench: Bench, state: ClusterState, family: int) -> None:
    slot = bench.install(state)
    pods = sorted(state.pods)
    for src in pods:
        for dst in pods:
            if src == dst:
                continue
            s, d = state.pods[src], state.pods[dst]
            saddr, daddr = s.ip(family), d.ip(family)
            assert saddr is not None and daddr is not None
            for port, proto in PROBES:
                model = verdict(src, dst, port, proto, state, family)
                pkt = first_packet(proto, saddr, daddr, next(bench.sport) % 40000 + 20000, port)
                eg = bench.run(s.node, "from_pod", pkt, slot[src])
                ing = bench.run(d.node, "to_pod", pkt, slot[dst])
                got = (eg == TC_ACT_OK, ing == TC_ACT_OK)
                want = (model.egress.allowed, model.ingress.allowed)
                assert got == want, (
                    f"{src} -> {dst} {proto}/{port} IPv{family}: programs "
                    f"egress={eg} ingress={ing}, model egress={model.egress.reason} "
                    f"ingress={model.ingress.reason}"
                )


def test_spo_clusterip_egress_on_loaded_programs(bench: Bench) -> None:
    """Egress to a ClusterIP on the real programs: x/client may reach pod=db on
    5432; the db Service (every backend a db pod) passes on its service port only;
    the mixed Service (one backend x/client may not reach) and the empty one (no
    ready backend) are dropped; the model says the same."""
    state = clusterip_cluster()
    slot = bench.install(state)
    client = state.pods["x/client"]
    saddr = client.ip(4)
    assert saddr is not None
    cases = [
        ("10.96.1.1", 5432, "TCP", True),  # db Service
        ("10.96.1.1", 5433, "TCP", False),  # not its service port
        ("10.96.1.1", 5432, "UDP", False),
        ("10.96.1.2", 5432, "TCP", False),  # mixed Service
        ("10.96.1.3", 5432, "TCP", False),  # no ready backend
        ("10.0.2.1", 5432, "TCP", True),  # a db pod directly
        ("10.0.3.1", 5432, "TCP", False),  # the other pod directly
    ]
    for daddr, port, proto, want in cases:
        model = verdict("x/client", daddr, port, proto, state)
        pkt = first_packet(proto, saddr, ipaddress.ip_address(daddr), next(bench.sport), port)
        got = bench.run(client.node, "from_pod", pkt, slot["x/client"]) == TC_ACT_OK
        assert (got, model.egress.allowed) == (want, want), (daddr, port, proto)
