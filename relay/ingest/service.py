"""The sensilla.ingest.v1 Ingest service (grpc.aio).

One ``Push`` stream per collector: Hello → HelloAck (per boot, the highest batch
sequence stored with no gap; the window ``max_in_flight``), then batches → one Ack per
batch once it is durably stored, and FlowControl whenever the store's state changes.

- Malformed input ends the stream with INVALID_ARGUMENT naming the field.
- A second stream of the same collector replaces the first (which ends with ABORTED):
  one writer per collector at a time is what keeps the store's reconciliation exact.
- A store that cannot prepare the Hello (unreachable) ends the stream with
  UNAVAILABLE; the collector backs off and reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from relay.ingest.writer import STATE_OK, FlowState, IngestWriter, Pending
from relay.metrics import RelayMetrics
from relay.store import BatchError, IngestBatch, Store, WriteResult, validate_batch
from sensilla.protos import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)


class _Invalid(ValueError):
    """A protocol violation on the stream."""


class Session:
    """One collector's stream."""

    def __init__(
        self, hello: ingest_pb2.Hello, peer: str, max_in_flight: int, metrics: RelayMetrics
    ) -> None:
        self.collector_id = hello.collector_id
        self.node_name = hello.node_name or hello.collector_id
        self.boot_id = hello.boot_id
        self.observer_address = hello.observer_address
        self.version = hello.version
        self.peer = peer
        self.metrics = metrics
        self.out: asyncio.Queue[ingest_pb2.PushResponse | None] = asyncio.Queue()
        self.window = asyncio.Semaphore(max_in_flight)
        # key -> (created_ns, flows, lost events)
        self.unacked: dict[tuple[str, int, int], tuple[int, int, int]] = {}
        self.drained = asyncio.Event()
        self.drained.set()
        self.closed = False
        self.replaced = asyncio.Event()

    def sent(self, key: tuple[str, int, int], created_ns: int, flows: int, lost: int) -> None:
        self.unacked[key] = (created_ns, flows, lost)
        self.drained.clear()
        self.metrics.unacked_batches.labels(self.collector_id).set(len(self.unacked))

    def acked(self, key: tuple[str, int, int], result: WriteResult) -> None:
        """Called by the writer once the batch is stored (or found stored)."""
        info = self.unacked.pop(key, None)
        if info is None:
            return
        created_ns, nflows, lost = info
        self.window.release()
        c, boot, seq = key
        m = self.metrics
        m.unacked_batches.labels(c).set(len(self.unacked))
        if key in result.duplicates:
            m.duplicate_batches.labels(c).inc()
        else:
            m.batches.labels(c).inc()
            m.flows.labels(c).inc(nflows)
            if lost:
                m.lost_events.labels(c).inc(lost)
        if key in result.recovered:
            m.recovered_batches.labels(c).inc()
        acked = result.acked.get((c, boot))
        if acked is not None and boot == self.boot_id:
            m.acked_sequence.labels(c).set(acked)
            m.acked_boot.labels(c).set(boot / 1e9)
        if created_ns:
            m.lag.labels(c).set(max(0.0, (time.time_ns() - created_ns) / 1e9))
        if not self.closed:
            self.out.put_nowait(
                ingest_pb2.PushResponse(ack=ingest_pb2.Ack(boot_id=boot, sequence=seq))
            )
        if not self.unacked:
            self.drained.set()

    def flow_control(self, state: FlowState) -> None:
        if not self.closed:
            self.out.put_nowait(
                ingest_pb2.PushResponse(
                    flow_control=ingest_pb2.FlowControl(
                        max_in_flight=state.max_in_flight, retry_after_ms=state.retry_after_ms
                    )
                )
            )

    def close(self) -> None:
        self.closed = True
        self.out.put_nowait(None)


def _check_hello(hello: ingest_pb2.Hello) -> str | None:
    cid = hello.collector_id
    if not cid:
        return "hello.collector_id is required"
    if len(cid) > 253 or not cid.isprintable():
        return "hello.collector_id must be 1..253 printable characters"
    if hello.boot_id == 0:
        return "hello.boot_id must be positive (nanoseconds since the epoch at start)"
    if len(hello.node_name) > 253 or len(hello.observer_address) > 300:
        return "hello.node_name or hello.observer_address is too long"
    return None


