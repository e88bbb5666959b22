"""Fixtures of the datapath tests.

- `unit_dp`: a loaded datapath (pins under /sys/fs/bpf/sensilla/sdp-u…) whose
  endpoint is the loopback device, driven with BPF_PROG_TEST_RUN on crafted
  packets. Attached nowhere.
- `lab_dp`: a lab (namespaces prefixed `sdp`) with one datapath per node,
  attached to every pod's lxc device, ipcache and endpoints filled, no policy.
  Tests install policies and must leave none behind (`lab_dp.reset()`).
Everything is removed at the end, on failure too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from datapath import Datapath, EventReader, Losses
from datapath.types import Direction, EndpointInfo, EndpointPolicy, ReservedIdentity

UNIT_IFINDEX = 1  # the loopback device: BPF_PROG_TEST_RUN needs a real one
UNIT_EP = 7
UNIT_IDENTITY = 300
UNIT_IPCACHE = {
    "10.0.0.1/32": UNIT_IDENTITY,  # the endpoint itself
    "10.0.0.2/32": 400,
    "10.0.0.3/32": 401,
    "10.0.0.254/32": int(ReservedIdentity.HOST),
    "fd00::1/128": UNIT_IDENTITY,
    "fd00::2/128": 400,
    "fd00::3/128": 401,
    "fd00::fe/128": int(ReservedIdentity.HOST),
}


class UnitDatapath:
    def __init__(self, dp: Datapath) -> None:
        self.dp = dp
        self.reader: EventReader | None = None

    def reset(self) -> None:
        dp = self.dp
        dp.set_endpoint(EndpointInfo(UNIT_IFINDEX, UNIT_EP, UNIT_IDENTITY))
        for d in Direction:
            dp.install_policy(UNIT_EP, d, EndpointPolicy(enforced=False))
        dp.sync_ipcache(UNIT_IPCACHE)
        dp.flush_conntrack()
        dp._map("drops").clear()
        dp._map("frags").clear()
        dp.set_aggregation("medium", 5.0, drop_interval_s=1.0)

    def egress(self, pkt: bytes) -> int:
        return self.dp.test_run("from_pod", pkt, UNIT_IFINDEX)

    def ingress(self, pkt: bytes) -> int:
        return self.dp.test_run("to_pod", pkt, UNIT_IFINDEX)

    def events(self, timeout: float = 0.05) -> np.ndarray:
        assert self.reader is not None
        parts = []
        deadline = time.monotonic() + timeout
        while True:
            ev, _ = self.reader.drain()
            if len(ev):
                parts.append(ev)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        return np.concatenate(parts) if parts else ev


@pytest.fixture(scope="module")
def unit_dp_module() -> Iterator[UnitDatapath]:
    dp = Datapath.open("sdp-u" + secrets.token_hex(4))
    try:
        dp.ensure_loaded()
        u = UnitDatapath(dp)
        u.reader = dp.event_reader(pages=64, wakeup_events=1)
        try:
            yield u
        finally:
            u.reader.close()
    finally:
        dp.unload()


@pytest.fixture
def unit_dp(unit_dp_module: UnitDatapath) -> UnitDatapath:
    unit_dp_module.reset()
    unit_dp_module.events(0)  # discard what earlier tests left
    return unit_dp_module


# ------------------------------------------------------------------ the lab


@dataclass
class LabDatapath:
    lab: Any
    layout: Any
    dps: dict[str, Datapath] = field(default_factory=dict)  # node short name -> datapath
    identity: dict[str, int] = field(default_factory=dict)  # pod key -> identity
    endpoint_id: dict[str, int] = field(default_factory=dict)
    ifindex: dict[str, int] = field(default_factory=dict)
    readers: dict[str, EventReader] = field(default_factory=dict)

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
            ident = (
                int(ReservedIdentity.HOST) if n is node else int(ReservedIdentity.REMOTE_NODE)
            )
            for a in n.addresses:
                net = ipaddress.ip_network(a)
                m[str(net)] = ident
        for p in self.layout.pods:
            m[f"{p.ipv4}/32"] = self.identity[p.key]
            m[f"{p.ipv6}/128"] = self.identity[p.key]
        return m

    def probe(
        self, src: str, dst: str, port: int, protocol: str = "TCP", family: int = 4,
        timeout: float = 1.0,
    ) -> bool:
        from sensilla.lab import probe as P

        res = P.probe(self.layout, [(self.pod(src), self.pod(dst))], port, protocol, family, timeout)
        return res[0].connected

    def probe_many(
        self, pairs: list[tuple[str, str]], port: int, protocol: str = "TCP", family: int = 4,
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


@contextlib.contextmanager
def lab_datapath(prefix: str = "sdp") -> Iterator[LabDatapath]:
    from pyroute2 import IPRoute

    from sensilla.lab import Options, temporary_lab

    with temporary_lab(prefix, options=Options(relay=False, collectors=False)) as lab:
        layout = lab.layout()
        ld = LabDatapath(lab, layout)
        try:
            for i, p in enumerate(layout.pods):
                ld.identity[p.key] = 256 + i
                ld.endpoint_id[p.key] = 1 + i
            for node in layout.nodes:
                dp = Datapath.open(f"sdp-{lab.name}-{node.short}", netns=node.netns)
                ld.dps[node.short] = dp
                dp.ensure_loaded()
                dp.sync_ipcache(ld.ipcache_for(node))
            for p in layout.pods:
                with IPRoute(netns=p.node.netns, flags=0) as ipr:
                    ld.ifindex[p.key] = int(ipr.link_lookup(ifname=p.host_if)[0])
                dp = ld.dp_of(p.key)
                dp.set_endpoint(
                    EndpointInfo(ld.ifindex[p.key], ld.endpoint_id[p.key], ld.identity[p.key])
                )
                dp.attach(p.host_if)
            yield ld
        finally:
            ld.close_readers()
            for dp in ld.dps.values():
                with contextlib.suppress(Exception):
                    dp.ensure_loaded()
                dp.unload()


@pytest.fixture(scope="module")
def lab_dp_module() -> Iterator[LabDatapath]:
    with lab_datapath() as ld:
        yield ld


@pytest.fixture
def lab_dp(lab_dp_module: LabDatapath) -> Iterator[LabDatapath]:
    lab_dp_module.reset()
    try:
        yield lab_dp_module
    finally:
        lab_dp_module.close_readers()
        lab_dp_module.reset()
