"""The collector's ring and local Observer, checked with a Hubble field-number client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from collector.observer.ring import Event, FlowRing
from collector.observer.server import start_observer_server
from collector.observer.service import LocalObserver
from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc
from tests import hubble_client as hc

pytestmark = pytest.mark.unit


def make_event(i: int, verdict: Any = flow_pb2.FORWARDED, ns: str = "x") -> Event:
    f = flow_pb2.Flow(
        verdict=verdict,
        node_name="n1",
        uuid=f"uuid-{i}",
        Type=flow_pb2.L3_L4,
        IP=flow_pb2.IP(source="10.244.1.10", destination="10.244.2.10", ipVersion=flow_pb2.IPv4),
        source=flow_pb2.Endpoint(
            ID=12, identity=1000 + i, namespace=ns, pod_name="a", labels=["k8s:pod=a"]
        ),
        destination=flow_pb2.Endpoint(identity=2000, namespace="y", pod_name="b"),
        traffic_direction=flow_pb2.EGRESS,
    )
    f.l4.TCP.source_port = 40000 + i
    f.l4.TCP.destination_port = 80
    f.l4.TCP.flags.SYN = True
    f.time.FromNanoseconds(time.time_ns())
    if verdict == flow_pb2.DROPPED:
        f.drop_reason_desc = flow_pb2.POLICY_DENIED
    return Event(flow=f, node_name="n1", time=f.time)


class ServerThread:
    def __init__(self, ring: FlowRing, follower_queue: int = 4096) -> None:
        self.ring = ring
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.follower_queue = follower_queue
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.ring.bind(self.loop)
        self.loop.run_until_complete(self._start())
        self.loop.run_forever()

    async def _start(self) -> None:
        observer = LocalObserver(self.ring, "n1", "127.0.0.1", self.follower_queue)
        server = grpc.aio.server()
        observer_pb2_grpc.add_ObserverServicer_to_server(observer, server)
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.server = server
        self.ready.set()

    def call(self, fn: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(10)

    def append(self, events: list[Event]) -> None:
        async def add() -> None:
            self.ring.append(events)

        self.call(add)

    def stop(self) -> None:
        self.call(lambda: self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def served() -> Iterator[ServerThread]:
    st = ServerThread(FlowRing("n1", capacity=100))
    try:
        yield st
    finally:
        st.stop()


def test_ring_keeps_the_newest(served: ServerThread) -> None:
    served.append([make_event(i) for i in range(150)])
    assert len(served.ring.events) == 100 and served.ring.seen_flows == 150
    assert served.ring.events[0].flow.uuid == "uuid-50"


def test_hubble_client_decodes_flows_nodes_namespaces_status(served: ServerThread) -> None:
    served.append(
        [make_event(i, flow_pb2.DROPPED if i % 3 == 0 else flow_pb2.FORWARDED) for i in range(30)]
    )
    client = hc.HubbleClient(f"127.0.0.1:{served.port}")
    try:
        flows = client.get_flows(hc.encode_get_flows(number=5))
        assert len(flows) == 5
        last = flows[-1]["flow"]
        assert last["uuid"] == "uuid-29" and last["node_name"] == "n1"
        assert last["IP"]["source"] == "10.244.1.10" and last["IP"]["ipVersion"] == 1
        assert last["l4"]["TCP"]["destination_port"] == 80 and last["l4"]["TCP"]["flags"]["SYN"]
        assert last["source"]["namespace"] == "x" and last["source"]["labels"] == ["k8s:pod=a"]
        assert last["traffic_direction"] == 2 and last["verdict"] == 1
        # verdict filter (DROPPED = 2) honoured
        dropped = client.get_flows(
            hc.encode_get_flows(number=100, whitelist=[hc.encode_flow_filter(verdict=[2])])
        )
        assert len(dropped) == 10
        assert all(
            r["flow"]["verdict"] == 2 and r["flow"]["drop_reason_desc"] == 133 for r in dropped
        )
        first = client.get_flows(hc.encode_get_flows(number=3, first=True))
        assert [r["flow"]["uuid"] for r in first] == ["uuid-0", "uuid-1", "uuid-2"]
        blk = client.get_flows(
            hc.encode_get_flows(number=100, blacklist=[hc.encode_flow_filter(verdict=[2])])
        )
        assert len(blk) == 20
        nodes = client.get_nodes()["nodes"]
        assert nodes[0]["name"] == "n1" and nodes[0]["state"] == 1
        assert nodes[0]["seen_flows"] == 30
        assert client.get_namespaces()["namespaces"] == [{"namespace": "x"}, {"namespace": "y"}]
        status = client.server_status()
        assert status["num_flows"] == 30 and status["max_flows"] == 100
        assert status["seen_flows"] == 30 and status["num_connected_nodes"] == {"value": 1}
    finally:
        client.close()


def test_follow_streams_new_flows_after_history(served: ServerThread) -> None:
    served.append([make_event(i) for i in range(3)])
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    stub = observer_pb2_grpc.ObserverStub(channel)
    stream = stub.GetFlows(observer_pb2.GetFlowsRequest(number=2, follow=True), timeout=10)
    got = [next(stream).flow.uuid, next(stream).flow.uuid]
    served.append([make_event(i) for i in range(3, 6)])
    got += [next(stream).flow.uuid for _ in range(3)]
    stream.cancel()
    channel.close()
    assert got == ["uuid-1", "uuid-2", "uuid-3", "uuid-4", "uuid-5"]


def test_slow_follower_gets_lost_events(served: ServerThread) -> None:
    ring = served.ring

    async def scenario() -> list[Event]:
        follower = ring.subscribe(maxsize=10)
        ring.append([make_event(i) for i in range(25)])
        out = []
        it = follower.__aiter__()
        for _ in range(11):
            out.append(await it.__anext__())
        ring.unsubscribe(follower)
        return out

    out = served.call(scenario)
    assert out[0].lost_events.num_events_lost == 15
    assert out[0].lost_events.source == flow_pb2.OBSERVER_EVENTS_QUEUE
    assert [e.flow.uuid for e in out[1:]] == [f"uuid-{i}" for i in range(10)]
    assert not ring.followers


def test_bad_requests_are_invalid_argument(served: ServerThread) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{served.port}")
    stub = observer_pb2_grpc.ObserverStub(channel)
    bad = [
        observer_pb2.GetFlowsRequest(first=True, follow=True),
        observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_ip=["not-an-ip"])]),
    ]
    for req in bad:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.GetFlows(req, timeout=5))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_health_and_unix_socket(tmp_path: Any) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    ring = FlowRing("n1")
    sock = str(tmp_path / "hubble.sock")

    async def scenario() -> str:
        server, _ = await start_observer_server(LocalObserver(ring, "n1"), sock, None)
        try:
            async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
                h = await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(service="observer.Observer")
                )
                s = await observer_pb2_grpc.ObserverStub(ch).ServerStatus(
                    observer_pb2.ServerStatusRequest()
                )
                assert s.max_flows == 4095
                return health_pb2.HealthCheckResponse.ServingStatus.Name(h.status)
        finally:
            await server.stop(None)

    assert asyncio.run(scenario()) == "SERVING"
