"""The store's schema: one set of tables for chDB (ClickHouse 26) and for servers as
old as Debian's 18.16, versioned migrations, and options used only where the server
supports them.

Tables (all in one database, default ``sensilla``):

- ``flows``: one row per flow: the columns of ``sensilla.filters.columns`` plus the
  serialized ``flow.Flow``. ReplacingMergeTree, one partition per day of the flow's
  time, sorted by hour, source and destination namespace and verdict (the scans of the
  query APIs), then by time and finally by the flow's position (collector, boot,
  sequence), which makes the sorting key unique per flow: a copy written twice is
  merged away, and a deduplicating read (``LIMIT 1 BY collector_id, boot_id, seq``)
  never sees it.
- ``flows_minute``, ``flows_hour``: rollups, SummingMergeTree, fed by materialized
  views from ``flows`` (``flows_minute_mv``, ``flows_hour_mv``), keyed by the time
  bucket and the dimensions in ``ROLLUP_DIMS`` (no per-connection columns; since
  migration 2 also ``src/dst_unowned_pod``, the pod's name when it has no workload,
  so the service map can show owner-less pods). The counters are Int64 so that a
  reconciliation can insert corrections.
- ``ingest_batches``: one marker row per batch and state (1 begun, 2 reconciled,
  3 committed), ReplacingMergeTree(state), sorted by (collector, boot, batch sequence).
- ``ingest_positions``: per collector and boot, the highest batch sequence acked with
  no gap before it (ReplacingMergeTree(acked_seq)); never expires.
- ``collectors``: the latest Hello of each collector (for the node list).
- ``schema_version``, ``store_options``: bookkeeping.

Every identifier here is a constant or a validated database name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.store.url import IDENTIFIER

# The flows table's columns as migration 1 created them: the contract of
# sensilla.filters.columns.FLOW_COLUMNS at the time, plus the serialized flow. Frozen:
# when the contract gains a column, add a migration (ALTER TABLE ... ADD COLUMN) and
# extend FLOWS_COLUMNS_V; tests check that they match FLOW_COLUMNS.
_FLOWS_V1: dict[str, str] = {
    "collector_id": "String",
    "boot_id": "UInt64",
    "seq": "UInt64",
    "time_ns": "Int64",
    "time": "DateTime",
    "uuid": "String",
    "node_name": "String",
    "verdict": "UInt8",
    "drop_reason": "UInt16",
    "event_type": "Int32",
    "event_subtype": "Int32",
    "traffic_direction": "UInt8",
    "is_reply": "UInt8",
    "ip_version": "UInt8",
    "src_ip": "String",
    "dst_ip": "String",
    "protocol": "String",
    "src_port": "UInt16",
    "dst_port": "UInt16",
    "tcp_flags": "UInt16",
    "icmp_type": "UInt8",
    "icmp_code": "UInt8",
    "src_namespace": "String",
    "src_pod": "String",
    "src_identity": "UInt32",
    "src_labels": "Array(String)",
    "src_workload": "String",
    "src_workload_kind": "String",
    "src_service": "String",
    "dst_namespace": "String",
    "dst_pod": "String",
    "dst_identity": "UInt32",
    "dst_labels": "Array(String)",
    "dst_workload": "String",
    "dst_workload_kind": "String",
    "dst_service": "String",
    "packets": "UInt64",
    "bytes": "UInt64",
    "suppressed_drops": "UInt64",
    "policies_allowed": "Array(String)",
    "policies_denied": "Array(String)",
    "interface_index": "UInt32",
    "interface_name": "String",
    "src_ip_hi": "UInt64",
    "src_ip_lo": "UInt64",
    "dst_ip_hi": "UInt64",
    "dst_ip_lo": "UInt64",
    "flow": "String",  # the serialized flow.Flow
}
# The flows table's columns after the latest migration.
FLOWS_COLUMNS: dict[str, str] = dict(_FLOWS_V1)

# The rollups' dimensions as migration 1 created them (name -> type), in sorting-key
# order after the bucket. Frozen, like _FLOWS_V1.
_ROLLUP_DIMS_V1: dict[str, str] = {
    "src_namespace": "String",
    "dst_namespace": "String",
    "verdict": "UInt8",
    "collector_id": "String",
    "node_name": "String",
    "src_workload": "String",
    "src_workload_kind": "String",
    "src_identity": "UInt32",
    "dst_workload": "String",
    "dst_workload_kind": "String",
    "dst_identity": "UInt32",
    "dst_service": "String",
    "dst_port": "UInt16",
    "protocol": "String",
    "drop_reason": "UInt16",
    "traffic_direction": "UInt8",
    "is_reply": "UInt8",
}
# Migration 2: the pod's name when its endpoint has no workload (owner), else "" (so
# the service map can group owner-less pods by name without a row per replica of a
# Deployment). Derived from flow columns by these expressions.
_ROLLUP_DIMS_V2: dict[str, str] = {"src_unowned_pod": "String", "dst_unowned_pod": "String"}
ROLLUP_DIM_EXPRS: dict[str, str] = {
    "src_unowned_pod": "if(src_workload = '', src_pod, '')",
    "dst_unowned_pod": "if(dst_workload = '', dst_pod, '')",
}
# The rollups' dimensions after the latest migration (sorting-key order after the bucket).
ROLLUP_DIMS: dict[str, str] = {**_ROLLUP_DIMS_V1, **_ROLLUP_DIMS_V2}
ROLLUP_COUNTERS: dict[str, str] = {"flows": "Int64", "packets": "Int64", "bytes": "Int64"}

# resolution -> (table, bucket function, seconds per bucket)
ROLLUPS: dict[str, tuple[str, str, int]] = {
    "minute": ("flows_minute", "toStartOfMinute", 60),
    "hour": ("flows_hour", "toStartOfHour", 3600),
}

MARKER_BEGUN = 1
MARKER_RECONCILED = 2
MARKER_COMMITTED = 3

MARKER_COLUMNS: dict[str, str] = {
    "collector_id": "String",
    "boot_id": "UInt64",
    "batch_seq": "UInt64",
    "state": "UInt8",
    "first_seq": "UInt64",
    "last_seq": "UInt64",
    "flows": "UInt32",
    "min_time": "DateTime",
    "max_time": "DateTime",
    "node_name": "String",
    "created_ns": "Int64",
    "written": "DateTime",
    "lost_events": "Array(String)",
}
POSITION_COLUMNS: dict[str, str] = {
    "collector_id": "String",
    "boot_id": "UInt64",
    "acked_seq": "UInt64",
    "updated": "DateTime",
}
COLLECTOR_COLUMNS: dict[str, str] = {
    "collector_id": "String",
    "node_name": "String",
    "boot_id": "UInt64",
    "observer_address": "String",
    "version": "String",
    "peer": "String",
    "connected_ns": "UInt64",
}

FLOWS_ORDER_BY = (
    "toStartOfHour(time), src_namespace, dst_namespace, verdict, time_ns, "
    "collector_id, boot_id, seq"
)
FLOWS_PRIMARY_KEY = "toStartOfHour(time), src_namespace, dst_namespace, verdict"
DEDUP_BY = "collector_id, boot_id, seq"

# table -> (time column, partition granularity "day" | "month") for retention
PARTITIONED: dict[str, tuple[str, str]] = {
    "flows": ("time", "day"),
    "flows_minute": ("bucket", "day"),
    "flows_hour": ("bucket", "month"),
    "ingest_batches": ("written", "day"),
}


def check_database(db: str) -> str:
    if not IDENTIFIER.match(db):
        raise ValueError(f"invalid database name {db!r}")
    return db


def _cols(columns: dict[str, str]) -> str:
    return ",\n    ".join(f"{n} {t}" for n, t in columns.items())


def rollup_dim_selects(dims: dict[str, str] | None = None) -> list[str]:
    """The rollup dimensions as SELECT items over raw flows (``expr AS name`` for the
    derived ones)."""
    names = ROLLUP_DIMS if dims is None else dims
    return [f"{ROLLUP_DIM_EXPRS[n]} AS {n}" if n in ROLLUP_DIM_EXPRS else n for n in names]


def _rollup_table(db: str, table: str, partition: str) -> str:
    cols = {"bucket": "DateTime", **_ROLLUP_DIMS_V1, **ROLLUP_COUNTERS}
    order = ", ".join(["bucket", *_ROLLUP_DIMS_V1])
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.{table} (\n    {_cols(cols)}\n)\n"
        f"ENGINE = SummingMergeTree(({', '.join(ROLLUP_COUNTERS)}))\n"
        f"PARTITION BY {partition}(bucket)\n"
        f"ORDER BY ({order})\n"
        f"PRIMARY KEY (bucket, src_namespace, dst_namespace, verdict)"
    )


def rollup_select(bucket_fn: str, source: str, dims: dict[str, str] | None = None) -> str:
    """The aggregation of raw flows into a rollup's rows (used by the materialized
    views, and, over deduplicated flows, by reconciliation and by tests)."""
    names = ROLLUP_DIMS if dims is None else dims
    selects = ", ".join(rollup_dim_selects(names))
    group = ", ".join(names)
    return (
        f"SELECT {bucket_fn}(time) AS bucket, {selects}, toInt64(count()) AS flows, "
        f"toInt64(sum(packets)) AS packets, toInt64(sum(bytes)) AS bytes "
        f"FROM {source} GROUP BY bucket, {group}"
    )


def _rollup_view(db: str, resolution: str, dims: dict[str, str] | None = None) -> str:
    table, fn, _ = ROLLUPS[resolution]
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table}_mv TO {db}.{table} AS "
        + rollup_select(fn, f"{db}.flows", dims)
    )


def _initial(db: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {db}.flows (\n    {_cols(_FLOWS_V1)}\n)\n"
        f"ENGINE = ReplacingMergeTree\n"
        f"PARTITION BY toYYYYMMDD(time)\n"
        f"ORDER BY ({FLOWS_ORDER_BY})\n"
        f"PRIMARY KEY ({FLOWS_PRIMARY_KEY})",
        _rollup_table(db, "flows_minute", "toYYYYMMDD"),
        _rollup_table(db, "flows_hour", "toYYYYMM"),
        _rollup_view(db, "minute", _ROLLUP_DIMS_V1),
        _rollup_view(db, "hour", _ROLLUP_DIMS_V1),
        f"CREATE TABLE IF NOT EXISTS {db}.ingest_batches (\n    {_cols(MARKER_COLUMNS)}\n)\n"
        f"ENGINE = ReplacingMergeTree(state)\n"
        f"PARTITION BY toYYYYMMDD(written)\n"
        f"ORDER BY (collector_id, boot_id, batch_seq)",
        f"CREATE TABLE IF NOT EXISTS {db}.ingest_positions (\n    {_cols(POSITION_COLUMNS)}\n)"
        f"\nENGINE = ReplacingMergeTree(acked_seq)\nORDER BY (collector_id, boot_id)",
        f"CREATE TABLE IF NOT EXISTS {db}.collectors (\n    {_cols(COLLECTOR_COLUMNS)}\n)\n"
        f"ENGINE = ReplacingMergeTree(connected_ns)\nORDER BY collector_id",
        f"CREATE TABLE IF NOT EXISTS {db}.store_options (name String, value String, "
        f"updated_ns UInt64) ENGINE = ReplacingMergeTree(updated_ns) ORDER BY name",
    ]


@dataclass(frozen=True)
class Guarded:
    """A statement that is skipped when ``table`` already has ``column`` (18.16 has no
    ADD COLUMN IF NOT EXISTS)."""

    sql: str
    table: str
    column: str


def _unowned_pods(db: str) -> list[str | Guarded]:
    """Migration 2: the rollups get src/dst_unowned_pod (after the V1 dimensions, in the
    sorting key), and their views are recreated to fill them."""
    out: list[str | Guarded] = []
    v1 = list(_ROLLUP_DIMS_V1)
    for resolution, (table, _, _) in ROLLUPS.items():
        adds, after = [], v1[-1]
        for name, ctype in _ROLLUP_DIMS_V2.items():
            adds.append(f"ADD COLUMN {name} {ctype} AFTER {after}")
            after = name
        order = ", ".join(["bucket", *ROLLUP_DIMS])
        out.append(
            Guarded(
                f"ALTER TABLE {db}.{table} {', '.join(adds)}, MODIFY ORDER BY ({order})",
                table,
                next(iter(_ROLLUP_DIMS_V2)),
            )
        )
        out.append(f"DROP TABLE IF EXISTS {db}.{table}_mv")
        out.append(_rollup_view(db, resolution))
    return out


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: Callable[[str], Sequence[str | Guarded]]


# Append only: a migration, once released, never changes. Statements are idempotent
# (IF NOT EXISTS, or Guarded), so relays migrating one server at the same time do no
# harm.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "flows, rollups, ingest markers and positions, collectors", _initial),
    Migration(2, "rollups: src/dst_unowned_pod (service map of owner-less pods)", _unowned_pods),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def bootstrap_statements(db: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"CREATE TABLE IF NOT EXISTS {db}.schema_version (version UInt32, description "
        f"String, applied DateTime) ENGINE = ReplacingMergeTree ORDER BY version",
    ]


# --- options gated on the server ---------------------------------------------------

# TTL clauses, ADD INDEX IF NOT EXISTS, bloom_filter indexes and MODIFY SETTING are all
# in ClickHouse 20.3 (the first LTS with every one of them); 18.16 has none.
MODERN = (20, 3)

SKIP_INDEXES: dict[str, str] = {
    "idx_src_pod": "src_pod TYPE bloom_filter(0.01) GRANULARITY 4",
    "idx_dst_pod": "dst_pod TYPE bloom_filter(0.01) GRANULARITY 4",
    "idx_src_ip": "src_ip TYPE bloom_filter(0.01) GRANULARITY 4",
    "idx_dst_ip": "dst_ip TYPE bloom_filter(0.01) GRANULARITY 4",
}

DURABILITY_SETTINGS = ("fsync_after_insert", "fsync_part_directory")


def supports_modern(version: tuple[int, ...]) -> bool:
    return version >= MODERN


def skip_index_statements(db: str) -> list[str]:
    return [
        f"ALTER TABLE {db}.flows ADD INDEX IF NOT EXISTS {name} {spec}"
        for name, spec in SKIP_INDEXES.items()
    ]


def ttl_statement(db: str, table: str, days: int) -> str:
    column, _ = PARTITIONED[table]
    return f"ALTER TABLE {db}.{table} MODIFY TTL {column} + INTERVAL {int(days)} DAY"
