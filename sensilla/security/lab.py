"""Credentials for a lab's relay and collectors (sensilla.lab.components).

By default a lab runs plaintext, said explicitly: ``--insecure`` on the relay (on
loopback and the management links) and on each collector. ``LabSecurity.make``
with ``tls`` writes a CA and certificates under ``<lab>/certs`` (``sensilla certs``'s
set, the nodes' management addresses as names) and runs everything with mutual TLS;
with ``tokens`` it writes ``<lab>/auth/tokens.yaml`` (digests only) with an admin
token and an ingest token for the collectors (the tokens themselves in 0600 files
next to it), so the relay requires bearer tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LabSecurity:
    certs: Path | None = None
    auth: Path | None = None
    described: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, lab_dir: Path, layout: Any, *, tls: bool, tokens: bool) -> LabSecurity:
        out = cls()
        if tls:
            from sensilla.cli.commands.certs import layout_names
            from sensilla.security.certs import make_set

            nodes, relay_names = layout_names(layout)
            out.certs = lab_dir / "certs"
            made = make_set(out.certs, nodes=nodes, relay_names=relay_names, clients=["client"])
            cert, key = made.clients["client"]
            out.described["tls"] = {
                "ca": str(made.ca),
                "cert": str(cert),
                "key": str(key),
                "server_name": "relay",
            }
        if tokens:
            out.auth = lab_dir / "auth"
            out.described["token_file"] = str(out.auth / "admin.token")
            _write_tokens(out.auth)
        return out

    @property
    def tls(self) -> bool:
        return self.certs is not None

    def relay_args(self, extra: Sequence[str] = ()) -> list[str]:
        """Flags for the relay; none for the transport when ``extra`` chooses it."""
        args: list[str] = []
        if explicit(list(extra)):
            pass
        elif self.certs is not None:
            c = self.certs
            args += ["--tls-cert-file", str(c / "relay.crt")]
            args += ["--tls-key-file", str(c / "relay.key")]
            args += ["--tls-client-ca-files", str(c / "ca.crt")]
        else:
            args.append("--insecure")
        if self.auth is not None:
            args += ["--auth-tokens", str(self.auth / "tokens.yaml")]
        return args

    def collector_args(self, node: str, relay: bool, extra: Sequence[str] = ()) -> list[str]:
        args: list[str] = []
        if explicit(list(extra)):
            pass
        elif self.certs is not None:
            c = self.certs
            args += ["--tls-cert-file", str(c / f"collector-{node}.crt")]
            args += ["--tls-key-file", str(c / f"collector-{node}.key")]
            args += ["--tls-client-ca-files", str(c / "ca.crt")]
            if relay:
                args += ["--relay-tls-ca-cert-files", str(c / "ca.crt")]
        else:
            args.append("--insecure")
        if self.auth is not None:
            args += ["--auth-tokens", str(self.auth / "tokens.yaml")]
            if relay:
                args += ["--relay-token-file", str(self.auth / "collector.token")]
        return args


def _write_tokens(d: Path) -> None:
    import yaml

    from sensilla.security.certs import write_private
    from sensilla.security.tokens import new_token, token_digest

    entries = []
    for name, scope in (("admin", {"admin": True}), ("collector", {"ingest": True})):
        token = new_token()
        write_private(d / f"{name}.token", (token + "\n").encode())
        entries.append({"name": f"lab-{name}", "sha256": token_digest(token), **scope})
    write_private(d / "tokens.yaml", yaml.safe_dump({"tokens": entries}).encode())


def explicit(extra: Sequence[str]) -> bool:
    """Extra arguments that already choose the transport (TLS files or --insecure)."""
    return any(a.split("=", 1)[0] in ("--tls-cert-file", "--insecure") for a in extra)
