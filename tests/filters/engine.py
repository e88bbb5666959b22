"""Evaluate a compiled request both ways: the predicate in Python, the SQL on chDB."""

from __future__ import annotations

from sensilla.filters import CompiledFilter, compile_request_filters, flow_row
from sensilla.protos import extensions_pb2, flow_pb2
from tests.filters.harness import ChdbWorker


def with_seq(flows: list[flow_pb2.Flow]) -> list[flow_pb2.Flow]:
    """Copies of the flows carrying their index as the position sequence."""
    out = []
    for i, f in enumerate(flows):
        g = flow_pb2.Flow()
        g.CopyFrom(f)
        g.extensions.Pack(
            extensions_pb2.FlowExtension(
                position=extensions_pb2.Position(collector_id="sfi", boot_id=1, sequence=i)
            )
        )
        out.append(g)
    return out


def evaluate(
    engine: ChdbWorker,
    whitelist: list[flow_pb2.FlowFilter],
    blacklist: list[flow_pb2.FlowFilter],
    flows: list[flow_pb2.Flow],
) -> tuple[list[bool], CompiledFilter]:
    """Per-flow results; asserts that the predicate and the SQL agree."""
    compiled = compile_request_filters(whitelist, blacklist)
    flows = with_seq(flows)
    predicate = [compiled.matches(f) for f in flows]
    engine.truncate()
    engine.insert([flow_row(f) for f in flows])
    selected = set(engine.matching(compiled))
    sql = [i in selected for i in range(len(flows))]
    assert predicate == sql, f"predicate {predicate} != sql {sql}"
    return predicate, compiled
