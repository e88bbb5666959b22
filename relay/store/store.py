"""The store: flows in ClickHouse, written exactly once, read back losslessly.

Blocking API: call it from a worker thread (the relay runs it in an executor so the
grpc.aio loop never blocks). See docs/storage.md for the design; in short:

Writing a set of batches (``write_batches``):
1. Look up the batches' markers. Committed batches are duplicates (acked again, not
   written). Batches with a *begun* or *reconciled* marker may be partly stored
   (a crash or an error during an earlier attempt): they take the recovery path.
   The rest are fresh.
2. Fresh batches: insert *begun* markers, then all their flows in one INSERT (the
   driver or chDB splits it into blocks and partitions; it is not atomic).
3. Batches in recovery: read which of their flow sequences are already stored, insert
   only the missing flows, then reconcile the rollups for that collector and the
   time range those batches cover (below).
4. Insert *committed* markers, advance the per-boot acked positions. Only now is a
   batch acked. An exception anywhere leaves markers that make the next attempt take
   the recovery path, so ``write_batches`` is safe to retry with the same batches.

Rollups are fed by materialized views, which ClickHouse runs per inserted block after
writing the block to ``flows``; an interrupted INSERT can leave a block in ``flows``
but not in a rollup. Reconciliation makes a rollup exact again for a collector and a
range of buckets: it inserts, per rollup key, the difference between the aggregation
of the deduplicated raw flows and the rollup's current sums (SummingMergeTree adds it
up; rows that sum to zero vanish at merge time). It converges: running it again after
it was itself interrupted computes the remaining difference. It runs for the batches
in recovery (step 3), for a collector's unfinished batches when it says Hello, and at
start-up. Only one writer may write a collector's flows at a time (the collector
keeps one stream to one relay), which keeps the difference free of races.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.store import schema
from relay.store.backend import Backend, StoreError, open_backend
from relay.store.rows import flow_extension, flows_to_columns
from relay.store.url import StoreURL, parse_store_url
from sensilla.protos import flow_pb2

log = logging.getLogger(__name__)

BatchKey = tuple[str, int, int]  # (collector_id, boot_id, batch_seq)
BootKey = tuple[str, int]  # (collector_id, boot_id)

STALL_FILE_ENV = "SENSILLA_STORE_STALL_FILE"
MAX_BOOTS_IN_HELLO = 256


class BatchError(ValueError):
    """A batch is malformed; the message names the field."""


@dataclass(frozen=True)
class Retention:
    """Days kept: raw flows (and ingest markers), minute rollups, hour rollups."""

    flows_days: int = 7
    minute_days: int = 30
    hour_days: int = 400

    def __post_init__(self) -> None:
        for name in ("flows_days", "minute_days", "hour_days"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 1 <= v <= 36500:
                raise ValueError(f"retention {name} must be a whole number of days in 1..36500")


@dataclass
class IngestBatch:
    collector_id: str
    boot_id: int
    batch_seq: int
    flows: Sequence[flow_pb2.Flow]
    lost_events: Sequence[flow_pb2.LostEvent] = ()
    created_ns: int = 0
    node_name: str = ""
    # filled by validate_batch
    first_seq: int = 0
    last_seq: int = 0
    times: list[int] = field(default_factory=list)
    validated: bool = False

    @property
    def key(self) -> BatchKey:
        return (self.collector_id, self.boot_id, self.batch_seq)


@dataclass
class WriteResult:
    stored: list[BatchKey] = field(default_factory=list)  # written or completed now
    duplicates: list[BatchKey] = field(default_factory=list)  # committed before
    recovered: list[BatchKey] = field(default_factory=list)  # took the recovery path
    flows_written: int = 0
    acked: dict[BootKey, int] = field(default_factory=dict)  # after this write


@dataclass
class RecoveryReport:
    reconciled_batches: int = 0
    collectors: list[str] = field(default_factory=list)


def validate_batch(batch: IngestBatch) -> IngestBatch:
    """Check a batch's identity and its flows' positions; fill first/last seq, times.

    Every flow must carry a Position for this collector and boot, with consecutive
    sequences; the position is the deduplication key, so nothing else is accepted.
    """
    if not batch.collector_id or len(batch.collector_id) > 253:
        raise BatchError("hello.collector_id must be 1..253 characters")
    if not batch.collector_id.isprintable():
        raise BatchError("hello.collector_id must be printable")
    if batch.boot_id <= 0:
        raise BatchError("batch.boot_id must be positive")
    if batch.batch_seq <= 0:
        raise BatchError("batch.sequence must be positive (1, 2, 3, ...)")
    times: list[int] = []
    prev = 0
    for i, flow in enumerate(batch.flows):
        ext = flow_extension(flow)
        if ext is None or not ext.HasField("position"):
            raise BatchError(f"batch.flows[{i}].extensions: missing sensilla Position")
        pos = ext.position
        if pos.collector_id != batch.collector_id:
            raise BatchError(
                f"batch.flows[{i}].extensions.position.collector_id does not match the "
                f"stream's collector"
            )
        if pos.boot_id != batch.boot_id:
            raise BatchError(
                f"batch.flows[{i}].extensions.position.boot_id differs from batch.boot_id"
            )
        if pos.sequence <= 0 or (i > 0 and pos.sequence != prev + 1):
            raise BatchError(
                f"batch.flows[{i}].extensions.position.sequence must follow the previous "
                f"flow's (consecutive, from 1)"
            )
        prev = pos.sequence
        if flow.HasField("time"):
            try:
                flow.time.ToNanoseconds()
            except ValueError as exc:  # the flow's time must be a valid Timestamp
                raise BatchError(f"batch.flows[{i}].time: {exc}") from None
        secs = flow.time.seconds
        times.append(0 if secs < 0 else min(secs, 2**32 - 1))
    batch.times = times
    batch.validated = True
    if batch.flows:
        batch.first_seq = flow_extension(batch.flows[0]).position.sequence  # type: ignore[union-attr]
        batch.last_seq = prev
    return batch


def _merge_ranges(ranges: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(a, b) for a, b in out]


class Store:
    """One ClickHouse database holding flows, rollups and ingest bookkeeping."""

    def __init__(
        self,
        backend: Backend,
        *,
        retention: Retention | None = None,
        exclusive: bool | None = None,
    ) -> None:
        self.backend = backend
        self.db = schema.check_database(backend.database)
        self.retention = retention or Retention()
        # chDB: this process owns the path; servers: other relays may share it.
        self.exclusive = backend.kind == "chdb" if exclusive is None else exclusive
        self.server_version: tuple[int, ...] = (0,)
        self._flow_cols = [c for c in schema.FLOWS_COLUMNS if c != "flow"]
        self._acked: dict[BootKey, int] = {}
        self._above: dict[BootKey, set[int]] = defaultdict(set)
        self._loaded: set[str] = set()
        self._lock = threading.RLock()  # guards the acked cache (writes are serialized)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.backend.kind

    def t(self, table: str) -> str:
        """A qualified table name (tables are constants of the schema)."""
        return f"{self.db}.{table}"

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version now in place."""
        self.server_version = self.backend.version()
        for stmt in schema.bootstrap_statements(self.db):
            self.backend.execute(stmt)
        current = self.schema_version()
        if current > schema.SCHEMA_VERSION:
            raise StoreError(
                f"the store's schema version {current} is newer than this relay supports "
                f"({schema.SCHEMA_VERSION}); upgrade the relay"
            )
        for m in schema.MIGRATIONS:
            if m.version <= current:
                continue
            log.info("store: applying migration %d (%s)", m.version, m.description)
            for item in m.statements(self.db):
                if isinstance(item, schema.Guarded):
                    if self._has_column(item.table, item.column):
                        continue
                    item = item.sql
                self.backend.execute(item)
            self.backend.insert(
                self.t("schema_version"),
                {
                    "version": [m.version],
                    "description": [m.description],
                    "applied": [int(time.time())],
                },
                {"version": "UInt32", "description": "String", "applied": "DateTime"},
            )
        self._apply_server_options()
        return schema.SCHEMA_VERSION

    def _has_column(self, table: str, column: str) -> bool:
        rows = self.backend.query(
            "SELECT count() FROM system.columns WHERE database = {d:String} AND "
            "table = {t:String} AND name = {c:String}",
            {"d": self.db, "t": table, "c": column},
        )
        return bool(rows and int(rows[0][0]))

    def schema_version(self) -> int:
        rows = self.backend.query(f"SELECT max(version) FROM {self.t('schema_version')}")
        return int(rows[0][0] or 0) if rows else 0

    def _option(self, name: str) -> str | None:
        rows = self.backend.query(
            f"SELECT argMax(value, updated_ns) FROM {self.t('store_options')} "
            f"WHERE name = {{name:String}} GROUP BY name",
            {"name": name},
        )
        return str(rows[0][0]) if rows else None

    def _set_option(self, name: str, value: str) -> None:
        self.backend.insert(
            self.t("store_options"),
            {"name": [name], "value": [value], "updated_ns": [time.time_ns()]},
            {"name": "String", "value": "String", "updated_ns": "UInt64"},
        )

    def _apply_server_options(self) -> None:
        """Options only newer servers have: TTL, skip indexes, fsync on insert."""
        if not schema.supports_modern(self.server_version):
            log.info(
                "store: server %s: no TTL, skip indexes or fsync settings; retention "
                "by dropping partitions",
                ".".join(map(str, self.server_version)),
            )
            return
        for stmt in schema.skip_index_statements(self.db):
            self.backend.execute(stmt)
        available = {
            r[0]
            for r in self.backend.query(
                "SELECT name FROM system.merge_tree_settings WHERE name IN {n:Set(String)}",
                {"n": [*schema.DURABILITY_SETTINGS, "ttl_only_drop_parts"]},
            )
        }
        wanted = [f"{s} = 1" for s in schema.DURABILITY_SETTINGS if s in available]
        ttl_only = "ttl_only_drop_parts" in available
        r = self.retention
        days = {
            "flows": r.flows_days,
            "ingest_batches": r.flows_days,
            "flows_minute": r.minute_days,
            "flows_hour": r.hour_days,
        }
        for table in (
            "flows",
            "flows_minute",
            "flows_hour",
            "ingest_batches",
            "ingest_positions",
            "collectors",
        ):
            settings = list(wanted)
            if ttl_only and table in days:
                settings.append("ttl_only_drop_parts = 1")
            if settings:
                self.backend.execute(
                    f"ALTER TABLE {self.t(table)} MODIFY SETTING {', '.join(settings)}"
                )
        for table, n in days.items():
            key = f"ttl_days.{table}"
            if self._option(key) != str(n):
                self.backend.execute(schema.ttl_statement(self.db, table, n))
                self._set_option(key, str(n))

    def close(self) -> None:
        self.backend.close()

    # --- ingest ------------------------------------------------------------------

    def insert_batch(
        self,
        collector_id: str,
        boot_id: int,
        batch_seq: int,
        flows: Sequence[flow_pb2.Flow],
        lost_events: Sequence[flow_pb2.LostEvent] = (),
    ) -> None:
        """Store one batch, exactly once; durable on return. Safe to repeat."""
        self.write_batches(
            [IngestBatch(collector_id, boot_id, batch_seq, flows, lost_events=lost_events)]
        )

    def _maybe_stall(self) -> None:
        """Test hook: while the file named by SENSILLA_STORE_STALL_FILE exists, writes
        hang as if the store were held busy."""
        path = os.environ.get(STALL_FILE_ENV)
        while path and os.path.exists(path):
            time.sleep(0.05)

    def _marker_states(self, keys: Sequence[BatchKey]) -> dict[BatchKey, int]:
        groups: dict[BootKey, list[int]] = defaultdict(list)
        for c, b, s in keys:
            groups[(c, b)].append(s)
        conds, params = [], {}
        for i, ((c, b), seqs) in enumerate(groups.items()):
            conds.append(
                f"(collector_id = {{c{i}:String}} AND boot_id = {{b{i}:UInt64}} AND "
                f"batch_seq >= {{lo{i}:UInt64}} AND batch_seq <= {{hi{i}:UInt64}})"
            )
            params.update({f"c{i}": c, f"b{i}": b, f"lo{i}": min(seqs), f"hi{i}": max(seqs)})
        wanted = set(keys)
        out: dict[BatchKey, int] = {}
        for c, b, s, st in self.backend.query(
            f"SELECT collector_id, boot_id, batch_seq, max(state) FROM "
            f"{self.t('ingest_batches')} WHERE {' OR '.join(conds)} "
            f"GROUP BY collector_id, boot_id, batch_seq",
            params,
        ):
            key = (c, int(b), int(s))
            if key in wanted:
                out[key] = int(st)
        return out

    def _insert_markers(self, batches: Sequence[IngestBatch], state: int) -> None:
        if not batches:
            return
        now = int(time.time())
        cols: dict[str, list[Any]] = {n: [] for n in schema.MARKER_COLUMNS}
        for b in batches:
            cols["collector_id"].append(b.collector_id)
            cols["boot_id"].append(b.boot_id)
            cols["batch_seq"].append(b.batch_seq)
            cols["state"].append(state)
            cols["first_seq"].append(b.first_seq)
            cols["last_seq"].append(b.last_seq)
            cols["flows"].append(len(b.flows))
            cols["min_time"].append(min(b.times) if b.times else 0)
            cols["max_time"].append(max(b.times) if b.times else 0)
            cols["node_name"].append(b.node_name)
            cols["created_ns"].append(b.created_ns)
            cols["written"].append(now)
            cols["lost_events"].append(
                [e.SerializeToString() for e in b.lost_events]
                if state == schema.MARKER_COMMITTED
                else []
            )
        self.backend.insert(self.t("ingest_batches"), cols, schema.MARKER_COLUMNS)

    def _insert_flows(self, flows: Sequence[flow_pb2.Flow]) -> int:
        if not flows:
            return 0
        self.backend.insert(
            self.t("flows"), flows_to_columns(flows, self._flow_cols), schema.FLOWS_COLUMNS
        )
        return len(flows)

    def _stored_seqs(self, batch: IngestBatch) -> set[int]:
        if not batch.flows:
            return set()
        rows = self.backend.query(
            f"SELECT seq FROM {self.t('flows')} WHERE collector_id = {{c:String}} AND "
            f"boot_id = {{b:UInt64}} AND seq >= {{lo:UInt64}} AND seq <= {{hi:UInt64}} AND "
            f"time >= {{tlo:DateTime}} AND time <= {{thi:DateTime}}",
            {
                "c": batch.collector_id,
                "b": batch.boot_id,
                "lo": batch.first_seq,
                "hi": batch.last_seq,
                "tlo": min(batch.times),
                "thi": max(batch.times),
            },
        )
        return {int(r[0]) for r in rows}

    def write_batches(self, batches: Sequence[IngestBatch]) -> WriteResult:
        """Store batches exactly once; durable on return (then ack them).

        Safe to call again with the same batches after an exception, and with
        batches that an earlier process partly wrote before it died.
        """
        self._maybe_stall()
        self.backend.settle()  # an earlier attempt the client gave up on must be over
        result = WriteResult()
        unique: dict[BatchKey, IngestBatch] = {}
        for b in batches:
            if not b.validated:
                validate_batch(b)
            unique.setdefault(b.key, b)
        if not unique:
            return result
        states = self._marker_states(list(unique))
        fresh, recovering = [], []
        for key, b in unique.items():
            st = states.get(key, 0)
            if st == schema.MARKER_COMMITTED:
                result.duplicates.append(key)
            elif st in (schema.MARKER_BEGUN, schema.MARKER_RECONCILED):
                recovering.append(b)
            else:
                fresh.append(b)
        if fresh:
            self._insert_markers(fresh, schema.MARKER_BEGUN)
            result.flows_written += self._insert_flows([f for b in fresh for f in b.flows])
        if recovering:
            missing: list[flow_pb2.Flow] = []
            for b in recovering:
                have = self._stored_seqs(b)
                missing.extend(
                    f
                    for f, s in zip(b.flows, range(b.first_seq, b.last_seq + 1), strict=True)
                    if s not in have
                )
            result.flows_written += self._insert_flows(missing)
            ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for b in recovering:
                if b.times:
                    ranges[b.collector_id].append((min(b.times), max(b.times)))
            for collector, rs in ranges.items():
                self.reconcile_rollups(collector, rs)
            result.recovered = [b.key for b in recovering]
            log.warning(
                "store: completed %d batches partly written before (%d flows were missing)",
                len(recovering),
                len(missing),
            )
        done = fresh + recovering
        self._insert_markers(done, schema.MARKER_COMMITTED)
        result.stored = [b.key for b in done]
        result.acked = self._advance_acked([*result.stored, *result.duplicates])
        return result

    # --- acked positions -----------------------------------------------------------

    def _load_positions(self, collector_id: str) -> None:
        """Load a collector's acked positions and the committed batches above them."""
        pos = {
            int(b): int(a)
            for b, a in self.backend.query(
                f"SELECT boot_id, max(acked_seq) FROM {self.t('ingest_positions')} "
                f"WHERE collector_id = {{c:String}} GROUP BY boot_id",
                {"c": collector_id},
            )
        }
        params: dict[str, Any] = {"c": collector_id}
        above = "0"
        if pos:
            above = "transform(boot_id, {boots:Array(UInt64)}, {acks:Array(UInt64)}, toUInt64(0))"
            params.update(boots=list(pos), acks=list(pos.values()))
        rows = self.backend.query(
            f"SELECT boot_id, batch_seq FROM {self.t('ingest_batches')} "
            f"WHERE collector_id = {{c:String}} AND batch_seq > {above} "
            f"GROUP BY boot_id, batch_seq HAVING max(state) = {schema.MARKER_COMMITTED}",
            params,
        )
        with self._lock:
            for k in [k for k in self._acked if k[0] == collector_id]:
                del self._acked[k]
                self._above.pop(k, None)
            for b, a in pos.items():
                self._acked[(collector_id, b)] = a
            for b, s in rows:
                self._above[(collector_id, int(b))].add(int(s))
                self._acked.setdefault((collector_id, int(b)), 0)
            self._loaded.add(collector_id)
        self._advance_acked([], collectors=[collector_id], stored=pos)

    def _advance_acked(
        self,
        keys: Sequence[BatchKey],
        *,
        collectors: Sequence[str] = (),
        stored: Mapping[int, int] | None = None,
    ) -> dict[BootKey, int]:
        """Mark keys committed; write positions that advanced; return the new acked
        positions of every (collector, boot) touched."""
        for c in {k[0] for k in keys}:
            if c not in self._loaded:
                self._load_positions(c)
        touched: set[BootKey] = set()
        with self._lock:
            for c, b, s in keys:
                bk = (c, b)
                touched.add(bk)
                if s > self._acked.setdefault(bk, 0):
                    self._above[bk].add(s)
            for c in collectors:
                touched.update(k for k in self._acked if k[0] == c)
            before = {bk: self._acked[bk] for bk in touched}
            for bk in touched:
                above = self._above.get(bk)
                a = self._acked[bk]
                while above and a + 1 in above:
                    a += 1
                    above.discard(a)
                self._acked[bk] = a
            after = {bk: self._acked[bk] for bk in touched}
        if stored is not None:  # a reload: write back what the positions table lacks
            before = {bk: stored.get(bk[1], 0) for bk in touched}
        changed = {bk: a for bk, a in after.items() if a > before.get(bk, 0)}
        if changed:
            now = int(time.time())
            self.backend.insert(
                self.t("ingest_positions"),
                {
                    "collector_id": [bk[0] for bk in changed],
                    "boot_id": [bk[1] for bk in changed],
                    "acked_seq": list(changed.values()),
                    "updated": [now] * len(changed),
                },
                schema.POSITION_COLUMNS,
            )
        return after

    def acked_positions(self, collector_id: str) -> dict[int, int]:
        """Per boot of the collector: the highest batch sequence stored with no gap
        before it (the most recent MAX_BOOTS_IN_HELLO boots)."""
        self._load_positions(collector_id)
        with self._lock:
            acked = {b: a for (c, b), a in self._acked.items() if c == collector_id and a > 0}
        recent = sorted(acked)[-MAX_BOOTS_IN_HELLO:]
        return {b: acked[b] for b in recent}

    def prepare_collector(self, collector_id: str) -> dict[int, int]:
        """Called when a collector says Hello: finish the reconciliation of its
        unfinished batches, then return its acked positions.

        On a server, first wait for INSERTs already running (a relay that lost this
        collector's stream may still be writing its batches) so that what is read here
        is final."""
        self.backend.settle()
        if not self.exclusive:
            self.backend.fence_writes()
        rows = self.backend.query(
            f"SELECT boot_id, batch_seq, toUInt32(min(min_time)), toUInt32(max(max_time)) FROM "
            f"{self.t('ingest_batches')} WHERE collector_id = {{c:String}} "
            f"GROUP BY boot_id, batch_seq HAVING max(state) = {schema.MARKER_BEGUN}",
            {"c": collector_id},
        )
        if rows:
            self._reconcile_dirty(collector_id, rows)
            log.warning(
                "store: collector %s: reconciled rollups of %d unfinished batches",
                collector_id,
                len(rows),
            )
        return self.acked_positions(collector_id)

    def _reconcile_dirty(self, collector_id: str, rows: Sequence[tuple[Any, ...]]) -> None:
        self.reconcile_rollups(collector_id, [(int(r[2]), int(r[3])) for r in rows if r[3]])
        marks = [
            IngestBatch(collector_id, int(b), int(s), (), times=[int(lo), int(hi)])
            for b, s, lo, hi in rows
        ]
        self._insert_markers(marks, schema.MARKER_RECONCILED)

    def recover(self, min_age_s: float | None = None) -> RecoveryReport:
        """Start-up reconciliation: rollups of batches left unfinished by a crash, and
        acked positions behind their committed markers.

        With an exclusive store (chDB) every unfinished batch is reconciled; on a shared
        server only those older than ``min_age_s`` (default 600 s), since a younger one
        may be another relay's write in progress.
        """
        report = RecoveryReport()
        if min_age_s is None:
            min_age_s = 0.0 if self.exclusive else 600.0
        rows = self.backend.query(
            f"SELECT collector_id, boot_id, batch_seq, toUInt32(min(min_time)), "
            f"toUInt32(max(max_time)) FROM {self.t('ingest_batches')} "
            f"GROUP BY collector_id, boot_id, batch_seq "
            f"HAVING max(state) = {schema.MARKER_BEGUN} AND max(written) <= {{cut:DateTime}}",
            {"cut": max(0, int(time.time() - min_age_s))},
        )
        by_collector: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for c, b, s, lo, hi in rows:
            by_collector[c].append((b, s, lo, hi))
        for c, items in by_collector.items():
            self._reconcile_dirty(c, items)
            report.reconciled_batches += len(items)
        report.collectors = sorted(by_collector)
        for (c,) in self.backend.query(
            f"SELECT DISTINCT collector_id FROM {self.t('ingest_batches')}"
        ):
            self._load_positions(c)
        return report

    def record_hello(
        self,
        collector_id: str,
        node_name: str,
        boot_id: int,
        observer_address: str = "",
        version: str = "",
        peer: str = "",
    ) -> None:
        self.backend.insert(
            self.t("collectors"),
            {
                "collector_id": [collector_id],
                "node_name": [node_name],
                "boot_id": [boot_id],
                "observer_address": [observer_address],
                "version": [version],
                "peer": [peer],
                "connected_ns": [time.time_ns()],
            },
            schema.COLLECTOR_COLUMNS,
        )

    def collectors(self) -> list[dict[str, Any]]:
        """The latest Hello of every collector that ever connected."""
        names = [n for n in schema.COLLECTOR_COLUMNS if n != "collector_id"]
        sel = ", ".join(f"argMax({n}, connected_ns)" for n in names)
        rows = self.backend.query(
            f"SELECT collector_id, {sel} FROM {self.t('collectors')} GROUP BY collector_id "
            f"ORDER BY collector_id"
        )
        return [dict(zip(["collector_id", *names], r, strict=True)) for r in rows]

    # --- rollups -----------------------------------------------------------------

    def _retention_floor(self) -> int:
        """Earliest second whose raw flows are surely still kept (one day of margin)."""
        return max(0, int(time.time()) - (self.retention.flows_days - 1) * 86400)

    def reconcile_rollups(self, collector_id: str, ranges: Sequence[tuple[int, int]]) -> int:
        """Make both rollups exact for a collector over the buckets covering ``ranges``
        (inclusive (min, max) flow times in seconds). Returns statements run."""
        floor = self._retention_floor()
        ranges = [(max(lo, floor), hi) for lo, hi in ranges if hi >= floor]
        dims = ", ".join(schema.ROLLUP_DIMS)
        raw_cols = ", ".join(
            ["time", *schema.rollup_dim_selects(), "packets", "bytes", "boot_id", "seq"]
        )
        cols = ", ".join(["bucket", *schema.ROLLUP_DIMS, *schema.ROLLUP_COUNTERS])
        n = 0
        for table, fn, step in schema.ROLLUPS.values():
            for lo, hi in _merge_ranges(ranges, step):
                truth_src = (
                    f"(SELECT {raw_cols} FROM {self.t('flows')} WHERE collector_id = "
                    f"{{c:String}} AND time >= {fn}(toDateTime({{lo:DateTime}})) AND "
                    f"time < {fn}(toDateTime({{hi:DateTime}})) + {step} "
                    f"LIMIT 1 BY {schema.DEDUP_BY})"
                )
                truth = (
                    f"SELECT {fn}(time) AS bucket, {dims}, toInt64(count()) AS f, "
                    f"toInt64(sum(packets)) AS p, toInt64(sum(bytes)) AS b FROM {truth_src} "
                    f"GROUP BY bucket, {dims}"
                )
                current = (
                    f"SELECT bucket, {dims}, -sum(flows) AS f, -sum(packets) AS p, "
                    f"-sum(bytes) AS b FROM {self.t(table)} WHERE collector_id = {{c:String}} "
                    f"AND bucket >= {fn}(toDateTime({{lo:DateTime}})) AND bucket < "
                    f"{fn}(toDateTime({{hi:DateTime}})) + {step} GROUP BY bucket, {dims}"
                )
                self.backend.execute(
                    f"INSERT INTO {self.t(table)} ({cols}) SELECT bucket, {dims}, "
                    f"sum(f) AS flows, sum(p) AS packets, sum(b) AS bytes FROM ({truth} "
                    f"UNION ALL {current}) GROUP BY bucket, {dims} "
                    f"HAVING flows != 0 OR packets != 0 OR bytes != 0",
                    {"c": collector_id, "lo": lo, "hi": hi},
                )
                n += 1
        return n

    def _group_sql(self, group_by: Sequence[str]) -> list[str]:
        out = []
        for g in group_by:
            if g != "bucket" and g not in schema.ROLLUP_DIMS:
                raise ValueError(f"cannot group by {g!r}: not a rollup dimension")
            out.append(g)
        return out

    @staticmethod
    def _group_select(groups: Sequence[str]) -> list[str]:
        """Buckets come back as epoch seconds on every backend."""
        return ["toUInt32(bucket) AS bucket_epoch" if g == "bucket" else g for g in groups]

    def _where_sql(self, where: Mapping[str, Sequence[Any]] | None, params: dict[str, Any]) -> str:
        parts = []
        for i, (name, values) in enumerate((where or {}).items()):
            ctype = schema.ROLLUP_DIMS.get(name)
            if ctype is None:
                raise ValueError(f"cannot filter on {name!r}: not a rollup dimension")
            params[f"w{i}"] = list(values)
            parts.append(f"{name} IN {{w{i}:Set({ctype})}}")
        return "".join(f" AND {p}" for p in parts)

    def rollup(
        self,
        resolution: str,
        since: int,
        until: int,
        group_by: Sequence[str] = (),
        where: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """Sums of flows, packets and bytes from a rollup ("minute" or "hour") over the
        buckets starting in [since, until) (seconds), grouped by rollup dimensions (and
        "bucket"), filtered by ``where`` (dimension -> allowed values)."""
        table, fn, _ = schema.ROLLUPS[resolution]
        groups = self._group_sql(group_by)
        params: dict[str, Any] = {"since": since, "until": until}
        cond = self._where_sql(where, params)
        sel = ", ".join(
            [
                *self._group_select(groups),
                "sum(flows) AS flows",
                "sum(packets) AS packets",
                "sum(bytes) AS bytes",
            ]
        )
        sql = (
            f"SELECT {sel} FROM {self.t(table)} WHERE bucket >= {fn}(toDateTime("
            f"{{since:DateTime}})) AND bucket < {{until:DateTime}}{cond}"
        )
        if groups:
            sql += (
                f" GROUP BY {', '.join(groups)} HAVING flows != 0 OR packets != 0 OR "
                f"bytes != 0 ORDER BY {', '.join(groups)}"
            )
        return self._dicts([*groups, "flows", "packets", "bytes"], self.backend.query(sql, params))

    def aggregate_raw(
        self,
        resolution: str,
        since: int,
        until: int,
        group_by: Sequence[str] = (),
        where: Mapping[str, Sequence[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        """The same aggregation as ``rollup``, computed from the deduplicated raw flows
        (for narrow windows, checks and reconciliation)."""
        _, fn, _ = schema.ROLLUPS[resolution]
        groups = self._group_sql(group_by)
        params: dict[str, Any] = {"since": since, "until": until}
        cond = self._where_sql(where, params)
        cols = ", ".join(
            ["time", *schema.rollup_dim_selects(), "packets", "bytes", "boot_id", "seq"]
        )
        src = (
            f"(SELECT {cols}, {fn}(time) AS bucket FROM {self.t('flows')} WHERE "
            f"time >= {fn}(toDateTime({{since:DateTime}})) AND {fn}(time) < "
            f"{{until:DateTime}}{cond} LIMIT 1 BY {schema.DEDUP_BY})"
        )
        sel = ", ".join(
            [
                *self._group_select(groups),
                "toInt64(count()) AS flows",
                "toInt64(sum(packets)) AS packets",
                "toInt64(sum(bytes)) AS bytes",
            ]
        )
        sql = f"SELECT {sel} FROM {src}"
        if groups:
            sql += f" GROUP BY {', '.join(groups)} ORDER BY {', '.join(groups)}"
        rows = self.backend.query(sql, params)
        return self._dicts([*groups, "flows", "packets", "bytes"], rows)

    @staticmethod
    def _dicts(names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
        return [dict(zip(names, r, strict=True)) for r in rows]

    # --- reads -------------------------------------------------------------------

    def count_rows(self) -> int:
        """Physical rows in ``flows`` (copies not yet merged away count twice)."""
        return int(self.backend.query(f"SELECT count() FROM {self.t('flows')}")[0][0])

    def count_distinct(self) -> int:
        """Distinct flows (by position) in ``flows``."""
        return int(
            self.backend.query(f"SELECT uniqExact({schema.DEDUP_BY}) FROM {self.t('flows')}")[0][0]
        )

    def sequence_summary(self) -> dict[BootKey, tuple[int, int, int, int]]:
        """Per (collector, boot): (rows, distinct sequences, min seq, max seq)."""
        rows = self.backend.query(
            f"SELECT collector_id, boot_id, count(), uniqExact(seq), min(seq), max(seq) "
            f"FROM {self.t('flows')} GROUP BY collector_id, boot_id"
        )
        return {(c, int(b)): (int(n), int(d), int(lo), int(hi)) for c, b, n, d, lo, hi in rows}

    def iter_flows(
        self,
        since_ns: int | None = None,
        until_ns: int | None = None,
        *,
        collector_id: str | None = None,
        limit: int | None = None,
        page_size: int = 5000,
    ) -> Iterator[flow_pb2.Flow]:
        """Stored flows in (time, position) order, each once, exactly as received."""
        last: tuple[int, str, int, int] | None = None
        sent = 0
        while limit is None or sent < limit:
            conds: list[str] = []
            params: dict[str, Any] = {}
            if since_ns is not None:
                conds.append("time_ns >= {since:Int64} AND time >= {since_s:DateTime}")
                params["since"] = since_ns
                params["since_s"] = max(0, since_ns // 1_000_000_000)
            if until_ns is not None:
                conds.append("time_ns < {until:Int64}")
                params["until"] = until_ns
            if collector_id is not None:
                conds.append("collector_id = {c:String}")
                params["c"] = collector_id
            if last is not None:
                conds.append(
                    "time_ns >= {lt:Int64} AND (time_ns, collector_id, boot_id, seq) > "
                    "({lt:Int64}, {lc:String}, {lb:UInt64}, {ls:UInt64})"
                )
                params.update({"lt": last[0], "lc": last[1], "lb": last[2], "ls": last[3]})
            n = page_size if limit is None else min(page_size, limit - sent)
            where = f" WHERE {' AND '.join(conds)}" if conds else ""
            rows = self.backend.query(
                f"SELECT time_ns, collector_id, boot_id, seq, flow FROM {self.t('flows')}"
                f"{where} ORDER BY time_ns, collector_id, boot_id, seq "
                f"LIMIT 1 BY {schema.DEDUP_BY} LIMIT {int(n)}",
                params,
                binary=(4,),
            )
            for t, c, b, s, data in rows:
                yield flow_pb2.Flow.FromString(data)
                last = (int(t), c, int(b), int(s))
            sent += len(rows)
            if len(rows) < n:
                return

    def lost_events(self, collector_id: str | None = None) -> list[flow_pb2.LostEvent]:
        """Losses collectors reported with their batches (each batch counted once)."""
        cond, params = "", {}
        if collector_id is not None:
            cond, params = " AND collector_id = {c:String}", {"c": collector_id}
        rows = self.backend.query(
            f"SELECT ev FROM (SELECT collector_id, boot_id, batch_seq, lost_events FROM "
            f"{self.t('ingest_batches')} WHERE state = {schema.MARKER_COMMITTED} AND "
            f"notEmpty(lost_events){cond} LIMIT 1 BY collector_id, boot_id, batch_seq) "
            f"ARRAY JOIN lost_events AS ev",
            params,
            binary=(0,),
        )
        return [flow_pb2.LostEvent.FromString(r[0]) for r in rows]

    def select(
        self, sql: str, params: Mapping[str, Any] | None = None, *, binary: Sequence[int] = ()
    ) -> list[tuple[Any, ...]]:
        """Run a read-only query written against this store's tables with typed
        ``{name:Type}`` parameters (for the query modules built on the store)."""
        head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if head not in ("SELECT", "WITH"):
            raise ValueError("Store.select runs SELECT queries only")
        return self.backend.query(sql, params, binary=binary)

    # --- retention ---------------------------------------------------------------

    def apply_retention(self, now: float | None = None) -> list[tuple[str, str]]:
        """Drop whole partitions past retention (works on every server version; newer
        servers also carry TTLs). Returns the (table, partition) pairs dropped."""
        now = time.time() if now is None else now
        r = self.retention
        days = {
            "flows": r.flows_days,
            "ingest_batches": r.flows_days,
            "flows_minute": r.minute_days,
            "flows_hour": r.hour_days,
        }
        dropped = []
        for table, (_, grain) in schema.PARTITIONED.items():
            cutoff_t = time.gmtime(now - days[table] * 86400)
            cutoff = int(time.strftime("%Y%m%d" if grain == "day" else "%Y%m", cutoff_t))
            parts = self.backend.query(
                "SELECT DISTINCT partition FROM system.parts WHERE database = {db:String} "
                "AND table = {t:String} AND active",
                {"db": self.db, "t": table},
            )
            for (p,) in parts:
                text = str(p).strip("'")
                if not text.isdigit():
                    continue
                if int(text) < cutoff:
                    self.backend.execute(f"ALTER TABLE {self.t(table)} DROP PARTITION {int(text)}")
                    dropped.append((table, text))
        if dropped:
            log.info("store: retention dropped %d partitions", len(dropped))
        return dropped


def open_store(
    url: str | StoreURL,
    *,
    retention: Retention | None = None,
    migrate: bool = True,
    exclusive: bool | None = None,
) -> Store:
    """Open (and by default create or migrate) the store at a URL."""
    parsed = parse_store_url(url) if isinstance(url, str) else url
    if parsed.scheme == "chdb":
        os.makedirs(parsed.path, exist_ok=True)
    backend = open_backend(parsed)
    store = Store(backend, retention=retention, exclusive=exclusive)
    try:
        if migrate:
            store.migrate()
        else:
            store.server_version = backend.version()
    except BaseException:
        store.close()
        raise
    return store
