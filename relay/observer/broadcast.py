"""The live fan-out: stored batches from ingest to the relay's followers.

The ingest writer publishes every batch once it is durably stored (never before: a
follower never sees a flow the store might not keep). Publishing runs on the event
loop and costs O(followers) per batch: it appends a reference to the batch to each
follower's bounded queue. A follower whose queue is full loses the batch's flows
from its own queue only, and is told how many at the place of the gap with a
LostEvent (source OBSERVER_EVENTS_QUEUE) when it gets there; no follower can slow
ingest or another follower.

Positions: the broadcaster knows, per collector boot, the highest flow sequence
stored (at start-up, from the store's batch markers) or published since. A follower
takes a copy of that map when it subscribes (its *cut*): its history reads stored
flows up to the cut, its live tail takes published flows above it, so together they
hold each flow once. Within one relay, a collector boot's batches are stored and
published in sequence order (one stream per collector, rounds in arrival order);
a batch completed after a crash of an earlier relay is published whole (marked
``recovered``), since some of its flows may already have been stored before the cut.

Filtering: followers with the same filters (and the same access scope) share one
evaluation per batch (``PublishedBatch.matching``): a thousand followers of one
dashboard's filter cost one pass over each batch, not a thousand, and a follower
whose filter matches nothing in a batch spends no per-flow work on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sensilla.protos import flow_pb2

BootKey = tuple[str, int]


@dataclass(frozen=True)
class PublishedBatch:
    collector_id: str
    node_name: str
    boot_id: int
    first_seq: int
    last_seq: int
    flows: Sequence[flow_pb2.Flow]
    lost_events: Sequence[flow_pb2.LostEvent] = ()
    recovered: bool = False
    # filter key -> indices of the flows that pass it (filled by the first follower)
    _matches: dict[Hashable, list[int]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @property
    def boot(self) -> BootKey:
        return (self.collector_id, self.boot_id)

    def matching(self, key: Hashable, passes: Callable[[flow_pb2.Flow], bool]) -> list[int]:
        """Indices (ascending) of the flows for which ``passes`` is true; computed
        once per batch for every follower whose filter has the same ``key``."""
        found = self._matches.get(key)
        if found is None:
            found = [i for i, flow in enumerate(self.flows) if passes(flow)]
            self._matches[key] = found
        return found


@dataclass
class Slice:
    """Part of a published batch queued for one follower: flows[start:stop]."""

    batch: PublishedBatch
    start: int
    stop: int

    @property
    def flows(self) -> Sequence[flow_pb2.Flow]:
        return self.batch.flows[self.start : self.stop]


@dataclass
class Lost:
    """A gap in a follower's queue: this many flows were dropped here."""

    flows: int = 0


class Subscription:
    """One follower's bounded queue of published batches (flows counted)."""

    def __init__(
        self, broadcaster: Broadcaster, max_flows: int, client: str, cut: dict[BootKey, int]
    ) -> None:
        self.broadcaster = broadcaster
        self.max_flows = max(1, max_flows)
        self.client = client
        self.cut = cut
        self.queue: deque[Slice | Lost] = deque()
        self.queued_flows = 0
        self.lost_total = 0
        self.delivered = 0
        self.closed = False
        self._wake = asyncio.Event()

    def offer(self, batch: PublishedBatch) -> None:
        n = len(batch.flows)
        room = self.max_flows - self.queued_flows
        take = max(0, min(n, room))
        if take:
            self.queue.append(Slice(batch, 0, take))  # the first slice carries lost_events
            self.queued_flows += take
        elif batch.lost_events and len(self.queue) < self.max_flows:
            self.queue.append(Slice(batch, 0, 0))  # the collector's loss reports alone
        dropped = n - take
        if dropped:
            self.lost_total += dropped
            last = self.queue[-1] if self.queue else None
            if isinstance(last, Lost):
                last.flows += dropped
            else:
                self.queue.append(Lost(dropped))
        self._wake.set()

    async def get(self) -> Slice | Lost | None:
        """The next queued item; None once closed."""
        while not self.queue:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        item = self.queue.popleft()
        if isinstance(item, Slice):
            self.queued_flows -= item.stop - item.start
            self.delivered += item.stop - item.start
        return item

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.broadcaster._remove(self)
            self._wake.set()


@dataclass
class CollectorLive:
    """What the broadcaster saw of one collector since the relay started."""

    node_name: str = ""
    flows: int = 0
    batches: int = 0
    lost_events: int = 0
    last_flow_ns: int = 0
    last_batch_ns: int = 0


@dataclass
class _Rate:
    window_s: float = 60.0
    points: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, n: int) -> None:
        self.points.append((now, n))
        self.trim(now)

    def trim(self, now: float) -> None:
        while self.points and now - self.points[0][0] > self.window_s:
            self.points.popleft()

    def rate(self, now: float, started: float) -> float:
        self.trim(now)
        span = min(self.window_s, max(1.0, now - started))
        return sum(n for _, n in self.points) / span


class Broadcaster:
    def __init__(self) -> None:
        self.positions: dict[BootKey, int] = {}
        self.subscribers: set[Subscription] = set()
        self.collectors: dict[str, CollectorLive] = {}
        self.published_flows = 0
        self.started = time.monotonic()
        self._rate = _Rate()

    def load_positions(self, stored: Mapping[BootKey, int]) -> None:
        """Merge the positions the store holds (call before ingest starts)."""
        for k, s in stored.items():
            if s > self.positions.get(k, 0):
                self.positions[k] = s

    def publish(self, batches: Iterable[PublishedBatch]) -> None:
        now = time.monotonic()
        wall = time.time_ns()
        n = 0
        for b in batches:
            if b.flows and b.last_seq > self.positions.get(b.boot, 0):
                self.positions[b.boot] = b.last_seq
            c = self.collectors.get(b.collector_id)
            if c is None:
                c = self.collectors[b.collector_id] = CollectorLive()
            c.node_name = b.node_name or c.node_name
            c.flows += len(b.flows)
            c.batches += 1
            c.lost_events += sum(e.num_events_lost for e in b.lost_events)
            c.last_batch_ns = wall
            if b.flows:
                c.last_flow_ns = max(c.last_flow_ns, b.flows[-1].time.ToNanoseconds())
            n += len(b.flows)
            for s in list(self.subscribers):
                s.offer(b)
        self.published_flows += n
        self._rate.add(now, n)

    def subscribe(self, max_flows: int, client: str = "") -> Subscription:
        """A new follower; its cut is the positions published so far."""
        sub = Subscription(self, max_flows, client, dict(self.positions))
        self.subscribers.add(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        self.subscribers.discard(sub)

    def followers_of(self, client: str) -> int:
        return sum(1 for s in self.subscribers if s.client == client)

    def flows_rate(self) -> float:
        """Flows per second published over the last minute."""
        return self._rate.rate(time.monotonic(), self.started)
