"""Fuzzing every gRPC request message against a real relay and a real collector (a lab
with real traffic stored): Hubble's Observer (GetFlows with filters, field masks and
`extensions` incl. ResumeRequest; GetNodes, GetNamespaces, ServerStatus) on the relay
and on a collector, Sensilla's Query API (every method) and the Ingest Push stream
(Hello and Batch messages) on the relay. Requests are well-formed random messages,
byte-level mutations of them, or random bytes.

Every call must end with a proper status (OK, or INVALID_ARGUMENT, FAILED_PRECONDITION,
RESOURCE_EXHAUSTED, ...; INTERNAL only when the bytes are not a message of the request
type, which is gRPC's own answer), never UNKNOWN (an exception escaped a handler), and
never hang (a deadline on every call; follow streams are cancelled by us). Afterwards
the server is alive, healthy, and its memory grew by less than a bound."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensilla.lab import Options, processes, temporary_lab
from sensilla.protos import flow_pb2, ingest_pb2, observer_pb2, query_pb2
from tests.reliability import labfaults
from tests.reliability.protofuzz import messages, mutate
from tests.reliability.tiers import FUZZ_CASES
from tests.reliability.traffic import Traffic

pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(1800)]

SETTINGS = settings(
    max_examples=FUZZ_CASES,
    deadline=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)
CALL_TIMEOUT = 20.0  # a call that takes longer is a hang
FOLLOW_FOR = 0.3  # follow streams are cancelled after this long
MAX_RSS_GROWTH = 300 << 20

OK_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.ABORTED,  # Ingest: a newer stream of the same collector replaced it
}

# what grpcio answers (before any handler runs) to bytes that do not parse as the
# request type: INTERNAL (sync servers), UNKNOWN "Unexpected DecodeError" (grpc.aio)
DECODE_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

OBSERVER = {
    "GetFlows": observer_pb2.GetFlowsRequest,
    "GetNodes": observer_pb2.GetNodesRequest,
    "GetNamespaces": observer_pb2.GetNamespacesRequest,
    "ServerStatus": observer_pb2.ServerStatusRequest,
}
QUERY = {
    "ServiceMap": query_pb2.ServiceMapRequest,
    "FlowRates": query_pb2.FlowRatesRequest,
    "DropSummary": query_pb2.DropSummaryRequest,
    "SearchFlows": query_pb2.SearchFlowsRequest,
    "ListEndpoints": query_pb2.ListEndpointsRequest,
    "Explain": query_pb2.ExplainRequest,
    "Nodes": query_pb2.NodesRequest,
}


def _quiet_flows(m: observer_pb2.GetFlowsRequest, follow_rate: int) -> observer_pb2.GetFlowsRequest:
    """Most GetFlows requests do not follow (each follow costs FOLLOW_FOR seconds)."""
    if m.follow and follow_rate:
        m.follow = False
    return m


def request_bytes(cls: type[Message]) -> st.SearchStrategy[bytes]:
    base: st.SearchStrategy[Any] = messages(cls)
    if cls is observer_pb2.GetFlowsRequest:
        base = st.tuples(base, st.integers(0, 19)).map(lambda t: _quiet_flows(*t))
    valid = base.map(lambda m: m.SerializeToString())
    mutated = valid.flatmap(mutate)
    raw = st.binary(max_size=120)
    # mostly well-formed requests (they reach the handlers), some mutated, some noise
    return st.integers(0, 9).flatmap(lambda k: valid if k < 7 else mutated if k < 9 else raw)


def parses_as(cls: type[Message], data: bytes) -> Message | None:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception:
        return None
    return msg


@dataclass
class Tally:
    codes: Counter[str] = field(default_factory=Counter)
    calls: int = 0

    def line(self) -> str:
        return f"{self.calls} calls, " + ", ".join(f"{k} {v}" for k, v in self.codes.most_common())


def _identity(b: bytes) -> bytes:
    return b


def _decode_failure(details: str) -> bool:
    return "DecodeError" in details or "deserializ" in details.lower()


def check_code(code: grpc.StatusCode, details: str, method: str, data: bytes, cls: Any) -> None:
    if code in OK_CODES:
        return
    if code in DECODE_CODES and _decode_failure(details) and parses_as(cls, data) is None:
        return  # gRPC's answer to bytes that are not a request message
    raise AssertionError(f"{method}: {code.name} {details!r} for {data!r}")


def unary(
    channel: grpc.Channel, service: str, method: str, cls: Any, data: bytes, tally: Tally
) -> None:
    call = channel.unary_unary(
        f"/{service}/{method}", request_serializer=_identity, response_deserializer=_identity
    )
    tally.calls += 1
    try:
        call(data, timeout=CALL_TIMEOUT)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    tally.codes[code.name] += 1
    check_code(code, details, method, data, cls)


def get_flows(channel: grpc.Channel, service: str, data: bytes, tally: Tally) -> None:
    req = parses_as(observer_pb2.GetFlowsRequest, data)
    follow = bool(req is not None and req.follow)  # type: ignore[attr-defined]
    call = channel.unary_stream(
        f"/{service}/GetFlows", request_serializer=_identity, response_deserializer=_identity
    )
    tally.calls += 1
    stream = call(data, timeout=CALL_TIMEOUT)
    timer = threading.Timer(FOLLOW_FOR, stream.cancel) if follow else None
    if timer is not None:
        timer.start()
    code, details = grpc.StatusCode.OK, ""
    try:
        for n, _ in enumerate(stream):
            if n >= 2000:
                stream.cancel()
                break
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    finally:
        if timer is not None:
            timer.cancel()
    if code == grpc.StatusCode.CANCELLED and (
        follow or details == "Locally cancelled by application!"
    ):
        code = grpc.StatusCode.OK  # we cancelled it
    tally.codes[code.name] += 1
    check_code(code, details, "GetFlows", data, observer_pb2.GetFlowsRequest)


push_messages = st.one_of(
    messages(ingest_pb2.PushRequest).map(lambda m: m.SerializeToString()),
    messages(ingest_pb2.Hello).map(lambda h: ingest_pb2.PushRequest(hello=h).SerializeToString()),
    messages(ingest_pb2.Batch).map(lambda b: ingest_pb2.PushRequest(batch=b).SerializeToString()),
    messages(ingest_pb2.PushRequest).map(lambda m: m.SerializeToString()).flatmap(mutate),
    st.binary(max_size=120),
)


def push(channel: grpc.Channel, datas: list[bytes], tally: Tally) -> None:
    call = channel.stream_stream(
        "/sensilla.ingest.v1.Ingest/Push",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    tally.calls += 1
    stream = call(iter(datas), timeout=CALL_TIMEOUT)
    code, details = grpc.StatusCode.OK, ""
    try:
        for _ in stream:
            pass
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
    tally.codes[code.name] += 1
    bad = [d for d in datas if parses_as(ingest_pb2.PushRequest, d) is None]
    if code in DECODE_CODES and _decode_failure(details) and bad:
        return
    check_code(code, details, "Push", b"|".join(datas), ingest_pb2.PushRequest)


# --- the servers ----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    address: str
    pid: int
    channel: grpc.Channel
    rss_before: int = 0

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def healthy(self) -> bool:
        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    def after(self, tally: Tally) -> None:
        assert processes.alive(self.pid), f"the {self.name} died"
        assert self.healthy(), f"the {self.name} is not serving"
        grown = self.rss() - self.rss_before
        print(f"\nsrl fuzz {self.name}: {tally.line()}; RSS +{grown >> 20} MiB")
        assert grown < MAX_RSS_GROWTH, f"{self.name} RSS grew by {grown >> 20} MiB"


@pytest.fixture(scope="module")
def fuzz_lab() -> Iterator[Any]:
    """A lab with real flows stored (a few rounds of allowed and denied traffic)."""
    from tests.reliability.scenario import apply_policy

    with temporary_lab("srl", options=Options()) as lab:
        apply_policy(lab)
        traffic = Traffic(lab.layout()).start()
        try:
            traffic.wait_rounds(5)
        finally:
            traffic.stop()
        yield lab


def _target(lab: Any, which: str) -> Iterator[Target]:
    if which == "relay":
        address = labfaults.relay_address(lab)
        pid = next(p.pid for p in processes.list_processes(lab.dir) if p.name == "relay")
    else:
        node, c = sorted(labfaults.collectors(lab).items())[0]
        address = c["address"]
        pid = next(
            p.pid for p in processes.list_processes(lab.dir) if p.name == f"collector-{node}"
        )
    channel = grpc.insecure_channel(address)
    t = Target(which, address, pid, channel)
    t.rss_before = t.rss()
    try:
        yield t
    finally:
        channel.close()


@pytest.fixture
def relay(fuzz_lab: Any) -> Iterator[Target]:
    yield from _target(fuzz_lab, "relay")


@pytest.fixture
def collector(fuzz_lab: Any) -> Iterator[Target]:
    yield from _target(fuzz_lab, "collector")


def cases(methods: dict[str, Any]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(method, request bytes) for every method of a service."""
    return st.sampled_from(sorted(methods)).flatmap(
        lambda m: st.tuples(st.just(m), request_bytes(methods[m]))
    )


