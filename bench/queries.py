"""Benchmark 6: the UI's queries at 10M stored flows (sensilla.query.v1 on a relay
process over chDB): service map, drop summary and a filtered flow search, p50 and
p95 of the latency a client sees.

The store is filled in two steps: a base of synthetic flows (bench/synth.py, the
48 templates of namespaces x, y, z: TCP/UDP/ICMP, forwarded and dropped) written
through Store.write_batches, spread over the hour before now; then ClickHouse
copies the base inside the database (`INSERT … SELECT` with `ARRAY JOIN`, each copy
another collector boot) up to the total, so the rollups' materialized views see
every copy as they would see ingest. The copies keep the base's serialized flow
(only the columns differ), which the queries do not look into beyond returning it.

The same queries are timed on the base (100k flows) first: that is the baseline,
and the ratio is how latency grows with 100x the data. Every query covers the whole
hour (the UI's default window): the worst case for this data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.core import Context, Figure, Goal, percentile
from bench.relayproc import Relay
from bench.synth import encode_batches

QUERIES = ("service map", "drop summary", "flow search: x -> port 80, dropped, page 100")


def fill_base(url: str, flows: int, spread_s: float) -> tuple[int, int]:
    """Base flows through the store's write path; returns (first, last) flow time ns."""
    from relay.store import IngestBatch, open_store
    from sensilla.protos import ingest_pb2

    end = time.time_ns() - 60 * 10**9
    start = end - int(spread_s * 1e9)
    store = open_store(url)
    try:
        batches = []
        boot = time.time_ns()
        for _, payload in encode_batches(
            "sbe-q", boot, flows, 2000, start_ns=start, spread_s=spread_s
        ):
            b = ingest_pb2.PushRequest.FromString(payload).batch
            batches.append(IngestBatch("sbe-q", b.boot_id, b.sequence, b.flows))
        for i in range(0, len(batches), 25):
            store.write_batches(batches[i : i + 25])
    finally:
        store.close()
    return start, end


def multiply(url: str, copies: int) -> int:
    """Copy every stored flow `copies` times (new boots); returns the row count."""
    from relay.store import open_store

    store = open_store(url)
    try:
        f = store.t("flows")
        store.backend.execute(
            f"INSERT INTO {f} SELECT * REPLACE (boot_id + k AS boot_id, "
            f"time_ns - k * 1000 AS time_ns) FROM {f} ARRAY JOIN range(1, {copies + 1}) AS k"
        )
        rows = store.backend.query(f"SELECT count() FROM {f}")
        return int(rows[0][0])
    finally:
        store.close()


def _requests(since_ns: int, until_ns: int) -> dict[str, Callable[[Any], Any]]:
    from sensilla.protos import flow_pb2, query_pb2

    window = query_pb2.TimeWindow()
    window.since.FromNanoseconds(since_ns)
    window.until.FromNanoseconds(until_ns)
    return {
        QUERIES[0]: lambda stub: stub.ServiceMap(query_pb2.ServiceMapRequest(window=window)),
        QUERIES[1]: lambda stub: stub.DropSummary(query_pb2.DropSummaryRequest(window=window)),
        QUERIES[2]: lambda stub: stub.SearchFlows(
            query_pb2.SearchFlowsRequest(
                window=window,
                whitelist=[
                    flow_pb2.FlowFilter(
                        source_pod=["x/"],
                        destination_port=["80"],
                        verdict=[flow_pb2.DROPPED],
                    )
                ],
                page_size=100,
            )
        ),
    }


def time_queries(
    address: str, since_ns: int, until_ns: int, calls: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Latency (ms) of each query, `calls` times (after one warm-up call); and the
    size of each answer."""
    import grpc

    from sensilla.protos import query_pb2_grpc

    lat: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    with grpc.insecure_channel(address) as ch:
        grpc.channel_ready_future(ch).result(timeout=30)
        stub = query_pb2_grpc.QueryStub(ch)
        reqs = _requests(since_ns, until_ns)
        for name, call in reqs.items():
            resp = call(stub)  # warm-up
            sizes[name] = _size(resp)
        for _ in range(calls):
            for name, call in reqs.items():
                t0 = time.perf_counter()
                call(stub)
                lat.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    return lat, sizes


def _size(resp: Any) -> int:
    for field in ("edges", "top_pairs", "flows"):
        if hasattr(resp, field):
            return len(getattr(resp, field))
    return 0


def run(ctx: Context) -> None:
    total = ctx.pick(10_000_000, 1_000_000, 20_000)
    base = ctx.pick(100_000, 50_000, 10_000)
    calls = ctx.pick(20, 10, 3)
    spread = 3500.0
    wd = ctx.workdir / "queries"
    url = f"chdb://{wd / 'store'}"
    t0 = time.monotonic()
    start, end = fill_base(url, base, spread)
    ctx.log(f"base of {base:,} flows written in {time.monotonic() - t0:.0f} s")
    since, until = start - 10**9, end + 10**9
    with Relay(url, wd / "relay-base") as relay:
        base_lat, base_sizes = time_queries(relay.address, since, until, calls)
    t0 = time.monotonic()
    rows = multiply(url, total // base - 1)
    ctx.note(
        f"store filled to {rows:,} flows (base {base:,} + copies inside ClickHouse) "
        f"in {time.monotonic() - t0:.0f} s"
    )
    with Relay(url, wd / "relay-full") as relay:
        lat, sizes = time_queries(relay.address, since, until, calls)
    label = f"{rows / 1e6:.3g}M flows" if rows >= 1e6 else f"{rows:,} flows"
    for name in QUERIES:
        for q in (50, 95):
            ctx.record(
                Figure(
                    "queries",
                    f"{name}, p{q}, {label}",
                    "ms",
                    [percentile(lat[name], q) or 0.0],
                    f"p{q} at {base // 1000}k flows",
                    [percentile(base_lat[name], q) or 0.0],
                    goal=Goal("value", "<=", 500.0, "p95 <= 500 ms") if q == 95 else None,
                    note=f"{calls} calls; answer size {sizes[name]} "
                    f"(at the base: {base_sizes[name]})",
                )
            )
