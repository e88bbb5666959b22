"""Synthetic collectors fast enough to load a relay: flows are encoded before the
clock starts (protobuf wire format by concatenation, as collector/shipping/wire.py
does for batches), then shipped over sensilla.ingest.v1 with the protocol's window
(Hello, HelloAck, at most max_in_flight unacked batches, acks release them).

The flows are relay/ingest/synthetic.py's 48 templates (pods of namespaces x, y, z,
TCP/UDP/ICMP, forwarded and dropped, policies) with a time, a uuid and a
FlowExtension carrying the Position, so the relay validates and stores them like
any collector's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from collector.shipping import wire
from relay.ingest.synthetic import FlowFactory
from sensilla.protos import extensions_pb2, ingest_pb2

_ANY_URL = b"type.googleapis.com/sensilla.flow.v1.FlowExtension"
_PUSH = "/sensilla.ingest.v1.Ingest/Push"


def _field(num: int, payload: bytes) -> bytes:
    return wire.varint((num << 3) | 2) + wire.varint(len(payload)) + payload


def _varint_field(num: int, value: int) -> bytes:
    return wire.varint(num << 3) + wire.varint(value)


class FlowEncoder:
    """Serialized flow.Flow messages of one collector boot."""

    def __init__(self, collector_id: str, boot_id: int, node_name: str = "", seed: int = 1):
        self.collector_id = collector_id
        self.boot_id = boot_id
        factory = FlowFactory(collector_id, boot_id, node_name or collector_id, seed)
        self.templates = [t.SerializeToString() for t in factory._templates]
        self.ext = []
        for i in range(len(self.templates)):
            e = extensions_pb2.FlowExtension(
                packets=1 + i % 7,
                bytes=60 + (i * 37) % 1400,
                reason=extensions_pb2.EVENT_CONNECTION_START,
            )
            self.ext.append(e.SerializeToString())
        cid = collector_id.encode()
        self._pos_prefix = _field(1, cid) + _varint_field(2, boot_id)
        b = f"{boot_id & ((1 << 64) - 1):016x}"
        self._uuid_prefix = f"{b[:8]}-{b[8:12]}-{b[12:16]}-".encode()
        self._uuid_tag = wire.varint((34 << 3) | 2) + wire.varint(36)
        self._ext_tag = wire.varint((150000 << 3) | 2)
        self._any_url = _field(1, _ANY_URL)

    def flow(self, seq: int, time_ns: int) -> bytes:
        k = seq % len(self.templates)
        secs, nanos = divmod(time_ns, 1_000_000_000)
        ts = _varint_field(1, secs) + (_varint_field(2, nanos) if nanos else b"")
        pos = self._pos_prefix + _varint_field(3, seq)
        ext = self.ext[k] + _field(4, pos)
        any_ = self._any_url + _field(2, ext)
        uid = self._uuid_prefix + b"%04x-%012x" % ((seq >> 48) & 0xFFFF, seq & 0xFFFFFFFFFFFF)
        return (
            self.templates[k]
            + _field(1, ts)
            + self._uuid_tag
            + uid
            + self._ext_tag
            + wire.varint(len(any_))
            + any_
        )


def encode_batches(
    collector_id: str,
    boot_id: int,
    total_flows: int,
    batch_size: int = 2000,
    *,
    start_ns: int | None = None,
    spread_s: float = 600.0,
    node_name: str = "",
) -> list[tuple[int, bytes]]:
    """(flows, PushRequest bytes) per batch, sequences 1, 2, ...; flow times spread
    evenly over `spread_s` seconds from `start_ns` (default: that long ago)."""
    enc = FlowEncoder(collector_id, boot_id, node_name)
    start = start_ns if start_ns is not None else time.time_ns() - int(spread_s * 1e9)
    step = int(spread_s * 1e9 / max(1, total_flows))
    out = []
    seq = 1
    batch_seq = 0
    while seq <= total_flows:
        n = min(batch_size, total_flows - seq + 1)
        flows = [enc.flow(s, start + s * step) for s in range(seq, seq + n)]
        batch_seq += 1
        payload = wire.encode_batch(boot_id, batch_seq, flows, (), time.time_ns())
        out.append((n, wire.push_batch(payload)))
        seq += n
    return out


@dataclass
class ShipResult:
    collector_id: str
    flows: int
    started: float = 0.0
    acks: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, flows)
    error: str = ""

    @property
    def finished(self) -> float:
        return self.acks[-1][0] if self.acks else self.started


async def ship(
    target: str,
    collector_id: str,
    boot_id: int,
    batches: Sequence[tuple[int, bytes]],
    *,
    node_name: str = "",
    timeout: float = 600.0,
    stop_after: float | None = None,
) -> ShipResult:
    """Send pre-encoded batches on one Push stream within the relay's window; return
    when every batch is acked. With `stop_after` seconds, no batch is sent after that
    time; the ones sent are waited for (up to `timeout`), and `flows` counts the
    acked flows."""
    res = ShipResult(collector_id, sum(n for n, _ in batches))
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        call = channel.stream_stream(
            _PUSH,
            request_serializer=lambda b: b,
            response_deserializer=ingest_pb2.PushResponse.FromString,
        )()
        hello = ingest_pb2.Hello(
            collector_id=collector_id,
            node_name=node_name or collector_id,
            boot_id=boot_id,
            version="bench",
        )
        await call.write(wire.push_hello(hello.SerializeToString()))
        first = await call.read()
        if first is grpc.aio.EOF or not first.HasField("hello_ack"):
            raise ConnectionError("the relay did not answer Hello")
        window = max(1, first.hello_ack.max_in_flight or 8)
        credit = asyncio.Semaphore(window)
        sizes = {i + 1: n for i, (n, _) in enumerate(batches)}
        done = asyncio.Event()
        acked: set[int] = set()

        async def receive() -> None:
            while len(acked) < len(batches):
                msg = await call.read()
                if msg is grpc.aio.EOF:
                    raise ConnectionError("the relay closed the stream")
                if msg.HasField("ack") and msg.ack.boot_id == boot_id:
                    seq = msg.ack.sequence
                    if seq not in acked and seq in sizes:
                        acked.add(seq)
                        res.acks.append((time.monotonic(), sizes[seq]))
                        credit.release()
            done.set()

        receiver = asyncio.ensure_future(receive())
        res.started = time.monotonic()
        sent = 0
        try:
            for _, payload in batches:
                if stop_after is not None and time.monotonic() - res.started > stop_after:
                    break
                await credit.acquire()
                if receiver.done():
                    receiver.result()
                await call.write(payload)
                sent += 1
            if sent == len(batches):
                await asyncio.wait_for(asyncio.shield(receiver), timeout)
                await call.done_writing()
            else:
                deadline = time.monotonic() + timeout
                while len(acked) < sent and time.monotonic() < deadline:
                    if receiver.done():
                        receiver.result()
                    await asyncio.sleep(0.05)
                res.flows = sum(n for _, n in res.acks)
        finally:
            receiver.cancel()
            call.cancel()
    return res


def steady_rate(results: Sequence[ShipResult], lo: float = 0.1, hi: float = 0.9) -> float:
    """Flows per second between the moments `lo` and `hi` of all flows were acked
    (leaves out the start-up and the tail); the overall rate when that window is
    too short to mean anything (few acks, or all in one store round)."""
    acks = sorted(a for r in results for a in r.acks)
    total = sum(n for _, n in acks)
    if total == 0 or len(acks) < 3:
        return 0.0
    t_lo = t_hi = None
    n_lo = n_hi = 0
    run = 0
    for t, n in acks:
        run += n
        if t_lo is None and run >= lo * total:
            t_lo, n_lo = t, run
        if t_hi is None and run >= hi * total:
            t_hi, n_hi = t, run
    start = min(r.started for r in results)
    elapsed = acks[-1][0] - start
    if t_lo is None or t_hi is None or t_hi - t_lo < 0.5 * elapsed:
        return total / max(1e-9, elapsed)
    return (n_hi - n_lo) / (t_hi - t_lo)


def overall_rate(results: Sequence[ShipResult]) -> float:
    start = min(r.started for r in results)
    end = max(r.finished for r in results)
    return sum(r.flows for r in results) / max(1e-9, end - start)