def _observer_calls(target: Target, tally: Tally) -> Any:
    @SETTINGS
    @given(
        st.sampled_from(sorted(OBSERVER)).flatmap(
            lambda m: st.tuples(st.just(m), request_bytes(OBSERVER[m]))
        )
    )
    def run(case: tuple[str, bytes]) -> None:
        method, data = case
        if method == "GetFlows":
            get_flows(target.channel, "observer.Observer", data, tally)
        else:
            unary(target.channel, "observer.Observer", method, OBSERVER[method], data, tally)

    return run


def test_srl_fuzz_relay_observer(relay: Target) -> None:
    tally = Tally()
    _observer_calls(relay, tally)()
    relay.after(tally)


def test_srl_fuzz_relay_query(relay: Target) -> None:
    tally = Tally()

    @SETTINGS
    @given(
        st.sampled_from(sorted(QUERY)).flatmap(
            lambda m: st.tuples(st.just(m), request_bytes(QUERY[m]))
        )
    )
    def run(case: tuple[str, bytes]) -> None:
        method, data = case
        unary(relay.channel, "sensilla.query.v1.Query", method, QUERY[method], data, tally)

    run()
    relay.after(tally)


def test_srl_fuzz_relay_ingest(relay: Target) -> None:
    tally = Tally()

    @SETTINGS
    @given(st.lists(push_messages, min_size=1, max_size=4))
    def run(datas: list[bytes]) -> None:
        push(relay.channel, datas, tally)

    run()
    relay.after(tally)


