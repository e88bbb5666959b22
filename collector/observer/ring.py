"""A fixed-size ring of recent events (flows and loss notices) with live followers.

Events are observer.GetFlowsResponse messages (a flow or a LostEvent, stamped with
the node name and time). The ring lives on the asyncio loop; producers in other
threads hand batches over with `append_threadsafe`. A follower that cannot keep up
loses events from its own queue only, and is told how many with a LostEvent
(OBSERVER_EVENTS_QUEUE) when it catches up; no follower can slow the producer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable

from sensilla.protos import flow_pb2, observer_pb2

Event = observer_pb2.GetFlowsResponse


class Follower:
    def __init__(self, ring: FlowRing, maxsize: int) -> None:
        self.ring = ring
        self.queue: deque[Event] = deque()
        self.maxsize = maxsize
        self.lost = 0
        self.wake = asyncio.Event()
        self.closed = False

    def offer(self, events: Iterable[Event]) -> None:
        for e in events:
            if len(self.queue) >= self.maxsize:
                self.lost += 1
            else:
                self.queue.append(e)
        self.wake.set()

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while not self.closed:
                if self.lost:
                    lost, self.lost = self.lost, 0
                    yield Event(
                        lost_events=flow_pb2.LostEvent(
                            source=flow_pb2.OBSERVER_EVENTS_QUEUE, num_events_lost=lost
                        ),
                        node_name=self.ring.node_name,
                        time=_now_ts(),
                    )
                while self.queue:
                    yield self.queue.popleft()
                    if self.lost:
                        break
                if not self.queue and not self.lost:
                    self.wake.clear()
                    await self.wake.wait()
        finally:
            self.ring.unsubscribe(self)


def _now_ts():  # type: ignore[no-untyped-def]
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


class FlowRing:
    def __init__(self, node_name: str, capacity: int = 4095) -> None:
        self.node_name = node_name
        self.capacity = capacity
        self.events: deque[Event] = deque(maxlen=capacity)
        self.followers: set[Follower] = set()
        self.seen_flows = 0
        self.started_ns = time.monotonic_ns()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rate: deque[tuple[float, int]] = deque()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def append(self, events: list[Event]) -> None:
        """Add events (on the loop's thread)."""
        self.events.extend(events)
        flows = sum(1 for e in events if e.HasField("flow"))
        self.seen_flows += flows
        now = time.monotonic()
        self._rate.append((now, flows))
        while self._rate and now - self._rate[0][0] > 60:
            self._rate.popleft()
        for f in list(self.followers):
            f.offer(events)

    def append_threadsafe(self, events: list[Event]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self.append, events)

    def subscribe(self, maxsize: int = 4096) -> Follower:
        follower = Follower(self, maxsize)
        self.followers.add(follower)
        return follower

    def unsubscribe(self, follower: Follower) -> None:
        follower.closed = True
        self.followers.discard(follower)

    @property
    def num_flows(self) -> int:
        return sum(1 for e in self.events if e.HasField("flow"))

    @property
    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self.started_ns

    def flows_rate(self) -> float:
        """Flows per second over the last minute."""
        if not self._rate:
            return 0.0
        span = max(1.0, min(60.0, time.monotonic() - self._rate[0][0]))
        return sum(n for _, n in self._rate) / span
