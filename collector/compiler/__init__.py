"""The policy compiler: the policy model -> identities, ipcache and per-endpoint
datapath policy (datapath.types) for one node."""

from collector.compiler.compile import (
    Attribution,
    AttributionRegistry,
    EndpointPlan,
    NodePlan,
    RuleRef,
    build_ipcache,
    compile_endpoint,
    compile_node,
    endpoint_ids,
)

__all__ = [
    "Attribution",
    "AttributionRegistry",
    "EndpointPlan",
    "NodePlan",
    "RuleRef",
    "build_ipcache",
    "compile_endpoint",
    "compile_node",
    "endpoint_ids",
]
