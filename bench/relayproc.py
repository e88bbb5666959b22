"""A relay process for the benchmarks, started and stopped by pid.

`Relay(store_url, workdir)` runs `sensilla relay` (the CLI, as deployed). With
`followers=N` it runs this module instead, which builds the same RelayConfig
through the relay's API with the read APIs' follower limits raised to N: the
interference benchmark opens 1,000 followers from one host, and the CLI caps
followers at 16 per client host and 512 in all (relay.observer.limits.Limits).

    python -m bench.relayproc --store URL --listen ADDR --ready-file F \\
        [--metrics ADDR] [--followers N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.core import ROOT


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Relay:
    def __init__(
        self,
        store_url: str,
        workdir: Path,
        *,
        followers: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.store_url = store_url
        self.workdir = workdir
        self.port = free_port()
        self.followers = followers
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = workdir / "relay-ready.json"
        self.log = workdir / "relay.log"
        self.metrics: str | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready.unlink(missing_ok=True)
        common = [
            "--store",
            self.store_url,
            "--listen",
            self.address,
            "--ready-file",
            str(self.ready),
            "--metrics",
            "127.0.0.1:0",
        ]
        if self.followers:
            cmd = [sys.executable, "-m", "bench.relayproc", *common]
            cmd += ["--followers", str(self.followers)]
        else:
            # plaintext on loopback, explicitly (docs/security.md)
            cmd = [sys.executable, "-m", "sensilla.cli.main", "relay", "--insecure", *common]
            cmd += self.args
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"relay exited ({self.proc.returncode}): {self.tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError):
                data = json.loads(self.ready.read_text())
                if data.get("pid") == self.proc.pid:
                    self.metrics = data.get("metrics")
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"relay did not become ready: {self.tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> Relay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.relayproc")
    ap.add_argument("--store", required=True)
    ap.add_argument("--listen", action="append", required=True)
    ap.add_argument("--ready-file")
    ap.add_argument("--metrics")
    ap.add_argument("--followers", type=int, default=4096)
    args = ap.parse_args(argv)
    import asyncio

    from relay.observer.limits import Limits
    from relay.server import RelayConfig, run_relay

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = RelayConfig(
        store_url=args.store,
        listen=args.listen,
        metrics_address=args.metrics,
        ready_file=args.ready_file,
        limits=Limits(max_followers=args.followers, max_followers_per_client=args.followers),
    )
    asyncio.run(run_relay(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
