"""The NetworkPolicy object model (`networking.k8s.io/v1`), after defaulting.

Parsing and validation live in `collector.policy.parse`; these types are what the
verdict function, the explainer and the compiler work on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.policy.selectors import LabelSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

INGRESS = "Ingress"
EGRESS = "Egress"
POLICY_TYPES = (INGRESS, EGRESS)

TCP = "TCP"
UDP = "UDP"
SCTP = "SCTP"
PROTOCOLS = (TCP, UDP, SCTP)
PROTOCOL_NUMBERS = {TCP: 6, UDP: 17, SCTP: 132}


@dataclass(frozen=True)
class IPBlock:
    """`cidr` minus every `except` block (each a strict subset of cidr)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, addr: IPAddress) -> bool:
        if addr.version != self.cidr.version or addr not in self.cidr:
            return False
        return not any(addr in e for e in self.excepts)

    def describe(self) -> str:
        if not self.excepts:
            return f"ipBlock {self.cidr}"
        return f"ipBlock {self.cidr} except {', '.join(str(e) for e in self.excepts)}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cidr": str(self.cidr)}
        if self.excepts:
            out["except"] = [str(e) for e in self.excepts]
        return out


@dataclass(frozen=True)
class Peer:
    """One entry of `from`/`to`. Pod and namespace selectors in one peer are ANDed;
    an absent namespaceSelector means the policy's own namespace; an ipBlock stands
    alone (validation forbids mixing)."""

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def describe(self, policy_namespace: str) -> str:
        if self.ip_block is not None:
            return self.ip_block.describe()
        pods = (
            "all pods"
            if self.pod_selector is None or self.pod_selector.empty
            else f"pods with {self.pod_selector.describe()}"
        )
        if self.namespace_selector is None:
            where = f"in namespace {policy_namespace}"
        elif self.namespace_selector.empty:
            where = "in all namespaces"
        else:
            where = f"in namespaces with {self.namespace_selector.describe()}"
        return f"{pods} {where}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.pod_selector is not None:
            out["podSelector"] = self.pod_selector.to_dict()
        if self.namespace_selector is not None:
            out["namespaceSelector"] = self.namespace_selector.to_dict()
        if self.ip_block is not None:
            out["ipBlock"] = self.ip_block.to_dict()
        return out


@dataclass(frozen=True)
class PortSpec:
    """One entry of `ports`: protocol (defaulted to TCP), a port number or name or
    nothing (all ports of the protocol), and an optional endPort for a range."""

    protocol: str = TCP
    port: int | str | None = None
    end_port: int | None = None

    @property
    def named(self) -> bool:
        return isinstance(self.port, str)

    def describe(self) -> str:
        if self.port is None:
            return f"{self.protocol} (all ports)"
        if self.end_port is not None:
            return f"{self.protocol}/{self.port}-{self.end_port}"
        if isinstance(self.port, str):
            return f"{self.protocol} port named {self.port!r}"
        return f"{self.protocol}/{self.port}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"protocol": self.protocol}
        if self.port is not None:
            out["port"] = self.port
        if self.end_port is not None:
            out["endPort"] = self.end_port
        return out


@dataclass(frozen=True)
class Rule:
    """An ingress or egress rule. No peers: every peer; no ports: every port and
    protocol."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortSpec, ...] = ()

    def to_dict(self, direction: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.peers:
            out["from" if direction == INGRESS else "to"] = [p.to_dict() for p in self.peers]
        if self.ports:
            out["ports"] = [p.to_dict() for p in self.ports]
        return out


@dataclass(frozen=True)
class NetworkPolicy:
    namespace: str
    name: str
    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    # After defaulting: Ingress always unless given; Egress when egress rules exist.
    policy_types: tuple[str, ...] = (INGRESS,)
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()
    resource_version: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def affects(self, direction: str) -> bool:
        return direction in self.policy_types

    def rules(self, direction: str) -> tuple[Rule, ...]:
        return self.ingress if direction == INGRESS else self.egress

    def to_object(self) -> dict[str, Any]:
        """The canonical (defaulted) Kubernetes object."""
        spec: dict[str, Any] = {
            "podSelector": self.pod_selector.to_dict(),
            "policyTypes": list(self.policy_types),
        }
        if self.ingress or INGRESS in self.policy_types:
            spec["ingress"] = [r.to_dict(INGRESS) for r in self.ingress]
        if self.egress or EGRESS in self.policy_types:
            spec["egress"] = [r.to_dict(EGRESS) for r in self.egress]
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }


def default_policy_types(given: Iterable[str], egress_rules: int) -> tuple[str, ...]:
    given = tuple(given)
    if given:
        return given
    return (INGRESS, EGRESS) if egress_rules else (INGRESS,)
