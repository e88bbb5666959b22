"""source_identity / destination_identity: numeric security identities (Hubble's
IdentityFilter). A flow without the endpoint counts as identity 0 (Hubble: no match)."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.sql import Params, in_list
from sensilla.protos import flow_pb2

FIELDS = ("source_identity", "destination_identity")


def _compile(values: list[int], field: str, side: str, params: Params) -> Clause:
    wanted = frozenset(values)
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        ep = flow.source if source else flow.destination
        return ep.identity in wanted

    return Clause(field, match, in_list(f"{side}_identity", "UInt32", values, params))


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_identity:
        out.append(_compile(list(ff.source_identity), "source_identity", "src", params))
    if ff.destination_identity:
        out.append(_compile(list(ff.destination_identity), "destination_identity", "dst", params))
    return out
