"""Units of the relay's read APIs: the broadcaster (bounded follower queues, loss
accounting at the gap, the cut), page tokens (hypothesis: anything malformed is a
TokenError), limits, window and step choice, workload ids, peer hosts."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.observer.broadcast import Broadcaster, Lost, PublishedBatch, Slice
from relay.observer.limits import Limits
from relay.observer.service import peer_host
from relay.query import tokens
from relay.query.service import choose_step
from relay.store.aggregates import Window, entity_name
from relay.store.flowquery import FlowSelection
from sensilla.protos import flow_pb2, query_pb2

pytestmark = pytest.mark.unit


def batch(c: str, first: int, n: int, lost: int = 0, boot: int = 1) -> PublishedBatch:
    flows = []
    for i in range(n):
        f = flow_pb2.Flow(uuid=f"{c}-{first + i}")
        f.time.FromNanoseconds(first + i)
        flows.append(f)
    lost_events = [flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=lost)]
    return PublishedBatch(c, c, boot, first, first + n - 1, flows, lost_events if lost else ())


def drain(sub) -> list[Slice | Lost]:  # type: ignore[no-untyped-def]
    async def run() -> list[Slice | Lost]:
        out: list[Slice | Lost] = []
        while sub.queue:
            item = await sub.get()
            assert item is not None
            out.append(item)
        return out

    return asyncio.run(run())


def test_srq_broadcaster_bounded_queues_report_losses_where_they_happen() -> None:
    b = Broadcaster()
    b.load_positions({("n1", 1): 5})
    slow = b.subscribe(max_flows=10, client="a")
    fast = b.subscribe(max_flows=1000, client="a")
    assert slow.cut == {("n1", 1): 5} and b.followers_of("a") == 2
    b.publish([batch("n1", 6, 4), batch("n1", 10, 4), batch("n2", 1, 5, lost=3)])
    b.publish([batch("n1", 14, 4)])
    items = drain(slow)
    # 10 flows fit: 4 + 4 + 2 of the third batch, then a gap of 3 + 4
    kinds = [
        (type(i).__name__, i.stop - i.start if isinstance(i, Slice) else i.flows) for i in items
    ]
    assert kinds == [("Slice", 4), ("Slice", 4), ("Slice", 2), ("Lost", 7)]
    assert slow.lost_total == 7 and slow.queued_flows == 0
    assert sum(i.stop - i.start for i in drain(fast) if isinstance(i, Slice)) == 17
    # the collector's loss reports travel with the first slice of their batch
    assert isinstance(items[2], Slice) and items[2].start == 0 and items[2].batch.lost_events
    # positions advance; a new follower's cut includes everything published
    assert b.positions == {("n1", 1): 17, ("n2", 1): 5}
    late = b.subscribe(100)
    assert late.cut == b.positions and late.cut is not b.positions
    assert b.published_flows == 17 and b.collectors["n2"].lost_events == 3
    slow.close()
    assert b.followers_of("a") == 1 and slow not in b.subscribers
    # a closed follower gets None
    assert asyncio.run(slow.get()) is None


def test_srq_broadcaster_loss_reports_survive_a_full_queue() -> None:
    b = Broadcaster()
    sub = b.subscribe(max_flows=2)
    b.publish([batch("n", 1, 2), batch("n", 3, 5, lost=9)])
    items = drain(sub)
    assert isinstance(items[1], Slice) and items[1].stop == 0 and items[1].batch.lost_events
    assert isinstance(items[2], Lost) and items[2].flows == 5


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_srq_tokens_reject_anything_malformed(text: str) -> None:
    try:
        tok = tokens.decode(text)
    except tokens.TokenError:
        return
    assert tokens.decode(tokens.encode(tok)) == tok


@given(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=253),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
def test_srq_tokens_round_trip(a: int, b: int, t: int, c: str, boot: int, seq: int) -> None:
    tok = tokens.PageToken(a, b, (t, c, boot, seq), "0123456789abcdef01234567")
    assert tokens.decode(tokens.encode(tok)) == tok


def test_srq_token_digest_follows_the_query() -> None:
    a = query_pb2.SearchFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_pod=["x/"])])
    b = query_pb2.SearchFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_pod=["y/"])])
    c = query_pb2.SearchFlowsRequest(
        whitelist=[flow_pb2.FlowFilter(source_pod=["x/"])], page_size=9
    )
    assert tokens.query_digest(a) != tokens.query_digest(b)
    assert tokens.query_digest(a) == tokens.query_digest(c)  # page size may change


def test_srq_limits_and_steps() -> None:
    with pytest.raises(ValueError):
        Limits(max_filters=0)
    with pytest.raises(ValueError):
        Limits(default_page_size=2000)
    lim = Limits()
    hour = Window(0, 3600)
    assert choose_step(hour, 0, lim, allow_raw=True) == (60, False)
    assert choose_step(hour, 10, lim, allow_raw=True) == (10, True)
    assert choose_step(hour, 10, lim, allow_raw=False) == (60, False)
    assert choose_step(hour, 90, lim, allow_raw=True) == (120, False)  # whole minutes
    week = Window(0, 7 * 86400)
    step, raw = choose_step(week, 0, lim, allow_raw=True)
    assert step % 3600 == 0 and not raw  # hour rollup
    assert choose_step(Window(0, 86400 * 400), 60, lim, allow_raw=False)[0] >= 86400 * 400 // 10_000


def test_srq_entities_and_peers() -> None:
    assert [entity_name(i) for i in (0, 1, 2, 6, 7, 1 << 24, 300)] == [
        "unknown", "host", "world", "remote-node", "kube-apiserver", "world", "identity-300"
    ]  # fmt: skip
    assert peer_host("ipv4:127.0.0.1:5555") == "ipv4:127.0.0.1"
    assert peer_host("ipv6:[::1]:5555") == "ipv6:::1"
    assert peer_host("unix:/run/x.sock") == "unix"


def test_srq_selection_bounds_per_boot() -> None:
    conds, params = FlowSelection(upto={("a", 1): 5}, after={("a", 1): 2}).conditions()
    assert any("fq_upto_k" in c for c in conds) and any("fq_after_k" in c for c in conds)
    assert params["fq_upto_k"] == ["a/1"] and params["fq_upto_v"] == [5]
    assert FlowSelection(upto={}).conditions()[0] == ["0"]  # a cut with no boots: no history
