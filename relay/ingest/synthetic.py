"""A synthetic collector: generates flows and ships them over sensilla.ingest.v1 the
way a collector must (used by tests and benchmarks, and a reference for the real
shipper):

- every flow carries its Position (collector id, boot id, per-boot sequence 1, 2, …
  with no gaps) in ``Flow.extensions``; batches are numbered 1, 2, … per boot;
- a spool keeps every batch until the relay acks it; at most ``max_in_flight``
  batches are unacked on the wire (the HelloAck's value, then FlowControl's);
- ``FlowControl.retry_after_ms`` pauses sending new batches; the spool keeps
  filling (up to ``spool_limit`` batches, after which generation waits);
- after any stream error it reconnects with capped exponential backoff, drops the
  spooled batches the HelloAck reports as acked, and resends the rest in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from relay.store.rows import set_flow_extension
from sensilla.protos import extensions_pb2, flow_pb2, ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")


def _endpoint(ep: flow_pb2.Endpoint, ns: str, pod: str, identity: int) -> None:
    ep.namespace = ns
    ep.pod_name = f"{pod}-{ns}"
    ep.identity = identity
    ep.labels.extend([f"k8s:pod={pod}", f"k8s:io.kubernetes.pod.namespace={ns}"])
    w = ep.workloads.add()
    w.name = pod
    w.kind = "Deployment"


def _templates(node_name: str, seed: int) -> list[flow_pb2.Flow]:
    rng = random.Random(seed)
    out = []
    for i in range(48):
        f = flow_pb2.Flow()
        f.node_name = node_name
        f.Type = flow_pb2.L3_L4
        sns, dns = rng.choice(NAMESPACES), rng.choice(NAMESPACES)
        spod, dpod = rng.choice(PODS), rng.choice(PODS)
        _endpoint(f.source, sns, spod, 256 + NAMESPACES.index(sns) * 3 + PODS.index(spod))
        _endpoint(f.destination, dns, dpod, 256 + NAMESPACES.index(dns) * 3 + PODS.index(dpod))
        v6 = i % 7 == 0
        f.IP.ipVersion = flow_pb2.IPv6 if v6 else flow_pb2.IPv4
        f.IP.source = f"fd00::{i + 1:x}" if v6 else f"10.0.{i % 3}.{i + 10}"
        f.IP.destination = f"fd00::1:{i + 1:x}" if v6 else f"10.0.{(i + 1) % 3}.{i + 20}"
        kind = i % 4
        port = rng.choice((80, 81))
        if kind in (0, 1):
            f.l4.TCP.source_port = 30000 + i
            f.l4.TCP.destination_port = port
            f.l4.TCP.flags.SYN = True
            f.l4.TCP.flags.ACK = i % 2 == 0
        elif kind == 2:
            f.l4.UDP.source_port = 40000 + i
            f.l4.UDP.destination_port = port
        elif v6:
            f.l4.ICMPv6.type = 128
        else:
            f.l4.ICMPv4.type = 8
        f.traffic_direction = flow_pb2.EGRESS if i % 2 else flow_pb2.INGRESS
        f.is_reply.value = i % 5 == 0
        f.event_type.type = 4
        if i % 6 == 0:
            f.verdict = flow_pb2.DROPPED
            f.drop_reason_desc = flow_pb2.POLICY_DENIED
            f.event_type.type = 1
            f.event_type.sub_type = 133
            p = f.ingress_denied_by.add()
            p.name, p.namespace = "deny-all", dns
        else:
            f.verdict = flow_pb2.FORWARDED
            p = f.egress_allowed_by.add()
            p.name, p.namespace = "allow-web", sns
        f.interface.index = 10 + i % 3
        f.interface.name = f"lxc{i % 3:04d}"
        f.destination_service.name = f"svc-{dpod}"
        f.destination_service.namespace = dns
        out.append(f)
    return out


class FlowFactory:
    """Flows with positions for one collector boot; deterministic given the seed."""

    def __init__(self, collector_id: str, boot_id: int, node_name: str = "", seed: int = 1):
        self.collector_id = collector_id
        self.boot_id = boot_id
        self.node_name = node_name or collector_id
        self._templates = _templates(self.node_name, seed)
        self._rng = random.Random(seed ^ boot_id)

    def make(self, seq: int, time_ns: int) -> flow_pb2.Flow:
        f = flow_pb2.Flow()
        f.CopyFrom(self._templates[seq % len(self._templates)])
        f.time.seconds, f.time.nanos = divmod(time_ns, 1_000_000_000)
        digest = hashlib.blake2b(
            f"{self.collector_id}/{self.boot_id}/{seq}".encode(), digest_size=16
        ).digest()
        f.uuid = str(uuid.UUID(bytes=digest))
        ext = extensions_pb2.FlowExtension(
            packets=1 + seq % 7,
            bytes=60 + (seq * 37) % 1400,
            reason=extensions_pb2.EVENT_CONNECTION_START,
        )
        ext.position.collector_id = self.collector_id
        ext.position.boot_id = self.boot_id
        ext.position.sequence = seq
        set_flow_extension(f, ext)
        return f


@dataclass
class ClientStats:
    batches_sent: int = 0
    batches_resent: int = 0
    acks: int = 0
    connects: int = 0
    stream_errors: int = 0
    flow_controls: int = 0
    max_spool: int = 0
    hello_acked: dict[int, int] = field(default_factory=dict)
    last_error: str = ""
    error_kinds: dict[str, int] = field(default_factory=dict)
    # acks of one stream arriving below an earlier ack of the same boot (must stay 0:
    # collectors may treat an ack as covering every earlier batch)
    out_of_order_acks: int = 0


class SyntheticCollector:
    """Ships ``total_flows`` flows in batches of ``batch_size`` to a relay."""

    def __init__(
        self,
        target: str,
        collector_id: str,
        total_flows: int,
        *,
        batch_size: int = 1000,
        boot_id: int | None = None,
        spool_limit: int = 256,
        time_spread_s: float = 120.0,
        start_ns: int | None = None,
        seed: int = 1,
        backoff_max_s: float = 2.0,
        on_batch_acked: Callable[[int, int], None] | None = None,
        max_rate: float | None = None,
    ) -> None:
        self.target = target
        self.collector_id = collector_id
        self.total_flows = total_flows
        self.batch_size = batch_size
        self.boot_id = boot_id or time.time_ns()
        self.spool_limit = spool_limit
        self.factory = FlowFactory(collector_id, self.boot_id, seed=seed)
        self._start_ns = (
            start_ns if start_ns is not None else time.time_ns() - int(time_spread_s * 1e9)
        )
        self._step_ns = int(time_spread_s * 1e9 / max(1, total_flows))
        self.backoff_max_s = backoff_max_s
        self.on_batch_acked = on_batch_acked
        self.max_rate = max_rate  # flows per second generated at most (None: no limit)
        self.stats = ClientStats()
        self.spool: OrderedDict[int, ingest_pb2.Batch] = OrderedDict()
        self.acked: set[int] = set()
        self.last_batch_seq = 0
        self._next_flow = 1
        self._produced_all = False
        self._spool_changed = asyncio.Event()
        self._max_in_flight = 8
        self._pause_until = 0.0
        self._sent_once: set[int] = set()

    @property
    def done(self) -> bool:
        return self._produced_all and not self.spool

    def _make_batch(self) -> ingest_pb2.Batch | None:
        if self._next_flow > self.total_flows:
            return None
        n = min(self.batch_size, self.total_flows - self._next_flow + 1)
        self.last_batch_seq += 1
        batch = ingest_pb2.Batch(boot_id=self.boot_id, sequence=self.last_batch_seq)
        for seq in range(self._next_flow, self._next_flow + n):
            batch.flows.append(self.factory.make(seq, self._start_ns + seq * self._step_ns))
        batch.created.FromNanoseconds(time.time_ns())
        self._next_flow += n
        return batch

    async def _produce(self) -> None:
        t0 = time.monotonic()
        while True:
            if self.max_rate:
                ahead = (self._next_flow - 1) / self.max_rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            while len(self.spool) >= self.spool_limit:
                self._spool_changed.clear()
                await self._spool_changed.wait()
            batch = self._make_batch()
            if batch is None:
                self._produced_all = True
                self._spool_changed.set()
                return
            self.spool[batch.sequence] = batch
            self.stats.max_spool = max(self.stats.max_spool, len(self.spool))
            self._spool_changed.set()
            await asyncio.sleep(0)

    async def run(self, timeout: float | None = None) -> ClientStats:
        """Ship everything; return when every batch is acked (or raise on timeout)."""
        producer = asyncio.create_task(self._produce())
        try:
            await asyncio.wait_for(self._ship(), timeout)
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
        return self.stats

    async def _ship(self) -> None:
        backoff = 0.05
        while not self.done:
            try:
                await self._one_stream()
                backoff = 0.05
            except Exception as exc:  # a collector never gives up: back off, reconnect
                self.stats.stream_errors += 1
                self.stats.last_error = (
                    exc.code().name
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else f"{type(exc).__name__}: {exc}"
                )
                self.stats.error_kinds[self.stats.last_error.split(":")[0]] = (
                    self.stats.error_kinds.get(self.stats.last_error.split(":")[0], 0) + 1
                )
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(self.backoff_max_s, backoff * 2)

    async def _one_stream(self) -> None:
        async with grpc.aio.insecure_channel(
            self.target, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = ingest_pb2_grpc.IngestStub(channel)
            call = stub.Push()
            self.stats.connects += 1
            hello = ingest_pb2.Hello(
                collector_id=self.collector_id,
                node_name=self.factory.node_name,
                boot_id=self.boot_id,
                version="synthetic",
            )
            await call.write(ingest_pb2.PushRequest(hello=hello))
            first = await call.read()
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "hello_ack":
                raise ConnectionError("relay did not answer Hello with HelloAck")
            ack = first.hello_ack
            acked_upto = {a.boot_id: a.sequence for a in ack.acked}
            self.stats.hello_acked = dict(acked_upto)
            upto = acked_upto.get(self.boot_id, 0)
            for seq in [s for s in self.spool if s <= upto]:
                self._ack(seq)
            self._max_in_flight = max(1, ack.max_in_flight or 8)
            in_flight: set[int] = set()
            window = asyncio.Event()
            window.set()

            async def receive() -> None:
                last_ack = 0
                while True:
                    msg = await call.read()
                    if msg is grpc.aio.EOF:
                        if self.done:
                            return
                        raise ConnectionError("relay closed the stream")
                    kind = msg.WhichOneof("kind")
                    if kind == "ack":
                        if msg.ack.boot_id == self.boot_id:
                            if msg.ack.sequence < last_ack:
                                self.stats.out_of_order_acks += 1
                            last_ack = max(last_ack, msg.ack.sequence)
                            in_flight.discard(msg.ack.sequence)
                            self._ack(msg.ack.sequence)
                        window.set()
                    elif kind == "flow_control":
                        self.stats.flow_controls += 1
                        fc = msg.flow_control
                        if fc.max_in_flight:
                            self._max_in_flight = fc.max_in_flight
                        self._pause_until = time.monotonic() + fc.retry_after_ms / 1000
                        window.set()

            async def send() -> None:
                sent_before = set(self._sent_once)
                while not self.done:
                    pending = [s for s in self.spool if s not in in_flight]
                    pause = self._pause_until - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(min(pause, 0.5))
                        continue
                    if not pending or len(in_flight) >= self._max_in_flight:
                        window.clear()
                        self._spool_changed.clear()
                        waiters = [
                            asyncio.create_task(window.wait()),
                            asyncio.create_task(self._spool_changed.wait()),
                        ]
                        try:
                            await asyncio.wait(
                                waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED
                            )
                        finally:
                            for w in waiters:
                                w.cancel()
                        continue
                    seq = pending[0]
                    in_flight.add(seq)
                    await call.write(ingest_pb2.PushRequest(batch=self.spool[seq]))
                    self.stats.batches_sent += 1
                    if seq in sent_before:
                        self.stats.batches_resent += 1
                    self._sent_once.add(seq)
                await call.done_writing()

            recv_task = asyncio.create_task(receive())
            send_task = asyncio.create_task(send())
            try:
                done, _ = await asyncio.wait(
                    {recv_task, send_task}, return_when=asyncio.FIRST_COMPLETED
                )
                for t in done:
                    t.result()
                if send_task in done:  # everything acked: let the relay close the stream
                    with contextlib.suppress(
                        asyncio.TimeoutError, ConnectionError, grpc.aio.AioRpcError
                    ):
                        await asyncio.wait_for(asyncio.shield(recv_task), 5)
            finally:
                for t in (recv_task, send_task):
                    t.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t
                call.cancel()

    def _ack(self, seq: int) -> None:
        if self.spool.pop(seq, None) is not None:
            self.acked.add(seq)
            self.stats.acks += 1
            self._spool_changed.set()
            if self.on_batch_acked is not None:
                self.on_batch_acked(self.boot_id, seq)
