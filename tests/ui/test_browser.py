"""The dashboard in a real browser: headless Chromium (Debian's /usr/bin/chromium,
driven by playwright) against ``sensilla ui`` pointed at a relay.

The checks run against two targets (a module fixture with two parameters):

- ``fake``: the fake relay of tests/ui/fake_relay.py, with known canned data;
- ``lab`` (root): the lab stack, `sensilla lab up` with its relay (chDB) and one
  collector per node, where known traffic is made: a policy (y/allow-from-y) that
  lets only namespace y reach y/b on 80/TCP, then probes x/a → y/b (denied),
  x/b → y/a, y/c → y/b and z/c → x/a:81/UDP (allowed). Its extra test applies the
  NetworkPolicy the Troubleshoot page suggests, with `sensilla policy apply`, and
  checks that exactly that probe now connects (issue 10, acceptance 2).

Both: every page renders (screenshots of each in tests/artifacts/ui/), the service
map shows the namespaces and a dropped edge that, clicked, lists its flows, the
Drops page lists the denied pair with POLICY_DENIED, Troubleshoot explains it with a
copyable snippet, and with the relay stopped every page shows the banner and no
traceback (acceptance 3).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import ARTIFACTS, ROOT
from ui.components import graph

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]
PAGES = {  # url path -> heading
    "": "Overview",
    "service_map": "Service map",
    "flows": "Flows",
    "drops": "Drops",
    "troubleshoot": "Troubleshoot",
}

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs /usr/bin/chromium")


class Sandbox:
    """Where the browser, the UI and the relay run.

    As root: a private network namespace with only loopback. Chromium aborts
    page loads with ERR_NETWORK_CHANGED whenever an interface appears or goes in
    its namespace, and on this machine other tests create and delete links all
    the time; in a namespace of its own nothing changes. Without root: the
    current namespace (page loads are retried, see open_page)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.netns = ""
        self.root_address = ""
        self.root_ui_port = _free_port()  # the UI that runs next to a root-namespace relay
        self.links: list[str] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        if os.geteuid() == 0 and shutil.which("ip") and shutil.which("nsenter"):
            name = "sui" + secrets.token_hex(4)
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
            self.netns = name
            subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                           timeout=20)

    def cmd(self, argv: list[str], *, inside: bool = True) -> list[str]:
        if not self.netns or not inside:
            return argv
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def link_to_root(self) -> str:
        """A veth pair between the root namespace and the sandbox (a /30); returns
        the root side's address, which the sandbox reaches. Servers that must run in
        the root namespace (next to a lab's relay) bind there."""
        if not self.netns:
            return "127.0.0.1"
        if self.root_address:
            return self.root_address
        used = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                              text=True, check=True).stdout
        third = next(i for i in range(200, 256) if f" 10.253.{i}." not in used)
        root_if, ns_if = f"{self.netns}r", f"{self.netns}n"
        subprocess.run(["ip", "link", "add", root_if, "type", "veth", "peer", "name", ns_if,
                        "netns", self.netns], check=True, timeout=20)
        self.links.append(root_if)
        subprocess.run(["ip", "addr", "add", f"10.253.{third}.1/30", "dev", root_if],
                       check=True, timeout=20)
        subprocess.run(["ip", "link", "set", root_if, "up"], check=True, timeout=20)
        subprocess.run(["ip", "-n", self.netns, "addr", "add", f"10.253.{third}.2/30", "dev",
                        ns_if], check=True, timeout=20)
        subprocess.run(["ip", "-n", self.netns, "link", "set", ns_if, "up"], check=True,
                       timeout=20)
        self.root_address = f"10.253.{third}.1"
        return self.root_address

    def spawn(self, argv: list[str], log_name: str, ready: str, timeout: float = 60,
              *, inside: bool = True) -> tuple[subprocess.Popen[bytes], str]:
        """Start a process; wait for a line containing ``ready`` in its output and
        return that line."""
        log = self.workdir / log_name
        env = dict(os.environ, HOME=str(self.workdir), PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            proc = subprocess.Popen(self.cmd(argv, inside=inside), stdout=out,
                                    stderr=subprocess.STDOUT,
                                    env=env, cwd=ROOT, start_new_session=True)
        self._procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            for line in log.read_text(errors="replace").splitlines():
                if ready in line:
                    return proc, line
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()}")
            time.sleep(0.1)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def chromium(self) -> str:
        """The browser executable (a wrapper entering the namespace, as root)."""
        if not self.netns:
            return CHROMIUM
        wrapper = self.workdir / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec nsenter --net=/run/netns/{self.netns} '
                           f'{CHROMIUM} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def close(self) -> None:
        for proc in self._procs:
            self.stop(proc)
        for link in self.links:  # deleting one end removes the pair
            subprocess.run(["ip", "link", "del", link], check=False, timeout=20,
                           capture_output=True)
        self.links.clear()
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False, timeout=20)
            self.netns = ""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    box = Sandbox(tmp_path_factory.mktemp("suibrowser"))
    try:
        yield box
    finally:
        box.close()


