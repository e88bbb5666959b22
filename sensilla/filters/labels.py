"""source_label / destination_label: label selectors (Hubble's LabelsFilter).

Each value is a Kubernetes label selector with optional Cilium sources (see
:mod:`sensilla.filters.selector`); a flow matches when any selector selects the
endpoint's labels.

SQL runs on ``src_labels``/``dst_labels``, which hold Cilium's canonical label strings
(``source:key`` or ``source:key=value``, see :func:`selector.canonical_label`); the key
lookup is ``arrayFirst`` over the array, so "first label with the key" holds in SQL too.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.errors import FilterError
from sensilla.filters.selector import (
    Label,
    Requirement,
    parse_label,
    parse_selector,
    selector_matches,
)
from sensilla.filters.sql import Params, all_of, any_of, col
from sensilla.protos import flow_pb2

FIELDS = ("source_label", "destination_label")

# An integer Go's strconv.ParseInt(v, 10, 64) accepts (sign, digits, in range).
_INT_SHAPE = "match({v}, '^[+-]?[0-9]+$')"
_MAGNITUDE = "replaceRegexpOne({v}, '^[+-]?0*', '')"


def _int64_ok(v: str) -> str:
    m = _MAGNITUDE.format(v=v)
    return all_of(
        [
            _INT_SHAPE.format(v=v),
            f"(length({m}) < 19 OR (length({m}) = 19 AND ({m} <= '9223372036854775807' OR "
            f"(startsWith({v}, '-') AND {m} = '9223372036854775808'))))",
        ]
    )


def _requirement_sql(req: Requirement, labels_col: str, params: Params) -> str:
    if req.source == "any":
        rest = "substring(x, position(x, ':') + 1)"
        key_cond = (
            f"({rest} = {params.add('String', req.key)} OR "
            f"startsWith({rest}, {params.add('String', req.key + '=')}))"
        )
        first = f"arrayFirst(x -> {key_cond}, {labels_col})"
        value = (
            f"substring({first}, position({first}, ':') + {params.add('UInt32', len(req.key) + 2)})"
        )
    else:
        prefix = f"{req.source}:{req.key}"
        key_cond = (
            f"(x = {params.add('String', prefix)} OR "
            f"startsWith(x, {params.add('String', prefix + '=')}))"
        )
        first = f"arrayFirst(x -> {key_cond}, {labels_col})"
        value = f"substring({first}, {params.add('UInt32', len(prefix.encode()) + 2)})"
    has = f"arrayExists(x -> {key_cond}, {labels_col})"
    op = req.op
    if op == "exists":
        return has
    if op == "!":
        return f"NOT {has}"
    if op in ("in", "=", "==", "notin", "!="):
        holders = ", ".join(params.add("String", v) for v in req.values)
        if op in ("in", "=", "=="):
            return all_of([has, f"{value} IN ({holders})"])
        return any_of([f"NOT {has}", f"{value} NOT IN ({holders})"])
    threshold = params.add("Int64", int(req.values[0]))
    cmp = ">" if op == "gt" else "<"
    return all_of([has, _int64_ok(value), f"toInt64OrZero({value}) {cmp} {threshold}"])


def _compile(values: list[str], field: str, path: str, side: str, params: Params) -> Clause:
    selectors = []
    for i, value in enumerate(values):
        try:
            selectors.append(parse_selector(value))
        except ValueError as exc:
            raise FilterError(
                f"{path}.{field}[{i}]", f"invalid label selector {value!r}: {exc}"
            ) from None
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        ep = flow.source if source else flow.destination
        labels: list[Label] = [parse_label(s) for s in ep.labels]
        return any(selector_matches(sel, labels) for sel in selectors)

    labels_col = col(f"{side}_labels")
    sql = any_of(
        [all_of([_requirement_sql(r, labels_col, params) for r in sel]) for sel in selectors]
    )
    return Clause(field, match, sql)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_label:
        out.append(_compile(list(ff.source_label), "source_label", path, "src", params))
    if ff.destination_label:
        out.append(_compile(list(ff.destination_label), "destination_label", path, "dst", params))
    return out
