"""Fixtures for the UI tests: a fake relay (tests/ui/fake_relay.py) shared by the
session, reset before every test, and helpers to run the app's pages in AppTest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ui.fake_relay import FakeRelay

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "ui" / "app.py"
ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"


def clear_ui_caches() -> None:
    import streamlit as st

    st.cache_data.clear()


@pytest.fixture(scope="session")
def fake_relay_server() -> Iterator[FakeRelay]:
    relay = FakeRelay("lab")
    relay.start("127.0.0.1:0")
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def relay(fake_relay_server: FakeRelay, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRelay]:
    """The shared fake relay with the lab dataset, no injected faults, and the UI's
    environment pointing at it."""
    r = fake_relay_server
    r.heal()
    r.calls.clear()
    if r.dataset_name != "lab":
        r.use("lab")
    monkeypatch.setenv("SENSILLA_UI_RELAY", r.address)
    for name in ("SENSILLA_UI_TOKEN_FILE", "SENSILLA_UI_TLS_CA", "SENSILLA_UI_TLS_CERT",
                 "SENSILLA_UI_TLS_KEY"):
        monkeypatch.delenv(name, raising=False)
    clear_ui_caches()
    try:
        yield r
    finally:
        r.heal()
        if r.dataset_name != "lab":
            r.use("lab")
        clear_ui_caches()
