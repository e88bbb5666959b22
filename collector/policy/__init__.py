"""Kubernetes NetworkPolicy: the one policy model of Sensilla (parsing, validation,
selectors, the verdict for a pair of endpoints, explain). The relay imports it too.
"""

from collector.policy.cluster import (
    AUDIT_KEY,
    ClusterState,
    ContainerPort,
    Namespace,
    Node,
    Pod,
)
from collector.policy.errors import FieldError, PolicyValidationError
from collector.policy.explain import explain_dict, explain_text
from collector.policy.model import EGRESS, INGRESS, IPBlock, NetworkPolicy, Peer, PortSpec, Rule
from collector.policy.parse import ParsedPolicy, parse_documents, parse_object
from collector.policy.selectors import LabelSelector, Requirement
from collector.policy.verdict import RuleMatch, SideVerdict, Verdict, verdict

__all__ = [
    "AUDIT_KEY",
    "EGRESS",
    "INGRESS",
    "ClusterState",
    "ContainerPort",
    "FieldError",
    "IPBlock",
    "LabelSelector",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "ParsedPolicy",
    "Peer",
    "Pod",
    "PolicyValidationError",
    "PortSpec",
    "Requirement",
    "Rule",
    "RuleMatch",
    "SideVerdict",
    "Verdict",
    "explain_dict",
    "explain_text",
    "parse_documents",
    "parse_object",
    "verdict",
]
