"""Regression tests for the bugs the fault suite and the fuzzers found (docs/reliability.md
lists them). Each test failed before its fix."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.shipping.batcher import Batcher
from collector.shipping.spool import Spool, SpoolFull
from relay.siem.resume import FLOW, LOST, ResumeStream
from relay.store import IngestBatch, open_store, validate_batch
from sensilla.protos import extensions_pb2, flow_pb2, ingest_pb2
from tests.relay.helpers import make_batches
from tests.reliability import labfaults
from tests.reliability.tiers import FUZZ_CASES


def flow_bytes(seq: int, pad: int = 0, boot: int = 7, collector: str = "n1") -> bytes:
    ext = extensions_pb2.FlowExtension(
        position=extensions_pb2.Position(collector_id=collector, boot_id=boot, sequence=seq)
    )
    f = flow_pb2.Flow(node_name=collector, uuid=f"u{seq}", Summary="x" * pad)
    f.time.FromNanoseconds(1_700_000_000_000_000_000 + seq)
    f.extensions.Pack(ext)
    return f.SerializeToString()


def spooled_batches(spool: Spool) -> list[ingest_pb2.Batch]:
    return [ingest_pb2.Batch.FromString(spool.payload(b)) for b in spool.unacked()]


def relay_accepts(batch: ingest_pb2.Batch, boot: int = 7) -> IngestBatch:
    """What the relay does with a batch first: validate it (BatchError if not)."""
    return validate_batch(IngestBatch("n1", boot, batch.sequence, list(batch.flows)))


# --- 1. the batcher put a gap inside a batch when the spool was nearly full --------


@pytest.mark.unit
def test_srl_batch_never_spans_a_dropped_flow(tmp_path: Path) -> None:
    """A flow too big for the spool's room was dropped, the next (smaller) one kept in
    the same batch: sequences 1, 2, 4, 5 in one batch, which the relay rejects with
    INVALID_ARGUMENT on every resend, so shipping stalled for good."""
    spool = Spool(tmp_path, max_bytes=600)
    b = Batcher(spool, boot_id=7, max_flows=100)
    kept = [b.add(flow_bytes(i, pad=300 if i == 3 else 0)) for i in range(1, 6)]
    assert kept == [True, True, False, True, True]
    b.flush()
    batches = spooled_batches(spool)
    for batch in batches:
        relay_accepts(batch)
    assert [len(x.flows) for x in batches] == [2, 2]
    lost = [e.num_events_lost for x in batches for e in x.lost_events]
    assert lost == [1]


@settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sizes=st.lists(st.integers(0, 400), min_size=1, max_size=120),
    acks=st.lists(st.integers(0, 119), max_size=6),
    max_bytes=st.integers(300, 6000),
    max_flows=st.integers(1, 12),
)
@pytest.mark.unit
def test_srl_batcher_under_spool_pressure(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    acks: list[int],
    max_bytes: int,
    max_flows: int,
) -> None:
    """Whatever the flows' sizes, the spool's room and the acks in between: every
    sealed batch is one the relay accepts, and flows kept + flows reported lost =
    flows added."""
    d = tmp_path_factory.mktemp("spool")
    spool = Spool(d, max_bytes=max_bytes)
    b = Batcher(spool, boot_id=7, max_flows=max_flows)
    seen: list[ingest_pb2.Batch] = []
    ack_at = set(acks)

    def release() -> None:
        for x in spool.unacked():
            seen.append(ingest_pb2.Batch.FromString(spool.payload(x)))
        spool.ack_through(7, b.next_sequence - 1)

    for i, size in enumerate(sizes, start=1):
        b.add(flow_bytes(i, pad=size))
        if i - 1 in ack_at:
            release()
    b.flush()
    release()
    b.add(flow_bytes(len(sizes) + 1))  # a last flow carries any loss still pending
    b.flush()
    release()
    kept = sum(len(x.flows) for x in seen)
    lost = sum(e.num_events_lost for x in seen for e in x.lost_events)
    assert kept + lost == len(sizes) + 1
    assert [x.sequence for x in seen] == list(range(1, len(seen) + 1))
    for x in seen:
        relay_accepts(x)
    shutil.rmtree(d, ignore_errors=True)


# --- 2. a full spool disk (ENOSPC) crashed the collector ----------------------------


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    with labfaults.small_tmpfs("64k", prefix="srl-enospc-") as mnt:
        yield mnt


@pytest.mark.needs_root
def test_srl_spool_disk_full_is_a_full_spool(tiny_disk: Path) -> None:
    """ENOSPC from the spool's write propagated out of Batcher.add into the reader
    thread and ended the collector. Now it is SpoolFull: flows counted lost and
    reported; the segment keeps only whole records; room comes back with acks."""
    spool = Spool(tiny_disk / "n1", max_bytes=1 << 30)
    b = Batcher(spool, boot_id=7, max_flows=20)
    for i in range(1, 3000):
        b.add(flow_bytes(i, pad=20))
    assert b.flows_dropped > 0
    spooled = len(spool)
    with pytest.raises(SpoolFull):
        spool.append(7, 10_000, 1, b"x" * 200_000)
    # what is on disk parses back whole (no torn record in the middle)
    reopened = Spool(tiny_disk / "n1", max_bytes=1 << 30)
    assert [x.key for x in reopened.unacked()] == [x.key for x in spool.unacked()]
    reopened.close()
    assert len(spool) == spooled
    for batch in spooled_batches(spool):
        relay_accepts(batch)
    # acks free the disk; the next batch carries the count of what was dropped
    spool.ack_through(7, b.next_sequence - 1)
    b.add(flow_bytes(5000))
    b.flush()
    [last] = spooled_batches(spool)
    assert sum(e.num_events_lost for e in last.lost_events) == b.flows_dropped
    spool.close()


@pytest.mark.unit
def test_srl_spool_full_metric_counts_drops_at_seal_time(tmp_path: Path) -> None:
    """Flows dropped when a batch could not be sealed (disk full) were reported in the
    stream but missing from sensilla_lost_events_total{source="spool_full"}."""
    from collector.agent.observing import ObserveConfig, ObservingHalf

    half = ObservingHalf(types.SimpleNamespace(node="n1"), ObserveConfig())  # type: ignore[arg-type]

    class FailingSpool(Spool):
        def append(self, *a: object, **k: object) -> object:  # type: ignore[override]
            raise SpoolFull("disk full")

    half.batcher = Batcher(FailingSpool(tmp_path), boot_id=7, max_flows=3)
    for i in range(1, 8):
        half.batcher.add(flow_bytes(i))
    half._count_spool_losses()
    assert half.batcher.flows_dropped == 6
    assert half.metrics.snapshot()["lost_events"] == {"spool_full": 6}


# --- 3. chDB refused a batch marker with loss reports of 128 events or more --------


@pytest.mark.unit
def test_srl_loss_reports_of_any_size_are_stored() -> None:
    """A LostEvent with num_events_lost >= 128 serializes to bytes that are not UTF-8;
    the chDB backend sent them as an Arrow string column and every write of that
    round failed ("was not a utf8 string"), retried for ever: ingest from that
    collector stalled after any perf loss of 128+ events."""
    d = tempfile.mkdtemp(prefix="srl-chdb-")
    try:
        st_ = open_store(f"chdb://{d}/store")
        try:
            [batch] = make_batches("n1", 5, 1, 3)
            batch.lost_events = [
                flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=423),
                flow_pb2.LostEvent(
                    source=flow_pb2.OBSERVER_EVENTS_QUEUE, num_events_lost=2**40 + 7
                ),
            ]
            st_.write_batches([batch])
            got = sorted(e.num_events_lost for e in st_.lost_events("n1"))
            assert got == [423, 2**40 + 7]
            assert st_.count_distinct() == 3
        finally:
            st_.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- 4. resumable streams skipped loss reports in a boot's first batches ----------


@pytest.mark.unit
def test_srl_stream_delivers_loss_reports_without_flows() -> None:
    """A restarted collector's first batch often holds only the LostEvent of what the
    datapath could not deliver while it was down. A stream positioned the new boot on
    the first batch *with flows*, so that report never reached a follower, an
    exporter or a history reader."""
    d = tempfile.mkdtemp(prefix="srl-chdb-")
    try:
        store = open_store(f"chdb://{d}/store")
        try:
            lost = flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=42)
            first = IngestBatch("n1", 9, 1, [], lost_events=[lost])
            rest = make_batches("n1", 9, 2, 5)  # flows 1..10 in batches 2 and 3
            for b in rest:
                b.batch_seq += 1
            for b in [first, *rest]:
                validate_batch(b)
            store.write_batches([first, *rest])

            async def collect() -> list[object]:
                return [i async for i in ResumeStream(store, None, follow=False).items()]

            items = asyncio.run(collect())
            kinds = [i.kind for i in items]  # type: ignore[attr-defined]
            assert kinds.count(LOST) == 1 and kinds.count(FLOW) == 10
            [ev] = [i.lost for i in items if i.kind == LOST]  # type: ignore[attr-defined]
            assert ev.num_events_lost == 42
        finally:
            store.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- 5. a SIGKILLed collector lost its open batch without a word -----------------


@pytest.mark.unit
def test_srl_killed_collectors_open_batch_is_reported_by_the_next_run(tmp_path: Path) -> None:
    """Flows built but not yet sealed into the spool (up to one batch delay) vanished
    with a SIGKILLed collector, and nothing reported them. The boot ledger counts flows
    handed to the batcher and flows accounted for; the next run reports the
    difference as a LostEvent in its first batch and in sensilla_lost_events_total."""
    from collector.agent.observing import ObserveConfig, ObservingHalf
    from collector.shipping.batcher import BootLedger

    spool_dir = tmp_path / "n1"
    spool = Spool(spool_dir)
    ledger = BootLedger(spool_dir, 7)
    b = Batcher(spool, boot_id=7, max_flows=4, ledger=ledger)
    b.expect(10)
    for i in range(1, 11):
        b.add(flow_bytes(i))
    assert len(spool) == 2  # 8 flows spooled, 2 in the open batch: then SIGKILL
    spool.close()
    ledger.close()

    config = ObserveConfig(relay="127.0.0.1:9", spool_dir=str(tmp_path), collector_id="n1")
    half = ObservingHalf(types.SimpleNamespace(node="n1"), config)  # type: ignore[arg-type]
    half._setup_shipping()
    assert half.spool is not None and half.ledger is not None
    mine = [x for x in spooled_batches(half.spool) if x.boot_id == half.boot_id]
    assert len(mine) == 1 and not mine[0].flows
    [ev] = mine[0].lost_events
    assert (ev.source, ev.num_events_lost) == (flow_pb2.OBSERVER_EVENTS_QUEUE, 2)
    assert half.metrics.snapshot()["lost_events"] == {"collector_restart": 2}
    assert not (spool_dir / "boot-7.ledger").exists()  # reported once
    # the earlier boot's spooled batches are still there to be resent
    assert [x.key for x in half.spool.unacked() if x.boot_id == 7] == [(7, 1), (7, 2)]
    half.spool.close()
    half.ledger.close()


@pytest.mark.unit
def test_srl_ledger_of_a_clean_run_reports_nothing(tmp_path: Path) -> None:
    from collector.shipping.batcher import BootLedger

    spool = Spool(tmp_path)
    ledger = BootLedger(tmp_path, 3)
    b = Batcher(spool, boot_id=3, max_flows=4, ledger=ledger)
    b.expect(6)
    for i in range(1, 7):
        b.add(flow_bytes(i, boot=3))
    b.flush()
    assert (ledger.handed, ledger.accounted) == (6, 6)
    assert BootLedger.earlier(tmp_path, 4) == [(tmp_path / "boot-3.ledger", 0)]


# --- 6. a few kilobytes of YAML aliases expanded into a policy of gigabytes ---------


def _alias_bomb(n: int) -> str:
    peers = ", ".join(["*p"] * n)
    ports = ", ".join(["*q"] * n)
    rules = ", ".join(["*r"] * n)
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        "metadata: {name: bomb, namespace: x}\nspec:\n  podSelector: {}\n"
        "  policyTypes: [Egress]\n"
        f"  egress: [&r {{to: [&p {{podSelector: {{matchLabels: {{x: y}}}}}}, {peers}], "
        f"ports: [&q {{port: 80}}, {ports}]}}, {rules}]\n"
    )


@pytest.mark.unit
@pytest.mark.timeout(60)
def test_srl_policy_yaml_alias_bomb_is_refused() -> None:
    """12 KB of YAML with aliases (1000 rules x 1000 peers x 1000 ports) parsed into a
    60 MB policy in 17 s and 560 MiB, and 36 KB ran out of memory; `policy apply`
    would then hand it to every collector's compiler. Excessive aliasing is now
    refused, as go-yaml (kubectl, the API server) refuses it."""
    from collector.policy.errors import PolicyValidationError
    from collector.policy.parse import parse_documents

    for n in (300, 3000):
        with pytest.raises(PolicyValidationError, match="through aliases"):
            parse_documents(_alias_bomb(n))
    # aliases that merely share a value stay fine
    [parsed] = parse_documents(_alias_bomb(3))
    assert len(parsed.policy.egress) == 4


# --- 7. outputs and exporters failed on flows a peer could send ----------------------


def _odd_flows() -> list[flow_pb2.Flow]:
    """Flows as a buggy or hostile collector could ship them (the relay stores them)."""
    bad_time = flow_pb2.Flow(uuid="t")
    bad_time.time.nanos = -1
    far_time = flow_pb2.Flow(uuid="s")
    far_time.time.seconds = 2**62
    corrupt_ext = flow_pb2.Flow(uuid="c")
    corrupt_ext.extensions.type_url = "type.googleapis.com/sensilla.flow.v1.FlowExtension"
    corrupt_ext.extensions.value = b"\xff\xff"
    unknown_any = flow_pb2.Flow(uuid="u")
    unknown_any.extensions.type_url = "example.org/some.Unknown"
    unknown_any.extensions.value = b"\x08\x01"
    odd_values = flow_pb2.Flow(uuid="v")
    odd_values.IP.source = "not an address"
    odd_values.l4.TCP.source_port = 70_000
    odd_values.extensions.Pack(extensions_pb2.FlowExtension(packets=2**64 - 1, bytes=2**64 - 1))
    return [bad_time, far_time, corrupt_ext, unknown_any, odd_values]


@pytest.mark.unit
def test_srl_outputs_print_any_flow() -> None:
    """`observe -o json|ocsf` and the JSON/OCSF exporters raised on a flow with an
    invalid Timestamp (ValueError), an Any of an unknown type (TypeError) or a corrupt
    FlowExtension (DecodeError): one such stored flow stopped an exporter for good.
    OCSF records also failed the schema (an address that is not one, a port above
    65535, counters above long_t, an endpoint with only a port)."""
    import io
    import json

    from relay.siem.formats import encode
    from relay.siem.resume import StreamItem
    from sensilla.ocsf import flow_to_ocsf
    from sensilla.ocsf.schema import validate_event
    from sensilla.output import PrinterOptions, make_printer
    from sensilla.protos import observer_pb2

    for flow in _odd_flows():
        for fmt in ("json", "ocsf", "compact", "dict", "table"):
            out = io.StringIO()
            p = make_printer(fmt, PrinterOptions(out=out, err=io.StringIO()))
            resp = observer_pb2.GetFlowsResponse(flow=flow, node_name="n1")
            resp.time.CopyFrom(flow.time)
            p.write(resp)
            p.close()
            if fmt in ("json", "ocsf"):
                json.loads(out.getvalue())
        for fmt in ("json", "ocsf"):
            record = json.loads(
                encode(StreamItem(FLOW, ("n1", 1), 1, 0, "n1", flow=flow), fmt, None) or b""
            )
            assert record
        assert validate_event(json.loads(json.dumps(flow_to_ocsf(flow)))) == [], flow


@pytest.mark.unit
def test_srl_corrupt_flow_extension_is_a_batch_error() -> None:
    """A flow whose FlowExtension does not parse raised DecodeError out of
    validate_batch: the ingest stream ended with UNKNOWN instead of INVALID_ARGUMENT
    naming the field."""
    from relay.store import BatchError
    from sensilla.filters import flow_extension

    flow = _odd_flows()[2]
    assert flow_extension(flow) is None
    with pytest.raises(BatchError, match=r"batch.flows\[0\].extensions"):
        validate_batch(IngestBatch("n1", 7, 1, [flow]))
