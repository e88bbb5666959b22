"""TLS for Sensilla's gRPC servers and clients.

Servers (the relay, a collector's TCP Observer):

    tls = ServerTLS(cert_file="tls.crt", key_file="tls.key", client_ca_files=("ca.crt",))
    creds = ReloadingServerCredentials(tls)
    server.add_secure_port("0.0.0.0:4245", creds.credentials())

With ``client_ca_files`` a client must present a certificate signed by one of those
CAs and valid now (mutual TLS); without them any client may connect (and is known
only by its bearer token). Every new handshake asks for the current files
(grpc.dynamic_ssl_server_credentials): when a file changed (modification time,
size or inode; Kubernetes swaps secret mounts by symlink) it is read again, so a
rotated certificate is served without a restart. A pair that does not load (a key
that does not match its certificate, half-written files) is refused with one
warning and the previous pair stays in use.

Clients:

    sec = ClientSecurity(tls=ClientTLS(ca_files=("ca.crt",), cert_file=..., key_file=...),
                         token_file="token")
    channel = secure_channel("relay:4245", sec)           # grpc.Channel
    channel = aio_channel("relay:4245", sec)              # grpc.aio.Channel

Credentials are read from the files each time a channel is made (a collector makes
one per connection to the relay, so it picks up rotated files when it reconnects).
Plaintext needs ``insecure=True`` unless the target is local (loopback or a unix
socket); ``check_target`` says why not.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

log = logging.getLogger(__name__)


class TLSConfigError(ValueError):
    """A TLS file is missing or unusable; the message names the file, never its content."""


# --------------------------------------------------------------------------- files


def read_file(path: str, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TLSConfigError(f"{what} {path}: empty")
    return data


def _signature(paths: Sequence[str]) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((p, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((p, None))
    return tuple(out)


def check_pair(chain: bytes, key: bytes, where: str) -> None:
    """The private key belongs to the chain's first certificate (names files only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise TLSConfigError(f"{where}: the certificate file holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TLSConfigError(
            f"{where}: the key file holds no unencrypted PEM private key"
        ) from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if certs[0].public_key().public_bytes(enc, fmt) != private.public_key().public_bytes(enc, fmt):
        raise TLSConfigError(f"{where}: the private key does not match the certificate")


def check_ca(data: bytes, where: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"{where}: holds no PEM certificate") from None


def read_cas(files: Sequence[str], what: str = "CA file") -> bytes:
    """One PEM bundle of several CA files."""
    parts = []
    for f in files:
        data = read_file(f, what)
        check_ca(data, f"{what} {f}")
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerTLS:
    cert_file: str
    key_file: str
    client_ca_files: tuple[str, ...] = ()  # non-empty: mutual TLS (client certificates)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca_files)

    @property
    def files(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file, *self.client_ca_files)

    def describe(self) -> str:
        return "mutual TLS" if self.mutual else "TLS (no client certificates)"


