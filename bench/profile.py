"""Where a Python process spends its time: py-spy (sampling, no changes to the
target) run for a while, summarised as the functions with the most samples on the
stack (inclusive) and at the top of it (self). Only the thread holding the GIL is
sampled (`--gil`): a Python process computes on one core at a time, so that is its
bottleneck; threads waiting in sleep, select or a C call without the GIL are left out.

    with Profiler(pid, out_path) as prof:   # starts py-spy record in the background
        ...                                 # the load to profile
    summary = prof.summary()                # [(function, self %, inclusive %)]
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from bench.procs import Proc


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, pid: int, out: Path, rate: int = 97, threads: bool = False) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.proc: Proc | None = None
        self.error = ""
        self.threads = threads

    def __enter__(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return self
        argv = [
            exe,
            "record",
            "--pid",
            str(self.pid),
            "--rate",
            str(self.rate),
            "--format",
            "raw",
            "--output",
            str(self.out),
            "--nonblocking",
            "--gil",  # only the thread holding the GIL: where Python's CPU time goes
        ]
        if self.threads:
            argv.append("--threads")
        self.proc = Proc(argv, stderr=subprocess.PIPE)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is None:
            return
        # SIGINT makes py-spy write what it sampled
        import os
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.error = "py-spy did not stop"
        if self.proc.popen.stderr is not None and self.proc.popen.returncode not in (0, None):
            with contextlib.suppress(Exception):
                self.error = self.proc.popen.stderr.read().decode(errors="replace")[-300:]
        self.proc.stop()

    def stacks(self) -> list[tuple[list[str], int]]:
        try:
            lines = self.out.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            out.append((stack.split(";"), int(count)))
        return out

    def summary(self, top: int = 8) -> list[tuple[str, float, float]]:
        """The `top` functions by self samples, with self and inclusive percentages of
        the busy samples (py-spy leaves out idle threads)."""
        stacks = self.stacks()
        total = sum(n for _, n in stacks)
        if not total:
            return []
        own: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        for frames, n in stacks:
            own[_short(frames[-1])] += n
            for f in {_short(x) for x in frames}:
                incl[f] += n
        return [(f, 100 * n / total, 100 * incl[f] / total) for f, n in own.most_common(top)]

    def inclusive(self, *names: str) -> dict[str, float]:
        """Inclusive share (percent of busy samples) of functions whose name contains
        each of `names`."""
        stacks = self.stacks()
        total = sum(n for _, n in stacks) or 1
        out = {}
        for name in names:
            hit = sum(n for frames, n in stacks if any(name in f for f in frames))
            out[name] = 100 * hit / total
        return out


def _short(frame: str) -> str:
    """'build_flows (collector/flows/builder.py:160)' -> 'build_flows (builder.py)'."""
    name, _, where = frame.partition(" (")
    if where:
        path, _, _line = where.rstrip(")").rpartition(":")
        return f"{name} ({Path(path or where.rstrip(')')).name})"
    return frame


def describe(summary: list[tuple[str, float, float]]) -> str:
    return "; ".join(f"{f} self {s:.0f}% incl {i:.0f}%" for f, s, i in summary)
