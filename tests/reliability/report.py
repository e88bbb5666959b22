"""The fault figures the tests saved (tests/artifacts/reliability/*.json) as the
markdown table of docs/reliability.md:

    .venv/bin/python -m tests.reliability.report [--tier fast|full] [DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tests.reliability.scenario import ARTIFACTS

HEADER = (
    "| fault | store | hold | connections during the fault (allowed / denied) | denied "
    "that connected | allowed that failed | flows built | flows stored | stored twice | "
    "acked before the fault: all still stored | lost, reported (stream = metrics) | "
    "sightings missing / unreported | drained after |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def _lost(fig: dict[str, Any]) -> str:
    stream = fig["lost_reported_stream"]
    if not stream:
        return "0"
    parts = [f"{n} {src}" for src, n in sorted(stream.items())]
    same = sum(stream.values()) == sum(fig["lost_reported_metrics"].values())
    return ", ".join(parts) + (" (=)" if same else " (metrics differ)")


def _hold(fig: dict[str, Any]) -> str:
    hold = fig["notes"].get("hold_s")
    return "?" if hold is None else f"{hold:g} s"


def row(fig: dict[str, Any]) -> str:
    unreported = fig["silent_losses"] + fig["notes"].get("missing_at_risk_unreported", 0)
    return (
        f"| {fig['fault']} | {fig['backend']} | {_hold(fig)} | {fig['during_fault_allowed']} / "
        f"{fig['during_fault_denied']} | {fig['denied_connected']} | {fig['allowed_failed']} | "
        f"{fig['flows_built']} | {fig['flows_stored']} | {fig['duplicates']} | "
        f"{fig['acked_before']}: yes | {_lost(fig)} | {fig['observations_missing']} / "
        f"{unreported} | {fig['recovery_s']} s |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=str(ARTIFACTS))
    ap.add_argument("--tier", choices=("fast", "full"))
    args = ap.parse_args()
    files = sorted(Path(args.dir).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if args.tier:
        files = [f for f in files if f"-{args.tier}-" in f.name]
    print(HEADER)
    for f in files:
        print(row(json.loads(f.read_text())))


if __name__ == "__main__":
    main()
