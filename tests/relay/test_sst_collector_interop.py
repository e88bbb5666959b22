"""The collector's own shipping code (collector/shipping: Batcher, Spool, Shipper)
against the real relay, across a relay restart: every flow stored exactly once, the
spool drained, the HelloAck and Acks understood."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from collector.shipping.batcher import Batcher
from collector.shipping.shipper import Shipper
from collector.shipping.spool import Spool
from relay.ingest.synthetic import FlowFactory
from relay.server import RelayConfig, RelayServer
from relay.store import open_store
from tests.relay.clickhouse_server import free_port
from tests.relay.helpers import assert_exactly_once, assert_rollups_exact

BOOT = 1_790_000_000_000_000_000


def test_sst_real_shipper_across_a_relay_restart(url: str, tmp_path: Path) -> None:
    port = free_port()
    cfg = RelayConfig(
        store_url=url, listen=[f"127.0.0.1:{port}"], max_round_delay=0.05, retention_interval_s=0
    )
    ff = FlowFactory("sst-real", BOOT, seed=3)
    start_ns = time.time_ns() - 600 * 10**9
    total = 4000

    async def produce(batcher: Batcher, first: int, last: int) -> None:
        for seq in range(first, last + 1):
            batcher.add(ff.make(seq, start_ns + seq * 10**7).SerializeToString())
            if seq % 100 == 0:
                batcher.seal_if_due()
                await asyncio.sleep(0.005)
        batcher.flush()

    async def scenario() -> tuple[int, dict[int, int]]:
        relay = RelayServer(cfg)
        await relay.start()
        spool = Spool(tmp_path / "spool", memory_bytes=8 << 20)
        shipper = Shipper(
            f"127.0.0.1:{port}", spool, "sst-real", "sst-real", BOOT, backoff_max_s=0.3
        )
        batcher = Batcher(spool, BOOT, max_flows=150, on_sealed=shipper.notify)
        stop = asyncio.Event()
        runner = asyncio.ensure_future(shipper.run(stop))
        try:
            await produce(batcher, 1, total // 2)
            await relay.stop()  # the relay goes away mid-stream and comes back
            await produce(batcher, total // 2 + 1, total)
            relay = RelayServer(cfg)
            await relay.start()
            deadline = time.monotonic() + 60
            while len(spool) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return len(spool), dict(shipper.stats.last_ack)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 10)
            await relay.stop()
            spool.close()

    left, last_ack = asyncio.run(scenario())
    assert left == 0
    st = open_store(url)
    try:
        assert_exactly_once(st, {("sst-real", BOOT): total})
        assert_rollups_exact(st)
        acked = st.acked_positions("sst-real")
        assert acked == {BOOT: last_ack[BOOT]}
        assert sum(n for n, *_ in st.sequence_summary().values()) == total
    finally:
        st.close()
