"""Sinks: the file sink's crash windows (intent, partial write, rotation) and size
rotation; RFC 5424 / RFC 6587 framing; the syslog sink against a local receiver;
the exporter configuration's checks."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.siem import sinks
from relay.siem.config import ConfigError, parse_config
from relay.siem.sinks import FileSink, Record, SinkError, SyslogSink, octet_frame, rfc5424
from relay.siem.state import StateFile
from tests.relay.siem.receiver import SyslogReceiver, parse

pytestmark = pytest.mark.unit


def _records(lo: int, hi: int, size: int = 40) -> list[Record]:
    out = []
    for i in range(lo, hi):
        body = json.dumps({"n": i, "pad": "x" * size}).encode()
        out.append(Record(body, {("c", 1): i}))
    return out


def _lines(path: Path) -> list[int]:
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))  # names sort by time
    files = rotated + ([path] if path.exists() else [])
    out = []
    for f in files:
        out += [json.loads(x)["n"] for x in f.read_bytes().splitlines()]
    return out


def _sink(tmp_path: Path, max_size: int = 1 << 20) -> FileSink:
    return FileSink(
        tmp_path / "out" / "flows.log",
        StateFile(tmp_path / "state" / "f.state.json"),
        max_size=max_size,
    )


class Crash(Exception):
    pass


def test_ssi_file_write_and_resume(tmp_path: Path) -> None:
    s = _sink(tmp_path)
    assert s.recover() == {}
    recs = _records(1, 101)
    s.write(recs, {("c", 1): 100})
    s.close()
    s2 = _sink(tmp_path)
    assert s2.recover() == {("c", 1): 100}
    assert s2.recovered == "clean"
    assert _lines(s2.path) == list(range(1, 101))


@pytest.mark.parametrize("when", ["before-write", "half-write", "after-write"])
def test_ssi_file_crash_windows_never_duplicate(
    tmp_path: Path, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = _sink(tmp_path)
    s.recover()
    s.write(_records(1, 51), {("c", 1): 50})
    real_write = os.write

    def crashing_write(fd: int, data: bytes | memoryview) -> int:
        if fd != s.fd:
            return real_write(fd, data)
        if when == "before-write":
            raise Crash()
        if when == "half-write":
            real_write(fd, bytes(data[: len(data) // 2]))
            raise Crash()
        n = real_write(fd, data)
        return n

    monkeypatch.setattr(sinks.os, "write", crashing_write)
    real_save = s._save
    saves = []

    def save(intent: object = None) -> None:
        saves.append(intent)
        if when == "after-write" and intent is None and len(saves) > 1:
            raise Crash()  # the commit after the data never happens
        real_save(intent)  # type: ignore[arg-type]

    monkeypatch.setattr(s, "_save", save)
    with pytest.raises(Crash):
        s.write(_records(51, 101), {("c", 1): 100})
    monkeypatch.undo()
    s.close()
    s2 = _sink(tmp_path)
    pos = s2.recover()
    expect = 100 if when == "after-write" else 50
    assert pos == {("c", 1): expect}, s2.recovered
    # the exporter resumes from the recovered position: what follows it
    s2.write(_records(expect + 1, 121), {("c", 1): 120})
    assert _lines(s2.path) == list(range(1, 121))


def test_ssi_file_rotates_at_size_and_crash_in_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = 4096
    s = _sink(tmp_path, limit)
    s.recover()
    for lo in range(1, 1001, 37):
        hi = min(lo + 37, 1001)
        s.write(_records(lo, hi), {("c", 1): hi - 1})
    assert s.rotations > 5
    files = list(s.path.parent.iterdir())
    assert all(f.stat().st_size <= limit for f in files)
    # a crash between the rename and the new file's state
    real_open = s._open

    def crash_after_rename() -> None:
        raise Crash()

    monkeypatch.setattr(s, "_open", crash_after_rename)
    with pytest.raises(Crash):
        for lo in range(1001, 1400, 37):
            s.write(_records(lo, min(lo + 37, 1400)), {("c", 1): min(lo + 37, 1400) - 1})
    monkeypatch.setattr(s, "_open", real_open)
    s.close()
    s2 = _sink(tmp_path, limit)
    pos = s2.recover()[("c", 1)]
    s2.write(_records(pos + 1, 1500), {("c", 1): 1499})
    assert _lines(s2.path) == list(range(1, 1500))
    assert all(f.stat().st_size <= limit for f in s2.path.parent.iterdir())


def test_ssi_rfc5424_and_octet_counting() -> None:
    msg = rfc5424(
        b'{"a":1}',
        facility=16,
        severity=4,
        time_ns=1_764_131_789_123_456_789,
        hostname="node 1",
        app_name="sensilla",
        msgid="flow",
        sd={"uuid": 'u"]\\', "seq": "7"},
        sd_id="flow@32473",
    )
    assert msg.startswith(b"<132>1 2025-11-26T04:36:29.123456Z node1 sensilla - flow ")
    assert b'[flow@32473 uuid="u\\"\\]\\\\" seq="7"] {"a":1}' in msg
    framed = octet_frame(msg)
    n, rest = framed.split(b" ", 1)
    assert int(n) == len(rest) == len(msg)
    m = parse(msg)
    assert (m.pri, m.hostname, m.app, m.msgid, m.msg) == (
        132,
        "node1",
        "sensilla",
        "flow",
        b'{"a":1}',
    )
    assert m.sd["seq"] == "7"


@pytest.fixture
def receiver() -> Iterator[SyslogReceiver]:
    r = SyslogReceiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_ssi_syslog_sink_confirms_and_persists(tmp_path: Path, receiver: SyslogReceiver) -> None:
    state = StateFile(tmp_path / "s.state.json")
    s = SyslogSink(receiver.address, state, hostname="relay1")
    assert s.recover() == {}
    recs = _records(1, 201)
    for r in recs:
        r.meta = {"severity": 6, "time_ns": 1, "sd": {"uuid": f"u{json.loads(r.data)['n']}"}}
    s.write(recs[:100], {("c", 1): 100})
    s.write(recs[100:], {("c", 1): 200})
    # confirmed: the receiver's TCP stack has every byte; its reader gets them
    import time

    deadline = time.monotonic() + 10
    while len(receiver.messages()) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    got = receiver.messages()
    assert [m.sd["uuid"] for m in got] == [f"u{i}" for i in range(1, 201)]
    assert (
        StateFile(tmp_path / "s.state.json").load()["position"]["positions"][0]["sequence"] == "200"
    )
    s.close()
    receiver.stop()
    with pytest.raises(SinkError):
        SyslogSink(receiver.address, state, connect_timeout_s=1).write(recs[:1], {("c", 1): 1})


def test_ssi_config_parses_and_names_errors(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "state_dir": str(tmp_path),
            "exporters": [
                {
                    "name": "drops",
                    "type": "file",
                    "format": "ocsf",
                    "allowlist": [{"verdict": ["DROPPED"]}],
                    "exclude_filters": [{"source_pod": ["kube-system/"]}],
                    "fieldMask": ["time", "verdict", "source"],
                    "filePath": str(tmp_path / "d.log"),
                    "fileMaxSizeMb": 0.5,
                    "fileMaxBackups": 3,
                },
                {
                    "name": "siem",
                    "type": "syslog",
                    "syslog": {"address": "127.0.0.1:6514", "facility": "local3", "tls": True},
                },
                {"name": "out", "type": "stdout"},
            ],
        }
    )
    d, s, o = cfg.exporters
    assert d.file is not None and d.file.max_size == 512 * 1024 and d.file.max_backups == 3
    assert d.include_filters[0].verdict == [2] and d.field_mask == ["time", "verdict", "source"]
    assert d.compiled is not None and not d.compiled.is_trivial
    assert s.syslog is not None and s.syslog.facility == 19 and s.syslog.tls is not None
    assert s.syslog.msgid == "flow" and o.type == "stdout"

    def err(item: dict[str, object]) -> str:
        with pytest.raises(ConfigError) as ei:
            parse_config({"exporters": [item]})
        return str(ei.value)

    assert "unknown field(s) colour" in err({"name": "a", "type": "stdout", "colour": 1})
    assert "exporters[0] (a).type" in err({"name": "a", "type": "kafka"})
    assert "include_filters[0]" in err(
        {"name": "a", "type": "stdout", "include_filters": [{"verdict": ["NOPE"]}]}
    )
    assert "include_filters[0].source_ip" in err(
        {"name": "a", "type": "stdout", "include_filters": [{"source_ip": ["300.1.1.1"]}]}
    )
    assert "field_mask[0]" in err({"name": "a", "type": "stdout", "field_mask": ["nope"]})
    assert "syslog.address" in err({"name": "a", "type": "syslog", "syslog": {"address": "x"}})
    assert ".name" in err({"name": "../etc", "type": "stdout"})
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"exporters": [{"name": "a", "type": "stdout"}] * 2})
