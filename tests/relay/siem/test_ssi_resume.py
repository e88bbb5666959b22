"""Resumable streams over the store (chDB): exactly once across interruptions, in
sequence order per boot, never past a batch still missing, losses reported."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from relay.siem.position import Positions, advance_with_flow, flow_position
from relay.siem.resume import FLOW, LOST, Notifier, ResumeStream
from relay.store import IngestBatch, Store, open_store, schema, validate_batch
from tests.relay.conftest import store_url
from tests.relay.helpers import make_batches

pytestmark = pytest.mark.unit


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    s = open_store(store_url("chdb", request))
    try:
        yield s
    finally:
        s.close()


def _fill(store: Store) -> set[tuple[str, int, int]]:
    """Two collectors; node-b restarted once (two boots). Returns every position."""
    batches = [
        *make_batches("node-a", 1000, 6, 250),
        *make_batches("node-b", 2000, 3, 300),
        *make_batches("node-b", 3000, 4, 100, start_ns=None),
    ]
    for i in range(0, len(batches), 3):
        store.write_batches(batches[i : i + 3])
    return {
        (b.collector_id, b.boot_id, s) for b in batches for s in range(b.first_seq, b.last_seq + 1)
    }


async def _collect(stream: ResumeStream, stop_after: int | None = None) -> list:
    out = []
    async for item in stream.items():
        out.append(item)
        if stop_after is not None and sum(1 for i in out if i.kind == FLOW) >= stop_after:
            break
    return out


def test_ssi_history_once_in_sequence_order(store: Store) -> None:
    expected = _fill(store)
    items = asyncio.run(_collect(ResumeStream(store, None, follow=False)))
    flows = [i for i in items if i.kind == FLOW]
    got = [flow_position(i.flow) for i in flows if i.flow is not None]
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    last: dict[tuple[str, int], int] = {}
    for pos in got:
        assert pos is not None
        c, b, s = pos
        assert s > last.get((c, b), 0)
        last[(c, b)] = s


def test_ssi_resume_at_random_points_union_is_everything(store: Store) -> None:
    expected = _fill(store)
    rng = random.Random(7)
    received: list[tuple[str, int, int]] = []
    position: Positions = {}
    for _ in range(6):
        stop = rng.randint(1, 700)
        stream = ResumeStream(store, None, after=dict(position), follow=False, fetch_rows=137)
        items = asyncio.run(_collect(stream, stop_after=stop))
        for i in items:
            if i.kind == FLOW:
                received.append(flow_position(i.flow))  # type: ignore[arg-type]
                assert advance_with_flow(position, i.flow)  # type: ignore[arg-type]
    rest = asyncio.run(_collect(ResumeStream(store, None, after=dict(position), follow=False)))
    for i in rest:
        if i.kind == FLOW and i.flow is not None:
            pos = flow_position(i.flow)
            assert pos is not None
            received.append(pos)
    assert len(received) == len(set(received))
    assert set(received) == expected


def _begin_only(store: Store, batch: IngestBatch, fraction: float) -> None:
    """What a relay that died mid-write leaves: a begun marker, part of the flows."""
    validate_batch(batch)
    store._insert_markers([batch], schema.MARKER_BEGUN)
    store._insert_flows(list(batch.flows)[: int(len(batch.flows) * fraction)])


def test_ssi_never_passes_a_batch_still_missing(store: Store) -> None:
    b = make_batches("node-c", 4000, 4, 50)
    store.write_batches(b[:2])
    _begin_only(store, b[2], 0.5)  # batch 3 half written, not committed
    store.write_batches([b[3]])  # batch 4 committed after the gap
    first = asyncio.run(_collect(ResumeStream(store, None, follow=False)))
    seqs = [i.seq for i in first if i.kind == FLOW]
    assert seqs == list(range(1, 101))  # batches 1 and 2 only
    pos = {("node-c", 4000): 100}
    store.write_batches([b[2]])  # the collector resends batch 3: completed
    rest = asyncio.run(_collect(ResumeStream(store, None, after=pos, follow=False)))
    assert [i.seq for i in rest if i.kind == FLOW] == list(range(101, 201))


def test_ssi_gaps_and_losses(store: Store) -> None:
    """Flows lost before shipping leave gaps in the sequence and a LostEvent in the
    batch; flows the store no longer holds become a LostEvent with their count."""
    from relay.ingest.synthetic import FlowFactory
    from sensilla.protos import flow_pb2

    ff = FlowFactory("node-d", 5000)
    import time

    t0 = time.time_ns() - 60 * 10**9
    b1 = IngestBatch("node-d", 5000, 1, [ff.make(s, t0 + s) for s in range(1, 11)])
    lost = flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=5)
    b2 = IngestBatch(
        "node-d", 5000, 2, [ff.make(s, t0 + s) for s in range(16, 21)], lost_events=[lost]
    )
    b3 = IngestBatch("node-d", 5000, 3, [ff.make(s, t0 + s) for s in range(21, 31)])
    store.write_batches([b1, b2])
    # batch 3 committed, but its flows gone (as if retention dropped their partition)
    validate_batch(b3)
    store._insert_markers([b3], schema.MARKER_COMMITTED)
    store._advance_acked([b3.key])
    items = asyncio.run(_collect(ResumeStream(store, None, follow=False)))
    kinds = [(i.kind, i.seq if i.kind == FLOW else i.lost.num_events_lost) for i in items]
    assert kinds == [
        *[(FLOW, s) for s in range(1, 11)],
        (LOST, 5),
        *[(FLOW, s) for s in range(16, 21)],
        (LOST, 10),
    ]
    lost_items = [i.lost for i in items if i.kind == LOST]
    assert lost_items[0].source == flow_pb2.PERF_EVENT_RING_BUFFER
    assert lost_items[1].source == flow_pb2.HUBBLE_RING_BUFFER


def test_ssi_filters_move_the_position(store: Store) -> None:
    from sensilla.protos import flow_pb2

    _fill(store)

    def dropped(f: flow_pb2.Flow) -> bool:
        return f.verdict == flow_pb2.DROPPED

    stream = ResumeStream(store, None, matches=dropped, follow=False)
    items = asyncio.run(_collect(stream))
    assert items and all(i.flow.verdict == flow_pb2.DROPPED for i in items)  # type: ignore[union-attr]
    # the stream's own position covers the filtered-out flows: nothing left after it
    again = asyncio.run(_collect(ResumeStream(store, None, after=stream.position, follow=False)))
    assert again == []
    assert stream.position[("node-a", 1000)] == 1500


def test_ssi_follow_gets_new_batches(store: Store) -> None:
    batches = make_batches("node-e", 6000, 6, 20)
    store.write_batches(batches[:2])

    async def main() -> list[int]:
        notifier = Notifier()
        stream = ResumeStream(store, None, follow=True, notifier=notifier, poll_s=30)
        got: list[int] = []

        async def consume() -> None:
            async for item in stream.items():
                got.append(item.seq)
                if len(got) == 120:
                    return

        task = asyncio.create_task(consume())
        loop = asyncio.get_running_loop()
        for b in batches[2:]:
            await asyncio.sleep(0.05)
            await loop.run_in_executor(None, store.write_batches, [b])
            notifier.notify()
        await asyncio.wait_for(task, 60)
        return got

    assert asyncio.run(main()) == list(range(1, 121))
