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
