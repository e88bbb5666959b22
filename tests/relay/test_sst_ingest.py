"""The Ingest service in-process over both backends: two synthetic collectors, acks,
metrics and health; bad input; a second stream of the same collector."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from relay.ingest.synthetic import FlowFactory, SyntheticCollector
from relay.server import RelayConfig, RelayServer
from relay.store import open_store
from sensilla.cli.main import main as cli_main
from sensilla.protos import ingest_pb2, ingest_pb2_grpc
from tests.relay.helpers import assert_exactly_once, assert_rollups_exact


@pytest.fixture
def relay_config(url: str) -> Iterator[RelayConfig]:
    yield RelayConfig(
        store_url=url,
        listen=["127.0.0.1:0"],
        metrics_address="127.0.0.1:0",
        max_round_flows=4000,
        max_round_delay=0.05,
        retention_interval_s=0,
    )


def test_sst_two_collectors_exactly_once(relay_config: RelayConfig) -> None:
    n = 6000

    async def run() -> tuple[list[SyntheticCollector], str, int]:
        relay = RelayServer(relay_config)
        await relay.start()
        try:
            addr = relay.addresses[0]
            clients = [
                SyntheticCollector(addr, f"sst-n{i}", n, batch_size=250, seed=i) for i in (1, 2)
            ]
            await asyncio.gather(*(c.run(timeout=120) for c in clients))
            async with grpc.aio.insecure_channel(addr) as ch:
                health = health_pb2_grpc.HealthStub(ch)
                resp = await health.Check(
                    health_pb2.HealthCheckRequest(service="sensilla.ingest.v1.Ingest")
                )
            metrics = urllib.request.urlopen(f"http://{relay.metrics_address}/metrics").read()
            return clients, metrics.decode(), resp.status
        finally:
            await relay.stop()

    clients, metrics, status = asyncio.run(run())
    assert status == health_pb2.HealthCheckResponse.SERVING
    st = open_store(relay_config.store_url)
    try:
        assert_exactly_once(st, {(c.collector_id, c.boot_id): n for c in clients})
        assert_rollups_exact(st)
        for c in clients:
            assert c.stats.out_of_order_acks == 0
            assert c.acked == set(range(1, c.last_batch_seq + 1))
            assert st.acked_positions(c.collector_id) == {c.boot_id: c.last_batch_seq}
            assert f'sensilla_relay_acked_sequence{{collector="{c.collector_id}"}} 24.0' in metrics
            assert (
                f'sensilla_relay_ingested_flows_total{{collector="{c.collector_id}"}} '
                f"{float(n)}" in metrics
            )
        assert "sensilla_relay_batch_latency_seconds_count" in metrics
        assert {c["collector_id"] for c in st.collectors()} == {"sst-n1", "sst-n2"}
    finally:
        st.close()


async def _push(addr: str, *msgs: ingest_pb2.PushRequest) -> grpc.aio.AioRpcError | None:
    async with grpc.aio.insecure_channel(addr) as ch:
        call = ingest_pb2_grpc.IngestStub(ch).Push()
        try:
            for m in msgs:
                await call.write(m)
            await call.done_writing()
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            return exc
    return None


@pytest.mark.parametrize("backend_kind", ["chdb"], indirect=True)
def test_sst_bad_input_gets_invalid_argument(relay_config: RelayConfig) -> None:
    ff = FlowFactory("sst-bad", 5)
    good_hello = ingest_pb2.PushRequest(hello=ingest_pb2.Hello(collector_id="sst-bad", boot_id=5))
    wrong_boot = ingest_pb2.Batch(
        boot_id=5, sequence=1, flows=[FlowFactory("sst-bad", 6).make(1, 10**18)]
    )
    gap = ingest_pb2.Batch(boot_id=5, sequence=1, flows=[ff.make(1, 10**18), ff.make(3, 10**18)])

    async def run() -> list[grpc.aio.AioRpcError | None]:
        relay = RelayServer(relay_config)
        await relay.start()
        try:
            addr = relay.addresses[0]
            return [
                await _push(addr, ingest_pb2.PushRequest(batch=gap)),
                await _push(addr, ingest_pb2.PushRequest(hello=ingest_pb2.Hello(boot_id=1))),
                await _push(addr, ingest_pb2.PushRequest(hello=ingest_pb2.Hello(collector_id="x"))),
                await _push(addr, good_hello, ingest_pb2.PushRequest(batch=wrong_boot)),
                await _push(addr, good_hello, ingest_pb2.PushRequest(batch=gap)),
                await _push(addr, good_hello, good_hello),
            ]
        finally:
            await relay.stop()

    errors = asyncio.run(run())
    expected = [
        "first message must be hello",
        "collector_id",
        "boot_id",
        "position.boot_id",
        "position.sequence",
        "hello may be sent only once",
    ]
    for err, text in zip(errors, expected, strict=True):
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, err)
        assert text in (err.details() or ""), (text, err.details())


@pytest.mark.parametrize("backend_kind", ["chdb"], indirect=True)
def test_sst_second_stream_of_a_collector_replaces_the_first(relay_config: RelayConfig) -> None:
    async def run() -> tuple[grpc.StatusCode, int]:
        relay = RelayServer(relay_config)
        await relay.start()
        try:
            addr = relay.addresses[0]
            hello = ingest_pb2.PushRequest(
                hello=ingest_pb2.Hello(collector_id="sst-dup", boot_id=7)
            )
            async with (
                grpc.aio.insecure_channel(addr) as ch1,
                grpc.aio.insecure_channel(addr) as ch2,
            ):
                first = ingest_pb2_grpc.IngestStub(ch1).Push()
                await first.write(hello)
                assert (await first.read()).WhichOneof("kind") == "hello_ack"
                second = ingest_pb2_grpc.IngestStub(ch2).Push()
                await second.write(hello)
                assert (await second.read()).WhichOneof("kind") == "hello_ack"
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await first.read()
                n = len(relay.ingest.connected()) if relay.ingest else -1
                second.cancel()
                return exc.value.code(), n
        finally:
            await relay.stop()

    code, connected = asyncio.run(run())
    assert code == grpc.StatusCode.ABORTED
    assert connected == 1


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--store", "mysql://x"], "--store"),
        (["--listen", "nohost"], "HOST:PORT"),
        (["--retention-days", "0"], "retention"),
        (["--max-batch-flows", "0"], "--max-batch-flows"),
    ],
)
def test_sst_cli_rejects_bad_flags(
    args: list[str], text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["relay", *args]) == 2
    assert text in capsys.readouterr().err
