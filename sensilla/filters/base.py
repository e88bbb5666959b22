"""What every filter kind produces: a predicate over a flow and a SQL condition.

Each kind lives in its own module, exposing ``FIELDS`` (the FlowFilter fields it
handles) and ``compile(ff, path, params) -> list[Clause]``: one clause per set field,
the clause being the OR over that field's values. A FlowFilter matches when all its
clauses match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sensilla.protos import flow_pb2

Predicate = Callable[[flow_pb2.Flow], bool]


@dataclass(frozen=True)
class Clause:
    field: str  # the FlowFilter field, e.g. "source_ip"
    match: Predicate
    sql: str  # a boolean SQL expression over FLOW_COLUMNS with typed placeholders


def l4_protocol(flow: flow_pb2.Flow) -> str:
    """The flow's L4 protocol as stored in the ``protocol`` column ("" when none)."""
    if not flow.HasField("l4"):
        return ""
    which = flow.l4.WhichOneof("protocol")
    return which.lower() if which else ""


def ports(flow: flow_pb2.Flow) -> tuple[int, int] | None:
    """(source, destination) port of a TCP, UDP or SCTP flow, as Hubble's uint16."""
    if not flow.HasField("l4"):
        return None
    which = flow.l4.WhichOneof("protocol")
    if which not in ("TCP", "UDP", "SCTP"):
        return None
    m = getattr(flow.l4, which)
    return m.source_port & 0xFFFF, m.destination_port & 0xFFFF
