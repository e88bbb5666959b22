"""Explain a verdict in plain words (and as JSON for programs).

Used by `sensilla policy explain` and, later, by the relay's Explain API.
"""

from __future__ import annotations

from typing import Any

from collector.policy.cluster import AUDIT_KEY
from collector.policy.model import EGRESS
from collector.policy.verdict import SideVerdict, Verdict


def _what(v: Verdict) -> str:
    return f"{v.protocol}/{v.port}" if v.port is not None else v.protocol


def _side(v: Verdict, side: SideVerdict) -> list[str]:
    if side.direction == EGRESS:
        head, pod, other, verb = "Egress from", v.src, v.dst, "send to"
    else:
        head, pod, other, verb = "Ingress to", v.dst, v.src, "receive from"
    if side.reason == "not-a-pod":
        return [f"{head} {pod}: not a pod, no policy applies."]
    if side.reason == "own-node":
        return [f"{head} {pod}: traffic between a pod and its own node is always allowed."]
    kind = "egress" if side.direction == EGRESS else "ingress"
    if side.reason == "not-isolated":
        return [
            f"{head} {pod}: allowed; no NetworkPolicy selects {pod} for {kind}, "
            f"so it may {verb} anyone."
        ]
    selected = ", ".join(side.selecting)
    if side.reason == "allowed":
        lines = [f"{head} {pod}: allowed; {pod} is selected for {kind} by {selected}, and"]
        if side.service:
            lines[0] = (
                f"{head} {pod}: allowed; {other} is a frontend of Service {side.service} and "
                f"{pod} (selected for {kind} by {selected}) may reach every ready backend:"
            )
        for m in side.matches:
            lines.append(f"  - {m.path} allows it ({m.peer_text}; {m.port_text})")
        return lines
    lines = [
        f"{head} {pod}: DENIED by default deny; {pod} is selected for {kind} by {selected}, "
        f"and no rule of these policies allows {other} on {_what(v)}."
    ]
    if side.audit:
        lines.append(
            f"  {pod} is in audit mode ({AUDIT_KEY} on the pod or its namespace): the "
            "packets are forwarded and reported with verdict AUDIT."
        )
    return lines


def explain_text(v: Verdict) -> str:
    if v.allowed:
        head = "ALLOWED"
    elif v.forwarded:
        head = "DENIED by policy, forwarded in audit mode"
    else:
        head = "DENIED"
    lines = [f"{v.src} -> {v.dst} {_what(v)}: {head}"]
    lines += _side(v, v.egress)
    lines += _side(v, v.ingress)
    return "\n".join(lines)


def _side_dict(side: SideVerdict) -> dict[str, Any]:
    return {
        "direction": side.direction,
        "pod": side.pod,
        "reason": side.reason,
        "allowed": side.allowed,
        "audit": side.audit,
        "selected_by": list(side.selecting),
        "service": side.service or None,
        "allowed_by": [
            {
                "policy": m.policy,
                "rule": m.path,
                "rule_index": m.rule,
                "peer_index": m.peer,
                "port_index": m.port,
                "peer": m.peer_text,
                "port": m.port_text,
            }
            for m in side.matches
        ],
    }


def explain_dict(v: Verdict) -> dict[str, Any]:
    return {
        "from": v.src,
        "to": v.dst,
        "port": v.port,
        "protocol": v.protocol,
        "allowed": v.allowed,
        "forwarded": v.forwarded,
        "verdict": "FORWARDED" if v.allowed else ("AUDIT" if v.forwarded else "DROPPED"),
        "egress": _side_dict(v.egress),
        "ingress": _side_dict(v.ingress),
    }
