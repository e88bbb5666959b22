"""The perf ring record parser: fast path (samples only) and mixed streams."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datapath import layout as L
from datapath.perf import (
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    RAW_SIZE,
    RECORD_SIZE,
    parse_records,
)

pytestmark = pytest.mark.unit


def sample(i: int) -> bytes:
    ev = L.FlowEvent(ts_ns=i, ifindex=i % 7, sport=i % 65536, reason=L.EV_START)
    raw = bytes(ev).ljust(RAW_SIZE, b"\0")
    return struct.pack("<IHHI", PERF_RECORD_SAMPLE, 0, RECORD_SIZE, RAW_SIZE) + raw


def lost(n: int) -> bytes:
    return struct.pack("<IHHQQ", PERF_RECORD_LOST, 0, 24, 1, n)


def test_fast_path_samples_only() -> None:
    buf = b"".join(sample(i) for i in range(100))
    ev, n = parse_records(buf)
    assert n == 0 and len(ev) == 100
    assert list(ev["ts_ns"]) == list(range(100))
    assert ev.flags["C_CONTIGUOUS"]


@given(
    st.lists(
        st.one_of(
            st.integers(0, 10**6).map(lambda i: ("s", i)),
            st.integers(1, 1000).map(lambda n: ("l", n)),
        ),
        max_size=40,
    )
)
def test_mixed_streams(items: list[tuple[str, int]]) -> None:
    buf = b"".join(sample(v) if k == "s" else lost(v) for k, v in items)
    ev, n = parse_records(buf)
    assert n == sum(v for k, v in items if k == "l")
    assert [int(t) for t in ev["ts_ns"]] == [v for k, v in items if k == "s"]


def test_truncated_tail_is_ignored() -> None:
    buf = sample(1) + sample(2)[:50]
    ev, n = parse_records(buf)
    assert [int(t) for t in ev["ts_ns"]] == [1] and n == 0
