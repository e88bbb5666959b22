"""A stored dataset for the history tests: n synthetic flows written to a store the
way ingest writes them (exactly-once batches), with, per filter case, the keys of
the flows the in-memory predicate selects, in key order. Built in chunks so 1M flows
never sit in memory at once."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from relay.store import IngestBatch, open_store
from sensilla.protos import flow_pb2
from tests.relay.observer.cases import Case, Key, cases
from tests.relay.observer.flowgen import FlowGen, key, position


@dataclass
class Dataset:
    url: str
    n: int
    cases: list[Case]
    expected: dict[str, list[Key]]
    keys: list[Key]  # every flow, key order
    start_ns: int
    end_ns: int
    samples: dict[Key, bytes] = field(default_factory=dict)  # some flows, serialized
    build_s: float = 0.0


def build(url: str, n: int, seed: int = 11, chunk: int = 20_000, batch: int = 2000) -> Dataset:
    t0 = time.monotonic()
    end = (int(time.time()) - 300) * 10**9
    span = 3 * 3600 * 10**9
    start = end - span
    gen = FlowGen(seed, start_ns=start, step_ns=max(1, span // max(1, n)))
    store = open_store(url)
    pending: dict[tuple[str, int], list[flow_pb2.Flow]] = defaultdict(list)
    batch_no: dict[tuple[str, int], int] = defaultdict(int)
    all_cases: list[Case] | None = None
    compiled: list[tuple[str, object]] = []
    expected: dict[str, list[Key]] = {}
    keys: list[Key] = []
    samples: dict[Key, bytes] = {}

    def flush(final: bool) -> None:
        out = []
        for boot, flows in pending.items():
            while len(flows) >= batch or (final and flows):
                part, flows[:] = flows[:batch], flows[batch:]
                batch_no[boot] += 1
                out.append(IngestBatch(boot[0], boot[1], batch_no[boot], part, node_name=boot[0]))
        for i in range(0, len(out), 10):
            store.write_batches(out[i : i + 10])

    try:
        made = 0
        while made < n:
            # flows(k) counts times from gen.start_ns: advanced after each chunk
            flows = list(gen.flows(min(chunk, n - made)))
            made += len(flows)
            if all_cases is None:
                all_cases = cases(f.uuid for f in flows[::997])
                compiled = [(c.name, c.compiled()) for c in all_cases]
                expected = {c.name: [] for c in all_cases}
            for f in flows:
                k = key(f)
                keys.append(k)
                if len(samples) < 50 and k[3] % 1999 == 0:
                    samples[k] = f.SerializeToString()
                for name, cf in compiled:
                    if cf.matches(f):  # type: ignore[attr-defined]
                        expected[name].append(k)
                c, b, _ = position(f)
                pending[(c, b)].append(f)
            gen.start_ns += len(flows) * gen.step_ns
            flush(False)
        flush(True)
    finally:
        store.close()
    keys.sort()
    for v in expected.values():
        v.sort()
    assert all_cases is not None
    return Dataset(
        url, n, all_cases, expected, keys, start - gen.step_ns, end, samples,
        time.monotonic() - t0,
    )  # fmt: skip
