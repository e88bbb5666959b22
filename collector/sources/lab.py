"""The lab source: the cluster's objects from a lab state directory.

Layout and write protocol: docs/architecture.md, "The lab state directory". Writers
(`sensilla lab label`, `sensilla policy apply`) hold the directory's lock, replace
files atomically and bump `revision` last. Readers poll `revision` (a few bytes,
every 50 ms by default) and read a consistent snapshot under the lock when it moves.
Collectors publish the revision they enforce in `status/collectors/<node>.json`.

The interface matches collector.sources.kubernetes.KubernetesSource where they
overlap (`revision`, `wait`, `snapshot`, `cluster_state`), so the agent runs on
either.

    src = LabSource.for_node("sensilla-worker")       # or LabSource(state_dir)
    state = src.cluster_state()                        # ClusterState at one revision
    rev = src.wait(state.revision, timeout=1.0)        # returns when it moved (or timeout)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.policy.cluster import ClusterState
from sensilla.lab.state import Snapshot, StateDir

LABS_ROOT = Path("/run/sensilla/labs")
DEFAULT_POLL = 0.05


class LabSourceError(Exception):
    """The lab state directory could not be found or read."""


def status_dir(state_dir: Path) -> Path:
    return Path(state_dir).parent / "status" / "collectors"


def find_state_dir(lab: str | None = None, node: str | None = None) -> Path:
    """The state directory of lab `lab`, or of the lab that has node `node`, or of
    the only lab on this machine."""
    if lab:
        d = LABS_ROOT / lab / "state"
        if not d.is_dir():
            raise LabSourceError(f"lab {lab!r} has no state directory at {d} (is it up?)")
        return d
    candidates = sorted(p / "state" for p in LABS_ROOT.glob("*") if (p / "state").is_dir())
    if node:
        candidates = [d for d in candidates if (d / "nodes" / f"{node}.json").exists()]
        if len(candidates) == 1:
            return candidates[0]
        raise LabSourceError(f"no single lab has node {node!r} under {LABS_ROOT}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LabSourceError(f"no lab is up (nothing under {LABS_ROOT})")
    names = ", ".join(d.parent.name for d in candidates)
    raise LabSourceError(f"several labs are up ({names}); name one")


class LabSource:
    name = "lab"

    def __init__(self, state_dir: str | Path, poll_interval: float = DEFAULT_POLL) -> None:
        self.state = StateDir(state_dir)
        self.poll_interval = poll_interval
        self._closed = False

    @classmethod
    def for_node(cls, node: str, lab: str | None = None) -> LabSource:
        return cls(find_state_dir(lab, node))

    @property
    def path(self) -> Path:
        return self.state.path

    # --- the KubernetesSource-like interface ------------------------------------------
    def start(self) -> LabSource:
        return self

    def close(self) -> None:
        self._closed = True

    stop = close

    @property
    def revision(self) -> int:
        try:
            return self.state.revision()
        except (OSError, ValueError):
            return -1

    def wait(self, revision: int, timeout: float | None = None) -> int:
        """Poll until the revision is past `revision` (or timeout, or close)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.revision
            if current > revision or self._closed:
                return current
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return current
                time.sleep(min(self.poll_interval, left))
            else:
                time.sleep(self.poll_interval)

    def snapshot(self) -> Snapshot:
        if not self.state.path.is_dir():
            raise LabSourceError(f"no state directory at {self.state.path}")
        return self.state.snapshot()

    def cluster_state(self) -> ClusterState:
        """The policy model's view (PolicyValidationError for an invalid policy)."""
        snap = self.snapshot()
        return ClusterState.from_objects(
            nodes=snap.objects.get("nodes", {}).values(),
            namespaces=snap.objects.get("namespaces", {}).values(),
            pods=snap.objects.get("pods", {}).values(),
            policies=snap.objects.get("networkpolicies", {}).values(),
            revision=snap.revision,
        )


# --- collectors' status ---------------------------------------------------------------


def write_status(state_dir: Path, node: str, status: Mapping[str, Any]) -> None:
    d = status_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{node}.json"
    tmp = d / f".{node}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(dict(status), indent=1, sort_keys=True))
    os.replace(tmp, path)


def read_status(state_dir: Path, node: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((status_dir(state_dir) / f"{node}.json").read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass
class CollectorWait:
    revision: int
    reached: dict[str, int]  # node -> revision reported
    lagging: dict[str, str]  # node -> why it has not reached the revision
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.lagging


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def wait_for_collectors(
    state_dir: Path,
    revision: int,
    timeout: float = 10.0,
    nodes: Iterable[str] | None = None,
    poll: float = 0.02,
) -> CollectorWait:
    """Wait until every node's collector reports enforcing `revision` or later."""
    state = StateDir(state_dir)
    if nodes is None:
        nodes = sorted(state.objects("nodes"))
    nodes = list(nodes)
    start = time.monotonic()
    deadline = start + timeout
    while True:
        reached: dict[str, int] = {}
        lagging: dict[str, str] = {}
        for node in nodes:
            st = read_status(Path(state_dir), node)
            if st is None:
                lagging[node] = "no collector has reported (is it running?)"
                continue
            rev = int(st.get("revision", -1))
            if rev >= revision:
                reached[node] = rev
                continue
            why = f"enforces revision {rev}"
            if st.get("error"):
                why += f"; last error: {st['error']}"
            if st.get("pid") and not _pid_alive(st["pid"]):
                why += f"; its process {st['pid']} is gone"
            lagging[node] = why
        now = time.monotonic()
        if not lagging or now >= deadline:
            return CollectorWait(revision, reached, lagging, now - start)
        time.sleep(poll)
