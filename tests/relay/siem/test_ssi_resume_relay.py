"""Acceptance 1: a follower of a real relay process disconnects at three random points
during a 100k-flow run (two synthetic collectors shipping over sensilla.ingest.v1)
and resumes from its last position each time: the union of what it received is
every flow, with no duplicate."""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from relay.ingest.synthetic import SyntheticCollector
from relay.siem.position import Positions, advance_with_flow, flow_position, pack_resume
from sensilla.protos import extensions_pb2, observer_pb2, observer_pb2_grpc
from tests.relay.relay_process import RelayProcess

TOTAL = 100_000


async def _follow(address: str, cuts: list[int], total: int, deadline: float) -> dict:
    received: list[tuple[str, int, int]] = []
    position: Positions = {}
    sessions = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        for stop_at in [*cuts, None]:
            req = pack_resume(position, observer_pb2.GetFlowsRequest(follow=True))
            call = stub.GetFlows(req)
            started = len(received)
            it = call.__aiter__()
            while True:
                timeout = deadline - time.monotonic()
                if stop_at is None and len(received) >= total:
                    timeout = min(timeout, 3.0)  # anything more now is a duplicate
                try:
                    resp = await asyncio.wait_for(it.__anext__(), max(0.1, timeout))
                except (TimeoutError, StopAsyncIteration):
                    break
                if resp.HasField("flow"):
                    pos = flow_position(resp.flow)
                    assert pos is not None, "a resumable stream's flow without its position"
                    received.append(pos)
                    advance_with_flow(position, resp.flow)
                    if stop_at is not None and len(received) >= stop_at:
                        break
            call.cancel()  # the disconnect
            sessions.append(len(received) - started)
    return {"received": received, "sessions": sessions, "position": position}


async def _bad_requests(address: str) -> list[tuple[grpc.StatusCode, bool]]:
    out = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        bogus = observer_pb2.GetFlowsRequest()
        bogus.extensions.Pack(observer_pb2.GetNodesRequest())
        bad_boot = pack_resume({("n", 1): 5})
        rr = extensions_pb2.ResumeRequest()
        bad_boot.extensions.Unpack(rr)
        rr.after.positions[0].boot_id = 0
        bad_boot.extensions.Pack(rr)
        for req, needle in ((bogus, "extensions"), (bad_boot, "positions[0].boot_id")):
            try:
                async for _ in stub.GetFlows(req):
                    pass
                out.append((grpc.StatusCode.OK, False))
            except grpc.aio.AioRpcError as exc:
                out.append((exc.code(), needle in (exc.details() or "")))
    return out


async def _count_after(address: str, position: Positions) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        n = 0
        async for resp in stub.GetFlows(pack_resume(position)):
            n += resp.HasField("flow")
        return n


@pytest.mark.timeout(900)
def test_ssi_follower_disconnects_three_times_union_is_everything() -> None:
    work = Path(tempfile.mkdtemp(prefix="ssi-resume-"))
    relay = RelayProcess(f"chdb://{work}/store", work)
    try:
        relay.start()
        rng = random.Random()
        seed = rng.randrange(1 << 30)
        rng.seed(seed)
        cuts = sorted(rng.sample(range(2_000, TOTAL - 2_000), 3))

        async def main() -> tuple[dict, list[SyntheticCollector], float]:
            clients = [
                SyntheticCollector(
                    relay.address,
                    f"ssi-node-{i}",
                    TOTAL // 2,
                    batch_size=500,
                    boot_id=time.time_ns() + i,
                    max_rate=4000,
                    seed=i + 1,
                )
                for i in range(2)
            ]
            t0 = time.monotonic()
            ship = asyncio.gather(*(c.run(timeout=600) for c in clients))
            follower = await _follow(relay.address, cuts, TOTAL, time.monotonic() + 600)
            await ship
            return follower, clients, time.monotonic() - t0

        result, clients, seconds = asyncio.run(main())
        received = result["received"]
        expected = {
            (c.collector_id, c.boot_id, s) for c in clients for s in range(1, c.total_flows + 1)
        }
        dups = len(received) - len(set(received))
        print(
            f"\nssi resume: seed {seed}, cuts at {cuts}, sessions {result['sessions']}, "
            f"{len(received)} received, {len(set(received))} distinct, {dups} duplicates, "
            f"{seconds:.1f}s"
        )
        assert dups == 0
        assert set(received) == expected
        assert len(result["sessions"]) == 4 and all(n > 0 for n in result["sessions"][:3])
        # bad requests are refused with the field named
        errors = asyncio.run(_bad_requests(relay.address))
        assert errors[0] == (grpc.StatusCode.INVALID_ARGUMENT, True), errors
        assert errors[1] == (grpc.StatusCode.INVALID_ARGUMENT, True), errors
        # a non-follow resume from the final position holds nothing more
        assert asyncio.run(_count_after(relay.address, result["position"])) == 0
        # per boot the stream is in sequence order, across every reconnect
        last: dict[tuple[str, int], int] = {}
        for c, b, s in received:
            assert s > last.get((c, b), 0)
            last[(c, b)] = s
    finally:
        relay.stop()
        shutil.rmtree(work, ignore_errors=True)
