"""The observing half of the node agent: perf rings -> flows -> ring, Observer API,
metrics and shipping to the relay.

    events (perf rings, a reader thread)
      -> flow.Flow (collector.flows.builder, enriched from the source's cluster state)
      -> the local ring (Observer API on a unix socket and TCP)
      -> metrics (Prometheus)
      -> batches in the spool -> the relay (sensilla.ingest.v1), acked

Losses never pass silently: perf ring losses and failed outputs (counted by the
programs, also while no reader was attached) become LostEvent messages in the ring
and in the next shipped batch, and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.agent.main import AgentContext
from collector.flows.builder import BuildContext, Sequencer, build_flows, lost_event
from collector.flows.directory import Directory, build_directory
from collector.identity import identities_for
from collector.metrics import CollectorMetrics
from collector.observer.ring import Event, FlowRing
from collector.observer.server import start_observer_server
from collector.observer.service import LocalObserver
from collector.shipping.batcher import Batcher, BootLedger
from collector.shipping.shipper import Shipper
from collector.shipping.spool import Spool
from datapath import layout as L
from sensilla.protos import flow_pb2

log = logging.getLogger(__name__)

AGGREGATION_LEVELS = {
    "none": L.AGG_NONE,
    "low": L.AGG_LOW,
    "medium": L.AGG_MEDIUM,
    "maximum": L.AGG_MAXIMUM,
}


@dataclass
class ObserveConfig:
    relay: str | None = None  # host:port of the relay's ingest; None: do not ship
    listen: str | None = None  # host:port of the Observer API
    socket_path: str | None = None  # unix socket of the Observer API
    metrics: str | None = None  # host:port of /metrics
    spool_dir: str = "/var/lib/sensilla/spool"
    spool_max_bytes: int = 2 << 30
    spool_memory_bytes: int = 64 << 20
    ring_size: int = 4095
    collector_id: str | None = None
    aggregation: str | None = None  # none | low | medium | maximum (None: leave as is)
    report_interval_s: float | None = None
    batch_flows: int = 2000
    batch_delay_s: float = 0.2
    # sensilla.security (docs/security.md): the Observer's TLS (ServerTLS) and tokens
    # (TokenStore); how to reach the relay (ClientSecurity; None: plaintext)
    tls: Any = None
    auth: Any = None
    relay_security: Any = None
    health_listen: str | None = None  # host:port, plaintext gRPC health only


class _Enrichment:
    """The directory and interface names, rebuilt when the source changes."""

    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        self.revision = -1
        self.directory = Directory(ctx.node)
        self.interfaces: dict[int, str] = {}

    def refresh(self) -> None:
        revision = self.ctx.source.revision
        if revision == self.revision:
            return
        state = self.ctx.source.cluster_state()
        identities = identities_for(state)
        plan = getattr(self.ctx.enforcer, "plan", None)
        endpoint_ids = {k: e.endpoint_id for k, e in plan.endpoints.items()} if plan else {}
        self.directory = build_directory(self.ctx.node, state, identities, endpoint_ids)
        self.interfaces = {index: name for index, name in socket.if_nameindex()}
        self.revision = revision

    def interface_name(self, ifindex: int) -> str:
        name = self.interfaces.get(ifindex)
        if name is None:
            with contextlib.suppress(OSError):
                name = socket.if_indextoname(ifindex)
                self.interfaces[ifindex] = name
        return name or ""


class ObservingHalf:
    name = "observer"

    def __init__(self, ctx: AgentContext, config: ObserveConfig) -> None:
        self.ctx = ctx
        self.config = config
        self.collector_id = config.collector_id or ctx.node
        self.boot_id = time.time_ns()
        self.ring = FlowRing(ctx.node, config.ring_size)
        self.metrics = CollectorMetrics(ctx.node)
        self.sequencer = Sequencer(self.collector_id, self.boot_id)
        self.enrichment = _Enrichment(ctx)
        self.spool: Spool | None = None
        self.batcher: Batcher | None = None
        self.ledger: BootLedger | None = None
        self.shipper: Shipper | None = None
        self.events_read = 0
        self._spool_losses_counted = 0
        self._spool_lock = threading.Lock()
        self._aggregation = AGGREGATION_LEVELS.get(config.aggregation or "medium", L.AGG_MEDIUM)

    # --- set-up ---------------------------------------------------------------------
    def _setup_shipping(self) -> None:
        if not self.config.relay:
            return
        spool_dir = Path(self.config.spool_dir) / self.collector_id
        self.spool = Spool(
            spool_dir,
            max_bytes=self.config.spool_max_bytes,
            memory_bytes=self.config.spool_memory_bytes,
        )
        security = self.config.relay_security
        extra: dict[str, Any] = {}
        if security is not None:
            from sensilla.security.tls import aio_channel

            extra["channel_factory"] = lambda target: aio_channel(target, security)
            extra["call_metadata"] = security.metadata
        self.shipper = Shipper(
            self.config.relay,
            self.spool,
            self.collector_id,
            self.ctx.node,
            self.boot_id,
            observer_address=self.config.listen or "",
            **extra,
        )
        self.ledger = BootLedger(spool_dir, self.boot_id)
        self.batcher = Batcher(
            self.spool,
            self.boot_id,
            max_flows=self.config.batch_flows,
            max_delay_s=self.config.batch_delay_s,
            on_sealed=self.shipper.notify,
            ledger=self.ledger,
        )
        self._report_earlier_boots(spool_dir)

    def _report_earlier_boots(self, spool_dir: Path) -> None:
        """Flows an earlier boot built but never spooled (it was killed with a batch
        open) are lost: reported as a LostEvent in this boot's first batch."""
        assert self.batcher is not None
        earlier = BootLedger.earlier(spool_dir, self.boot_id)
        lost = sum(n for _, n in earlier)
        if lost:
            log.warning("an earlier run of this collector lost %d flows (killed)", lost)
            ev = lost_event(flow_pb2.OBSERVER_EVENTS_QUEUE, lost)
            self.batcher.add_lost(ev)
            self.metrics.lost("collector_restart", lost)
            if not self.batcher.flush():
                return  # no room to report it now: the ledgers stay for the next start
        for path, _ in earlier:
            path.unlink(missing_ok=True)

    def _register_gauges(self) -> None:
        m = self.metrics
        m.gauge("sensilla_ring_flows", "Flows in the local ring", lambda: self.ring.num_flows)
        m.gauge("sensilla_ring_capacity", "Capacity of the local ring", lambda: self.ring.capacity)
        m.gauge(
            "sensilla_policy_revision",
            "State revision the node enforces",
            lambda: self.ctx.enforcer.enforced_revision,
        )
        m.gauge("sensilla_datapath_events_read", "Flow events read", lambda: self.events_read)
        if self.spool is not None:
            spool = self.spool
            m.gauge("sensilla_spool_batches", "Batches waiting for the relay", lambda: len(spool))
            m.gauge("sensilla_spool_bytes", "Bytes of the spool on disk", lambda: spool.disk_bytes)
        if self.shipper is not None:
            st = self.shipper.stats
            m.gauge(
                "sensilla_shipper_connected",
                "1 when connected to the relay",
                lambda: 1 if st.connected else 0,
            )
            m.gauge(
                "sensilla_shipped_flows", "Flows acknowledged by the relay", lambda: st.flows_acked
            )
        dp: Any = self.ctx.enforcer.datapath  # the real Datapath (beyond DatapathAPI)

        def ct_fill() -> float:
            return len(dp.conntrack()) / L.CT_MAX

        m.gauge("sensilla_conntrack_fill_ratio", "Conntrack map fill (0-1)", ct_fill)

    # --- the reader thread ------------------------------------------------------------
    def _datapath_ready(self) -> bool:
        return bool(getattr(self.ctx.enforcer, "_loaded", False)) or (
            self.ctx.enforcer.enforced_revision >= 0
        )

    def _read_loop(self, stop: threading.Event) -> None:
        dp: Any = self.ctx.enforcer.datapath  # the real Datapath (beyond DatapathAPI)
        while not stop.is_set() and not self._datapath_ready():
            stop.wait(0.05)
        if stop.is_set():
            return
        if self.config.aggregation is not None or self.config.report_interval_s is not None:
            dp.set_aggregation(
                self.config.aggregation or "medium", self.config.report_interval_s or 5.0
            )
        with dp.event_reader() as reader:
            while not stop.is_set():
                events, losses = reader.poll(0.1)
                self._handle(events, losses)

    def _handle(self, events: Any, losses: Any) -> None:
        out: list[Event] = []
        now = flow_pb2.Flow().time
        now.FromNanoseconds(time.time_ns())
        if losses:
            count = int(losses.total)
            lost = lost_event(flow_pb2.PERF_EVENT_RING_BUFFER, count)
            out.append(Event(lost_events=lost, node_name=self.ctx.node, time=now))
            self.metrics.lost("perf_event_ring_buffer", count)
            if self.batcher is not None:
                self.batcher.add_lost(lost)
        if len(events):
            self.enrichment.refresh()
            ctx = BuildContext(
                self.ctx.node,
                self.enrichment.directory,
                self.ctx.enforcer.registry,
                _Names(self.enrichment),
                self._aggregation,
            )
            flows = build_flows(events, ctx, self.sequencer)
            self.events_read += len(flows)
            self.metrics.observe(flows)
            batcher = self.batcher
            if batcher is not None:
                batcher.expect(len(flows))
            for f in flows:
                if batcher is not None:
                    batcher.add(f.SerializeToString())
                out.append(Event(flow=f, node_name=self.ctx.node, time=f.time))
            self._count_spool_losses()
        if out:
            self.ring.append_threadsafe(out)

    def _count_spool_losses(self) -> None:
        """Flows the batcher dropped (spool full, disk full: when a flow arrives or
        when a batch fails to seal) into sensilla_lost_events_total{source="spool_full"}."""
        if self.batcher is None:
            return
        with self._spool_lock:
            dropped = self.batcher.flows_dropped
            if dropped > self._spool_losses_counted:
                self.metrics.lost("spool_full", dropped - self._spool_losses_counted)
                self._spool_losses_counted = dropped

    # --- the component ---------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self.ring.bind(loop)
        self._setup_shipping()
        self._register_gauges()
        observer = LocalObserver(
            self.ring,
            self.ctx.node,
            self.config.listen or "",
            namespaces=lambda: sorted(self.ctx.source.cluster_state().namespaces),
        )
        server, _health = await start_observer_server(
            observer,
            self.config.socket_path,
            self.config.listen,
            tls=self.config.tls,
            auth=self.config.auth,
            health_address=self.config.health_listen,
        )
        metrics_server = None
        if self.config.metrics:
            from prometheus_client import start_http_server

            host, _, port = self.config.metrics.rpartition(":")
            metrics_server = start_http_server(int(port), addr=host, registry=self.metrics.registry)
        self.ctx.status.update(
            observer={
                "address": self.config.listen,
                "socket": self.config.socket_path,
                "metrics": self.config.metrics,
                "boot_id": self.boot_id,
            }
        )
        thread_stop = threading.Event()
        reader = asyncio.ensure_future(asyncio.to_thread(self._read_loop, thread_stop))
        tasks = [reader]
        if self.shipper is not None and self.batcher is not None:
            tasks.append(asyncio.ensure_future(self.shipper.run(stop)))
            tasks.append(asyncio.ensure_future(self._seal_timer(stop)))
            tasks.append(asyncio.ensure_future(self._shipping_status(stop)))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            thread_stop.set()
            stop.set()
            stopper.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(t, timeout=10)
            if self.batcher is not None:
                self.batcher.flush()
                if self.ledger is not None:
                    complete = self.ledger.handed == self.ledger.accounted
                    self.ledger.close(remove=complete)  # what is left is reported next time
            if self.spool is not None:
                self.spool.close()
            await server.stop(grace=1)
            if metrics_server is not None:
                with contextlib.suppress(Exception):
                    metrics_server[0].shutdown()

    def shipping_status(self) -> dict[str, Any]:
        """What the status file says about shipping (a relay that refuses this
        collector, e.g. its certificate, shows as connected false with last_error)."""
        assert self.shipper is not None
        st = self.shipper.stats
        return {
            "relay": self.config.relay,
            "connected": st.connected,
            "connects": st.connects,
            "flows_acked": st.flows_acked,
            "spooled_batches": len(self.spool) if self.spool is not None else 0,
            "last_error": st.last_error,
        }

    async def _shipping_status(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        last: dict[str, Any] | None = None
        while not stop.is_set():
            now = self.shipping_status()
            if now != last:
                self.ctx.status.update(shipping=now)
                last = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    async def _seal_timer(self, stop: asyncio.Event) -> None:
        assert self.batcher is not None
        while not stop.is_set():
            self.batcher.seal_if_due()
            self._count_spool_losses()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)


class _Names(dict[int, str]):
    """ifindex -> interface name, resolved lazily."""

    def __init__(self, enrichment: _Enrichment) -> None:
        super().__init__()
        self.enrichment = enrichment

    def get(self, key: int, default: Any = None) -> Any:  # type: ignore[override]
        return self.enrichment.interface_name(key) or default


def factory(config: ObserveConfig) -> Any:
    def make(ctx: AgentContext) -> ObservingHalf:
        return ObservingHalf(ctx, config)

    return make
