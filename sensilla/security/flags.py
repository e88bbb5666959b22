"""Command-line flags for TLS and tokens, the same on every command.

Servers (``sensilla relay``, ``sensilla collector``):
  --tls-cert-file, --tls-key-file   the server's certificate (PEM chain) and key
  --tls-client-ca-files             CAs of client certificates: mutual TLS (repeatable)
  --auth-tokens FILE                accepted bearer tokens (sha256 digests, scopes)
  --insecure                        allow a plaintext TCP listener

Clients (``sensilla observe``, ``status``, ``nodes``, ``policy explain``), as Hubble's
CLI names them:
  --tls, --tls-allow-insecure, --tls-ca-cert-files, --tls-client-cert-file,
  --tls-client-key-file, --tls-server-name; plus --token-file (a file holding one
  bearer token) and --insecure (plaintext to an address that is not local).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sensilla.cli.errors import UsageError
from sensilla.security.tls import ClientSecurity, ClientTLS, ServerTLS, TLSConfigError


def _files(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out.extend(p for p in (x.strip() for x in v.split(",")) if p)
    return tuple(out)


def _check_file(flag: str, path: str) -> str:
    if not Path(path).is_file():
        raise UsageError(f"{flag}: no such file: {path}")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{flag}: cannot read {path}")
    return str(Path(path).resolve())


# --------------------------------------------------------------------------- servers


def add_server_flags(p: argparse.ArgumentParser, prefix: str = "") -> argparse._ArgumentGroup:
    g = p.add_argument_group(
        "transport security",
        "TLS for the TCP listener(s); with --tls-client-ca-files clients must present a "
        "certificate from those CAs (mutual TLS). Files are re-read when they change.",
    )
    g.add_argument("--tls-cert-file", metavar="FILE", help="server certificate chain (PEM)")
    g.add_argument("--tls-key-file", metavar="FILE", help="server private key (PEM)")
    g.add_argument(
        "--tls-client-ca-files",
        metavar="FILE",
        action="append",
        help="CA bundle(s) for client certificates (mutual TLS); repeatable or comma-separated",
    )
    g.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="bearer tokens accepted (YAML/JSON of sha256 digests with scopes; "
        "docs/security.md); without it every connected client is an administrator",
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="serve plaintext on TCP (no TLS); for loopback and lab links only",
    )
    return g


def server_tls(args: argparse.Namespace, *, tcp: bool, what: str) -> ServerTLS | None:
    """The server's TLS from its flags; refuses a plaintext TCP listener without
    --insecure (a unix socket alone needs nothing)."""
    cert, key = args.tls_cert_file, args.tls_key_file
    cas = _files(args.tls_client_ca_files)
    if args.insecure and (cert or key or cas):
        raise UsageError("--insecure and --tls-* exclude each other")
    if bool(cert) != bool(key):
        raise UsageError("--tls-cert-file and --tls-key-file go together")
    if cas and not cert:
        raise UsageError("--tls-client-ca-files needs --tls-cert-file and --tls-key-file")
    if not cert:
        if tcp and not args.insecure:
            raise UsageError(
                f"{what}: refusing to listen on TCP without TLS: give --tls-cert-file and "
                "--tls-key-file (and --tls-client-ca-files for mutual TLS), or --insecure"
            )
        return None
    tls = ServerTLS(
        cert_file=_check_file("--tls-cert-file", cert),
        key_file=_check_file("--tls-key-file", key),
        client_ca_files=tuple(_check_file("--tls-client-ca-files", c) for c in cas),
    )
    from sensilla.security.tls import ReloadingServerCredentials

    try:
        ReloadingServerCredentials(tls)  # loads and checks the files now
    except TLSConfigError as exc:
        raise UsageError(f"--tls-*: {exc}") from None
    return tls


def token_store(args: argparse.Namespace) -> Any:
    """The TokenStore of --auth-tokens (None without it)."""
    if not args.auth_tokens:
        return None
    from sensilla.security.tokens import TokenFileError, TokenStore

    path = _check_file("--auth-tokens", args.auth_tokens)
    try:
        return TokenStore(path)
    except TokenFileError as exc:
        raise UsageError(f"--auth-tokens: {exc}") from None


# --------------------------------------------------------------------------- clients


def add_client_flags(p: argparse.ArgumentParser, prefix: str = "") -> argparse._ArgumentGroup:
    """Hubble's client TLS flags (``prefix`` names them for a second server, e.g.
    the collector's "relay-" flags)."""
    g = p.add_argument_group(
        f"{prefix.rstrip('-') + ' ' if prefix else ''}TLS and credentials",
        "Plaintext is used for local addresses (loopback, unix sockets) unless TLS is "
        "asked for; any other address needs TLS or --insecure.",
    )
    f = f"--{prefix}"
    g.add_argument(f"{f}tls", action="store_true", help="Specify that TLS must be used")
    g.add_argument(
        f"{f}tls-allow-insecure",
        action="store_true",
        help="Allows the client to skip verifying the server's certificate chain and host name",
    )
    g.add_argument(
        f"{f}tls-ca-cert-files",
        action="append",
        metavar="FILE",
        help="Paths to custom Certificate Authority (CA) certificate files (repeatable or "
        "comma-separated)",
    )
    g.add_argument(
        f"{f}tls-client-cert-file", metavar="FILE", help="Path to the public key file for the "
        "client certificate to connect to the server (must be PEM encoded)"
    )  # fmt: skip
    g.add_argument(
        f"{f}tls-client-key-file", metavar="FILE", help="Path to the private key file for the "
        "client certificate to connect the server (must be PEM encoded)"
    )  # fmt: skip
    g.add_argument(
        f"{f}tls-server-name", metavar="NAME", help="Specify a server name to verify the "
        "hostname on the returned certificate"
    )  # fmt: skip
    g.add_argument(
        f"{f}token-file", metavar="FILE", help="file holding a bearer token sent with every call"
    )
    if not prefix:
        g.add_argument(
            "--insecure",
            action="store_true",
            help="plaintext to an address that is not local (no TLS)",
        )
    return g


