"""Fuzz targets run in this process: each one's memory growth is measured and, in the
fast tier, bounded (an input that makes a parser or encoder hold on to memory shows up
here). In the full tier hypothesis's own bookkeeping of 10,000 examples takes hundreds
of MiB (measured: 64 -> 632 MiB for an empty test body), so there the bound on the code
under test comes from the atheris runs of the same targets (atheris_run --rss-limit-mb,
test_srl_atheris.py) and from the servers' RSS (test_srl_fuzz_grpc.py)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

from tests.reliability.tiers import FULL

MAX_GROWTH = 256 << 20


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(autouse=True)
def bounded_memory(request: pytest.FixtureRequest) -> Iterator[None]:
    if not request.node.name.startswith("test_srl_fuzz"):
        yield
        return
    before = _rss()
    yield
    grown = _rss() - before
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    print(f"\nsrl {request.node.name}: RSS {grown / 2**20:+.0f} MiB (peak {peak >> 20} MiB)")
    if not FULL:
        assert grown < MAX_GROWTH, f"{request.node.name}: memory grew by {grown >> 20} MiB"
