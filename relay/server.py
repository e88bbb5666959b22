"""The relay process: a grpc.aio server with the Ingest service and gRPC health
checking, on one or more listening addresses, over one store; Prometheus metrics on an
HTTP endpoint.

    config = RelayConfig(store_url="chdb:///var/lib/sensilla/relay",
                         listen=["127.0.0.1:4245"])
    relay = RelayServer(config)
    await relay.start()          # opens (migrates, recovers) the store, then serves
    ...
    await relay.stop()

Other services register through ``RelayServer.add_service`` before ``start``; they
get the server, the store and the writer. The read APIs (Hubble's Observer, the query
API, the live fan-out; relay.observer.wiring) are always added.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from relay.ingest.service import IngestService
from relay.ingest.writer import STATE_FAILING, FlowState, IngestWriter
from relay.metrics import RelayMetrics
from relay.observer.limits import Limits
from relay.store import Retention, Store, open_store, parse_store_url

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:4245"
INGEST_SERVICE = "sensilla.ingest.v1.Ingest"


@dataclass
class RelayConfig:
    store_url: str = "chdb:///var/lib/sensilla/relay"
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    metrics_address: str | None = None  # host:port for /metrics, None = off
    retention: Retention = field(default_factory=Retention)
    max_round_flows: int = 20_000
    max_round_delay: float = 0.25
    max_pending_flows: int = 200_000
    max_in_flight: int = 8
    slow_after_s: float = 5.0  # a store write taking longer makes ingest back off
    retention_interval_s: float = 3600.0
    ready_file: str | None = None  # JSON {"addresses": [...], "metrics": ..., "pid": ...}
    max_message_bytes: int = 64 << 20
    source: str | None = None  # lab:DIR | kubernetes[:KUBECONFIG], for Explain and nodes
    limits: Limits = field(default_factory=Limits)  # of the read APIs
    exporters: Any = None  # relay.siem.config.ExportersConfig (--exporter-config), docs/siem.md
    tls: Any = None  # sensilla.security.tls.ServerTLS; None: plaintext (docs/security.md)
    auth: Any = None  # sensilla.security.tokens.TokenStore; None: every client is admin
    # plaintext listeners serving only gRPC health (the kubelet's probes speak no TLS)
    health_listen: list[str] = field(default_factory=list)


ServiceHook = Callable[["RelayServer"], None]


def split_host_port(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {addr!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


class RelayServer:
    def __init__(self, config: RelayConfig, metrics: RelayMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or RelayMetrics()
        self.store: Store | None = None
        self.writer: IngestWriter | None = None
        self.ingest: IngestService | None = None
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.addresses: list[str] = []
        self.metrics_address: str | None = None
        self.tls_credentials: Any = None  # ReloadingServerCredentials when TLS is on
        self.health_server: grpc.aio.Server | None = None
        from relay.observer.wiring import install

        self._hooks: list[ServiceHook] = [install]
        if config.exporters is not None:
            from relay.siem.exporter import start_hook

            self._hooks.append(start_hook(config.exporters))
        self.stop_hooks: list[Callable[[], Awaitable[None]]] = []
        self.api: Any = None  # relay.observer.state.RelayApi once started
        self._metrics_server: Any = None
        self._metrics_thread: threading.Thread | None = None
        self.read_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-read")
        for addr in config.listen:
            split_host_port(addr)
        parse_store_url(config.store_url)  # fail early on a bad URL (no secrets in errors)

    def add_service(self, hook: ServiceHook) -> None:
        """Register a function that adds services to ``self.server`` at start."""
        self._hooks.append(hook)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        url = parse_store_url(self.config.store_url)
        log.info("relay: opening store %s", url.redacted())

        def open_and_recover() -> Store:
            store = open_store(url, retention=self.config.retention)
            report = store.recover()
            if report.reconciled_batches:
                log.warning(
                    "relay: reconciled rollups of %d batches left unfinished (collectors %s)",
                    report.reconciled_batches,
                    ", ".join(report.collectors),
                )
            return store

        self.store = await loop.run_in_executor(self.read_executor, open_and_recover)
        c = self.config
        self.writer = IngestWriter(
            self.store,
            self.metrics,
            max_round_flows=c.max_round_flows,
            max_round_delay=c.max_round_delay,
            max_pending_flows=c.max_pending_flows,
            max_in_flight=c.max_in_flight,
            slow_after_s=c.slow_after_s,
            retention_interval_s=c.retention_interval_s,
        )
        self.ingest = IngestService(self.writer, self.metrics)
        self.writer.add_listener(self._on_flow_state)
        interceptors = []
        if c.auth is not None:
            from sensilla.security.tokens import AuthInterceptor

            interceptors.append(AuthInterceptor(c.auth))
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", c.max_message_bytes),
                ("grpc.max_send_message_length", c.max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ]
        )
        from sensilla.protos import ingest_pb2_grpc

        ingest_pb2_grpc.add_IngestServicer_to_server(self.ingest, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        for hook in self._hooks:
            hook(self)
        self.addresses = []
        self.tls_credentials = None
        if c.tls is not None:
            from sensilla.security.tls import ReloadingServerCredentials

            self.tls_credentials = ReloadingServerCredentials(c.tls)
        for addr in c.listen:
            host, _ = split_host_port(addr)
            if self.tls_credentials is not None:
                port = self.server.add_secure_port(addr, self.tls_credentials.credentials())
            else:
                port = self.server.add_insecure_port(addr)
            if port == 0:
                raise OSError(f"cannot listen on {addr}")
            shown = f"[{host}]" if ":" in host else host
            self.addresses.append(f"{shown}:{port}")
        if c.health_listen:
            self.health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            for addr in c.health_listen:
                if self.health_server.add_insecure_port(addr) == 0:
                    raise OSError(f"cannot listen on {addr} (health)")
            await self.health_server.start()
        self.writer.start()
        await self.server.start()
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(INGEST_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if c.metrics_address:
            self._start_metrics(c.metrics_address)
        log.info(
            "relay: serving on %s (%s%s; store %s)",
            ", ".join(self.addresses),
            c.tls.describe() if c.tls is not None else "plaintext",
            ", bearer tokens" if c.auth is not None else "",
            url.redacted(),
        )
        if c.ready_file:
            self._write_ready_file(c.ready_file)

    def _on_flow_state(self, state: FlowState) -> None:
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if state.state == STATE_FAILING
            else health_pb2.HealthCheckResponse.SERVING
        )
        asyncio.get_running_loop().create_task(self.health.set(INGEST_SERVICE, status))

    def _start_metrics(self, address: str) -> None:
        from prometheus_client import start_http_server

        host, port = split_host_port(address)
        server, thread = start_http_server(port, addr=host, registry=self.metrics.registry)
        self._metrics_server, self._metrics_thread = server, thread
        bound = server.server_address[1]
        self.metrics_address = f"{host}:{bound}"

    def _write_ready_file(self, path: str) -> None:
        data = {"addresses": self.addresses, "metrics": self.metrics_address, "pid": os.getpid()}
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)

    async def stop(self, grace: float = 5.0) -> None:
        for hook in self.stop_hooks:
            try:
                await hook()
            except Exception:  # pragma: no cover - stopping goes on
                log.exception("stop hook failed")
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)
        if self.writer is not None:
            await self.writer.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self.store is not None:
            self.store.close()
        self.read_executor.shutdown(wait=False, cancel_futures=True)
        if self.config.ready_file:
            try:
                os.unlink(self.config.ready_file)
            except FileNotFoundError:
                pass

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


async def run_relay(config: RelayConfig, stop: asyncio.Event | None = None) -> None:
    """Run a relay until ``stop`` is set (or SIGTERM/SIGINT when run as a process)."""
    import signal

    relay = RelayServer(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not main thread
            pass
    await relay.start()
    try:
        await stop.wait()
    finally:
        log.info("relay: stopping")
        await relay.stop()
