"""A lab with one datapath per node (used by the fixtures and by helper processes)."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroute2 import NetNS

from datapath import Datapath, EventReader, LoadResult, Losses
from datapath.types import Direction, EndpointInfo, EndpointPolicy, ReservedIdentity


def node_name(prefix: str, lab: str, short: str) -> str:
    return f"{prefix}-{lab}-{short}"


@dataclass
class LabDatapath:
    lab: Any
    layout: Any
    dps: dict[str, Datapath] = field(default_factory=dict)  # node short name -> datapath
    identity: dict[str, int] = field(default_factory=dict)  # pod key -> identity
    endpoint_id: dict[str, int] = field(default_factory=dict)
    ifindex: dict[str, int] = field(default_factory=dict)
    readers: dict[str, EventReader] = field(default_factory=dict)
    load_results: dict[str, LoadResult] = field(default_factory=dict)
    attach_changed: dict[str, bool] = field(default_factory=dict)

    def pod(self, key: str) -> Any:
        return self.layout.pod(key)

    def dp_of(self, key: str) -> Datapath:
        return self.dps[self.pod(key).node.short]

    def install(self, key: str, direction: Direction, policy: EndpointPolicy) -> int:
        return self.dp_of(key).install_policy(self.endpoint_id[key], direction, policy)

    def reset(self) -> None:
        for p in self.layout.pods:
            for d in Direction:
                self.dp_of(p.key).install_policy(
                    self.endpoint_id[p.key], d, EndpointPolicy(enforced=False)
                )
        for dp in self.dps.values():
            dp.set_aggregation("medium", 5.0, drop_interval_s=1.0)
            dp.flush_conntrack()
            dp._map("drops").clear()

    def ipcache_for(self, node: Any) -> dict[str, int]:
        m: dict[str, int] = {}
        for n in self.layout.nodes:
            ident = int(ReservedIdentity.HOST) if n is node else int(ReservedIdentity.REMOTE_NODE)
            for a in n.addresses:
                net = ipaddress.ip_network(a)
                m[str(net)] = ident
        for p in self.layout.pods:
            m[f"{p.ipv4}/32"] = self.identity[p.key]
            m[f"{p.ipv6}/128"] = self.identity[p.key]
        return m

    def probe(
        self,
        src: str,
        dst: str,
        port: int,
        protocol: str = "TCP",
        family: int = 4,
        timeout: float = 1.0,
    ) -> bool:
        from sensilla.lab import probe as P

        res = P.probe(
            self.layout, [(self.pod(src), self.pod(dst))], port, protocol, family, timeout
        )
        return res[0].connected

    def probe_many(
        self,
        pairs: list[tuple[str, str]],
        port: int,
        protocol: str = "TCP",
        family: int = 4,
        timeout: float = 1.0,
    ) -> dict[tuple[str, str], bool]:
        from sensilla.lab import probe as P

        res = P.probe(
            self.layout,
            [(self.pod(s), self.pod(d)) for s, d in pairs],
            port,
            protocol,
            family,
            timeout,
        )
        return {(r.source, r.destination): r.connected for r in res}

    def setup(self, node_prefix: str = "sdp") -> None:
        """Identities and endpoint ids per pod, a datapath per node (loaded,
        ipcache filled), endpoints set, every lxc device attached."""
        layout = self.layout
        for i, p in enumerate(layout.pods):
            self.identity[p.key] = 256 + i
            self.endpoint_id[p.key] = 1 + i
        for node in layout.nodes:
            dp = Datapath.open(node_name(node_prefix, self.lab.name, node.short), netns=node.netns)
            self.dps[node.short] = dp
            self.load_results[node.short] = dp.ensure_loaded()
            dp.sync_ipcache(self.ipcache_for(node))
        for p in layout.pods:
            with NetNS(p.node.netns, flags=0) as ipr:
                self.ifindex[p.key] = int(ipr.link_lookup(ifname=p.host_if)[0])
            dp = self.dp_of(p.key)
            dp.set_endpoint(
                EndpointInfo(self.ifindex[p.key], self.endpoint_id[p.key], self.identity[p.key])
            )
            self.attach_changed[p.key] = dp.attach(p.host_if)

    def teardown(self) -> None:
        self.close_readers()
        for dp in self.dps.values():
            with contextlib.suppress(Exception):
                dp.ensure_loaded()
            dp.unload()

    def open_readers(self, **kw: Any) -> None:
        for short, dp in self.dps.items():
            if short not in self.readers:
                self.readers[short] = dp.event_reader(**kw)

    def close_readers(self) -> None:
        for r in self.readers.values():
            r.close()
        self.readers.clear()

    def drain(self, settle: float = 0.1) -> tuple[np.ndarray, Losses]:
        """Everything the open readers have, after `settle` seconds of quiet."""
        parts: list[np.ndarray] = []
        losses = Losses()
        time.sleep(settle)
        for r in self.readers.values():
            ev, lo = r.drain()
            losses = losses + lo
            if len(ev):
                parts.append(ev)
        if not parts:
            from datapath.perf import EMPTY

            return EMPTY, losses
        return np.concatenate(parts), losses
