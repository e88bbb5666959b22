"""`sensilla demo`: the whole system on one machine in one command."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the all-in-one demo (lab, agents, relay, UI)")
    p.add_argument("--name", default="sensilla", help="lab name (default: %(default)s)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--no-ui", action="store_true", help="do not start the UI")
    p.add_argument("--ui-port", type=int, default=8501, help="UI port (default: %(default)s)")
    p.add_argument(
        "--ui-address", default="127.0.0.1", help="address the UI binds to (default: loopback)"
    )
    p.add_argument("--rate", type=float, default=15.0, help="generated connections per second")
    p.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from sensilla.demo import run

    return run(
        args.name,
        duration=args.duration,
        ui=not args.no_ui,
        ui_port=args.ui_port,
        rate=args.rate,
        ui_address=args.ui_address,
    )
