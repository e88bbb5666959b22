"""Helpers for the store tests: batches of synthetic flows, a backend that fails on
cue (as a crash or a lost connection would, between or inside statements), and the
checks every exactly-once test ends with."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from relay.ingest.synthetic import FlowFactory
from relay.store import IngestBatch, Store
from relay.store.backend import Backend, StoreUnavailable

GROUPINGS: tuple[tuple[str, ...], ...] = (
    (),
    ("bucket",),
    ("bucket", "collector_id", "verdict"),
    ("src_namespace", "dst_namespace", "dst_port", "protocol"),
    ("bucket", "src_workload", "dst_workload", "verdict", "drop_reason", "traffic_direction"),
    ("node_name", "src_identity", "dst_identity", "dst_service", "is_reply"),
)


def make_batches(
    collector: str,
    boot: int,
    nbatches: int,
    size: int,
    *,
    start_ns: int | None = None,
    step_ns: int = 3_000_000,
    first_batch: int = 1,
) -> list[IngestBatch]:
    ff = FlowFactory(collector, boot, seed=boot % 97)
    start = start_ns if start_ns is not None else time.time_ns() - 3600 * 10**9
    out = []
    seq = (first_batch - 1) * size + 1
    for b in range(first_batch, first_batch + nbatches):
        flows = [ff.make(s, start + s * step_ns) for s in range(seq, seq + size)]
        out.append(IngestBatch(collector, boot, b, flows))
        seq += size
    return out


class Crash(StoreUnavailable):
    """Injected failure."""


class FaultyBackend(Backend):
    """Wraps a backend; ``fail(when)`` arms one failure: ``when(op, table, n)`` decides
    per call. An insert into `flows` can fail half-way: the first half of the rows is
    written, then the call raises (as a crash between two blocks would leave it)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.database = inner.database
        self._when: Callable[[str, str, int], str | None] | None = None
        self.calls: list[tuple[str, str]] = []

    def fail(self, when: Callable[[str, str, int], str | None] | None) -> None:
        self._when = when

    def _check(self, op: str, table: str, n: int = 0) -> str | None:
        self.calls.append((op, table))
        if self._when is None:
            return None
        how = self._when(op, table, n)
        if how is not None:
            self._when = None
        return how

    def version(self) -> tuple[int, ...]:
        return self.inner.version()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        table = sql.split("INSERT INTO ", 1)[1].split()[0] if sql.startswith("INSERT") else ""
        if self._check("execute", table.split(".")[-1]) == "before":
            raise Crash("injected: before execute")
        self.inner.execute(sql, params)

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        binary: Collection[int] = (),
    ) -> list[tuple[Any, ...]]:
        return self.inner.query(sql, params, binary=binary)

    def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
    ) -> None:
        short = table.split(".")[-1]
        n = len(next(iter(columns.values()))) if columns else 0
        how = self._check("insert", short, n)
        if how == "before":
            raise Crash(f"injected: before insert into {short}")
        if how == "half":
            half = {k: list(v)[: n // 2] for k, v in columns.items()}
            self.inner.insert(table, half, types)
            raise Crash(f"injected: half of the insert into {short}")
        self.inner.insert(table, columns, types)
        if how == "after":
            raise Crash(f"injected: after insert into {short} (the client never heard)")

    def close(self) -> None:
        self.inner.close()

    def settle(self, timeout: float = 120.0) -> None:
        self.inner.settle(timeout)

    def fence_writes(self, timeout: float = 120.0) -> None:
        self.inner.fence_writes(timeout)


def assert_exactly_once(store: Store, expected: Mapping[tuple[str, int], int]) -> None:
    """Every (collector, boot) holds sequences 1..n, each in exactly one row."""
    summary = store.sequence_summary()
    assert set(summary) == set(expected), summary
    for key, n in expected.items():
        rows, distinct, lo, hi = summary[key]
        assert (rows, distinct, lo, hi) == (n, n, 1, n), (key, summary[key])
    total = sum(expected.values())
    assert store.count_rows() == total
    assert store.count_distinct() == total


def assert_rollups_exact(store: Store) -> None:
    """Every rollup query equals the same aggregation over the raw flows."""
    for resolution in ("minute", "hour"):
        for groups in GROUPINGS:
            rolled = store.rollup(resolution, 0, 2**32 - 1, groups)
            raw = store.aggregate_raw(resolution, 0, 2**32 - 1, groups)
            assert rolled == raw, (resolution, groups)
