"""Benchmark 8 (and 9): ingest while the relay serves followers, as a ratio to
ingest alone.

One relay process over chDB (the follower limits raised, see bench/relayproc.py),
the ingest of bench/ingest.py (two synthetic collectors, batches of 2,000 flows), in
rounds that rotate three setups:

- alone: no follower;
- a stalled follower: `GetFlows(follow=True)` for every flow by a client that never
  reads (gRPC flow control fills, then the relay's per-follower queue, which then
  loses flows for that follower only);
- 1,000 idle followers: `GetFlows(follow=True)` with a filter no ingested flow
  matches (namespace `sbe-nothing`), spread over 10 channels, all subscribed (the
  relay's `sensilla-follow: subscribed` header) before ingest starts.

The relay's peak RSS over the rounds is recorded too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from bench import procs
from bench.core import Context, Figure, Goal
from bench.ingest import run_round
from bench.profile import Profiler, describe
from bench.relayproc import Relay

SETUPS = ("alone", "stalled", "idle")


@contextlib.contextmanager
def followers(address: str, n: int, whitelist: list[Any], channels: int) -> Iterator[list[Any]]:
    """n follow streams, subscribed when the block starts; cancelled after."""
    import grpc

    from sensilla.protos import observer_pb2, observer_pb2_grpc

    chans = [grpc.insecure_channel(address) for _ in range(max(1, channels))]
    calls: list[Any] = []
    try:
        stubs = [observer_pb2_grpc.ObserverStub(c) for c in chans]
        req = observer_pb2.GetFlowsRequest(follow=True, whitelist=whitelist)
        for i in range(n):
            calls.append(stubs[i % len(stubs)].GetFlows(req))
        for call in calls:
            md = dict(call.initial_metadata())  # waits for the relay's answer
            if md.get("sensilla-follow") != "subscribed":
                raise RuntimeError(f"a follower was not subscribed: {md}")
        yield calls
    finally:
        for call in calls:
            call.cancel()
        for c in chans:
            c.close()


def run(ctx: Context) -> None:
    from sensilla.protos import flow_pb2

    rounds = ctx.pick(3, 2, 1)
    flows_each = ctx.pick(150_000, 40_000, 4_000)
    idle_n = ctx.pick(1000, 1000, 50)
    # rounds are time-boxed: with many followers ingest may crawl
    max_seconds = ctx.pick(40.0, 20.0, 5.0)
    wd = ctx.workdir / "interference"
    url = f"chdb://{wd / 'store'}"
    rates: dict[str, list[float]] = {s: [] for s in SETUPS}
    nothing = [flow_pb2.FlowFilter(source_pod=["sbe-nothing/"])]
    with Relay(url, wd / "relay", followers=idle_n + 64) as relay:
        if not ctx.smoke:
            run_round(relay.address, 2, max(2000, flows_each // 10))  # warm-up
        procs.reset_peak_rss(relay.pid)
        idle_rss = procs.rss_bytes(relay.pid)
        for r in range(rounds):
            order = SETUPS[r % 3 :] + SETUPS[: r % 3]
            for setup in order:
                # let the previous setup's followers go (a cancelled follower's task
                # ends only once the relay notices: its queue is filtered first)
                time.sleep(ctx.pick(5.0, 3.0, 0.5))
                if not ctx.smoke:
                    run_round(relay.address, 2, 4000)
                cm: Any = contextlib.nullcontext()
                if setup == "stalled":
                    cm = followers(relay.address, 1, [], 1)
                elif setup == "idle":
                    cm = followers(relay.address, idle_n, nothing, 10)
                t0 = time.monotonic()
                profile = setup == "idle" and r == rounds - 1 and not ctx.smoke
                prof_cm: Any = (
                    Profiler(relay.pid, wd / "relay-idle.pyspy")
                    if profile
                    else contextlib.nullcontext()
                )
                with cm:
                    if setup == "idle":
                        ctx.log(f"{idle_n} followers subscribed in {time.monotonic() - t0:.1f} s")
                    with prof_cm as prof:
                        steady, _ = run_round(relay.address, 2, flows_each, max_seconds)
                if prof is not None:
                    top = prof.summary(8)
                    incl = prof.inclusive("_live", "matching", "matches", "write_batches")
                    ctx.note(
                        f"relay profile with {idle_n} idle followers (py-spy, GIL holder): "
                        + (describe(top) if top else prof.error)
                        + "; inclusive: "
                        + ", ".join(f"{k} {v:.0f}%" for k, v in incl.items())
                    )
                rates[setup].append(steady)
                ctx.log(f"round {r + 1}/{rounds} {setup:8s} {steady:,.0f} flows/s")
        peak = procs.peak_rss_bytes(relay.pid)
    ctx.record(
        Figure(
            "interference",
            "ingest with a stalled follower",
            "flows/s",
            rates["stalled"],
            "ingest alone",
            rates["alone"],
            paired=True,
            goal=Goal("ratio", ">=", 0.9),
        )
    )
    ctx.record(
        Figure(
            "interference",
            f"ingest with {idle_n:,} idle followers",
            "flows/s",
            rates["idle"],
            "ingest alone",
            rates["alone"],
            paired=True,
            goal=Goal("ratio", ">=", 0.8),
        )
    )
    ctx.record(
        Figure(
            "interference",
            "relay peak RSS during the rounds",
            "MiB",
            [peak / 2**20],
            "after warm-up",
            [idle_rss / 2**20],
        )
    )
