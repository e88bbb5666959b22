"""Flows to column values for the `flows` table.

The values come from ``sensilla.filters.flow_row`` (the one conversion shared with the
filter module, so the SQL conditions it compiles read exactly what was stored); the
serialized flow is added as the ``flow`` column so every flow can be re-emitted
losslessly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sensilla.filters import flow_extension, flow_row
from sensilla.filters.columns import FLOW_COLUMNS
from sensilla.protos import extensions_pb2, flow_pb2

__all__ = ["flow_extension", "flows_to_columns", "set_flow_extension"]

FLOW_COLUMN_NAMES: tuple[str, ...] = tuple(FLOW_COLUMNS)


def set_flow_extension(flow: flow_pb2.Flow, ext: extensions_pb2.FlowExtension) -> None:
    """Put a FlowExtension into Flow.extensions (google.protobuf.Any)."""
    flow.extensions.Pack(ext)


def flows_to_columns(
    flows: Sequence[flow_pb2.Flow], columns: Sequence[str] = FLOW_COLUMN_NAMES
) -> dict[str, list[Any]]:
    """Column-oriented values of ``columns`` (FLOW_COLUMNS names) and ``flow`` (the
    serialized message) for a list of flows."""
    rows = [flow_row(f) for f in flows]
    cols: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in columns}
    cols["flow"] = [f.SerializeToString() for f in flows]
    return cols
