"""Fuzzing the event decoder (collector/flows/builder.py build_flows): batches of
datapath events that are arbitrary bytes, or events with every field at random around
the values the programs write (families, protocols, directions, verdicts, reasons,
identities, attribution ids, flags), decoded against a real directory and attribution
registry. Every event becomes at most one flow, every flow serializes and prints as
Hubble JSON, and positions stay consecutive.

The room's own test (tests/collector/flows/test_builder.py,
test_arbitrary_event_bytes_never_crash) does arbitrary bytes with 200 cases."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.compiler.compile import RuleRef
from collector.flows.builder import Sequencer, build_flows, event_array
from datapath import layout as L
from sensilla.filters import flow_extension
from sensilla.output.formats.jsonpb import to_json
from sensilla.protos import observer_pb2
from tests.collector.flows.test_builder import ctx
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.unit

SIZE = L.EVENT_DTYPE.itemsize
SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ADDRESSES = [
    "10.244.1.10",
    "10.244.2.10",
    "172.18.0.2",
    "8.8.8.8",
    "0.0.0.0",
    "255.255.255.255",
    "fd00:10:244:1::a",
    "::1",
    "::",
    "ff02::1",
]


def _field_values(name: str, dtype: np.dtype) -> st.SearchStrategy[int]:
    hi = int(np.iinfo(dtype).max)
    plausible = {
        "family": [0, 4, 6, 2, 10],
        "proto": [1, 6, 17, 58, 132, 0, 255],
        "direction": [L.DIR_INGRESS, L.DIR_EGRESS, 2, 255],
        "verdict": [L.VERDICT_FORWARDED, 0, 2, 3, 4, 255],
        "reason": [L.EV_START, 0, 1, 2, 3, 4, 5, 6, 7, 255],
        "drop_reason": [0, 133, 134, 135, 139, 65535],
        "src_identity": [0, 1, 2, 6, 256, 1 << 24, hi],
        "dst_identity": [0, 1, 2, 6, 256, 1 << 24, hi],
        "attribution": [0, 1, 2, 3, hi],
        "ifindex": [0, 1, 7, hi],
        "endpoint_id": [0, 42, hi],
        "ct_state": [0, 1, 2, 3, 255],
    }.get(name, [0, 1, hi])
    return st.one_of(st.sampled_from(plausible), st.integers(0, hi))


@st.composite
def structured_event(draw: st.DrawFn) -> bytes:
    ev = np.zeros(1, dtype=L.EVENT_DTYPE)
    fields: Any = L.EVENT_DTYPE.fields
    for name, spec in fields.items():
        dt = spec[0]
        if name in ("saddr", "daddr"):
            import ipaddress

            if draw(st.booleans()):
                raw = ipaddress.ip_address(draw(st.sampled_from(ADDRESSES))).packed
                ev[name] = np.frombuffer(raw + bytes(16 - len(raw)), dtype=np.uint8)
            else:
                ev[name] = np.frombuffer(draw(st.binary(min_size=16, max_size=16)), np.uint8)
            continue
        if draw(st.integers(0, 3)) == 0:
            continue  # leave it zero
        ev[name] = draw(_field_values(name, dt))
    return ev.tobytes()


events = st.lists(
    st.one_of(structured_event(), st.binary(min_size=SIZE, max_size=SIZE)),
    min_size=1,
    max_size=6,
)


def _context() -> object:
    c, reg, _ids = ctx()
    # a few attributions exist, so attribution ids sometimes resolve
    reg.allow("Egress", [RuleRef("x/allow", "Egress", 0)])
    reg.allow("Ingress", [RuleRef("y/allow", "Ingress", 1)])
    return c


CONTEXT = _context()


@SETTINGS
@given(events)
def test_srl_fuzz_event_decoder(records: list[bytes]) -> None:
    c: Any = CONTEXT
    arr = event_array(records)
    assert len(arr) == len(records)
    seq = Sequencer("n1", 5)
    flows = build_flows(arr, c, seq)
    assert len(flows) <= len(records)
    positions = []
    for f in flows:
        data = f.SerializeToString()
        assert type(f).FromString(data) == f
        ext = flow_extension(f)
        assert ext is not None
        positions.append(ext.position.sequence)
        json.loads(to_json(observer_pb2.GetFlowsResponse(flow=f, node_name="n1")))
    assert positions == list(range(1, len(flows) + 1))
