"""Long-running processes of a lab: started detached, tracked by pid files, stopped
for sure (SIGTERM, then SIGKILL of the whole process group)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sensilla.lab.netns import NETNS_DIR


@dataclass
class ProcessInfo:
    name: str
    pid: int
    argv: list[str]
    netns: str | None
    log: str
    started: float

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _pid_file(lab_dir: Path, name: str) -> Path:
    return lab_dir / "pids" / f"{name}.json"


def start(
    lab_dir: Path,
    name: str,
    argv: list[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
    ready_line: bool = False,
    ready_timeout: float = 30.0,
) -> ProcessInfo:
    """Start `argv` in its own session (inside `netns` via nsenter, which keeps
    /sys and so the bpffs pins visible). With ready_line, wait until the process
    prints a first line on stdout ("ready")."""
    (lab_dir / "pids").mkdir(parents=True, exist_ok=True)
    (lab_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_path = lab_dir / "logs" / f"{name}.log"
    full = list(argv)
    if netns is not None:
        full = ["nsenter", f"--net={NETNS_DIR / netns}", "--", *full]
    penv = dict(os.environ)
    penv.update(env or {})
    penv.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            full,
            stdout=subprocess.PIPE if ready_line else log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=penv,
        )
    info = ProcessInfo(name, proc.pid, full, netns, str(log_path), time.time())
    _pid_file(lab_dir, name).write_text(json.dumps(info.to_dict()))
    if ready_line:
        assert proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=ready_timeout):
            stop_one(lab_dir, name)
            raise RuntimeError(f"{name} did not become ready in {ready_timeout:.0f} s ({log_path})")
        line = proc.stdout.readline().decode().strip()
        proc.stdout.close()
        if line != "ready":
            stop_one(lab_dir, name)
            raise RuntimeError(f"{name} failed to start: {line or 'exited'} (see {log_path})")
    return info


def list_processes(lab_dir: Path) -> list[ProcessInfo]:
    out = []
    for f in sorted((lab_dir / "pids").glob("*.json")):
        with contextlib.suppress(ValueError, TypeError, FileNotFoundError):
            out.append(ProcessInfo(**json.loads(f.read_text())))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _same_process(info: ProcessInfo) -> bool:
    """Guard against pid reuse: the process must still run what we started."""
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    want = info.argv[-1].encode() if info.argv else b""
    return any(part == want for part in cmdline) or (
        info.netns is not None and any(b"nsenter" in part for part in cmdline)
    )


def stop_one(lab_dir: Path, name: str, grace: float = 3.0) -> None:
    f = _pid_file(lab_dir, name)
    try:
        info = ProcessInfo(**json.loads(f.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        f.unlink(missing_ok=True)
        return
    _terminate(info, grace)
    f.unlink(missing_ok=True)


def _terminate(info: ProcessInfo, grace: float) -> None:
    if not alive(info.pid) or not _same_process(info):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(info.pid):
        _reap(info.pid)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(info.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(info.pid):
        _reap(info.pid)
        time.sleep(0.05)
    _reap(info.pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_all(lab_dir: Path, grace: float = 3.0) -> None:
    for info in list_processes(lab_dir):
        _terminate(info, grace)
        _pid_file(lab_dir, info.name).unlink(missing_ok=True)
