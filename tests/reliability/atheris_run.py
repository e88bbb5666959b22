"""Coverage-guided fuzzing (atheris, libFuzzer) of the in-process hypothesis targets:
atheris mutates the bytes hypothesis draws its structured inputs from
(`test.hypothesis.fuzz_one_input`), steered by the coverage of the code under test,
which is instrumented.

    .venv/bin/python -m tests.reliability.atheris_run TARGET [-runs=N] [libFuzzer flags]

Exit status 0: N runs without a failure; otherwise libFuzzer's (the failing input is
printed by hypothesis and saved as crash-*). Used by test_srl_atheris.py.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

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
    atheris.Setup([argv[0], *argv[2:]], test.hypothesis.fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
