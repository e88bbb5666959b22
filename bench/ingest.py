"""Benchmark 5 (and 9): sustained ingest from collectors through the relay into
chDB and into clickhouse-server (18.16, native protocol).

Two synthetic collectors (bench/synth.py: flows encoded before the clock starts)
push batches of 2,000 flows to a `sensilla relay` process over sensilla.ingest.v1
within the relay's window; a batch counts once the relay acked it (durably
stored). The figure is the rate between 10 % and 90 % of all acks (start-up and
tail left out), median of several rounds (each round a new collector boot).

Baseline, same run: the store's backend inserting the same flows as ready columns
(what the database itself takes from Python); a diagnostic figure times
Store.write_batches in-process (validation, flow rows, markers; no gRPC). The
relay's peak RSS during ingest is recorded, and a py-spy profile of the relay
names where its time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.core import Context, Figure, Goal, Skip
from bench.profile import Profiler, describe
from bench.relayproc import Relay
from bench.synth import encode_batches, overall_rate, ship, steady_rate

_boots = itertools.count(int(time.time_ns()))


@dataclass
class RelayRun:
    rates: list[float] = field(default_factory=list)
    overall: list[float] = field(default_factory=list)
    peak_rss: int = 0
    idle_rss: int = 0
    profile: str = ""


def run_round(
    target: str, collectors: int, flows_each: int, max_seconds: float | None = None
) -> tuple[float, float]:
    """(steady rate, overall rate) of one round of `collectors` parallel streams
    (with max_seconds: no batch sent after that; the rates count acked flows)."""
    jobs = []
    for c in range(collectors):
        boot = next(_boots)
        cid = f"sbe-ingest-{c}"
        jobs.append((cid, boot, encode_batches(cid, boot, flows_each, 2000)))

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(
                ship(target, cid, boot, b, stop_after=max_seconds, timeout=120.0)
                for cid, boot, b in jobs
            )
        )

    results = asyncio.run(go())
    return steady_rate(results), overall_rate(results)


def measure_relay(
    ctx: Context, store_url: str, workdir: Path, rounds: int, collectors: int, flows_each: int
) -> RelayRun:
    out = RelayRun()
    with Relay(store_url, workdir) as relay:
        pid = relay.pid
        if not ctx.smoke:  # warm-up: schema caches, first parts
            run_round(relay.address, collectors, max(2000, flows_each // 10))
        out.idle_rss = procs.rss_bytes(pid)
        procs.reset_peak_rss(pid)
        for r in range(rounds):
            prof_cm: Any = contextlib.nullcontext()
            if not ctx.smoke and r == rounds - 1:
                prof_cm = Profiler(pid, workdir / "relay.pyspy")
            with prof_cm as prof:
                steady, overall = run_round(relay.address, collectors, flows_each)
            out.rates.append(steady)
            out.overall.append(overall)
            ctx.log(
                f"round {r + 1}/{rounds}: {steady:,.0f} flows/s steady, "
                f"{overall:,.0f} flows/s overall ({collectors} x {flows_each:,} flows)"
            )
            if prof is not None:
                summary = prof.summary(8)
                if summary:
                    incl = prof.inclusive(
                        "flow_row",
                        "validate_batch",
                        "flows_to_columns",
                        "insert (",
                        "SerializeToString",
                        "_receive",
                        "FromString",
                    )
                    out.profile = f"{describe(summary)}; inclusive: " + ", ".join(
                        f"{k.strip(' (')} {v:.0f}%" for k, v in incl.items()
                    )
                elif prof.error:
                    out.profile = f"py-spy: {prof.error}"
        out.peak_rss = procs.peak_rss_bytes(pid)
    return out


def measure_store(store_url: str, flows: int, reps: int) -> tuple[list[float], list[float]]:
    """(raw backend insert of ready columns, Store.write_batches) in flows/s."""
    from relay.store import IngestBatch, open_store, validate_batch
    from relay.store import schema as S
    from relay.store.rows import flows_to_columns
    from sensilla.protos import ingest_pb2

    raw_rates: list[float] = []
    store_rates: list[float] = []
    store = open_store(store_url)
    try:
        for _ in range(reps):
            boot = next(_boots)
            batches = []
            for _, payload in encode_batches("sbe-store", boot, flows, 2000):
                pb = ingest_pb2.PushRequest.FromString(payload).batch
                batches.append(IngestBatch("sbe-store", pb.boot_id, pb.sequence, pb.flows))
            all_flows = [f for b in batches for f in b.flows]
            cols = flows_to_columns(all_flows, store._flow_cols)
            t0 = time.perf_counter()
            store.backend.insert(store.t("flows"), cols, S.FLOWS_COLUMNS)
            raw_rates.append(len(all_flows) / (time.perf_counter() - t0))
            # the store's own path, on the next sequences of another boot
            boot2 = next(_boots)
            batches2 = []
            for _, payload in encode_batches("sbe-store", boot2, flows, 2000):
                pb = ingest_pb2.PushRequest.FromString(payload).batch
                batches2.append(IngestBatch("sbe-store", pb.boot_id, pb.sequence, pb.flows))
            for b in batches2:
                validate_batch(b)
            t0 = time.perf_counter()
            for i in range(0, len(batches2), 25):  # rounds of 50k flows, as the relay's
                store.write_batches(batches2[i : i + 25])
            store_rates.append(len(all_flows) / (time.perf_counter() - t0))
    finally:
        store.close()
    return raw_rates, store_rates


def _mid(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2] if xs else 0.0


def run(ctx: Context) -> None:
    rounds = ctx.pick(3, 2, 1)
    flows_each = ctx.pick(250_000, 60_000, 4_000)
    store_flows = ctx.pick(100_000, 50_000, 4_000)
    collectors = 2
    backends: list[tuple[str, str]] = [("chdb", "")]
    from tests.relay.clickhouse_server import ClickHouseServer, available

    server: ClickHouseServer | None = None
    if available():
        backends.append(("clickhouse-server", ""))
    else:
        ctx.note("clickhouse-server is not installed: only chDB measured")
    try:
        for kind, _ in backends:
            wd = ctx.workdir / f"ingest-{kind}"
            if kind == "chdb":
                relay_url = f"chdb://{wd / 'relay-store'}"
                base_url = f"chdb://{wd / 'baseline-store'}"
            else:
                server = ClickHouseServer(prefix="sbe-ch-")
                server.start()
                root = server.url.rsplit("/", 1)[0]
                relay_url = f"{root}/sbe_relay"
                base_url = f"{root}/sbe_baseline"
            ctx.log(f"{kind}: store alone")
            raw, direct = measure_store(base_url, store_flows, rounds)
            ctx.log(
                f"{kind}: backend insert {_mid(raw):,.0f} flows/s, "
                f"Store.write_batches {_mid(direct):,.0f} flows/s"
            )
            ctx.log(f"{kind}: through the relay")
            rr = measure_relay(ctx, relay_url, wd / "relay", rounds, collectors, flows_each)
            if server is not None:
                server.cleanup()
                server = None
            label = "chDB" if kind == "chdb" else "clickhouse-server 18.16 (native)"
            ctx.record(
                Figure(
                    "ingest",
                    f"ingest through the relay into {label}",
                    "flows/s",
                    rr.rates,
                    "backend insert of ready columns",
                    raw,
                    goal=Goal("value", ">=", 500_000, ">= 500k flows/s")
                    if kind == "chdb"
                    else None,
                    note=f"overall incl. start-up and tail: {_mid(rr.overall):,.0f} flows/s"
                    + ("" if kind == "chdb" else " (reported, no goal)"),
                )
            )
            ctx.record(
                Figure(
                    "ingest",
                    f"Store.write_batches in-process, {label}",
                    "flows/s",
                    direct,
                    "backend insert of ready columns",
                    raw,
                    note="diagnostic: the store's own cost, no gRPC",
                )
            )
            ctx.record(
                Figure(
                    "ingest",
                    f"relay peak RSS during ingest, {label}",
                    "MiB",
                    [rr.peak_rss / 2**20],
                    "after warm-up",
                    [rr.idle_rss / 2**20],
                )
            )
            if rr.profile:
                ctx.note(f"relay profile during ingest into {label} (py-spy): {rr.profile}")
    finally:
        if server is not None:
            server.cleanup()
    if not backends:
        raise Skip("no store backend")
