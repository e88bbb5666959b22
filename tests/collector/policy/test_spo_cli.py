"""`sensilla policy` against a temporary state directory with in-process collectors
(fake datapath): apply waits for every node, rejects invalid documents without any
change, delete, list, explain."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from collector.agent import Enforcer, StatusPublisher
from collector.compiler.compile import EndpointPlan
from collector.policy.cluster import Pod
from collector.sources.lab import LabSource, write_status
from sensilla.cli.main import main
from sensilla.lab.layout import build_layout
from sensilla.lab.runtime import k8s_objects
from sensilla.lab.spec import default_spec
from sensilla.lab.state import StateDir
from tests.collector.policy.fake_datapath import FakeDatapath, fake_ifindex
from tests.collector.policy.malformed import MALFORMED, VALID

pytestmark = pytest.mark.unit


def _resolver(plan: EndpointPlan, pod: Pod) -> int:
    return fake_ifindex(plan.interface)


class Collectors:
    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.datapaths: dict[str, FakeDatapath] = {}
        for node in sorted(state.objects("nodes")):
            dp = FakeDatapath()
            self.datapaths[node] = dp

            def writer(st: object, node: str = node) -> None:
                write_status(state.path, node, st)  # type: ignore[arg-type]

            enf = Enforcer(
                node, LabSource(state.path, 0.01), dp, StatusPublisher(node, writer), _resolver
            )
            t = threading.Thread(target=enf.run, args=(self.stop, 0.05), daemon=True)
            t.start()
            self.threads.append(t)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)

    def maps(self) -> dict[str, object]:
        return {n: (dict(dp.policies), dict(dp.ipcache)) for n, dp in self.datapaths.items()}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[StateDir, Collectors]]:
    spec = default_spec()
    state = StateDir(tmp_path / "spo-cli" / "state")
    state.apply(k8s_objects(build_layout(spec, "spocli", 0), spec))
    cols = Collectors(state)
    try:
        yield state, cols
    finally:
        cols.close()


def run(*argv: str) -> int:
    return main(list(argv))


def test_spo_cli_apply_waits_for_every_node(
    lab: tuple[StateDir, Collectors], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = lab
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(VALID))
    assert run("policy", "apply", "-f", str(f), "--state-dir", str(state.path)) == 0
    out = capsys.readouterr().out
    assert "networkpolicy x/spo-malformed created" in out
    assert f"enforced at revision {state.revision()} on" in out
    assert run("policy", "apply", "-f", str(f), "--state-dir", str(state.path)) == 0
    assert "unchanged" in capsys.readouterr().out
    assert run("policy", "list", "--state-dir", str(state.path)) == 0
    assert "x/spo-malformed" in capsys.readouterr().out


def test_spo_cli_malformed_changes_nothing(
    lab: tuple[StateDir, Collectors], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, cols = lab
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(VALID))
    assert run("policy", "apply", "-f", str(good), "--state-dir", str(state.path)) == 0
    capsys.readouterr()
    revision, maps = state.revision(), cols.maps()
    policies = state.objects("networkpolicies")
    for name, text, path in MALFORMED:
        f = tmp_path / f"{name}.yaml"
        f.write_text(text)
        rc = run("policy", "apply", "-f", str(f), "--state-dir", str(state.path))
        err = capsys.readouterr().err
        assert rc == 1, name
        assert "nothing was applied" in err and str(f) in err, name
        if path:
            assert f"{path}: " in err, (name, err)
    assert state.revision() == revision
    assert state.objects("networkpolicies") == policies
    assert cols.maps() == maps


def test_spo_cli_delete(
    lab: tuple[StateDir, Collectors], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = lab
    docs = [VALID, {**VALID, "metadata": {"name": "two", "namespace": "y"}}]
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    sd = ("--state-dir", str(state.path))
    assert run("policy", "apply", "-f", str(f), *sd) == 0
    assert run("policy", "delete", "x/spo-malformed", *sd) == 0
    assert set(state.objects("networkpolicies")) == {"y/two"}
    assert run("policy", "delete", "x/spo-malformed", *sd) == 1
    assert "not found" in capsys.readouterr().err
    assert run("policy", "delete", "--all", *sd) == 0
    assert state.objects("networkpolicies") == {}


def test_spo_cli_explain(
    lab: tuple[StateDir, Collectors], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, _ = lab
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(VALID))
    sd = ("--state-dir", str(state.path))
    assert run("policy", "apply", "-f", str(f), *sd, "--no-wait") == 0
    capsys.readouterr()
    assert run("policy", "explain", "--from", "x/b", "--to", "x/a", "--port", "80", *sd) == 0
    out = capsys.readouterr().out
    assert out.startswith("x/b -> x/a TCP/80: ALLOWED")
    assert "x/spo-malformed spec.ingress[0].from[0] ports[0]" in out
    assert (
        run("policy", "explain", "--from", "y/b", "--to", "x/a", "--port", "80", *sd, "-o", "json")
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "DROPPED" and d["ingress"]["selected_by"] == ["x/spo-malformed"]
    assert run("policy", "explain", "--from", "x/q", "--to", "x/a", "--port", "80", *sd) == 2


def test_spo_cli_timeout_names_lagging_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = default_spec()
    state = StateDir(tmp_path / "spo-lone" / "state")
    state.apply(k8s_objects(build_layout(spec, "spolone", 0), spec))
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(VALID))
    rc = run("policy", "apply", "-f", str(f), "--state-dir", str(state.path), "--timeout", "0.2")
    err = capsys.readouterr().err
    assert rc == 1
    assert "not every node enforces it" in err and "spolone-worker" in err
    assert "no collector has reported" in err
