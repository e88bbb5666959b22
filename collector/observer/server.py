"""Serve the local Observer (and gRPC health) on a unix socket and TCP."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from collector.observer.service import LocalObserver
from sensilla.protos import observer_pb2_grpc

OBSERVER_SERVICE = "observer.Observer"


async def start_observer_server(
    observer: LocalObserver,
    unix_socket: str | None = None,
    tcp_address: str | None = None,
    tls: Any = None,
    auth: Any = None,
    health_address: str | None = None,
) -> tuple[grpc.aio.Server, health.HealthServicer]:
    """Start serving; returns the server and its health servicer (SERVING).

    ``tls`` (sensilla.security.tls.ServerTLS) secures the TCP listener (mutual TLS
    with client CAs; files re-read on rotation); ``auth`` (a TokenStore) requires a
    bearer token on TCP calls and scopes what they see. The unix socket is plaintext,
    owner-only (0600) and trusted as admin (docs/security.md)."""
    interceptors = []
    if auth is not None:
        from sensilla.security.tokens import AuthInterceptor

        interceptors.append(AuthInterceptor(auth, local_admin=True))
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    observer_pb2_grpc.add_ObserverServicer_to_server(observer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if unix_socket:
        Path(unix_socket).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(unix_socket)
        old = os.umask(0o177)  # the socket is created 0600 (root-only)
        try:
            server.add_insecure_port(f"unix:{unix_socket}")
        finally:
            os.umask(old)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(unix_socket, 0o600)
    if tcp_address:
        if tls is not None:
            from sensilla.security.tls import ReloadingServerCredentials

            port = server.add_secure_port(
                tcp_address, ReloadingServerCredentials(tls).credentials()
            )
        else:
            port = server.add_insecure_port(tcp_address)
        if port == 0:
            raise OSError(f"cannot listen on {tcp_address}")
    if health_address:  # plaintext, gRPC health only: the kubelet's probes speak no TLS
        hs = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, hs)
        if hs.add_insecure_port(health_address) == 0:
            raise OSError(f"cannot listen on {health_address} (health)")
        await hs.start()
        # stopped with the Observer's server
        stop = server.stop

        async def stop_both(grace: float | None) -> None:
            await hs.stop(0)
            await stop(grace)

        server.stop = stop_both  # type: ignore[method-assign]
    await server.start()
    if unix_socket:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(unix_socket, 0o600)
    for name in ("", OBSERVER_SERVICE):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer
