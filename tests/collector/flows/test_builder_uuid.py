"""The flow uuids build_flows makes: random version-4 UUIDs exactly as uuid.uuid4()
formats them (bench/pipeline.py made them in one read of os.urandom per batch)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from collector.flows.builder import BuildContext, Sequencer, build_flows, random_uuids
from collector.flows.directory import Directory
from datapath import layout as L

pytestmark = pytest.mark.unit


def _valid_v4(text: str) -> bool:
    u = uuid.UUID(text)
    return str(u) == text and u.version == 4 and u.variant == uuid.RFC_4122


def test_random_uuids_are_version_4_and_distinct() -> None:
    got = random_uuids(5000)
    assert len(got) == 5000 and len(set(got)) == 5000
    assert all(_valid_v4(u) for u in got)
    assert random_uuids(0) == []
    # every variant nibble and the version digit in place, as uuid4() has them
    assert {u[19] for u in got} == set("89ab")
    assert {u[14] for u in got} == {"4"}


class _NoAttributions:
    def lookup(self, attribution_id: int) -> None:
        return None


def _events(n: int) -> np.ndarray:
    ev = np.zeros(n, dtype=L.EVENT_DTYPE)
    ev["family"] = 4
    ev["proto"] = 17
    ev["verdict"] = 1
    ev["reason"] = L.EV_START
    return ev


def test_build_flows_gives_each_flow_its_own_uuid() -> None:
    ctx = BuildContext("n1", Directory("n1"), _NoAttributions(), {})
    flows = build_flows(_events(300), ctx, Sequencer("n1", 1))
    uuids = [f.uuid for f in flows]
    assert len(set(uuids)) == 300 and all(_valid_v4(u) for u in uuids)
    counter = iter(range(10))
    flows = build_flows(_events(3), ctx, Sequencer("n1", 1), new_uuid=lambda: f"u{next(counter)}")
    assert [f.uuid for f in flows] == ["u0", "u1", "u2"]
