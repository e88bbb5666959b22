"""`sensilla observe` talks to the relay by default (localhost:4245, Hubble Relay's
port) and prints the relay's flows with Hubble's printers; filters go through."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensilla.cli.main import build_parser
from sensilla.cli.main import main as cli
from tests.relay.observer.flowgen import FlowGen, batches, key
from tests.relay.observer.support import RelayThread, chdb_url, load_store, running_relay

N = 500


@pytest.fixture(scope="module")
def relay(chdb_dir: Path) -> Iterator[tuple[RelayThread, list]]:  # type: ignore[type-arg]
    url = chdb_url(chdb_dir, "srq_cli")
    flows = list(FlowGen(21, start_ns=(int(time.time()) - 600) * 10**9, step_ns=10**9).flows(N))
    load_store(url, batches(flows, 100))
    with running_relay(url) as r:
        yield r, flows


def test_srq_observe_defaults_to_the_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENSILLA_SERVER", raising=False)
    assert build_parser().parse_args(["observe"]).server == "localhost:4245"


def test_srq_observe_prints_relay_flows(relay, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    r, flows = relay
    capsys.readouterr()
    assert cli(["observe", "--server", r.address, "--last", "7", "-o", "json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    newest = sorted(flows, key=key)[-7:]
    assert [x["flow"]["uuid"] for x in lines] == [f.uuid for f in newest]
    assert all(x["node_name"] == x["flow"]["node_name"] for x in lines)
    assert cli(["observe", "--server", r.address, "--namespace", "shop", "--verdict", "DROPPED",
                "--all", "-o", "compact"]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    want = [
        f
        for f in flows
        if f.verdict == 2 and "shop" in (f.source.namespace, f.destination.namespace)
    ]
    assert len(out) == len(want) > 0 and all("DROPPED" in line for line in out)
