"""Pure logic of the benchmarks: figures, ratios, goals, the results file, the table,
the synthetic collectors' encoding and the profile summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.core import (
    Context,
    Figure,
    Goal,
    format_table,
    markdown_table,
    percentile,
    write_results,
)
from bench.synth import ShipResult, encode_batches, steady_rate

pytestmark = pytest.mark.unit


def test_paired_ratio_is_the_median_of_round_ratios() -> None:
    f = Figure("b", "n", "x", [10.0, 20.0, 30.0], "base", [10.0, 10.0, 60.0], paired=True)
    f.finish("full")
    assert f.value == 20.0 and f.baseline == 10.0
    assert f.ratio_runs == [1.0, 2.0, 0.5]
    assert f.ratio == 1.0  # not value / baseline (2.0)
    assert f.spread == {"min": 10.0, "max": 30.0, "pct": 100.0}


def test_unpaired_ratio_and_goals() -> None:
    f = Figure("b", "n", "ms", [400.0], "base", [100.0], goal=Goal("value", "<=", 500.0))
    f.finish("quick")
    assert f.ratio == 4.0 and f.met is True
    g = Figure("b", "n", "x", [0.9], "base", [1.0], goal=Goal("ratio", ">=", 0.95)).finish("full")
    assert g.met is False
    none = Figure("b", "n", "x", [], goal=Goal("value", ">=", 1)).finish("full")
    assert none.value is None and none.met is None


def test_percentile_nearest_rank() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0
    assert percentile(xs, 95) == 95.0
    assert percentile(xs, 99) == 99.0
    assert percentile([], 50) is None


def test_results_keep_other_benchmarks_figures(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    a = Context(mode="full", verbose=False)
    a.bench = "datapath"
    a.record(Figure("", "one", "x", [1.0]))
    write_results(out, a, ["datapath"], {}, 0.0, (0.0, 0.0, 0.0))
    b = Context(mode="full", verbose=False)
    b.bench = "ingest"
    b.record(Figure("", "two", "x", [2.0]))
    data = write_results(out, b, ["ingest"], {"queries": "skipped: x"}, 0.0, (0.0, 0.0, 0.0))
    assert [f["name"] for f in data["figures"]] == ["one", "two"]
    assert json.loads(out.read_text())["errors"] == {"queries": "skipped: x"}
    # another mode does not mix in
    c = Context(mode="smoke", verbose=False)
    c.bench = "ingest"
    c.record(Figure("", "three", "x", [3.0]))
    data = write_results(out, c, ["ingest"], {}, 0.0, (0.0, 0.0, 0.0))
    assert [f["name"] for f in data["figures"]] == ["three"]


def test_tables_show_value_baseline_ratio_goal() -> None:
    f = Figure(
        "ingest",
        "rate",
        "flows/s",
        [12345.0, 23456.0],
        "db",
        [50000.0],
        goal=Goal("value", ">=", 500_000, ">= 500k flows/s"),
    ).finish("full")
    d = f.to_json()
    text = format_table([d])
    assert "17.9k flows/s" in text and "50k (db)" in text and "MISSED" in text
    md = markdown_table([d])
    assert md.count("\n") == 2 and "| ingest | rate |" in md


def test_synthetic_batches_pass_the_relays_validation() -> None:
    from relay.store import IngestBatch, validate_batch
    from sensilla.filters import flow_extension
    from sensilla.protos import ingest_pb2

    batches = encode_batches("c1", 1234567890123, 4500, 2000)
    assert [n for n, _ in batches] == [2000, 2000, 500]
    seqs = []
    for i, (n, payload) in enumerate(batches, start=1):
        req = ingest_pb2.PushRequest.FromString(payload)
        b = req.batch
        assert b.boot_id == 1234567890123 and b.sequence == i and len(b.flows) == n
        ib = validate_batch(IngestBatch("c1", b.boot_id, b.sequence, b.flows))
        seqs.append((ib.first_seq, ib.last_seq))
        f = b.flows[0]
        ext = flow_extension(f)
        assert ext is not None and ext.position.collector_id == "c1"
        assert f.uuid and f.time.seconds > 0 and f.source.namespace
    assert seqs == [(1, 2000), (2001, 4000), (4001, 4500)]
    uuids = {f.uuid for _, p in batches for f in ingest_pb2.PushRequest.FromString(p).batch.flows}
    assert len(uuids) == 4500


def test_steady_rate_leaves_out_start_and_tail() -> None:
    r = ShipResult("c", 1000, started=0.0)
    # 10 acks of 100 flows: slow start (first at t=5), then one per second
    r.acks = [(5.0 + i, 100) for i in range(10)]
    # 10 % reached at t=5, 90 % at t=13: 800 flows in 8 s
    assert steady_rate([r]) == pytest.approx(100.0)
    few = ShipResult("c", 100, started=0.0)
    few.acks = [(2.0, 100)]
    assert steady_rate([few]) == 0.0  # fewer than 3 acks: nothing to say


def test_profile_summary(tmp_path: Path) -> None:
    from bench.profile import Profiler

    raw = tmp_path / "p.txt"
    raw.write_text(
        "main (a.py:1);build_flows (collector/flows/builder.py:10) 60\n"
        "main (a.py:1);build_flows (collector/flows/builder.py:12);_addr (b.py:3) 20\n"
        "main (a.py:1);poll (datapath/perf.py:300) 20\n"
    )
    p = Profiler(1, raw)
    top = p.summary(3)
    assert top[0] == ("build_flows (builder.py)", 60.0, 80.0)
    assert p.inclusive("build_flows")["build_flows"] == 80.0
