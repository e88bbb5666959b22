"""Coverage-guided fuzzing (atheris, libFuzzer) of the in-process hypothesis targets:
atheris mutates the bytes hypothesis draws its structured inputs from
(`test.hypothesis.fuzz_one_input`), steered by the coverage of the code under test,
which is instrumented.

    .venv/bin/python -m tests.reliability.atheris_run TARGET [-runs=N] [libFuzzer flags]

Exit status 0: N runs without a failure; otherwise libFuzzer's (the failing input is
printed by hypothesis and saved as crash-*). Used by test_srl_atheris.py.

The memory bound is ours (--rss-limit-mb=N, checked on the process's current VmRSS),
not libFuzzer's -rss_limit_mb: libFuzzer reads getrusage's ru_maxrss, which Linux
carries across execve, so a child started by a large process (pytest after a thousand
tests, with chDB loaded) starts "over the limit" before it ran a single input.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from typing import Any

RSS_LIMIT_EXIT = 71  # libFuzzer's own exit status for out-of-memory

# target -> (test module, test function)
TARGETS = {
    "decoder": ("tests.reliability.test_srl_fuzz_decoder", "test_srl_fuzz_event_decoder"),
    "policy-text": ("tests.reliability.test_srl_fuzz_policy", "test_srl_fuzz_policy_text"),
    "policy-documents": (
        "tests.reliability.test_srl_fuzz_policy",
        "test_srl_fuzz_policy_documents",
    ),
    "filters": ("tests.reliability.test_srl_fuzz_filters", "test_srl_fuzz_filter_compiler"),
    "observe-cli": (
        "tests.reliability.test_srl_fuzz_filters",
        "test_srl_fuzz_observe_command_line",
    ),
    "outputs": (
        "tests.reliability.test_srl_fuzz_exporters",
        "test_srl_fuzz_observe_output_formats",
    ),
    "ocsf": ("tests.reliability.test_srl_fuzz_exporters", "test_srl_fuzz_ocsf_mapping"),
}
# the code under test, instrumented for coverage feedback
INSTRUMENTED = (
    "collector.flows",
    "collector.policy",
    "collector.compiler",
    "sensilla.filters",
    "sensilla.output",
    "sensilla.ocsf",
    "sensilla.cli.commands.observe",
)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def watch_rss(limit_mb: int) -> None:
    """Exit like libFuzzer does on out-of-memory once the process holds more than
    limit_mb (checked every 100 ms)."""

    def watch() -> None:
        while True:
            used = rss_mb()
            if used > limit_mb:
                sys.stderr.write(
                    f"==atheris_run== ERROR: out-of-memory (used: {used:.0f}Mb; "
                    f"limit: {limit_mb}Mb)\n"
                )
                sys.stderr.flush()
                os._exit(RSS_LIMIT_EXIT)
            time.sleep(0.1)

    threading.Thread(target=watch, name="rss-limit", daemon=True).start()


def split_flags(args: list[str]) -> tuple[list[str], int]:
    """libFuzzer flags, and our --rss-limit-mb (0: none)."""
    limit = 0
    rest = []
    for arg in args:
        if arg.startswith("--rss-limit-mb="):
            limit = int(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return rest, limit


def main(argv: list[str]) -> None:
    import atheris

    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(
            f"usage: atheris_run TARGET [libFuzzer flags]; TARGET in {sorted(TARGETS)}"
        )
    module, name = TARGETS[argv[1]]
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        for m in INSTRUMENTED:
            importlib.import_module(m)
        test: Any = getattr(importlib.import_module(module), name)
    flags, rss_limit = split_flags(argv[2:])
    if rss_limit:
        watch_rss(rss_limit)
    # libFuzzer's own rss check is off: see the module docstring
    atheris.Setup([argv[0], *flags, "-rss_limit_mb=0"], test.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
