"""Compile Hubble FlowFilters into one predicate and one SQL condition.

Semantics (Hubble's filters.Apply): within one FlowFilter every set field must match
(AND); within a field any value may match (OR); a flow passes when the whitelist is
empty or any whitelist filter matches, and no blacklist filter matches. An empty
FlowFilter matches every flow.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf import unknown_fields

from sensilla.filters import (
    drop_reason,
    event_type,
    identity,
    interface,
    ip,
    ip_version,
    labels,
    node_name,
    pod,
    port,
    protocol,
    reply,
    service,
    tcp_flags,
    traffic_direction,
    unsupported,
    uuid,
    verdict,
    workload,
)
from sensilla.filters.base import Clause
from sensilla.filters.errors import FilterError
from sensilla.filters.sql import Params, all_of, any_of, render
from sensilla.protos import flow_pb2, observer_pb2

# One module per filter kind, in Hubble's DefaultFilters order.
KINDS: tuple[ModuleType, ...] = (
    uuid,
    event_type,
    verdict,
    drop_reason,
    reply,
    identity,
    protocol,
    ip,
    pod,
    workload,
    service,
    labels,
    port,
    tcp_flags,
    node_name,
    ip_version,
    traffic_direction,
    interface,
    unsupported,
)

_HANDLED = frozenset(f for kind in KINDS for f in kind.FIELDS)
_ALL_FIELDS = frozenset(f.name for f in flow_pb2.FlowFilter.DESCRIPTOR.fields)
assert _HANDLED == _ALL_FIELDS, sorted(_ALL_FIELDS ^ _HANDLED)


@dataclass(frozen=True)
class CompiledFlowFilter:
    """One FlowFilter: the AND of its clauses."""

    clauses: tuple[Clause, ...]

    def matches(self, flow: flow_pb2.Flow) -> bool:
        return all(clause.match(flow) for clause in self.clauses)

    @property
    def sql_text(self) -> str:
        return all_of([c.sql for c in self.clauses])


@dataclass(frozen=True)
class CompiledFilter:
    """A request's whitelist and blacklist, compiled once.

    ``matches(flow)`` is the predicate (live tails, the collector's ring);
    ``sql(style)`` the same condition as a WHERE expression over FLOW_COLUMNS.
    """

    whitelist: tuple[CompiledFlowFilter, ...]
    blacklist: tuple[CompiledFlowFilter, ...]
    where_text: str
    params: dict[str, tuple[str, Any]]

    def matches(self, flow: flow_pb2.Flow) -> bool:
        if self.whitelist and not any(f.matches(flow) for f in self.whitelist):
            return False
        return not any(f.matches(flow) for f in self.blacklist)

    @property
    def is_trivial(self) -> bool:
        """True when every flow passes (no filters at all)."""
        return not self.whitelist and not self.blacklist

    def sql(self, style: str = "native") -> tuple[str, dict[str, Any]]:
        """(where_text, params) for a driver: style "native" ({name:Type} placeholders,
        Python values), "chdb" (same text, values as chDB's params strings) or
        "pyformat" (%(name)s placeholders for clickhouse-driver)."""
        return render(self.where_text, self.params, style)

    def param_types(self) -> dict[str, str]:
        """ClickHouse type of each parameter."""
        return {name: t for name, (t, _v) in self.params.items()}


def _check_unknown_fields(ff: flow_pb2.FlowFilter, path: str) -> None:
    unknown = unknown_fields.UnknownFieldSet(ff)
    if len(unknown):
        numbers = sorted({unknown[i].field_number for i in range(len(unknown))})
        raise FilterError(path, f"unknown FlowFilter field number(s) {numbers}: not supported")


def compile_flow_filter(ff: flow_pb2.FlowFilter, path: str, params: Params) -> CompiledFlowFilter:
    """Compile one FlowFilter; errors name fields under ``path`` (e.g. "whitelist[0]")."""
    _check_unknown_fields(ff, path)
    clauses: list[Clause] = []
    for kind in KINDS:
        clauses.extend(kind.compile(ff, path, params))
    return CompiledFlowFilter(tuple(clauses))


def compile_request_filters(
    whitelist: Iterable[flow_pb2.FlowFilter] = (),
    blacklist: Iterable[flow_pb2.FlowFilter] = (),
    *,
    param_prefix: str = "flt_",
) -> CompiledFilter:
    """Compile a request's whitelist and blacklist. Raises :class:`FilterError` naming
    the offending value (``whitelist[0].source_ip[1]: invalid CIDR ...``)."""
    params = Params(prefix=param_prefix)
    wl = tuple(compile_flow_filter(ff, f"whitelist[{i}]", params) for i, ff in enumerate(whitelist))
    bl = tuple(compile_flow_filter(ff, f"blacklist[{i}]", params) for i, ff in enumerate(blacklist))
    parts = []
    if wl:
        parts.append(any_of([f.sql_text for f in wl]))
    if bl:
        parts.append(f"NOT ({any_of([f.sql_text for f in bl])})")
    where = all_of(parts) if parts else "1"
    return CompiledFilter(wl, bl, where, dict(params.values))


def compile_request(
    request: observer_pb2.GetFlowsRequest, *, param_prefix: str = "flt_"
) -> CompiledFilter:
    """The filters of a GetFlowsRequest."""
    return compile_request_filters(request.whitelist, request.blacklist, param_prefix=param_prefix)


def apply(compiled: CompiledFilter, flows: Sequence[flow_pb2.Flow]) -> list[flow_pb2.Flow]:
    """The flows that pass, in order (convenience for rings and tests)."""
    return [f for f in flows if compiled.matches(f)]
