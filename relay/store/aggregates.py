"""Aggregations for the relay's query API (service map, rates, drops), nodes and
namespaces, computed in ClickHouse: from the rollups (``flows_minute``,
``flows_hour``) for anything over a time window, from raw flows only for the few rows
that need per-flow detail (the policies of the top dropped pairs, exact first and last
times, the last flow of a pair).

Workloads are grouped the same way everywhere (the service map, drop pairs, and
SearchFlows's workload ids): an endpoint with a namespace is ``"<namespace>/<name>"``
where name is its workload (owner) or, without one, its pod; an endpoint without a
namespace is a reserved entity ``"reserved:<entity>"`` named from its identity (host,
world, remote-node, ...; CIDR identities are world; 0 is unknown). ``endpoint_sql``
builds these expressions over raw flows or over a rollup (where the pod column is
``*_unowned_pod``), so both agree exactly.

All values reach SQL as typed parameters; identifiers come from constants here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.store import schema
from relay.store.store import Store

RESERVED_ENTITIES: dict[int, str] = {
    1: "host",
    2: "world",
    3: "unmanaged",
    4: "health",
    5: "init",
    6: "remote-node",
    7: "kube-apiserver",
}
CIDR_IDENTITY_BASE = 1 << 24
HOST_IDENTITIES = (1, 6)  # host, remote-node
VERDICT_FORWARDED = 1
VERDICT_DROPPED = 2
REPLY_TRUE = 2  # the is_reply column: 0 unknown, 1 false, 2 true
DNS_PORT = 53

MINUTE_WINDOW_MAX_S = 24 * 3600  # wider windows read the hour rollup


def entity_name(identity: int) -> str:
    if identity in RESERVED_ENTITIES:
        return RESERVED_ENTITIES[identity]
    if identity >= CIDR_IDENTITY_BASE:
        return "world"
    if identity == 0:
        return "unknown"
    return f"identity-{identity}"


def _entity_sql(idcol: str) -> str:
    arms = [f"{idcol} = {n}, '{name}'" for n, name in RESERVED_ENTITIES.items()]
    arms.append(f"{idcol} >= {CIDR_IDENTITY_BASE}, 'world'")
    arms.append(f"{idcol} = 0, 'unknown'")
    return f"multiIf({', '.join(arms)}, concat('identity-', toString({idcol})))"


@dataclass(frozen=True)
class EndpointSQL:
    id: str
    namespace: str
    name: str
    kind: str
    identity: str


def endpoint_sql(side: str, *, rollup: bool) -> EndpointSQL:
    """Expressions of one end ("src" or "dst") of a flow: workload id, namespace, name,
    kind and identity, over a rollup (``rollup=True``) or raw flows."""
    if side not in ("src", "dst"):
        raise ValueError(f"side must be src or dst, not {side!r}")
    ns, wl, kind, ident = (
        f"{side}_namespace",
        f"{side}_workload",
        f"{side}_workload_kind",
        f"{side}_identity",
    )
    pod = f"{side}_unowned_pod" if rollup else f"{side}_pod"
    entity = _entity_sql(ident)
    name = f"if({wl} != '', {wl}, {pod})"
    return EndpointSQL(
        id=f"if({ns} = '', concat('reserved:', {entity}), concat({ns}, '/', {name}))",
        namespace=ns,
        name=f"if({ns} = '', {entity}, {name})",
        kind=f"if({ns} = '', 'reserved', if({wl} != '', {kind}, 'Pod'))",
        identity=ident,
    )


def workload_id_condition(side: str, workload_id: str, prefix: str) -> tuple[str, dict[str, Any]]:
    """A condition over raw flows: this end's workload id equals ``workload_id`` (with a
    namespace condition the primary key can use)."""
    e = endpoint_sql(side, rollup=False)
    params: dict[str, Any] = {f"{prefix}id": workload_id}
    if workload_id.startswith("reserved:"):
        hint = f"{e.namespace} = ''"
    else:
        # every namespace the id could start with (namespaces never hold "/" in
        # Kubernetes, but stored flows may: stay exact for them too)
        parts = workload_id.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts))]
        if not candidates:
            return "0", {}
        params[f"{prefix}ns"] = candidates
        hint = f"{e.namespace} IN {{{prefix}ns:Set(String)}}"
    return f"{hint} AND {e.id} = {{{prefix}id:String}}", params


@dataclass(frozen=True)
class Window:
    since: int  # seconds, inclusive
    until: int  # seconds, exclusive for buckets

    @property
    def seconds(self) -> int:
        return max(1, self.until - self.since)

    def resolution(self) -> str:
        return "minute" if self.seconds <= MINUTE_WINDOW_MAX_S else "hour"


@dataclass
class Hides:
    dns: bool = False
    host: bool = False
    monitoring: bool = False
    world: bool = False


def _rollup_where(
    w: Window, resolution: str, namespaces: Sequence[str], params: dict[str, Any]
) -> tuple[str, str]:
    """(table, where) for the buckets of a window and a namespace set (either end)."""
    table, fn, _ = schema.ROLLUPS[resolution]
    params["w_since"] = max(0, w.since)
    params["w_until"] = max(0, w.until)
    conds = [
        f"bucket >= {fn}(toDateTime({{w_since:DateTime}}))",
        "bucket < {w_until:DateTime}",
    ]
    if namespaces:
        params["w_ns"] = list(namespaces)
        conds.append("(src_namespace IN {w_ns:Set(String)} OR dst_namespace IN {w_ns:Set(String)})")
    return table, " AND ".join(conds)


def _hide_conditions(h: Hides) -> list[str]:
    out = []
    if h.dns:
        out.append(f"dst_port != {DNS_PORT}")
    if h.host:
        ids = ", ".join(str(i) for i in HOST_IDENTITIES)
        out.append(f"src_identity NOT IN ({ids}) AND dst_identity NOT IN ({ids})")
    if h.world:
        out.append(
            f"src_identity != 2 AND src_identity < {CIDR_IDENTITY_BASE} AND "
            f"dst_identity != 2 AND dst_identity < {CIDR_IDENTITY_BASE}"
        )
    if h.monitoring:
        out.append(
            "positionCaseInsensitive(src_namespace, 'monitoring') = 0 AND "
            "positionCaseInsensitive(dst_namespace, 'monitoring') = 0"
        )
    return out


# --- service map ------------------------------------------------------------------


@dataclass
class EdgeRow:
    source: dict[str, Any]
    destination: dict[str, Any]
    protocol: str
    port: int
    verdict: int
    flows: int
    packets: int
    bytes: int
    drop_reasons: list[int]


def _ep_selects(side: str, rollup: bool, alias: str) -> list[str]:
    e = endpoint_sql(side, rollup=rollup)
    return [
        f"{e.id} AS {alias}_id",
        f"any({e.namespace}) AS {alias}_ns",
        f"any({e.name}) AS {alias}_name",
        f"any({e.kind}) AS {alias}_kind",
        f"any({e.identity}) AS {alias}_identity",
    ]


def _ep_dict(row: dict[str, Any], alias: str) -> dict[str, Any]:
    return {
        "id": row[f"{alias}_id"],
        "namespace": row[f"{alias}_ns"],
        "name": row[f"{alias}_name"],
        "kind": row[f"{alias}_kind"],
        "identity": int(row[f"{alias}_identity"]),
    }


def service_map(
    store: Store,
    w: Window,
    namespaces: Sequence[str] = (),
    hides: Hides | None = None,
    max_edges: int = 500,
) -> tuple[list[EdgeRow], bool]:
    """Workload-to-workload edges (requests only, not replies) by protocol, port and
    verdict, with flow, packet and byte counts and the drop reasons seen; the
    ``max_edges`` busiest, and whether more existed."""
    params: dict[str, Any] = {}
    table, where = _rollup_where(w, w.resolution(), namespaces, params)
    conds = [where, f"is_reply != {REPLY_TRUE}", *_hide_conditions(hides or Hides())]
    sel = [
        *_ep_selects("src", True, "s"),
        *_ep_selects("dst", True, "d"),
        "protocol",
        "dst_port",
        "verdict",
        "sum(flows) AS f",
        "sum(packets) AS p",
        "sum(bytes) AS b",
        "groupUniqArrayIf(drop_reason, drop_reason != 0) AS reasons",
    ]
    names = [
        "s_id", "s_ns", "s_name", "s_kind", "s_identity",
        "d_id", "d_ns", "d_name", "d_kind", "d_identity",
        "protocol", "dst_port", "verdict", "f", "p", "b", "reasons",
    ]  # fmt: skip
    rows = store.backend.query(
        f"SELECT {', '.join(sel)} FROM {store.t(table)} WHERE {' AND '.join(conds)} "
        f"GROUP BY s_id, d_id, protocol, dst_port, verdict "
        f"HAVING f > 0 "
        f"ORDER BY f DESC, s_id, d_id, protocol, dst_port, verdict LIMIT {int(max_edges) + 1}",
        params,
    )
    out = []
    for r in rows[:max_edges]:
        d = dict(zip(names, r, strict=True))
        out.append(
            EdgeRow(
                source=_ep_dict(d, "s"),
                destination=_ep_dict(d, "d"),
                protocol=str(d["protocol"]),
                port=int(d["dst_port"]),
                verdict=int(d["verdict"]),
                flows=int(d["f"]),
                packets=int(d["p"]),
                bytes=int(d["b"]),
                drop_reasons=sorted(int(x) for x in d["reasons"]),
            )
        )
    return out, len(rows) > max_edges


# --- rates ---------------------------------------------------------------------------


def flow_rates(
    store: Store, w: Window, step: int, namespaces: Sequence[str] = (), *, raw: bool = False
) -> list[tuple[int, int, int]]:
    """(bucket start, verdict, flows) per ``step`` seconds (buckets aligned to
    multiples of step), from the rollup of the window, or from raw flows (``raw``,
    for steps under a minute)."""
    params: dict[str, Any] = {"step": int(step)}
    if raw:
        params.update(w_since=max(0, w.since), w_until=max(0, w.until))
        conds = ["time >= {w_since:DateTime}", "time < {w_until:DateTime}"]
        if namespaces:
            params["w_ns"] = list(namespaces)
            conds.append(
                "(src_namespace IN {w_ns:Set(String)} OR dst_namespace IN {w_ns:Set(String)})"
            )
        src = (
            f"(SELECT time, verdict FROM {store.t('flows')} WHERE {' AND '.join(conds)} "
            f"LIMIT 1 BY {schema.DEDUP_BY})"
        )
        sql = (
            "SELECT intDiv(toUInt32(time), {step:UInt32}) * {step:UInt32} AS t, verdict, "
            f"toInt64(count()) AS f FROM {src} GROUP BY t, verdict ORDER BY t, verdict"
        )
    else:
        table, where = _rollup_where(w, w.resolution(), namespaces, params)
        sql = (
            "SELECT intDiv(toUInt32(bucket), {step:UInt32}) * {step:UInt32} AS t, verdict, "
            f"sum(flows) AS f FROM {store.t(table)} WHERE {where} GROUP BY t, verdict "
            "HAVING f > 0 ORDER BY t, verdict"
        )
    return [(int(t), int(v), int(f)) for t, v, f in store.backend.query(sql, params)]


# --- drops ---------------------------------------------------------------------------


@dataclass
class DropPairRow:
    source: dict[str, Any]
    destination: dict[str, Any]
    protocol: str
    port: int
    reason: int
    drops: int
    first_bucket: int
    last_bucket: int
    # filled from raw flows by pair_details
    policies: list[str] = field(default_factory=list)
    first_ns: int = 0
    last_ns: int = 0
    last_flow: bytes = b""

    @property
    def base(self) -> tuple[str, str, str, int]:
        return (self.source["id"], self.destination["id"], self.protocol, self.port)


def drop_reasons(
    store: Store, w: Window, step: int, namespaces: Sequence[str] = ()
) -> list[tuple[int, int, int]]:
    """(bucket start, drop reason, drops) per ``step`` seconds (every dropped flow)."""
    params: dict[str, Any] = {"step": int(step)}
    table, where = _rollup_where(w, w.resolution(), namespaces, params)
    rows = store.backend.query(
        "SELECT intDiv(toUInt32(bucket), {step:UInt32}) * {step:UInt32} AS t, drop_reason, "
        f"sum(flows) AS f FROM {store.t(table)} WHERE {where} AND verdict = {VERDICT_DROPPED} "
        "GROUP BY t, drop_reason HAVING f > 0 ORDER BY t, drop_reason",
        params,
    )
    return [(int(t), int(r), int(f)) for t, r, f in rows]


_PAIR_NAMES = [
    "s_id", "s_ns", "s_name", "s_kind", "s_identity",
    "d_id", "d_ns", "d_name", "d_kind", "d_identity",
    "protocol", "dst_port", "drop_reason", "f", "first", "last",
]  # fmt: skip


def _pairs_query(
    store: Store,
    w: Window,
    namespaces: Sequence[str],
    *,
    limit: int,
    first_from: int | None = None,
) -> list[DropPairRow]:
    params: dict[str, Any] = {}
    table, where = _rollup_where(w, w.resolution(), namespaces, params)
    sel = [
        *_ep_selects("src", True, "s"),
        *_ep_selects("dst", True, "d"),
        "protocol",
        "dst_port",
        "drop_reason",
        "sum(flows) AS f",
        "toUInt32(min(bucket)) AS first",
        "toUInt32(max(bucket)) AS last",
    ]
    having = "f > 0"
    if first_from is not None:
        params["first_from"] = max(0, first_from)
        having += " AND first >= toUInt32({first_from:DateTime})"
    rows = store.backend.query(
        f"SELECT {', '.join(sel)} FROM {store.t(table)} WHERE {where} "
        f"AND verdict = {VERDICT_DROPPED} AND is_reply != {REPLY_TRUE} "
        f"GROUP BY s_id, d_id, protocol, dst_port, drop_reason HAVING {having} "
        f"ORDER BY f DESC, s_id, d_id, protocol, dst_port, drop_reason LIMIT {int(limit)}",
        params,
    )
    out = []
    for r in rows:
        d = dict(zip(_PAIR_NAMES, r, strict=True))
        out.append(
            DropPairRow(
                source=_ep_dict(d, "s"),
                destination=_ep_dict(d, "d"),
                protocol=str(d["protocol"]),
                port=int(d["dst_port"]),
                reason=int(d["drop_reason"]),
                drops=int(d["f"]),
                first_bucket=int(d["first"]),
                last_bucket=int(d["last"]),
            )
        )
    return out


def _pair_key_sql() -> str:
    """One string per pair base over raw flows: source id, destination id, protocol
    and port, each length-prefixed (so no value can pass for two parts)."""
    s, d = endpoint_sql("src", rollup=False), endpoint_sql("dst", rollup=False)
    parts = [s.id, d.id, "protocol", "toString(dst_port)"]
    return "concat(" + ", '|', ".join(f"toString(length({p})), ':', {p}" for p in parts) + ")"


def pair_key(base: tuple[str, str, str, int]) -> str:
    """``_pair_key_sql`` of a base, computed here (lengths in UTF-8 bytes)."""
    return "|".join(f"{len(str(p).encode())}:{p}" for p in base)


def _namespace_of(workload_id: str) -> list[str]:
    if workload_id.startswith("reserved:"):
        return [""]
    parts = workload_id.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _pairs_condition(
    bases: Sequence[tuple[str, str, str, int]], params: dict[str, Any], prefix: str
) -> str:
    """Raw flows of these pair bases: namespaces first (the primary key prunes by
    them), then the pair key."""
    params[f"{prefix}sns"] = sorted({n for b in bases for n in _namespace_of(b[0])}) or [""]
    params[f"{prefix}dns"] = sorted({n for b in bases for n in _namespace_of(b[1])}) or [""]
    params[f"{prefix}keys"] = sorted({pair_key(b) for b in bases})
    return (
        f"src_namespace IN {{{prefix}sns:Set(String)}} AND "
        f"dst_namespace IN {{{prefix}dns:Set(String)}} AND "
        f"{_pair_key_sql()} IN {{{prefix}keys:Set(String)}}"
    )


def _raw_window(w: Window) -> str:
    """Raw flows in exactly the rollup buckets of the window (w_since, w_until params)."""
    fn = schema.ROLLUPS[w.resolution()][1]
    return f"time >= {fn}(toDateTime({{w_since:DateTime}})) AND {fn}(time) < {{w_until:DateTime}}"


def _position_sql() -> str:
    return "concat(collector_id, '/', toString(boot_id), '/', toString(seq))"


def top_dropped_pairs(
    store: Store, w: Window, namespaces: Sequence[str] = (), limit: int = 20
) -> list[DropPairRow]:
    """The pairs (source, destination, protocol, port, reason) with the most dropped
    flows (requests, not replies) in the window."""
    return _pairs_query(store, w, namespaces, limit=limit)


def pair_details(store: Store, w: Window, pairs: Sequence[DropPairRow]) -> None:
    """Fill, from raw dropped flows in the window, each pair's denying policies,
    exact first and last times and its last flow (serialized). Two reads: the
    aggregates with the last flow's position, then those few flows."""
    if not pairs:
        return
    params: dict[str, Any] = {"w_since": max(0, w.since), "w_until": max(0, w.until)}
    bases = list(dict.fromkeys(p.base for p in pairs))
    cond = _pairs_condition(bases, params, "pd")
    s, d = endpoint_sql("src", rollup=False), endpoint_sql("dst", rollup=False)
    rows = store.backend.query(
        f"SELECT {s.id} AS sid, {d.id} AS did, protocol, dst_port, drop_reason, "
        f"groupUniqArrayArray(policies_denied), min(time_ns), max(time_ns), "
        f"argMax({_position_sql()}, time_ns) FROM {store.t('flows')} "
        f"WHERE {_raw_window(w)} AND verdict = {VERDICT_DROPPED} "
        f"AND is_reply != {REPLY_TRUE} AND {cond} "
        f"GROUP BY sid, did, protocol, dst_port, drop_reason",
        params,
    )
    by_key: dict[tuple[str, str, str, int, int], list[DropPairRow]] = {}
    for p in pairs:
        by_key.setdefault((*p.base, p.reason), []).append(p)
    last: dict[str, list[DropPairRow]] = {}
    for sid, did, proto, port, reason, policies, lo, hi, pos in rows:
        for p in by_key.get((sid, did, proto, int(port), int(reason)), []):
            p.policies = sorted(str(x) for x in policies if x)
            p.first_ns, p.last_ns = int(lo), int(hi)
            last.setdefault(str(pos), []).append(p)
    if not last:
        return
    times = [p.last_ns for ps in last.values() for p in ps]
    flows = store.backend.query(
        f"SELECT {_position_sql()} AS pos, flow FROM {store.t('flows')} "
        f"WHERE time >= {{lo:DateTime}} AND time <= {{hi:DateTime}} AND "
        f"time_ns IN {{ts:Set(Int64)}} AND pos IN {{ps:Set(String)}} LIMIT 1 BY pos",
        {
            "lo": max(0, min(times) // 10**9),
            "hi": min(2**32 - 1, max(times) // 10**9),
            "ts": sorted(set(times)),
            "ps": sorted(last),
        },
        binary=(1,),
    )
    for pos, blob in flows:
        for p in last.get(str(pos), []):
            p.last_flow = bytes(blob)


def forwarded_first(
    store: Store, w: Window, bases: Sequence[tuple[str, str, str, int]]
) -> dict[tuple[str, str, str, int], int]:
    """For each pair base, the time (ns) of its first forwarded request in the window."""
    if not bases:
        return {}
    params: dict[str, Any] = {"w_since": max(0, w.since), "w_until": max(0, w.until)}
    cond = _pairs_condition(bases, params, "ff")
    s, d = endpoint_sql("src", rollup=False), endpoint_sql("dst", rollup=False)
    rows = store.backend.query(
        f"SELECT {s.id} AS sid, {d.id} AS did, protocol, dst_port, min(time_ns) "
        f"FROM {store.t('flows')} WHERE {_raw_window(w)} AND "
        f"verdict = {VERDICT_FORWARDED} AND is_reply != {REPLY_TRUE} AND {cond} "
        f"GROUP BY sid, did, protocol, dst_port",
        params,
    )
    return {(str(a), str(b), str(c), int(p)): int(t) for a, b, c, p, t in rows}


def new_drop_candidates(
    store: Store, w: Window, recent_from: int, namespaces: Sequence[str] = (), limit: int = 100
) -> list[DropPairRow]:
    """Dropped pairs whose first dropped bucket in the window starts at or after
    ``recent_from`` minus one bucket (exact times are checked from raw flows)."""
    step = schema.ROLLUPS[w.resolution()][2]
    return _pairs_query(store, w, namespaces, limit=limit, first_from=recent_from - step)


# --- nodes, namespaces, status ---------------------------------------------------------


def collector_flow_stats(store: Store, since: int) -> dict[str, tuple[int, int]]:
    """Per collector: (flows stored since ``since``, start of the last bucket with its
    flows: a minute when within the last day, else an hour), from the rollups (the
    hour rollup for the counts, so a week of retention stays a small scan)."""
    counts = store.backend.query(
        f"SELECT collector_id, sum(flows) AS f, toUInt32(max(bucket)) FROM "
        f"{store.t('flows_hour')} WHERE bucket >= toStartOfHour(toDateTime("
        f"{{since:DateTime}})) GROUP BY collector_id HAVING f > 0",
        {"since": max(0, since)},
    )
    recent = store.backend.query(
        f"SELECT collector_id, toUInt32(max(bucket)) FROM {store.t('flows_minute')} "
        f"WHERE bucket >= toStartOfMinute(toDateTime({{day:DateTime}})) AND flows > 0 "
        f"GROUP BY collector_id",
        {"day": max(0, int(time.time()) - 86400)},
    )
    last = {str(c): int(t) for c, t in recent}
    return {str(c): (int(f), max(int(t), last.get(str(c), 0))) for c, f, t in counts}


def recent_namespaces(store: Store, since: int) -> list[str]:
    """Namespaces at either end of flows since ``since`` (seconds)."""
    rows = store.backend.query(
        f"SELECT DISTINCT ns FROM (SELECT arrayJoin([src_namespace, dst_namespace]) AS ns "
        f"FROM {store.t('flows_minute')} WHERE bucket >= toStartOfMinute(toDateTime("
        f"{{since:DateTime}}))) WHERE ns != '' ORDER BY ns",
        {"since": max(0, since)},
    )
    return [str(r[0]) for r in rows]


Endpoint = tuple[str, str] | str  # (namespace, pod) or an address


def _endpoint_condition(side: str, e: Endpoint, params: dict[str, Any]) -> str:
    if isinstance(e, tuple):
        params[f"{side}_ns"], params[f"{side}_pod"] = e
        return f"{side}_namespace = {{{side}_ns:String}} AND {side}_pod = {{{side}_pod:String}}"
    params[f"{side}_ip"] = e
    return f"{side}_ip = {{{side}_ip:String}}"


def last_flow_between(
    store: Store,
    src: Endpoint,
    dst: Endpoint,
    port: int | None,
    protocols: Sequence[str],
    since: int | None = None,
) -> bytes | None:
    """The newest flow (a request, not a reply) from src to dst (a pod as (namespace,
    name), or an address) on one of ``protocols`` (flow column values: tcp, udp,
    sctp, icmpv4, icmpv6) and ``port`` (None: any), serialized; None when none is
    stored."""
    params: dict[str, Any] = {
        "protos": list(protocols),
        "since": max(0, since if since is not None else int(time.time()) - 400 * 86400),
    }
    conds = [
        "time >= {since:DateTime}",
        _endpoint_condition("src", src, params),
        _endpoint_condition("dst", dst, params),
        "protocol IN {protos:Set(String)}",
        f"is_reply != {REPLY_TRUE}",
    ]
    if port is not None:
        params["port"] = port
        conds.append("dst_port = {port:UInt16}")
    rows = store.backend.query(
        f"SELECT flow FROM {store.t('flows')} WHERE {' AND '.join(conds)} "
        f"ORDER BY time_ns DESC LIMIT 1",
        params,
        binary=(0,),
    )
    return bytes(rows[0][0]) if rows else None


def stored_flows_total(store: Store, since: int) -> int:
    rows = store.backend.query(
        f"SELECT sum(flows) FROM {store.t('flows_hour')} WHERE bucket >= "
        f"toStartOfHour(toDateTime({{since:DateTime}}))",
        {"since": max(0, since)},
    )
    return int(rows[0][0] or 0) if rows else 0
