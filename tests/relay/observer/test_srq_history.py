"""Acceptance 2 (fast tier, 100k flows on chDB): GetFlows with each filter kind, alone
and combined (whitelist and blacklist), with number/first/since/until, returns
exactly what the in-memory predicate (Hubble's semantics) selects, in key order;
flows come back losslessly. The 1M-flow variant is test_srq_history_1m.py (slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.observer.cases import cases
from tests.relay.observer.dataset import Dataset, build
from tests.relay.observer.flowgen import key
from tests.relay.observer.history_checks import check_case, check_lossless, get_flows, ts
from tests.relay.observer.support import RelayThread, chdb_url, running_relay

N = 100_000
MAX_FLOWS = 4000  # per request (gRPC streams ~10k flows/s on this machine)
CASE_NAMES = [c.name for c in cases(["u"])]


@pytest.fixture(scope="module")
def dataset(chdb_dir: Path) -> Dataset:
    ds = build(chdb_url(chdb_dir, "srq_hist"), N, seed=11)
    print(f"\nstored {N} flows in {ds.build_s:.1f} s")
    return ds


@pytest.fixture(scope="module")
def relay(dataset: Dataset) -> Iterator[RelayThread]:
    with running_relay(dataset.url) as r:
        yield r


@pytest.mark.parametrize("name", CASE_NAMES)
def test_srq_history_filter_equals_predicate(
    relay: RelayThread, dataset: Dataset, name: str
) -> None:
    case = next(c for c in dataset.cases if c.name == name)
    n = check_case(relay.address, dataset, case, MAX_FLOWS)
    # every case must select something and not everything (else it proves little)
    assert 0 < n < N, (name, n)


def test_srq_history_everything_in_order_and_lossless(relay: RelayThread, dataset: Dataset) -> None:
    lo, hi = dataset.keys[40_000][0], dataset.keys[45_000][0]
    got = [key(f) for f in get_flows(relay.address, since=ts(lo), until=ts(hi))]
    assert got == [k for k in dataset.keys if lo <= k[0] <= hi]
    check_lossless(relay.address, dataset)


def test_srq_history_follow_without_since_starts_now(relay: RelayThread, dataset: Dataset) -> None:
    """hubble observe -f: no history unless asked (number or since)."""
    import grpc

    from sensilla.protos import observer_pb2, observer_pb2_grpc

    with grpc.insecure_channel(relay.address) as ch:
        call = observer_pb2_grpc.ObserverStub(ch).GetFlows(
            observer_pb2.GetFlowsRequest(follow=True), timeout=1.5
        )
        got: list[object] = []
        with pytest.raises(grpc.RpcError) as err:
            got.extend(r for r in call if r.HasField("flow"))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert got == []
        call = observer_pb2_grpc.ObserverStub(ch).GetFlows(
            observer_pb2.GetFlowsRequest(follow=True, number=5), timeout=1.5
        )
        got = []
        with pytest.raises(grpc.RpcError):
            got.extend(key(r.flow) for r in call if r.HasField("flow"))
        assert got == dataset.keys[-5:]
        call = observer_pb2_grpc.ObserverStub(ch).GetFlows(
            observer_pb2.GetFlowsRequest(follow=True, since=ts(dataset.keys[-3][0])), timeout=1.5
        )
        got = []
        with pytest.raises(grpc.RpcError):
            got.extend(key(r.flow) for r in call if r.HasField("flow"))
        assert got == [k for k in dataset.keys if k[0] >= dataset.keys[-3][0]]
