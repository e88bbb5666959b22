"""A lab with one enforcing collector per node, for the policy tests and benches.

When `sensilla lab up` does not start collectors itself, this starts them (inside
each node's namespace, as the lab will) and stops them before the lab goes down.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector.sources.lab import read_status, wait_for_collectors
from sensilla.cli.main import main as cli
from sensilla.lab import Options, processes, temporary_lab
from sensilla.lab.layout import LabLayout
from sensilla.lab.probe import probe, select_pairs
from sensilla.lab.runtime import Lab, k8s_objects

Table = dict[tuple[str, str], bool]


@dataclass
class PolicyLab:
    lab: Lab
    layout: LabLayout
    workdir: Path
    started: list[str] = field(default_factory=list)  # lab processes we started

    @property
    def state_dir(self) -> Path:
        return self.lab.state.path

    def wait(self, revision: int | None = None, timeout: float = 10.0) -> float:
        rev = self.lab.state.revision() if revision is None else revision
        result = wait_for_collectors(self.state_dir, rev, timeout=timeout)
        if not result.ok:
            raise AssertionError(f"collectors lag behind revision {rev}: {result.lagging}")
        return result.seconds

    def apply_text(self, text: str) -> None:
        f = self.workdir / f"apply-{time.monotonic_ns()}.yaml"
        f.write_text(text)
        rc = cli(["policy", "apply", "-f", str(f), "--state-dir", str(self.state_dir)])
        if rc != 0:
            raise AssertionError(f"policy apply failed ({rc}) for:\n{text}")

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.apply_text(yaml.safe_dump_all(docs, sort_keys=False))

    def reset(self) -> None:
        """No policies, every label as `lab up` made it; one revision."""
        spec = self.lab.spec()
        wanted = {
            (kind, key): obj for kind, obj, key in k8s_objects(self.layout, spec) if kind != "nodes"
        }
        changes: list[tuple[str, Any, str]] = []
        for (kind, key), obj in wanted.items():
            current = self.lab.state.read(kind, key) or {}
            labels = (current.get("metadata") or {}).get("labels") or {}
            if labels != obj["metadata"]["labels"]:
                merged = dict(current)
                merged["metadata"] = {
                    **current.get("metadata", {}),
                    "labels": obj["metadata"]["labels"],
                }
                changes.append((kind, merged, key))
        for key in self.lab.state.objects("networkpolicies"):
            changes.append(("networkpolicies", None, key))
        if changes:
            self.wait(self.lab.state.apply(changes))

    def label(self, kind: str, key: str, labels: dict[str, str]) -> None:
        changes = [f"{k}={v}" for k, v in labels.items()]
        self.wait(self.lab.state.label(kind, key, changes, overwrite=True))

    def probe(self, port: int, protocol: str, family: int = 4, timeout: float = 0.6) -> Table:
        pairs = select_pairs(self.layout, None, None)
        results = probe(self.layout, pairs, port, protocol, family, timeout)
        return {(r.source, r.destination): r.connected for r in results}

    def collector_logs(self) -> str:
        out = []
        for f in sorted((self.lab.dir / "logs").glob("collector*.log")):
            out.append(f"--- {f.name}\n{f.read_text()[-4000:]}")
        return "\n".join(out)


def collector_argv(node: str, state_dir: Path) -> list[str]:
    """How a lab runs a node's collector (inside the node's namespace)."""
    return [
        sys.executable,
        "-m",
        "sensilla.cli.main",
        "--log-level",
        "INFO",
        "collector",
        "--node",
        node,
        "--source",
        f"lab:{state_dir}",
        "--ready-line",
    ]


def _start_collectors(plab: PolicyLab) -> None:
    for node in plab.layout.nodes:
        name = f"collector-{node.name}"
        processes.start(
            plab.lab.dir,
            name,
            collector_argv(node.name, plab.state_dir),
            netns=node.netns,
            ready_line=True,
        )
        plab.started.append(name)


def _lab_runs_collectors(lab: Lab) -> bool:
    if lab.description().get("collectors"):
        return True
    return any(p.name.startswith("collector") for p in processes.list_processes(lab.dir))


@contextlib.contextmanager
def policy_lab(prefix: str = "spo") -> Iterator[PolicyLab]:
    with (
        tempfile.TemporaryDirectory(prefix="spo-") as tmp,
        temporary_lab(prefix, options=Options(relay=False, collectors=True)) as lab,
    ):
        plab = PolicyLab(lab, lab.layout(), Path(tmp))
        try:
            if not _lab_runs_collectors(lab):
                _start_collectors(plab)
            deadline = time.monotonic() + 60
            while True:
                st = [read_status(plab.state_dir, n.name) for n in plab.layout.nodes]
                if all(s is not None and s.get("revision", -1) >= 1 for s in st):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("collectors did not start:\n" + plab.collector_logs())
                time.sleep(0.05)
            yield plab
        finally:
            for name in plab.started:
                processes.stop_one(lab.dir, name)
