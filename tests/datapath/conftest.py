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
import secrets
import time
from collections.abc import Iterator

import numpy as np
import pytest

from datapath import Datapath, EventReader
from datapath.types import Direction, EndpointInfo, EndpointPolicy, ReservedIdentity
from tests.datapath.labdp import LabDatapath

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
        u.reader = dp.event_reader(pages=64, wakeup_events=1, sweep_interval_s=None)
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


@contextlib.contextmanager
def lab_datapath(prefix: str = "sdp") -> Iterator[LabDatapath]:
    """A fresh lab with a datapath per node, attached; all removed on exit."""
    from sensilla.lab import Options, temporary_lab

    with temporary_lab(prefix, options=Options(relay=False, collectors=False)) as lab:
        ld = LabDatapath(lab, lab.layout())
        try:
            ld.setup()
            yield ld
        finally:
            ld.teardown()


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
