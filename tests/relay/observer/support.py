"""Helpers for the relay read-API tests (prefix srq): an in-process relay on its own
event loop thread (so tests talk to it with blocking gRPC clients), ingest clients
that hold their stream open (connected nodes), and followers that collect what they
receive."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from relay.server import RelayConfig, RelayServer
from relay.store import IngestBatch, open_store
from sensilla.protos import flow_pb2, ingest_pb2, ingest_pb2_grpc, observer_pb2

T = TypeVar("T")
_db = itertools.count(1)


def chdb_url(d: Path, name: str = "srq") -> str:
    return f"chdb://{d}?database={name}_{next(_db)}"


def load_store(url: str, batches: Sequence[IngestBatch]) -> None:
    st = open_store(url)
    try:
        for i in range(0, len(batches), 20):
            st.write_batches(list(batches[i : i + 20]))
    finally:
        st.close()


class RelayThread:
    """A RelayServer on a private event loop in a thread."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.relay: RelayServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        assert self.relay is not None
        return self.relay.addresses[0]

    @property
    def api(self) -> Any:
        assert self.relay is not None
        return self.relay.api

    def start(self, timeout: float = 60) -> RelayThread:
        self._thread = threading.Thread(target=self._run, name="srq-relay", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("relay did not start")
        if self._error is not None:
            raise RuntimeError(f"relay failed to start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.relay = RelayServer(self.config)
            try:
                await self.relay.start()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                with contextlib.suppress(Exception):
                    await self.relay.stop(grace=0)
                return
            self._ready.set()
            await self._stop.wait()
            await self.relay.stop(grace=1)

        asyncio.run(main())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def soon(self, fn: Callable[[], T]) -> T:
        """fn() on the relay's loop."""

        async def run() -> T:
            return fn()

        return self.call(run())

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(60)
        self._thread = None


@contextlib.contextmanager
def running_relay(url: str, **config: Any) -> Iterator[RelayThread]:
    cfg = RelayConfig(
        store_url=url,
        listen=["127.0.0.1:0"],
        max_round_delay=config.pop("max_round_delay", 0.02),
        retention_interval_s=0,
        **config,
    )
    r = RelayThread(cfg).start()
    try:
        yield r
    finally:
        r.stop()


class HeldCollector:
    """An ingest client that says Hello, pushes batches, and keeps its stream open
    until closed (a connected node)."""

    def __init__(self, address: str, collector_id: str, boot_id: int, observer_address: str = ""):
        self.channel = grpc.insecure_channel(address)
        self.collector_id = collector_id
        self.boot_id = boot_id
        self._out: list[ingest_pb2.PushRequest | None] = []
        self._cond = threading.Condition()
        self.responses: list[ingest_pb2.PushResponse] = []
        hello = ingest_pb2.Hello(
            collector_id=collector_id, node_name=collector_id, boot_id=boot_id,
            observer_address=observer_address, version="srq-held",
        )  # fmt: skip
        self._send(ingest_pb2.PushRequest(hello=hello))
        stub = ingest_pb2_grpc.IngestStub(self.channel)
        self._call = stub.Push(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _send(self, req: ingest_pb2.PushRequest | None) -> None:
        with self._cond:
            self._out.append(req)
            self._cond.notify_all()

    def _requests(self) -> Iterator[ingest_pb2.PushRequest]:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._out))
                req = self._out.pop(0)
            if req is None:
                return
            yield req

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for resp in self._call:
                with self._cond:
                    self.responses.append(resp)
                    self._cond.notify_all()

    def push(self, batch: ingest_pb2.Batch, timeout: float = 30, wait: bool = True) -> None:
        """Send a batch (and wait for its ack)."""
        self._send(ingest_pb2.PushRequest(batch=batch))
        if wait:
            self.wait_acked(batch, timeout)

    def wait_acked(self, batch: ingest_pb2.Batch, timeout: float = 30) -> None:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: any(
                    r.HasField("ack") and r.ack.sequence == batch.sequence
                    and r.ack.boot_id == batch.boot_id
                    for r in self.responses
                ),
                timeout,
            )  # fmt: skip
        if not ok:
            raise TimeoutError(f"batch {batch.sequence} not acked")

    def wait_hello_ack(self, timeout: float = 30) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: any(r.HasField("hello_ack") for r in self.responses), timeout
            ):
                raise TimeoutError("no HelloAck")

    def close(self) -> None:
        self._send(None)
        self._call.cancel()
        self.channel.close()


def to_batch(b: IngestBatch) -> ingest_pb2.Batch:
    out = ingest_pb2.Batch(boot_id=b.boot_id, sequence=b.batch_seq, flows=list(b.flows))
    out.created.FromNanoseconds(time.time_ns())
    return out


class Follower:
    """A GetFlows stream read on a thread into ``responses``."""

    def __init__(self, address: str, request: observer_pb2.GetFlowsRequest) -> None:
        self.channel = grpc.insecure_channel(address)
        from sensilla.protos import observer_pb2_grpc

        self.call = observer_pb2_grpc.ObserverStub(self.channel).GetFlows(request)
        self.call.initial_metadata()  # the relay sends them once the follow is in place
        self.responses: list[observer_pb2.GetFlowsResponse] = []
        self.error: grpc.RpcError | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for r in self.call:
                with self._lock:
                    self.responses.append(r)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err

    @property
    def flows(self) -> list[flow_pb2.Flow]:
        with self._lock:
            return [r.flow for r in self.responses if r.HasField("flow")]

    @property
    def lost(self) -> int:
        with self._lock:
            return sum(
                r.lost_events.num_events_lost for r in self.responses if r.HasField("lost_events")
            )

    def wait_flows(self, n: int, timeout: float = 120) -> list[flow_pb2.Flow]:
        """The flows received once n flows (or losses) arrived, the stream failed, or
        nothing arrived for ``timeout`` seconds."""
        last, since = -1, time.monotonic()
        while time.monotonic() - since < timeout:
            got = self.flows
            if len(got) + self.lost >= n or self.error is not None:
                return got
            if len(got) != last:
                last, since = len(got), time.monotonic()
            time.sleep(0.05)
        return self.flows

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)
        self.channel.close()


def make_state_dir(path: Path, lab: str = "srqfake") -> Any:
    """A lab state directory with the default lab's objects (two nodes, x/y/z with
    a, b, c), written without creating any namespace (no root needed)."""
    from sensilla.lab.layout import build_layout
    from sensilla.lab.runtime import k8s_objects
    from sensilla.lab.spec import default_spec
    from sensilla.lab.state import StateDir

    spec = default_spec()
    state = StateDir(path)
    state.apply(k8s_objects(build_layout(spec, lab, 9), spec))
    return state
