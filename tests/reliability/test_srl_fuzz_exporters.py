"""Fuzzing the output side: any flow.Flow (every field at random, hostile strings,
enum numbers nobody defined, extreme times, junk in `extensions`) through every
`sensilla observe` output format, the exporters' record encodings (Hubble JSON and
OCSF, with random field masks) and the OCSF mapping, whose every record must
validate against the released schema. Lost events and node status messages go
through the printers too.

Room tests that do part of this with fewer cases: tests/output/test_ocsf_mapping.py
(hypothesis over plausible flows, 150 cases), tests/output/test_sfi_printers.py."""

from __future__ import annotations

import io
import json

import pytest
from google.protobuf import field_mask_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.siem.formats import encode
from relay.siem.resume import FLOW, LOST, StreamItem
from sensilla.filters.fieldmask import valid_flow_path
from sensilla.ocsf import flow_to_ocsf
from sensilla.ocsf.schema import validate_event
from sensilla.output import PrinterOptions, available_formats, make_printer
from sensilla.protos import flow_pb2, observer_pb2
from tests.reliability.protofuzz import messages
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.unit

SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = sorted(available_formats())
FLOW_PATHS = [f.name for f in flow_pb2.Flow.DESCRIPTOR.fields] + [
    "source.pod_name",
    "destination.labels",
    "l4.TCP.flags",
    "IP.source",
    "time.seconds",
]


@st.composite
def responses(draw: st.DrawFn) -> observer_pb2.GetFlowsResponse:
    kind = draw(st.integers(0, 9))
    if kind <= 6:
        resp = observer_pb2.GetFlowsResponse(flow=draw(messages(flow_pb2.Flow)))
    elif kind <= 8:
        resp = observer_pb2.GetFlowsResponse(lost_events=draw(messages(flow_pb2.LostEvent)))
    else:
        resp = draw(messages(observer_pb2.GetFlowsResponse))
    resp.node_name = draw(st.text(max_size=20))
    if draw(st.booleans()):
        resp.time.CopyFrom(draw(messages(type(resp.time))))
    return resp


@SETTINGS
@given(responses(), st.sampled_from(FORMATS), st.booleans(), st.booleans())
def test_srl_fuzz_observe_output_formats(
    resp: observer_pb2.GetFlowsResponse, fmt: str, color: bool, node_name: bool
) -> None:
    out, err = io.StringIO(), io.StringIO()
    p = make_printer(
        fmt,
        PrinterOptions(
            out=out, err=err, color="always" if color else "never", node_name=node_name, debug=True
        ),
    )
    p.write(resp)
    p.close()
    if fmt in ("json", "jsonpb", "ocsf"):
        for line in filter(None, out.getvalue().split("\n")):  # records end with \n only
            record = json.loads(line)
            if fmt == "ocsf":
                assert validate_event(record) == [], record


@SETTINGS
@given(
    messages(flow_pb2.Flow),
    st.sampled_from(["json", "ocsf"]),
    st.lists(st.sampled_from(FLOW_PATHS), max_size=4),
    st.integers(0, 2**63),
)
def test_srl_fuzz_exporter_records(
    flow: flow_pb2.Flow, fmt: str, paths: list[str], time_ns: int
) -> None:
    mask = None
    if paths:
        assert all(valid_flow_path(p) for p in paths)
        mask = field_mask_pb2.FieldMask(paths=paths)
    item = StreamItem(FLOW, ("n1", 1), 1, time_ns, "n1", flow=flow)
    data = encode(item, fmt, mask)
    assert data is not None
    record = json.loads(data)
    if fmt == "ocsf":
        assert validate_event(record) == [], record
    lost = StreamItem(LOST, ("n1", 1), 0, time_ns, "n1", lost=flow_pb2.LostEvent())
    out = encode(lost, fmt, mask)
    assert out is None if fmt == "ocsf" else json.loads(out or b"")


@SETTINGS
@given(messages(flow_pb2.Flow), st.one_of(st.none(), st.integers(-(2**63), 2**63)))
def test_srl_fuzz_ocsf_mapping(flow: flow_pb2.Flow, observed_ns: int | None) -> None:
    record = flow_to_ocsf(flow, observed_ns=observed_ns)
    assert validate_event(json.loads(json.dumps(record))) == [], record
