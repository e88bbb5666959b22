"""What the system holds and says, read from the outside: the relay's stored flows and
loss reports through its Observer API (a resumable GetFlows from the beginning, so
every stored flow comes with its position, and collectors' LostEvents with their
node), and the collectors' Prometheus metrics.

From these a fault test checks its promises: no position stored twice, every flow
that was acknowledged before the fault still there, each connection of the traffic
seen by the nodes that must see it or else covered by a reported loss.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from relay.siem.position import flow_position, pack_resume
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc
from tests.reliability.traffic import Conn

Position = tuple[str, int, int]  # collector id, boot id, sequence
LOST_SOURCES = {v.number: v.name for v in flow_pb2.LostEventSource.DESCRIPTOR.values}


@dataclass
class Stored:
    """Everything the relay's store holds, as its Observer API gives it."""

    positions: Counter[Position] = field(default_factory=Counter)
    # (src ip, sport, dst ip, dport) of the request direction -> nodes that stored it
    seen: dict[tuple[str, int, str, int], set[str]] = field(
        default_factory=lambda: defaultdict(set)
    )
    lost: Counter[tuple[str, str]] = field(default_factory=Counter)  # (node, source) -> n
    without_position: int = 0

    @property
    def flows(self) -> int:
        return len(self.positions)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.positions.values() if n > 1)

    def boots(self) -> dict[tuple[str, int], set[int]]:
        out: dict[tuple[str, int], set[int]] = defaultdict(set)
        for c, b, s in self.positions:
            out[(c, b)].add(s)
        return out

    def lost_total(self, node: str | None = None, source: str | None = None) -> int:
        return sum(
            n
            for (nd, src), n in self.lost.items()
            if (node is None or nd == node) and (source is None or src == source)
        )


def read_stored(relay_address: str, timeout: float = 120.0) -> Stored:
    """Every flow and loss report the relay holds (history only, then the end)."""
    out = Stored()
    with grpc.insecure_channel(
        relay_address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        req = pack_resume({}, observer_pb2.GetFlowsRequest())
        for resp in stub.GetFlows(req, timeout=timeout):
            if resp.HasField("flow"):
                f = resp.flow
                pos = flow_position(f)
                if pos is None:
                    out.without_position += 1
                    continue
                out.positions[pos] += 1
                if f.l4.HasField("TCP"):
                    t = f.l4.TCP
                    key = (f.IP.source, t.source_port, f.IP.destination, t.destination_port)
                    if f.is_reply.value:
                        key = (key[2], key[3], key[0], key[1])
                    out.seen[key].add(f.node_name)
            elif resp.HasField("lost_events"):
                ev = resp.lost_events
                name = LOST_SOURCES.get(ev.source, str(ev.source))
                out.lost[(resp.node_name, name)] += ev.num_events_lost
    return out


def metric_sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


@dataclass
class Observations:
    """Connections of the traffic against the nodes that stored them."""

    expected: int = 0
    seen: int = 0
    missing: list[tuple[Conn, str]] = field(default_factory=list)

    def missing_on(self, node: str) -> list[Conn]:
        return [c for c, n in self.missing if n == node]


def observations(conns: Iterable[Conn], stored: Stored) -> Observations:
    out = Observations()
    for c in conns:
        nodes = stored.seen.get(c.key, set())
        for node in sorted(c.expected_nodes()):
            out.expected += 1
            if node in nodes:
                out.seen += 1
            else:
                out.missing.append((c, node))
    return out


def wait_for(what: str, check: object, timeout: float, interval: float = 0.25) -> float:
    """Poll `check()` until it returns truthy; returns the seconds it took. A bounded
    wait (a hang fails the test), not a timing assertion."""
    t0 = time.monotonic()
    last: object = None
    while True:
        try:
            last = check()  # type: ignore[operator]
            if last:
                return time.monotonic() - t0
        except Exception as exc:  # not there yet (connection refused, ...)
            last = exc
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s (last: {last!r})")
        time.sleep(interval)
