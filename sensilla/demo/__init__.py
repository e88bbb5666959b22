"""`sensilla demo`: the whole system on one machine.

Brings up the lab (the netpol x/y/z model plus a small application, its
monitoring and DNS), the collectors, a relay on chDB, NetworkPolicies that allow the
application's paths and deny the rest (one namespace in audit mode), a traffic
generator and the UI; prints where to look; tears everything down on Ctrl-C or
after --duration.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sensilla.lab import processes, runtime
from sensilla.lab.components import Options

HERE = Path(__file__).resolve().parent
SPEC = HERE / "spec.yaml"
POLICIES = HERE / "policies.yaml"
UI_PORT = 8501


def _wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensilla.cli.main", *args]


def run(
    name: str = "sensilla",
    duration: float | None = None,
    ui: bool = True,
    ui_port: int = UI_PORT,
    rate: float = 15.0,
    ui_address: str = "127.0.0.1",
) -> int:
    if os.geteuid() != 0:
        print("sensilla demo: needs root (network namespaces, eBPF)", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)

    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if runtime.Lab(name).exists():
        say(f"removing the previous lab {name!r}")
        runtime.down(name)
    leftovers: list[str] = []
    try:
        lab = runtime.up(name, str(SPEC), Options(), progress=say)
        say("applying the demo's NetworkPolicies")
        applied = subprocess.run(
            _cli("policy", "apply", "--lab", name, "-f", str(POLICIES)),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if applied.returncode != 0:
            raise RuntimeError(f"policy apply failed: {applied.stderr.strip()}")
        say("starting the traffic generator")
        processes.start(
            lab.dir,
            "traffic",
            [sys.executable, "-m", "sensilla.demo.traffic", name, "--rate", str(rate)],
            ready_line=True,
        )
        relay = lab.description()["relay"]["address"]
        if ui:
            say("starting the UI")
            processes.start(
                lab.dir,
                "ui",
                _cli("ui", "--relay", relay, "--port", str(ui_port), "--address", ui_address),
            )
            if not _wait_port(ui_address, ui_port, 60):
                raise RuntimeError(f"the UI did not listen on port {ui_port} within 60 s")
            say(f"UI: http://{ui_address}:{ui_port}")
        say(f"try: sensilla observe --server {relay} --follow")
        say("     sensilla observe --verdict DROPPED --last 20")
        say("     sensilla policy explain --from x/a --to shop/db-0 --port 5432")
        say("press Ctrl-C to stop" + (f" (or wait {duration:.0f} s)" if duration else ""))
        while not stop["now"]:
            if duration is not None and time.monotonic() - started >= duration:
                break
            time.sleep(0.2)
    finally:
        say("tearing down")
        leftovers = runtime.down(name)
        for item in leftovers:
            print(f"could not remove {item}", file=sys.stderr)
    return 1 if leftovers else 0
