"""A test stand-in for the relay's ingest side: stores batches in memory, acks them,
and can refuse, drop connections, delay acks, and restart on the same port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from sensilla.protos import flow_pb2, ingest_pb2, ingest_pb2_grpc


@dataclass
class Received:
    batches: dict[tuple[str, int, int], ingest_pb2.Batch] = field(default_factory=dict)
    deliveries: int = 0  # batches received, duplicates included
    hellos: list[ingest_pb2.Hello] = field(default_factory=list)
    lost: list[flow_pb2.LostEvent] = field(default_factory=list)

    def acked_through(self, collector: str, boot: int) -> int:
        seqs = sorted(s for (c, b, s) in self.batches if c == collector and b == boot)
        through = 0
        for s in seqs:
            if s != through + 1:
                break
            through = s
        return through


class _Servicer(ingest_pb2_grpc.IngestServicer):
    def __init__(self, owner: IngestServer) -> None:
        self.owner = owner

    async def Push(
        self,
        request_iterator: AsyncIterator[ingest_pb2.PushRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ingest_pb2.PushResponse]:
        owner = self.owner
        hello: ingest_pb2.Hello | None = None
        count = 0
        async for req in request_iterator:
            if req.HasField("hello"):
                hello = req.hello
                owner.received.hellos.append(hello)
                boots = {b for (c, b, _) in owner.received.batches if c == hello.collector_id}
                ack = ingest_pb2.HelloAck(max_in_flight=owner.max_in_flight)
                for boot in sorted(boots):
                    ack.acked.add(
                        boot_id=boot,
                        sequence=owner.received.acked_through(hello.collector_id, boot),
                    )
                yield ingest_pb2.PushResponse(hello_ack=ack)
                continue
            assert hello is not None, "batch before hello"
            batch = req.batch
            count += 1
            owner.received.deliveries += 1
            if owner.drop_every and count % owner.drop_every == 0:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "injected disconnect")
            if owner.ack_delay_s:
                await asyncio.sleep(owner.ack_delay_s)
            key = (hello.collector_id, batch.boot_id, batch.sequence)
            owner.received.batches.setdefault(key, batch)
            owner.received.lost.extend(batch.lost_events)
            yield ingest_pb2.PushResponse(
                ack=ingest_pb2.Ack(boot_id=batch.boot_id, sequence=batch.sequence)
            )


class IngestServer:
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received = Received()
        self.drop_every = 0
        self.ack_delay_s = 0.0
        self.max_in_flight = 8
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        ingest_pb2_grpc.add_IngestServicer_to_server(_Servicer(self), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
