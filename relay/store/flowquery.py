"""Reading stored flows in order, for the relay's Observer (GetFlows history) and
query API (SearchFlows).

A selection is a time window (inclusive nanoseconds), a filter condition (the SQL of
``sensilla.filters.CompiledFilter`` with its typed parameters), and optional bounds per
collector boot on the flow sequence (``upto``: the cut a live follower takes when it
subscribes, so history and live tail neither overlap nor leave a gap; ``after``: a
resume point, for streams that continue after a position).

Flows come back in *key* order, key = (time_ns, collector_id, boot_id, seq): time
order across nodes, and for one collector the order of its positions wherever its
flows' times follow them. Each flow once (``LIMIT 1 BY`` the position, so copies not
yet merged away never show).

Reading is two-step so the heavy ``flow`` column is read only for the flows sent:
a *key scan* (light columns, sorted, up to ``scan_rows`` keys) then *fetches* of
consecutive key ranges (``fetch_rows`` keys each) that read the serialized flows of
exactly those keys (the range also bounds the time, which the primary key prunes by
hour). Works the same on chDB and on clickhouse-server 18.16.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from relay.store import schema
from relay.store.store import Store

Key = tuple[int, str, int, int]  # (time_ns, collector_id, boot_id, seq)
BootKey = tuple[str, int]

KEY_COLS = "time_ns, collector_id, boot_id, seq"
KEY_TUPLE = "(time_ns, collector_id, boot_id, seq)"
INT64_MAX = 2**63 - 1


def boot_key_sql() -> str:
    """One string per collector boot, for per-boot bounds (``transform``)."""
    return "concat(collector_id, '/', toString(boot_id))"


def boot_key(collector_id: str, boot_id: int) -> str:
    return f"{collector_id}/{boot_id}"


@dataclass
class FlowSelection:
    where: str = "1"
    params: dict[str, Any] = field(default_factory=dict)
    since_ns: int | None = None  # inclusive
    until_ns: int | None = None  # inclusive
    # per (collector, boot): only seq <= bound; boots not listed are excluded entirely
    upto: Mapping[BootKey, int] | None = None
    # per (collector, boot): only seq > bound; boots not listed are included
    after: Mapping[BootKey, int] | None = None
    extra: list[str] = field(default_factory=list)  # more conditions (their params in params)

    def conditions(self) -> tuple[list[str], dict[str, Any]]:
        conds: list[str] = []
        params = dict(self.params)
        if self.where and self.where != "1":
            conds.append(f"({self.where})")
        if self.since_ns is not None:
            since = max(0, self.since_ns)
            conds.append("time >= {fq_since_s:DateTime} AND time_ns >= {fq_since:Int64}")
            params["fq_since_s"] = min(since // 1_000_000_000, 2**32 - 1)
            params["fq_since"] = min(since, INT64_MAX)
        if self.until_ns is not None:
            if self.until_ns < 0:
                conds.append("0")
            else:
                conds.append("time <= {fq_until_s:DateTime} AND time_ns <= {fq_until:Int64}")
                params["fq_until_s"] = min(self.until_ns // 1_000_000_000, 2**32 - 1)
                params["fq_until"] = min(self.until_ns, INT64_MAX)
        if self.upto is not None:
            if not self.upto:
                conds.append("0")
            else:
                keys = [boot_key(c, b) for c, b in self.upto]
                conds.append(
                    f"seq <= transform({boot_key_sql()}, {{fq_upto_k:Array(String)}}, "
                    "{fq_upto_v:Array(UInt64)}, toUInt64(0))"
                )
                params["fq_upto_k"] = keys
                params["fq_upto_v"] = list(self.upto.values())
        if self.after:
            keys = [boot_key(c, b) for c, b in self.after]
            conds.append(
                f"seq > transform({boot_key_sql()}, {{fq_after_k:Array(String)}}, "
                "{fq_after_v:Array(UInt64)}, toUInt64(0))"
            )
            params["fq_after_k"] = keys
            params["fq_after_v"] = list(self.after.values())
        conds.extend(f"({c})" for c in self.extra)
        return conds, params


def _key(row: tuple[Any, ...]) -> Key:
    return (int(row[0]), str(row[1]), int(row[2]), int(row[3]))


def _key_params(prefix: str, key: Key) -> dict[str, Any]:
    return {
        f"{prefix}t": key[0],
        f"{prefix}c": key[1],
        f"{prefix}b": key[2],
        f"{prefix}s": key[3],
    }


def _key_literal(prefix: str) -> str:
    return (
        f"({{{prefix}t:Int64}}, {{{prefix}c:String}}, {{{prefix}b:UInt64}}, {{{prefix}s:UInt64}})"
    )


def scan_keys(
    store: Store,
    sel: FlowSelection,
    *,
    limit: int,
    start: Key | None = None,
    inclusive: bool = False,
    descending: bool = False,
) -> list[Key]:
    """Up to ``limit`` keys of selected flows in key order (descending: newest first),
    starting after ``start`` (at it, with ``inclusive``)."""
    conds, params = sel.conditions()
    if start is not None:
        op = (">=" if inclusive else ">") if not descending else ("<=" if inclusive else "<")
        tcmp = ">=" if not descending else "<="
        conds.append(f"time_ns {tcmp} {{ks_t:Int64}} AND {KEY_TUPLE} {op} {_key_literal('ks_')}")
        tsec = max(0, min(start[0] // 1_000_000_000, 2**32 - 1))
        conds.append(f"time {tcmp} {{ks_sec:DateTime}}")
        params.update(_key_params("ks_", start))
        params["ks_sec"] = tsec
    order = (
        KEY_COLS if not descending else "time_ns DESC, collector_id DESC, boot_id DESC, seq DESC"
    )
    where = " AND ".join(conds) if conds else "1"
    rows = store.backend.query(
        f"SELECT {KEY_COLS} FROM {store.t('flows')} WHERE {where} ORDER BY {order} "
        f"LIMIT 1 BY {schema.DEDUP_BY} LIMIT {int(limit)}",
        params,
    )
    return [_key(r) for r in rows]


def fetch_range(store: Store, sel: FlowSelection, lo: Key, hi: Key) -> list[tuple[Key, bytes]]:
    """The selected flows with lo <= key <= hi, in key order, serialized."""
    conds, params = sel.conditions()
    conds.append(
        "time >= {fr_lo_sec:DateTime} AND time <= {fr_hi_sec:DateTime} AND "
        "time_ns >= {fr_lo_t:Int64} AND time_ns <= {fr_hi_t:Int64} AND "
        f"{KEY_TUPLE} >= {_key_literal('fr_lo_')} AND {KEY_TUPLE} <= {_key_literal('fr_hi_')}"
    )
    params.update(_key_params("fr_lo_", lo))
    params.update(_key_params("fr_hi_", hi))
    params["fr_lo_sec"] = max(0, min(lo[0] // 1_000_000_000, 2**32 - 1))
    params["fr_hi_sec"] = max(0, min(hi[0] // 1_000_000_000, 2**32 - 1))
    rows = store.backend.query(
        f"SELECT {KEY_COLS}, flow FROM {store.t('flows')} WHERE {' AND '.join(conds)} "
        f"ORDER BY {KEY_COLS} LIMIT 1 BY {schema.DEDUP_BY}",
        params,
        binary=(4,),
    )
    return [(_key(r), bytes(r[4])) for r in rows]


def fetch_keys(
    store: Store, sel: FlowSelection, keys: list[Key], fetch_rows: int = 2000
) -> Iterator[list[tuple[Key, bytes]]]:
    """The flows of ``keys`` (ascending or descending, as given), in that order, in
    chunks. A flow stored after the key scan that falls inside a chunk's range is
    returned too (in order)."""
    if not keys:
        return
    desc = len(keys) > 1 and keys[0] > keys[-1]
    for i in range(0, len(keys), fetch_rows):
        chunk = keys[i : i + fetch_rows]
        lo, hi = (chunk[-1], chunk[0]) if desc else (chunk[0], chunk[-1])
        rows = fetch_range(store, sel, lo, hi)
        if desc:
            rows.reverse()
        yield rows


def iter_flows(
    store: Store,
    sel: FlowSelection,
    *,
    start: Key | None = None,
    inclusive: bool = False,
    limit: int | None = None,
    descending: bool = False,
    scan_rows: int = 20_000,
    fetch_rows: int = 2000,
) -> Iterator[list[tuple[Key, bytes]]]:
    """Selected flows in key order (newest first with ``descending``), in chunks,
    at most ``limit`` of them."""
    sent = 0
    cursor, incl = start, inclusive
    while limit is None or sent < limit:
        n = scan_rows if limit is None else min(scan_rows, limit - sent)
        keys = scan_keys(store, sel, limit=n, start=cursor, inclusive=incl, descending=descending)
        if not keys:
            return
        for chunk in fetch_keys(store, sel, keys, fetch_rows):
            if limit is not None and sent + len(chunk) > limit:
                chunk = chunk[: limit - sent]
            if chunk:
                sent += len(chunk)
                yield chunk
        cursor, incl = keys[-1], False
        if len(keys) < n:
            return


def nth_newest(store: Store, sel: FlowSelection, n: int) -> Key | None:
    """The key of the n-th newest selected flow (n >= 1), or None when fewer exist."""
    conds, params = sel.conditions()
    where = " AND ".join(conds) if conds else "1"
    rows = store.backend.query(
        f"SELECT {KEY_COLS} FROM {store.t('flows')} WHERE {where} "
        f"ORDER BY time_ns DESC, collector_id DESC, boot_id DESC, seq DESC "
        f"LIMIT 1 BY {schema.DEDUP_BY} LIMIT {int(n) - 1}, 1",
        params,
    )
    return _key(rows[0]) if rows else None


def stored_boot_positions(store: Store) -> dict[BootKey, int]:
    """Per collector boot, the highest flow sequence of any batch the store has a
    marker for (begun, reconciled or committed): an upper bound of what is stored."""
    rows = store.backend.query(
        f"SELECT collector_id, boot_id, max(last_seq) FROM {store.t('ingest_batches')} "
        f"GROUP BY collector_id, boot_id"
    )
    return {(str(c), int(b)): int(s) for c, b, s in rows}
