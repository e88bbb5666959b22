"""Security identities: one number per set of security-relevant labels.

The label set of a pod is its own labels, plus its namespace's labels as
`io.cilium.k8s.namespace.labels.<key>=<value>` and the namespace name as
`io.kubernetes.pod.namespace=<ns>` (as Cilium builds it). Every selector of a
NetworkPolicy depends only on these, so pods with the same label set can share a
number without losing precision.

Numbers are derived, not allocated: each label set hashes (SHA-256 of its sorted
`key=value` lines) to a preferred number in [256, 2^24); label sets are placed in the
order (preferred number, canonical text) and take the first free number at or after
their preferred one, wrapping. Every node that sees the same pods computes the same
table without talking to anyone. Reserved identities follow Cilium.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from collector.policy.cluster import ClusterState, Namespace, Pod
from datapath.types import CIDR_GROUP_BASE, FIRST_LABEL_IDENTITY, ReservedIdentity

NAMESPACE_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
IDENTITY_MIN = FIRST_LABEL_IDENTITY
IDENTITY_MAX = CIDR_GROUP_BASE - 1  # label identities never overlap CIDR group ids
_SPAN = IDENTITY_MAX - IDENTITY_MIN + 1

LabelSet = tuple[tuple[str, str], ...]  # sorted (key, value) pairs

RESERVED_LABELS: dict[int, LabelSet] = {
    int(ReservedIdentity.HOST): (("reserved:host", ""),),
    int(ReservedIdentity.WORLD): (("reserved:world", ""),),
    int(ReservedIdentity.UNMANAGED): (("reserved:unmanaged", ""),),
    int(ReservedIdentity.HEALTH): (("reserved:health", ""),),
    int(ReservedIdentity.INIT): (("reserved:init", ""),),
    int(ReservedIdentity.REMOTE_NODE): (("reserved:remote-node", ""),),
    int(ReservedIdentity.KUBE_APISERVER): (("reserved:kube-apiserver", ""),),
}


def security_labels(
    pod_labels: Mapping[str, str], namespace: str, namespace_labels: Mapping[str, str]
) -> LabelSet:
    labels = dict(pod_labels)
    for k, v in namespace_labels.items():
        labels[NAMESPACE_LABEL_PREFIX + k] = v
    labels[POD_NAMESPACE_LABEL] = namespace
    return tuple(sorted(labels.items()))


def pod_security_labels(pod: Pod, ns: Namespace) -> LabelSet:
    return security_labels(pod.labels, pod.namespace, ns.effective_labels)


def canonical(labels: LabelSet) -> str:
    return "".join(f"{k}={v}\n" for k, v in labels)


def preferred_identity(labels: LabelSet) -> int:
    digest = hashlib.sha256(canonical(labels).encode()).digest()
    return IDENTITY_MIN + int.from_bytes(digest[:8], "big") % _SPAN


def allocate(label_sets: Iterable[LabelSet]) -> dict[LabelSet, int]:
    """Deterministic numbers for a set of label sets (see the module docstring)."""
    unique = set(label_sets)
    order = sorted(unique, key=lambda ls: (preferred_identity(ls), canonical(ls)))
    taken: set[int] = set()
    out: dict[LabelSet, int] = {}
    for ls in order:
        n = preferred_identity(ls)
        while n in taken:
            n = IDENTITY_MIN if n == IDENTITY_MAX else n + 1
        taken.add(n)
        out[ls] = n
    return out


@dataclass(frozen=True)
class IdentityTable:
    """The identities of a cluster snapshot."""

    by_labels: Mapping[LabelSet, int] = field(default_factory=dict)
    by_pod: Mapping[str, int] = field(default_factory=dict)  # "ns/name" -> identity

    def of_pod(self, key: str) -> int:
        return self.by_pod[key]

    def labels(self, identity: int) -> LabelSet | None:
        if identity in RESERVED_LABELS:
            return RESERVED_LABELS[identity]
        for ls, n in self.by_labels.items():
            if n == identity:
                return ls
        return None

    def pods_of(self, identity: int) -> list[str]:
        return sorted(k for k, n in self.by_pod.items() if n == identity)

    def to_dict(self) -> dict[str, list[str]]:
        return {str(n): [f"{k}={v}" for k, v in ls] for ls, n in self.by_labels.items()}


def identities_for(state: ClusterState) -> IdentityTable:
    per_pod: dict[str, LabelSet] = {}
    for key, pod in state.pods.items():
        if pod.host_network:
            continue
        per_pod[key] = pod_security_labels(pod, state.namespace(pod.namespace))
    numbers = allocate(per_pod.values())
    return IdentityTable(numbers, {k: numbers[ls] for k, ls in per_pod.items()})
