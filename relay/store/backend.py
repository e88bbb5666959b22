"""The two ways to reach ClickHouse: chDB in-process, clickhouse-driver over the
native protocol. A backend runs SQL with typed parameters (``relay.store.params``),
returns rows, and inserts column-oriented data; the store builds everything else on
these three operations, so both backends share one schema and one write protocol.

Backends are thread-safe: every thread gets its own chDB connection (to the same
embedded server) or its own driver client.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from relay.store.params import bind_chdb, bind_driver
from relay.store.url import StoreURL

log = logging.getLogger(__name__)


class StoreError(Exception):
    """A store operation failed (the message never contains credentials)."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or did not answer; retrying later may succeed."""


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.strip().strip('"').split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


class Backend(abc.ABC):
    kind: str
    database: str

    @abc.abstractmethod
    def version(self) -> tuple[int, ...]:
        """The server's version, e.g. (18, 16, 1)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement that returns nothing."""

    @abc.abstractmethod
    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        binary: Collection[int] = (),
    ) -> list[tuple[Any, ...]]:
        """Rows of a SELECT. String columns are str, except the column positions in
        ``binary``, which are bytes."""

    @abc.abstractmethod
    def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
    ) -> None:
        """Insert column-oriented data (all columns the same length) in one INSERT."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def settle(self, timeout: float = 120.0) -> None:
        """Return once no statement this backend gave up on (timeout, lost connection)
        can still change data; raise StoreUnavailable when that cannot be known.
        In-process chDB: a call that returned (or raised) is over."""
        return None

    def fence_writes(self, timeout: float = 120.0) -> None:
        """Return once every INSERT into this database that was running when called
        (by any client, e.g. a relay that died mid-write) has finished.
        In-process chDB: one process owns the path, nothing else writes."""
        return None


def _decode(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


# --- chDB ------------------------------------------------------------------------


class ChdbBackend(Backend):
    kind = "chdb"

    def __init__(self, url: StoreURL) -> None:
        import chdb  # heavy: imported only when a chDB store is opened

        self._chdb = chdb
        self.path = url.path
        self.database = url.database
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[Any] = []
        self._closed = False
        try:
            self._conn()  # open the embedded server now, so errors surface here
        except Exception as exc:
            raise StoreError(
                f"cannot open chDB at {self.path} (one process owns a chDB path: is another "
                f"relay using it?): {exc}"
            ) from exc

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise StoreError("store is closed")
                conn = self._chdb.connect(self.path)
                conn.query("SET output_format_arrow_string_as_string = 0")
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def version(self) -> tuple[int, ...]:
        return parse_version(str(self.query("SELECT version()")[0][0]))

    def _run(self, sql: str, params: Mapping[str, Any] | None, fmt: str) -> Any:
        text, encoded = bind_chdb(sql, params)
        try:
            return self._conn().query(text, fmt, params=encoded or None)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self._run(sql, params, "CSV")

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        binary: Collection[int] = (),
    ) -> list[tuple[Any, ...]]:
        table = self._run(sql, params, "ArrowTable")
        if table.num_rows == 0:
            return []
        # a column's name may hold a bound value's bytes (not always UTF-8): rename first
        table = table.rename_columns([f"c{i}" for i in range(table.num_columns)])
        cols = []
        for i, column in enumerate(table.columns):
            values = column.to_pylist()
            if i not in binary:
                values = [_decode(v) for v in values]
            cols.append(values)
        return list(zip(*cols, strict=True))

    def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
    ) -> None:
        import pyarrow as pa

        arrays = {}
        for name, values in columns.items():
            arrays[name] = pa.array(values, _arrow_type(types[name], values))
        tbl = pa.table(arrays)
        if tbl.num_rows == 0:
            return
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, tbl.schema) as writer:
            writer.write_table(tbl)
        data = sink.getvalue().to_pybytes()
        sql = f"INSERT INTO {table} ({', '.join(columns)})"
        try:
            with self._conn().send_insert(sql, "ArrowStream") as ins:
                ins.append(data)
                ins.finish()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.debug("closing a chDB connection failed", exc_info=True)


def _arrow_type(ch_type: str, values: Sequence[Any]) -> Any:
    import pyarrow as pa

    simple = {
        "UInt8": pa.uint8(),
        "UInt16": pa.uint16(),
        "UInt32": pa.uint32(),
        "UInt64": pa.uint64(),
        "Int8": pa.int8(),
        "Int16": pa.int16(),
        "Int32": pa.int32(),
        "Int64": pa.int64(),
        "DateTime": pa.uint32(),
        "Float64": pa.float64(),
    }
    if ch_type in simple:
        return simple[ch_type]
    if ch_type == "String":
        for v in values:
            return pa.binary() if isinstance(v, bytes) else pa.string()
        return pa.string()
    if ch_type == "Array(String)":
        # serialized messages (a batch marker's lost events) are bytes, not UTF-8
        binary = any(isinstance(x, bytes) for v in values for x in v)
        return pa.list_(pa.binary() if binary else pa.string())
    if ch_type.startswith("Array(") and ch_type[6:-1] in simple:
        return pa.list_(simple[ch_type[6:-1]])
    raise StoreError(f"no Arrow type for {ch_type}")


# --- clickhouse-driver -------------------------------------------------------------


class DriverBackend(Backend):
    kind = "clickhouse"

    def __init__(self, url: StoreURL) -> None:
        self.database = url.database
        self._url = url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        self._closed = False
        self._unsettled: set[str] = set()  # query ids of statements that may still run
        self.version()  # connect now, so that a bad URL fails at start

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            from clickhouse_driver import Client

            u = self._url
            kwargs: dict[str, Any] = {
                "host": u.host,
                "port": u.port,
                "user": u.user,
                "password": u.password,
                "secure": u.secure,
                "verify": u.verify,
                "connect_timeout": u.connect_timeout,
                "send_receive_timeout": u.send_receive_timeout,
                "sync_request_timeout": u.connect_timeout,
                "client_name": "sensilla-relay",
            }
            if u.ca_certs:
                kwargs["ca_certs"] = u.ca_certs
            if u.compression:
                kwargs["compression"] = u.compression
            with self._lock:
                if self._closed:
                    raise StoreError("store is closed")
                client = Client(**kwargs)
                self._clients.append(client)
            self._local.client = client
        return client

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from clickhouse_driver import errors as ch_errors

        client = self._client()
        query_id = f"sensilla-relay-{uuid.uuid4()}"
        try:
            return fn(client, query_id, *args, **kwargs)
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, EOFError, OSError) as exc:
            # the server may still be running (or about to run) the statement
            with self._lock:
                self._unsettled.add(query_id)
            client.disconnect()
            raise StoreUnavailable(f"{self._url.redacted()}: {type(exc).__name__}: {exc}") from exc
        except ch_errors.Error as exc:
            # the connection may be mid-protocol after an error: start a fresh one
            client.disconnect()
            raise StoreError(str(exc)) from exc

    def version(self) -> tuple[int, ...]:
        return parse_version(str(self.query("SELECT version()")[0][0]))

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        text, values = bind_driver(sql, params)
        self._call(lambda c, qid: c.execute(text, values, query_id=qid))

    def query(
        self,
        sql: str,
        params: Mapping[str, Any] | None = None,
        *,
        binary: Collection[int] = (),
    ) -> list[tuple[Any, ...]]:
        text, values = bind_driver(sql, params)
        rows = self._call(
            lambda c, qid: c.execute(
                text, values, settings={"strings_as_bytes": True}, query_id=qid
            )
        )
        if not binary:
            return [tuple(_decode(v) for v in row) for row in rows]
        return [tuple(v if i in binary else _decode(v) for i, v in enumerate(row)) for row in rows]

    def insert(
        self, table: str, columns: Mapping[str, Sequence[Any]], types: Mapping[str, str]
    ) -> None:
        if not columns or not len(next(iter(columns.values()))):
            return
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        data = [list(v) for v in columns.values()]
        self._call(lambda c, qid: c.execute(sql, data, columnar=True, query_id=qid))

    def _running(self, sql: str, params: Mapping[str, Any]) -> set[str]:
        return {str(r[0]) for r in self.query(sql, params)}

    def _wait_gone(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while ids:
            ids &= self._running(
                "SELECT query_id FROM system.processes WHERE query_id IN {ids:Set(String)}",
                {"ids": sorted(ids)},
            )
            if not ids:
                return
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"{len(ids)} earlier statements are still running")
            time.sleep(0.1)

    def settle(self, timeout: float = 120.0) -> None:
        with self._lock:
            ids = set(self._unsettled)
        if not ids:
            return
        self._wait_gone(set(ids), timeout)
        with self._lock:
            self._unsettled -= ids

    def fence_writes(self, timeout: float = 120.0) -> None:
        ids = self._running(
            "SELECT query_id FROM system.processes WHERE startsWith(query, {p:String})",
            {"p": f"INSERT INTO {self.database}."},
        )
        self._wait_gone(ids, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.disconnect()
            except Exception:  # pragma: no cover - best effort
                log.debug("disconnect failed", exc_info=True)


def open_backend(url: StoreURL) -> Backend:
    if url.scheme == "chdb":
        return ChdbBackend(url)
    return DriverBackend(url)
