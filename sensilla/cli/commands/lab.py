"""`sensilla lab`: a Kubernetes-like cluster made of network namespaces."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from sensilla.cli.errors import UsageError

DEFAULT_LAB = os.environ.get("SENSILLA_LAB", "sensilla")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lab = sub.add_parser("lab", help="the lab cluster: nodes and pods as network namespaces")
    lab.add_argument(
        "--name", default=DEFAULT_LAB, help="lab name, 1-8 characters (default: %(default)s)"
    )
    lsub = lab.add_subparsers(dest="lab_command", metavar="SUBCOMMAND")

    p = lsub.add_parser("up", help="create the lab and start its processes")
    p.add_argument("--spec", help="lab spec (YAML or JSON); default: the x/y/z a/b/c model")
    p.add_argument("--detach", action="store_true", help="return once the lab is up")
    p.add_argument("--no-relay", action="store_true", help="do not start a relay")
    p.add_argument("--no-collectors", action="store_true", help="do not start collectors")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS between relay, collectors and clients (certificates in the lab's "
        "directory; lab status names the client's); default: plaintext, --insecure",
    )
    p.add_argument(
        "--tokens",
        action="store_true",
        help="the relay requires bearer tokens (an admin token file in lab status)",
    )
    p.set_defaults(handler=_up)

    p = lsub.add_parser("down", help="remove the lab entirely (safe to repeat)")
    p.add_argument("--all", action="store_true", help="remove every lab on this machine")
    p.set_defaults(handler=_down)

    p = lsub.add_parser("status", help="describe the lab")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(handler=_status)

    p = lsub.add_parser("label", help="change labels, as kubectl label")
    p.add_argument("kind", choices=("pod", "pods", "namespace", "namespaces", "ns"))
    p.add_argument("target", help="NS/POD for pods, NS for namespaces")
    p.add_argument("changes", nargs="+", help="key=value to set, key- to remove")
    p.add_argument("--overwrite", action="store_true", help="allow changing existing values")
    p.set_defaults(handler=_label)

    p = lsub.add_parser("probe", help="real connections between pods, in parallel")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--protocol", default="TCP", type=str.upper, choices=("TCP", "UDP", "SCTP"))
    p.add_argument("--from", dest="sources", action="append", metavar="NS/POD")
    p.add_argument("--to", dest="destinations", action="append", metavar="NS/POD")
    p.add_argument("--family", type=int, choices=(4, 6), default=4)
    p.add_argument("--timeout", type=float, default=1.5, help="seconds per probe")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.set_defaults(handler=_probe)

    lab.set_defaults(handler=lambda args: lab.print_help() or 2)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UsageError("the lab needs root (network namespaces)")


def _up(args: argparse.Namespace) -> int:
    _require_root()
    from sensilla.lab import components, runtime
    from sensilla.lab.spec import SpecError

    options = components.Options(
        relay=not args.no_relay,
        collectors=not args.no_collectors,
        tls=args.tls,
        tokens=args.tokens,
    )
    start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - start:5.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        lab = runtime.up(args.name, args.spec, options, progress=say)
    except (SpecError, runtime.LabError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    say(f"lab {lab.name!r} is up; `sensilla lab status` describes it")
    if args.detach:
        return 0
    print("press Ctrl-C to tear the lab down", file=sys.stderr)
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop["now"]:
        time.sleep(0.2)
    say("tearing down")
    leftovers = runtime.down(args.name)
    for item in leftovers:
        print(f"could not remove {item}", file=sys.stderr)
    return 1 if leftovers else 0


def _down(args: argparse.Namespace) -> int:
    _require_root()
    from sensilla.lab import runtime

    names = runtime.list_labs() if args.all else [args.name]
    leftovers = []
    for name in names:
        leftovers += runtime.down(name)
    for item in leftovers:
        print(f"could not remove {item}", file=sys.stderr)
    return 1 if leftovers else 0


def _lab(args: argparse.Namespace) -> Any:
    from sensilla.lab import runtime

    lab = runtime.Lab(args.name)
    if not lab.exists():
        raise UsageError(f"lab {args.name!r} is not up (sensilla lab up --detach)")
    return lab


def _status(args: argparse.Namespace) -> int:
    status = _lab(args).status()
    if args.output == "json":
        print(json.dumps(status, indent=2))
        return 0
    print(f"lab {status['name']} ({status['status']}), state revision {status['revision']}")
    for node in status["nodes"]:
        print(f"  node {node['name']}: pods {', '.join(node['pod_cidrs'])}")
    for pod in status["pods"]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(pod["labels"].items()))
        print(
            f"  pod {pod['namespace']}/{pod['name']} on {pod['node']}: "
            f"{' '.join(pod['ips'])} [{labels}]"
        )
    relay = status["relay"].get("address") if status["relay"] else None
    print(f"  relay: {relay or 'not running'}")
    for c in status["collectors"]:
        print(f"  collector {c['node']}: {c.get('address', '')}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from sensilla.lab.state import StateError

    lab = _lab(args)
    kind = "pods" if args.kind in ("pod", "pods") else "namespaces"
    if kind == "pods" and args.target.count("/") != 1:
        raise UsageError(f"pod {args.target!r}: expected NS/POD")
    try:
        revision = lab.state.label(kind, args.target, args.changes, overwrite=args.overwrite)
    except StateError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{kind[:-1]}/{args.target} labeled (revision {revision})")
    return 0


def _probe(args: argparse.Namespace) -> int:
    _require_root()
    from sensilla.lab.probe import probe, select_pairs

    lab = _lab(args)
    layout = lab.layout()
    try:
        pairs = select_pairs(layout, args.sources, args.destinations)
    except KeyError as exc:
        raise UsageError(f"unknown pod {exc.args[0]!r}") from exc
    results = probe(layout, pairs, args.port, args.protocol, args.family, args.timeout)
    if args.output == "json":
        print(
            json.dumps(
                {
                    "port": args.port,
                    "protocol": args.protocol,
                    "family": args.family,
                    "results": [r.to_dict() for r in results],
                },
                indent=1,
            )
        )
        return 0
    _print_truth_table(layout, results)
    return 0


def _print_truth_table(layout: Any, results: list[Any]) -> None:
    got = {(r.source, r.destination): r.connected for r in results}
    keys = [p.key for p in layout.pods]
    width = max(len(k) for k in keys)
    print(" " * width + "  " + " ".join(k.rjust(width) for k in keys))
    for s in keys:
        row = []
        for d in keys:
            mark = "." if (s, d) not in got else ("✓" if got[(s, d)] else "X")
            row.append(mark.rjust(width))
        print(s.ljust(width) + "  " + " ".join(row))
    ok = sum(1 for r in results if r.connected)
    print(f"{ok}/{len(results)} connected")
