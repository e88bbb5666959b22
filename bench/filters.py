"""Filter throughput: compile time, predicate rate, flow_row rate, and the compiled SQL
over a chDB table, for typical observe requests. Prints figures; asserts nothing.

    .venv/bin/python -m bench.filters [--flows N]
"""

from __future__ import annotations

import argparse
import time

from sensilla.filters import compile_request_filters, flow_row
from sensilla.protos import flow_pb2

F = flow_pb2.FlowFilter

REQUESTS = {
    "none": ([], []),
    "--namespace x": ([F(source_pod=["x/"]), F(destination_pod=["x/"])], []),
    "--verdict DROPPED": ([F(verdict=[flow_pb2.DROPPED])], []),
    "--to-ip 10.0.0.0/8 --to-port 80": (
        [F(destination_ip=["10.0.0.0/8"], destination_port=["80"])],
        [],
    ),
    "--label k8s:app in (a,b)": (
        [F(source_label=["k8s:app in (a,b)"]), F(destination_label=["k8s:app in (a,b)"])],
        [],
    ),
    "-n x --not --to-port 81": (
        [F(source_pod=["x/"]), F(destination_pod=["x/"])],
        [F(destination_port=["81"])],
    ),
}


def main() -> None:
    from tests.filters.harness import ChdbWorker
    from tests.filters.strategies import corpus

    parser = argparse.ArgumentParser()
    parser.add_argument("--flows", type=int, default=50_000)
    args = parser.parse_args()
    flows = corpus(args.flows, seed=7)

    t = time.perf_counter()
    rows = [flow_row(f) for f in flows]
    dt = time.perf_counter() - t
    print(f"flow_row: {len(flows) / dt:,.0f} flows/s")

    worker = ChdbWorker()
    try:
        worker.create("bench_flows")
        for i in range(0, len(rows), 10_000):
            worker.insert(rows[i : i + 10_000], "bench_flows")
        for name, (wl, bl) in REQUESTS.items():
            t = time.perf_counter()
            for _ in range(100):
                compiled = compile_request_filters(wl, bl)
            compile_us = (time.perf_counter() - t) / 100 * 1e6
            t = time.perf_counter()
            hits = sum(1 for f in flows if compiled.matches(f))
            rate = len(flows) / (time.perf_counter() - t)
            t = time.perf_counter()
            sql_hits = len(worker.matching(compiled, "bench_flows"))
            sql_ms = (time.perf_counter() - t) * 1000
            same = "same" if sql_hits == hits else f"DIFFERENT ({sql_hits})"
            print(
                f"{name:36s} compile {compile_us:7.0f} us  predicate {rate:10,.0f} flows/s  "
                f"SQL {sql_ms:7.1f} ms over {len(flows)} rows  hits {hits} ({same})"
            )
    finally:
        worker.close()


if __name__ == "__main__":
    main()