def start_fake_relay(box: Sandbox, dataset: str) -> tuple[subprocess.Popen[bytes], str]:
    proc, line = box.spawn([sys.executable, "-m", "tests.ui.fake_relay", "--listen",
                            "127.0.0.1:0", "--dataset", dataset],
                           f"relay-{dataset}-{secrets.token_hex(2)}.log", "fake relay (")
    return proc, line.rsplit(" on ", 1)[1].strip()


def start_ui(box: Sandbox, relay: str, *, root_ns: bool = False
             ) -> tuple[subprocess.Popen[bytes], str]:
    """`sensilla ui` in the sandbox (on its loopback), or in the root namespace bound
    to the sandbox link (for a relay that only listens in the root namespace)."""
    address = box.link_to_root() if root_ns else "127.0.0.1"
    port = box.root_ui_port if root_ns else _free_port()
    sensilla = str(Path(sys.executable).parent / "sensilla")
    proc, _line = box.spawn([sensilla, "ui", "--relay", relay, "--port", str(port),
                             "--address", address],
                            f"ui-{port}.log", f"URL: http://{address}:{port}", inside=not root_ns)
    return proc, f"http://{address}:{port}"


@dataclass
class Target:
    """A relay the UI reads, and what it is known to hold."""

    name: str
    relay: str
    namespaces: list[str]
    denied: tuple[str, str, int, str]  # source, destination, port, protocol
    # The Drops page's "Denied by" for the denied pair.
    denied_by: str
    stop_relay: Callable[[], None]
    root_ns: bool = False  # the relay listens in the root namespace only
    lab: str = ""  # the lab's name (lab target)

    @property
    def denied_edge_key(self) -> str:
        s, d, port, proto = self.denied
        return f"{s}|{d}|{proto}|{port}|DROPPED"


