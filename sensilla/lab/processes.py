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
    # the kernel's start time of the process (clock ticks since boot): with the pid
    # it names the process for sure, even after it exec()s something else
    start_ticks: int = 0

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _pid_file(lab_dir: Path, name: str) -> Path:
    return lab_dir / "pids" / f"{name}.json"


@dataclass
class Starting:
    """A process started with a ready line that is not yet confirmed ready."""

    info: ProcessInfo
    proc: subprocess.Popen[bytes]
    lab_dir: Path
    timeout: float
    started: float

    def wait(self) -> ProcessInfo:
        """Wait for the process's "ready" line; on failure stop it and raise with
        the end of its log."""
        import selectors

        assert self.proc.stdout is not None
        name, log_path = self.info.name, self.info.log
        remaining = max(0.0, self.timeout - (time.monotonic() - self.started))
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = bool(sel.select(timeout=remaining))
        sel.close()
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        self.proc.stdout.close()
        if line != "ready":
            stop_one(self.lab_dir, name)
            why = "did not become ready" if not ready else f"failed to start: {line or 'exited'}"
            raise RuntimeError(f"{name} {why} (see {log_path}):\n{_tail(log_path)}")
        return self.info


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def launch(
    lab_dir: Path,
    name: str,
    argv: list[str],
    netns: str | None = None,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Starting:
    """Start a process that prints "ready" on stdout when it is; returns at once
    (call .wait() to confirm), so several processes can start side by side."""
    info, proc = _spawn(lab_dir, name, argv, netns, env, ready_line=True)
    return Starting(info, proc, lab_dir, ready_timeout, time.monotonic())


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
    if ready_line:
        return launch(lab_dir, name, argv, netns, env, ready_timeout).wait()
    info, _ = _spawn(lab_dir, name, argv, netns, env, ready_line=False)
    return info


def _spawn(
    lab_dir: Path,
    name: str,
    argv: list[str],
    netns: str | None,
    env: dict[str, str] | None,
    ready_line: bool,
) -> tuple[ProcessInfo, subprocess.Popen[bytes]]:
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
    info = ProcessInfo(
        name, proc.pid, full, netns, str(log_path), time.time(), start_ticks(proc.pid)
    )
    _pid_file(lab_dir, name).write_text(json.dumps(info.to_dict()))
    return info, proc


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


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def _same_process(info: ProcessInfo) -> bool:
    """Guard against pid reuse: the pid must still be the process we started."""
    ticks = start_ticks(info.pid)
    return ticks != 0 and (info.start_ticks == 0 or ticks == info.start_ticks)


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
