"""The ingest writer: one task that turns queued batches into large store writes.

- Batches from every stream queue here; the writer takes them in arrival order and
  writes them in rounds of up to ``max_round_flows`` flows or ``max_round_delay``
  seconds after the first one, whichever comes first, in a worker thread (the store is
  blocking; the grpc.aio loop never waits on it).
- A round is acked only after ``Store.write_batches`` returned (durable). A failing
  round is retried, with capped exponential backoff, until it succeeds: the store's
  markers make the retry exactly-once, and nothing is acked meanwhile.
- Memory is bounded: ``submit`` waits while more than ``max_pending_flows`` flows are
  queued or being written (the stream stops reading, HTTP/2 flow control pushes back
  to the collector, which spools).
- Store health drives flow control: ``ok`` (normal window), ``slow`` (the queue is
  over half full, or one write took longer than ``slow_after_s``: smaller window) and
  ``failing`` (writes fail: window 1 and ``retry_after_ms`` = the current backoff).
  Listeners get every change (the service sends FlowControl to the collectors).
- Jobs (a collector's Hello preparation, retention) run in the same order as rounds,
  so a Hello sees every batch queued before it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from relay.metrics import RelayMetrics
from relay.store import IngestBatch, Store, WriteResult

log = logging.getLogger(__name__)

T = TypeVar("T")

STATE_OK = "ok"
STATE_SLOW = "slow"
STATE_FAILING = "failing"


class AckSink(Protocol):
    def acked(self, key: tuple[str, int, int], result: WriteResult) -> None: ...


@dataclass
class Pending:
    batch: IngestBatch
    sink: AckSink | None
    received: float = field(default_factory=time.monotonic)

    @property
    def nflows(self) -> int:
        return max(1, len(self.batch.flows))


@dataclass
class _Job:
    fn: Callable[[Store], Any]
    future: asyncio.Future[Any]


@dataclass(frozen=True)
class FlowState:
    state: str
    max_in_flight: int
    retry_after_ms: int


class IngestWriter:
    def __init__(
        self,
        store: Store,
        metrics: RelayMetrics,
        *,
        max_round_flows: int = 20_000,
        max_round_delay: float = 0.25,
        max_pending_flows: int = 200_000,
        slow_after_s: float = 10.0,
        max_in_flight: int = 8,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        retention_interval_s: float = 3600.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_round_flows = max_round_flows
        self.max_round_delay = max_round_delay
        self.max_pending_flows = max_pending_flows
        self.slow_after_s = slow_after_s
        self.max_in_flight = max_in_flight
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.retention_interval_s = retention_interval_s
        # one thread: writes are serialized (a chDB path has one writer anyway)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._queue: asyncio.Queue[Pending | _Job | None] = asyncio.Queue()
        self._pending_flows = 0
        self._capacity = asyncio.Condition()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[FlowState], None]] = []
        self._round_listeners: list[Callable[[list[IngestBatch], WriteResult], None]] = []
        self.flow_state = FlowState(STATE_OK, max_in_flight, 0)
        self.metrics.store_healthy.set(1)

    # --- public ------------------------------------------------------------------

    def add_listener(self, fn: Callable[[FlowState], None]) -> None:
        self._listeners.append(fn)

    def add_round_listener(self, fn: Callable[[list[IngestBatch], WriteResult], None]) -> None:
        """fn(batches, result) after each round is durably stored, on the event loop,
        before the acks go out (the relay's live fan-out); it must not block."""
        self._round_listeners.append(fn)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-writer")
        if self.retention_interval_s > 0:
            self._retention_task = asyncio.create_task(self._retention(), name="retention")

    async def stop(self) -> None:
        """Stop after the rounds already queued (a failing store is not waited for)."""
        if self._retention_task is not None:
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retention_task
        if self._task is not None:
            self._queue.put_nowait(None)
            self._arrived.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def pending_flows(self) -> int:
        return self._pending_flows

    async def submit(self, item: Pending) -> None:
        """Queue a batch; waits while the writer holds too many flows."""
        n = item.nflows
        async with self._capacity:
            await self._capacity.wait_for(
                lambda: (
                    self._pending_flows == 0 or self._pending_flows + n <= self.max_pending_flows
                )
            )
            self._pending_flows += n
        self.metrics.pending_flows.set(self._pending_flows)
        self._queue.put_nowait(item)
        self._arrived.set()

    async def run_job(self, fn: Callable[[Store], T]) -> T:
        """Run fn(store) in the writer thread, after everything queued before it."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(fn, fut))
        self._arrived.set()
        return await fut

    # --- internals -----------------------------------------------------------------

    def _set_state(self, state: FlowState) -> None:
        if state == self.flow_state:
            return
        self.flow_state = state
        self.metrics.flow_control.labels(state.state).inc()
        for fn in self._listeners:
            try:
                fn(state)
            except Exception:  # pragma: no cover - listeners must not break the writer
                log.exception("flow-control listener failed")

    async def _release(self, n: int) -> None:
        async with self._capacity:
            self._pending_flows -= n
            self._capacity.notify_all()
        self.metrics.pending_flows.set(self._pending_flows)

    async def _run(self) -> None:
        deferred: _Job | None = None
        while True:
            if deferred is not None:
                job, deferred = deferred, None
                await self._run_job(job)
                continue
            item = await self._queue.get()
            if item is None:
                return
            if isinstance(item, _Job):
                await self._run_job(item)
                continue
            round_items = [item]
            n = item.nflows
            deadline = time.monotonic() + self.max_round_delay
            stop = False
            while n < self.max_round_flows and not stop:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), left)
                    continue
                if nxt is None:
                    self._queue.put_nowait(None)  # stop after this round
                    stop = True
                elif isinstance(nxt, _Job):
                    deferred = nxt
                    stop = True
                else:
                    round_items.append(nxt)
                    n += nxt.nflows
            await self._write_round(round_items)

    async def _run_job(self, job: _Job) -> None:
        if job.future.cancelled():  # e.g. the Hello of a stream that is gone already
            return
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.executor, job.fn, self.store)
        except Exception as exc:
            self.metrics.store_errors.labels("job").inc()
            if not job.future.cancelled():
                job.future.set_exception(exc)
            return
        if not job.future.cancelled():
            job.future.set_result(result)

    async def _write_round(self, items: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        batches = [p.batch for p in items]
        nflows = sum(p.nflows for p in items)
        delay = self.retry_initial_s
        while True:
            t0 = time.monotonic()
            fut = loop.run_in_executor(self.executor, self.store.write_batches, batches)
            try:
                done, _ = await asyncio.wait({fut}, timeout=self.slow_after_s)
                if not done:  # the store is held busy: tell collectors to hold back
                    self._set_state(FlowState(STATE_SLOW, 1, int(self.slow_after_s * 1000)))
                result = await fut
                break
            except Exception as exc:
                self.metrics.store_errors.labels("write").inc()
                self.metrics.store_healthy.set(0)
                log.warning(
                    "store write of %d batches failed (%s: %s); retrying in %.1fs",
                    len(batches),
                    type(exc).__name__,
                    exc,
                    delay,
                )
                self._set_state(FlowState(STATE_FAILING, 1, int(delay * 1000)))
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
        took = time.monotonic() - t0
        self.metrics.store_healthy.set(1)
        self.metrics.store_write_seconds.observe(took)
        self.metrics.store_write_flows.observe(result.flows_written)
        await self._release(nflows)
        for fn in self._round_listeners:
            try:
                fn(batches, result)
            except Exception:  # pragma: no cover - listeners must not break the writer
                log.exception("round listener failed")
        if took > self.slow_after_s or self._pending_flows > self.max_pending_flows // 2:
            self._set_state(
                FlowState(STATE_SLOW, max(1, self.max_in_flight // 4), int(min(took, 5) * 1000))
            )
        else:
            self._set_state(FlowState(STATE_OK, self.max_in_flight, 0))
        now = time.monotonic()
        for p in items:
            self.metrics.batch_latency.observe(now - p.received)
            if p.sink is not None:
                p.sink.acked(p.batch.key, result)

    async def _retention(self) -> None:
        def apply(store: Store) -> list[tuple[str, str]]:
            return store.apply_retention()

        while True:
            try:
                await self.run_job(apply)
            except Exception as exc:
                self.metrics.store_errors.labels("retention").inc()
                log.warning("retention failed: %s", exc)
            await asyncio.sleep(self.retention_interval_s)
