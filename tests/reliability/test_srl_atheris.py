"""Coverage-guided fuzzing with atheris (libFuzzer) of the in-process targets, each in a
process of its own (atheris_run.py): FUZZ_CASES runs per target, no failure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.atheris_run import TARGETS
from tests.reliability.tiers import FUZZ_CASES

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_srl_fuzz_atheris(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.reliability.atheris_run",
            target,
            f"-runs={FUZZ_CASES}",
            "-len_control=0",  # hypothesis needs a few hundred bytes from the start
            "-max_len=4096",
            "--rss-limit-mb=512",  # the code under test must not hold on to memory
            "-timeout=60",  # one input taking longer is a hang
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    done = [line for line in out.stderr.splitlines() if "DONE" in line]
    print(f"\nsrl atheris {target}: {done[-1] if done else '?'}")
    assert out.returncode == 0, out.stderr[-4000:]
    assert f"Done {FUZZ_CASES} runs" in out.stderr


def _atheris_from_a_large_parent(tmp_path: Path, limit_mb: int) -> subprocess.CompletedProcess[str]:
    """atheris_run started by a process that once held 1 GiB (as pytest may have)."""
    child = [
        sys.executable,
        "-m",
        "tests.reliability.atheris_run",
        "decoder",
        "-runs=400",  # over a second: libFuzzer checks its rss limit once a second
        "-len_control=0",
        f"--rss-limit-mb={limit_mb}",
        f"-artifact_prefix={tmp_path}/",
    ]
    parent = (
        "import subprocess, sys\n"
        "big = bytearray(1 << 30)\n"
        "for i in range(0, len(big), 4096): big[i] = 1\n"
        "del big\n"
        f"r = subprocess.run({child!r}, capture_output=True, text=True)\n"
        "sys.stderr.write(r.stderr)\n"
        "sys.exit(r.returncode)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", parent], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_srl_atheris_memory_bound_is_the_processs_own(tmp_path: Path) -> None:
    """Regression: libFuzzer's -rss_limit_mb reads ru_maxrss, which Linux carries
    across execve, so every target 'ran out of memory' at its first input under a
    large pytest. The runner's bound is on the process's current RSS."""
    pytest.importorskip("atheris")
    ok = _atheris_from_a_large_parent(tmp_path, 512)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert "Done 400 runs" in ok.stderr
    tripped = _atheris_from_a_large_parent(tmp_path, 20)  # below any Python process
    assert tripped.returncode == 71, tripped.stderr[-3000:]
    assert "out-of-memory" in tripped.stderr
