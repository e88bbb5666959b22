"""Fixtures of the security tests (prefix sse): a lab-style certificate set (CA,
relay, a node, clients, an expired client), a certificate from another CA, and a
token file with an admin, two namespace-scoped and an ingest-only token."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensilla.security.certs import CA, CertSet, make_set, write_pair
from sensilla.security.tokens import new_token, token_digest


@dataclass
class Certs:
    dir: Path
    set: CertSet

    @property
    def ca(self) -> str:
        return str(self.set.ca)

    def client(self, name: str) -> tuple[str, str]:
        if name == "untrusted":
            return str(self.dir / "untrusted.crt"), str(self.dir / "untrusted.key")
        c, k = self.set.clients[name]
        return str(c), str(k)

    @property
    def relay(self) -> tuple[str, str]:
        return str(self.set.relay[0]), str(self.set.relay[1])

    def node(self, name: str = "sse-node") -> tuple[str, str]:
        c, k = self.set.collectors[name]
        return str(c), str(k)


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    d = Path(tempfile.mkdtemp(prefix="sse-certs-"))
    try:
        made = make_set(d, nodes={"sse-node": ["127.0.0.1"]}, clients=["client"], expired=True)
        other = CA.create("sse untrusted CA")
        cert, key = other.issue("untrusted client", dns=["localhost"], ips=["127.0.0.1"])
        write_pair(d / "untrusted", cert, key)
        yield Certs(d, made)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Tokens:
    file: Path
    plain: dict[str, str]  # name -> token
    files: dict[str, Path]  # name -> client token file


@pytest.fixture(scope="module")
def tokens() -> Iterator[Tokens]:
    d = Path(tempfile.mkdtemp(prefix="sse-tokens-"))
    scopes: dict[str, dict[str, Any]] = {
        "admin": {"admin": True},
        "team-x": {"namespaces": ["x"]},
        "team-shop": {"namespaces": ["shop", "default"]},
        "ingest": {"ingest": True},
    }
    plain = {name: new_token() for name in scopes}
    entries = [{"name": n, "sha256": token_digest(plain[n]), **s} for n, s in scopes.items()]
    try:
        (d / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
        files = {}
        for n, t in plain.items():
            files[n] = d / f"{n}.token"
            files[n].write_text(t + "\n")
        yield Tokens(d / "tokens.yaml", plain, files)
    finally:
        shutil.rmtree(d, ignore_errors=True)
