"""The lab on real namespaces: connectivity, labels, and clean teardown."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from sensilla.lab import Options, down, topology, up
from sensilla.lab import netns as N
from sensilla.lab.probe import probe, probe_ports, select_pairs
from sensilla.lab.runtime import BPF_ROOT, LABS_DIR, Lab, LabError

pytestmark = pytest.mark.needs_root


@pytest.mark.parametrize(
    ("protocol", "port", "family"),
    [
        ("TCP", 80, 4),
        ("UDP", 81, 4),
        ("SCTP", 80, 4),
        ("TCP", 81, 6),
        ("UDP", 80, 6),
        ("SCTP", 81, 6),
    ],
)
def test_every_pair_connects(bare_lab: Any, protocol: str, port: int, family: int) -> None:
    layout = bare_lab.layout()
    pairs = select_pairs(layout, None, None)
    assert len(pairs) == 72
    started = time.monotonic()
    results = probe(layout, pairs, port, protocol, family)
    elapsed = time.monotonic() - started
    failed = [r for r in results if not r.connected]
    assert not failed, failed
    print(f"{protocol}/{port} IPv{family}: 72/72 connected in {elapsed:.2f} s")


def test_unserved_port_is_reported_not_connected(bare_lab: Any) -> None:
    layout = bare_lab.layout()
    pairs = select_pairs(layout, ["x/a"], ["y/b", "z/c"])
    for protocol in ("TCP", "UDP", "SCTP"):
        results = probe(layout, pairs, 82, protocol, 4, timeout=0.6)
        assert [r.connected for r in results] == [False, False], (protocol, results)


@pytest.mark.parametrize("protocol", ["TCP", "UDP", "SCTP"])
def test_probe_ports_reports_each_attempt_in_order(bare_lab: Any, protocol: str) -> None:
    """Mixed ports in one round: each result names its port, its own source port
    and when it ran, in the order asked (the reliability traffic finds flows by them)."""
    layout = bare_lab.layout()
    p = layout.pod
    targets = [(p("x/a"), p("y/b"), 80), (p("x/a"), p("y/b"), 82), (p("z/c"), p("x/a"), 81)]
    before = time.time_ns()
    results = probe_ports(targets, protocol, 4, timeout=0.6)
    after = time.time_ns()
    assert [(r.source, r.destination, r.port) for r in results] == [
        (s.key, d.key, port) for s, d, port in targets
    ]
    assert [r.connected for r in results] == [True, False, True], results
    sports = [r.sport for r in results]
    assert all(1024 <= sp <= 65535 for sp in sports), sports
    assert sports[0] != sports[1]  # two sockets of one pod
    for r in results:
        assert before <= r.started_ns <= r.ended_ns <= after, r


def _cli(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sensilla.cli.main", "lab", "--name", lab.name, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_probe_json_and_status(bare_lab: Any) -> None:
    out = _cli(
        bare_lab, "probe", "--port", "80", "--protocol", "TCP", "--from", "x/a", "-o", "json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["port"] == 80 and data["protocol"] == "TCP"
    assert {r["to"] for r in data["results"]} == {f"{n}/{p}" for n in "xyz" for p in "abc"} - {
        "x/a"
    }
    assert all(r["from"] == "x/a" and r["connected"] for r in data["results"])
    status = json.loads(_cli(bare_lab, "status", "-o", "json").stdout)
    assert {n["name"] for n in status["nodes"]} == {
        f"{bare_lab.name}-worker",
        f"{bare_lab.name}-worker2",
    }
    pod = next(p for p in status["pods"] if (p["namespace"], p["name"]) == ("y", "b"))
    assert pod["ips"][0].startswith("10.244.") and pod["ips"][1].startswith("fd00:10:244:")
    assert pod["labels"] == {"pod": "b"} and pod["node"].startswith(bare_lab.name)
    assert status["relay"] == {} and status["collectors"] == []


def test_label_changes_show_in_status_and_state_dir(bare_lab: Any) -> None:
    try:
        assert _cli(bare_lab, "label", "pod", "z/c", "tier=db").returncode == 0
        assert _cli(bare_lab, "label", "namespace", "z", "team=blue").returncode == 0
        refused = _cli(bare_lab, "label", "pod", "z/c", "pod=other")
        assert refused.returncode == 2 and "--overwrite" in refused.stderr
        status = json.loads(_cli(bare_lab, "status", "-o", "json").stdout)
        pod = next(p for p in status["pods"] if (p["namespace"], p["name"]) == ("z", "c"))
        assert pod["labels"] == {"pod": "c", "tier": "db"}
        ns = next(n for n in status["namespaces"] if n["name"] == "z")
        assert ns["labels"]["team"] == "blue"
        obj = bare_lab.state.read("pods", "z/c")
        assert obj["metadata"]["labels"] == {"pod": "c", "tier": "db"}
        assert int(obj["metadata"]["resourceVersion"]) == bare_lab.state.revision() - 1
    finally:
        _cli(bare_lab, "label", "pod", "z/c", "tier-")
        _cli(bare_lab, "label", "namespace", "z", "team-")


def _traces(name: str) -> list[str]:
    found = [f"netns {n}" for n in N.list_names() if n.startswith(f"{name}-")]
    with N.ipr(None) as root:
        found += [
            f"link {link.get('ifname')}"
            for link in root.get_links()
            if str(link.get("ifname")).startswith(f"{name}m")
        ]
    if (LABS_DIR / name).exists():
        found.append(f"dir {LABS_DIR / name}")
    found += [f"pins {p}" for p in BPF_ROOT.glob(f"{name}-*")] if BPF_ROOT.exists() else []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in ps.splitlines() if f"/labs/{name}/" in line]
    return found


def test_down_removes_everything_and_is_idempotent() -> None:
    name = "tdown1"
    down(name)
    started = time.monotonic()
    up(name, options=Options(relay=False, collectors=False))
    up_s = time.monotonic() - started
    try:
        assert _traces(name), "the lab should exist"
        with pytest.raises(LabError, match="already up"):
            up(name, options=Options(relay=False, collectors=False))
    finally:
        started = time.monotonic()
        assert down(name) == []
        down_s = time.monotonic() - started
    assert _traces(name) == []
    assert down(name) == []
    print(f"lab up {up_s:.2f} s, down {down_s:.2f} s")


def test_down_after_up_failed_half_way(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "tdown2"
    down(name)
    real = topology.build_pod
    built: list[str] = []

    def failing(pod: Any, journal: Any) -> None:
        if len(built) == 4:
            raise RuntimeError("injected failure while building pods")
        built.append(pod.key)
        real(pod, journal)

    monkeypatch.setattr(topology, "build_pod", failing)
    with pytest.raises(RuntimeError, match="injected"):
        up(name, options=Options(relay=False, collectors=False))
    # up cleans up after itself; and down, run again, finds nothing
    assert _traces(name) == []
    assert down(name) == []


def test_down_cleans_a_lab_whose_process_died_mid_up() -> None:
    """Simulate an `up` killed before it could clean up: create part of a lab by
    hand through the journal, then `down` must remove it."""
    name = "tdown3"
    down(name)
    lab = Lab(name)
    lab.dir.mkdir(parents=True, exist_ok=True)
    lab.journal("netns", f"{name}-fabric")
    N.create(f"{name}-fabric")
    N.create(f"{name}-worker")  # not journaled: found by its prefix
    with N.ipr(f"{name}-worker") as h:
        h.link("add", ifname="mgmt0", kind="veth", peer={"ifname": f"{name}m1", "net_ns_pid": 1})
    lab.journal("rootlink", f"{name}m1")
    assert _traces(name)
    assert down(name) == []
    assert _traces(name) == []


def test_down_stops_a_process_that_execs_something_else() -> None:
    """Processes are recognised by pid and start time, not by command line: a
    process that exec()s another program (as `sensilla ui` execs Streamlit) is
    still stopped."""
    from sensilla.lab import processes

    name = "tdown4"
    down(name)
    lab = Lab(name)
    lab.dir.mkdir(parents=True, exist_ok=True)
    info = processes.start(lab.dir, "execer", ["/bin/sh", "-c", "exec sleep 300"])
    time.sleep(0.2)
    assert processes.alive(info.pid)
    assert down(name) == []
    assert not processes.alive(info.pid)
