"""Wire encodings, the spool and the batcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.shipping import wire
from collector.shipping.batcher import Batcher
from collector.shipping.spool import Spool, SpoolFull
from sensilla.protos import extensions_pb2, flow_pb2, ingest_pb2

pytestmark = pytest.mark.unit


def make_flow(seq: int, boot: int = 7, collector: str = "n1") -> bytes:
    ext = extensions_pb2.FlowExtension(
        packets=seq,
        bytes=seq * 100,
        position=extensions_pb2.Position(collector_id=collector, boot_id=boot, sequence=seq),
    )
    f = flow_pb2.Flow(node_name=collector, verdict=flow_pb2.FORWARDED, uuid=f"u{seq}")
    f.extensions.Pack(ext)
    return f.SerializeToString()


@given(
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(0, 2**64 - 1), max_size=3),
    st.integers(0, 2**62),
)
def test_encode_batch_matches_protobuf(
    boot: int, seq: int, blobs: list[bytes], losses: list[int], created: int
) -> None:
    flows = [flow_pb2.Flow(uuid=b.hex()[:40], node_name="n").SerializeToString() for b in blobs]
    lost = [
        flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=n)
        for n in losses
    ]
    data = wire.encode_batch(boot, seq, flows, lost, created)
    batch = ingest_pb2.Batch.FromString(data)
    assert (batch.boot_id, batch.sequence) == (boot, seq)
    assert [f.SerializeToString() for f in batch.flows] == flows
    assert list(batch.lost_events) == lost
    assert batch.created.ToNanoseconds() == created
    req = ingest_pb2.PushRequest.FromString(wire.push_batch(data))
    assert req.batch == batch


def test_spool_round_trip_ack_and_reload(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, memory_bytes=300, segment_bytes=400)
    payloads = {i: bytes([i]) * 100 for i in range(1, 11)}
    for i, p in payloads.items():
        spool.append(5, i, 1, p)
    assert spool.memory_bytes <= 300  # older payloads in memory, the rest on disk only
    assert [spool.payload(b) for b in spool.unacked()] == list(payloads.values())
    assert spool.ack_through(5, 4) == 4
    assert [b.sequence for b in spool.unacked()] == list(range(5, 11))
    spool.close()
    again = Spool(tmp_path, max_bytes=1 << 20, memory_bytes=300, segment_bytes=400)
    assert [b.sequence for b in again.unacked()] == list(range(5, 11))
    assert [again.payload(b) for b in again.unacked()] == [payloads[i] for i in range(5, 11)]
    assert again.ack_through(5, 10) == 6
    again.close()
    assert list(tmp_path.glob("*.spool")) == []


def test_spool_cuts_a_torn_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(1, 1, 1, b"a" * 50)
    spool.append(1, 2, 1, b"b" * 50)
    spool.close()
    seg = next(tmp_path.glob("*.spool"))
    seg.write_bytes(seg.read_bytes()[:-10])  # crash in the middle of the second record
    again = Spool(tmp_path)
    assert [b.sequence for b in again.unacked()] == [1]
    again.append(1, 2, 1, b"c" * 50)
    assert [again.payload(b) for b in again.unacked()] == [b"a" * 50, b"c" * 50]


def test_spool_is_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1000)
    n = 0
    with pytest.raises(SpoolFull):
        while True:
            n += 1
            spool.append(1, n, 1, b"x" * 100)
    assert spool.disk_bytes <= 1000 and len(spool) == n - 1


def test_batcher_seals_by_size_and_time(tmp_path: Path) -> None:
    now = [0.0]
    spool = Spool(tmp_path)
    b = Batcher(spool, boot_id=9, max_flows=3, max_delay_s=0.2, clock=lambda: now[0])
    for i in range(1, 8):
        assert b.add(make_flow(i))
    assert [x.sequence for x in spool.unacked()] == [1, 2]
    assert not b.seal_if_due()
    now[0] += 0.3
    assert b.seal_if_due()
    batches = [ingest_pb2.Batch.FromString(spool.payload(x)) for x in spool.unacked()]
    assert [len(x.flows) for x in batches] == [3, 3, 1]
    seqs = [_pos(f).sequence for x in batches for f in x.flows]
    assert seqs == list(range(1, 8))


def _pos(f: flow_pb2.Flow) -> extensions_pb2.Position:
    ext = extensions_pb2.FlowExtension()
    assert f.extensions.Unpack(ext)
    return ext.position


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40))
def test_batcher_reports_overflow_as_lost_events(
    tmp_path_factory: pytest.TempPathFactory, extra: int
) -> None:
    tmp = tmp_path_factory.mktemp("spool")
    spool = Spool(tmp, max_bytes=4000)
    b = Batcher(spool, boot_id=1, max_flows=5)
    accepted = sum(1 for i in range(1, 100 + extra) if b.add(make_flow(i)))
    assert b.flows_dropped == 99 + extra - accepted - 0 and b.flows_dropped > 0
    # make room: ack everything spooled so far, then the next batch carries the loss
    spool.ack_through(1, b.next_sequence - 1)
    b.add(make_flow(1000))
    b.flush()
    last = ingest_pb2.Batch.FromString(spool.payload(spool.unacked()[-1]))
    stored = sum(len(ingest_pb2.Batch.FromString(spool.payload(x)).flows) for x in spool.unacked())
    lost = sum(e.num_events_lost for e in last.lost_events)
    assert lost == b.flows_dropped
    assert last.lost_events[0].source == flow_pb2.OBSERVER_EVENTS_QUEUE
    assert stored >= 1
