"""Processes for the benchmarks: commands inside lab namespaces, tools compiled from
bench/tools/*.c, peak RSS of a process over a phase, relay metrics scraping.

Everything started here is tracked and stopped by its pid (its own process group),
on failure too."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from sensilla.lab.netns import NETNS_DIR

TOOLS_DIR = Path(__file__).resolve().parent / "tools"
BUILD_DIR = Path(tempfile.gettempdir()) / "sensilla-bench-build"


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    if netns is None:
        return list(argv)
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def tool(name: str) -> Path:
    """bench/tools/<name>.c compiled (-O2) into a cache keyed by its source."""
    src = TOOLS_DIR / f"{name}.c"
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    out = BUILD_DIR / f"{name}-{digest}"
    if not out.exists():
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(
            ["cc", "-O2", "-Wall", "-o", str(tmp), str(src), "-lpthread"],
            check=True,
            capture_output=True,
        )
        tmp.replace(out)
    return out


class Proc:
    """A child process in its own session; stop() ends its whole group."""

    def __init__(
        self,
        argv: Sequence[str],
        netns: str | None = None,
        *,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = in_netns(netns, argv)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        else:
            # the leader is gone; its group may not be
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        for f in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        return self.popen.returncode


@contextlib.contextmanager
def running(argv: Sequence[str], netns: str | None = None, **kw: object) -> Iterator[Proc]:
    p = Proc(argv, netns, **kw)  # type: ignore[arg-type]
    try:
        yield p
    finally:
        p.stop()


def run(argv: Sequence[str], netns: str | None = None, timeout: float = 120.0) -> str:
    out = subprocess.run(in_netns(netns, argv), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])}… failed ({out.returncode}): {out.stderr.strip()[-800:]}"
        )
    return out.stdout


# --- memory ----------------------------------------------------------------------


def _status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_bytes(pid: int) -> int:
    return int(_status(pid)["VmRSS"].split()[0]) * 1024


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the peak resident set since start or the last reset_peak_rss()."""
    return int(_status(pid)["VmHWM"].split()[0]) * 1024


def reset_peak_rss(pid: int) -> None:
    """Start a new peak-RSS window (writing 5 to clear_refs resets VmHWM)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# --- Prometheus text scraping ------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEnaNInf]+)")


def scrape(address: str, netns: str | None = None, timeout: float = 5.0) -> dict[str, float]:
    """Sum of every sample per metric name (labels summed over) from /metrics;
    counters under their name without the `_total` suffix (`_created` dropped)."""
    url = f"http://{address}/metrics"
    if netns is None:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            text = r.read().decode()
    else:
        text = run(
            [
                sys.executable,
                "-c",
                f"import urllib.request,sys;sys.stdout.write("
                f"urllib.request.urlopen({url!r},timeout={timeout}).read().decode())",
            ],
            netns,
        )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            name = m.group(1)
            if name.endswith("_created"):
                continue
            name = name.removesuffix("_total")
            with contextlib.suppress(ValueError):
                out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


def histogram(address: str, name: str) -> dict[float, float]:
    """The cumulative buckets (le -> count) of a Prometheus histogram, summed over
    its other labels."""
    url = f"http://{address}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[float, float] = {}
    pat = re.compile(rf'^{re.escape(name)}_bucket\{{(?:[^}}]*,)?le="([^"]+)"[^}}]*\}}\s+(\S+)')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            out[le] = out.get(le, 0.0) + float(m.group(2))
    return out


def wait_until(cond: object, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return bool(cond())  # type: ignore[operator]
