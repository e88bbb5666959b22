"""Resumable flow streams: every flow after a position, exactly once, history first,
then live.

A stream keeps a cursor per collector boot: the highest flow sequence it has passed
(delivered, or filtered out) and the next batch to read. It works in *rounds*: each
round reads the store's acked batch position of every boot (``ingest_positions``:
the highest batch stored with no gap before it) and delivers every flow of the
batches between the cursor and that position, in sequence order per boot. Boots are
merged by flow time, so the stream is in time order across nodes wherever each
node's flows are. With ``follow`` the stream then waits for the next stored round
(the ingest writer notifies) or a poll interval, and reads again.

Why this is exactly once:
- a boot's flows come out in increasing sequence order, and only from batches that
  are stored with nothing missing before them, so no flow that is still to arrive
  can sort before one already delivered: the highest sequence delivered per boot
  (what each flow's Position says) is a complete position;
- flows are read by position from the store's deduplicating reads, so copies of a
  batch written twice (a resend after a relay crash) are one flow;
- a client resumes with ``ResumeRequest.after`` = the highest Position it received
  per boot, and gets the flows above it.

Collectors' loss reports (LostEvent in their batches) are passed on where the batch
sits; flows the store no longer holds (retention dropped them before they were
read) are reported as a LostEvent (HUBBLE_RING_BUFFER) with their count.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from relay.siem import reader
from relay.siem.position import BootKey, Positions
from relay.store import Store
from sensilla.protos import flow_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

FLOW = "flow"
LOST = "lost"


class Notifier:
    """Wakes streams when the ingest writer stored a round (or anything else that
    may have moved the store's acked positions)."""

    def __init__(self) -> None:
        self.generation = 0
        self._waiters: set[asyncio.Event] = set()

    def notify(self, *_args: Any) -> None:
        self.generation += 1
        for ev in list(self._waiters):
            ev.set()

    def notify_threadsafe(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(self.notify)

    async def wait(self, seen: int, timeout: float) -> int:
        """Wait until the generation moves past ``seen`` (or ``timeout``)."""
        if self.generation != seen:
            return self.generation
        ev = asyncio.Event()
        self._waiters.add(ev)
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(ev)
        return self.generation


@dataclass
class StreamItem:
    """A flow or a loss notice, with the boot it comes from."""

    kind: str  # FLOW or LOST
    key: BootKey
    seq: int  # the flow's sequence (0 for a loss notice)
    time_ns: int
    node_name: str
    flow: flow_pb2.Flow | None = None
    lost: flow_pb2.LostEvent | None = None


@dataclass
class Chunk:
    items: list[StreamItem]
    position: Positions  # everything up to here passed (delivered or filtered out)


@dataclass
class _Cursor:
    key: BootKey
    seq: int = 0  # highest flow sequence passed
    next_batch: int | None = None  # None: not positioned yet (first read finds it)
    from_client: bool = False


@dataclass
class _Raw:
    """A buffered entry of one boot: a flow not parsed yet, a loss, or a batch end."""

    kind: str  # "flow" | "lost" | "end"
    time_ns: int
    seq: int = 0
    batch_seq: int = 0
    blob: bytes = b""
    lost: flow_pb2.LostEvent | None = None
    node_name: str = ""


class _BootReader:
    """Reads one boot's batches up to ``hi`` in chunks; a FIFO of raw entries."""

    def __init__(self, stream: ResumeStream, cur: _Cursor, hi: int, fetch_rows: int) -> None:
        self.stream = stream
        self.cur = cur
        self.hi = hi
        self.fetch_rows = fetch_rows
        self.markers: deque[reader.Marker] = deque()
        self.buffer: deque[_Raw] = deque()
        self.scan_seq = cur.seq  # sequence read up to (ahead of cur.seq)
        self.scan_batch = cur.next_batch  # next batch to read markers from
        self.exhausted = False
        self.last_time = 0

    @property
    def head_time(self) -> int:
        return self.buffer[0].time_ns if self.buffer else 0

    async def fill(self) -> None:
        while not self.buffer and not self.exhausted:
            if not self.markers and not await self._load_markers():
                self.exhausted = True
                # every batch up to hi is passed: nothing left to read from them
                self.buffer.append(_Raw("end", self.last_time, batch_seq=self.hi))
                return
            await self._load_flows()

    async def _load_markers(self) -> bool:
        c, b = self.cur.key
        s = self.stream
        if self.scan_batch is None and self.scan_seq <= 0:
            # nothing of this boot passed yet: from its first batch, so that loss
            # reports in batches without flows (a restarted collector's first batch
            # reports what was lost while it was down) are delivered too
            self.scan_batch = 1
        if self.scan_batch is None:
            # positioning: the first batch holding a sequence above the cursor
            ms = await s.run(
                reader.committed_markers,
                s.store,
                c,
                b,
                1,
                self.hi,
                limit=s.marker_page,
                after_seq=self.scan_seq,
            )
        else:
            if self.scan_batch > self.hi:
                return False
            ms = await s.run(
                reader.committed_markers,
                s.store,
                c,
                b,
                self.scan_batch,
                self.hi,
                limit=s.marker_page,
            )
        if not ms:
            return False
        self.markers.extend(ms)
        self.scan_batch = ms[-1].batch_seq + 1
        return True

    async def _load_flows(self) -> None:
        c, b = self.cur.key
        s = self.stream
        group: list[reader.Marker] = []
        expected = 0
        while self.markers and (not group or expected < self.fetch_rows):
            m = self.markers.popleft()
            group.append(m)
            if m.flows and m.last_seq > self.scan_seq:
                expected += m.last_seq - max(self.scan_seq, m.first_seq - 1)
        with_flows = [m for m in group if m.flows and m.last_seq > self.scan_seq]
        rows: list[tuple[int, int, bytes]] = []
        if with_flows:
            rows = await s.run(
                reader.fetch_flows,
                s.store,
                c,
                b,
                self.scan_seq,
                with_flows[-1].last_seq,
                min(m.min_time for m in with_flows),
                max(m.max_time for m in with_flows),
            )
        i = 0
        for m in group:
            t_default = m.min_time * 1_000_000_000
            for blob in m.lost_events:
                ev = flow_pb2.LostEvent.FromString(blob)
                self.buffer.append(_Raw(LOST, t_default, lost=ev, node_name=m.node_name))
            got = 0
            if m.flows and m.last_seq > self.scan_seq:
                lo = max(self.scan_seq, m.first_seq - 1)
                while i < len(rows) and rows[i][0] <= m.last_seq:
                    seq, t, blob = rows[i]
                    i += 1
                    if seq <= lo:
                        continue
                    self.buffer.append(_Raw(FLOW, t, seq=seq, blob=blob, node_name=m.node_name))
                    self.last_time = t
                    got += 1
                missing = (m.last_seq - lo) - got
                if missing > 0:
                    log.warning(
                        "resume: %s/%s batch %d: %d flows no longer stored (retention)",
                        c,
                        b,
                        m.batch_seq,
                        missing,
                    )
                    ev = flow_pb2.LostEvent(
                        source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=missing
                    )
                    self.buffer.append(_Raw(LOST, t_default, lost=ev, node_name=m.node_name))
                self.scan_seq = max(self.scan_seq, m.last_seq)
            self.buffer.append(
                _Raw("end", self.last_time or t_default, seq=m.last_seq, batch_seq=m.batch_seq)
            )


@dataclass
class ResumeStream:
    """Flows after ``after`` (positions), exactly once; see the module docstring.

    ``matches`` filters flows (they still move the position); ``since_ns`` applies to
    boots the position does not name; ``until_ns`` drops later flows and ends the
    stream after one round; ``limit`` ends it after that many flows.
    """

    store: Store
    executor: Executor | None
    after: Positions | None = None
    matches: Callable[[flow_pb2.Flow], bool] | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    follow: bool = True
    limit: int = 0
    notifier: Notifier | None = None
    poll_s: float = 1.0
    fetch_rows: int = 5000
    marker_page: int = 256
    max_buffered: int = 50_000  # flows buffered across boots in one round
    cursors: dict[BootKey, _Cursor] = field(default_factory=dict)
    delivered: int = 0
    rounds: int = 0

    def __post_init__(self) -> None:
        for key, seq in (self.after or {}).items():
            self.cursors[key] = _Cursor(key, seq=seq, from_client=True)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    @property
    def position(self) -> Positions:
        """What the stream has passed so far, per boot."""
        return {k: c.seq for k, c in self.cursors.items() if c.seq > 0}

    def _passes(self, cur: _Cursor, flow: flow_pb2.Flow, t: int) -> bool:
        if self.since_ns is not None and not cur.from_client and t < self.since_ns:
            return False
        if self.until_ns is not None and t > self.until_ns:
            return False
        return self.matches is None or self.matches(flow)

    async def _round(self) -> AsyncIterator[StreamItem]:
        acked = await self.run(reader.acked_batches, self.store)
        self.rounds += 1
        readers: list[_BootReader] = []
        for key, hi in sorted(acked.items()):
            cur = self.cursors.get(key)
            if cur is None:
                cur = self.cursors[key] = _Cursor(key)
            if cur.next_batch is not None and cur.next_batch > hi:
                continue
            readers.append(_BootReader(self, cur, hi, 0))
        if not readers:
            return
        per_boot = max(200, min(self.fetch_rows, self.max_buffered // len(readers)))
        heap: list[tuple[int, BootKey, _BootReader]] = []
        for r in readers:
            r.fetch_rows = per_boot
            await r.fill()
            if r.buffer:
                heapq.heappush(heap, (r.head_time, r.cur.key, r))
        while heap:
            _, _, r = heapq.heappop(heap)
            raw = r.buffer.popleft()
            cur = r.cur
            if raw.kind == "end":
                cur.next_batch = raw.batch_seq + 1
                cur.seq = max(cur.seq, raw.seq)
            elif raw.kind == LOST:
                yield StreamItem(LOST, cur.key, 0, raw.time_ns, raw.node_name, lost=raw.lost)
            else:
                flow = flow_pb2.Flow.FromString(raw.blob)
                cur.seq = max(cur.seq, raw.seq)
                if self._passes(cur, flow, raw.time_ns):
                    self.delivered += 1
                    yield StreamItem(
                        FLOW,
                        cur.key,
                        raw.seq,
                        raw.time_ns,
                        flow.node_name or raw.node_name,
                        flow=flow,
                    )
                    if self.limit and self.delivered >= self.limit:
                        return
            if not r.buffer:
                await r.fill()
            if r.buffer:
                heapq.heappush(heap, (r.head_time, cur.key, r))

    async def items(self) -> AsyncIterator[StreamItem]:
        """The stream, item by item; ends unless ``follow`` (and no until/limit)."""
        follow = self.follow and self.until_ns is None
        seen = self.notifier.generation if self.notifier else 0
        while True:
            seen = self.notifier.generation if self.notifier else seen
            async for item in self._round():
                yield item
            if self.limit and self.delivered >= self.limit:
                return
            if not follow:
                return
            if self.notifier is not None:
                await self.notifier.wait(seen, self.poll_s)
            else:
                await asyncio.sleep(self.poll_s)

    async def chunks(self, max_items: int = 1000, max_delay_s: float = 0.2) -> AsyncIterator[Chunk]:
        """The stream in chunks of up to ``max_items``; a chunk is cut early when a
        round ends or ``max_delay_s`` passed since its first item. Each chunk carries
        the position after it; an empty chunk reports a position that moved past
        filtered-out flows only."""
        items: list[StreamItem] = []
        started = 0.0
        last_pos = self.position
        follow = self.follow and self.until_ns is None
        seen = self.notifier.generation if self.notifier else 0
        while True:
            seen = self.notifier.generation if self.notifier else seen
            async for item in self._round():
                if not items:
                    started = time.monotonic()
                items.append(item)
                if len(items) >= max_items or time.monotonic() - started >= max_delay_s:
                    yield Chunk(items, self.position)
                    items = []
            pos = self.position
            if items or pos != last_pos:
                yield Chunk(items, pos)
                items = []
            last_pos = pos
            if (self.limit and self.delivered >= self.limit) or not follow:
                return
            if self.notifier is not None:
                await self.notifier.wait(seen, self.poll_s)
            else:
                await asyncio.sleep(self.poll_s)
