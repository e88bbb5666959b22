"""What the relay's read APIs share: the store (read in worker threads), the live
broadcaster, the ingest sessions, the optional source watch, the limits, and the
node list built from all of them.

Nodes: every collector that said Hello within the raw-flow retention (the store's
``collectors`` table) or holds an ingest stream now, plus every node of the source
(if the relay watches one) even before its collector ever connected. A node is
*connected* while its collector holds an ingest stream, else *unavailable*.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from relay.observer.broadcast import Broadcaster
from relay.observer.limits import Limits
from relay.store import Store
from relay.store import aggregates as agg

if TYPE_CHECKING:
    from relay.ingest.service import IngestService
    from relay.query.source import SourceWatch

T = TypeVar("T")

CACHE_S = 2.0  # store-derived node figures are reused this long


@dataclass
class NodeInfo:
    name: str
    collector_id: str = ""
    connected: bool = False
    address: str = ""
    version: str = ""
    boot_id: int = 0  # nanoseconds since the epoch at the collector's start
    peer: str = ""
    flows_stored: int = 0  # within raw-flow retention
    flows_seen: int = 0  # received by this relay since it started
    lost_events: int = 0  # losses the collector reported to this relay
    last_seen_ns: int = 0  # newest flow time, else last Hello
    in_source: bool = False


class RelayApi:
    def __init__(
        self,
        store: Store,
        executor: Executor,
        broadcaster: Broadcaster,
        limits: Limits,
        *,
        ingest: IngestService | None = None,
        source: SourceWatch | None = None,
        version: str = "",
    ) -> None:
        self.store = store
        self.executor = executor
        self.broadcaster = broadcaster
        self.limits = limits
        self.ingest = ingest
        self.source = source
        self.version = version
        self.started_ns = time.time_ns()
        self._started_mono = time.monotonic_ns()
        self._cache: dict[str, tuple[float, Any]] = {}
        self.tasks: list[asyncio.Task[Any]] = []  # background work the services started

    @property
    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self._started_mono

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a store-reading thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _cached(self, key: str, fn: Callable[[], T]) -> T:
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < CACHE_S:
            value: T = hit[1]
            return value
        value = await self.run(fn)
        self._cache[key] = (now, value)
        return value

    def retention_since(self) -> int:
        return int(time.time()) - self.store.retention.flows_days * 86400

    def _live_counts(self) -> dict[str, int]:
        return {c: live.flows for c, live in self.broadcaster.collectors.items()}

    async def stored_flows(self) -> int:
        """Flows stored within retention: the rollup's sum when last read (at most
        CACHE_S ago) plus what was published since."""
        since = self.retention_since()

        def load() -> tuple[int, int]:
            published = self.broadcaster.published_flows
            return agg.stored_flows_total(self.store, since), published

        total, published = await self._cached("total", load)
        return total + max(0, self.broadcaster.published_flows - published)

    async def nodes(self) -> list[NodeInfo]:
        since = self.retention_since()

        def load() -> tuple[list[dict[str, Any]], dict[str, tuple[int, int]], dict[str, int]]:
            live = self._live_counts()
            return self.store.collectors(), agg.collector_flow_stats(self.store, since), live

        hellos, stats, live_then = await self._cached("nodes", load)
        source_nodes: list[str] = []
        if self.source is not None:
            source_nodes = await self.source.node_names()
        sessions = {s.collector_id: s for s in (self.ingest.connected() if self.ingest else [])}
        by_collector: dict[str, NodeInfo] = {}
        for h in hellos:
            cid = str(h["collector_id"])
            connected_ns = int(h.get("connected_ns") or 0)
            if cid not in sessions and cid not in stats and connected_ns < since * 10**9:
                continue  # said Hello long ago and nothing of it is kept
            by_collector[cid] = NodeInfo(
                name=str(h.get("node_name") or cid),
                collector_id=cid,
                address=str(h.get("observer_address") or ""),
                version=str(h.get("version") or ""),
                boot_id=int(h.get("boot_id") or 0),
                peer=str(h.get("peer") or ""),
                last_seen_ns=connected_ns,
            )
        for cid, s in sessions.items():
            n = by_collector.get(cid)
            if n is None:
                n = by_collector[cid] = NodeInfo(name=s.node_name, collector_id=cid)
            n.connected = True
            n.name = s.node_name or n.name
            n.address = s.observer_address or n.address
            n.version = s.version or n.version
            n.boot_id = s.boot_id or n.boot_id
            n.peer = s.peer or n.peer
        for cid, n in by_collector.items():
            flows, last_bucket = stats.get(cid, (0, 0))
            n.flows_stored = flows
            n.last_seen_ns = max(n.last_seen_ns, last_bucket * 10**9)
            live = self.broadcaster.collectors.get(cid)
            if live is not None:
                n.flows_stored += max(0, live.flows - live_then.get(cid, 0))
                n.flows_seen = live.flows
                n.lost_events = live.lost_events
                n.last_seen_ns = max(n.last_seen_ns, live.last_flow_ns)
        # one entry per node name: the connected collector, else the latest one
        by_name: dict[str, NodeInfo] = {}
        for n in sorted(by_collector.values(), key=lambda n: (n.connected, n.last_seen_ns)):
            by_name[n.name] = n
        for name in source_nodes:
            if name in by_name:
                by_name[name].in_source = True
            else:
                by_name[name] = NodeInfo(name=name, in_source=True)
        return [by_name[k] for k in sorted(by_name)]
