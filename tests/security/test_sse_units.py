"""Units of sensilla.security: the token file (errors name the entry and field,
never echo secrets; hypothesis: any input parses or raises TokenFileError), token
lookup and reload, the bearer header, scopes, local targets, and the command line's
refusals (plaintext TCP listeners without --insecure, plaintext to a remote address),
`sensilla certs` and `sensilla token`."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from sensilla.cli.main import main as cli
from sensilla.protos import flow_pb2
from sensilla.security import tokens as tk
from sensilla.security.scope import ADMIN, Scope
from sensilla.security.tls import ClientSecurity, TLSConfigError, is_local_target, split_target

pytestmark = pytest.mark.unit


def entry(name: str, token: str, **scope: Any) -> dict[str, Any]:
    return {"name": name, "sha256": tk.token_digest(token), **scope}


def test_sse_token_file_errors_name_the_field() -> None:
    good = entry("a", "t1", admin=True)
    cases = [
        ({"tokens": [{**good, "name": "bad name!"}]}, "tokens[0].name"),
        ({"tokens": [{**good, "sha256": "zz"}]}, "tokens[0] (a).sha256"),
        ({"tokens": [entry("a", "t1")]}, "needs admin"),
        ({"tokens": [entry("a", "t1", namespaces=[])]}, "namespaces: empty"),
        ({"tokens": [entry("a", "t1", namespaces=["X_bad"])]}, "is not a namespace name"),
        ({"tokens": [entry("a", "t1", admin=True, namespaces=["x"])]}, "exclude each other"),
        ({"tokens": [good, entry("a", "t2", admin=True)]}, "used twice"),
        ({"tokens": [good, entry("b", "t1", admin=True)]}, "the same token"),
        ({"tokens": [{**good, "extra": 1}]}, "unknown field(s) extra"),
        ({"tokens": [{**good, "admin": "yes"}]}, "admin: true or false"),
        ({"token": []}, "a list 'tokens'"),
    ]
    for raw, needle in cases:
        with pytest.raises(tk.TokenFileError) as err:
            tk.parse_tokens(raw, "f")
        assert needle in str(err.value), (needle, str(err.value))


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["tokens", "name", "sha256", "namespaces", "admin", "ingest", "x"]),
            inner,
            max_size=5,
        ),
        max_leaves=20,
    )
)
def test_sse_token_file_parser_never_crashes(raw: Any) -> None:
    try:
        out = tk.parse_tokens(raw)
    except tk.TokenFileError:
        return
    assert all(e.scope.reads or e.scope.may_ingest for e in out)


@given(st.text(max_size=80))
def test_sse_bearer_header(value: str) -> None:
    got = tk.bearer([("authorization", value)])
    assert got is not None
    if got:
        assert value.strip().lower().startswith("bearer ") and got == value.strip()[7:].strip()
    assert tk.bearer([("x", "y")]) is None


def test_sse_token_lookup_and_reload(tmp_path: Path) -> None:
    f = tmp_path / "tokens.yaml"
    f.write_text(yaml.safe_dump({"tokens": [entry("x", "tok-x", namespaces=["x"])]}))
    store = tk.TokenStore(str(f))
    assert store.lookup("tok-x") == Scope("x", namespaces=frozenset({"x"}))
    assert store.lookup("tok-y") is None and store.lookup("") is None
    f.write_text(yaml.safe_dump({"tokens": [entry("y", "tok-y", admin=True)]}))
    time.sleep(tk.RELOAD_CHECK_S + 0.1)
    assert store.lookup("tok-y") == Scope("y", admin=True)
    assert store.lookup("tok-x") is None, "a removed token is revoked"
    f.write_text("tokens: [ {broken")  # a broken edit keeps the old tokens
    time.sleep(tk.RELOAD_CHECK_S + 0.1)
    assert store.lookup("tok-y") is not None and store.reloads == 1
    with pytest.raises(tk.TokenFileError) as err:
        tk.load_token_file(str(f))
    assert "broken" not in str(err.value)


def test_sse_authorize_per_method() -> None:
    store = tk.TokenStore.from_entries(
        tk.parse_tokens({"tokens": [
            entry("r", "read", namespaces=["x"]), entry("i", "push", ingest=True),
        ]})
    )
    md = lambda t: [("authorization", f"Bearer {t}")]  # noqa: E731
    assert tk.authorize(store, "/grpc.health.v1.Health/Check", []) is None
    assert tk.authorize(store, "/observer.Observer/GetFlows", md("read")).name == "r"  # type: ignore[union-attr]
    assert tk.authorize(store, "/sensilla.ingest.v1.Ingest/Push", md("push")).name == "i"  # type: ignore[union-attr]
    for method, token, code in (
        ("/observer.Observer/GetFlows", None, "UNAUTHENTICATED"),
        ("/observer.Observer/GetFlows", "nope", "UNAUTHENTICATED"),
        ("/observer.Observer/GetFlows", "push", "PERMISSION_DENIED"),
        ("/sensilla.ingest.v1.Ingest/Push", "read", "PERMISSION_DENIED"),
    ):
        with pytest.raises(tk.AuthError) as err:
            tk.authorize(store, method, md(token) if token else [])
        assert err.value.code.name == code and (token or "") not in err.value.message.split()


def test_sse_scope_rules() -> None:
    s = Scope("t", namespaces=frozenset({"x", "y"}))
    f = flow_pb2.Flow()
    f.source.namespace, f.destination.namespace = "z", "y"
    assert s.allows_flow(f) and ADMIN.allows_flow(f)
    f.destination.namespace = ""
    assert not s.allows_flow(f)
    assert s.restrict([]) == ["x", "y"] and s.restrict(["y", "z"]) == ["y"]
    assert s.restrict(["z"]) is None and ADMIN.restrict([]) == []
    assert s.filter_names(["x", "z", "y"]) == ["x", "y"]
    cond, params = s.sql_condition()
    assert params == {"scope_ns": ["x", "y"]} and "{scope_ns:Set(String)}" in cond
    pred = s.flow_predicate(lambda fl: fl.verdict == flow_pb2.DROPPED)
    assert pred is not None and not pred(f)


def test_sse_local_targets() -> None:
    for t in ("localhost:4245", "127.0.0.1:1", "127.9.9.9:2", "[::1]:3", "unix:///x.sock",
              "unix:/run/x", "dns:///localhost:4245"):  # fmt: skip
        assert is_local_target(t), t
    for t in ("10.0.0.1:4245", "relay.example:4245", "[fd00::1]:4245", "0.0.0.0:1"):
        assert not is_local_target(t), t
    assert split_target("[fd00::1]:4245") == ("fd00::1", 4245)
    with pytest.raises(TLSConfigError, match="--insecure"):
        ClientSecurity().check_target("10.0.0.1:4245")
    ClientSecurity(insecure=True).check_target("10.0.0.1:4245")


def test_sse_cli_refuses_plaintext_listeners_and_remote_plaintext(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["relay", "--store", f"chdb://{tmp_path}/s"]) == 2
    assert "refusing to listen on TCP without TLS" in capsys.readouterr().err
    assert cli(["relay", "--store", f"chdb://{tmp_path}/s", "--insecure",
                "--tls-cert-file", "x", "--tls-key-file", "y"]) == 2  # fmt: skip
    assert "exclude each other" in capsys.readouterr().err
    state = tmp_path / "state"
    (state / "nodes").mkdir(parents=True)
    (state / "nodes" / "n1.json").write_text("{}")
    (state / "revision").write_text("1")
    assert cli(["collector", "--node", "n1", "--source", f"lab:{state}",
                "--listen", "127.0.0.1:0"]) == 2  # fmt: skip
    assert "refusing to listen on TCP without TLS" in capsys.readouterr().err
    assert cli(["collector", "--node", "n1", "--source", f"lab:{state}",
                "--relay", "10.0.0.9:4245"]) == 2  # fmt: skip
    assert "--insecure" in capsys.readouterr().err
    assert cli(["observe", "--server", "10.0.0.9:4245", "--timeout", "0.2"]) == 2
    assert "not a local address" in capsys.readouterr().err
    assert cli(["ui", "--relay", "relay.example:4245"]) == 2
    assert "--insecure" in capsys.readouterr().err


def test_sse_certs_and_token_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert cli(["certs", "--out", str(out), "--node", "w1=10.9.0.2", "--client", "alice",
                "--expired", "--relay-name", "relay.example"]) == 0  # fmt: skip
    for name in ("ca.key", "relay.key", "collector-w1.key", "client-alice.key"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600, name
    relay = x509.load_pem_x509_certificate((out / "relay.crt").read_bytes())
    san = relay.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "relay.example"} <= set(san.get_values_for_type(x509.DNSName))
    node = x509.load_pem_x509_certificate((out / "collector-w1.crt").read_bytes())
    ips = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "10.9.0.2" in {str(i) for i in ips.get_values_for_type(x509.IPAddress)}
    expired = x509.load_pem_x509_certificate((out / "client-expired.crt").read_bytes())
    assert expired.not_valid_after_utc.timestamp() < time.time()
    printed = capsys.readouterr().out
    assert "BEGIN" not in printed  # paths only, no key material
    tokens = tmp_path / "tokens.yaml"
    assert cli(["token", "create", "--tokens-file", str(tokens), "--name", "team-x",
                "-n", "x", "--out", str(tmp_path / "x.token")]) == 0  # fmt: skip
    assert cli(["token", "create", "--tokens-file", str(tokens), "--name", "ops",
                "--admin"]) == 0  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()[-1]  # the admin token, once
    store = tk.TokenStore(str(tokens))
    assert store.lookup(printed) == Scope("ops", admin=True)
    token_x = (tmp_path / "x.token").read_text().strip()
    assert store.lookup(token_x) == Scope("team-x", namespaces=frozenset({"x"}))
    assert token_x not in tokens.read_text() and printed not in tokens.read_text()
    assert stat.S_IMODE(os.stat(tokens).st_mode) == 0o600
    assert cli(["token", "create", "--tokens-file", str(tokens), "--name", "ops",
                "--admin"]) == 2  # fmt: skip
    assert "used twice" in capsys.readouterr().err
    json.dumps(yaml.safe_load(tokens.read_text()))  # plain data
