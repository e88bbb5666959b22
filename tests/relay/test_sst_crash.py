"""Acceptance 3: SIGKILL the relay mid-ingest 5 times at random points, restarting it
each time; afterwards every flow is stored exactly once (both backends), rollups are
exact and each collector's acked sequence is its last batch."""

from __future__ import annotations

import itertools

import pytest

from tests.relay.clickhouse_server import ClickHouseServer
from tests.relay.faults import sigkill_run, verify, workdir

_dbs = itertools.count(1)


def _url(kind: str, work_dir: str, request: pytest.FixtureRequest) -> str:
    if kind == "chdb":
        return f"chdb://{work_dir}/store"
    server: ClickHouseServer = request.getfixturevalue("ch18")
    return server.url.rsplit("/", 1)[0] + f"/sst_crash_{next(_dbs)}?send_receive_timeout=20"


def _run(kind: str, flows: int, rate: float, request: pytest.FixtureRequest) -> None:
    with workdir() as work:
        url = _url(kind, str(work), request)
        outcome = sigkill_run(url, work, flows_per_client=flows, kills=5, rate=rate)
        assert outcome.kills == 5, f"ingest ended before 5 kills ({outcome.kills})"
        figures = verify(url, outcome)
        assert figures["reconnects"] >= 5  # type: ignore[operator]
        print(f"\nsst sigkill {kind} {2 * flows} flows: {figures}")
        assert outcome.log.count("=== start") == 6


@pytest.mark.parametrize("kind", ["chdb", "ch18"])
def test_sst_sigkill_five_times_exactly_once(kind: str, request: pytest.FixtureRequest) -> None:
    # paced (2 x 1250 flows/s: 16 s of ingest) so that 5 kills land while ingest runs,
    # also when a loaded machine takes 2 s per relay restart
    _run(kind, 20_000, 1250, request)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chdb", "ch18"])
def test_sst_sigkill_five_times_exactly_once_large(
    kind: str, request: pytest.FixtureRequest
) -> None:
    _run(kind, 150_000, 6000, request)
