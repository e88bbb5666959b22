"""The demo's UI shows live flows within a minute (a real browser)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ui.test_browser import CHROMIUM, CHROMIUM_ARGS, Sandbox, _free_port, open_page, shoot

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium"),
]

NAME = "tdemoui"


def test_demo_ui_has_live_flows_within_a_minute(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    box = Sandbox(tmp_path)
    address = box.link_to_root()
    port = _free_port()
    started = time.monotonic()
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sensilla.cli.main",
            "demo",
            "--name",
            NAME,
            "--duration",
            "300",
            "--ui-port",
            str(port),
            "--ui-address",
            address,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        profile = tmp_path / "profile"
        profile.mkdir()
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=box.chromium(),
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1400, "height": 1000},
            )
            try:
                page = ctx.new_page()
                url = f"http://{address}:{port}"
                seen = drops = ""
                shown = None
                last_error = ""
                while time.monotonic() - started < 90:
                    try:
                        open_page(page, url, "flows")
                    except Exception as exc:
                        last_error = repr(exc)[:300]
                        time.sleep(2)  # the demo is still starting
                        continue
                    seen = page.locator('[data-testid="stMain"]').inner_text()
                    shown = re.search(r"Page 1 · (\d+) flows", seen)
                    if shown and int(shown.group(1)) > 0:
                        shoot(page, "demo_flows")
                        open_page(page, url, "drops")
                        tables = page.locator('[data-testid="stTable"]')
                        if tables.count():
                            drops = tables.first.inner_text()
                            if "POLICY_DENIED" in drops:
                                break
                    time.sleep(2)
                elapsed = time.monotonic() - started
                shoot(page, "demo_drops")
                assert shown and int(shown.group(1)) > 0, (seen[-2000:], last_error)
                assert "POLICY_DENIED" in drops, drops
                assert elapsed < 60, f"UI data after {elapsed:.0f} s"
                print(f"demo UI shows forwarded and dropped flows {elapsed:.0f} s after start")
            finally:
                ctx.close()
    finally:
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
        box.close()
    assert demo.returncode == 0, out
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--server.port={port}" not in ps
