"""Hubble's flow-filter semantics, compiled once into a predicate and a SQL condition.

Used by the collector's local Observer (predicates over its ring), the relay's Observer
(SQL over the store for history, predicates for the live tail) and the observe command.
See docs/filters.md.

    compiled = compile_request_filters(request.whitelist, request.blacklist)
    compiled.matches(flow)            # -> bool
    where, params = compiled.sql()    # -> ("(verdict = {flt_0:UInt8} ...)", {"flt_0": 2})
    flow_row(flow)                    # -> {column: value} for every FLOW_COLUMNS column
"""

from sensilla.filters.columns import FLOW_COLUMNS, TCP_FLAG_BITS
from sensilla.filters.compiler import (
    CompiledFilter,
    CompiledFlowFilter,
    compile_flow_filter,
    compile_request,
    compile_request_filters,
)
from sensilla.filters.errors import FilterError
from sensilla.filters.row import flow_extension, flow_row
from sensilla.filters.sql import escape_chdb

__all__ = [
    "FLOW_COLUMNS",
    "TCP_FLAG_BITS",
    "CompiledFilter",
    "CompiledFlowFilter",
    "FilterError",
    "compile_flow_filter",
    "compile_request",
    "compile_request_filters",
    "escape_chdb",
    "flow_extension",
    "flow_row",
]
