"""Small helpers the test rooms share: the command line as a subprocess, and a
Prometheus endpoint read into numbers."""

from __future__ import annotations

import subprocess
import sys
import urllib.request


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`sensilla ARGS` with this interpreter, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "sensilla.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scrape(address: str, timeout: float = 5.0) -> dict[str, float]:
    """Every sensilla_* sample of http://ADDRESS/metrics, keyed by name and labels."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sensilla_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out
