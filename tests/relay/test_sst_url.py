"""Store URLs: forms, options, credentials (URL, file, environment), redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.store.url import StoreURLError, parse_store_url

pytestmark = pytest.mark.unit


def test_sst_chdb_url() -> None:
    u = parse_store_url("chdb:///var/lib/x/../sensilla?database=flows_1", env={})
    assert (u.scheme, u.path, u.database) == ("chdb", "/var/lib/sensilla", "flows_1")
    assert parse_store_url("chdb:///d", env={}).database == "sensilla"


@pytest.mark.parametrize(
    "bad",
    [
        "chdb://relative/path?x=1",
        "chdb:///d?database=a;b",
        "chdb:///d?database=1x",
        "mysql://h/db",
        "nourl",
        "clickhouse:///db",
        "clickhouse://h:99999/db",
        "clickhouse://h/db?secure=maybe",
        "clickhouse://h/db?compression=gzip",
        "clickhouse://h/db?bogus=1",
        "clickhouse://h/db-name",
        "clickhouse://h/db?connect_timeout=-1",
    ],
)
def test_sst_bad_urls_are_rejected(bad: str) -> None:
    with pytest.raises(StoreURLError):
        parse_store_url(bad, env={})


def test_sst_clickhouse_url_defaults_and_tls() -> None:
    u = parse_store_url("clickhouse://db1.example:9001/flows", env={})
    assert (u.host, u.port, u.database, u.user, u.password, u.secure) == (
        "db1.example",
        9001,
        "flows",
        "default",
        "",
        False,
    )
    assert u.compression == "lz4"
    s = parse_store_url("clickhouses://h/db?verify=0&ca_certs=/ca.pem&compression=none", env={})
    assert (s.secure, s.port, s.verify, s.ca_certs, s.compression) == (
        True,
        9440,
        False,
        "/ca.pem",
        False,
    )
    assert parse_store_url("clickhouse://h/db?secure=1", env={}).secure
    assert parse_store_url("clickhouse://[::1]:9000/db", env={}).host == "::1"


def test_sst_credentials_precedence(tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\nignored\n")
    env = {
        "SENSILLA_CLICKHOUSE_USER": "envuser",
        "SENSILLA_CLICKHOUSE_PASSWORD": "from-env",
    }
    u = parse_store_url("clickhouse://h/db", env=env)
    assert (u.user, u.password) == ("envuser", "from-env")
    u = parse_store_url(
        "clickhouse://h/db", env={**env, "SENSILLA_CLICKHOUSE_PASSWORD_FILE": str(pw_file)}
    )
    assert u.password == "from-file"
    u = parse_store_url(f"clickhouse://h/db?password_file={pw_file}", env=env)
    assert u.password == "from-file"
    u = parse_store_url("clickhouse://me:p%40ss%3A@h/db", env=env)
    assert (u.user, u.password) == ("me", "p@ss:")


def test_sst_passwords_never_shown(tmp_path: Path) -> None:
    u = parse_store_url("clickhouse://me:s3cret-pw@h:9000/db", env={})
    for text in (repr(u), str(u), u.redacted()):
        assert "s3cret-pw" not in text
    assert u.redacted() == "clickhouse://me@h:9000/db"
    with pytest.raises(StoreURLError) as exc:
        parse_store_url(f"clickhouse://h/db?password_file={tmp_path}/missing", env={})
    assert "missing" in str(exc.value)
