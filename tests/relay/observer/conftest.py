"""Fixtures of the relay read-API tests (prefix srq): chDB is one engine per process,
bound to one path at a time; a module's tests share one directory (held open by a
keeper connection), each test with its own database."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def chdb_dir() -> Iterator[Path]:
    import chdb

    d = Path(tempfile.mkdtemp(prefix="srq-chdb-"))
    keeper = chdb.connect(str(d))
    try:
        yield d
    finally:
        keeper.close()
        shutil.rmtree(d, ignore_errors=True)