DENY_Y_B = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports: [{protocol: TCP, port: 80}]
"""


def sensilla_cli(*args: str, timeout: float = 120) -> str:
    out = subprocess.run([sys.executable, "-m", "sensilla.cli.main", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"sensilla {' '.join(args)}: {out.stderr or out.stdout}"
    return out.stdout


def probe(lab: str, src: str, dst: str, port: int, protocol: str) -> bool:
    import json

    out = json.loads(sensilla_cli("lab", "--name", lab, "probe", "--port", str(port),
                                  "--protocol", protocol, "--from", src, "--to", dst,
                                  "-o", "json"))
    (result,) = out["results"]
    return bool(result["connected"])


@contextlib.contextmanager
def lab_target(box: Sandbox) -> Iterator[Target]:
    """The lab stack with known allowed and denied traffic."""
    from sensilla.lab import Options, down, up
    from sensilla.lab.processes import stop_one
    from ui.config import RelayConfig
    from ui.data import RelayClient, TimeRange

    def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        # The lab runs asyncio internally; playwright's sync API owns this thread's loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(fn, *args).result()

    name = "sui" + secrets.token_hex(2)
    try:
        lab = off_loop(up, name, None, Options())  # relay (watching the lab) + collectors
        relay = lab.description()["relay"]["address"]
        policy = box.workdir / "deny-y-b.yaml"
        policy.write_text(DENY_Y_B)
        sensilla_cli("policy", "apply", "--lab", name, "-f", str(policy))
        for _ in range(2):
            assert not probe(name, "x/a", "y/b", 80, "TCP")
        assert probe(name, "x/b", "y/a", 80, "TCP")
        assert probe(name, "y/c", "y/b", 80, "TCP")
        assert probe(name, "z/c", "x/a", 81, "UDP")
        client = RelayClient(RelayConfig(address=relay, timeout=10))
        try:  # until the relay has stored and rolled up the flows
            deadline = time.monotonic() + 60
            while True:
                edges = client.service_map(TimeRange.last(900, quantum=0)).edges
                pairs = client.drop_summary(TimeRange.last(900, quantum=0)).top_pairs
                if not edges.empty and ((edges["source_id"] == "x/a")
                                        & (edges["destination_id"] == "y/b")
                                        & (edges["verdict"] == "DROPPED")).any() and (
                        not pairs.empty and (pairs["source"] == "x/a").any()):
                    break
                assert time.monotonic() < deadline, f"the relay never showed the drops:\n{edges}"
                time.sleep(1)
        finally:
            client.close()
        yield Target(name="lab", relay=relay, namespaces=["x", "y", "z"],
                     denied=("x/a", "y/b", 80, "TCP"),
                     denied_by="default deny (selected by y/allow-from-y)",
                     stop_relay=lambda: off_loop(stop_one, lab.dir, "relay"), root_ns=True,
                     lab=name)
    finally:
        leftovers = off_loop(down, name)
        assert not leftovers, leftovers


@pytest.fixture(scope="module", params=["fake", pytest.param("lab", marks=pytest.mark.needs_root)])
def target(request: pytest.FixtureRequest, sandbox: Sandbox) -> Iterator[Target]:
    if request.param == "lab":
        with lab_target(sandbox) as t:
            yield t
        return
    proc, address = start_fake_relay(sandbox, "lab")
    try:
        yield Target(name="fake", relay=address,
                     namespaces=["kube-system", "monitoring", "x", "y", "z"],
                     denied=("x/a", "y/b", 80, "TCP"),
                     denied_by="default deny (selected by y/allow-from-y)",
                     stop_relay=lambda: sandbox.stop(proc))
    finally:
        sandbox.stop(proc)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ui_url(sandbox: Sandbox, target: Target) -> Iterator[str]:
    proc, url = start_ui(sandbox, target.relay, root_ns=target.root_ns)
    try:
        yield url
    finally:
        sandbox.stop(proc)


@pytest.fixture(scope="module")
def browser(sandbox: Sandbox) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = sandbox.workdir / "chromium-profile"
    profile.mkdir()
    # The clipboard API needs a secure context: loopback is one; the address of the
    # UI that runs next to a lab's relay is declared one.
    root_ui = f"http://{sandbox.link_to_root()}:{sandbox.root_ui_port}"
    args = [*CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={root_ui}"]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=sandbox.chromium(), args=args,
            headless=True, viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    p = browser.new_page()
    try:
        yield p
    finally:
        p.close()


# --------------------------------------------------------------------------- helpers


def settle(page: Any, timeout: float = 20.0) -> None:
    """Wait until Streamlit has finished running the script."""
    deadline = time.monotonic() + timeout
    page.wait_for_timeout(300)
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count()
        skeleton = page.locator('[data-testid="stSkeleton"]').count()
        if not running and not skeleton:
            page.wait_for_timeout(400)
            if not page.locator('[data-testid="stStatusWidget"]').count():
                return
        page.wait_for_timeout(200)
    raise AssertionError("the app kept running")


def open_page(page: Any, url: str, path: str, *, query: str = "") -> None:
    """Load a page and wait for its heading. A load that Chromium aborted
    (ERR_NETWORK_CHANGED, when interfaces change in its namespace) is retried."""
    heading = page.locator('[data-testid="stHeading"]', has_text=PAGES[path]).first
    for attempt in range(3):
        page.goto(f"{url}/{path}{'?' + query if query else ''}")
        try:
            heading.wait_for(timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    settle(page)


def no_traceback(page: Any) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "Error running app" not in body


def shoot(page: Any, name: str) -> Path:
    """A screenshot of the whole page (Streamlit scrolls inside its main block)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate(
        "() => (document.querySelector('[data-testid=\"stMain\"]') || document.body)"
        ".scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(1000, min(int(height) + 40, 6000))})
    page.wait_for_timeout(700)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


def text(page: Any) -> str:
    return str(page.locator('[data-testid="stMain"]').inner_text())


# --------------------------------------------------------------------------- tests


def test_sui_browser_ui_binds_only_its_address(ui_url: str, sandbox: Sandbox,
                                               target: Target) -> None:
    host, port = ui_url.removeprefix("http://").rsplit(":", 1)
    out = subprocess.run(sandbox.cmd(["ss", "-Hltn", f"sport = :{port}"],
                                     inside=not target.root_ns),
                         capture_output=True, text=True, check=True).stdout.split()
    listening = [w for w in out if w.endswith(f":{port}")]
    assert listening == [f"{host}:{port}"]
    if not target.root_ns:
        assert host == "127.0.0.1"  # the default: loopback only


@pytest.mark.parametrize("path", list(PAGES))
def test_sui_browser_every_page_renders(path: str, ui_url: str, page: Any,
                                        target: Target) -> None:
    open_page(page, ui_url, path)
    no_traceback(page)
    body = text(page)
    assert "Relay unavailable" not in body
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "2 nodes connected" in sidebar
    for title in PAGES.values():  # navigation
        assert title in sidebar
    shoot(page, f"{target.name}/{path or 'overview'}")


def test_sui_browser_service_map_dropped_edge_click_shows_flows(ui_url: str, page: Any,
                                                                target: Target) -> None:
    open_page(page, ui_url, "service_map")
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for()
    labels = page.locator(".js-plotly-plot .annotation-text").all_text_contents()
    assert set(target.namespaces) <= set(labels)
    legend = page.locator(".js-plotly-plot .legendtext").all_text_contents()
    assert "dropped" in legend
    key = target.denied_edge_key
    plot.scroll_into_view_if_needed()
    spot = page.evaluate(
        """(key) => {
            const gd = document.querySelector('.js-plotly-plot');
            const trace = gd.data.findIndex(t => t.name === 'edges');
            const i = gd.data[trace].customdata.indexOf(key);
            if (i < 0) return null;
            gd.scrollIntoView({block: 'center'});
            const fl = gd._fullLayout, r = gd.getBoundingClientRect();
            return {x: r.left + fl._size.l + fl.xaxis.l2p(gd.data[trace].x[i]),
                    y: r.top + fl._size.t + fl.yaxis.l2p(gd.data[trace].y[i]),
                    color: gd.data[trace].marker.color[i]};
        }""", key)
    assert spot is not None, f"no edge {key} on the map"
    assert spot["color"] == "#d62728"  # dropped
    src, dst, port, proto = target.denied
    page.mouse.click(spot["x"], spot["y"])
    heading = page.locator('[data-testid="stHeading"]', has_text=f"Flows of {src} → {dst}")
    heading.wait_for(timeout=20_000)
    settle(page)
    body = text(page)
    assert f"{port}/{proto} · DROPPED" in body
    assert page.locator('[data-testid="stDataFrame"]').count() >= 1
    no_traceback(page)
    shoot(page, f"{target.name}/service_map_edge_selected")


def test_sui_browser_drops_lists_the_denied_pair(ui_url: str, page: Any, target: Target
                                                 ) -> None:
    open_page(page, ui_url, "drops")
    src, dst, port, proto = target.denied
    rows = page.locator('[data-testid="stTable"]').first.evaluate(
        "t => [...t.querySelectorAll('tr')].map("
        "r => [...r.querySelectorAll('th, td')].map(c => c.textContent.trim()))")
    header = rows[0]
    table = [dict(zip(header, r, strict=True)) for r in rows[1:]]
    wanted = [r for r in table if (r["Source"], r["Destination"], r["Port/Protocol"])
              == (src, dst, f"{port}/{proto}")]
    assert len(wanted) == 1, table
    assert wanted[0]["Reason"] == "POLICY_DENIED"
    assert "Started dropping recently" in text(page)
    no_traceback(page)
    shoot(page, f"{target.name}/drops")
    assert wanted[0]["Denied by"] == target.denied_by


def test_sui_browser_troubleshoot_explains_with_a_snippet(ui_url: str, page: Any,
                                                          target: Target) -> None:
    src, dst, port, proto = target.denied
    open_page(page, ui_url, "troubleshoot",
              query=f"from={src}&to={dst}&port={port}&protocol={proto}")
    body = text(page)
    assert f"Denied: {src} → {dst} on {port}/{proto}" in body
    assert f"Ingress at {dst}: selected by y/allow-from-y, and no rule allows this traffic → "\
        "denied by default deny." in body
    assert "Last observed for this pair and port: DROPPED (POLICY_DENIED)" in body
    code = page.locator('[data-testid="stCode"]').first
    snippet = code.inner_text()
    assert "kind: NetworkPolicy" in snippet and f"port: {port}" in snippet
    # the copy button puts exactly the snippet on the clipboard
    page.context.grant_permissions(["clipboard-read", "clipboard-write"],
                                   origin=ui_url)
    code.hover()
    code.get_by_role("button", name="Copy to clipboard").click()
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied.strip() == snippet.strip()
    no_traceback(page)
    shoot(page, f"{target.name}/troubleshoot_denied")


def test_sui_browser_lab_suggested_policy_makes_exactly_that_probe_connect(
    ui_url: str, page: Any, target: Target, sandbox: Sandbox
) -> None:
    if not target.lab:
        pytest.skip("applies policies to the lab target only")
    src, dst, port, proto = target.denied
    open_page(page, ui_url, "troubleshoot",
              query=f"from={src}&to={dst}&port={port}&protocol={proto}")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_url)
    code = page.locator('[data-testid="stCode"]').first
    code.hover()
    code.get_by_role("button", name="Copy to clipboard").click()
    snippet = page.evaluate("() => navigator.clipboard.readText()")
    path = sandbox.workdir / "suggested.yaml"
    path.write_text(snippet)
    assert not probe(target.lab, src, dst, port, proto)
    sensilla_cli("policy", "apply", "--lab", target.lab, "-f", str(path))
    assert probe(target.lab, src, dst, port, proto)
    # exactly that probe: other sources, ports and protocols to the pod stay denied
    assert not probe(target.lab, "x/b", dst, port, proto)
    assert not probe(target.lab, "z/a", dst, port, proto)
    assert not probe(target.lab, src, dst, 81, proto)
    assert not probe(target.lab, src, dst, port, "UDP")
    time.sleep(5.5)  # Explain answers are cached for 5 s
    open_page(page, ui_url, "troubleshoot",
              query=f"from={src}&to={dst}&port={port}&protocol={proto}")
    assert f"Allowed: {src} → {dst} on {port}/{proto}" in text(page)
    shoot(page, f"{target.name}/troubleshoot_after_apply")


