"""What the enforcer needs from the datapath (see datapath/ for the real one).

The enforcer programs a node's maps in an order that never opens a gap: the ipcache
first (new pods' identities known before anyone refers to them), then for each new or
changed endpoint its two policies, then its endpoint entry, then the TC attachment.
Each install_policy is atomic for that endpoint and direction (the datapath swaps a
whole policy at once).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from datapath.types import Direction, EndpointInfo, EndpointPolicy, IPNetwork


class DatapathAPI(Protocol):
    def ensure_loaded(self) -> Any: ...

    def sync_ipcache(self, mapping: Mapping[IPNetwork, int]) -> Any: ...

    def install_policy(
        self, endpoint_id: int, direction: Direction, policy: EndpointPolicy
    ) -> Any: ...

    def set_endpoint(self, info: EndpointInfo) -> Any: ...

    def attach(self, ifindex: int) -> Any: ...

    def remove_endpoint(self, info: EndpointInfo) -> Any: ...

    def close(self) -> Any: ...
