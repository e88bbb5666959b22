"""Acceptance 1 and rotation: mutual TLS on the relay and on a collector's TCP
Observer refuses a client without a certificate, with one from another CA and with
an expired one; a collector with a bad certificate (or a token that may not push)
cannot ship, its flows stay spooled and its shipper says why; the relay's certificate
files are replaced and the next handshake presents the new certificate, no restart."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from collector.observer.ring import Event, FlowRing
from collector.observer.server import start_observer_server
from collector.observer.service import LocalObserver
from collector.shipping.batcher import Batcher
from collector.shipping.shipper import Shipper
from collector.shipping.spool import Spool
from relay.server import RelayConfig
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc
from sensilla.security.certs import CA, write_pair
from sensilla.security.tls import (
    ClientSecurity,
    ClientTLS,
    ServerTLS,
    aio_channel,
    secure_channel,
)
from sensilla.security.tokens import TokenStore
from tests.collector.shipping.test_shipping_units import make_flow
from tests.relay.observer.support import RelayThread, chdb_url
from tests.security.conftest import Certs, Tokens

CLIENTS = ["none", "untrusted", "expired"]
BOOT = 1_700_000_000_000_000_000


def client_tls(certs: Certs, who: str, server_name: str = "") -> ClientTLS:
    if who == "none":
        return ClientTLS(ca_files=(certs.ca,), server_name=server_name)
    cert, key = certs.client(who)
    return ClientTLS(ca_files=(certs.ca,), cert_file=cert, key_file=key, server_name=server_name)


def health_and_status(address: str, security: ClientSecurity) -> str:
    """"OK" when health and ServerStatus answer, else the status code."""
    ch = secure_channel(address, security)
    try:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        observer_pb2_grpc.ObserverStub(ch).ServerStatus(
            observer_pb2.ServerStatusRequest(), timeout=5
        )
        return "OK"
    except grpc.RpcError as err:
        return err.code().name
    finally:
        ch.close()


@pytest.fixture(scope="module")
def relay(certs: Certs, tokens: Tokens, chdb_dir: Path) -> Iterator[RelayThread]:
    cert, key = certs.relay
    cfg = RelayConfig(
        store_url=chdb_url(chdb_dir, "sse_tls"),
        listen=["127.0.0.1:0"],
        max_round_delay=0.02,
        retention_interval_s=0,
        tls=ServerTLS(cert, key, (certs.ca,)),
        auth=TokenStore(str(tokens.file)),
    )
    r = RelayThread(cfg).start()
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.parametrize("who", CLIENTS)
def test_sse_relay_refuses_client_without_valid_certificate(
    relay: RelayThread, certs: Certs, tokens: Tokens, who: str
) -> None:
    sec = ClientSecurity(tls=client_tls(certs, who), token_file=str(tokens.files["admin"]))
    assert health_and_status(relay.address, sec) == "UNAVAILABLE"


def test_sse_relay_serves_a_trusted_client_and_refuses_plaintext(
    relay: RelayThread, certs: Certs, tokens: Tokens
) -> None:
    good = ClientSecurity(tls=client_tls(certs, "client"), token_file=str(tokens.files["admin"]))
    assert health_and_status(relay.address, good) == "OK"
    plain = ClientSecurity(token_file=str(tokens.files["admin"]), insecure=True)
    assert health_and_status(relay.address, plain) == "UNAVAILABLE"
    # the certificate is necessary, not sufficient: the read API wants a token too
    no_token = ClientSecurity(tls=client_tls(certs, "client"))
    assert health_and_status(relay.address, no_token) == "UNAUTHENTICATED"


# --- a collector's TCP Observer ---------------------------------------------------------


async def _observer_results(certs: Certs, sock: Path) -> dict[str, str]:
    ring = FlowRing("sse-node", 64)
    ring.bind(asyncio.get_running_loop())
    f = flow_pb2.Flow(node_name="sse-node", verdict=flow_pb2.FORWARDED)
    ring.append([Event(flow=f, node_name="sse-node", time=f.time)])
    cert, key = certs.node()
    port = _free_port()
    server, _ = await start_observer_server(
        LocalObserver(ring, "sse-node"),
        str(sock),
        f"127.0.0.1:{port}",
        tls=ServerTLS(cert, key, (certs.ca,)),
    )
    try:
        out = {}
        for who in [*CLIENTS, "client"]:
            sec = ClientSecurity(tls=client_tls(certs, who))
            out[who] = await asyncio.to_thread(health_and_status, f"127.0.0.1:{port}", sec)
        out["plaintext"] = await asyncio.to_thread(
            health_and_status, f"127.0.0.1:{port}", ClientSecurity(insecure=True)
        )
        out["unix"] = await asyncio.to_thread(
            health_and_status, f"unix:{sock}", ClientSecurity()
        )
        out["socket_mode"] = oct(stat.S_IMODE(os.stat(sock).st_mode))
        return out
    finally:
        await server.stop(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sse_collector_observer_refuses_client_without_valid_certificate(
    certs: Certs, tmp_path: Path
) -> None:
    got = asyncio.run(_observer_results(certs, tmp_path / "hubble.sock"))
    assert got == {
        "none": "UNAVAILABLE",
        "untrusted": "UNAVAILABLE",
        "expired": "UNAVAILABLE",
        "client": "OK",
        "plaintext": "UNAVAILABLE",
        "unix": "OK",  # local, owner-only
        "socket_mode": "0o600",
    }


# --- shipping -------------------------------------------------------------------------


async def _ship(
    address: str, spool_dir: Path, security: ClientSecurity, seconds: float, flows: int = 50
) -> tuple[Shipper, int, int]:
    spool = Spool(spool_dir)
    if not len(spool):
        batcher = Batcher(spool, BOOT, max_flows=10)
        for seq in range(1, flows + 1):
            batcher.add(make_flow(seq, boot=BOOT, collector="sse-ship"))
        batcher.flush()
    before = len(spool)
    shipper = Shipper(
        address, spool, "sse-ship", "sse-ship", BOOT + 1, backoff_initial_s=0.05,
        backoff_max_s=0.3, channel_factory=lambda t: aio_channel(t, security),
        call_metadata=security.metadata,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.ensure_future(shipper.run(stop))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(spool):
        await asyncio.sleep(0.05)
    stop.set()
    await task
    after = len(spool)
    spool.close()
    return shipper, before, after


@pytest.mark.parametrize("who", ["none", "untrusted", "expired", "scoped-token"])
def test_sse_collector_with_bad_credentials_cannot_ship(
    relay: RelayThread, certs: Certs, tokens: Tokens, tmp_path: Path, who: str
) -> None:
    if who == "scoped-token":  # a good certificate, a token that may only read
        token = str(tokens.files["team-x"])
        sec = ClientSecurity(tls=client_tls(certs, "client"), token_file=token)
    else:
        sec = ClientSecurity(tls=client_tls(certs, who), token_file=str(tokens.files["ingest"]))
    shipper, before, after = asyncio.run(_ship(relay.address, tmp_path / "spool", sec, 3.0))
    assert before == after == 5, "the flows stay spooled"
    assert shipper.stats.flows_acked == 0 and not shipper.stats.connected
    assert shipper.stats.last_error, "the shipper says why"
    if who == "scoped-token":
        assert "PERMISSION_DENIED" in shipper.stats.last_error or "ingest" in (
            shipper.stats.last_error
        )
    # the same spool ships once the credentials are right
    good = ClientSecurity(tls=client_tls(certs, "client"), token_file=str(tokens.files["ingest"]))
    shipper, before, after = asyncio.run(_ship(relay.address, tmp_path / "spool", good, 30.0))
    assert (before, after, shipper.stats.flows_acked) == (5, 0, 50)


# --- rotation -------------------------------------------------------------------------


def presented_serial(address: str, certs: Certs) -> int:
    """The serial number of the certificate the server presents in a new handshake
    (verified against the CA, with a client certificate)."""
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=certs.ca)
    ctx.load_cert_chain(*certs.client("client"))
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as s,
        ctx.wrap_socket(s, server_hostname="127.0.0.1") as t,
    ):
        der = t.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_sse_rotated_certificate_is_served_without_restart(
    certs: Certs, tokens: Tokens, chdb_dir: Path, tmp_path: Path
) -> None:
    ca = CA.load(Path(certs.ca), certs.dir / "ca.key")
    stem = tmp_path / "relay"
    old_cert, old_key = ca.issue("relay v1", dns=["localhost"], ips=["127.0.0.1"])
    write_pair(stem, old_cert, old_key)
    cfg = RelayConfig(
        store_url=chdb_url(chdb_dir, "sse_rot"),
        listen=["127.0.0.1:0"],
        retention_interval_s=0,
        tls=ServerTLS(f"{stem}.crt", f"{stem}.key", (certs.ca,)),
    )
    r = RelayThread(cfg).start()
    try:
        good = ClientSecurity(tls=client_tls(certs, "client"))
        assert presented_serial(r.address, certs) == old_cert.serial_number
        pid = os.getpid()
        # a half-done rotation (new certificate, old key) is not taken: the old pair stays
        new_cert, new_key = ca.issue("relay v2", dns=["localhost"], ips=["127.0.0.1"])
        Path(f"{stem}.crt").write_bytes(new_cert.public_bytes(serialization.Encoding.PEM))
        assert presented_serial(r.address, certs) == old_cert.serial_number
        write_pair(stem, new_cert, new_key)  # the whole pair, as cert-manager does
        assert presented_serial(r.address, certs) == new_cert.serial_number
        assert health_and_status(r.address, good) == "OK"
        assert r.relay is not None and r.relay.tls_credentials.reloads == 1
        assert os.getpid() == pid  # same process, same server: no restart
    finally:
        r.stop()


def test_sse_ui_client_reaches_the_mtls_relay_with_its_flags(
    relay: RelayThread, certs: Certs, tokens: Tokens
) -> None:
    """The UI's relay client (sensilla ui --tls-ca/--tls-cert/--tls-key/--token-file)
    against the mutual-TLS relay with tokens: served with all of them, refused
    without its certificate or its token."""
    from ui.config import RelayConfig as UIConfig
    from ui.data import RelayClient, RelayError

    cert, key = certs.client("client")
    token = str(tokens.files["team-x"])

    def status(**kw: str) -> str:
        client = RelayClient(UIConfig(address=relay.address, timeout=5, **kw))
        try:
            client.server_status()
            return "OK"
        except RelayError as exc:
            return str(exc)
        finally:
            client.close()

    assert status(tls_ca=certs.ca, tls_cert=cert, tls_key=key, token_file=token) == "OK"
    assert status(tls_ca=certs.ca, token_file=token) != "OK"
    no_token = status(tls_ca=certs.ca, tls_cert=cert, tls_key=key)
    assert no_token != "OK" and "token" in no_token.lower()


def test_sse_ui_client_takes_a_rotated_client_certificate(
    relay: RelayThread, certs: Certs, tokens: Tokens, tmp_path: Path
) -> None:
    """The UI's cached relay client starts with a certificate from another CA
    (refused); the files are replaced with a trusted pair: its next call connects,
    same client object, no restart."""
    import shutil

    from ui.config import RelayConfig as UIConfig
    from ui.data import RelayClient, RelayError

    cert, key = tmp_path / "ui.crt", tmp_path / "ui.key"
    bad_c, bad_k = certs.client("untrusted")
    shutil.copy(bad_c, cert)
    shutil.copy(bad_k, key)
    cfg = UIConfig(address=relay.address, tls_ca=certs.ca, tls_cert=str(cert),
                   tls_key=str(key), token_file=str(tokens.files["admin"]), timeout=5)  # fmt: skip
    client = RelayClient(cfg)
    try:
        with pytest.raises(RelayError):
            client.server_status()
        good_c, good_k = certs.client("client")
        shutil.copy(good_k, key)
        shutil.copy(good_c, cert)
        client.server_status()  # no exception: the rotated pair is in use
    finally:
        client.close()
