"""The shipper against a test ingest server that refuses, drops and restarts."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from pathlib import Path

import pytest

from collector.shipping.batcher import Batcher
from collector.shipping.shipper import Shipper
from collector.shipping.spool import Spool
from sensilla.protos import extensions_pb2
from tests.collector.shipping.ingest_server import IngestServer
from tests.collector.shipping.test_shipping_units import make_flow

BOOT = 1_700_000_000_000_000_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _produce(batcher: Batcher, rate: float, seconds: float, start_seq: int = 1) -> int:
    """Feed flows at `rate` per second for `seconds`; returns the next sequence."""
    seq = start_seq
    t0 = time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate) + start_seq
        while seq < due:
            batcher.add(make_flow(seq, boot=BOOT))
            seq += 1
        batcher.seal_if_due()
        await asyncio.sleep(0.01)
    return seq


def _delivered_sequences(server: IngestServer) -> list[int]:
    out = []
    for batch in server.received.batches.values():
        for f in batch.flows:
            ext = extensions_pb2.FlowExtension()
            f.extensions.Unpack(ext)
            out.append(ext.position.sequence)
    return sorted(out)


async def _wait_drained(spool: Spool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(spool) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def _run_scenario(tmp_path: Path, outage_s: float, rate: float, drop_every: int = 0) -> dict:
    async def scenario() -> dict:
        port = _free_port()
        server = IngestServer(port)
        server.drop_every = drop_every
        spool = Spool(tmp_path / "spool", memory_bytes=8 << 20)
        shipper = Shipper(server.address, spool, "n1", "n1", BOOT, backoff_max_s=1.0)
        batcher = Batcher(spool, BOOT, max_flows=500, on_sealed=shipper.notify)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(shipper.run(stop))
        # phase 1: relay up
        await server.start()
        seq = await _produce(batcher, rate, 2.0)
        # phase 2: relay unreachable (refused connections)
        await server.stop()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seq = await _produce(batcher, rate, outage_s, seq)
        peak_memory = spool.memory_bytes
        spooled = len(spool)
        # phase 3: back
        await server.start()
        seq = await _produce(batcher, rate, 2.0, seq)
        batcher.flush()
        await _wait_drained(spool, 60)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        stop.set()
        await runner
        await server.stop()
        spool.close()
        return {
            "produced": seq - 1,
            "delivered": _delivered_sequences(server),
            "batches": sorted(s for (_, _, s) in server.received.batches),
            "deliveries": server.received.deliveries,
            "spooled_during_outage": spooled,
            "spool_memory_peak": peak_memory,
            "rss_growth_kb": rss_after - rss_before,
            "connects": shipper.stats.connects,
            "dropped": batcher.flows_dropped,
            "left": len(spool),
        }

    return asyncio.run(scenario())


def _check(result: dict) -> None:
    assert result["dropped"] == 0
    assert result["left"] == 0
    assert result["delivered"] == list(range(1, result["produced"] + 1))
    assert result["batches"] == list(range(1, len(result["batches"]) + 1))


def test_outage_then_recovery_loses_nothing(tmp_path: Path) -> None:
    r = _run_scenario(tmp_path, outage_s=6.0, rate=5000)
    _check(r)
    assert r["spooled_during_outage"] > 0 and r["connects"] >= 2
    assert r["spool_memory_peak"] <= 8 << 20
    print(
        f"outage 6 s at 5k flows/s: {r['produced']} flows, all delivered; "
        f"{r['spooled_during_outage']} batches spooled; rss growth {r['rss_growth_kb']} kB"
    )


@pytest.mark.slow
def test_sixty_second_outage_at_5k_flows_per_second(tmp_path: Path) -> None:
    r = _run_scenario(tmp_path, outage_s=60.0, rate=5000)
    _check(r)
    assert r["spool_memory_peak"] <= 8 << 20
    print(
        f"outage 60 s at 5k flows/s: {r['produced']} flows, all delivered; "
        f"{r['spooled_during_outage']} batches spooled; rss growth {r['rss_growth_kb']} kB"
    )


def test_dropped_connections_resend_unacked(tmp_path: Path) -> None:
    r = _run_scenario(tmp_path, outage_s=1.0, rate=3000, drop_every=3)
    _check(r)
    assert r["deliveries"] > len(r["batches"])  # some batches were sent twice
    assert r["connects"] > 3


def test_restart_resends_spooled_batches_of_a_previous_boot(tmp_path: Path) -> None:
    """A collector that stops with unacked batches resends them after a restart
    (new boot id); the relay's HelloAck skips what it already has."""

    async def scenario() -> tuple[list[int], set[int]]:
        server = IngestServer(_free_port())
        spool = Spool(tmp_path / "spool")
        batcher = Batcher(spool, BOOT, max_flows=100)
        for seq in range(1, 1001):
            batcher.add(make_flow(seq, boot=BOOT))
        batcher.flush()
        spool.close()  # the first collector dies before reaching any relay
        await server.start()
        spool2 = Spool(tmp_path / "spool")
        assert len(spool2) == 10
        shipper = Shipper(server.address, spool2, "n1", "n1", BOOT + 1)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(shipper.run(stop))
        await _wait_drained(spool2, 20)
        stop.set()
        await runner
        await server.stop()
        boots = {b for (_, b, _) in server.received.batches}
        return _delivered_sequences(server), boots

    delivered, boots = asyncio.run(scenario())
    assert delivered == list(range(1, 1001))
    assert boots == {BOOT}


def test_hello_ack_releases_what_the_relay_already_has(tmp_path: Path) -> None:
    async def scenario() -> int:
        server = IngestServer(_free_port())
        await server.start()
        # the relay already stored batches 1-3 of this boot
        spool = Spool(tmp_path / "spool")
        batcher = Batcher(spool, BOOT, max_flows=10)
        for seq in range(1, 51):
            batcher.add(make_flow(seq, boot=BOOT))
        batcher.flush()
        from sensilla.protos import ingest_pb2

        for s in (1, 2, 3):
            server.received.batches[("n1", BOOT, s)] = ingest_pb2.Batch(boot_id=BOOT, sequence=s)
        shipper = Shipper(server.address, spool, "n1", "n1", BOOT)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(shipper.run(stop))
        await _wait_drained(spool, 20)
        stop.set()
        await runner
        await server.stop()
        return server.received.deliveries

    assert asyncio.run(scenario()) == 2  # only batches 4 and 5 were sent


def test_process_stays_alive_without_relay(tmp_path: Path) -> None:
    """No relay at all: the shipper keeps retrying with backoff, nothing is lost."""

    async def scenario() -> tuple[int, int]:
        spool = Spool(tmp_path / "spool")
        shipper = Shipper(
            f"127.0.0.1:{_free_port()}",
            spool,
            "n1",
            "n1",
            BOOT,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
        )
        batcher = Batcher(spool, BOOT, max_flows=10)
        for seq in range(1, 101):
            batcher.add(make_flow(seq, boot=BOOT))
        stop = asyncio.Event()
        runner = asyncio.ensure_future(shipper.run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await runner
        return len(spool), shipper.stats.connects

    left, connects = asyncio.run(scenario())
    assert left == 10 and connects == 0
    assert os.getpid() > 0
