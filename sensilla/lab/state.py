"""The lab's state directory: Kubernetes objects as JSON files, watched by sources.

Layout (docs/architecture.md, "The lab state directory"):

    state/revision                       integer, +1 on every write
    state/.lock                          writers hold an exclusive flock
    state/<kind>/<name>.json             cluster-scoped kinds (nodes, namespaces)
    state/<kind>/<namespace>/<name>.json namespaced kinds (pods, networkpolicies)

Every write happens under the lock, replaces files atomically (write then rename)
and stamps `metadata.resourceVersion` with the new revision, which it writes last.
A reader that reads `revision` first and then the files sees at least that
revision's objects.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = {
    "nodes": ("v1", "Node", False),
    "namespaces": ("v1", "Namespace", False),
    "pods": ("v1", "Pod", True),
    "networkpolicies": ("networking.k8s.io/v1", "NetworkPolicy", True),
}

Obj = dict[str, Any]
ChangeList = Sequence[tuple[str, Obj | None, str]]
StrList = list[str]


class StateError(Exception):
    """A bad request against the state directory (unknown object, bad label, ...)."""


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class Snapshot:
    revision: int
    objects: dict[str, dict[str, Obj]]  # kind -> "ns/name" or "name" -> object

    def get(self, kind: str, key: str) -> Obj | None:
        return self.objects.get(kind, {}).get(key)


class StateDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- paths ------------------------------------------------------------------
    @property
    def revision_file(self) -> Path:
        return self.path / "revision"

    def object_path(self, kind: str, key: str) -> Path:
        if kind not in KINDS:
            raise StateError(f"unknown kind {kind!r}")
        namespaced = KINDS[kind][2]
        parts = key.split("/")
        if namespaced != (len(parts) == 2) or not all(parts) or ".." in parts:
            raise StateError(f"bad {kind} key {key!r}")
        return self.path.joinpath(kind, *parts[:-1], parts[-1] + ".json")

    # --- locking and revisions ----------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def revision(self) -> int:
        try:
            return int(self.revision_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    # --- reads ------------------------------------------------------------------------
    def read(self, kind: str, key: str) -> Obj | None:
        try:
            data: Obj = json.loads(self.object_path(kind, key).read_text())
            return data
        except FileNotFoundError:
            return None

    def objects(self, kind: str) -> dict[str, Obj]:
        base = self.path / kind
        out: dict[str, Obj] = {}
        if not base.exists():
            return out
        for f in sorted(base.rglob("*.json")):
            rel = f.relative_to(base).with_suffix("")
            try:
                out["/".join(rel.parts)] = json.loads(f.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                continue  # replaced between listing and reading; the next poll sees it
        return out

    def snapshot(self) -> Snapshot:
        """A consistent view: taken under the lock, so no write is half-visible."""
        with self.locked():
            return Snapshot(self.revision(), {kind: self.objects(kind) for kind in KINDS})

    # --- writes -----------------------------------------------------------------------
    def _stamp(self, kind: str, obj: Obj, revision: int) -> Obj:
        api_version, k8s_kind, namespaced = KINDS[kind]
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", k8s_kind)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            raise StateError(f"{k8s_kind}: metadata.name is required")
        if namespaced and not meta.get("namespace"):
            raise StateError(f"{k8s_kind} {meta['name']}: metadata.namespace is required")
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(revision)
        meta.setdefault("labels", {})
        return obj

    @staticmethod
    def key_of(kind: str, obj: Obj) -> str:
        meta = obj["metadata"]
        return f"{meta['namespace']}/{meta['name']}" if KINDS[kind][2] else meta["name"]

    def apply(self, changes: ChangeList) -> int:
        """Apply (kind, object or None to delete, key) changes as one revision.

        Returns the new revision. Objects keep their uid across updates.
        """
        with self.locked():
            revision = self.revision() + 1
            for kind, obj, key in changes:
                path = self.object_path(kind, key)
                if obj is None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                old = self.read(kind, key)
                if old is not None and "uid" in old.get("metadata", {}):
                    obj = copy.deepcopy(obj)
                    obj.setdefault("metadata", {})["uid"] = old["metadata"]["uid"]
                stamped = self._stamp(kind, obj, revision)
                _atomic_write(path, json.dumps(stamped, indent=1, sort_keys=True))
            _atomic_write(self.revision_file, f"{revision}\n")
            return revision

    def put(self, kind: str, obj: Obj) -> int:
        stamped = self._stamp(kind, obj, 0)
        return self.apply([(kind, obj, self.key_of(kind, stamped))])

    def delete(self, kind: str, key: str) -> int:
        if self.read(kind, key) is None:
            raise StateError(f"{KINDS[kind][1]} {key} not found")
        return self.apply([(kind, None, key)])

    def label(self, kind: str, key: str, changes: StrList, overwrite: bool = False) -> int:
        """`kubectl label` semantics: key=value sets, key- removes; changing an
        existing value needs overwrite."""
        sets, removes = parse_label_changes(changes)
        with self.locked():
            obj = self.read(kind, key)
            if obj is None:
                raise StateError(f"{KINDS[kind][1]} {key} not found")
            labels = obj.setdefault("metadata", {}).setdefault("labels", {})
            for k, v in sets.items():
                if k in labels and labels[k] != v and not overwrite:
                    raise StateError(
                        f"'{k}' already has a value ({labels[k]}), and --overwrite is false"
                    )
            for k in removes:
                if k not in labels:
                    raise StateError(f"label {k!r} not found")
            labels.update(sets)
            for k in removes:
                del labels[k]
            revision = self.revision() + 1
            stamped = self._stamp(kind, obj, revision)
            _atomic_write(
                self.object_path(kind, key), json.dumps(stamped, indent=1, sort_keys=True)
            )
            _atomic_write(self.revision_file, f"{revision}\n")
            return revision


_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_PREFIX = r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"


def valid_label_key(key: str) -> bool:
    import re

    if not re.fullmatch(_LABEL_PREFIX + _LABEL_NAME, key):
        return False
    prefix = key.rsplit("/", 1)[0] if "/" in key else ""
    return len(prefix) <= 253


def valid_label_value(value: str) -> bool:
    import re

    return value == "" or re.fullmatch(_LABEL_NAME, value) is not None


def parse_label_changes(changes: list[str]) -> tuple[dict[str, str], list[str]]:
    sets: dict[str, str] = {}
    removes: list[str] = []
    if not changes:
        raise StateError("at least one label change (key=value or key-) is required")
    for change in changes:
        if change.endswith("-") and "=" not in change:
            key = change[:-1]
            if not valid_label_key(key):
                raise StateError(f"invalid label key {key!r}")
            removes.append(key)
        elif "=" in change:
            key, value = change.split("=", 1)
            if not valid_label_key(key):
                raise StateError(f"invalid label key {key!r}")
            if not valid_label_value(value):
                raise StateError(f"invalid label value {value!r} for key {key!r}")
            sets[key] = value
        else:
            raise StateError(f"invalid label change {change!r}: use key=value or key-")
    overlap = set(sets) & set(removes)
    if overlap:
        raise StateError(f"label {sorted(overlap)[0]!r} both set and removed")
    return sets, removes
