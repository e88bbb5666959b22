"""`sensilla relay` as a child process for tests: start (waits for its ready file),
SIGKILL, SIGTERM; the same port across restarts so collectors reconnect to it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.relay.clickhouse_server import free_port

ROOT = Path(__file__).resolve().parents[2]


class RelayProcess:
    def __init__(
        self,
        store_url: str,
        workdir: Path,
        *,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.store_url = store_url
        self.workdir = workdir
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = workdir / "relay-ready.json"
        self.log = workdir / "relay.log"
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        self.ready.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "sensilla.cli.main",
            "--log-level",
            "INFO",
            "relay",
            "--store",
            self.store_url,
            "--listen",
            self.address,
            "--ready-file",
            str(self.ready),
            *self.args,
        ]
        if not any(a.startswith("--tls-cert-file") for a in self.args):
            cmd.append("--insecure")  # plaintext on loopback, explicitly
        with open(self.log, "ab") as log:
            log.write(f"\n=== start {self.starts + 1}\n".encode())
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited ({self.proc.returncode}):\n{self.tail()}")
            if self.ready.exists():
                with contextlib.suppress(ValueError):
                    data = json.loads(self.ready.read_text())
                    if data.get("pid") == self.proc.pid:
                        return
            time.sleep(0.05)
        raise RuntimeError(f"relay did not become ready:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
        return proc.returncode

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
