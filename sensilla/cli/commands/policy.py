"""`sensilla policy`: apply, delete and explain Kubernetes NetworkPolicies in a lab.

apply/delete validate everything first (an invalid document is rejected with the
field path and nothing changes), write the lab's state directory under its lock,
then wait until every node's collector enforces the new revision.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sensilla.cli.errors import UsageError

DEFAULT_TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pol = sub.add_parser("policy", help="apply, delete and explain NetworkPolicies (lab)")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--lab", help="lab name (default: $SENSILLA_LAB, else the lab that is up)")
    where.add_argument("--state-dir", help="a state directory instead of a lab's")
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds to wait for every node to enforce the change (default: %(default)s)",
    )
    wait.add_argument("--no-wait", action="store_true", help="return once written")
    psub = pol.add_subparsers(dest="policy_command", metavar="SUBCOMMAND")

    p = psub.add_parser("apply", parents=[where, wait], help="create or replace policies")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="YAML or JSON, several documents or a List ('-' for stdin); repeatable",
    )
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace for documents without one (default: %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate only")
    p.set_defaults(handler=_apply)

    p = psub.add_parser("delete", parents=[where, wait], help="delete policies")
    p.add_argument("names", nargs="*", metavar="NS/NAME")
    p.add_argument("--all", action="store_true", help="delete every policy")
    p.add_argument("-n", "--namespace", help="with --all: only this namespace")
    p.set_defaults(handler=_delete)

    p = psub.add_parser("list", parents=[where], help="list policies")
    p.add_argument("-o", "--output", choices=("text", "json", "yaml"), default="text")
    p.set_defaults(handler=_list)

    p = psub.add_parser("explain", parents=[where], help="why a connection is allowed or denied")
    p.add_argument("--from", dest="src", required=True, metavar="NS/POD|IP")
    p.add_argument("--to", dest="dst", required=True, metavar="NS/POD|IP")
    p.add_argument("--port", type=int, help="destination port (none for ICMP)")
    p.add_argument(
        "--protocol", default="TCP", type=str.upper, choices=("TCP", "UDP", "SCTP", "ICMP")
    )
    p.add_argument(
        "--family",
        type=int,
        choices=(4, 6),
        default=4,
        help="address family ipBlocks see (default: %(default)s)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--relay",
        metavar="ADDR",
        help="ask this relay (it adds the last observed flow and a policy that would allow "
        "it); default: the lab's relay when it runs, else the model on the state directory",
    )
    from sensilla.security.flags import add_client_flags

    add_client_flags(p)
    p.set_defaults(handler=_explain)

    pol.set_defaults(handler=lambda args: pol.print_help() or 2)


def _state_dir(args: argparse.Namespace) -> Path:
    from collector.sources.lab import LabSourceError, find_state_dir

    if args.state_dir:
        d = Path(args.state_dir)
        if not d.is_dir():
            raise UsageError(f"--state-dir {d}: no such directory")
        return d
    lab = args.lab or os.environ.get("SENSILLA_LAB")
    try:
        if lab is None:
            try:
                return find_state_dir("sensilla")
            except LabSourceError:
                return find_state_dir(None)
        return find_state_dir(lab)
    except LabSourceError as exc:
        raise UsageError(str(exc)) from exc


def _read(name: str) -> tuple[str, str]:
    if name == "-":
        return "<stdin>", sys.stdin.read()
    try:
        return name, Path(name).read_text()
    except OSError as exc:
        raise UsageError(f"-f {name}: {exc.strerror or exc}") from exc


def _wait(state_dir: Path, revision: int, args: argparse.Namespace) -> int:
    from collector.sources.lab import wait_for_collectors

    if args.no_wait:
        return 0
    result = wait_for_collectors(state_dir, revision, timeout=args.timeout)
    if result.ok:
        nodes = ", ".join(sorted(result.reached))
        print(f"enforced at revision {revision} on {nodes} ({result.seconds * 1000:.0f} ms)")
        return 0
    print(
        f"sensilla: revision {revision} is written, but after {args.timeout:g} s not every "
        "node enforces it:",
        file=sys.stderr,
    )
    for node, why in sorted(result.lagging.items()):
        print(f"  {node}: {why}", file=sys.stderr)
    return 1


def _apply(args: argparse.Namespace) -> int:
    from collector.policy.errors import PolicyValidationError
    from collector.policy.parse import parse_documents
    from sensilla.lab.state import StateDir

    parsed = []
    failures = []
    for name in args.filename:
        source, text = _read(name)
        try:
            parsed += parse_documents(text, source, default_namespace=args.namespace)
        except PolicyValidationError as exc:
            failures.append(exc)
    if failures:
        err = PolicyValidationError.merge(failures)
        print(f"sensilla: rejected, nothing was applied:\n{err}", file=sys.stderr)
        return 1
    if args.dry_run:
        for p in parsed:
            print(f"networkpolicy {p.policy.key} valid (dry run)")
        return 0
    state_dir = _state_dir(args)
    state = StateDir(state_dir)
    verbs = []
    for p in parsed:
        old = state.read("networkpolicies", p.policy.key)
        if old is None:
            verbs.append("created")
        elif _same(old, p.obj):
            verbs.append("unchanged")
        else:
            verbs.append("configured")
    revision = state.apply([("networkpolicies", p.obj, p.policy.key) for p in parsed])
    for p, verb in zip(parsed, verbs, strict=True):
        print(f"networkpolicy {p.policy.key} {verb}")
    return _wait(state_dir, revision, args)


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def core(o: dict[str, Any]) -> Any:
        meta = o.get("metadata") or {}
        return (o.get("spec"), meta.get("labels") or {}, meta.get("annotations") or {})

    return bool(core(old) == core(new))


def _delete(args: argparse.Namespace) -> int:
    from sensilla.lab.state import StateDir

    if args.all == bool(args.names):
        raise UsageError("give NS/NAME arguments or --all (not both)")
    if args.namespace and not args.all:
        raise UsageError("-n/--namespace goes with --all")
    state_dir = _state_dir(args)
    state = StateDir(state_dir)
    existing = state.objects("networkpolicies")
    if args.all:
        keys = sorted(
            k for k in existing if not args.namespace or k.startswith(args.namespace + "/")
        )
    else:
        keys = []
        for name in args.names:
            if name.count("/") != 1 or not all(name.split("/")):
                raise UsageError(f"{name!r}: expected NS/NAME")
            if name not in existing:
                print(f"sensilla: networkpolicy {name} not found", file=sys.stderr)
                return 1
            keys.append(name)
    revision = state.apply([("networkpolicies", None, k) for k in keys])
    for k in keys:
        print(f"networkpolicy {k} deleted")
    if not keys:
        print("no policies to delete")
    return _wait(state_dir, revision, args)


def _list(args: argparse.Namespace) -> int:
    from sensilla.lab.state import StateDir

    objs = StateDir(_state_dir(args)).objects("networkpolicies")
    if args.output == "json":
        print(
            json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs.values())}, indent=1)
        )
    elif args.output == "yaml":
        import yaml

        print(yaml.safe_dump_all(list(objs.values()), sort_keys=False), end="")
    else:
        for key, obj in sorted(objs.items()):
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            print(f"{key}\t(revision {rv})")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from collector.policy.errors import PolicyValidationError
    from collector.policy.explain import explain_dict, explain_text
    from collector.policy.verdict import verdict
    from collector.sources.lab import LabSource

    if args.protocol != "ICMP" and args.port is None:
        raise UsageError("--port is required for TCP, UDP and SCTP")
    if _explain_via_relay(args):
        return 0
    try:
        state = LabSource(_state_dir(args)).cluster_state()
    except PolicyValidationError as exc:
        raise UsageError(f"the state directory holds an invalid policy: {exc}") from exc
    try:
        v = verdict(args.src, args.dst, args.port, args.protocol, state, args.family)
    except KeyError as exc:
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from exc
    if args.output == "json":
        print(json.dumps({**explain_dict(v), "revision": state.revision}, indent=1))
    else:
        print(explain_text(v))
    return 0


def _explain_via_relay(args: argparse.Namespace) -> bool:
    """Answer through a relay (relay.query.client) when one is given, or when the lab
    runs one; False: use the local model."""
    from relay.query import client
    from sensilla.security.flags import client_security

    address, required = args.relay, args.relay is not None
    security = client_security(args)
    explicit = security.tls is not None or bool(security.token_file)
    if address is None and not args.state_dir:
        try:
            state_dir = _state_dir(args)
            address = client.lab_relay_address(state_dir)
            if address is not None and not explicit:  # the lab's own credentials
                security = client.lab_relay_security(state_dir) or security
        except UsageError:  # no lab here: a relay on the default address may know
            address = os.environ.get("SENSILLA_SERVER", "localhost:4245")
    if address is None:
        return False
    try:
        resp = client.explain(
            address, args.src, args.dst, args.port, args.protocol, args.family,
            required=required, security=security,
        )  # fmt: skip
    except client.RelayUnusable as exc:
        if required:
            raise UsageError(str(exc)) from None
        return False
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.output == "json":
        d = client.to_dict(resp, args.src, args.dst, args.port, args.protocol, address)
        print(json.dumps(d, indent=1))
    else:
        print(client.format_text(resp, address))
    return True
