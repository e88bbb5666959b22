"""Load the upstream NetworkPolicy e2e scenarios (scenarios/*.yaml) and run them on
the pure policy model. The lab acceptance test runs the same data on real packets.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from collector.policy.cluster import ClusterState, Namespace, Pod
from collector.policy.parse import parse_documents
from collector.policy.verdict import Verdict, verdict

SCENARIO_DIR = Path(__file__).parent / "scenarios"
CONTEXTS = ("tcp", "udp", "sctp")
NAMESPACES = ("x", "y", "z")
PODS = tuple(f"{ns}/{p}" for ns in NAMESPACES for p in ("a", "b", "c"))
Table = dict[tuple[str, str], bool]


@dataclass(frozen=True)
class Scenario:
    context: str
    name: str
    upstream: str
    steps: tuple[Mapping[str, Any], ...]

    @property
    def id(self) -> str:
        return f"{self.context}:{self.name}"

    @property
    def probes(self) -> int:
        return sum(1 for s in self.steps if "probe" in s)


def load_scenarios() -> list[Scenario]:
    out = []
    for context in CONTEXTS:
        data = yaml.safe_load((SCENARIO_DIR / f"{context}.yaml").read_text())
        for s in data["scenarios"]:
            out.append(Scenario(context, s["name"], s["upstream"], tuple(s["steps"])))
    return out


def pattern_matches(pattern: str, pod: str) -> bool:
    if pattern == "*":
        return True
    ns, name = pattern.split("/")
    pns, pname = pod.split("/")
    return ns == pns and name in ("*", pname)


def expected_table(expect: Mapping[str, Any]) -> Table:
    """Build the 9x9 truth table as upstream does: a default, then overrides."""
    default = bool(expect.get("default", True))
    table = {(s, d): default for s in PODS for d in PODS}
    for cell in expect.get("cells", []):
        for s in PODS:
            for d in PODS:
                if pattern_matches(cell["from"], s) and pattern_matches(cell["to"], d):
                    table[(s, d)] = bool(cell["connected"])
    return table


def render_table(table: Table, mark: Table | None = None) -> str:
    """Upstream's layout: rows are sources, columns destinations, '.' connected,
    'X' not connected; cells differing from `mark` are starred."""
    lines = ["-\t" + "\t".join(PODS)]
    for s in PODS:
        row = []
        for d in PODS:
            ch = "." if table[(s, d)] else "X"
            if mark is not None and mark[(s, d)] != table[(s, d)]:
                ch = f"*{ch}*"
            row.append(ch)
        lines.append(s + "\t" + "\t".join(row))
    return "\n".join(lines)


def diff_cells(expected: Table, observed: Table, include_self: bool = True) -> list[str]:
    return [
        f"{s} -> {d}: expected {'connected' if expected[(s, d)] else 'blocked'}, "
        f"got {'connected' if observed[(s, d)] else 'blocked'}"
        for s in PODS
        for d in PODS
        if (include_self or s != d) and expected[(s, d)] != observed[(s, d)]
    ]


_TOKEN = re.compile(r"\{(host|wide):([a-z0-9-]+/[a-z0-9-]+)\}")


def substitute(obj: Any, address: Any) -> Any:
    """Replace {host:ns/pod} and {wide:ns/pod} in strings; `address(key)` gives the
    pod's address in the family under test."""

    def repl(m: re.Match[str]) -> str:
        ip = ipaddress.ip_address(address(m.group(2)))
        if m.group(1) == "host":
            return f"{ip}/{ip.max_prefixlen}"
        return str(ipaddress.ip_network(f"{ip}/4", strict=False))

    if isinstance(obj, str):
        return _TOKEN.sub(repl, obj)
    if isinstance(obj, list):
        return [substitute(v, address) for v in obj]
    if isinstance(obj, dict):
        return {k: substitute(v, address) for k, v in obj.items()}
    return obj


def policy_documents(step: Mapping[str, Any], address: Any) -> str:
    """The policies of an `apply` step as one multi-document YAML text."""
    docs = [substitute(copy.deepcopy(p), address) for p in step["apply"]]
    return yaml.safe_dump_all(docs, sort_keys=False)


def lab_model_state() -> ClusterState:
    """The default lab's Nodes, Namespaces and Pods exactly as `lab up` writes them."""
    from sensilla.lab.layout import build_layout
    from sensilla.lab.runtime import k8s_objects
    from sensilla.lab.spec import default_spec

    spec = default_spec()
    objs = k8s_objects(build_layout(spec, "sensilla", 0), spec)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for kind, obj, _ in objs:
        by_kind.setdefault(kind, []).append(obj)
    return ClusterState.from_objects(
        by_kind.get("nodes", []), by_kind.get("namespaces", []), by_kind.get("pods", [])
    )


@dataclass
class ModelRunner:
    """Runs scenario steps against the pure model."""

    state: ClusterState = field(default_factory=lab_model_state)
    family: int = 4

    def address(self, key: str) -> str:
        ip = self.state.pod(key).ip(self.family)
        assert ip is not None
        return str(ip)

    def apply_step(self, step: Mapping[str, Any]) -> None:
        if "apply" in step:
            text = policy_documents(step, self.address)
            for parsed in parse_documents(text, "scenario"):
                self.state.policies[parsed.policy.key] = parsed.policy
        elif "delete_all_policies" in step:
            self.state.policies.clear()
        elif "label_pod" in step:
            key = step["label_pod"]["pod"]
            pod = self.state.pod(key)
            self.state.pods[key] = replace(
                pod, labels={**pod.labels, **step["label_pod"]["labels"]}
            )
        elif "label_namespace" in step:
            name = step["label_namespace"]["namespace"]
            ns = self.state.namespace(name)
            labels = {**ns.labels, **step["label_namespace"]["labels"]}
            self.state.namespaces[name] = Namespace(name, labels, ns.annotations)
        else:
            raise ValueError(f"unknown step {sorted(step)}")

    def verdicts(self, port: int, protocol: str) -> dict[tuple[str, str], Verdict]:
        return {
            (s, d): verdict(s, d, port, protocol, self.state, self.family)
            for s in PODS
            for d in PODS
        }

    def table(self, port: int, protocol: str) -> Table:
        return {k: v.allowed for k, v in self.verdicts(port, protocol).items()}


def run_steps(scenario: Scenario, runner: ModelRunner) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Apply the scenario's steps; yield (index, probe) at each probe step."""
    for i, step in enumerate(scenario.steps):
        if "probe" in step:
            yield i, step["probe"]
        else:
            runner.apply_step(step)


__all__ = ["PODS", "ModelRunner", "Pod", "Scenario", "expected_table", "load_scenarios"]
