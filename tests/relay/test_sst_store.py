"""The store on both backends (chDB in-process, clickhouse-server 18.16): schema and
migrations, exactly-once writes through every kind of interruption, acked positions,
rollups equal to raw aggregation, lossless re-emission, injection-safe values,
retention."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.store import BatchError, IngestBatch, Store, open_store, validate_batch
from relay.store import schema as sch
from relay.store.backend import StoreError
from relay.store.store import Retention
from sensilla.filters.columns import FLOW_COLUMNS
from sensilla.protos import flow_pb2
from tests.relay.helpers import (
    Crash,
    FaultyBackend,
    assert_exactly_once,
    assert_rollups_exact,
    make_batches,
)


def test_sst_flows_columns_follow_the_contract() -> None:
    assert {**FLOW_COLUMNS, "flow": "String"} == sch.FLOWS_COLUMNS, (
        "sensilla/filters/columns.py changed: add a store migration for the new columns"
    )


def test_sst_migrate_is_idempotent_and_versioned(url: str) -> None:
    a = open_store(url)
    try:
        assert a.schema_version() == sch.SCHEMA_VERSION
        tables = {
            r[0]
            for r in a.backend.query(
                "SELECT name FROM system.tables WHERE database = {d:String}", {"d": a.db}
            )
        }
        assert {
            "flows",
            "flows_minute",
            "flows_hour",
            "ingest_batches",
            "ingest_positions",
            "collectors",
            "schema_version",
            "flows_minute_mv",
            "flows_hour_mv",
        } <= tables
        assert a.migrate() == sch.SCHEMA_VERSION  # again: nothing changes, nothing fails
        rows = a.backend.query(f"SELECT count() FROM {a.t('schema_version')}")
        assert rows[0][0] == len(sch.MIGRATIONS)
    finally:
        a.close()


def test_sst_newer_schema_is_refused(url: str) -> None:
    a = open_store(url)
    try:
        a.backend.insert(
            a.t("schema_version"),
            {"version": [sch.SCHEMA_VERSION + 1], "description": ["future"], "applied": [0]},
            {"version": "UInt32", "description": "String", "applied": "DateTime"},
        )
        with pytest.raises(StoreError, match="newer"):
            a.migrate()
    finally:
        a.close()


def test_sst_server_options_gated_on_version(store: Store) -> None:
    create = store.backend.query(
        "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = 'flows'",
        {"d": store.db},
    )[0][0]
    if store.server_version >= sch.MODERN:
        assert "TTL" in create and "fsync_after_insert" in create
    else:
        assert store.server_version[:2] == (18, 16)
        assert "TTL" not in create


def test_sst_write_ack_and_duplicates(store: Store) -> None:
    batches = make_batches("n1", 11, 6, 200)
    r = store.write_batches(batches[:4])
    assert r.stored == [b.key for b in batches[:4]] and not r.duplicates
    assert r.flows_written == 800 and r.acked == {("n1", 11): 4}
    r = store.write_batches(batches[2:])  # 2 resent, 2 new
    assert sorted(r.duplicates) == [("n1", 11, 3), ("n1", 11, 4)]
    assert r.flows_written == 400 and r.acked == {("n1", 11): 6}
    assert store.acked_positions("n1") == {11: 6}
    assert_exactly_once(store, {("n1", 11): 1200})
    assert_rollups_exact(store)


def test_sst_acked_is_the_highest_sequence_without_gap(store: Store) -> None:
    b = make_batches("gap", 5, 5, 10)
    store.write_batches([b[0], b[1], b[3]])
    assert store.acked_positions("gap") == {5: 2}
    r = store.write_batches([b[2]])
    assert r.acked == {("gap", 5): 4}
    store.write_batches([b[4]])
    assert store.acked_positions("gap") == {5: 5}
    other = make_batches("gap", 9, 1, 10)
    store.write_batches(other)
    assert store.acked_positions("gap") == {5: 5, 9: 1}


@pytest.mark.parametrize(
    ("op", "table", "how"),
    [
        ("insert", "ingest_batches", "before"),  # begun markers never written
        ("insert", "ingest_batches", "after"),  # begun markers written, client never heard
        ("insert", "flows", "before"),
        ("insert", "flows", "half"),  # some blocks stored, the rest not
        ("insert", "flows", "after"),  # all flows stored, the client never heard
        ("insert", "ingest_positions", "before"),  # committed, position not advanced
    ],
)
def test_sst_interrupted_write_then_retry_stores_each_flow_once(
    store: Store, op: str, table: str, how: str
) -> None:
    faulty = FaultyBackend(store.backend)
    store.backend = faulty
    batches = make_batches("crash", 3, 4, 250)
    store.write_batches(batches[:1])
    seen = {"n": 0}

    def when(o: str, t: str, n: int) -> str | None:
        if o == op and t == table:
            seen["n"] += 1
            return how
        return None

    faulty.fail(when)
    with pytest.raises(Crash):
        store.write_batches(batches[1:])
    assert seen["n"] == 1
    # as after a restart: a fresh store instance, the collector resends everything
    fresh = Store(faulty, retention=store.retention)
    fresh.server_version = store.server_version
    assert fresh.prepare_collector("crash")[3] >= 1
    r = fresh.write_batches(batches)
    assert r.acked == {("crash", 3): 4}
    assert fresh.acked_positions("crash") == {3: 4}
    assert_exactly_once(fresh, {("crash", 3): 1000})
    assert_rollups_exact(fresh)


def test_sst_rollups_reconciled_when_a_view_block_was_lost(store: Store) -> None:
    """A crash can leave a block in `flows` but not in a rollup (views run after the
    table's write): reconciliation at Hello makes the rollups exact again."""
    faulty = FaultyBackend(store.backend)
    store.backend = faulty
    batches = make_batches("mv", 8, 3, 300)
    faulty.fail(lambda o, t, n: "after" if (o, t) == ("insert", "flows") else None)
    with pytest.raises(Crash):
        store.write_batches(batches)
    # simulate the lost view block: take 1 batch worth of counts out of both rollups
    for table in ("flows_minute", "flows_hour"):
        store.backend.execute(
            f"INSERT INTO {store.t(table)} SELECT bucket, {', '.join(sch.ROLLUP_DIMS)}, "
            f"-flows, -packets, -bytes FROM {store.t(table)} WHERE collector_id = 'mv' LIMIT 3"
        )
    with pytest.raises(AssertionError):
        assert_rollups_exact(store)
    store.prepare_collector("mv")  # the collector reconnects: its unfinished batches
    assert_rollups_exact(store)
    states = store.backend.query(
        f"SELECT batch_seq, max(state) FROM {store.t('ingest_batches')} GROUP BY batch_seq"
    )
    assert {s for _, s in states} == {sch.MARKER_RECONCILED}
    # the resend completes them, still exact
    store.write_batches(batches)
    assert_exactly_once(store, {("mv", 8): 900})
    assert_rollups_exact(store)


def test_sst_recover_at_startup_reconciles_batches_never_resent(store: Store) -> None:
    faulty = FaultyBackend(store.backend)
    store.backend = faulty
    batches = make_batches("gone", 4, 2, 400)
    faulty.fail(lambda o, t, n: "half" if (o, t) == ("insert", "flows") else None)
    with pytest.raises(Crash):
        store.write_batches(batches)
    report = Store(faulty, exclusive=True).recover()
    assert report.reconciled_batches == 2 and report.collectors == ["gone"]
    assert 0 < store.count_rows() < 800
    assert store.count_rows() == store.count_distinct()
    assert_rollups_exact(store)
    assert store.acked_positions("gone") == {}


def test_sst_shared_server_recover_skips_young_unfinished_batches(store: Store) -> None:
    faulty = FaultyBackend(store.backend)
    store.backend = faulty
    faulty.fail(lambda o, t, n: "before" if (o, t) == ("insert", "flows") else None)
    with pytest.raises(Crash):
        store.write_batches(make_batches("young", 1, 1, 10))
    assert Store(faulty, exclusive=False).recover().reconciled_batches == 0
    assert Store(faulty, exclusive=False).recover(min_age_s=0).reconciled_batches == 1


def test_sst_iter_flows_reemits_exactly_what_was_stored(store: Store) -> None:
    a = make_batches("ra", 1, 3, 100, step_ns=7_000_001)
    b = make_batches("rb", 2, 3, 100, step_ns=5_000_003)
    store.write_batches(a + b)
    sent = [f for batch in a + b for f in batch.flows]
    got = list(store.iter_flows(page_size=77))
    assert len(got) == len(sent)
    assert sorted(f.SerializeToString() for f in got) == sorted(f.SerializeToString() for f in sent)
    times = [f.time.ToNanoseconds() for f in got]
    assert times == sorted(times)
    mid = times[len(times) // 2]
    window = list(store.iter_flows(since_ns=mid, until_ns=times[-1]))
    assert [f.time.ToNanoseconds() for f in window] == [t for t in times if mid <= t < times[-1]]
    assert len(list(store.iter_flows(collector_id="rb", limit=150))) == 150


def test_sst_validate_batch_names_the_field() -> None:
    good = make_batches("v", 7, 1, 3)[0]
    validate_batch(good)
    assert (good.first_seq, good.last_seq) == (1, 3)
    cases = {
        "collector_id": IngestBatch("", 7, 1, good.flows),
        "boot_id": IngestBatch("v", 0, 1, good.flows),
        "batch.sequence": IngestBatch("v", 7, 0, good.flows),
        "position.collector_id": IngestBatch("w", 7, 1, good.flows),
        "position.boot_id": IngestBatch("v", 8, 1, good.flows),
        "position.sequence": IngestBatch("v", 7, 1, [good.flows[0], good.flows[2]]),
        "extensions": IngestBatch("v", 7, 1, [flow_pb2.Flow()]),
    }
    for field, batch in cases.items():
        with pytest.raises(BatchError, match=field.replace(".", r"\.")):
            validate_batch(batch)


def test_sst_lost_events_and_collectors_are_kept(store: Store) -> None:
    b = make_batches("le", 3, 1, 5)[0]
    b.lost_events = [flow_pb2.LostEvent(source=flow_pb2.PERF_EVENT_RING_BUFFER, num_events_lost=42)]
    store.write_batches([b])
    store.write_batches([b])  # a resend does not count twice
    lost = store.lost_events("le")
    assert [(e.source, e.num_events_lost) for e in lost] == [(flow_pb2.PERF_EVENT_RING_BUFFER, 42)]
    store.record_hello("le", "node-le", 3, "10.0.0.1:4244", "v1", "peer")
    store.record_hello("le", "node-le", 4, "10.0.0.1:4244", "v1", "peer")
    (c,) = store.collectors()
    assert (c["collector_id"], c["node_name"], c["boot_id"]) == ("le", "node-le", 4)


HOSTILE = st.one_of(
    st.sampled_from(
        [
            "'",
            "\\",
            "\\'",
            "'); DROP TABLE flows; --",
            "\x00",
            "{s:String}",
            "%(x)s",
            "%s",
            "\n\t\r",
            "ÿ",
            "😀",
            "\\x41",
        ]
    ),
    st.text(max_size=40),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(HOSTILE, min_size=1, max_size=5))
def test_sst_injection_strings_round_trip_as_data(store: Store, values: list[str]) -> None:
    values = [v for v in values if _utf8(v)]
    if not values:
        return
    rows = store.select(
        "SELECT {s:String}, {a:Array(String)}, has({a:Array(String)}, {s:String}), "
        "{s:String} IN {set:Set(String)}",
        {"s": values[0], "a": values, "set": values},
    )
    assert rows == [(values[0], values, 1, 1)]
    raw = store.select(
        "SELECT {b:String} AS b", {"b": values[0].encode() + b"\xff\x00"}, binary=(0,)
    )
    assert raw == [(values[0].encode() + b"\xff\x00",)]
    # as a stored collector id and namespace: written and read back as data
    cid = ("c" + values[0])[:200]
    if not cid.isprintable():
        return
    boot = next(_BOOTS)  # examples share the store: a new boot each time
    batch = make_batches(cid, boot, 1, 2)[0]
    for f in batch.flows:
        f.source.namespace = values[-1]
    store.write_batches([batch])
    assert store.acked_positions(cid)[boot] == 1
    got = store.aggregate_raw(
        "minute",
        0,
        2**32 - 1,
        ["collector_id", "src_namespace"],
        where={"collector_id": [cid], "src_namespace": [values[-1]]},
    )
    assert len(got) == 1 and (got[0]["collector_id"], got[0]["src_namespace"]) == (cid, values[-1])
    assert got == store.rollup(
        "minute",
        0,
        2**32 - 1,
        ["collector_id", "src_namespace"],
        where={"collector_id": [cid], "src_namespace": [values[-1]]},
    )
    assert store.count_rows() == store.count_distinct()


_BOOTS = itertools.count(1000)


def _utf8(v: str) -> bool:
    try:
        v.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def test_sst_select_refuses_statements(store: Store) -> None:
    with pytest.raises(ValueError):
        store.select("DROP TABLE x")
    with pytest.raises(ValueError, match="rollup dimension"):
        store.rollup("minute", 0, 1, ["src_pod"])
    with pytest.raises(ValueError, match="rollup dimension"):
        store.rollup("minute", 0, 1, [], where={"flow": ["x"]})


def test_sst_retention_drops_old_partitions(store: Store) -> None:
    store.retention = Retention(flows_days=2, minute_days=3, hour_days=40)
    now = time.time()
    old = make_batches("ret", 1, 1, 50, start_ns=int((now - 10 * 86400) * 1e9))
    new = make_batches("ret", 1, 1, 50, start_ns=int((now - 3600) * 1e9), first_batch=2)
    store.write_batches(old + new)
    dropped = store.apply_retention(now)
    tables = {t for t, _ in dropped}
    assert {"flows", "flows_minute"} <= tables and "flows_hour" not in tables
    assert store.count_rows() == 50
    assert store.rollup("hour", 0, 2**32 - 1)[0]["flows"] == 100  # hours kept longer
    assert store.apply_retention(now) == []


@pytest.mark.parametrize("backend_kind", ["chdb"], indirect=True)
def test_sst_a_chdb_path_has_one_owner(store: Store, url: str) -> None:
    import subprocess
    import sys

    code = "from relay.store import open_store; import sys; open_store(sys.argv[1])"
    proc = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    assert "another relay" in proc.stderr


def test_sst_tls_to_clickhouse_server() -> None:
    """clickhouses:// against 18.16's secure native port: verified with the server's
    certificate as CA, refused when verification fails, and never on the plain port."""
    from tests.relay.clickhouse_server import ClickHouseServer, available

    if not available():
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer(tls=True)
    try:
        server.start()
        st = open_store(f"{server.tls_url}?ca_certs={server.ca_file}")
        try:
            st.write_batches(make_batches("tls", 1, 2, 50))
            assert st.count_distinct() == 100
        finally:
            st.close()
        with pytest.raises(StoreError):  # the system CAs do not know this certificate
            open_store(server.tls_url + "?connect_timeout=3")
        st = open_store(server.tls_url + "?verify=0")
        try:
            assert st.count_distinct() == 100
        finally:
            st.close()
    finally:
        server.cleanup()
