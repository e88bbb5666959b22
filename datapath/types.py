"""The datapath's vocabulary, shared with the policy compiler in `collector/`.

These types are the contract between the enforcing half of the agent (which decides
*what* to allow) and the datapath (which writes it into the kernel's maps). They
mirror the map layouts in bpf/sensilla.h but carry no packing details.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ReservedIdentity(enum.IntEnum):
    """Cilium's reserved identity numbers."""

    UNKNOWN = 0
    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7


# Identities of label sets (pods) start here, as in Cilium's cluster-local range.
FIRST_LABEL_IDENTITY = 256
# Identities of CIDR groups of one endpoint's ipBlock rules (local to the endpoint
# and direction; never in the ipcache) live in Cilium's local-scope range.
CIDR_GROUP_BASE = 1 << 24
# A rule whose peer is ANY matches every remote identity and address.
ANY_PEER = 0
ANY_PROTOCOL = 0


class Direction(enum.IntEnum):
    """Direction from the pod's point of view."""

    INGRESS = 0  # towards the pod: the lxc device's TC egress hook
    EGRESS = 1  # from the pod: the lxc device's TC ingress hook


class Protocol(enum.IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132


class Verdict(enum.IntEnum):
    """Numbers shared with flow.Verdict."""

    FORWARDED = 1
    DROPPED = 2
    AUDIT = 4


class DropReason(enum.IntEnum):
    """The Cilium drop reasons the datapath emits (flow.DropReason numbers)."""

    POLICY_DENIED = 133
    INVALID_PACKET_DROPPED = 134
    CT_TRUNCATED_OR_INVALID_HEADER = 135
    CT_MAP_INSERTION_FAILED = 155
    UNSUPPORTED_L3_PROTOCOL = 139
    UNKNOWN_L4_PROTOCOL = 142
    INVALID_IPV6_EXTENSION_HEADER = 156
    FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND = 175
    NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION = 165
    DROP_EP_NOT_READY = 203


@dataclass(frozen=True)
class PolicyRule:
    """Allow traffic with `peer` on `protocol` and ports [port_lo, port_hi].

    peer: a remote identity, a CIDR group id (>= CIDR_GROUP_BASE) or ANY_PEER.
    protocol: an IP protocol number or ANY_PROTOCOL (then ports must be 0..65535).
    attribution: an id the agent maps back to the policies that allow this traffic;
    it travels in flow events.
    """

    peer: int
    protocol: int
    port_lo: int
    port_hi: int
    attribution: int

    def __post_init__(self) -> None:
        if not 0 <= self.port_lo <= self.port_hi <= 65535:
            raise ValueError(f"bad port range {self.port_lo}-{self.port_hi}")
        if self.protocol == ANY_PROTOCOL and (self.port_lo, self.port_hi) != (0, 65535):
            raise ValueError("a rule for any protocol must cover all ports")


@dataclass(frozen=True)
class CidrEntry:
    """Remote addresses in `network` (longest prefix wins) belong to CIDR group
    `group`; group 0 means "no group" (used for `except` holes)."""

    network: IPNetwork
    group: int


@dataclass(frozen=True)
class EndpointPolicy:
    """Everything the datapath needs to decide one endpoint's traffic in one
    direction. Installed atomically: packets see the old policy or the new one,
    never a mix.

    enforced=False: everything is allowed (no policy selects the pod).
    enforced=True: only what `rules` allow; the rest is dropped with
    POLICY_DENIED, or forwarded with verdict AUDIT when `audit` is set.
    """

    enforced: bool
    audit: bool = False
    rules: tuple[PolicyRule, ...] = field(default_factory=tuple)
    cidrs: tuple[CidrEntry, ...] = field(default_factory=tuple)
    # Attribution used for drops by default deny (lets events say which
    # policies selected the pod).
    deny_attribution: int = 0


@dataclass(frozen=True)
class EndpointInfo:
    """A pod's host-side interface and its identity on this node."""

    ifindex: int
    endpoint_id: int
    identity: int
