"""Acceptance 2 at full size (slow tier): 1M stored flows on chDB; GetFlows with each
filter kind alone and combined returns exactly what the in-memory predicate selects
(whole answers up to 50k flows per request, windows of 50k beyond, and the
number/first/since/until selectors)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.relay.observer.dataset import build
from tests.relay.observer.history_checks import check_case, check_lossless
from tests.relay.observer.support import chdb_url, running_relay

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

N = 1_000_000
MAX_FLOWS = 50_000  # per request: gRPC streams ~10k flows/s to a Python client here


def test_srq_history_1m_every_case(chdb_dir: Path) -> None:
    ds = build(chdb_url(chdb_dir, "srq_hist1m"), N, seed=23)
    print(f"\nstored {N} flows in {ds.build_s:.0f} s")
    with running_relay(ds.url) as relay:
        t0 = time.monotonic()
        total = 0
        for case in ds.cases:
            n = check_case(relay.address, ds, case, MAX_FLOWS)
            assert 0 < n < N, (case.name, n)
            total += n
        check_lossless(relay.address, ds)
        print(f"{len(ds.cases)} cases checked in {time.monotonic() - t0:.0f} s")
