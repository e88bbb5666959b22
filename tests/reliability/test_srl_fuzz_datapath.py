"""Crafted packets through the datapath (BPF_PROG_TEST_RUN on the real programs, a
unit datapath on the loopback device; tests/datapath/conftest.py):

- with every direction denied, no frame passes unless it is ARP, genuine IPv6
  neighbour discovery or traffic with the endpoint's own node, whatever its bytes
  (the room's property, here at the fuzz tiers' case counts);
- with random policies (enforced or not, audit, allow rules on random ports and
  identities, CIDR entries), every frame gets a TC verdict, and every flow event the
  programs emit for it decodes into a Hubble flow (the collector's decoder, the same
  directory and registry as tests/collector/flows), end to end.

Uses the packet builders of tests/datapath/packets.py and the frame mutations of
tests/datapath/test_program_fuzz.py (300 cases there; 3,000 in its full tier)."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.flows.builder import Sequencer, build_flows
from datapath.types import (
    ANY_PEER,
    ANY_PROTOCOL,
    CIDR_GROUP_BASE,
    CidrEntry,
    Direction,
    EndpointPolicy,
    PolicyRule,
)
from tests.collector.flows.test_builder import ctx
from tests.datapath import packets as P
from tests.datapath.conftest import UNIT_EP, UnitDatapath, unit_dp_module
from tests.datapath.test_program_fuzz import frames, may_pass_deny_all
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.needs_root

__all__ = ["unit_dp_module"]  # the fixture, imported for this module's tests

SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _short(frame: bytes) -> bool:
    """Frames the kernel's test runner refuses (shorter than an L3 header)."""
    (proto,) = struct.unpack_from("!H", frame, 12)
    return len(frame) < (54 if proto == P.ETH_P_IPV6 else 34)


@pytest.fixture(scope="module")
def fuzz_dp(unit_dp_module: UnitDatapath) -> Iterator[UnitDatapath]:
    unit_dp_module.reset()
    unit_dp_module.events(0)
    yield unit_dp_module
    unit_dp_module.reset()


@SETTINGS
@given(frames())
def test_srl_fuzz_packets_deny_all(fuzz_dp: UnitDatapath, frame: bytes) -> None:
    u = fuzz_dp
    if not getattr(u, "_srl_deny_all", False):
        for d in Direction:
            u.dp.install_policy(UNIT_EP, d, EndpointPolicy(enforced=True))
        u.dp.set_aggregation("maximum", 60.0)  # keep the rings quiet
        u._srl_deny_all = True  # type: ignore[attr-defined]
    for run, egress in ((u.ingress, False), (u.egress, True)):
        try:
            verdict = run(frame)
        except OSError:
            assert _short(frame), frame.hex()
            continue
        assert verdict in (0, 2)
        if verdict == 0:
            assert may_pass_deny_all(frame, egress), frame.hex()


@st.composite
def policies(draw: st.DrawFn) -> EndpointPolicy:
    rules = []
    for _ in range(draw(st.integers(0, 4))):
        protocol = draw(st.sampled_from([ANY_PROTOCOL, 1, 6, 17, 58, 132]))
        if protocol == ANY_PROTOCOL:
            lo, hi = 0, 65535
        else:
            lo = draw(st.sampled_from([0, 1, 53, 80, 443, 1024, 65535]))
            hi = draw(st.one_of(st.just(lo), st.integers(lo, 65535)))
        peer = draw(st.sampled_from([ANY_PEER, 1, 2, 300, 400, 401, CIDR_GROUP_BASE]))
        rules.append(PolicyRule(peer, protocol, lo, hi, draw(st.integers(0, 3))))
    cidrs = []
    if draw(st.booleans()):
        cidrs.append(CidrEntry(ipaddress.ip_network("10.0.0.0/24"), CIDR_GROUP_BASE))
        cidrs.append(CidrEntry(ipaddress.ip_network("10.0.0.2/32"), 0))
    return EndpointPolicy(
        enforced=draw(st.booleans()),
        audit=draw(st.booleans()),
        rules=tuple(rules),
        cidrs=tuple(cidrs),
        deny_attribution=draw(st.integers(0, 3)),
    )


CONTEXT: Any = None


@SETTINGS
@given(frames(), policies(), policies(), st.sampled_from(["none", "low", "medium", "maximum"]))
def test_srl_fuzz_packets_to_flows(
    fuzz_dp: UnitDatapath,
    frame: bytes,
    ingress: EndpointPolicy,
    egress: EndpointPolicy,
    aggregation: str,
) -> None:
    global CONTEXT
    if CONTEXT is None:
        CONTEXT = ctx()[0]
    u = fuzz_dp
    u._srl_deny_all = False  # type: ignore[attr-defined]
    u.dp.install_policy(UNIT_EP, Direction.INGRESS, ingress)
    u.dp.install_policy(UNIT_EP, Direction.EGRESS, egress)
    u.dp.set_aggregation(aggregation, 5.0)
    for run in (u.ingress, u.egress):
        try:
            assert run(frame) in (0, 2)
        except OSError:
            assert _short(frame), frame.hex()
    assert u.reader is not None
    events, _losses = u.reader.drain()
    for f in build_flows(events, CONTEXT, Sequencer("n1", 1)):
        f.SerializeToString()