class ReloadingServerCredentials:
    """Server credentials that follow the certificate files (see the module doc)."""

    def __init__(self, tls: ServerTLS) -> None:
        self.tls = tls
        self.reloads = 0  # times a changed set of files was taken into use
        self._lock = threading.Lock()
        self._signature = _signature(tls.files)
        self._failed: tuple[Any, ...] | None = None
        self.initial = self._load()  # raises TLSConfigError: refuse to start

    def _load(self) -> grpc.ServerCertificateConfiguration:
        t = self.tls
        chain = read_file(t.cert_file, "certificate file")
        key = read_file(t.key_file, "key file")
        check_pair(chain, key, f"{t.cert_file} / {t.key_file}")
        roots = read_cas(t.client_ca_files, "client CA file") if t.client_ca_files else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration when files changed."""
        sig = _signature(self.tls.files)
        with self._lock:
            if sig == self._signature:
                return None
            try:
                config = self._load()
            except TLSConfigError as exc:
                if sig != self._failed:
                    self._failed = sig
                    log.warning("TLS files changed but cannot be used (keeping the old): %s", exc)
                return None
            except Exception as exc:  # never fail a handshake on a reload
                if sig != self._failed:
                    self._failed = sig
                    log.warning("TLS reload failed (keeping the old files): %s", type(exc).__name__)
                return None
            self._signature = sig
            self._failed = None
            self.reloads += 1
            log.info("TLS: certificate files changed; new handshakes use them (reload %d)",
                     self.reloads)  # fmt: skip
            return config

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.initial, self.fetch, require_client_authentication=self.tls.mutual
        )


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class ClientTLS:
    ca_files: tuple[str, ...] = ()  # empty: the system's roots (grpc's default)
    cert_file: str = ""  # with key_file: a client certificate (mutual TLS)
    key_file: str = ""
    server_name: str = ""  # the name expected in the server's certificate
    skip_verify: bool = False  # Hubble's --tls-allow-insecure: trust what the server shows

    def files(self) -> tuple[str, ...]:
        return tuple(f for f in (*self.ca_files, self.cert_file, self.key_file) if f)


@dataclass(frozen=True)
class ClientSecurity:
    tls: ClientTLS | None = None  # None: plaintext
    token_file: str = ""  # a file holding one bearer token
    insecure: bool = False  # plaintext to a target that is not local is allowed
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def check_target(self, target: str) -> None:
        """Refuse plaintext to a target that is not local unless ``insecure``."""
        if self.tls is None and not self.insecure and not is_local_target(target):
            raise TLSConfigError(
                f"{target} is not a local address: connect with TLS (--tls, "
                "--tls-ca-cert-files …) or say --insecure to send plaintext"
            )

    def token(self) -> str | None:
        if not self.token_file:
            return None
        raw = read_file(self.token_file, "token file").decode("utf-8", "replace").strip()
        if not raw or any(c.isspace() for c in raw):
            raise TLSConfigError(f"token file {self.token_file}: expected one token")
        return raw

    def metadata(self) -> list[tuple[str, str]]:
        token = self.token()
        return [("authorization", f"Bearer {token}")] if token else []


def split_target(target: str) -> tuple[str, int | None]:
    """(host, port) of a gRPC target (``host:port``, ``dns:///host:port``, ``ipv4:…``)."""
    t = target
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if t.startswith(prefix):
            t = t[len(prefix) :]
            break
    t = t.split(",")[0]
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port.isdigit() else None
    if t.count(":") > 1:  # a bare IPv6 address
        return t, None
    host, sep, port = t.rpartition(":")
    if not sep:
        return t, None
    return host, int(port) if port.isdigit() else None


def is_local_target(target: str) -> bool:
    """A unix socket or a loopback address (plaintext stays on this machine)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host, _ = split_target(target)
    if host in ("localhost", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _subject_name(cert_der: bytes) -> str:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(cert_der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        if names:
            return str(names[0]).replace("*.", "x.", 1)
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    except x509.ExtensionNotFound:
        pass
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def fetch_server_chain(
    target: str, cert_file: str = "", key_file: str = "", timeout: float = 5.0
) -> tuple[bytes, str]:
    """(PEM of the top certificate the server presents, a name in its leaf), without
    verifying anything: for Hubble's --tls-allow-insecure."""
    host, port = split_target(target)
    if port is None:
        raise TLSConfigError(f"{target}: --tls-allow-insecure needs HOST:PORT")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if cert_file and key_file:
        ctx.load_cert_chain(cert_file, key_file)
    with (
        socket.create_connection((host, port), timeout=timeout) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        sslobj: Any = tls._sslobj  # type: ignore[attr-defined]
        chain = sslobj.get_unverified_chain() or []
        if not chain:
            raise TLSConfigError(f"{target}: the server presented no certificate")
        ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    top = ssl.DER_cert_to_PEM_cert(ders[-1]).encode()
    return top, _subject_name(ders[0])


def channel_credentials(
    target: str, tls: ClientTLS
) -> tuple[grpc.ChannelCredentials, list[tuple[str, Any]]]:
    """Credentials (read from the files now) and channel options for ``target``."""
    options: list[tuple[str, Any]] = []
    if bool(tls.cert_file) != bool(tls.key_file):
        raise TLSConfigError("a client certificate needs both its certificate and key files")
    chain = read_file(tls.cert_file, "client certificate file") if tls.cert_file else None
    key = read_file(tls.key_file, "client key file") if tls.key_file else None
    if chain is not None and key is not None:
        check_pair(chain, key, f"{tls.cert_file} / {tls.key_file}")
    roots = read_cas(tls.ca_files) if tls.ca_files else None
    server_name = tls.server_name
    if tls.skip_verify:
        try:
            roots, shown = fetch_server_chain(target, tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"{target}: cannot read its certificate: {exc}") from None
        server_name = server_name or shown
    creds = grpc.ssl_channel_credentials(
        root_certificates=roots, private_key=key, certificate_chain=chain
    )
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return creds, options


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: list[tuple[str, str]]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` (read from its file at each call)."""

    def __init__(self, security: ClientSecurity) -> None:
        self.security = security

    def _details(self, details: Any) -> Any:
        md = [m for m in (details.metadata or ()) if m[0] != "authorization"]
        return _Details(details, [*md, *self.security.metadata()])

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def secure_channel(
    target: str, security: ClientSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.Channel:
    """A blocking channel to ``target``: TLS as configured, the token on every call."""
    security.check_target(target)
    opts = [*security.options, *options]
    if security.tls is None:
        channel = grpc.insecure_channel(target, options=opts)
    else:
        creds, extra = channel_credentials(target, security.tls)
        channel = grpc.secure_channel(target, creds, options=[*opts, *extra])
    if security.token_file:
        security.token()  # fail now on an unreadable token file
        return grpc.intercept_channel(channel, TokenInterceptor(security))
    return channel


def aio_channel(
    target: str, security: ClientSecurity, options: Sequence[tuple[str, Any]] = ()
) -> grpc.aio.Channel:
    """An asyncio channel (the token is the caller's to send: ``security.metadata()``)."""
    security.check_target(target)
    opts = [*security.options, *options]
    if security.tls is None:
        return grpc.aio.insecure_channel(target, options=opts)
    creds, extra = channel_credentials(target, security.tls)
    return grpc.aio.secure_channel(target, creds, options=[*opts, *extra])
