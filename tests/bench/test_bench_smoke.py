"""`sensilla-bench --smoke`: every benchmark runs minimally on fresh labs and writes
every figure with its baseline and ratio. Nothing about speed is asserted (figures
of a smoke run mean nothing); the run must complete, report no error, and leave no
namespace, pin or process behind."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.main import MODULES

ROOT = Path(__file__).resolve().parents[2]
PINS = Path("/sys/fs/bpf/sensilla")


def _ours() -> set[str]:
    names = (
        {f"netns:{n}" for n in os.listdir("/var/run/netns")}
        if os.path.isdir("/var/run/netns")
        else set()
    )
    if PINS.exists():
        names |= {f"pin:{p.name}" for p in PINS.iterdir()}
    return {n for n in names if n.split(":", 1)[1].startswith("sbe")}


@pytest.mark.needs_root
def test_smoke_runs_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    before = _ours()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.main", "--smoke", "--no-merge", "--output", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "smoke"
    assert data["errors"] == {}, data["errors"]
    benches = {f["bench"] for f in data["figures"]}
    assert benches == set(MODULES), set(MODULES) - benches
    for f in data["figures"]:
        assert f["runs"], f["name"]
        assert isinstance(f["value"], float) and math.isfinite(f["value"]), f["name"]
        if f["baseline_name"]:
            assert f["baseline"] is not None, f["name"]
            assert f["ratio"] is not None or f["baseline"] == 0, f["name"]
        if f["goal"] is not None:
            assert f["met"] in (True, False), f["name"]
    # the table printed at the end names every figure
    for f in data["figures"]:
        assert f["name"] in proc.stdout
    assert _ours() - before == set(), "left behind"
