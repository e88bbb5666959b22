"""Send sealed batches to the relay and release them when acknowledged.

One bidirectional Push stream per connection: Hello, then the spool's unacked
batches in order, at most `max_in_flight` at a time; the relay's acks release them.
After any error the stream is dropped, the shipper backs off (exponential, with
jitter, capped) and starts again from the first unacked batch. Nothing is ever
released without an ack, so a relay outage costs spool space, never flows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from collector.shipping import wire
from collector.shipping.spool import Spool
from sensilla import __version__
from sensilla.protos import ingest_pb2

log = logging.getLogger(__name__)

PUSH_METHOD = "/sensilla.ingest.v1.Ingest/Push"


@dataclass
class ShipperStats:
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    batches_sent: int = 0
    batches_acked: int = 0
    flows_acked: int = 0
    last_ack: dict[int, int] = field(default_factory=dict)  # boot id -> sequence
    last_error: str = ""


def _identity(data: bytes) -> bytes:
    return data


class Shipper:
    def __init__(
        self,
        target: str,
        spool: Spool,
        collector_id: str,
        node_name: str,
        boot_id: int,
        observer_address: str = "",
        max_in_flight: int = 8,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 2.0,
        hello_timeout_s: float = 5.0,
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
        call_metadata: Callable[[], list[tuple[str, str]]] | None = None,
    ) -> None:
        self.target = target
        self.spool = spool
        self.collector_id = collector_id
        self.node_name = node_name
        self.boot_id = boot_id
        self.observer_address = observer_address
        self.max_in_flight = max_in_flight
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.hello_timeout_s = hello_timeout_s
        # a new channel per session: TLS files are read again on every reconnect
        self.channel_factory = channel_factory or (lambda t: grpc.aio.insecure_channel(t))
        self.call_metadata = call_metadata  # e.g. the bearer token, read per session
        self.stats = ShipperStats()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def notify(self) -> None:
        """A batch was sealed (callable from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = self.backoff_initial_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any transport or protocol error: reconnect
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.info("shipping to %s interrupted: %s", self.target, self.stats.last_error)
            finally:
                if self.stats.connected:
                    self.stats.disconnects += 1
                self.stats.connected = False
            if stop.is_set():
                break
            if time.monotonic() - started > 10:
                backoff = self.backoff_initial_s  # the last session was healthy
            delay = backoff * (0.5 + random.random())
            backoff = min(backoff * 2, self.backoff_max_s)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _hello(self) -> bytes:
        hello = ingest_pb2.Hello(
            collector_id=self.collector_id,
            node_name=self.node_name,
            boot_id=self.boot_id,
            observer_address=self.observer_address,
            version=__version__,
        )
        return wire.push_hello(hello.SerializeToString())

    async def _session(self, stop: asyncio.Event) -> None:
        metadata = self.call_metadata() if self.call_metadata is not None else None
        channel = self.channel_factory(self.target)
        try:
            call = channel.stream_stream(
                PUSH_METHOD,
                request_serializer=_identity,
                response_deserializer=ingest_pb2.PushResponse.FromString,
            )(metadata=metadata)
            await call.write(self._hello())
            first = await asyncio.wait_for(call.read(), timeout=self.hello_timeout_s)
            if first is grpc.aio.EOF or not first.HasField("hello_ack"):
                raise ConnectionError("relay did not answer Hello")
            for acked in first.hello_ack.acked:
                self._release(acked.boot_id, acked.sequence)
            if first.hello_ack.max_in_flight:
                self.max_in_flight = first.hello_ack.max_in_flight
            self.stats.connected = True
            self.stats.connects += 1
            in_flight: list[tuple[int, int]] = []
            window = asyncio.Event()
            pause_until = 0.0

            async def receive() -> None:
                nonlocal pause_until
                while True:
                    msg = await call.read()
                    if msg is grpc.aio.EOF:
                        raise ConnectionError("relay closed the stream")
                    if msg.HasField("ack"):
                        self._release(msg.ack.boot_id, msg.ack.sequence)
                        key = (msg.ack.boot_id, msg.ack.sequence)
                        while in_flight and in_flight[0] <= key:
                            in_flight.pop(0)
                        window.set()
                    elif msg.HasField("flow_control"):
                        fc = msg.flow_control
                        if fc.max_in_flight:
                            self.max_in_flight = fc.max_in_flight
                        if fc.retry_after_ms:
                            pause_until = time.monotonic() + fc.retry_after_ms / 1000
                        window.set()

            async def send() -> None:
                sent: set[tuple[int, int]] = set()
                while not stop.is_set():
                    self._wake.clear()
                    progressed = False
                    for batch in self.spool.unacked():
                        if batch.key in sent:
                            continue
                        if len(in_flight) >= self.max_in_flight:
                            break
                        wait = pause_until - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                        await call.write(wire.push_batch(self.spool.payload(batch)))
                        sent.add(batch.key)
                        in_flight.append(batch.key)
                        self.stats.batches_sent += 1
                        progressed = True
                    if progressed:
                        continue
                    window.clear()
                    waits = [
                        asyncio.ensure_future(self._wake.wait()),
                        asyncio.ensure_future(window.wait()),
                        asyncio.ensure_future(stop.wait()),
                    ]
                    try:
                        await asyncio.wait(waits, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for w in waits:
                            w.cancel()
                    # forget keys of released batches so the set stays small
                    if len(sent) > 4 * self.max_in_flight + 64:
                        live = {b.key for b in self.spool.unacked()}
                        sent &= live

            receiver = asyncio.ensure_future(receive())
            sender = asyncio.ensure_future(send())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait(
                    {receiver, sender, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is not stopper and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            finally:
                for task in (receiver, sender, stopper):
                    task.cancel()
                call.cancel()
        finally:
            await channel.close(grace=None)

    def _release(self, boot_id: int, sequence: int) -> None:
        flows_before = sum(
            b.flows for b in self.spool.unacked() if b.boot_id == boot_id and b.sequence <= sequence
        )
        released = self.spool.ack_through(boot_id, sequence)
        if released:
            self.stats.batches_acked += released
            self.stats.flows_acked += flows_before
        prev = self.stats.last_ack.get(boot_id, 0)
        self.stats.last_ack[boot_id] = max(prev, sequence)
