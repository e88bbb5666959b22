"""A lab's life cycle: up, status, down.

`up` writes the lab's description (lab.json) and a creation journal *before* it
creates anything, so `down` can remove everything even after an `up` that failed
half way, and a second `down` finds nothing to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datapath.loader import DEFAULT_PIN_ROOT, unpin_all
from sensilla.lab import components, processes, topology
from sensilla.lab import netns as N
from sensilla.lab.layout import DEFAULT_LAB, MAX_SLOTS, LabLayout, build_layout, check_lab_name
from sensilla.lab.spec import LabSpec, load_spec, parse_spec
from sensilla.lab.state import StateDir

log = logging.getLogger(__name__)

RUN_ROOT = Path("/run/sensilla")
LABS_DIR = RUN_ROOT / "labs"
SLOTS_DIR = RUN_ROOT / "slots"
BPF_ROOT = DEFAULT_PIN_ROOT  # where the lab's collectors pin (their default)


class LabError(Exception):
    """The lab could not be brought up, found, or changed; the message says why."""


def lab_dir(name: str) -> Path:
    return LABS_DIR / check_lab_name(name)


@contextlib.contextmanager
def _global_lock() -> Iterator[None]:
    RUN_ROOT.mkdir(parents=True, exist_ok=True)
    with open(RUN_ROOT / ".labs.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _allocate_slot(name: str) -> int:
    SLOTS_DIR.mkdir(parents=True, exist_ok=True)
    # slot 0 (the relay on 127.0.0.1:4245) belongs to the default lab; other labs,
    # such as the tests', take the others
    first = 0 if name == DEFAULT_LAB else 1
    for slot in range(first, MAX_SLOTS):
        f = SLOTS_DIR / str(slot)
        owner = f.read_text().strip() if f.exists() else ""
        if owner == name or not owner or not (LABS_DIR / owner).exists():
            f.write_text(name)
            return slot
    raise LabError(f"no free lab slot (at most {MAX_SLOTS} labs at once)")


def _free_slot(name: str) -> None:
    for f in SLOTS_DIR.glob("*") if SLOTS_DIR.exists() else []:
        with contextlib.suppress(FileNotFoundError):
            if f.read_text().strip() == name:
                f.unlink()


class Lab:
    """A handle on a lab that exists (or existed) on this machine."""

    def __init__(self, name: str) -> None:
        self.name = check_lab_name(name)
        self.dir = lab_dir(name)

    # --- description ---------------------------------------------------------
    @property
    def description_file(self) -> Path:
        return self.dir / "lab.json"

    def description(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.description_file.read_text())
            return data
        except FileNotFoundError as exc:
            raise LabError(f"lab {self.name!r} is not up") from exc

    def write_description(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.description_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.description_file)

    def update_description(self, **fields: Any) -> None:
        with _global_lock():
            data = self.description()
            data.update(fields)
            self.write_description(data)

    def exists(self) -> bool:
        return self.description_file.exists()

    def spec(self) -> LabSpec:
        return parse_spec(self.description()["spec"])

    def layout(self) -> LabLayout:
        d = self.description()
        return build_layout(self.spec(), self.name, int(d["slot"]))

    @property
    def state(self) -> StateDir:
        return StateDir(self.dir / "state")

    # --- journal of created objects --------------------------------------------
    def journal(self, kind: str, name: str) -> None:
        with open(self.dir / "journal.jsonl", "a") as f:
            f.write(json.dumps({"kind": kind, "name": name}) + "\n")

    def journal_entries(self) -> list[dict[str, str]]:
        try:
            lines = (self.dir / "journal.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # --- status ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The lab as `lab status -o json` prints it: live labels from the state dir."""
        d = self.description()
        snap = self.state.snapshot()
        pods = []
        for pod in d.get("pods", []):
            obj = snap.get("pods", f"{pod['namespace']}/{pod['name']}") or {}
            labels = obj.get("metadata", {}).get("labels", pod.get("labels", {}))
            pods.append({**pod, "labels": labels})
        namespaces = []
        for key, obj in sorted(snap.objects.get("namespaces", {}).items()):
            namespaces.append({"name": key, "labels": obj.get("metadata", {}).get("labels", {})})
        return {
            "name": self.name,
            "status": d.get("status"),
            "slot": d.get("slot"),
            "state_dir": str(self.state.path),
            "revision": snap.revision,
            "nodes": d.get("nodes", []),
            "namespaces": namespaces,
            "pods": pods,
            "relay": d.get("relay", {}),
            "collectors": d.get("collectors", []),
            "processes": [
                {"name": p.name, "pid": p.pid, "alive": processes.alive(p.pid), "log": p.log}
                for p in processes.list_processes(self.dir)
            ],
        }


def describe(layout: LabLayout, spec: LabSpec, status: str) -> dict[str, Any]:
    return {
        "name": layout.name,
        "slot": layout.slot,
        "status": status,
        "created": time.time(),
        "spec": spec.to_dict(),
        "nodes": [
            {
                "name": n.name,
                "netns": n.netns,
                "addresses": n.addresses,
                "pod_cidrs": [n.pod_cidr_v4, n.pod_cidr_v6],
                "management": {
                    "root_interface": n.mgmt_root_if,
                    "root_address": n.mgmt_root_v4,
                    "node_address": n.mgmt_node_v4,
                },
            }
            for n in layout.nodes
        ],
        "pods": [
            {
                "namespace": p.spec.namespace,
                "name": p.spec.name,
                "node": p.node.name,
                "netns": p.netns,
                "interface": p.host_if,
                "ips": [p.ipv4, p.ipv6],
                "labels": dict(p.spec.labels),
                "ports": [
                    {"name": q.name, "port": q.port, "protocol": q.protocol} for q in p.spec.ports
                ],
            }
            for p in layout.pods
        ],
        "fabric_netns": layout.fabric_netns,
        "relay": {},
        "collectors": [],
    }


