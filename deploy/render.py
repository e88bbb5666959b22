"""Render Sensilla's kustomizations without kustomize (tests, and a quick look).

Supports exactly what deploy/ uses, and refuses anything else rather than
ignoring it: `resources` (files, or directories holding a kustomization),
`components` (kind: Component), `patches` with a `target` and RFC 6902 JSON
patches (add, remove, replace, test), `namespace`, `images`. The real tool stays
`kubectl apply -k deploy/`; this renderer follows its order: resources, then each
component (its resources, then its patches over everything so far), then the
kustomization's own patches, namespace and images.

    python -m deploy.render [deploy/overlays/NAME]     # YAML on stdout
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KUSTOMIZATION_FILE = "kustomization.yaml"
KNOWN_FIELDS = {"apiVersion", "kind", "namespace", "resources", "components", "patches", "images"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterIssuer",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
}
POD_TEMPLATE_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}


class RenderError(Exception):
    """The kustomization uses something this renderer does not support, or is wrong."""


def load_yaml_documents(path: Path) -> list[Obj]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
    return docs


def _kustomization(directory: Path, want_kind: str) -> Obj:
    path = directory / KUSTOMIZATION_FILE
    if not path.is_file():
        raise RenderError(f"{directory}: no {KUSTOMIZATION_FILE}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{path}: unsupported fields {sorted(unknown)}")
    if data.get("kind", "Kustomization") != want_kind:
        raise RenderError(f"{path}: expected kind {want_kind}, found {data.get('kind')}")
    if want_kind == "Component" and data.get("namespace"):
        raise RenderError(f"{path}: a Component must not set namespace")
    return dict(data)


def identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta.get("name") or "")


# --- RFC 6902 ------------------------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts[:-1]:
        try:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        except (KeyError, IndexError, ValueError) as exc:
            raise RenderError(f"patch path {path}: {p!r} not found") from exc
    return cur


def json_patch(doc: Obj, ops: list[Obj]) -> Obj:
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), str(op.get("path", ""))
        parts = _pointer(path)
        if not parts:
            raise RenderError("patching the whole document is not supported")
        parent, last = _parent(doc, parts, path), parts[-1]
        if kind == "add":
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if not 0 <= idx <= len(parent):
                    raise RenderError(f"patch path {path}: index out of range")
                parent.insert(idx, copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind in ("replace", "remove", "test"):
            try:
                current = parent[int(last)] if isinstance(parent, list) else parent[last]
            except (KeyError, IndexError, ValueError) as exc:
                raise RenderError(f"patch path {path}: not found for {kind}") from exc
            if kind == "test":
                if current != op.get("value"):
                    raise RenderError(f"patch test failed at {path}: {current!r}")
            elif kind == "remove":
                del parent[int(last) if isinstance(parent, list) else last]
            else:
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(
                    op["value"]
                )
        else:
            raise RenderError(f"unsupported JSON patch op {kind!r}")
    return doc


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    checks = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": (obj.get("metadata") or {}).get("name"),
        "namespace": (obj.get("metadata") or {}).get("namespace"),
    }
    unknown = set(target) - set(checks)
    if unknown:
        raise RenderError(f"unsupported patch target fields {sorted(unknown)}")
    return all(checks[k] == v for k, v in target.items())


def apply_patches(objs: list[Obj], patches: list[Obj], base: Path) -> list[Obj]:
    for spec in patches:
        if set(spec) - {"path", "patch", "target"}:
            raise RenderError(f"{base}: unsupported patch fields {sorted(set(spec))}")
        text = (base / spec["path"]).read_text() if "path" in spec else spec.get("patch", "")
        ops = yaml.safe_load(text)
        if not isinstance(ops, list):
            raise RenderError(f"{base}: only JSON 6902 patches (a list of ops) are supported")
        target = spec.get("target")
        if not target:
            raise RenderError(f"{base}: a JSON patch needs a target")
        hits = [i for i, o in enumerate(objs) if _matches(o, target)]
        if not hits:
            raise RenderError(f"{base}: patch target {target} matches nothing")
        for i in hits:
            objs[i] = json_patch(objs[i], ops)
    return objs


def _set_namespace(objs: list[Obj], namespace: str) -> None:
    accounts = {
        (o.get("metadata") or {}).get("name") for o in objs if o["kind"] == "ServiceAccount"
    }
    for o in objs:
        if o["kind"] not in CLUSTER_SCOPED:
            o.setdefault("metadata", {})["namespace"] = namespace
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and s.get("name") in accounts:
                    s["namespace"] = namespace


def _set_images(objs: list[Obj], images: list[Obj]) -> None:
    for o in objs:
        if o["kind"] not in POD_TEMPLATE_KINDS and o["kind"] != "Pod":
            continue
        spec = o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
        for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
            name = c["image"].split("@")[0]
            if ":" in name.rsplit("/", 1)[-1]:
                name = name.rsplit(":", 1)[0]
            for img in images:
                if img["name"] == name:
                    new = img.get("newName", name)
                    if img.get("digest"):
                        c["image"] = f"{new}@{img['digest']}"
                    elif img.get("newTag"):
                        c["image"] = f"{new}:{img['newTag']}"
                    else:
                        c["image"] = new


def render(directory: str | Path, _kind: str = "Kustomization") -> list[Obj]:
    """Every object of the kustomization in `directory`, transformed."""
    base = Path(directory)
    k = _kustomization(base, _kind)
    objs: list[Obj] = []
    for entry in k.get("resources") or []:
        path = base / entry
        objs += render(path) if path.is_dir() else load_yaml_documents(path)
    for entry in k.get("components") or []:
        comp_dir = base / entry
        comp = _kustomization(comp_dir, "Component")
        for res in comp.get("resources") or []:
            path = comp_dir / res
            objs += render(path) if path.is_dir() else load_yaml_documents(path)
        objs = apply_patches(objs, comp.get("patches") or [], comp_dir)
    objs = apply_patches(objs, k.get("patches") or [], base)
    if k.get("namespace"):
        _set_namespace(objs, k["namespace"])
    _set_images(objs, k.get("images") or [])
    seen: set[tuple[str, str, str, str]] = set()
    for o in objs:
        ident = identity(o)
        if ident in seen:
            raise RenderError(f"{base}: {ident} defined twice")
        seen.add(ident)
    return objs


def main(argv: list[str] | None = None) -> int:
    from deploy import DEPLOY_DIR

    args = sys.argv[1:] if argv is None else argv
    objs = render(args[0] if args else DEPLOY_DIR)
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
