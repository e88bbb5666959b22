"""`sensilla token`: bearer tokens for a relay's (or collector's) --auth-tokens file.

    sensilla token create --tokens-file tokens.yaml --name team-x --namespace x \
        --out team-x.token
    sensilla token create --tokens-file tokens.yaml --name ops --admin
    sensilla token create --tokens-file tokens.yaml --name collectors --ingest --out c.token
    sensilla token hash < token        # the sha256 to put in a file by hand

The tokens file keeps only digests (docs/security.md). The token itself is written
to --out (0600) or printed once on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sensilla.cli.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("token", help="bearer tokens for --auth-tokens files")
    tsub = p.add_subparsers(dest="token_command", metavar="SUBCOMMAND")
    c = tsub.add_parser("create", help="make a token and add its digest to a tokens file")
    c.add_argument("--tokens-file", required=True, metavar="FILE", help="YAML file to add to")
    c.add_argument("--name", required=True, help="the token's name (shown in logs)")
    c.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="a namespace it may see (repeatable)",
    )
    c.add_argument("--admin", action="store_true", help="sees every namespace")
    c.add_argument("--ingest", action="store_true", help="may push flows (collectors)")
    c.add_argument("--out", metavar="FILE", help="write the token here (0600), not stdout")
    c.set_defaults(handler=_create)
    h = tsub.add_parser("hash", help="print the sha256 of a token read from stdin")
    h.set_defaults(handler=_hash)
    p.set_defaults(handler=lambda args: p.print_help() or 2)


def _load(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        return {"tokens": []}
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"--tokens-file {path}: cannot read it: {type(exc).__name__}") from None
    if raw is None:
        return {"tokens": []}
    if not isinstance(raw, dict):
        raise UsageError(f"--tokens-file {path}: not a tokens file")
    return raw


def _create(args: argparse.Namespace) -> int:
    import yaml

    from sensilla.security.certs import write_private
    from sensilla.security.tokens import TokenFileError, new_token, parse_tokens, token_digest

    path = Path(args.tokens_file)
    data = _load(path)
    data.setdefault("tokens", [])
    token = new_token()
    entry: dict[str, Any] = {"name": args.name, "sha256": token_digest(token)}
    if args.admin:
        entry["admin"] = True
    if args.namespace:
        entry["namespaces"] = sorted(set(args.namespace))
    if args.ingest:
        entry["ingest"] = True
    data["tokens"].append(entry)
    try:
        parse_tokens(data, str(path))
    except TokenFileError as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps(data, indent=1) if path.suffix == ".json" else yaml.safe_dump(data)
    write_private(path, text.encode())
    if args.out:
        write_private(Path(args.out), (token + "\n").encode())
        print(f"token {args.name!r} written to {args.out}; digest added to {path}")
    else:
        print(token)
    return 0


def _hash(args: argparse.Namespace) -> int:
    from sensilla.security.tokens import token_digest

    token = sys.stdin.read().strip()
    if not token:
        raise UsageError("no token on stdin")
    print(token_digest(token))
    return 0
