"""`sensilla status`: the relay's (or a collector's) health, flows and nodes, as
`hubble status` prints them."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sensilla.cli.errors import UsageError

DEFAULT_SERVER = "localhost:4245"


def add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("SENSILLA_SERVER", DEFAULT_SERVER),
        help=f"relay or collector Observer (host:port or unix:///path; default "
        f"{DEFAULT_SERVER}, or $SENSILLA_SERVER)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    from sensilla.security.flags import add_client_flags

    add_client_flags(p)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="health, flows and nodes of the relay (or a collector)")
    add_server_args(p)
    p.set_defaults(handler=_status)


class Unreachable(Exception):
    pass


def channel(server: str, timeout: float, security: Any = None) -> Any:
    """A connected channel (TLS and token as ``security``, a ClientSecurity, says)."""
    import grpc

    from sensilla.security.flags import connect
    from sensilla.security.tls import ClientSecurity

    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    ch = connect(server, security or ClientSecurity())
    try:
        grpc.channel_ready_future(ch).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        ch.close()
        raise Unreachable(f"cannot reach {server} within {timeout:g} s") from None
    return ch


def rpc_failed(server: str, err: Any) -> int:
    if isinstance(err, Unreachable):
        print(f"sensilla: {err}", file=sys.stderr)
    else:
        print(f"sensilla: {server}: {err.code().name}: {err.details()}", file=sys.stderr)
    return 1


def _count(n: int) -> str:
    return f"{n:,}"


def status_dict(server: str, timeout: float, security: Any = None) -> dict[str, Any]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from sensilla.protos import observer_pb2, observer_pb2_grpc

    ch = channel(server, timeout, security)
    try:
        try:
            h = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
            health = health_pb2.HealthCheckResponse.ServingStatus.Name(h.status)
        except grpc.RpcError as err:
            health = err.code().name
        s = observer_pb2_grpc.ObserverStub(ch).ServerStatus(
            observer_pb2.ServerStatusRequest(), timeout=timeout
        )
    finally:
        ch.close()
    return {
        "server": server,
        "health": health,
        "version": s.version,
        "num_flows": s.num_flows,
        "max_flows": s.max_flows,
        "seen_flows": s.seen_flows,
        "uptime_s": s.uptime_ns / 1e9,
        "flows_rate": s.flows_rate,
        "connected_nodes": s.num_connected_nodes.value
        if s.HasField("num_connected_nodes")
        else None,
        "unavailable_nodes": s.num_unavailable_nodes.value
        if s.HasField("num_unavailable_nodes")
        else None,
        "unavailable": list(s.unavailable_nodes),
    }


def format_status(d: dict[str, Any]) -> str:
    health = "Ok" if d["health"] == "SERVING" else d["health"]
    lines = [f"Healthcheck (via {d['server']}): {health}"]
    if d["max_flows"]:
        pct = 100.0 * d["num_flows"] / d["max_flows"]
        lines.append(
            f"Current/Max Flows: {_count(d['num_flows'])}/{_count(d['max_flows'])} ({pct:.2f}%)"
        )
    else:
        lines.append(f"Current Flows: {_count(d['num_flows'])} (stored; no fixed maximum)")
    lines.append(f"Flows/s: {d['flows_rate']:.2f}")
    if d["connected_nodes"] is not None:
        total = d["connected_nodes"] + (d["unavailable_nodes"] or 0)
        lines.append(f"Connected Nodes: {d['connected_nodes']}/{total}")
    if d["unavailable_nodes"]:
        lines.append(f"Unavailable Nodes: {d['unavailable_nodes']}")
        lines.extend(f"  - {n}" for n in d["unavailable"])
    if d["version"]:
        lines.append(f"Version: {d['version']} (up {format_age(d['uptime_s'])})")
    return "\n".join(lines)


def format_age(seconds: float) -> str:
    """Like kubectl/hubble: 42s, 5m3s, 3h4m, 2d3h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _status(args: argparse.Namespace) -> int:
    import grpc

    try:
        from sensilla.security.flags import client_security

        d = status_dict(args.server, args.timeout, client_security(args))
    except (grpc.RpcError, Unreachable) as err:
        return rpc_failed(args.server, err)
    if args.output == "json":
        print(json.dumps(d, indent=1))
    else:
        print(format_status(d))
    return 0 if d["health"] == "SERVING" else 1