def test_srl_fuzz_collector_observer(collector: Target) -> None:
    tally = Tally()
    _observer_calls(collector, tally)()
    collector.after(tally)


# --- regressions: invalid Timestamps in requests ended calls with UNKNOWN ------------


def _bad_time(which: int) -> Any:
    from google.protobuf import timestamp_pb2

    return timestamp_pb2.Timestamp(nanos=-1) if which else timestamp_pb2.Timestamp(seconds=-(2**63))


def _code(fn: Any, *args: Any) -> grpc.StatusCode:
    try:
        out = fn(*args, timeout=10)
        if hasattr(out, "__iter__") and not isinstance(out, Message):
            list(out)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]


def test_srl_invalid_timestamps_are_invalid_arguments(relay: Target, collector: Target) -> None:
    """since/until of GetFlows (relay, collector, and the relay's resumable streams),
    the Query API's window, a batch's `created` and a flow's `time` that are not valid
    Timestamps raised ValueError in the handlers (UNKNOWN); now INVALID_ARGUMENT."""
    from relay.ingest.synthetic import FlowFactory
    from relay.siem.position import pack_resume
    from sensilla.protos import observer_pb2_grpc, query_pb2_grpc

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    push_stub = relay.channel.stream_stream(
        "/sensilla.ingest.v1.Ingest/Push",
        request_serializer=_identity,
        response_deserializer=ingest_pb2.PushResponse.FromString,
    )
    q = query_pb2_grpc.QueryStub(relay.channel)
    for which in (0, 1):
        bad = _bad_time(which)
        for target in (relay, collector):
            stub = observer_pb2_grpc.ObserverStub(target.channel)
            for req in (
                observer_pb2.GetFlowsRequest(since=bad),
                observer_pb2.GetFlowsRequest(until=bad, number=5),
            ):
                assert _code(stub.GetFlows, req) == invalid, (target.name, req)
        stub = observer_pb2_grpc.ObserverStub(relay.channel)
        resume = pack_resume({}, observer_pb2.GetFlowsRequest(since=bad))
        assert _code(stub.GetFlows, resume) == invalid
        window = query_pb2.TimeWindow(since=bad)
        assert _code(q.ServiceMap, query_pb2.ServiceMapRequest(window=window)) == invalid
        assert _code(q.FlowRates, query_pb2.FlowRatesRequest(window=window)) == invalid
        assert _code(q.DropSummary, query_pb2.DropSummaryRequest(window=window)) == invalid
        assert _code(q.SearchFlows, query_pb2.SearchFlowsRequest(window=window)) == invalid
        # ingest: a batch created at an impossible time; a flow of an impossible time
        boot = 1_000 + which
        cid = "srl-fuzz-regression"
        hello = ingest_pb2.PushRequest(
            hello=ingest_pb2.Hello(collector_id=cid, node_name="x", boot_id=boot)
        ).SerializeToString()
        flow = FlowFactory(cid, boot).make(1, time.time_ns())
        late = ingest_pb2.Batch(boot_id=boot, sequence=1, flows=[flow], created=bad)
        odd = ingest_pb2.Batch(boot_id=boot, sequence=1, flows=[flow])
        odd.flows[0].time.CopyFrom(bad)
        for batch in (late, odd):
            msgs = [hello, ingest_pb2.PushRequest(batch=batch).SerializeToString()]
            assert _code(push_stub, iter(msgs)) == invalid
    relay.after(Tally())
    collector.after(Tally())


