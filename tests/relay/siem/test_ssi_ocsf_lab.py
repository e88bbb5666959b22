"""Acceptance 2: every OCSF record for a lab run (forwarded, dropped, audited; TCP,
UDP, ICMP; IPv4 and IPv6), read from the relay with ``sensilla observe -o ocsf``,
validates against the released OCSF schema; dropped flows carry disposition and
policy, audited ones the policy that would have denied them."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from typing import Any

import pytest

from sensilla.lab.probe import probe, select_pairs
from sensilla.ocsf import model_validate, validate_event
from tests.helpers import cli

pytestmark = pytest.mark.needs_root

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ssi-deny, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ssi-allow-web, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ssi-audit-deny, namespace: z}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""
AUDIT = "policy.sensilla.io/audit"


def _ping(layout: Any, src: str, dst_ip: str) -> int:
    cmd = ["nsenter", f"--net=/var/run/netns/{layout.pod(src).netns}", "ping", "-c", "1"]
    cmd += ["-W", "2", dst_ip]
    return subprocess.run(cmd, capture_output=True, text=True).returncode


def test_ssi_lab_ocsf_records_validate(full_lab: Any, tmp_path: Any) -> None:
    lab = full_lab
    # the lab is shared with other tests: look only at what this test caused
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    labelled = cli("lab", "--name", lab.name, "label", "namespace", "z", f"{AUDIT}=true")
    assert labelled.returncode == 0, labelled.stderr
    applied = cli("policy", "apply", "--lab", lab.name, "-f", str(policy))
    try:
        assert applied.returncode == 0, applied.stderr
        layout = lab.layout()
        allowed = probe(layout, select_pairs(layout, ["x/a"], ["y/b"]), 80, "TCP")
        allowed6 = probe(layout, select_pairs(layout, ["x/a"], ["y/b"]), 80, "TCP", family=6)
        denied = probe(layout, select_pairs(layout, ["x/a"], ["y/c"]), 80, "TCP", timeout=0.8)
        audited = probe(layout, select_pairs(layout, ["x/b"], ["z/a"]), 81, "UDP")
        assert [r.connected for r in allowed + allowed6 + denied + audited] == [
            True,
            True,
            False,
            True,
        ]
        assert _ping(layout, "x/a", layout.pod("z/b").ipv4) == 0  # ICMP, audited
        assert _ping(layout, "x/c", layout.pod("y/a").ipv6) != 0  # ICMPv6, dropped
        relay = lab.status()["relay"]["address"]
        want = {"FORWARDED", "DROPPED", "AUDIT"}
        deadline = time.monotonic() + 60
        while True:
            out = cli("observe", "--server", relay, "-o", "ocsf", "--since", started, "--all")
            assert out.returncode == 0, out.stderr
            records = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
            verdicts = {r["unmapped"]["verdict"] for r in records}
            protos = {r["connection_info"].get("protocol_num") for r in records}
            v6 = any(r["connection_info"].get("protocol_ver_id") == 6 for r in records)
            if (want <= verdicts and {1, 6, 17, 58} <= protos and v6) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(1)
    finally:
        cli(
            "policy",
            "delete",
            "--lab",
            lab.name,
            "y/ssi-deny",
            "y/ssi-allow-web",
            "z/ssi-audit-deny",
        )
        cli("lab", "--name", lab.name, "label", "namespace", "z", f"{AUDIT}-")
    assert want <= verdicts, verdicts
    assert {1, 6, 17, 58} <= protos, protos
    assert v6
    for r in records:
        assert validate_event(r) == [], r
        model_validate(r)
        assert r["class_uid"] == 4001 and r["metadata"]["product"]["name"] == "Sensilla"
        v = r["unmapped"]["verdict"]
        if v == "DROPPED":
            assert r["activity_id"] == 5 and r["action_id"] == 2
            assert r["disposition_id"] in (2, 6) and r["policy"]["name"]
        if v == "AUDIT":
            assert r["disposition"] == "Detected" and r["policy"]["is_applied"] is False
    drops = [r for r in records if r["unmapped"]["verdict"] == "DROPPED"]
    # drops into y: the isolating policy (default deny), with the detail unmapped
    into_y = [r for r in drops if r["unmapped"]["dst"].get("namespace") == "y"]
    assert into_y and all(r["policy"]["name"] in ("y/ssi-deny", "default-deny") for r in into_y)
    assert any(r["unmapped"].get("drop_detail") == "default-deny" for r in into_y)
    audits = [r for r in records if r["unmapped"]["verdict"] == "AUDIT"]
    assert any(r["policy"]["name"] in ("z/ssi-audit-deny", "default-deny") for r in audits)
    print(
        f"\nssi lab ocsf: {len(records)} records valid; verdicts "
        f"{dict(Counter(r['unmapped']['verdict'] for r in records))}; protocols "
        f"{dict(Counter(r['connection_info'].get('protocol_name') for r in records))}; "
        f"activities {dict(Counter(r['activity_name'] for r in records))}; "
        f"dispositions {dict(Counter(r.get('disposition') for r in records))}"
    )
