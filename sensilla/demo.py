"""The all-in-one demo: brings up the lab and keeps it running until Ctrl-C or
--duration, then tears everything down. Later waves add the agents, the relay,
the traffic generator and the UI (issue [Demo])."""

from __future__ import annotations

import os
import signal
import sys
import time

from sensilla.lab import runtime
from sensilla.lab.components import Options


def run(name: str, duration: float | None = None, ui: bool = True) -> int:
    del ui  # the UI arrives with the UI issue
    if os.geteuid() != 0:
        print("sensilla demo: needs root (network namespaces, eBPF)", file=sys.stderr)
        return 2
    started = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - started:5.1f}s] {msg}", file=sys.stderr, flush=True)

    if runtime.Lab(name).exists():
        say(f"removing the previous lab {name!r}")
        runtime.down(name)
    lab = runtime.up(name, None, Options(), progress=say)
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say(f"lab {lab.name!r} is up. Try: sensilla lab probe --port 80 --protocol TCP")
    say("press Ctrl-C to stop")
    try:
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
