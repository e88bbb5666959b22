"""Kubernetes manifests and the image recipe (docs/deploy.md).

    deploy/kustomization.yaml              the default installation
    deploy/base/                           collector, relay, UI, RBAC, namespace
    deploy/components/clickhouse/          single-node ClickHouse StatefulSet
    deploy/components/cert-manager/        TLS material from cert-manager
    deploy/overlays/external-clickhouse/   ClickHouse cluster by URL, 3 relays
    deploy/overlays/generated-tls/         TLS Secrets made by hand
    deploy/Dockerfile                      one image for every component
"""

from __future__ import annotations

from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent
DOCKERFILE = DEPLOY_DIR / "Dockerfile"

# every installable kustomization: name -> directory
KUSTOMIZATIONS: dict[str, Path] = {
    "default": DEPLOY_DIR,
    "external-clickhouse": DEPLOY_DIR / "overlays" / "external-clickhouse",
    "generated-tls": DEPLOY_DIR / "overlays" / "generated-tls",
}


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/ (kustomizations, resources, patches)."""
    return sorted(DEPLOY_DIR.rglob("*.yaml"))
