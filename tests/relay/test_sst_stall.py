"""Acceptance 4: a store that stalls (chDB held busy; the server frozen; the server
stopped) makes collectors back off and spool; nothing acked is lost and ingest
resumes by itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.relay.clickhouse_server import ClickHouseServer, available
from tests.relay.faults import Outcome, stall_run, verify, workdir


def _check(kind: str, url: str, out: Outcome) -> None:
    figures = verify(url, out)  # every flow exactly once, acked = last batch
    print(f"\nsst stall {kind}: {figures} {out.notes}")
    assert out.notes["acks_during_stall"] == 0
    # the collectors backed off: they heard FlowControl, and kept generating into
    # their spools (beyond the in-flight window) while nothing was acked
    assert all(c.stats.flow_controls >= 1 for c in out.clients)
    assert float(out.notes["spool_at_end"]) > 8  # type: ignore[arg-type]
    assert out.notes["exit_code"] == 0


def test_sst_chdb_held_busy() -> None:
    with workdir() as work:
        url = f"chdb://{work}/store"
        stall_file = Path(work) / "stall"
        out = stall_run(
            url,
            work,
            begin=stall_file.touch,
            end=stall_file.unlink,
            hold_s=4.0,
            flows_per_client=15_000,
            rate=2000,
            env={"SENSILLA_STORE_STALL_FILE": str(stall_file)},
        )
        _check("chdb held busy", url, out)


def _server() -> ClickHouseServer:
    if not available():
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer()
    server.start()
    return server


def test_sst_server_frozen() -> None:
    server = _server()
    try:
        with workdir() as work:
            url = server.url + "?send_receive_timeout=2&connect_timeout=2"
            out = stall_run(
                url,
                work,
                begin=server.pause,
                end=server.resume,
                hold_s=5.0,
                flows_per_client=15_000,
                rate=2000,
            )
            _check("server frozen (SIGSTOP)", url, out)
            assert "store write of" in out.log  # failures, retried
    finally:
        server.cleanup()


def test_sst_server_stopped_and_restarted() -> None:
    server = _server()
    try:
        with workdir() as work:
            url = server.url + "?send_receive_timeout=5&connect_timeout=2"
            out = stall_run(
                url,
                work,
                begin=server.stop,
                end=server.start,
                hold_s=4.0,
                flows_per_client=15_000,
                rate=2000,
            )
            _check("server stopped", url, out)
            assert "store write of" in out.log
    finally:
        server.cleanup()
