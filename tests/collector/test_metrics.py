"""The collector's metrics count exactly what they are shown."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import CollectorMetrics
from sensilla.protos import flow_pb2
from tests.collector.observer.test_local_observer import make_event

pytestmark = pytest.mark.unit


def scrape(m: CollectorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_known_workload() -> None:
    m = CollectorMetrics("n1")
    flows = []
    for i in range(12):
        e = make_event(i, flow_pb2.DROPPED if i % 3 == 0 else flow_pb2.FORWARDED).flow
        e.event_type.type = 1 if i % 3 == 0 else 4
        e.trace_observation_point = flow_pb2.FROM_ENDPOINT
        if i % 3 == 0:
            e.egress_denied_by.add(namespace="x", name="deny")
        else:
            e.egress_allowed_by.add(namespace="x", name="allow")
        flows.append(e)
    m.observe(flows)
    m.lost("perf_event_ring_buffer", 7)
    m.gauge("sensilla_policy_revision", "enforced revision", lambda: 12)
    got = scrape(m)
    assert (
        got[
            (
                "sensilla_flows_processed_total",
                (("subtype", "POLICY_DENIED"), ("type", "Drop"), ("verdict", "DROPPED")),
            )
        ]
        == 4
    )
    assert (
        got[
            (
                "sensilla_flows_processed_total",
                (("subtype", "from-endpoint"), ("type", "Trace"), ("verdict", "FORWARDED")),
            )
        ]
        == 8
    )
    assert got[("sensilla_drop_total", (("protocol", "TCP"), ("reason", "POLICY_DENIED")))] == 4
    assert (
        got[
            (
                "sensilla_policy_verdicts_total",
                (("action", "forwarded"), ("direction", "egress"), ("match", "l3-l4")),
            )
        ]
        == 8
    )
    assert (
        got[
            (
                "sensilla_policy_verdicts_total",
                (("action", "dropped"), ("direction", "egress"), ("match", "none")),
            )
        ]
        == 4
    )
    assert got[("sensilla_lost_events_total", (("source", "perf_event_ring_buffer"),))] == 7
    assert got[("sensilla_tcp_flags_total", (("family", "IPv4"), ("flag", "SYN")))] == 12
    assert got[("sensilla_policy_revision", ())] == 12
