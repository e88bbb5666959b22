"""`sensilla nodes`: the nodes behind the relay (or a collector), as `hubble list
nodes` prints them, with the relay's extra columns (address, flows stored and seen,
last seen) when it serves sensilla.query.v1.Query."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sensilla.cli.commands.status import (
    Unreachable,
    add_server_args,
    channel,
    format_age,
    rpc_failed,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("nodes", help="the nodes behind the relay and their state")
    add_server_args(p)
    p.set_defaults(handler=_nodes)


STATES = {0: "Unknown", 1: "Connected", 2: "Unavailable", 3: "Gone", 4: "Error"}


def nodes_list(server: str, timeout: float, security: Any = None) -> list[dict[str, Any]]:
    """One dict per node: from Query.Nodes on a relay, else from Observer.GetNodes."""
    import grpc

    from sensilla.protos import observer_pb2, observer_pb2_grpc, query_pb2, query_pb2_grpc

    now = time.time_ns()
    ch = channel(server, timeout, security)
    try:
        try:
            resp = query_pb2_grpc.QueryStub(ch).Nodes(query_pb2.NodesRequest(), timeout=timeout)
            return [
                {
                    "name": n.name,
                    "state": STATES.get(n.state, str(n.state)),
                    "address": n.address,
                    "version": n.version,
                    "collector_id": n.collector_id,
                    "uptime_s": (now - n.boot_id) / 1e9 if n.state == 1 and n.boot_id else None,
                    "flows_stored": n.flows_stored,
                    "flows_seen": n.flows_seen,
                    "lost_events": n.lost_events,
                    "last_seen": n.last_seen.ToJsonString() if n.HasField("last_seen") else None,
                    "last_seen_ago_s": (now - n.last_seen.ToNanoseconds()) / 1e9
                    if n.HasField("last_seen")
                    else None,
                    "in_source": n.in_source,
                }
                for n in resp.nodes
            ]
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        resp2 = observer_pb2_grpc.ObserverStub(ch).GetNodes(
            observer_pb2.GetNodesRequest(), timeout=timeout
        )
        return [
            {
                "name": n.name,
                "state": STATES.get(n.state, str(n.state)),
                "address": n.address,
                "version": n.version,
                "uptime_s": n.uptime_ns / 1e9 if n.uptime_ns else None,
                "flows_stored": n.num_flows,
                "max_flows": n.max_flows,
                "flows_seen": n.seen_flows,
            }
            for n in resp2.nodes
        ]
    finally:
        ch.close()


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["NAME", "STATUS", "AGE", "ADDRESS", "FLOWS", "SEEN", "LAST SEEN"]
    table = [head]
    for r in rows:
        ago = r.get("last_seen_ago_s")
        table.append(
            [
                r["name"],
                r["state"],
                format_age(r["uptime_s"]) if r.get("uptime_s") is not None else "-",
                r["address"] or "-",
                f"{r['flows_stored']:,}",
                f"{r['flows_seen']:,}",
                f"{format_age(ago)} ago" if ago is not None else "-",
            ]
        )
    widths = [max(len(str(row[i])) for row in table) for i in range(len(head))]
    return "\n".join(
        "   ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def _nodes(args: argparse.Namespace) -> int:
    import grpc

    try:
        from sensilla.security.flags import client_security

        rows = nodes_list(args.server, args.timeout, client_security(args))
    except (grpc.RpcError, Unreachable) as err:
        return rpc_failed(args.server, err)
    if args.output == "json":
        print(json.dumps({"nodes": rows}, indent=1))
    else:
        print(format_table(rows))
    return 0
