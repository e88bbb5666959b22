"""source_pod / destination_pod: ``[namespace/][pod-name-prefix]`` (Hubble's PodFilter).

The namespace must match exactly ("default" when omitted) and the pod name must start
with the prefix; ``ns/`` selects a whole namespace (what ``--namespace`` sends). An
endpoint with neither namespace nor pod name matches nothing.
"""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.names import parse_values
from sensilla.filters.sql import Params, all_of, any_of, col, starts_with
from sensilla.protos import flow_pb2

FIELDS = ("source_pod", "destination_pod")


def _compile(values: list[str], field: str, path: str, side: str, params: Params) -> Clause:
    wanted = parse_values(values, field, path)
    source = side == "src"

    def match(flow: flow_pb2.Flow) -> bool:
        ep = flow.source if source else flow.destination
        ns, pod = ep.namespace, ep.pod_name
        if not ns and not pod:
            return False
        return any(ns == w_ns and pod.startswith(w_prefix) for w_ns, w_prefix in wanted)

    ns_col, pod_col = col(f"{side}_namespace"), col(f"{side}_pod")
    alternatives = []
    for w_ns, w_prefix in wanted:
        cond = [f"{ns_col} = {params.add('String', w_ns)}"]
        if w_prefix:
            cond.append(starts_with(pod_col, params.add("String", w_prefix)))
        alternatives.append(all_of(cond))
    sql = all_of([f"({ns_col} != '' OR {pod_col} != '')", any_of(alternatives)])
    return Clause(field, match, sql)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    out = []
    if ff.source_pod:
        out.append(_compile(list(ff.source_pod), "source_pod", path, "src", params))
    if ff.destination_pod:
        out.append(_compile(list(ff.destination_pod), "destination_pod", path, "dst", params))
    return out
