"""A tiny grpc.aio Observer for the observe tests: records the GetFlows requests it
receives and streams canned responses (then, with hold=True, waits until the client
cancels)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sensilla.protos import observer_pb2, observer_pb2_grpc


class RecordingObserver(observer_pb2_grpc.ObserverServicer):
    def __init__(self) -> None:
        self.requests: list[observer_pb2.GetFlowsRequest] = []
        self.responses: list[observer_pb2.GetFlowsResponse] = []
        self.hold = False  # keep the stream open after the canned responses
        self.error: tuple[grpc.StatusCode, str] | None = None
        self.cancelled = threading.Event()
        self.streaming = threading.Event()

    async def GetFlows(
        self, request: observer_pb2.GetFlowsRequest, context: Any
    ) -> AsyncIterator[observer_pb2.GetFlowsResponse]:
        self.requests.append(request)
        if self.error is not None:
            await context.abort(self.error[0], self.error[1])
        try:
            for resp in self.responses:
                yield resp
            self.streaming.set()
            while self.hold:
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class ObserverServer:
    """Runs a RecordingObserver on 127.0.0.1 in a background event loop."""

    def __init__(self) -> None:
        self.observer = RecordingObserver()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="sfi-observer", daemon=True
        )
        self.thread.start()
        self.server: grpc.aio.Server | None = None
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.address = f"127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self.server = grpc.aio.server()
        observer_pb2_grpc.add_ObserverServicer_to_server(self.observer, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    async def _stop(self) -> None:
        assert self.server is not None
        await self.server.stop(grace=None)

    def close(self) -> None:
        try:
            self.observer.hold = False
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