def owner_references(workload: tuple[str, str] | None) -> list[dict[str, Any]]:
    """What a controller would set: Deployments own pods through a ReplicaSet."""
    if workload is None:
        return []
    kind, name = workload
    if kind == "Deployment":
        kind, name = "ReplicaSet", f"{name}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    api = "batch/v1" if kind == "Job" else "apps/v1"
    return [{"apiVersion": api, "kind": kind, "name": name, "controller": True, "uid": ""}]


def k8s_objects(layout: LabLayout, spec: LabSpec) -> list[tuple[str, dict[str, Any], str]]:
    """The lab's initial Kubernetes objects: Nodes, Namespaces, Pods."""
    changes: list[tuple[str, dict[str, Any], str]] = []
    for n in layout.nodes:
        obj = {
            "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name}},
            "spec": {"podCIDR": n.pod_cidr_v4, "podCIDRs": [n.pod_cidr_v4, n.pod_cidr_v6]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": n.fabric_v4},
                    {"type": "InternalIP", "address": n.fabric_v6},
                    {"type": "Hostname", "address": n.name},
                ],
                # Sensilla lab extension: every address the node owns
                "sensillaHostAddresses": n.addresses,
            },
        }
        changes.append(("nodes", obj, n.name))
    for ns in spec.namespaces:
        changes.append(
            ("namespaces", {"metadata": {"name": ns.name, "labels": dict(ns.labels)}}, ns.name)
        )
    for p in layout.pods:
        ports = [
            {"name": q.name, "containerPort": q.port, "protocol": q.protocol} for q in p.spec.ports
        ]
        obj = {
            "metadata": {
                "name": p.spec.name,
                "namespace": p.spec.namespace,
                "labels": dict(p.spec.labels),
                "annotations": {"sensilla.io/host-interface": p.host_if},
                "ownerReferences": owner_references(p.spec.workload),
            },
            "spec": {
                "nodeName": p.node.name,
                "containers": [{"name": "server", "image": "sensilla-lab", "ports": ports}],
            },
            "status": {
                "phase": "Running",
                "hostIP": p.node.fabric_v4,
                "podIP": p.ipv4,
                "podIPs": [{"ip": p.ipv4}, {"ip": p.ipv6}],
            },
        }
        changes.append(("pods", obj, p.key))
    return changes


def up(
    name: str = DEFAULT_LAB,
    spec_path: str | None = None,
    options: components.Options | None = None,
    progress: Any = None,
) -> Lab:
    """Create the lab. On failure, everything created so far is removed."""
    spec = load_spec(spec_path)
    options = options or components.Options()
    lab = Lab(name)
    say = progress or (lambda msg: None)
    with _global_lock():
        if lab.exists():
            raise LabError(f"lab {name!r} is already up (sensilla lab down first)")
        lab.dir.mkdir(parents=True, exist_ok=True)
        slot = _allocate_slot(name)
        layout = build_layout(spec, name, slot)
        lab.write_description(describe(layout, spec, "starting"))
    try:
        say(f"creating network: {len(layout.nodes)} nodes, {len(layout.pods)} pods")
        topology.build(layout, lab.journal)
        lab.state.apply(k8s_objects(layout, spec))
        say("starting pod servers")
        processes.start(
            lab.dir,
            "servers",
            [sys.executable, "-m", "sensilla.lab.servers", str(lab.description_file)],
            ready_line=True,
        )
        components.start(lab, layout, options, say)
        lab.update_description(status="running")
    except BaseException:
        down(name)
        raise
    return lab


def down(name: str = DEFAULT_LAB) -> list[str]:
    """Remove everything of the lab; safe to call twice. Returns leftovers (empty
    when all is gone)."""
    lab = Lab(name)
    netns_names: set[str] = set()
    root_links: set[str] = set()
    nodes: set[str] = set()
    if lab.exists():
        with contextlib.suppress(Exception):
            layout = lab.layout()
            netns_names.update(layout.netns_names)
            root_links.update(n.mgmt_root_if for n in layout.nodes)
            nodes.update(n.name for n in layout.nodes)
    for entry in lab.journal_entries():
        (netns_names if entry["kind"] == "netns" else root_links).add(entry["name"])
    # anything else carrying the lab's prefix (an up that died before its journal)
    netns_names.update(n for n in N.list_names() if n.startswith(f"{name}-"))
    if lab.dir.exists():
        processes.stop_all(lab.dir)
    for node in nodes | {n for n in netns_names if not n.startswith(f"{name}-pod-")}:
        if node.startswith(f"{name}-"):
            unpin_all(BPF_ROOT / node)  # and the root, once no lab has pins left
    leftovers = topology.destroy(sorted(netns_names), sorted(root_links))
    if lab.dir.exists():
        shutil.rmtree(lab.dir, ignore_errors=True)
    with _global_lock():
        _free_slot(name)
    return leftovers


def list_labs() -> list[str]:
    if not LABS_DIR.exists():
        return []
    return sorted(p.name for p in LABS_DIR.iterdir() if (p / "lab.json").exists())
