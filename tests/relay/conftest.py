"""Fixtures for the relay's store and ingest tests (prefix: sst).

chDB is one embedded engine per process, bound to one path at a time: a module's
chDB tests share one directory (a keeper connection holds it open), each test with its
own database, and everything is closed at the end of the module.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.store import Store, open_store
from tests.relay.clickhouse_server import ClickHouseServer, available

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def ch18() -> Iterator[ClickHouseServer]:
    """Debian's clickhouse-server 18.16, started for the session."""
    if not available():
        pytest.skip("clickhouse-server is not installed")
    server = ClickHouseServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def chdb_dir() -> Iterator[Path]:
    import chdb

    d = Path(tempfile.mkdtemp(prefix="sst-chdb-"))
    keeper = chdb.connect(str(d))
    try:
        yield d
    finally:
        keeper.close()
        shutil.rmtree(d, ignore_errors=True)


def store_url(kind: str, request: pytest.FixtureRequest) -> str:
    db = f"sst_{next(_counter)}"
    if kind == "chdb":
        d = request.getfixturevalue("chdb_dir")
        return f"chdb://{d}?database={db}"
    server: ClickHouseServer = request.getfixturevalue("ch18")
    return server.url.rsplit("/", 1)[0] + f"/{db}?send_receive_timeout=20"


@pytest.fixture(params=["chdb", "ch18"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend_kind: str, request: pytest.FixtureRequest) -> str:
    return store_url(backend_kind, request)


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    st = open_store(url)
    try:
        yield st
    finally:
        st.close()
