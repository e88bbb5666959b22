"""GetFlows over a stored Dataset compared with the in-memory predicate (shared by
the 100k fast-tier and the 1M slow-tier tests)."""

from __future__ import annotations

import bisect
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sensilla.protos import flow_pb2, observer_pb2, observer_pb2_grpc
from tests.relay.observer.cases import Case, Key
from tests.relay.observer.dataset import Dataset
from tests.relay.observer.flowgen import key


def ts(ns: int) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(ns)
    return t


def get_flows(address: str, **req: Any) -> list[flow_pb2.Flow]:
    with grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    ) as ch:
        stub = observer_pb2_grpc.ObserverStub(ch)
        out = []
        for r in stub.GetFlows(observer_pb2.GetFlowsRequest(**req), timeout=600):
            if r.HasField("flow"):
                out.append(r.flow)
            elif r.HasField("lost_events"):
                raise AssertionError(f"lost events in history: {r}")
        return out


def check_case(address: str, ds: Dataset, case: Case, max_flows: int) -> int:
    """The case's filters over the whole store, then with the selectors on top.

    gRPC streams about 10k flows/s here, so requests are bounded to about
    ``max_flows`` answers: a case selecting more is checked over a window (still a
    query over the whole table, bounded by time) holding that many. Returns the
    number of flows the case selects in all."""
    want = ds.expected[case.name]
    flt = {"whitelist": case.whitelist, "blacklist": case.blacklist}
    if len(want) <= max_flows:
        got = [key(f) for f in get_flows(address, **flt)]
        assert got == want, _diff(case.name, got, want)
        lo, hi = ds.start_ns + (ds.end_ns - ds.start_ns) // 3, ds.end_ns
    else:
        a = min(len(want) // 3, len(want) - max_flows)
        lo, hi = want[a][0], want[a + max_flows - 1][0]
    window = _window(want, lo, hi)
    got = [key(f) for f in get_flows(address, since=ts(lo), until=ts(hi), **flt)]
    assert got == window, _diff(f"{case.name} window", got, window)
    # last N, first N, first N of a window, last N before until
    n = 37
    got = [key(f) for f in get_flows(address, number=n, **flt)]
    assert got == want[-n:], _diff(f"{case.name} last {n}", got, want[-n:])
    got = [key(f) for f in get_flows(address, number=n, first=True, **flt)]
    assert got == want[:n], _diff(f"{case.name} first {n}", got, want[:n])
    got = [key(f) for f in get_flows(address, since=ts(lo), number=n, first=True, **flt)]
    assert got == window[:n], _diff(f"{case.name} window first", got, window[:n])
    got = [key(f) for f in get_flows(address, until=ts(hi), number=n, **flt)]
    upto = want[: bisect.bisect_right(want, (hi, "\U0010ffff", 2**64, 2**64))]
    assert got == upto[-n:], _diff(f"{case.name} until last", got, upto[-n:])
    return len(want)


def _window(keys: list[Key], lo: int, hi: int) -> list[Key]:
    a = bisect.bisect_left(keys, (lo, "", 0, 0))
    b = bisect.bisect_right(keys, (hi, "\U0010ffff", 2**64, 2**64))
    return keys[a:b]


def _diff(name: str, got: list[Key], want: list[Key]) -> str:
    gs, ws = set(got), set(want)
    return (
        f"{name}: got {len(got)} flows, want {len(want)}; missing {sorted(ws - gs)[:3]}, "
        f"extra {sorted(gs - ws)[:3]}, same set: {gs == ws}"
    )


def check_lossless(address: str, ds: Dataset) -> None:
    """Flows come back byte for byte as they were stored."""
    for k, blob in list(ds.samples.items())[:10]:
        got = get_flows(address, since=ts(k[0]), until=ts(k[0]))
        match = [f for f in got if key(f) == k]
        assert len(match) == 1 and match[0].SerializeToString() == blob
