"""`sensilla certs`: a CA and certificates for a lab (or any small cluster): the
relay, each collector (its node name and addresses as subject alternative names),
clients, and optionally an expired client certificate for tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sensilla.cli.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "certs",
        help="make a CA and TLS certificates (relay, collectors, clients)",
        description=(
            "Write a CA (ca.crt, ca.key) and certificates into --out: relay.crt/key "
            "(localhost, 127.0.0.1, ::1, relay, sensilla-relay and --relay-name), one "
            "collector-<node>.crt/key per node (its name and addresses; server and client "
            "use), client-<name>.crt/key per --client. Keys are written 0600. With --ca "
            "and --ca-key an existing CA signs instead of a new one."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    p.add_argument("--lab", metavar="NAME", help="a running lab: its nodes and addresses")
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="NAME[=ADDR,...]",
        help="a node (collector) and the addresses it serves on; repeatable",
    )
    p.add_argument(
        "--relay-name",
        action="append",
        default=[],
        metavar="NAME|ADDR",
        help="another name or address of the relay; repeatable",
    )
    p.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="NAME",
        help="a client certificate (default: one named 'client'); repeatable",
    )
    p.add_argument("--expired", action="store_true", help="also client-expired.crt/key")
    p.add_argument("--days", type=int, default=365, help="validity (default: %(default)s)")
    p.add_argument("--ca", metavar="FILE", help="sign with this CA certificate")
    p.add_argument("--ca-key", metavar="FILE", help="the CA's private key")
    p.set_defaults(handler=_certs)


def lab_names(lab_name: str) -> tuple[dict[str, list[str]], list[str]]:
    """(node -> addresses, relay names) of a running lab."""
    from sensilla.lab.runtime import Lab, LabError

    try:
        layout = Lab(lab_name).layout()
    except (LabError, ValueError, KeyError) as exc:
        raise UsageError(f"--lab {lab_name}: {exc}") from None
    return layout_names(layout)


def layout_names(layout: Any) -> tuple[dict[str, list[str]], list[str]]:
    nodes = {n.name: [n.mgmt_node_v4] for n in layout.nodes}
    relay = [n.mgmt_root_v4 for n in layout.nodes]
    return nodes, relay


def _certs(args: argparse.Namespace) -> int:
    from sensilla.security.certs import CA, make_set

    if args.days < 1:
        raise UsageError("--days: at least 1")
    nodes: dict[str, list[str]] = {}
    relay_names = list(args.relay_name)
    if args.lab:
        lab_nodes, lab_relay = lab_names(args.lab)
        nodes.update(lab_nodes)
        relay_names += lab_relay
    for spec in args.node:
        name, _, addrs = spec.partition("=")
        if not name:
            raise UsageError(f"--node {spec!r}: NAME[=ADDR,...]")
        nodes.setdefault(name, []).extend(a for a in addrs.split(",") if a)
    ca = None
    if bool(args.ca) != bool(args.ca_key):
        raise UsageError("--ca and --ca-key go together")
    if args.ca:
        try:
            ca = CA.load(Path(args.ca), Path(args.ca_key))
        except (OSError, ValueError, AssertionError) as exc:
            raise UsageError(f"--ca/--ca-key: cannot load the CA: {type(exc).__name__}") from None
    out = Path(args.out)
    made = make_set(
        out,
        nodes=nodes,
        relay_names=relay_names,
        clients=args.client or ["client"],
        expired=args.expired,
        days=args.days,
        ca=ca,
    )
    print(f"CA: {made.ca}" + ("" if ca else f" (key {out / 'ca.key'})"))
    print(f"relay: {made.relay[0]} {made.relay[1]}")
    for node, (c, k) in made.collectors.items():
        print(f"collector {node}: {c} {k}")
    for name, (c, k) in made.clients.items():
        print(f"client {name}: {c} {k}")
    sys.stdout.flush()
    return 0
