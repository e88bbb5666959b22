"""deploy/: every kustomization renders, and every object validates offline against
the Kubernetes 1.30 JSON schemas (kubernetes-validate, strict: unknown fields are
errors); cert-manager objects against a schema of cert-manager's v1 fields."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy import DEPLOY_DIR, DOCKERFILE, KUSTOMIZATIONS, manifest_files
from deploy.render import RenderError, json_patch, render

pytestmark = pytest.mark.unit

K8S_VERSION = "1.30.0"
CERT_MANAGER_SCHEMA = json.loads(
    (Path(__file__).parent / "sk8_cert_manager_v1.schema.json").read_text()
)
RENDERED = {name: render(path) for name, path in KUSTOMIZATIONS.items()}
ALL = [(name, o) for name, objs in RENDERED.items() for o in objs]

READ_RESOURCES = {
    ("", "pods"),
    ("", "namespaces"),
    ("", "services"),
    ("", "nodes"),
    ("discovery.k8s.io", "endpointslices"),
    ("networking.k8s.io", "networkpolicies"),
}
READ_VERBS = {"get", "list", "watch"}


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("cert-manager.io/"):
        jsonschema.validate(obj, CERT_MANAGER_SCHEMA)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


# --- validation --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,obj", ALL, ids=[f"{n}:{o['kind']}/{o['metadata']['name']}" for n, o in ALL]
)
def test_sk8_every_object_validates_against_1_30(name: str, obj: dict[str, Any]) -> None:
    validate(obj)


def test_sk8_validator_rejects_broken_manifests() -> None:
    ds = one(RENDERED["default"], "DaemonSet", "sensilla-collector")
    typo = json_patch(ds, [{"op": "add", "path": "/spec/template/spec/hostNetwrok", "value": True}])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(typo)
    bad_type = json_patch(ds, [{"op": "replace", "path": "/spec/template/spec/hostNetwork",
                                "value": "yes"}])
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad_type)
    cert = one(RENDERED["default"], "Certificate", "sensilla-relay")
    bad_usage = json_patch(cert, [{"op": "add", "path": "/spec/usages/-", "value": "serverauth"}])
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_usage)
    missing = json_patch(cert, [{"op": "remove", "path": "/spec/issuerRef"}])
    with pytest.raises(jsonschema.ValidationError):
        validate(missing)


def test_sk8_every_manifest_file_is_rendered_somewhere() -> None:
    """No YAML under deploy/ escapes validation: each is a kustomization, a patch
    used by one, or a resource that some kustomization renders."""
    used: set[Path] = set()

    def walk(directory: Path) -> None:
        k = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used.add((directory / "kustomization.yaml").resolve())
        for entry in itertools.chain(k.get("resources") or [], k.get("components") or []):
            p = (directory / entry).resolve()
            walk(p) if p.is_dir() else used.add(p)
        for patch in k.get("patches") or []:
            used.add((directory / patch["path"]).resolve())

    for path in KUSTOMIZATIONS.values():
        walk(path)
    assert {p.resolve() for p in manifest_files()} == used


# --- RBAC ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_cluster_role_grants_exactly_read_on_six_resources(name: str) -> None:
    objs = RENDERED[name]
    roles = by_kind(objs, "ClusterRole")
    assert [r["metadata"]["name"] for r in roles] == ["sensilla-read"]
    assert by_kind(objs, "Role") == [] and by_kind(objs, "RoleBinding") == []
    granted = set()
    for rule in roles[0]["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        granted |= set(itertools.product(rule["apiGroups"], rule["resources"], rule["verbs"]))
    expected = {(g, r, v) for (g, r) in READ_RESOURCES for v in READ_VERBS}
    assert granted == expected
    binding = one(objs, "ClusterRoleBinding", "sensilla-read")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "sensilla-read"}
    assert sorted((s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]) == [
        ("ServiceAccount", "sensilla", "sensilla-collector"),
        ("ServiceAccount", "sensilla", "sensilla-relay"),
    ]
    ui = one(objs, "Deployment", "sensilla-ui")["spec"]["template"]["spec"]
    assert ui["serviceAccountName"] == "sensilla-ui" and ui["automountServiceAccountToken"] is False


# --- workloads -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_collector_daemonset(name: str) -> None:
    ds = one(RENDERED[name], "DaemonSet", "sensilla-collector")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["tolerations"] == [{"operator": "Exists"}]  # every taint, every effect
    (c,) = spec["containers"]
    assert c["securityContext"]["privileged"] is True
    assert "--source=kubernetes" in c["args"] and "--node=$(NODE_NAME)" in c["args"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for path, ro in (("/sys/fs/bpf", False), ("/lib/modules", True), ("/usr/src", True)):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
        assert bool(mounts[path].get("readOnly")) is ro
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "Bidirectional"
    # the Observer serves mutual TLS; the kubelet's gRPC probes (plaintext) use the
    # health-only port
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
    assert f"--health-listen=0.0.0.0:{port}" in c["args"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == port


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_relay_and_ui_are_non_root_with_probes(name: str) -> None:
    objs = RENDERED[name]
    for dep in ("sensilla-relay", "sensilla-ui"):
        d = one(objs, "Deployment", dep)
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert not sc.get("privileged") and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["livenessProbe"] and c["readinessProbe"]
    relay = one(objs, "Deployment", "sensilla-relay")["spec"]["template"]["spec"]["containers"][0]
    assert relay["ports"][0]["containerPort"] == 4245
    health = next(p["containerPort"] for p in relay["ports"] if p["name"] == "health")
    assert relay["readinessProbe"]["grpc"]["port"] == health != 4245
    assert f"--health-listen=0.0.0.0:{health}" in relay["args"]
    svc = one(objs, "Service", "sensilla-relay")
    assert svc["spec"]["ports"][0]["port"] == 4245
    assert one(objs, "Service", "sensilla-ui")["spec"]["selector"] == {
        "app.kubernetes.io/name": "sensilla-ui"}


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_every_container_has_requests_limits_and_a_tagged_image(name: str) -> None:
    for obj in RENDERED[name]:
        if obj["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        for c in containers(obj):
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(
                res["limits"]
            ), obj["metadata"]["name"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", c["image"]), c["image"]
            if c["image"].split(":")[0].endswith("sensilla"):
                assert c["image"] == "sensilla:0.1.0"


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_env_references_are_defined_first(name: str) -> None:
    """$(VAR) in args and env values must name an env var defined before (the
    kubelet leaves unknown references as they are)."""
    for obj in RENDERED[name]:
        if obj["kind"] not in ("Deployment", "DaemonSet", "StatefulSet"):
            continue
        for c in containers(obj):
            defined: list[str] = []
            for e in c.get("env", []):
                for ref in re.findall(r"\$\(([A-Z_]+)\)", e.get("value", "")):
                    assert ref in defined, (obj["metadata"]["name"], e["name"], ref)
                defined.append(e["name"])
            for arg in c.get("args", []):
                for ref in re.findall(r"\$\(([A-Z_]+)\)", arg):
                    assert ref in defined, (obj["metadata"]["name"], arg)


def test_sk8_store_and_tls_per_kustomization() -> None:
    def relay_env(objs: list[dict[str, Any]]) -> dict[str, Any]:
        c = one(objs, "Deployment", "sensilla-relay")["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e for e in c["env"]}

    default, external, gen = (RENDERED[k] for k in ("default", "external-clickhouse",
                                                     "generated-tls"))
    # default: the in-cluster single-node ClickHouse, password from a Secret
    sts = one(default, "StatefulSet", "sensilla-clickhouse")
    assert sts["spec"]["replicas"] == 1
    env = relay_env(default)
    assert env["SENSILLA_STORE_URL"]["value"] == (
        "clickhouse://sensilla@sensilla-clickhouse:9000/sensilla")
    assert env["SENSILLA_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "sensilla-clickhouse", "key": "password"}
    ch = one(default, "StatefulSet", "sensilla-clickhouse")["spec"]["template"]["spec"]
    ch_env = {e["name"]: e for e in ch["containers"][0]["env"]}
    assert ch_env["CLICKHOUSE_PASSWORD"]["valueFrom"] == env["SENSILLA_CLICKHOUSE_PASSWORD"][
        "valueFrom"]
    np = one(default, "NetworkPolicy", "sensilla-clickhouse")
    assert np["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sensilla-relay"}
    # external: no ClickHouse here, the URL from the sensilla-store Secret, 3 relays
    assert by_kind(external, "StatefulSet") == []
    assert relay_env(external)["SENSILLA_STORE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "sensilla-store", "key": "url"}
    assert one(external, "Deployment", "sensilla-relay")["spec"]["replicas"] == 3
    # TLS: cert-manager issues exactly the Secrets the pods mount; generated-tls has none
    for objs, certs in ((default, True), (external, True), (gen, False)):
        mounted = {
            v["secret"]["secretName"]
            for o in objs if o["kind"] in ("Deployment", "DaemonSet")
            for v in o["spec"]["template"]["spec"]["volumes"] if "secret" in v
        }
        assert mounted == {"sensilla-relay-tls", "sensilla-client-tls", "sensilla-collector-tls"}
        issued = {c["spec"]["secretName"] for c in by_kind(objs, "Certificate")}
        assert issued == ({"sensilla-ca", *mounted} if certs else set())
    relay_cert = one(default, "Certificate", "sensilla-relay")
    assert "sensilla-relay.sensilla.svc" in relay_cert["spec"]["dnsNames"]
    # every namespaced object lands in the sensilla namespace
    for objs in RENDERED.values():
        for o in objs:
            if o["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                assert o["metadata"]["namespace"] == "sensilla", o["metadata"]["name"]


# --- the renderer and the Dockerfile ------------------------------------------------------
def test_sk8_renderer_refuses_what_it_does_not_support(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\ncommonLabels: {a: b}\n")
    with pytest.raises(RenderError, match="unsupported fields"):
        render(tmp_path)
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml, a.yaml]\n")
    with pytest.raises(RenderError, match="defined twice"):
        render(tmp_path)
    (tmp_path / "p.yaml").write_text("- {op: test, path: /data/x, value: y}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [a.yaml]\npatches: [{path: p.yaml, target: {kind: ConfigMap}}]\n")
    with pytest.raises(RenderError, match="not found"):
        render(tmp_path)
    (tmp_path / "p.yaml").write_text("metadata: {labels: {a: b}}\n")  # strategic merge
    with pytest.raises(RenderError, match="JSON 6902"):
        render(tmp_path)
    doc = {"a": [1, 2], "b": {"c": 1}}
    assert json_patch(doc, [{"op": "add", "path": "/a/-", "value": 3},
                            {"op": "remove", "path": "/b/c"},
                            {"op": "add", "path": "/a/0", "value": 0}]) == {
        "a": [0, 1, 2, 3], "b": {}}


def test_sk8_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "FROM debian:12-slim"
    assert "python3-bpfcc" in text
    assert not re.search(r"pip install[^\n]*\bbcc\b", text)  # never PyPI's unrelated bcc
    assert any(ln.startswith("USER 65532") for ln in lines)
    assert 'ENTRYPOINT ["/opt/sensilla/bin/sensilla"]' in lines
    root = DEPLOY_DIR.parent
    for ln in lines:
        if ln.startswith("COPY "):
            for src in ln.split()[1:-1]:
                assert (root / src).exists(), src
    # every package the project installs is copied in
    project = (root / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", project)
    assert include is not None
    for pkg in re.findall(r'"(\w+)\*"', include.group(1)):
        assert f"COPY {pkg} /src/{pkg}" in text, pkg


def _args_of(name: str, workload: str) -> list[str]:
    for o in RENDERED[name]:
        if o["metadata"]["name"] == workload and o["kind"] in ("Deployment", "DaemonSet"):
            (c,) = o["spec"]["template"]["spec"]["containers"]
            # the kubelet expands $(VAR); any value parses the same
            return [re.sub(r"\$\([A-Z_]+\)", "x", a) for a in c["args"]]
    raise AssertionError(workload)


@pytest.mark.parametrize("workload", ["sensilla-relay", "sensilla-ui"])
def test_sk8_container_args_parse_with_the_cli(workload: str) -> None:
    from sensilla.cli.main import build_parser

    for name in RENDERED:
        args = build_parser().parse_args(_args_of(name, workload))
        assert args.handler is not None


def test_sk8_collector_args_parse_with_the_cli() -> None:
    from sensilla.cli.main import build_parser

    args = build_parser().parse_args(_args_of("default", "sensilla-collector"))
    assert args.source == "kubernetes"


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_sk8_tls_is_on_everywhere(name: str) -> None:
    """Mutual TLS on every gRPC link, from the mounted Secrets; never --insecure."""
    from sensilla.cli.main import build_parser

    tls = "/etc/sensilla/tls"
    relay = build_parser().parse_args(_args_of(name, "sensilla-relay"))
    assert (relay.tls_cert_file, relay.tls_key_file) == (f"{tls}/tls.crt", f"{tls}/tls.key")
    assert relay.tls_client_ca_files == [f"{tls}/ca.crt"] and not relay.insecure
    coll = build_parser().parse_args(_args_of(name, "sensilla-collector"))
    assert (coll.tls_cert_file, coll.tls_client_ca_files) == (f"{tls}/tls.crt", [f"{tls}/ca.crt"])
    assert coll.relay_tls_ca_cert_files == [f"{tls}/ca.crt"] and not coll.insecure
    ui = build_parser().parse_args(_args_of(name, "sensilla-ui"))
    assert (ui.tls_ca, ui.tls_cert, ui.tls_key) == (
        f"{tls}/ca.crt", f"{tls}/tls.crt", f"{tls}/tls.key")
    assert not ui.insecure
    for o in RENDERED[name]:
        for c in containers(o) if o["kind"] in ("Deployment", "DaemonSet") else []:
            assert "--insecure" not in c.get("args", [])
