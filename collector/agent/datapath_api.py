"""What the enforcer needs from the datapath: a subset of datapath.Datapath
(docs/datapath.md), so tests can use an in-memory fake.

The enforcer programs a node's maps in an order that never opens a gap: the ipcache
first (new pods' identities known before anyone refers to them), then for each new or
changed endpoint its two policies, then its endpoint entry, then the TC attachment.
Each install_policy is atomic for that endpoint and direction (the datapath swaps a
whole policy at once).
"""

from __future__ import annotations

from typing import Any, Protocol

from datapath.types import Direction, EndpointInfo, EndpointPolicy


class DatapathAPI(Protocol):
    def ensure_loaded(self) -> Any: ...

    # mapping: Mapping[IPNetwork, int] (the real one also takes strings as keys)
    def sync_ipcache(self, mapping: Any) -> Any: ...

    def install_policy(
        self, endpoint_id: int, direction: Direction, policy: EndpointPolicy
    ) -> Any: ...

    def set_endpoint(self, info: EndpointInfo) -> Any: ...

    def attach(self, dev: int) -> Any: ...

    def remove_endpoint(self, ifindex: int) -> Any: ...

    def close(self) -> Any: ...
