"""The live tail (in-process relay on chDB, synthetic collectors over gRPC):

- acceptance 3: a follower started before traffic receives every flow that follows,
  from both nodes, each once, in order per node; a filtered follower receives exactly
  what the predicate selects;
- history then live: a follower joining mid-ingest with history gets every flow once
  (the cut leaves neither gap nor overlap);
- acceptance 4: a stalled follower gets LostEvent (OBSERVER_EVENTS_QUEUE) with counts
  (received + lost = published) while a second follower and ingest go on unaffected;
- follow limits per client (RESOURCE_EXHAUSTED), and `until` ends a follow.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from relay.ingest.synthetic import FlowFactory, SyntheticCollector
from relay.observer.limits import Limits
from sensilla.filters import compile_request_filters
from sensilla.protos import flow_pb2, ingest_pb2, observer_pb2, observer_pb2_grpc
from tests.relay.observer.flowgen import position
from tests.relay.observer.history_checks import ts
from tests.relay.observer.support import (
    Follower,
    HeldCollector,
    RelayThread,
    chdb_url,
    running_relay,
)


@pytest.fixture
def relay(chdb_dir: Path) -> Iterator[RelayThread]:
    limits = Limits(follower_queue_flows=3000, max_followers_per_client=3)
    with running_relay(chdb_url(chdb_dir, "srq_live"), limits=limits) as r:
        yield r


@pytest.fixture
def roomy_relay(chdb_dir: Path) -> Iterator[RelayThread]:
    """Followers with room for everything a test sends (they keep up by construction:
    this machine's test readers are slower than ingest)."""
    limits = Limits(follower_queue_flows=200_000)
    with running_relay(chdb_url(chdb_dir, "srq_live"), limits=limits) as r:
        yield r


def ship(address: str, clients: list[SyntheticCollector]) -> None:
    async def run() -> None:
        await asyncio.gather(*(c.run(timeout=300) for c in clients))

    asyncio.run(run())


def check_node_order(flows: list[flow_pb2.Flow]) -> dict[str, int]:
    """Per collector, positions arrive in order, each once; returns counts."""
    per: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for f in flows:
        c, b, s = position(f)
        per[c].append((b, s))
    for c, ps in per.items():
        assert ps == sorted(set(ps)), f"{c}: out of order or repeated"
    return {c: len(ps) for c, ps in per.items()}


def test_srq_follower_before_traffic_gets_every_flow_in_node_order(
    roomy_relay: RelayThread,
) -> None:
    relay = roomy_relay
    n = 12_000
    wl = [flow_pb2.FlowFilter(source_pod=["x/"], verdict=[flow_pb2.FORWARDED])]
    bl = [flow_pb2.FlowFilter(destination_port=["81"])]
    everything = Follower(relay.address, observer_pb2.GetFlowsRequest(follow=True))
    filtered = Follower(
        relay.address, observer_pb2.GetFlowsRequest(follow=True, whitelist=wl, blacklist=bl)
    )
    # a second follower of the same filters shares the relay's evaluation per batch
    twin = Follower(
        relay.address, observer_pb2.GetFlowsRequest(follow=True, whitelist=wl, blacklist=bl)
    )
    try:
        clients = [
            SyntheticCollector(relay.address, f"srq-live-{i}", n, batch_size=400, seed=i)
            for i in (1, 2)
        ]
        ship(relay.address, clients)
        got = everything.wait_flows(2 * n)
        positions = [position(f) for f in got]
        assert len(positions) == len(set(positions)) == 2 * n
        assert set(positions) == {
            (c.collector_id, c.boot_id, s) for c in clients for s in range(1, n + 1)
        }
        assert check_node_order(got) == {c.collector_id: n for c in clients}
        for c in clients:  # in time order per node too
            times = [f.time.ToNanoseconds() for f in got if position(f)[0] == c.collector_id]
            assert times == sorted(times)
        want = [position(f) for f in got if compile_request_filters(wl, bl).matches(f)]
        assert 0 < len(want) < 2 * n
        filtered.wait_flows(len(want))
        time.sleep(0.3)  # nothing more may come
        assert [position(f) for f in filtered.flows] == want
        twin.wait_flows(len(want))
        assert [position(f) for f in twin.flows] == want
        assert everything.error is None and filtered.error is None and twin.error is None
        lost = [r for r in everything.responses if r.HasField("lost_events")]
        assert lost == [], "a follower that keeps up loses nothing"
    finally:
        everything.close()
        filtered.close()
        twin.close()


def test_srq_history_then_live_has_no_gap_and_no_repeat(roomy_relay: RelayThread) -> None:
    relay = roomy_relay
    """Followers join while ingest runs: with all history (since 0) they get every flow
    once; with number=N the last N stored before joining, then everything after."""
    n = 16_000
    client = SyntheticCollector(relay.address, "srq-handover", n, batch_size=200, seed=5)
    followers: list[Follower] = []

    async def run() -> None:
        task = asyncio.create_task(client.run(timeout=300))
        loop = asyncio.get_running_loop()
        for at in (3000, 8000):
            while len(client.acked) * 200 < at:
                await asyncio.sleep(0.01)
            req_all = observer_pb2.GetFlowsRequest(follow=True, since=ts(0))
            req_last = observer_pb2.GetFlowsRequest(follow=True, number=500)
            for req in (req_all, req_last):
                followers.append(await loop.run_in_executor(None, Follower, relay.address, req))
        await task

    try:
        asyncio.run(run())
        everything = {("srq-handover", client.boot_id, s) for s in range(1, n + 1)}
        for i, f in enumerate(followers):
            if i % 2 == 0:
                got = [position(x) for x in f.wait_flows(n)]
                assert len(got) == n and set(got) == everything, i
            else:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    got = [position(x) for x in f.flows]
                    if got and got[-1][2] == n:
                        break
                    time.sleep(0.05)
                seqs = [s for _, _, s in got]
                # the 500 before joining (the history), then every later flow, each once
                assert seqs == list(range(seqs[0], n + 1)), (i, seqs[:3], len(seqs))
                assert n - seqs[0] + 1 >= 500
            assert f.error is None
    finally:
        for f in followers:
            f.close()


def test_srq_stalled_follower_gets_lost_events_and_slows_nobody(relay: RelayThread) -> None:
    """Two collectors push 60k flows in rounds; one follower reads along (each round
    fits its queue of 3000 flows), one never reads until the end."""
    per_round, rounds, size = 2, 30, 500  # batches per collector per round; 60k flows
    total = 2 * per_round * rounds * size
    ch = grpc.insecure_channel(relay.address)
    stalled = observer_pb2_grpc.ObserverStub(ch).GetFlows(observer_pb2.GetFlowsRequest(follow=True))
    stalled.initial_metadata()  # subscribed; from here on nobody reads it
    reader = Follower(relay.address, observer_pb2.GetFlowsRequest(follow=True))
    collectors = [HeldCollector(relay.address, f"srq-stall-{i}", 10**18 + i) for i in (1, 2)]
    try:
        factories = [
            FlowFactory(c.collector_id, c.boot_id, seed=i) for i, c in enumerate(collectors)
        ]
        for c in collectors:
            c.wait_hello_ack()
        sent = 0
        for r in range(rounds):
            pushed = []
            for c, ff in zip(collectors, factories, strict=True):
                for b in range(r * per_round, (r + 1) * per_round):
                    flows = [
                        ff.make(s, time.time_ns()) for s in range(b * size + 1, (b + 1) * size + 1)
                    ]
                    batch = ingest_pb2.Batch(boot_id=c.boot_id, sequence=b + 1, flows=flows)
                    c.push(batch, wait=False)
                    pushed.append((c, batch))
                    sent += size
            for c, batch in pushed:
                c.wait_acked(batch)  # stored
            assert len(reader.wait_flows(sent)) == sent, "the reading follower fell behind"
        assert sent == total
        # ingest went on (every batch acked above); the reading follower lost nothing
        assert len({position(f) for f in reader.flows}) == total
        assert reader.lost == 0
        # the stalled one: what it gets plus what it is told it lost is everything
        delivered = lost = 0
        seen = set()
        for resp in stalled:
            if resp.HasField("flow"):
                delivered += 1
                seen.add(position(resp.flow))
            elif resp.HasField("lost_events"):
                assert resp.lost_events.source == flow_pb2.OBSERVER_EVENTS_QUEUE
                lost += resp.lost_events.num_events_lost
            if delivered + lost >= total:
                break
        assert lost > 0 and delivered > 0
        assert delivered + lost == total and len(seen) == delivered
        print(f"\nstalled follower: {delivered} flows delivered, {lost} reported lost")
    finally:
        stalled.cancel()
        ch.close()
        reader.close()
        for c in collectors:
            c.close()


def test_srq_followers_per_client_limit_and_until(relay: RelayThread) -> None:
    fs = [Follower(relay.address, observer_pb2.GetFlowsRequest(follow=True)) for _ in range(3)]
    try:
        with grpc.insecure_channel(relay.address) as ch:
            stub = observer_pb2_grpc.ObserverStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetFlows(observer_pb2.GetFlowsRequest(follow=True), timeout=10))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "3 concurrent followers" in (err.value.details() or "")
            # history only is not a follower: still served
            list(stub.GetFlows(observer_pb2.GetFlowsRequest(number=1), timeout=10))
            fs.pop().close()
            time.sleep(0.2)
            # a follow with until ends by itself once until has passed
            until = time.time_ns() + 500_000_000
            t0 = time.monotonic()
            got = list(
                stub.GetFlows(
                    observer_pb2.GetFlowsRequest(follow=True, until=ts(until)), timeout=20
                )
            )
            assert time.monotonic() - t0 < 15 and not [r for r in got if r.HasField("flow")]
    finally:
        for f in fs:
            f.close()


def test_srq_bad_requests_are_invalid_argument(relay: RelayThread) -> None:
    bad = [
        (observer_pb2.GetFlowsRequest(first=True, follow=True), "first"),
        (observer_pb2.GetFlowsRequest(since=ts(10**18), until=ts(10**17)), "since"),
        (
            observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_ip=["1.2.3.4/99"])]),
            "whitelist[0].source_ip[0]",
        ),
        (
            observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter()] * 65),
            "at most 64",
        ),
    ]
    with grpc.insecure_channel(relay.address) as ch:
        stub = observer_pb2_grpc.ObserverStub(ch)
        for req, text in bad:
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetFlows(req, timeout=10))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, text
            assert text in (err.value.details() or ""), (text, err.value.details())
        req = observer_pb2.GetFlowsRequest()
        req.field_mask.paths.append("no_such_field")
        with pytest.raises(grpc.RpcError) as err:
            list(stub.GetFlows(req, timeout=10))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
