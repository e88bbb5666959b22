"""Fault scenarios against a relay process: two synthetic collectors ship while the
relay is SIGKILLed and restarted, or while its store stalls; afterwards the store must
hold every flow exactly once, rollups equal to raw aggregation, and acked positions
equal to each collector's last batch."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.ingest.synthetic import SyntheticCollector
from relay.store import Store, open_store
from tests.relay.helpers import assert_exactly_once, assert_rollups_exact
from tests.relay.relay_process import RelayProcess


@dataclass
class Outcome:
    clients: list[SyntheticCollector]
    seconds: float
    kills: int = 0
    log: str = ""
    ack_times: list[float] = field(default_factory=list)
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def flows(self) -> int:
        return sum(c.total_flows for c in self.clients)


@contextmanager
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="sst-relay-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_clients(
    relay: RelayProcess,
    flows_per_client: int,
    batch_size: int,
    ack_times: list[float],
    rate: float | None = None,
) -> list[SyntheticCollector]:
    def on_ack(_boot: int, _seq: int) -> None:
        ack_times.append(time.monotonic())

    return [
        SyntheticCollector(
            relay.address,
            f"sst-node-{i}",
            flows_per_client,
            batch_size=batch_size,
            seed=i,
            backoff_max_s=0.5,
            on_batch_acked=on_ack,
            max_rate=rate,
        )
        for i in (1, 2)
    ]


async def ship_with(
    clients: list[SyntheticCollector],
    disturb: Callable[[list[SyntheticCollector]], object] | None,
    timeout: float,
) -> None:
    """Run the clients (and the disturbance alongside); a client that fails, or the
    disturbance failing, ends the run with that error."""
    tasks = [asyncio.create_task(c.run(timeout=timeout)) for c in clients]
    extra: list[asyncio.Task[Any]] = []
    if disturb is not None:
        extra.append(asyncio.create_task(disturb(clients)))  # type: ignore[arg-type]
    try:
        pending = set(tasks) | set(extra)
        while any(not t.done() for t in tasks):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # raises the failure of a client or of the disturbance
        for t in extra:
            await t
    finally:
        for t in tasks + extra:
            t.cancel()
        await asyncio.gather(*tasks, *extra, return_exceptions=True)


def acks(clients: list[SyntheticCollector]) -> int:
    return sum(c.stats.acks for c in clients)


def sigkill_run(
    store_url: str,
    work: Path,
    *,
    flows_per_client: int,
    kills: int = 5,
    batch_size: int = 500,
    seed: int | None = None,
    timeout: float = 900.0,
    rate: float | None = None,
) -> Outcome:
    """Ship while SIGKILLing the relay ``kills`` times at random points mid-ingest."""
    rng = random.Random(seed)
    relay = RelayProcess(store_url, work, args=["--max-batch-delay", "0.1"])
    ack_times: list[float] = []
    clients = make_clients(relay, flows_per_client, batch_size, ack_times, rate)
    done_kills = 0

    async def killer(cs: list[SyntheticCollector]) -> None:
        nonlocal done_kills
        for _ in range(kills):
            # mid-ingest: some progress since the restart, then a random moment
            base = acks(cs)
            deadline = time.monotonic() + 120
            while acks(cs) <= base and not all(c.done for c in cs):
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no ack for 120 s after restart {relay.starts}: "
                        f"{[c.stats for c in cs]}\n{relay.tail()}"
                    )
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            if all(c.done for c in cs):
                return
            relay.kill()
            done_kills += 1
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            await asyncio.to_thread(relay.start)

    relay.start()
    t0 = time.monotonic()
    try:
        asyncio.run(ship_with(clients, killer, timeout))
        seconds = time.monotonic() - t0
    finally:
        rc = relay.stop()
    out = Outcome(clients, seconds, done_kills, relay.log_text(), ack_times)
    out.notes["exit_code"] = rc
    return out


def verify(store_url: str, outcome: Outcome) -> dict[str, object]:
    """The end state every scenario must reach; returns figures for the report."""
    st: Store = open_store(store_url)
    try:
        assert_exactly_once(
            st, {(c.collector_id, c.boot_id): c.total_flows for c in outcome.clients}
        )
        assert_rollups_exact(st)
        for c in outcome.clients:
            assert c.stats.out_of_order_acks == 0
            assert c.acked == set(range(1, c.last_batch_seq + 1))
            assert st.acked_positions(c.collector_id) == {c.boot_id: c.last_batch_seq}
        log = outcome.log
        reconciled = sum(int(m) for m in re.findall(r"rollups of (\d+) (?:batches left )?unf", log))
        completed = sum(int(m) for m in re.findall(r"completed (\d+) batches partly", log))
        return {
            "flows": st.count_distinct(),
            "rows": st.count_rows(),
            "reconciled_batches": reconciled,
            "completed_partial_batches": completed,
            "reconnects": sum(c.stats.connects - 1 for c in outcome.clients),
            "resent_batches": sum(c.stats.batches_resent for c in outcome.clients),
            "flow_controls": sum(c.stats.flow_controls for c in outcome.clients),
            "max_spool": max(c.stats.max_spool for c in outcome.clients),
            "seconds": round(outcome.seconds, 1),
            "flows_per_s": round(outcome.flows / outcome.seconds),
        }
    finally:
        st.close()


def stall_run(
    store_url: str,
    work: Path,
    *,
    begin: Callable[[], None],
    end: Callable[[], None],
    hold_s: float,
    flows_per_client: int,
    rate: float,
    env: dict[str, str] | None = None,
    relay_args: tuple[str, ...] = (),
    timeout: float = 600.0,
) -> Outcome:
    """Ship while the store stalls for ``hold_s`` seconds (``begin`` .. ``end``)."""
    relay = RelayProcess(
        store_url,
        work,
        env=env,
        args=["--max-batch-delay", "0.1", "--store-slow-after", "0.5", *relay_args],
    )
    ack_times: list[float] = []
    clients = make_clients(relay, flows_per_client, 500, ack_times, rate)
    window: dict[str, float] = {}

    async def stall(cs: list[SyntheticCollector]) -> None:
        while acks(cs) < 4:
            await asyncio.sleep(0.02)
        window["acks_before"] = acks(cs)
        await asyncio.to_thread(begin)
        window["begin"] = time.monotonic()
        await asyncio.sleep(hold_s)
        window["spool_at_end"] = max(len(c.spool) for c in cs)
        window["end"] = time.monotonic()
        await asyncio.to_thread(end)

    relay.start()
    t0 = time.monotonic()
    try:
        asyncio.run(ship_with(clients, stall, timeout))
        seconds = time.monotonic() - t0
    finally:
        rc = relay.stop()
    out = Outcome(clients, seconds, 0, relay.log_text(), ack_times)
    out.notes.update(window, exit_code=rc)
    # acks while the store was stalled (after a second for writes already done)
    out.notes["acks_during_stall"] = sum(
        1 for t in ack_times if window["begin"] + 1.0 < t < window["end"]
    )
    return out


def plain_run(
    store_url: str,
    work: Path,
    *,
    flows_per_client: int,
    batch_size: int = 1000,
    timeout: float = 1800.0,
    relay_args: tuple[str, ...] = (),
) -> Outcome:
    """Ship as fast as the relay takes it (no faults)."""
    relay = RelayProcess(store_url, work, args=list(relay_args))
    ack_times: list[float] = []
    clients = make_clients(relay, flows_per_client, batch_size, ack_times)
    relay.start()
    t0 = time.monotonic()
    try:
        asyncio.run(ship_with(clients, None, timeout))
        seconds = time.monotonic() - t0
    finally:
        rc = relay.stop()
    out = Outcome(clients, seconds, 0, relay.log_text(), ack_times)
    out.notes["exit_code"] = rc
    return out