def test_sui_browser_flows_live_mode_and_export(ui_url: str, page: Any, target: Target
                                                ) -> None:
    if target.name != "fake":
        pytest.skip("needs at least 100 known flows (the fake relay's)")
    open_page(page, ui_url, "flows")
    with page.expect_download() as dl:
        page.get_by_role("button", name="Export CSV").click()
    path = dl.value.path()
    assert path is not None
    lines = Path(path).read_text().splitlines()
    assert lines[0].startswith("time,source,destination,port,verdict,drop_reason,tcp_flags,node")
    assert len(lines) == 101
    page.get_by_text("Live", exact=True).click()
    caption = page.get_by_text("Live ·")
    caption.wait_for(timeout=20_000)
    first = caption.inner_text()
    # the fragment refreshes by itself every 2 s
    deadline = time.monotonic() + 15
    while caption.inner_text() == first and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert caption.inner_text() != first
    no_traceback(page)


def test_sui_browser_service_map_readable_at_64_workloads(page: Any, sandbox: Sandbox) -> None:
    relay, address = start_fake_relay(sandbox, "large")
    try:
        ui, url = start_ui(sandbox, address)
        # a deep link is the very first request of this server: it must get the app's
        # navigation and relay check, not a bare page
        open_page(page, url, "service_map")
        nav = [n.strip() for n in
               page.locator('[data-testid="stSidebarNav"]').inner_text().split("\n")]
        assert set(PAGES.values()) <= set(nav)
        assert "app" not in nav and "service map" not in nav  # no legacy page list
        assert "2 nodes connected" in page.locator('[data-testid="stSidebar"]').inner_text()
        page.locator(".js-plotly-plot").first.wait_for()
        body = text(page)
        shown = int(body.split(" workloads,")[0].split()[-1])
        assert shown <= graph.READABLE_WORKLOADS  # the largest namespaces start collapsed
        labels = page.locator(".js-plotly-plot .annotation-text").all_text_contents()
        assert {f"team-{i}" for i in range(8)} <= set(labels)
        assert "Collapse namespaces" in body
        no_traceback(page)
        shoot(page, "fake/service_map_64_workloads")
        sandbox.stop(ui)
    finally:
        sandbox.stop(relay)


def test_sui_browser_relay_down_banner_on_every_page(ui_url: str, page: Any,
                                                     target: Target) -> None:
    target.stop_relay()
    time.sleep(2.5)  # the relay status is cached for 2 s
    for path in PAGES:
        open_page(page, ui_url, path)
        banner = page.locator('[data-testid="stAlert"]', has_text="Relay unavailable")
        banner.first.wait_for(timeout=20_000)
        assert f"cannot reach the relay at {target.relay}" in banner.first.inner_text()
        no_traceback(page)
        shoot(page, f"{target.name}/relay_down_{path or 'overview'}")
