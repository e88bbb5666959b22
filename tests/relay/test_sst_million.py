"""Acceptance 1 and 2: 1M flows from two synthetic collectors through a relay process
into chDB and into clickhouse-server 18.16 over the native protocol: exactly 1M
distinct flows stored, rollups exact, each collector's acked sequence its last batch.
The fast tier covers the same path in-process (test_sst_ingest.py, 2 x 6k flows per
backend) and through a relay process in the fault tests."""

from __future__ import annotations

import itertools

import pytest

from tests.relay.clickhouse_server import ClickHouseServer
from tests.relay.faults import plain_run, verify, workdir

_dbs = itertools.count(1)


def _run(kind: str, flows_per_client: int, request: pytest.FixtureRequest) -> None:
    with workdir() as work:
        if kind == "chdb":
            url = f"chdb://{work}/store"
        else:
            server: ClickHouseServer = request.getfixturevalue("ch18")
            url = server.url.rsplit("/", 1)[0] + f"/sst_volume_{next(_dbs)}"
        out = plain_run(url, work, flows_per_client=flows_per_client)
        figures = verify(url, out)
        assert figures["flows"] == figures["rows"] == 2 * flows_per_client
        assert all(c.last_batch_seq == flows_per_client // 1000 for c in out.clients)
        print(f"\nsst volume {kind}: {figures}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chdb", "ch18"])
def test_sst_one_million_flows(kind: str, request: pytest.FixtureRequest) -> None:
    _run(kind, 500_000, request)
