"""The fault suite: each fault on a fresh lab under steady traffic (scenario.py says
what is checked). The fast tier runs one pass of each fault; the full tier (slow)
repeats them, each pass on a fresh lab. Figures are printed and saved under
tests/artifacts/reliability/ (and collected in docs/reliability.md)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sensilla.lab import Options
from tests.relay.clickhouse_server import ClickHouseServer, available
from tests.reliability import labfaults
from tests.reliability.scenario import Fault, run_fault

pytestmark = [pytest.mark.needs_root, pytest.mark.timeout(900)]

REPEATS = 3  # full tier: more passes of each fault, with longer holds
CHDB = "chDB"
CH18 = "clickhouse-server 18.16"
_databases = itertools.count(1)


@pytest.fixture(scope="module")
def clickhouse() -> Iterator[ClickHouseServer]:
    if not available():
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer(prefix="srl-ch-")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def ch_options(server: ClickHouseServer, **kw: Any) -> Options:
    """The lab's relay on the test's clickhouse-server, in a database of its own."""
    base = server.url.rsplit("/", 1)[0]
    url = f"{base}/srl_{next(_databases)}?connect_timeout=2&send_receive_timeout=5"
    return Options(store=url, **kw)


def _first_node(lab: Any) -> str:
    return sorted(labfaults.collectors(lab))[0]


# --- the faults --------------------------------------------------------------------


def relay_sigkill(lab: Any, hold_s: float = 2.0) -> Fault:
    return Fault(
        "relay SIGKILL",
        inject=lambda: labfaults.sigkill(lab, "relay"),
        restore=lambda: labfaults.restart_relay(lab),
        hold_s=hold_s,
    )


def collector_sigkill(lab: Any, hold_s: float = 2.0) -> Fault:
    node = _first_node(lab)
    return Fault(
        "collector SIGKILL",
        inject=lambda: labfaults.sigkill(lab, f"collector-{node}"),
        restore=lambda: labfaults.restart_collector(lab, node),
        hold_s=hold_s,
        may_lose=frozenset({node}),
        kills_collector=True,
        notes={"node": node},
    )


def link_cut(lab: Any, hold_s: float = 3.0) -> Fault:
    node = _first_node(lab)
    ifname = next(n.mgmt_root_if for n in lab.layout().nodes if n.name == node)
    return Fault(
        "management link cut",
        inject=lambda: labfaults.link(ifname, "down"),
        restore=lambda: labfaults.link(ifname, "up"),
        hold_s=hold_s,
        notes={"node": node, "link": ifname},
    )


def clickhouse_stop(server: ClickHouseServer, hold_s: float = 4.0) -> Fault:
    return Fault(
        "ClickHouse server stop/start",
        inject=server.stop,
        restore=server.start,
        hold_s=hold_s,
    )


SPOOL_TMPFS = "256k"


def spool_disk_full(lab: Any, hold_s: float = 8.0) -> Fault:
    """The relay away long enough for the spool's disk to fill up, then back."""
    return Fault(
        "spool disk full",
        inject=lambda: labfaults.sigkill(lab, "relay"),
        restore=lambda: labfaults.restart_relay(lab),
        hold_s=hold_s,
        may_lose=frozenset(labfaults.collectors(lab)),
        lingers=True,
        notes={"spool_tmpfs": SPOOL_TMPFS},
    )


# --- one pass of each (fast tier) ---------------------------------------------------

LabFactory = Callable[..., Any]


def test_srl_relay_sigkill(lab_factory: LabFactory) -> None:
    lab = lab_factory("srl", options=Options())
    run_fault(lab, relay_sigkill(lab), CHDB)


def test_srl_collector_sigkill(lab_factory: LabFactory) -> None:
    lab = lab_factory("srl", options=Options())
    run_fault(lab, collector_sigkill(lab), CHDB)


def test_srl_management_link_cut(lab_factory: LabFactory) -> None:
    lab = lab_factory("srl", options=Options())
    run_fault(lab, link_cut(lab), CHDB)


def test_srl_clickhouse_stop_start(lab_factory: LabFactory, clickhouse: ClickHouseServer) -> None:
    lab = lab_factory("srl", options=ch_options(clickhouse))
    run_fault(lab, clickhouse_stop(clickhouse), CH18)


def test_srl_spool_disk_full(lab_factory: LabFactory) -> None:
    with labfaults.small_tmpfs(SPOOL_TMPFS) as mnt:
        lab = lab_factory("srl", options=Options(collector_args=["--spool-dir", str(mnt)]))
        try:
            fig = run_fault(lab, spool_disk_full(lab), CHDB)
        finally:
            labfaults.stop_lab(lab)  # before the tmpfs goes
    # the disk did fill: flows were dropped, counted and reported
    assert fig.lost_reported_stream.get("OBSERVER_EVENTS_QUEUE", 0) > 0
    assert fig.lost_reported_metrics.get("spool_full", 0) > 0


# --- the full tier: every fault again, with other holds, and on both backends -------


@pytest.mark.slow
@pytest.mark.parametrize("n", range(REPEATS))
def test_srl_relay_sigkill_repeated(
    lab_factory: LabFactory, clickhouse: ClickHouseServer, n: int
) -> None:
    backend = CH18 if n % 2 else CHDB
    lab = lab_factory("srl", options=ch_options(clickhouse) if n % 2 else Options())
    run_fault(lab, relay_sigkill(lab, hold_s=1.0 + 2 * n), backend)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(REPEATS))
def test_srl_collector_sigkill_repeated(lab_factory: LabFactory, n: int) -> None:
    lab = lab_factory("srl", options=Options())
    run_fault(lab, collector_sigkill(lab, hold_s=0.5 + 2 * n), CHDB)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(REPEATS))
def test_srl_management_link_cut_repeated(lab_factory: LabFactory, n: int) -> None:
    lab = lab_factory("srl", options=Options())
    run_fault(lab, link_cut(lab, hold_s=2.0 + 10 * n), CHDB)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(REPEATS))
def test_srl_clickhouse_stop_start_repeated(
    lab_factory: LabFactory, clickhouse: ClickHouseServer, n: int
) -> None:
    lab = lab_factory("srl", options=ch_options(clickhouse))
    run_fault(lab, clickhouse_stop(clickhouse, hold_s=2.0 + 5 * n), CH18)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(REPEATS))
def test_srl_spool_disk_full_repeated(lab_factory: LabFactory, n: int) -> None:
    with labfaults.small_tmpfs(SPOOL_TMPFS) as mnt:
        lab = lab_factory("srl", options=Options(collector_args=["--spool-dir", str(mnt)]))
        try:
            run_fault(lab, spool_disk_full(lab, hold_s=6.0 + 4 * n), CHDB)
        finally:
            labfaults.stop_lab(lab)
