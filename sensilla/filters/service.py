"""source_service / destination_service: ``[namespace/][service-name-prefix]``
(Hubble's ServiceFilter), over Flow.source_service / destination_service.

Stored as one column ``"namespace/name"`` ("" when the flow has no service). A
namespace containing "/" (never valid in Kubernetes, and never matched by a filter,
whose namespace part cannot contain "/") is stored with every "/" of the key written
as U+2215, so that no prefix test can match it either.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.names import parse_values
from sensilla.filters.sql import Params, all_of, any_of, col, starts_with
from sensilla.protos import flow_pb2

FIELDS = ("source_service", "destination_service")


def service_key(svc: flow_pb2.Service) -> str:
    """The column value for a flow's service."""
    if not svc.namespace and not svc.name:
        return ""
    key = f"{svc.namespace}/{svc.name}"
    if "/" in svc.namespace:
        return key.replace("/", "\u2215")
    return key


def _compile(values: list[str], field: str, path: str, side: str, params: Params) -> Clause:
    wanted = parse_values(values, field, path)
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        svc = flow.source_service if source else flow.destination_service
        ns, name = svc.namespace, svc.name
        if not ns and not name:
            return False
        return any(ns == w_ns and name.startswith(w_prefix) for w_ns, w_prefix in wanted)

    svc_col = col(f"{side}_service")
    alternatives = [
        starts_with(svc_col, params.add("String", f"{w_ns}/{w_prefix}"))
        for w_ns, w_prefix in wanted
    ]
    return Clause(field, match, all_of([f"{svc_col} != ''", any_of(alternatives)]))


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_service:
        out.append(_compile(list(ff.source_service), "source_service", path, "src", params))
    if ff.destination_service:
        out.append(
            _compile(list(ff.destination_service), "destination_service", path, "dst", params)
        )
    return out