class IngestService(ingest_pb2_grpc.IngestServicer):
    def __init__(self, writer: IngestWriter, metrics: RelayMetrics) -> None:
        self.writer = writer
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        writer.add_listener(self._on_flow_state)

    def _on_flow_state(self, state: FlowState) -> None:
        for s in list(self.sessions.values()):
            s.flow_control(state)

    def connected(self) -> list[Session]:
        return list(self.sessions.values())

    async def Push(
        self,
        request_iterator: AsyncIterator[ingest_pb2.PushRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        if first.WhichOneof("kind") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be hello")
        hello = first.hello
        problem = _check_hello(hello)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        session = Session(hello, context.peer(), self.writer.max_in_flight, self.metrics)
        old = self.sessions.get(session.collector_id)
        if old is not None:
            log.info("collector %s reconnected; ending its previous stream", old.collector_id)
            old.replaced.set()
            old.close()
        self.sessions[session.collector_id] = session
        self.metrics.connected.set(len(self.sessions))
        sender: asyncio.Task[None] | None = None
        try:
            cid, node, boot = session.collector_id, session.node_name, session.boot_id

            def prepare(store: Store) -> dict[int, int]:
                store.record_hello(
                    cid, node, boot, session.observer_address, session.version, session.peer
                )
                return store.prepare_collector(cid)

            try:
                acked = await self.writer.run_job(prepare)
            except Exception as exc:
                log.warning("cannot prepare collector %s: %s", cid, exc)
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE, "the relay's store is unavailable; retry later"
                )
            hello_ack = ingest_pb2.HelloAck(max_in_flight=self.writer.max_in_flight)
            for b, s in sorted(acked.items()):
                hello_ack.acked.add(boot_id=b, sequence=s)
            if boot in acked:
                self.metrics.acked_sequence.labels(cid).set(acked[boot])
                self.metrics.acked_boot.labels(cid).set(boot / 1e9)
            await context.write(ingest_pb2.PushResponse(hello_ack=hello_ack))
            if self.writer.flow_state.state != STATE_OK:
                session.flow_control(self.writer.flow_state)
            log.info(
                "collector %s (node %s, boot %d) connected from %s", cid, node, boot, session.peer
            )
            sender = asyncio.create_task(self._send(session, context))
            receiver = asyncio.create_task(self._receive(session, context))
            replaced = asyncio.create_task(session.replaced.wait())
            try:
                await asyncio.wait({receiver, replaced}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                replaced.cancel()
                if not receiver.done():
                    receiver.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiver
            if session.replaced.is_set():
                await context.abort(
                    grpc.StatusCode.ABORTED, "replaced by a newer stream of this collector"
                )
            failure = receiver.exception()
            if isinstance(failure, BatchError | _Invalid):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(failure))
            if failure is not None:
                raise failure
            # the collector finished sending: end the stream once everything is acked
            await session.drained.wait()
            session.close()
            await sender
        finally:
            session.close()
            if sender is not None and not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            if self.sessions.get(session.collector_id) is session:
                del self.sessions[session.collector_id]
            self.metrics.connected.set(len(self.sessions))
            self.metrics.unacked_batches.labels(session.collector_id).set(0)

    async def _send(self, session: Session, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while True:
            msg = await session.out.get()
            if msg is None:
                return
            await context.write(msg)

    async def _receive(self, session: Session, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        while True:
            req = await context.read()
            if req is grpc.aio.EOF:
                return
            kind = req.WhichOneof("kind")
            if kind != "batch":
                raise _Invalid("hello may be sent only once, first")
            b = req.batch
            try:
                created_ns = b.created.ToNanoseconds() if b.HasField("created") else 0
            except ValueError as exc:
                raise _Invalid(f"batch.created: {exc}") from None
            batch = IngestBatch(
                collector_id=session.collector_id,
                boot_id=b.boot_id,
                batch_seq=b.sequence,
                flows=b.flows,
                lost_events=b.lost_events,
                created_ns=created_ns,
                node_name=session.node_name,
            )
            validate_batch(batch)  # BatchError ends the stream with INVALID_ARGUMENT
            await session.window.acquire()
            if batch.key in session.unacked:  # sent twice before its ack: one ack comes
                session.window.release()
                continue
            lost = sum(e.num_events_lost for e in b.lost_events)
            session.sent(batch.key, batch.created_ns, len(b.flows), lost)
            await self.writer.submit(Pending(batch, session))
