"""FlowFilter fields Sensilla does not evaluate: a request using them is rejected
(INVALID_ARGUMENT) rather than answered wrongly. This wave observes no L7, DNS names,
trace contexts, clusters, node labels or SNAT addresses."""

from __future__ import annotations

from sensilla.filters.base import Clause
from sensilla.filters.errors import FilterError
from sensilla.filters.sql import Params
from sensilla.protos import flow_pb2

FIELDS = (
    "source_ip_xlated",
    "source_fqdn",
    "destination_fqdn",
    "source_cluster_name",
    "destination_cluster_name",
    "http_status_code",
    "dns_query",
    "http_method",
    "http_path",
    "http_url",
    "http_header",
    "node_labels",
    "trace_id",
)


def compile(ff: flow_pb2.FlowFilter, path: str, params: Params) -> list[Clause]:
    for name in FIELDS:
        if len(getattr(ff, name)):
            raise FilterError(f"{path}.{name}", "filter not supported by Sensilla")
    return []
