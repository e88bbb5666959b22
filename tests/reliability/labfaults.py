"""Faults injected into a running lab: SIGKILL and restart of the relay or of a
node's collector (with the argv they were started with), a node's management link
cut and restored, a small tmpfs for the collectors' spool. Restarts use the lab's own
process bookkeeping (sensilla.lab.processes), so `lab down` still stops everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sensilla.lab import processes
from sensilla.lab.processes import ProcessInfo
from tests.reliability import ledger


def _info(lab: Any, name: str) -> ProcessInfo:
    for p in processes.list_processes(lab.dir):
        if p.name == name:
            return p
    raise AssertionError(f"lab {lab.name} has no process {name}")


def _strip_nsenter(argv: list[str]) -> list[str]:
    if argv and argv[0] == "nsenter" and "--" in argv:
        return argv[argv.index("--") + 1 :]
    return argv


def sigkill(lab: Any, name: str) -> int:
    """SIGKILL one of the lab's processes (by its recorded pid) and reap it."""
    info = _info(lab, name)
    assert processes.alive(info.pid), f"{name} is not running"
    os.kill(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while processes.alive(info.pid):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(info.pid, os.WNOHANG)
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} ({info.pid}) survived SIGKILL")
        time.sleep(0.02)
    return info.pid


def restart_relay(lab: Any, timeout: float = 90.0) -> int:
    info = _info(lab, "relay")
    assert not processes.alive(info.pid), "the relay is still running"
    ready = lab.dir / "relay.ready"
    ready.unlink(missing_ok=True)
    new = processes.start(lab.dir, "relay", _strip_nsenter(info.argv))

    def is_ready() -> bool:
        try:
            return bool(json.loads(ready.read_text()).get("pid") == new.pid)
        except (FileNotFoundError, ValueError):
            assert processes.alive(new.pid), f"the relay exited:\n{log_tail(lab, 'relay')}"
            return False

    ledger.wait_for("relay ready after restart", is_ready, timeout, interval=0.1)
    return new.pid


def restart_collector(lab: Any, node: str, timeout: float = 90.0) -> int:
    name = f"collector-{node}"
    info = _info(lab, name)
    assert not processes.alive(info.pid), f"{name} is still running"
    started = processes.launch(
        lab.dir, name, _strip_nsenter(info.argv), netns=info.netns, ready_timeout=timeout
    )
    return started.wait().pid


def log_tail(lab: Any, name: str, chars: int = 3000) -> str:
    path = Path(lab.dir) / "logs" / f"{name}.log"
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def link(ifname: str, state: str) -> None:
    """Set a root-namespace management veth of the test's own lab down or up."""
    assert state in ("up", "down")
    subprocess.run(["ip", "link", "set", "dev", ifname, state], check=True, capture_output=True)


@contextlib.contextmanager
def small_tmpfs(size: str, prefix: str = "srl-spool-") -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh directory; unmounted and removed after."""
    mnt = Path(tempfile.mkdtemp(prefix=prefix))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "srlspool", str(mnt)],
        check=True,
        capture_output=True,
    )
    try:
        yield mnt
    finally:
        for _ in range(50):
            r = subprocess.run(["umount", str(mnt)], capture_output=True)
            if r.returncode == 0:
                break
            time.sleep(0.1)  # a collector may still be closing its files
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def collectors(lab: Any) -> dict[str, dict[str, Any]]:
    """node -> the collector's addresses (Observer, metrics) from lab status."""
    return {c["node"]: c for c in lab.status()["collectors"]}


def relay_address(lab: Any) -> str:
    return str(lab.description()["relay"]["address"])


def stop_lab(lab: Any) -> None:
    """Take a lab down now (e.g. before the tmpfs its collectors spool on goes away);
    the fixture that made it finds nothing left to remove."""
    from sensilla.lab import down

    leftovers = down(lab.name)
    assert not leftovers, f"lab {lab.name} left {leftovers}"
