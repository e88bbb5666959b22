"""Shared test configuration: privilege checks and the lab fixtures."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# gRPC's C core logs reconnects at INFO on stderr; tests provoke many on purpose.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (namespaces, eBPF)")
    for item in items:
        if "needs_root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def no_pins_left_behind() -> Iterator[None]:
    """A run leaves bpffs as it found it: every datapath, lab and demo removes its
    pins, and the last one the pin root (an empty /sys/fs/bpf/sensilla was left
    once)."""
    from datapath.loader import DEFAULT_PIN_ROOT

    existed = DEFAULT_PIN_ROOT.exists()
    yield
    if os.geteuid() == 0 and not existed and DEFAULT_PIN_ROOT.exists():
        left = sorted(str(p) for p in DEFAULT_PIN_ROOT.rglob("*"))
        pytest.fail(f"the run left {DEFAULT_PIN_ROOT} behind: {left or 'empty'}")


@pytest.fixture(scope="session")
def bare_lab() -> Iterator[Any]:
    """A lab with pod servers only (no collectors, no relay), shared by a session.

    Tests must leave it as they found it (labels, policies)."""
    from sensilla.lab import Options, temporary_lab

    with temporary_lab("tb", options=Options(relay=False, collectors=False)) as lab:
        yield lab


@pytest.fixture
def lab_factory() -> Iterator[Any]:
    """Make labs with custom specs/options; all are removed at the end of the test."""
    import contextlib

    from sensilla.lab import temporary_lab

    with contextlib.ExitStack() as stack:

        def make(prefix: str = "tf", spec_path: str | None = None, options: Any = None) -> Any:
            return stack.enter_context(temporary_lab(prefix, spec_path, options))

        yield make


@pytest.fixture(scope="session")
def full_lab() -> Iterator[Any]:
    """A lab with collectors on every node and a relay (on chDB), shared by a
    session. Tests must leave it as they found it (labels, policies)."""
    from sensilla.lab import Options, temporary_lab

    with temporary_lab("tl", options=Options(relay=True, collectors=True)) as lab:
        yield lab


@pytest.fixture(scope="module")
def chdb_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """chDB is one embedded engine per process, bound to one path at a time: a
    module's chDB tests share one directory (a keeper connection holds it open), each
    test with its own database; everything is closed at the end of the module."""
    import chdb

    module = request.module.__name__.rsplit(".", 1)[-1]
    d = Path(tempfile.mkdtemp(prefix=f"{module}-chdb-"))
    keeper = chdb.connect(str(d))
    try:
        yield d
    finally:
        keeper.close()
        shutil.rmtree(d, ignore_errors=True)
