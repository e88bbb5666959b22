"""Unloading leaves nothing in bpffs: the node's pin directory goes, and the pin root
goes with the last node's (loading created both)."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest

from datapath import Datapath

pytestmark = pytest.mark.needs_root


def test_unload_removes_the_pin_root_with_the_last_node() -> None:
    root = Path(f"/sys/fs/bpf/sensilla-t{secrets.token_hex(3)}")
    first = Datapath.open("pr-a", pin_root=root)
    second = Datapath.open("pr-b", pin_root=root)
    try:
        first.ensure_loaded()
        second.ensure_loaded()
        assert sorted(p.name for p in root.iterdir()) == ["pr-a", "pr-b"]
        first.unload()
        assert [p.name for p in root.iterdir()] == ["pr-b"]  # another node's pins stay
        second.unload()
        assert not root.exists()
        # loading again after the root went recreates it
        first.ensure_loaded()
        assert (root / "pr-a").is_dir()
    finally:
        for dp in (first, second):
            dp.unload()
        shutil.rmtree(root, ignore_errors=True)
    assert not root.exists()
