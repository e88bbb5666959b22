"""Serve the local Observer (and gRPC health) on a unix socket and TCP."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collector.observer.service import LocalObserver
from sensilla.protos import observer_pb2_grpc

OBSERVER_SERVICE = "observer.Observer"


async def start_observer_server(
    observer: LocalObserver,
    unix_socket: str | None = None,
    tcp_address: str | None = None,
) -> tuple[grpc.aio.Server, health.HealthServicer]:
    """Start serving; returns the server and its health servicer (SERVING)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    observer_pb2_grpc.add_ObserverServicer_to_server(observer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if unix_socket:
        Path(unix_socket).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_socket)
        server.add_insecure_port(f"unix:{unix_socket}")
    if tcp_address:
        port = server.add_insecure_port(tcp_address)
        if port == 0:
            raise OSError(f"cannot listen on {tcp_address}")
    await server.start()
    for name in ("", OBSERVER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer
