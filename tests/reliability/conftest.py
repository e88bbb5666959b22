"""Fuzz targets run in this process: each one's memory growth is measured and bounded
(an input that makes a parser or encoder hold on to memory shows up here)."""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest

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
    assert grown < MAX_GROWTH, f"{request.node.name}: memory grew by {grown >> 20} MiB"
