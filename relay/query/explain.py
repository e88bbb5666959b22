"""Explain for the query API: the policy model's verdict (collector.policy, the one
implementation) for a pair and port, in the API's shape, and a NetworkPolicy that
would allow denied traffic.

The suggestion adds one policy per denying side, selecting exactly the pods the
denying side's pod shares its labels with (an identity): ingress on the destination
from the source (its namespace by ``kubernetes.io/metadata.name`` and its labels, or
its address as a /32 or /128 ipBlock), egress on the source likewise. A side is only
denied when some policy already isolates its pod in that direction, so the new
policy adds what it allows and isolates nothing new. The suggestion is checked
against the model before it is offered: with it, the verdict for the pair is
allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import yaml

from collector.policy.cluster import AUDIT_KEY, NAMESPACE_NAME_LABEL, ClusterState, Pod
from collector.policy.explain import explain_text
from collector.policy.model import EGRESS, INGRESS
from collector.policy.parse import parse_object
from collector.policy.verdict import SideVerdict, Verdict, resolve_endpoint, verdict
from sensilla.protos import query_pb2

PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMP")
_NAME_BAD = re.compile(r"[^a-z0-9-]+")


class ExplainError(ValueError):
    """Bad input; the message names the field."""


def _endpoint(state: ClusterState, field: str, text: str) -> Any:
    if not text:
        raise ExplainError(f"{field}: required (namespace/pod or an IP address)")
    try:
        return resolve_endpoint(text, state)
    except KeyError:
        raise ExplainError(f"{field}: unknown pod {text!r}") from None


def decide(
    state: ClusterState, req: query_pb2.ExplainRequest
) -> tuple[Verdict, Any, Any, int | None, str, int]:
    """Validate a request against the state and decide it: (verdict, source endpoint,
    destination endpoint, port, protocol, family)."""
    protocol = (req.protocol or "TCP").upper()
    if protocol not in PROTOCOLS:
        raise ExplainError(f"protocol: {req.protocol!r} is not TCP, UDP, SCTP or ICMP")
    family = req.family or 4
    if family not in (4, 6):
        raise ExplainError(f"family: {req.family} is not 4 or 6")
    port: int | None
    if protocol == "ICMP":
        if req.port:
            raise ExplainError("port: ICMP has no port")
        port = None
    else:
        if not 0 < req.port < 65536:
            raise ExplainError(f"port: {req.port} is not in 1-65535")
        port = int(req.port)
    src = _endpoint(state, "source", req.source)
    dst = _endpoint(state, "destination", req.destination)
    v = verdict(src, dst, port, protocol, state, family)
    return v, src, dst, port, protocol, family


def _split(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


def _direction(side: SideVerdict) -> query_pb2.DirectionVerdict:
    d = query_pb2.DirectionVerdict(
        enforced=side.isolated,
        allowed=side.allowed,
        reason=side.reason,
        pod=side.pod or "",
        audit=side.audit,
    )
    for key in side.selecting:
        ns, name = _split(key)
        d.selected_by.add(namespace=ns, name=name)
    for m in side.matches:
        ns, name = _split(m.policy)
        rule = m.path[len(m.policy) :].strip()
        d.allowed_by.add(namespace=ns, name=name, rule=rule, peer=m.peer_text, port=m.port_text)
    return d


def answer(v: Verdict, revision: int) -> query_pb2.ExplainResponse:
    resp = query_pb2.ExplainResponse(
        allowed=v.allowed,
        egress=_direction(v.egress),
        ingress=_direction(v.ingress),
        explanation=explain_text(v),
        audit=v.audited,
        forwarded=v.forwarded,
        revision=revision,
    )
    return resp


# --- suggestions ---------------------------------------------------------------------


def _selector_labels(pod: Pod) -> dict[str, str]:
    return {k: v for k, v in sorted(pod.labels.items()) if k != AUDIT_KEY}


def _peer(other: Any, family: int) -> dict[str, Any]:
    if isinstance(other, Pod):
        peer: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: other.namespace}}
        }
        labels = _selector_labels(other)
        peer["podSelector"] = {"matchLabels": labels} if labels else {}
        return peer
    addr = ipaddress.ip_address(other)
    return {"ipBlock": {"cidr": f"{addr}/{addr.max_prefixlen}"}}


def _dns_name(*parts: str) -> str:
    text = "-".join(_NAME_BAD.sub("-", p.lower()).strip("-") for p in parts if p)
    text = re.sub(r"-{2,}", "-", text).strip("-")
    return (text[:63].rstrip("-")) or "allow"


def _describe(e: Any) -> str:
    return e.name if isinstance(e, Pod) else str(e).replace(":", "-").replace(".", "-")


def _policy(
    pod: Pod, direction: str, other: Any, port: int | None, protocol: str, family: int
) -> dict[str, Any]:
    rule: dict[str, Any] = {("from" if direction == INGRESS else "to"): [_peer(other, family)]}
    if protocol != "ICMP":
        rule["ports"] = [{"protocol": protocol, "port": port}]
    what = f"{protocol.lower()}-{port}" if port is not None else protocol.lower()
    if direction == INGRESS:
        name = _dns_name("allow", _describe(other), "to", pod.name, what)
    else:
        name = _dns_name("allow", pod.name, "to", _describe(other), what)
    labels = _selector_labels(pod)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": pod.namespace},
        "spec": {
            "podSelector": {"matchLabels": labels} if labels else {},
            "policyTypes": ["Ingress" if direction == INGRESS else "Egress"],
            ("ingress" if direction == INGRESS else "egress"): [rule],
        },
    }


def suggest(
    state: ClusterState,
    v: Verdict,
    src: Any,
    dst: Any,
    port: int | None,
    protocol: str,
    family: int,
) -> str:
    """YAML of the policies that would allow the traffic ("" when it is allowed, or
    when no NetworkPolicy can: e.g. a denied side that is not a pod)."""
    if v.allowed:
        return ""
    docs = []
    if not v.egress.allowed and isinstance(src, Pod):
        docs.append(_policy(src, EGRESS, dst, port, protocol, family))
    if not v.ingress.allowed and isinstance(dst, Pod):
        docs.append(_policy(dst, INGRESS, src, port, protocol, family))
    if not docs:
        return ""
    trial = ClusterState(
        nodes=state.nodes,
        namespaces=state.namespaces,
        pods=state.pods,
        policies=dict(state.policies),
        revision=state.revision,
    )
    for d in docs:
        pol = parse_object(d).policy
        trial.policies[pol.key] = pol
    if not verdict(src, dst, port, protocol, trial, family).allowed:
        return ""  # cannot happen for pods; never offer a policy that would not work
    return yaml.safe_dump_all(docs, sort_keys=False)


def explain_request(
    state: ClusterState, req: query_pb2.ExplainRequest
) -> tuple[query_pb2.ExplainResponse, Any, Any, int | None, str]:
    """The whole answer but the last observed flow: (response, src, dst, port,
    protocol)."""
    v, src, dst, port, protocol, family = decide(state, req)
    resp = answer(v, state.revision)
    resp.suggested_policy = suggest(state, v, src, dst, port, protocol, family)
    return resp, src, dst, port, protocol