# --- whatever a flow holds, the relay stores it and gives it back unchanged ----------


NOW = time.time_ns() // 10**9
RETAINED = 6 * 86400  # well inside the relay's default retention (7 days)


def _shippable(flow: flow_pb2.Flow, ext: Any, cid: str, boot: int, seq: int, t: int) -> None:
    """Make a random flow one the relay must accept: a FlowExtension with its position
    (the rest of the extension random too) and a valid time."""
    ext.position.collector_id, ext.position.boot_id, ext.position.sequence = cid, boot, seq
    flow.extensions.Pack(ext)
    flow.time.seconds, flow.time.nanos = divmod(t, 10**9)


def test_srl_fuzz_relay_ingest_flow_contents(relay: Target) -> None:
    """Random flows (every field, hostile strings, unknown enum values, odd times from
    1970 to 2106) in valid batches on one Push stream: every batch is acked, and every
    flow comes back from the relay's Observer API byte for byte."""
    from relay.siem.position import flow_position, pack_resume
    from sensilla.protos import extensions_pb2, observer_pb2_grpc

    cid, boot = "srl-fuzz-contents", time.time_ns()
    batches: list[ingest_pb2.Batch] = []
    sent: dict[int, bytes] = {}

    @SETTINGS
    @given(
        st.lists(
            st.tuples(
                messages(flow_pb2.Flow),
                messages(extensions_pb2.FlowExtension),
                st.one_of(st.integers(0, 2**32 - 1), st.integers(NOW - 3600, NOW + 3600)),
                st.integers(0, 10**9 - 1),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def gen(flows: list[tuple[flow_pb2.Flow, Any, int, int]]) -> None:
        batch = ingest_pb2.Batch(boot_id=boot, sequence=len(batches) + 1)
        for flow, ext, secs, nanos in flows:
            seq = len(sent) + 1
            _shippable(flow, ext, cid, boot, seq, secs * 10**9 + nanos)
            sent[seq] = flow.SerializeToString()
            batch.flows.append(flow)
        batches.append(batch)

    gen()
    hello = ingest_pb2.PushRequest(
        hello=ingest_pb2.Hello(collector_id=cid, node_name="srl-fuzz", boot_id=boot)
    )
    reqs = [hello] + [ingest_pb2.PushRequest(batch=b) for b in batches]
    push_stub = relay.channel.stream_stream(
        "/sensilla.ingest.v1.Ingest/Push",
        request_serializer=ingest_pb2.PushRequest.SerializeToString,
        response_deserializer=ingest_pb2.PushResponse.FromString,
    )
    acked = 0
    for resp in push_stub(iter(reqs), timeout=600):  # ends once every batch is acked
        if resp.HasField("ack"):
            assert resp.ack.boot_id == boot
            acked = max(acked, resp.ack.sequence)
    assert acked == len(batches)
    got: dict[int, bytes] = {}
    expired = 0
    stub = observer_pb2_grpc.ObserverStub(relay.channel)
    req = pack_resume({}, observer_pb2.GetFlowsRequest())
    for resp in stub.GetFlows(req, timeout=600):
        if resp.HasField("flow"):
            pos = flow_position(resp.flow)
            if pos is not None and pos[:2] == (cid, boot):
                assert pos[2] not in got, f"flow {pos} delivered twice"
                got[pos[2]] = resp.flow.SerializeToString()
        elif resp.node_name == "srl-fuzz":
            assert resp.lost_events.source == flow_pb2.HUBBLE_RING_BUFFER
            expired += resp.lost_events.num_events_lost
    # flows older than the retention (7 days) expire at once: reported, never silent
    old = {
        s
        for s, data in sent.items()
        if flow_pb2.Flow.FromString(data).time.seconds < NOW - RETAINED
    }
    missing = set(sent) - set(got)
    assert missing <= old, f"recent flows missing: {sorted(missing - old)[:10]}"
    assert expired == len(missing), (expired, len(missing))
    changed = [
        s for s in got if flow_pb2.Flow.FromString(got[s]) != flow_pb2.Flow.FromString(sent[s])
    ]
    assert not changed, f"{len(changed)} flows came back changed, e.g. {changed[:3]}"
    print(
        f"\nsrl fuzz relay ingest: {len(sent)} random flows in {len(batches)} batches acked; "
        f"{len(got)} back unchanged, {expired} past retention reported lost"
    )
    relay.after(Tally(calls=len(batches)))
