"""Blocking reads of the store for resumable streams (run them in a store thread).

Everything a resumable stream needs comes from three of the store's tables:

- ``ingest_positions``: per collector boot, the highest batch sequence stored with
  no gap before it (the store's own *acked* position). Only batches up to it are
  read, so a stream never moves past a batch that is still missing or half written
  (a relay that crashed mid-write, a collector that will resend it).
- ``ingest_batches``: per batch, its flow sequence range, flow count, time range
  and the losses the collector reported with it (committed markers only).
- ``flows``: the serialized flows, read by (collector, boot, sequence range), with
  the batch's time range bounding the scan (the table is sorted by hour first).

Works the same on chDB and on clickhouse-server 18.16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay.store import Store, schema

BootKey = tuple[str, int]


@dataclass(frozen=True)
class Marker:
    """One committed batch of a collector boot."""

    batch_seq: int
    first_seq: int  # 0 for a batch without flows (loss reports only)
    last_seq: int
    flows: int
    min_time: int  # seconds
    max_time: int
    node_name: str
    lost_events: tuple[bytes, ...] = ()


def acked_batches(store: Store) -> dict[BootKey, int]:
    """Per collector boot: the highest batch sequence stored with no gap before it."""
    rows = store.backend.query(
        f"SELECT collector_id, boot_id, max(acked_seq) FROM {store.t('ingest_positions')} "
        f"GROUP BY collector_id, boot_id"
    )
    return {(str(c), int(b)): int(a) for c, b, a in rows if int(a) > 0}


def committed_markers(
    store: Store,
    collector_id: str,
    boot_id: int,
    lo: int,
    hi: int,
    *,
    limit: int = 256,
    after_seq: int | None = None,
) -> list[Marker]:
    """Committed batches of a boot with lo <= batch_seq <= hi, in batch order, at most
    ``limit``. With ``after_seq``, only batches holding a flow sequence above it."""
    having = f"max(state) = {schema.MARKER_COMMITTED}"
    params: dict[str, Any] = {"c": collector_id, "b": boot_id, "lo": lo, "hi": hi}
    if after_seq is not None:
        having += " AND last > {after:UInt64}"
        params["after"] = after_seq
    rows = store.backend.query(
        f"SELECT batch_seq, argMax(first_seq, state) AS first, argMax(last_seq, state) AS "
        f"last, argMax(flows, state), toUInt32(argMax(min_time, state)), "
        f"toUInt32(argMax(max_time, state)), argMax(node_name, state), "
        f"argMax(lost_events, state) FROM {store.t('ingest_batches')} "
        f"WHERE collector_id = {{c:String}} AND boot_id = {{b:UInt64}} AND "
        f"batch_seq >= {{lo:UInt64}} AND batch_seq <= {{hi:UInt64}} "
        f"GROUP BY batch_seq HAVING {having} ORDER BY batch_seq LIMIT {int(limit)}",
        params,
        binary=(7,),
    )
    out = []
    for bs, first, last, n, tmin, tmax, node, lost in rows:
        out.append(
            Marker(
                batch_seq=int(bs),
                first_seq=int(first),
                last_seq=int(last),
                flows=int(n),
                min_time=int(tmin),
                max_time=int(tmax),
                node_name=str(node),
                lost_events=tuple(bytes(x) for x in (lost or ())),
            )
        )
    return out


def fetch_flows(
    store: Store,
    collector_id: str,
    boot_id: int,
    after_seq: int,
    upto_seq: int,
    min_time: int,
    max_time: int,
) -> list[tuple[int, int, bytes]]:
    """(seq, time_ns, serialized flow) of a boot's stored flows with after_seq < seq
    <= upto_seq and flow times within [min_time, max_time] seconds, each once, in
    sequence order."""
    rows = store.backend.query(
        f"SELECT seq, time_ns, flow FROM {store.t('flows')} WHERE "
        f"time >= {{tlo:DateTime}} AND time <= {{thi:DateTime}} AND "
        f"collector_id = {{c:String}} AND boot_id = {{b:UInt64}} AND "
        f"seq > {{lo:UInt64}} AND seq <= {{hi:UInt64}} "
        f"ORDER BY seq LIMIT 1 BY seq",
        {
            "c": collector_id,
            "b": boot_id,
            "lo": after_seq,
            "hi": upto_seq,
            "tlo": max(0, min_time),
            "thi": min(max_time, 2**32 - 1),
        },
        binary=(2,),
    )
    return [(int(s), int(t), bytes(f)) for s, t, f in rows]
