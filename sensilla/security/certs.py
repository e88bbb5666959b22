"""A small certificate authority for labs and tests (``sensilla certs``).

    ca = CA.create("sensilla lab CA")
    ca.save(out / "ca.crt", out / "ca.key")
    cert, key = ca.issue("relay", dns=["localhost", "relay"], ips=["127.0.0.1"],
                         server=True, client=False)
    write_pair(out / "relay", cert, key)     # relay.crt, relay.key (0600)

Keys are ECDSA P-256. Server certificates carry the names clients dial as subject
alternative names (DNS names and IP addresses); collectors get server and client
usage (they serve their Observer and present the same certificate to the relay).
``not_after`` in the past gives an expired certificate (for tests).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file 0600 from the start (replacing atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_pair(stem: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    """``<stem>.crt`` (0644) and ``<stem>.key`` (0600)."""
    write_private(stem.with_name(stem.name + ".key"), key_pem(key))
    write_public(stem.with_name(stem.name + ".crt"), cert_pem(cert))


@dataclass
class CA:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "sensilla CA", days: int = 3650) -> CA:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - DAY)
            .not_valid_after(now + days * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> CA:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "a P-256 CA key"
        return cls(cert, key)

    def save(self, cert_file: Path, key_file: Path) -> None:
        write_private(Path(key_file), key_pem(self.key))
        write_public(Path(cert_file), cert_pem(self.cert))

    def issue(
        self,
        name: str,
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        server: bool = True,
        client: bool = True,
        days: int = 365,
        not_after: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = new_key()
        now = _now()
        after = not_after or now + days * DAY
        before = not_before or min(now - DAY, after - 2 * DAY)
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(before)
            .not_valid_after(after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=True, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns)]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in dict.fromkeys(ips)]
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(self.key, hashes.SHA256()), key


def split_names(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of a list of names."""
    dns, ips = [], []
    for n in names:
        try:
            ips.append(str(ipaddress.ip_address(n.strip("[]"))))
        except ValueError:
            dns.append(n)
    return dns, ips


LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass
class CertSet:
    """What ``make_set`` wrote (paths)."""

    out: Path
    ca: Path
    relay: tuple[Path, Path]
    collectors: dict[str, tuple[Path, Path]]
    clients: dict[str, tuple[Path, Path]]


def make_set(
    out: Path,
    *,
    nodes: Mapping[str, Sequence[str]],
    relay_names: Sequence[str] = (),
    clients: Sequence[str] = ("client",),
    expired: bool = False,
    days: int = 365,
    ca: CA | None = None,
) -> CertSet:
    """A CA (``ca.crt``/``ca.key``), the relay's certificate (``relay.*``: loopback,
    ``relay``, ``sensilla-relay`` and ``relay_names``), one per node
    (``collector-<node>.*``: the node name and its addresses), one per client
    (``client-<name>.*``) and, with ``expired``, ``client-expired.*`` whose validity
    ended yesterday."""
    out.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca = CA.create("sensilla lab CA")
        ca.save(out / "ca.crt", out / "ca.key")
    dns, ips = split_names([*LOCAL_NAMES, "relay", "sensilla-relay", *relay_names])
    cert, key = ca.issue("sensilla-relay", dns=dns, ips=ips, server=True, client=True, days=days)
    write_pair(out / "relay", cert, key)
    result = CertSet(out, out / "ca.crt", (out / "relay.crt", out / "relay.key"), {}, {})
    for node, addrs in nodes.items():
        dns, ips = split_names([node, *LOCAL_NAMES, *addrs])
        cert, key = ca.issue(f"collector {node}", dns=dns, ips=ips, days=days)
        stem = out / f"collector-{node}"
        write_pair(stem, cert, key)
        result.collectors[node] = (
            stem.with_name(stem.name + ".crt"),
            stem.with_name(stem.name + ".key"),
        )
    names = list(clients) + (["expired"] if expired else [])
    for name in names:
        kw = {"not_after": _now() - DAY} if name == "expired" and expired else {"days": days}
        cert, key = ca.issue(f"client {name}", server=False, client=True, **kw)  # type: ignore[arg-type]
        stem = out / f"client-{name}"
        write_pair(stem, cert, key)
        result.clients[name] = (
            stem.with_name(stem.name + ".crt"),
            stem.with_name(stem.name + ".key"),
        )
    return result
