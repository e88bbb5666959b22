"""An in-memory datapath with the real one's interface, for agent tests: it keeps
the maps the agent programs and decides connections on them with the datapath's
lookup semantics (collector.compiler.reference)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collector.compiler.reference import PROTOCOL_BY_NAME, decide, lpm
from collector.policy.cluster import ClusterState
from datapath.types import Direction, EndpointInfo, EndpointPolicy, IPNetwork, ReservedIdentity


@dataclass
class FakeDatapath:
    loaded: bool = False
    ipcache: dict[IPNetwork, int] = field(default_factory=dict)
    endpoints_map: dict[int, EndpointInfo] = field(default_factory=dict)  # ifindex -> info
    policies: dict[tuple[int, Direction], EndpointPolicy] = field(default_factory=dict)
    attached: set[int] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    fail_on: dict[str, int] = field(default_factory=dict)  # method -> fail on its n-th next call

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail_on:
            self.fail_on[name] -= 1
            if self.fail_on[name] <= 0:
                del self.fail_on[name]
                raise OSError(f"injected failure in {name}")

    def ensure_loaded(self) -> Any:
        self._call("ensure_loaded")
        self.loaded = True

    def sync_ipcache(self, mapping: Mapping[IPNetwork, int]) -> Any:
        self._call("sync_ipcache")
        self.ipcache = dict(mapping)

    def install_policy(self, endpoint_id: int, direction: Direction, policy: EndpointPolicy) -> Any:
        self._call("install_policy")
        self.policies[(endpoint_id, direction)] = policy

    def set_endpoint(self, info: EndpointInfo) -> Any:
        self._call("set_endpoint")
        self.endpoints_map[info.ifindex] = info

    def attach(self, ifindex: int) -> Any:
        self._call("attach")
        assert ifindex in self.endpoints_map, "attached before the endpoint entry exists"
        info = self.endpoints_map[ifindex]
        for d in Direction:
            assert (info.endpoint_id, d) in self.policies, "attached before its policies"
        self.attached.add(ifindex)

    def remove_endpoint(self, ifindex: int) -> Any:
        self._call("remove_endpoint")
        self.attached.discard(ifindex)
        info = self.endpoints_map.pop(ifindex, None)
        if info is not None:
            for d in Direction:
                self.policies.pop((info.endpoint_id, d), None)

    def endpoints(self) -> dict[int, EndpointInfo]:
        return dict(self.endpoints_map)

    def close(self) -> Any:
        self._call("close")

    # --- deciding on the programmed maps ------------------------------------------------
    def _side(self, ifindex: int, direction: Direction, remote: Any, proto: int, port: int) -> bool:
        info = self.endpoints_map[ifindex]
        pol = self.policies[(info.endpoint_id, direction)]
        ident = lpm(self.ipcache, remote)
        remote_id = int(ReservedIdentity.WORLD) if ident is None else ident
        return decide(pol, remote_id, remote, proto, port).forwarded

    def egress_allows(self, ifindex: int, dst: Any, protocol: str, port: int) -> bool:
        return self._side(ifindex, Direction.EGRESS, dst, PROTOCOL_BY_NAME[protocol], port)

    def ingress_allows(self, ifindex: int, src: Any, protocol: str, port: int) -> bool:
        return self._side(ifindex, Direction.INGRESS, src, PROTOCOL_BY_NAME[protocol], port)


def fake_ifindex(interface: str) -> int:
    return 1000 + int(interface[3:9], 16) % 100000


def cluster_decision(
    dps: Mapping[str, FakeDatapath],
    state: ClusterState,
    src: str,
    dst: str,
    port: int,
    protocol: str,
    family: int = 4,
) -> bool:
    """A connection across the fake nodes, by the maps each node's agent programmed."""
    s, d = state.pod(src), state.pod(dst)
    saddr, daddr = s.ip(family), d.ip(family)
    s_if = fake_ifindex(s.annotations["sensilla.io/host-interface"])
    d_if = fake_ifindex(d.annotations["sensilla.io/host-interface"])
    return dps[s.node].egress_allows(s_if, daddr, protocol, port) and dps[d.node].ingress_allows(
        d_if, saddr, protocol, port
    )
