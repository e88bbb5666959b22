"""The Sensilla processes a lab runs besides its pod servers: a relay in the root
namespace (on chDB under the lab's directory) and one collector per node, inside
the node's network namespace, shipping to the relay over the node's management
link."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sensilla.lab import processes
from sensilla.lab.layout import OBSERVER_PORT, RELAY_PORT
from sensilla.security.lab import LabSecurity

if TYPE_CHECKING:
    from sensilla.lab.layout import LabLayout, NodeLayout
    from sensilla.lab.runtime import Lab

METRICS_PORT = 9965  # Hubble's metrics port


@dataclass
class Options:
    relay: bool = True
    collectors: bool = True
    # extra arguments for `sensilla collector` and `sensilla relay`
    collector_args: list[str] = field(default_factory=list)
    relay_args: list[str] = field(default_factory=list)
    # the relay's store URL (default: chDB under the lab's directory)
    store: str | None = None
    # mutual TLS between everything (certificates under <lab>/certs) and bearer tokens
    # on the relay (<lab>/auth); plaintext is --insecure (sensilla.security.lab)
    tls: bool = False
    tokens: bool = False


def store_url(lab: Lab, options: Options) -> str:
    return options.store or f"chdb://{lab.dir / 'relay-data'}"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sensilla.cli.main", *args]


def relay_argv(
    lab: Lab,
    layout: LabLayout,
    extra: list[str],
    store: str | None = None,
    security: LabSecurity | None = None,
) -> list[str]:
    listen = [layout.relay_loopback] + [f"{n.mgmt_root_v4}:{RELAY_PORT}" for n in layout.nodes]
    argv = ["relay", "--store", store or f"chdb://{lab.dir / 'relay-data'}"]
    for addr in listen:
        argv += ["--listen", addr]
    argv += ["--source", f"lab:{lab.state.path}", "--metrics", "127.0.0.1:0"]
    argv += ["--ready-file", str(lab.dir / "relay.ready")]
    argv += (security or LabSecurity()).relay_args(extra)
    return _cli(*argv, *extra)


def collector_argv(
    lab: Lab,
    node: NodeLayout,
    relay: bool,
    extra: list[str],
    security: LabSecurity | None = None,
) -> list[str]:
    argv = [
        "collector",
        "--node",
        node.name,
        "--source",
        f"lab:{lab.state.path}",
        "--ready-line",
        "--listen",
        f"{node.mgmt_node_v4}:{OBSERVER_PORT}",
        "--socket",
        str(lab.dir / "nodes" / node.name / "hubble.sock"),
        "--metrics",
        f"{node.mgmt_node_v4}:{METRICS_PORT}",
        "--spool-dir",
        str(lab.dir / "spool"),
    ]
    if relay:
        argv += ["--relay", node.relay_address]
    argv += (security or LabSecurity()).collector_args(node.name, relay, extra)
    return _cli(*argv, *extra)


def _wait_file(path: Any, timeout: float, proc: processes.ProcessInfo) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        except (FileNotFoundError, ValueError):
            if not processes.alive(proc.pid):
                break
            time.sleep(0.05)
    raise RuntimeError(
        f"{proc.name} did not become ready ({proc.log}):\n{processes._tail(proc.log)}"
    )


def start(lab: Lab, layout: LabLayout, options: Options, say: Callable[[str], None]) -> None:
    """Start the relay and the collectors side by side (collectors retry until the
    relay listens), then wait for all of them to be ready."""
    relay_proc = None
    security = LabSecurity.make(lab.dir, layout, tls=options.tls, tokens=options.tokens)
    if options.relay:
        say("starting the relay (chDB)" if options.store is None else "starting the relay")
        relay_proc = processes.start(
            lab.dir,
            "relay",
            relay_argv(lab, layout, options.relay_args, options.store, security),
        )
    collectors = []
    starting = []
    if options.collectors:
        say("starting the collectors: " + ", ".join(n.name for n in layout.nodes))
        for node in layout.nodes:
            starting.append(
                processes.launch(
                    lab.dir,
                    f"collector-{node.name}",
                    collector_argv(lab, node, options.relay, options.collector_args, security),
                    netns=node.netns,
                    ready_timeout=90,
                )
            )
            collectors.append(
                {
                    "node": node.name,
                    "address": f"{node.mgmt_node_v4}:{OBSERVER_PORT}",
                    "socket": str(lab.dir / "nodes" / node.name / "hubble.sock"),
                    "metrics": f"{node.mgmt_node_v4}:{METRICS_PORT}",
                }
            )
    if relay_proc is not None:
        ready = _wait_file(lab.dir / "relay.ready", 60, relay_proc)
        lab.update_description(
            relay={
                "address": layout.relay_loopback,
                "addresses": ready.get("addresses", []),
                "management": [f"{n.mgmt_root_v4}:{RELAY_PORT}" for n in layout.nodes],
                "metrics": ready.get("metrics"),
                "store": _redacted(store_url(lab, options)),
                **security.described,  # tls: {ca, cert, key}, token_file (paths only)
            }
        )
    for s in starting:
        s.wait()
    if collectors:
        lab.update_description(collectors=collectors)


def _redacted(url: str) -> str:
    """The store URL as lab status shows it: without a password in the URL."""
    return re.sub(r"^([a-z]+://[^:/@?]*):[^@/?]*@", r"\1@", url)
