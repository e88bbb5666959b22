"""sensilla-bench: every benchmark of docs/performance.md in one run.

    sensilla-bench                  # everything, full length (~25-40 min on 2 cores)
    sensilla-bench --quick          # shorter runs, fewer rounds
    sensilla-bench --smoke          # every benchmark minimally (seconds each; CI)
    sensilla-bench --only ingest    # one benchmark (repeatable, or a comma list)
    sensilla-bench --list

Writes the figures (median of several runs, spread, baseline, ratio, goal) to
bench/results/latest.json (full runs; --quick and --smoke write quick.json and
smoke.json unless --output says otherwise), keeping the figures of benchmarks that
did not run this time, and prints the table. --update-doc also rewrites the table
in docs/performance.md. Must run as root (labs, BPF, iptables in namespaces).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # helpers shared with the tests (clickhouse-server, relay)
    sys.path.insert(0, str(ROOT))

from bench.core import (  # noqa: E402
    ALL_BENCHES,
    RESULTS_DIR,
    Context,
    Skip,
    format_table,
    load_average,
    markdown_table,
    write_results,
)

DOC = ROOT / "docs" / "performance.md"
DOC_START = "<!-- bench-table:start -->"
DOC_END = "<!-- bench-table:end -->"

MODULES = {
    "datapath": "bench.datapath_bench",
    "iptables": "bench.iptables_bench",
    "pipeline": "bench.pipeline",
    "ingest": "bench.ingest",
    "queries": "bench.queries",
    "e2e": "bench.e2e",
    "interference": "bench.interference",
}
DESCRIPTIONS = {
    "datapath": "1, 2: iperf3 throughput vs no program; per-packet cost vs parse-and-count",
    "iptables": "3: connections/s and throughput vs iptables and ipset at 1..10,000 rules",
    "pipeline": "4, 9: event pipeline stage by stage, zero-loss rates; collector/relay RSS",
    "ingest": "5, 9: ingest into chDB and clickhouse-server; relay RSS",
    "queries": "6: service map, drop summary, flow search at 10M flows (p50/p95)",
    "e2e": "7, 9: packet on a veth to an observe --follow client of the relay (p50/p99)",
    "interference": "8, 9: ingest with a stalled follower and 1,000 idle followers",
}


def _runner(name: str) -> Callable[[Context], None]:
    mod = importlib.import_module(MODULES[name])
    fn: Callable[[Context], None] = mod.run
    return fn


def update_doc(data: dict[str, object], doc: Path = DOC) -> bool:
    """Replace the table between the markers of docs/performance.md."""
    if not doc.exists():
        return False
    text = doc.read_text()
    if DOC_START not in text or DOC_END not in text:
        return False
    figures = data.get("figures") or []
    assert isinstance(figures, list)
    stamps = [float(f.get("measured_at") or 0) for f in figures if f.get("measured_at")]
    when = "unknown"
    if stamps:
        fmt = "%Y-%m-%d %H:%M UTC"
        when = (
            f"{time.strftime(fmt, time.gmtime(min(stamps)))} to "
            f"{time.strftime(fmt, time.gmtime(max(stamps)))}"
        )
    head = (
        f"Mode `{data.get('mode')}`, commit `{data.get('commit')}`, measured {when} on "
        "2 shared cores; the last column is the 1-minute load average when each figure "
        "was recorded."
    )
    body = f"{DOC_START}\n{head}\n\n{markdown_table(figures)}\n{DOC_END}"
    before, _, rest = text.partition(DOC_START)
    _, _, after = rest.partition(DOC_END)
    doc.write_text(before + body + after)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="sensilla-bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter runs, fewer rounds")
    mode.add_argument(
        "--smoke", action="store_true", help="every benchmark minimally (keeps them working)"
    )
    ap.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these benchmarks ({', '.join(MODULES)}); repeatable or comma list",
    )
    ap.add_argument("--output", type=Path, help="results file (default: bench/results/<mode>)")
    ap.add_argument("--no-merge", action="store_true", help="do not keep earlier figures")
    ap.add_argument("--update-doc", action="store_true", help="rewrite docs/performance.md table")
    ap.add_argument(
        "--doc-only",
        action="store_true",
        help="only rewrite docs/performance.md's table from the results file",
    )
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory")
    args = ap.parse_args(argv)

    if args.list:
        for name in MODULES:
            print(f"{name:13s} {DESCRIPTIONS[name]}")
        return 0
    names = list(MODULES)
    if args.only:
        wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in MODULES]
        if unknown:
            ap.error(f"unknown benchmark(s): {', '.join(unknown)} (see --list)")
        names = [n for n in MODULES if n in wanted]
    if args.doc_only:
        mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
        path = args.output or RESULTS_DIR / (
            "latest.json" if mode_name == "full" else f"{mode_name}.json"
        )
        data = json.loads(path.read_text())
        if not update_doc(data):
            ap.error(f"{DOC} has no table markers")
        print(f"table written to {DOC} from {path}")
        return 0
    if os.geteuid() != 0:
        ap.error("must run as root (labs, BPF programs, iptables inside namespaces)")
    run_mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    output = args.output or RESULTS_DIR / (
        "latest.json" if run_mode == "full" else f"{run_mode}.json"
    )
    workdir = Path(tempfile.mkdtemp(prefix="sensilla-bench-"))
    ctx = Context(mode=run_mode, workdir=workdir, verbose=not args.quiet)
    started = time.time()
    load_start = load_average()
    errors: dict[str, str] = {}
    ctx.log(f"mode {run_mode}, benchmarks {', '.join(names)}, load {load_start}")
    try:
        for name in names:
            assert name in ALL_BENCHES
            ctx.bench = name
            t0 = time.monotonic()
            try:
                _runner(name)(ctx)
            except Skip as exc:
                errors[name] = f"skipped: {exc}"
                ctx.log(f"skipped: {exc}")
            except Exception as exc:
                errors[name] = "".join(traceback.format_exception(exc))[-4000:]
                ctx.log(f"FAILED: {type(exc).__name__}: {exc}")
            ctx.log(f"done in {time.monotonic() - t0:.0f} s, load {load_average()}")
            ctx.bench = ""
    finally:
        data = write_results(
            output, ctx, names, errors, started, load_start, merge=not args.no_merge
        )
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    figs = data["figures"]
    print()
    print(format_table(figs))
    if data["errors"]:
        print()
        for name, err in data["errors"].items():
            print(f"{name}: {err.strip().splitlines()[-1]}")
    print(f"\nresults: {output}")
    if args.update_doc and update_doc(data):
        print(f"table written to {DOC}")
    failed = [n for n, e in errors.items() if not e.startswith("skipped:")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