def client_security(
    args: argparse.Namespace, prefix: str = "", *, insecure: bool | None = None
) -> ClientSecurity:
    """The ClientSecurity of the client flags (files checked)."""
    d = prefix.replace("-", "_")

    def get(name: str) -> Any:
        return getattr(args, f"{d}{name}", None)

    flag = f"--{prefix}"
    cas = _files(get("tls_ca_cert_files"))
    cert, key = get("tls_client_cert_file"), get("tls_client_key_file")
    if bool(cert) != bool(key):
        raise UsageError(f"{flag}tls-client-cert-file and {flag}tls-client-key-file go together")
    want_tls = bool(
        get("tls") or get("tls_allow_insecure") or cas or cert or get("tls_server_name")
    )
    plain_ok = bool(getattr(args, "insecure", False) if insecure is None else insecure)
    if want_tls and prefix == "" and getattr(args, "insecure", False):
        raise UsageError("--insecure and --tls* exclude each other")
    tls = None
    if want_tls:
        tls = ClientTLS(
            ca_files=tuple(_check_file(f"{flag}tls-ca-cert-files", c) for c in cas),
            cert_file=_check_file(f"{flag}tls-client-cert-file", cert) if cert else "",
            key_file=_check_file(f"{flag}tls-client-key-file", key) if key else "",
            server_name=get("tls_server_name") or "",
            skip_verify=bool(get("tls_allow_insecure")),
        )
    token = get("token_file")
    return ClientSecurity(
        tls=tls,
        token_file=_check_file(f"{flag}token-file", token) if token else "",
        insecure=plain_ok,
    )


def connect(server: str, security: ClientSecurity, options: Any = ()) -> Any:
    """A blocking channel, with errors as UsageError (they name files, never secrets)."""
    from sensilla.security.tls import secure_channel

    try:
        return secure_channel(server, security, options)
    except TLSConfigError as exc:
        raise UsageError(str(exc)) from None
