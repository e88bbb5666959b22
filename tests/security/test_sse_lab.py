"""A lab with credentials everywhere: mutual TLS between relay, collectors and
clients (`lab up --tls`), bearer tokens on the relay (`--tokens`, plus a scoped token
added while it runs: the token file is re-read), the relay's store on
clickhouse-server with its password in a file (`?password_file=`). Real traffic
between pods; `sensilla observe` reaches the relay and a collector's Observer with
a client certificate and a token, and is refused without them (acceptance 1 on the
real processes), a scoped token sees only its namespace (acceptance 2); then every
log of the run, every error message printed, lab and collector status files and
every metrics endpoint are searched for the secrets (tokens, the ClickHouse
password, the private keys): none appears (acceptance 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from sensilla.lab import Options, temporary_lab
from sensilla.security.tokens import new_token, token_digest
from tests.relay.clickhouse_server import ClickHouseServer, available

pytestmark = pytest.mark.needs_root

OUTPUTS: list[str] = []  # everything the commands printed (errors included)


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "sensilla.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    OUTPUTS.append(out.stdout + out.stderr)
    return out


@pytest.fixture(scope="module")
def clickhouse() -> Iterator[ClickHouseServer]:
    if not available():
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer(prefix="sse-ch-")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def lab(clickhouse: ClickHouseServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    d = tmp_path_factory.mktemp("sse-lab")
    pw_file = d / "clickhouse.password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, clickhouse.password.encode())
    os.close(fd)
    url = (
        f"clickhouse://{clickhouse.user}@127.0.0.1:{clickhouse.port}/sse_lab"
        f"?password_file={pw_file}"
    )
    with temporary_lab("sse", options=Options(tls=True, tokens=True, store=url)) as lab:
        yield lab


def client_flags(lab: Any, cert: bool = True) -> list[str]:
    tls = lab.status()["relay"]["tls"]
    flags = ["--tls-ca-cert-files", tls["ca"]]
    if cert:
        flags += ["--tls-client-cert-file", tls["cert"], "--tls-client-key-file", tls["key"]]
    return flags


def observe(lab: Any, server: str, token: str | None, *extra: str) -> Any:
    args = ["observe", "--server", server, "-o", "json", "--since", "10m", "--all"]
    if token:
        args += ["--token-file", token]
    return cli(*args, *extra)


def flows_of(out: Any) -> list[dict[str, Any]]:
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    return [r.get("flow", r) for r in rows if "flow" in r or "source" in r]


def ns(ep: dict[str, Any]) -> str:
    return str(ep.get("namespace", ""))


def test_sse_lab_with_credentials(lab: Any, clickhouse: ClickHouseServer) -> None:
    status = lab.status()
    relay = status["relay"]["address"]
    admin = status["relay"]["token_file"]
    auth_dir = Path(admin).parent
    # traffic between the pods of x, y and z
    for port in ("80", "81"):
        probe = cli("lab", "--name", lab.name, "probe", "--port", port, "-o", "json")
        assert probe.returncode == 0, probe.stderr
    # a namespace-scoped token, added while the relay runs (the file is re-read)
    team_x = new_token()
    tokens_file = auth_dir / "tokens.yaml"
    doc = yaml.safe_load(tokens_file.read_text())
    doc["tokens"].append(
        {"name": "sse-team-x", "sha256": token_digest(team_x), "namespaces": ["x"]}
    )
    tokens_file.write_text(yaml.safe_dump(doc))
    team_x_file = auth_dir / "team-x.token"
    team_x_file.write_text(team_x + "\n")
    os.chmod(team_x_file, 0o600)

    # the admin sees flows of every namespace (wait for the lab's traffic to arrive)
    deadline = time.monotonic() + 90
    while True:
        every = flows_of(observe(lab, relay, admin, *client_flags(lab)))
        spaces = {ns(f.get("source", {})) for f in every} | {
            ns(f.get("destination", {})) for f in every
        }
        if {"x", "y", "z"} <= spaces or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {"x", "y", "z"} <= spaces, spaces

    # acceptance 2 on the lab: the scoped token sees x's flows, only them
    deadline = time.monotonic() + 30
    while True:  # until the relay has re-read the token file
        out = observe(lab, relay, str(team_x_file), *client_flags(lab))
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    # what the admin saw before and after: the scoped view lies between, on x's side
    def in_x(flows: list[dict[str, Any]]) -> set[str]:
        return {
            f["uuid"] for f in flows
            if ns(f.get("source", {})) == "x" or ns(f.get("destination", {})) == "x"
        }  # fmt: skip

    time.sleep(3)  # the probes' flows are shipped
    before = flows_of(observe(lab, relay, admin, *client_flags(lab)))
    scoped = flows_of(observe(lab, relay, str(team_x_file), *client_flags(lab)))
    after = flows_of(observe(lab, relay, admin, *client_flags(lab)))
    got = {f["uuid"] for f in scoped}
    assert got and len(in_x(before)) < len(before), "flows on both sides of the scope"
    assert in_x(before) <= got <= in_x(after)
    assert len(got) == len(scoped)

    # acceptance 1 on the real processes: no certificate, or no token, is refused
    wrong = auth_dir / "wrong.token"
    wrong_token = "sse-wrong-" + new_token()
    wrong.write_text(wrong_token + "\n")
    assert observe(lab, relay, admin, *client_flags(lab, cert=False)).returncode != 0
    assert observe(lab, relay, None, *client_flags(lab)).returncode != 0
    refused = observe(lab, relay, str(wrong), *client_flags(lab))
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr
    assert observe(lab, relay, admin, "--insecure").returncode != 0  # plaintext
    collector = status["collectors"][0]
    ca = status["relay"]["tls"]["ca"]
    certs = Path(ca).parent
    node = collector["node"]
    local = observe(lab, collector["address"], admin, *client_flags(lab))
    assert flows_of(local), "a collector's Observer answers a client with a certificate"
    assert observe(lab, collector["address"], admin, *client_flags(lab, cert=False)).returncode
    assert observe(lab, collector["address"], None, *client_flags(lab)).returncode  # token
    scoped_local = flows_of(observe(lab, collector["address"], str(team_x_file),
                                    *client_flags(lab)))  # fmt: skip
    assert all(
        ns(f.get("source", {})) == "x" or ns(f.get("destination", {})) == "x"
        for f in scoped_local
    )
    # the collector ships over mutual TLS with its ingest token (status file)
    st = _collector_status(lab, node)
    assert st["shipping"]["connected"] is True, st["shipping"]

    # acceptance 3: no secret anywhere
    secrets = {
        "admin token": Path(admin).read_text().strip(),
        "collector token": (auth_dir / "collector.token").read_text().strip(),
        "scoped token": team_x,
        "refused token": wrong_token,
        "clickhouse password": clickhouse.password,
        "clickhouse password (URL)": quote(clickhouse.password, safe=""),
    }
    for key in sorted(certs.glob("*.key")):
        body = [ln for ln in key.read_text().splitlines() if ln and not ln.startswith("-----")]
        for i, line in enumerate(body):
            secrets[f"{key.name} line {i}"] = line
    texts: dict[str, str] = {}
    for f in sorted((lab.dir / "logs").rglob("*")):
        if f.is_file():
            texts[str(f)] = f.read_text(errors="replace")
    for f in sorted(lab.dir.rglob("*.json")):
        if "spool" not in f.parts:
            texts[str(f)] = f.read_text(errors="replace")
    metrics = [status["relay"]["metrics"]] + [c["metrics"] for c in status["collectors"]]
    for m in metrics:
        with urllib.request.urlopen(f"http://{m}/metrics", timeout=10) as resp:
            texts[f"metrics {m}"] = resp.read().decode(errors="replace")
    texts["command output"] = "\n".join(OUTPUTS)
    assert len(texts) >= 6 and any("relay" in k for k in texts)
    assert "refused" in "".join(v for k, v in texts.items() if "relay" in k)  # logged, safely
    found = [
        (what, where) for what, s in secrets.items() for where, t in texts.items() if s and s in t
    ]
    assert not found, found


def _collector_status(lab: Any, node: str) -> dict[str, Any]:
    for f in lab.dir.rglob(f"{node}.json"):
        data = json.loads(f.read_text())
        if isinstance(data, dict) and "shipping" in data:
            return data
    raise AssertionError(f"no status file of {node} with shipping")
