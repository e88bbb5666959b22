"""`sensilla demo` end to end: every verdict within a minute, drops by default deny
in several namespaces, and a clean teardown on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from sensilla.lab import netns as N
from sensilla.lab.runtime import BPF_ROOT, LABS_DIR, Lab

pytestmark = pytest.mark.needs_root

NAME = "tdemo"


def _observe(server: str, *flags: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sensilla.cli.main",
            "observe",
            "--server",
            server,
            "-o",
            "json",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [
        json.loads(line)["flow"]
        for line in out.stdout.splitlines()
        if line.strip() and "flow" in json.loads(line)
    ]


def _wait_lab(timeout: float) -> Lab:
    lab = Lab(NAME)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.exists() and any(p.name == "traffic" for p in _procs(lab)):
            return lab
        time.sleep(0.5)
    raise AssertionError("the demo did not come up")


def _procs(lab: Lab) -> list[Any]:
    from sensilla.lab import processes

    return processes.list_processes(lab.dir)


def test_demo_shows_every_verdict_and_cleans_up() -> None:
    subprocess.run(
        [sys.executable, "-m", "sensilla.cli.main", "lab", "--name", NAME, "down"],
        capture_output=True,
        timeout=60,
    )
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sensilla.cli.main",
            "demo",
            "--name",
            NAME,
            "--no-ui",
            "--duration",
            "300",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lab = _wait_lab(90)
        started = time.monotonic()
        status = lab.status()
        verdicts: set[str] = set()
        drop_namespaces: set[str] = set()
        while time.monotonic() - started < 60:
            time.sleep(5)
            verdicts, drop_namespaces = set(), set()
            # through the relay: every node's flows, from the store
            for f in _observe(status["relay"]["address"], "--since", "2m", "--all"):
                verdicts.add(f["verdict"])
                ext = f.get("extensions", {})
                if f["verdict"] == "DROPPED" and ext.get("drop_detail") == "default-deny":
                    drop_namespaces.add(
                        f["destination"].get("namespace")
                        if f["traffic_direction"] == "INGRESS"
                        else f["source"].get("namespace")
                    )
            if {"FORWARDED", "DROPPED", "AUDIT"} <= verdicts and len(drop_namespaces) >= 2:
                break
        elapsed = time.monotonic() - started
        assert {"FORWARDED", "DROPPED", "AUDIT"} <= verdicts, verdicts
        assert len(drop_namespaces) >= 2, drop_namespaces
        print(f"every verdict after {elapsed:.0f} s; default-deny drops in {drop_namespaces}")
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, out
    assert "tearing down" in out
    assert not [n for n in N.list_names() if n.startswith(f"{NAME}-")]
    assert not (LABS_DIR / NAME).exists()
    assert not list(BPF_ROOT.glob(f"{NAME}-*")) if BPF_ROOT.exists() else True
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"/labs/{NAME}/" not in ps and "sensilla.demo.traffic" not in ps
    with N.ipr(None) as root:
        assert not [
            link for link in root.get_links() if str(link.get("ifname")).startswith(f"{NAME}m")
        ]
    qdisc = subprocess.run(["tc", "qdisc", "show"], capture_output=True, text=True).stdout
    assert "clsact" not in qdisc or NAME not in qdisc
