"""Hostile strings in every string field of a filter: the request either fails with a
FilterError naming the field, or selects exactly what the predicate selects; the
values never appear in the SQL text; the table is intact afterwards."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sensilla.filters import FilterError, compile_request_filters, flow_row
from sensilla.protos import flow_pb2
from tests.filters.engine import with_seq
from tests.filters.harness import ChdbWorker, ClickHouse18

pytestmark = pytest.mark.unit

HOSTILE = [
    "'",
    '"',
    "\\",
    "\\'",
    "'; DROP TABLE sfi_flows; --",
    "' OR '1'='1",
    "x') OR (1=1",
    "1) OR 1=1 --",
    "{flt_0:String}",
    "{x:UInt8}",
    "%(flt_0)s",
    "%s",
    "%%",
    "`",
    "/*",
    "*/",
    "\n",
    "\r\n",
    "\t",
    "\x00",
    "a\\nb",
    "x' UNION SELECT 1 --",
    "😀",
    "ü",
    "?",
    ":1",
    "$1",
    "]]",
    "x/'; DROP TABLE sfi_flows; --",
    "default/' OR 1=1",
    "app='x'",
    "app in ('a')",
    "k8s:app=a) OR (1=1",
    "*'",
    "k8s*' OR 1=1",
]

F = flow_pb2.FlowFilter

# Every string-valued part of a FlowFilter, as a function of the hostile value.
FIELDS: dict[str, Callable[[str], flow_pb2.FlowFilter]] = {
    "source_ip": lambda v: F(source_ip=[v]),
    "destination_ip": lambda v: F(destination_ip=[v + "/8"]),
    "source_pod": lambda v: F(source_pod=[v]),
    "destination_pod": lambda v: F(destination_pod=["x/" + v]),
    "source_label": lambda v: F(source_label=[v]),
    "destination_label": lambda v: F(destination_label=["app=" + v]),
    "source_service": lambda v: F(source_service=[v]),
    "destination_service": lambda v: F(destination_service=["x/" + v]),
    "protocol": lambda v: F(protocol=[v]),
    "source_port": lambda v: F(source_port=[v]),
    "destination_port": lambda v: F(destination_port=["80" + v]),
    "node_name": lambda v: F(node_name=[v]),
    "uuid": lambda v: F(uuid=[v]),
    "source_workload.name": lambda v: F(source_workload=[flow_pb2.Workload(name=v)]),
    "destination_workload.kind": lambda v: F(destination_workload=[flow_pb2.Workload(kind=v)]),
    "interface.name": lambda v: F(interface=[flow_pb2.NetworkInterface(name=v)]),
}


def _flows() -> list[flow_pb2.Flow]:
    """Flows that carry the hostile strings themselves, so that matches happen."""
    out = []
    for i, v in enumerate(HOSTILE):
        f = flow_pb2.Flow(uuid=v, node_name=v)
        f.source.namespace, f.source.pod_name = "x", v
        f.destination.namespace, f.destination.pod_name = v, "b"
        f.source.labels.extend([f"k8s:app={v}", f"k8s:{v}=1"])
        f.destination.labels.append(f"k8s:app={v}")
        f.source_service.namespace, f.source_service.name = "x", v
        f.destination_service.namespace, f.destination_service.name = v, v
        f.source.workloads.add(name=v, kind="Deployment")
        f.destination.workloads.add(name="web", kind=v)
        f.interface.name = v
        f.IP.source = v if i % 2 else "10.0.0.1"
        f.IP.destination = "10.0.0.2"
        f.l4.TCP.destination_port = 80
        out.append(f)
    out.append(flow_pb2.Flow(uuid="plain", source=flow_pb2.Endpoint(namespace="x", pod_name="a")))
    return with_seq(out)


FLOWS = _flows()


@pytest.fixture(scope="module")
def chdb() -> Iterator[ChdbWorker]:
    worker = ChdbWorker()
    try:
        worker.create()
        worker.insert([flow_row(f) for f in FLOWS])
        yield worker
    finally:
        worker.close()


@pytest.fixture(scope="module")
def ch18() -> Iterator[ClickHouse18]:
    if not ClickHouse18.available():
        pytest.skip("clickhouse-server (18.16) not installed")
    server = ClickHouse18()
    try:
        server.create()
        server.insert([flow_row(f) for f in FLOWS])
        yield server
    finally:
        server.close()


_NATIVE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[A-Za-z0-9]+\}")
_PLACEHOLDERS = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9]+\}|%\([A-Za-z_][A-Za-z0-9_]*\)s")


def _check(engine: Any, field: str, make: Callable[[str], flow_pb2.FlowFilter]) -> tuple[int, int]:
    rejected = answered = 0
    for value in HOSTILE:
        for wl, bl in (([make(value)], []), ([], [make(value)])):
            try:
                compiled = compile_request_filters(wl, bl)
            except FilterError as exc:
                rejected += 1
                assert exc.field.startswith(("whitelist[0].", "blacklist[0].")), exc
                assert exc.field.split(".")[1].startswith(field.split(".")[0]), exc
                continue
            answered += 1
            for style in ("native", "chdb", "pyformat"):
                text, params = compiled.sql(style)
                bare = _PLACEHOLDERS.sub("", text)
                if len(value) >= 4:
                    assert value not in bare, (value, text)
                if style == "native":
                    assert set(_NATIVE.findall(text)) == set(params)
            want = [i for i, f in enumerate(FLOWS) if compiled.matches(f)]
            assert engine.matching(compiled) == want, (field, value, wl, bl)
    return rejected, answered


@pytest.mark.parametrize("field", list(FIELDS))
def test_sfi_hostile_values_chdb(chdb: ChdbWorker, field: str) -> None:
    _check(chdb, field, FIELDS[field])
    assert chdb.count() == len(FLOWS)


@pytest.mark.parametrize("field", list(FIELDS))
def test_sfi_hostile_values_clickhouse18(ch18: ClickHouse18, field: str) -> None:
    _check(ch18, field, FIELDS[field])
    assert ch18.count() == len(FLOWS)


def test_sfi_hostile_values_match_their_flows(chdb: ChdbWorker) -> None:
    """Values that are legal filter values select the flows that carry them."""
    v = "'; DROP TABLE sfi_flows; --"
    i = HOSTILE.index(v)
    compiled = compile_request_filters([F(uuid=[v])])
    assert chdb.matching(compiled) == [i]
    compiled = compile_request_filters([F(source_pod=["x/" + v])])
    assert chdb.matching(compiled) == [i]
    compiled = compile_request_filters([F(interface=[flow_pb2.NetworkInterface(name="\x00")])])
    assert chdb.matching(compiled) == [HOSTILE.index("\x00")]
    assert chdb.count() == len(FLOWS)
