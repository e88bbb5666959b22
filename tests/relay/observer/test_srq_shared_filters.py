"""Followers with the same filters share one evaluation per published batch
(relay/observer/broadcast.py, PublishedBatch.matching)."""

from __future__ import annotations

import pytest

from relay.observer.broadcast import PublishedBatch
from sensilla.protos import flow_pb2

pytestmark = pytest.mark.unit


def _batch(n: int) -> PublishedBatch:
    flows = [
        flow_pb2.Flow(
            verdict=flow_pb2.DROPPED if i % 3 == 0 else flow_pb2.FORWARDED,
            source=flow_pb2.Endpoint(namespace="x" if i % 2 else "y"),
        )
        for i in range(n)
    ]
    return PublishedBatch("c", "node", 1, 1, n, flows)


def test_srq_one_evaluation_per_batch_and_filter() -> None:
    batch = _batch(30)
    calls = []

    def dropped(flow: flow_pb2.Flow) -> bool:
        calls.append(flow)
        return flow.verdict == flow_pb2.DROPPED

    first = batch.matching("dropped", dropped)
    for _ in range(999):  # the other followers of the same filter
        assert batch.matching("dropped", dropped) is first
    assert len(calls) == 30
    assert first == [i for i in range(30) if i % 3 == 0]


def test_srq_different_filters_are_evaluated_apart() -> None:
    batch = _batch(12)
    in_x = batch.matching("x", lambda f: f.source.namespace == "x")
    dropped = batch.matching("dropped", lambda f: f.verdict == flow_pb2.DROPPED)
    assert in_x == [1, 3, 5, 7, 9, 11]
    assert dropped == [0, 3, 6, 9]
    assert batch.matching("none", lambda f: False) == []


def test_srq_batches_do_not_share_results() -> None:
    a, b = _batch(6), _batch(9)
    assert a.matching("all", lambda f: True) == list(range(6))
    assert b.matching("all", lambda f: True) == list(range(9))
    assert a == PublishedBatch("c", "node", 1, 1, 6, a.flows)  # the cache is not state
