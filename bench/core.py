"""What every benchmark shares: run modes, figures (value, baseline, ratio, runs,
spread, goal), the machine's load, and the results file.

A figure is the median of several runs of one quantity, next to the median of its
baseline measured in the same run (interleaved when the benchmark allows it), and
their ratio. When runs are paired (round i of the figure with round i of its
baseline), the ratio is the median of the per-round ratios, which cancels much of
the noise of a shared machine; otherwise it is value / baseline.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
PREFIX = "sbe"  # names of labs, namespaces, pins and processes the benchmarks create

MODES = ("full", "quick", "smoke")


def load_average() -> tuple[float, float, float]:
    a, b, c = os.getloadavg()
    return (round(a, 2), round(b, 2), round(c, 2))


def median(xs: Sequence[float]) -> float | None:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return float(statistics.median(vals)) if vals else None


def percentile(xs: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    vals = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, math.ceil(q / 100 * len(vals)) - 1))
    return float(vals[k])


def spread(xs: Sequence[float]) -> dict[str, float] | None:
    """min, max and (max - min) / median in percent."""
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    if not vals:
        return None
    m = statistics.median(vals)
    rel = (max(vals) - min(vals)) / abs(m) * 100 if m else 0.0
    return {"min": min(vals), "max": max(vals), "pct": round(rel, 1)}


@dataclass(frozen=True)
class Goal:
    """`of` ("ratio" or "value") `op` (">=" or "<=") `target`."""

    of: str
    op: str
    target: float
    text: str = ""

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.of == "ratio" else value
        if x is None:
            return None
        return x >= self.target if self.op == ">=" else x <= self.target

    def describe(self) -> str:
        return self.text or f"{self.of} {self.op} {self.target:g}"


@dataclass
class Figure:
    bench: str
    name: str
    unit: str
    runs: list[float]
    baseline_name: str = ""
    baseline_runs: list[float] = field(default_factory=list)
    paired: bool = False
    goal: Goal | None = None
    note: str = ""
    # filled by finish()
    value: float | None = None
    baseline: float | None = None
    ratio: float | None = None
    ratio_runs: list[float] = field(default_factory=list)
    met: bool | None = None
    spread: dict[str, float] | None = None
    baseline_spread: dict[str, float] | None = None
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    measured_at: float = 0.0
    mode: str = ""

    def finish(self, mode: str) -> Figure:
        self.value = median(self.runs)
        self.spread = spread(self.runs)
        self.baseline = median(self.baseline_runs) if self.baseline_runs else None
        self.baseline_spread = spread(self.baseline_runs) if self.baseline_runs else None
        if self.paired and self.baseline_runs and len(self.baseline_runs) == len(self.runs):
            self.ratio_runs = [
                a / b for a, b in zip(self.runs, self.baseline_runs, strict=True) if a and b
            ]
            self.ratio = median(self.ratio_runs)
        elif self.value is not None and self.baseline:
            self.ratio = self.value / self.baseline
        self.met = self.goal.met(self.value, self.ratio) if self.goal else None
        self.load = load_average()
        self.measured_at = time.time()
        self.mode = mode
        return self

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["goal"] = (
            {**asdict(self.goal), "text": self.goal.describe()} if self.goal is not None else None
        )
        return d


def _round(x: float | None, unit: str = "") -> str:
    """Three significant digits; k and M above 10,000."""
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.3g}M"
    if a >= 1e4:
        return f"{x / 1e3:.3g}k"
    if a >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def table_rows(figures: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for f in figures:
        goal = f.get("goal") or {}
        met = f.get("met")
        status = "" if met is None else ("met" if met else "MISSED")
        sp = f.get("spread") or {}
        rows.append(
            [
                f["bench"],
                f["name"],
                f"{_round(f.get('value'), f['unit'])} {f['unit']}".strip(),
                (
                    f"{_round(f.get('baseline'), f['unit'])} ({f['baseline_name']})"
                    if f.get("baseline") is not None
                    else "-"
                ),
                _round(f.get("ratio"), "x") if f.get("ratio") is not None else "-",
                f"{len(f.get('runs') or [])} ±{sp.get('pct', 0):.0f}%" if sp else "-",
                goal.get("text", "") if goal else "",
                status,
            ]
        )
    return rows


HEADER = ["bench", "figure", "median", "baseline", "ratio", "runs ±spread", "goal", ""]


def format_table(figures: Sequence[dict[str, Any]]) -> str:
    rows = [HEADER, *table_rows(figures)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(figures: Sequence[dict[str, Any]]) -> str:
    """The table with one more column: the 1-minute load average when the figure
    was recorded."""
    rows = table_rows(figures)
    head = [*(h or "status" for h in HEADER), "load"]
    out = ["| " + " | ".join(head) + " |"]
    out.append("|" + "|".join(" --- " for _ in head) + "|")
    for r, f in zip(rows, figures, strict=True):
        load = f.get("load") or [0.0]
        cells = [*(c.replace("|", "\\|") for c in r), f"{float(load[0]):.1f}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


class Skip(Exception):
    """A benchmark cannot run here (a missing API or tool); the message says what."""


@dataclass
class Context:
    mode: str = "full"
    workdir: Path = Path("/tmp")
    figures: list[Figure] = field(default_factory=list)
    notes: dict[str, list[str]] = field(default_factory=dict)
    bench: str = ""
    verbose: bool = True
    on_figure: Callable[[Figure], None] | None = None

    @property
    def smoke(self) -> bool:
        return self.mode == "smoke"

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def pick(self, full: Any, quick: Any, smoke: Any) -> Any:
        """A parameter by mode."""
        return {"full": full, "quick": quick, "smoke": smoke}[self.mode]

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"[{self.bench or 'bench'}] {msg}", flush=True)

    def note(self, text: str) -> None:
        self.notes.setdefault(self.bench, []).append(text)
        self.log(text)

    def record(self, fig: Figure) -> Figure:
        fig.bench = fig.bench or self.bench
        fig.finish(self.mode)
        self.figures.append(fig)
        if self.on_figure is not None:
            self.on_figure(fig)
        return fig


def git_commit() -> str:
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip()
    return ""


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_results(
    path: Path,
    ctx: Context,
    ran: Sequence[str],
    errors: dict[str, str],
    started: float,
    load_start: tuple[float, float, float],
    merge: bool = True,
) -> dict[str, Any]:
    """Write the run's figures; with merge, figures of benchmarks that did not run
    this time are kept from the existing file (same mode only)."""
    previous: dict[str, Any] = {}
    if merge and path.exists():
        with contextlib.suppress(ValueError, OSError):
            previous = json.loads(path.read_text())
    kept = [
        f
        for f in previous.get("figures", [])
        if f.get("bench") not in ran and f.get("mode", previous.get("mode")) == ctx.mode
    ]
    figures = kept + [f.to_json() for f in ctx.figures]
    order = {name: i for i, name in enumerate(ALL_BENCHES)}
    figures.sort(key=lambda f: order.get(f["bench"], 99))
    prev_errors = (
        {k: v for k, v in previous.get("errors", {}).items() if k not in ran}
        if previous.get("mode") == ctx.mode
        else {}
    )
    prev_notes = (
        {k: v for k, v in previous.get("notes", {}).items() if k not in ran}
        if previous.get("mode") == ctx.mode
        else {}
    )
    data = {
        "mode": ctx.mode,
        "started": started,
        "finished": time.time(),
        "commit": git_commit(),
        "machine": machine(),
        "load_start": load_start,
        "load_end": load_average(),
        "ran": list(ran),
        "figures": figures,
        "notes": {**prev_notes, **ctx.notes},
        "errors": {**prev_errors, **errors},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(path)
    return data


# the benchmarks in the order they run (and are listed)
ALL_BENCHES = (
    "datapath",
    "iptables",
    "pipeline",
    "ingest",
    "queries",
    "e2e",
    "interference",
)


@contextlib.contextmanager
def timed(label: str, ctx: Context) -> Iterator[None]:
    t0 = time.monotonic()
    try:
        yield
    finally:
        ctx.log(f"{label}: {time.monotonic() - t0:.1f} s")
