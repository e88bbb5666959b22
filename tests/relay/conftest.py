"""Fixtures for the relay's store and ingest tests (prefix: sst).

chDB tests use the chdb_dir fixture of tests/conftest.py (one directory per module,
each test with its own database).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

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
