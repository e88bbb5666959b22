"""Where exporters write: files with size-based rotation, syslog over TCP (RFC 5424
messages, RFC 6587 octet-counting framing, optional TLS), stdout.

Every sink persists the exporter's stream position (relay.siem.position) in a state
file, so a relay restart continues where it stopped. The guarantees differ by sink
(blocking code: the exporter runs it in a worker thread):

File, exactly once. Before each write the state records an *intent*: the file's
inode, the offset the records start at, the offset they end at and the position
after them; then the records are written with one write() (repeated only on a short
write); the next state save commits them. After a crash, recovery compares the file
with the intent: all of it there -> the position after the records; none -> the
position before; part (a kill in the middle of the write) -> the file is cut back
to the start and the records are written again. A rotation renames the full file
aside and records the new file's inode before anything is written to it. Whatever
the moment of a SIGKILL, every flow ends up in the files once.

Syslog and stdout, at least once. A batch is sent, then confirmed (syslog: the
receiver's TCP stack acknowledged every byte, the socket's unacknowledged-byte
count SIOCOUTQ is 0; stdout: flushed), then the position after it is saved. A crash
between send and save resends that batch after the restart: duplicates are limited
to the last unconfirmed batch, and each syslog message carries its flow's uuid and
position in structured data, so a receiver can drop them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from relay.siem.position import Positions, from_json, to_json
from relay.siem.state import StateFile

log = logging.getLogger(__name__)

GROUP_BYTES = 4 << 20  # bytes written with one intent at most
SIOCOUTQ = 0x5411  # linux: bytes in the TCP send queue not yet acknowledged by the peer


class SinkError(Exception):
    """A sink could not write (the exporter retries the same records later)."""


@dataclass
class Record:
    data: bytes  # the encoded record, without framing or newline
    position: Positions | None = None  # the stream position after this record
    meta: dict[str, Any] = field(default_factory=dict)  # syslog header fields


class Sink:
    name = "sink"

    def recover(self) -> Positions:
        """Make the output consistent after a restart; the position to resume from."""
        raise NotImplementedError

    def write(self, records: list[Record], position: Positions) -> None:
        """Write records (in order); ``position`` is the stream position after all of
        them (it may be ahead of the last record's: flows filtered out)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


# --- file -------------------------------------------------------------------------


def backup_name(path: Path, when: float) -> Path:
    """Lumberjack's (Hubble's exporter) backup name: NAME-2006-01-02T15-04-05.000.EXT;
    on a clash the time moves on by a millisecond, so names sort in rotation order."""
    ms = int(when * 1000)
    while True:
        stamp = datetime.fromtimestamp(ms / 1000, UTC)
        text = stamp.strftime("%Y-%m-%dT%H-%M-%S") + f".{ms % 1000:03d}"
        candidate = path.with_name(f"{path.stem}-{text}{path.suffix}")
        if not candidate.exists():
            return candidate
        ms += 1


class FileSink(Sink):
    name = "file"

    def __init__(
        self,
        path: str | Path,
        state: StateFile,
        *,
        max_size: int = 10 << 20,
        max_backups: int = 0,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.state = state
        self.max_size = max_size
        self.max_backups = max_backups
        self.fsync = fsync
        self.fd = -1
        self.inode = 0
        self.offset = 0
        self.position: Positions = {}
        self.rotations = 0
        self.recovered = ""  # what recovery found (for logs and tests)

    def _open(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        st = os.fstat(self.fd)
        self.inode, self.offset = st.st_ino, st.st_size

    def _save(self, intent: dict[str, Any] | None = None) -> None:
        data: dict[str, Any] = {
            "version": 1,
            "sink": "file",
            "position": to_json(self.position),
            "file": {"path": str(self.path), "inode": self.inode, "offset": self.offset},
        }
        if intent is not None:
            data["intent"] = intent
        self.state.save(data)

    def recover(self) -> Positions:
        st = self.state.load()
        self.position = from_json(st.get("position"), f"{self.state.path}: position")
        self._open()
        f = st.get("file") or {}
        intent = st.get("intent")
        size = self.offset
        if intent and int(intent.get("inode", -1)) == self.inode:
            start, end = int(intent["start"]), int(intent["end"])
            if size >= end:
                self.recovered = "intent complete"
                self.position = from_json(intent.get("position"), f"{self.state.path}: intent")
                if size > end:
                    os.ftruncate(self.fd, end)
                self.offset = end
            elif size <= start:
                self.recovered = "intent not written"
                self.offset = size
            else:
                self.recovered = f"intent partly written ({size - start} of {end - start} bytes)"
                os.ftruncate(self.fd, start)
                self.offset = start
        elif f and int(f.get("inode", -1)) == self.inode:
            committed = int(f.get("offset", 0))
            if size > committed:  # never left by this protocol; be safe
                self.recovered = f"cut {size - committed} bytes past the committed offset"
                os.ftruncate(self.fd, committed)
                self.offset = committed
            else:
                self.recovered = "clean"
        else:
            # a new file (rotated before the state said so) or a first start
            self.recovered = "new file" if f else "first start"
        self._save()
        if self.recovered not in ("clean", "first start", "new file", "intent not written"):
            log.warning("exporter file %s: recovery: %s", self.path, self.recovered)
        return dict(self.position)

    def _rotate(self) -> None:
        self._save()  # commit what the full file holds before it is renamed away
        target = backup_name(self.path, time.time())
        os.rename(self.path, target)
        self._open()  # a new, empty file; its inode goes into the state before any write
        self.rotations += 1
        self._save()
        if self.max_backups > 0:
            pattern = f"{self.path.stem}-*{self.path.suffix}"
            backups = sorted(self.path.parent.glob(pattern))
            for old in backups[: max(0, len(backups) - self.max_backups)]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def write(self, records: list[Record], position: Positions) -> None:
        if self.fd < 0:
            raise SinkError("file sink used before recover()")
        i, n = 0, len(records)
        while i < n:
            # a group: the records that still fit the current file (at least one
            # record when the file is empty, however large), at most GROUP_BYTES
            size, j = 0, i
            while j < n:
                length = len(records[j].data) + 1
                if self.offset + size > 0 and self.offset + size + length > self.max_size:
                    break
                if j > i and size + length > GROUP_BYTES:
                    break
                size += length
                j += 1
            if j == i:
                self._rotate()
                continue
            if j == n:
                after = position
            else:
                last = records[j - 1].position
                if last is None:
                    raise SinkError("file sink: a record without its stream position")
                after = last
            self._write_group(b"".join(r.data + b"\n" for r in records[i:j]), after)
            i = j
        if records or position != self.position:
            self.position = dict(position)
            self._save()  # commits the last group (or a position past filtered flows)

    def _write_group(self, data: bytes, after: Positions) -> None:
        start = self.offset
        intent = {
            "inode": self.inode,
            "start": start,
            "end": start + len(data),
            "position": to_json(after),
        }
        self._save(intent)  # also commits the previous group
        self._write_all(data)
        if self.fsync:
            os.fsync(self.fd)
        self.offset = start + len(data)
        self.position = dict(after)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --- syslog -------------------------------------------------------------------------


@dataclass
class TlsOptions:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def _sd_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, else "-" (RFC 5424 NILVALUE)."""
    out = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return out or "-"


def rfc5424(
    msg: bytes,
    *,
    facility: int,
    severity: int,
    time_ns: int,
    hostname: str,
    app_name: str,
    msgid: str,
    sd: dict[str, str],
    sd_id: str,
) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG."""
    pri = facility * 8 + severity
    secs, ns = divmod(time_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ns // 1000:06d}Z"
    params = " ".join(f'{k}="{_sd_escape(v)}"' for k, v in sd.items())
    sd_text = f"[{sd_id} {params}]" if params else "-"
    head = (
        f"<{pri}>1 {stamp} {_header_token(hostname, 255)} {_header_token(app_name, 48)} "
        f"- {_header_token(msgid, 32)} {sd_text} "
    )
    return head.encode("ascii", "replace") + msg


def octet_frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


class SyslogSink(Sink):
    name = "syslog"

    def __init__(
        self,
        address: str,
        state: StateFile,
        *,
        tls: TlsOptions | None = None,
        app_name: str = "sensilla",
        hostname: str = "",
        facility: int = 16,  # local0
        msgid: str = "flow",
        sd_id: str = "flow@32473",
        connect_timeout_s: float = 10.0,
        confirm_timeout_s: float = 30.0,
    ) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"syslog address {address!r} must be HOST:PORT")
        self.host, self.port = host.strip("[]"), int(port)
        self.state = state
        self.tls = tls
        self.app_name = app_name
        self.hostname = hostname
        self.facility = facility
        self.msgid = msgid
        self.sd_id = sd_id
        self.connect_timeout_s = connect_timeout_s
        self.confirm_timeout_s = confirm_timeout_s
        self.sock: socket.socket | None = None
        self.position: Positions = {}
        self.sent_batches = 0
        self.connects = 0

    def recover(self) -> Positions:
        st = self.state.load()
        self.position = from_json(st.get("position"), f"{self.state.path}: position")
        return dict(self.position)

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock: socket.socket = raw
        if self.tls is not None:
            ctx = self.tls.context()
            sock = ctx.wrap_socket(raw, server_hostname=self.tls.server_name or self.host)
        sock.settimeout(self.confirm_timeout_s)
        self.connects += 1
        return sock

    def _unacked(self, sock: socket.socket) -> int:
        buf = fcntl.ioctl(sock.fileno(), SIOCOUTQ, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])

    def _confirm(self, sock: socket.socket) -> None:
        """Wait until the receiver's TCP stack acknowledged every byte sent."""
        deadline = time.monotonic() + self.confirm_timeout_s
        last = -1
        delay = 0.001
        while True:
            left = self._unacked(sock)
            if left == 0:
                return
            if left != last:  # progress: the receiver is reading
                deadline = time.monotonic() + self.confirm_timeout_s
                last = left
            if time.monotonic() > deadline:
                raise SinkError(f"syslog receiver did not acknowledge {left} bytes")
            time.sleep(delay)
            delay = min(0.05, delay * 2)

    def frame(self, r: Record) -> bytes:
        m = r.meta
        return octet_frame(
            rfc5424(
                r.data,
                facility=self.facility,
                severity=int(m.get("severity", 6)),
                time_ns=int(m.get("time_ns", 0)) or time.time_ns(),
                hostname=self.hostname or str(m.get("hostname") or socket.gethostname()),
                app_name=self.app_name,
                msgid=self.msgid,
                sd={k: str(v) for k, v in (m.get("sd") or {}).items()},
                sd_id=self.sd_id,
            )
        )

    def write(self, records: list[Record], position: Positions) -> None:
        if records:
            payload = b"".join(self.frame(r) for r in records)
            try:
                if self.sock is None:
                    self.sock = self._connect()
                self.sock.sendall(payload)
                self._confirm(self.sock)
            except (OSError, SinkError) as exc:
                self._drop()
                raise SinkError(f"syslog {self.host}:{self.port}: {exc}") from exc
            self.sent_batches += 1
        if records or position != self.position:
            self.position = dict(position)
            self.state.save({"version": 1, "sink": "syslog", "position": to_json(position)})

    def _drop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None

    def close(self) -> None:
        self._drop()


# --- stdout -------------------------------------------------------------------------


class StdoutSink(Sink):
    name = "stdout"

    def __init__(self, state: StateFile, out: BinaryIO | None = None) -> None:
        self.state = state
        self.out = out if out is not None else sys.stdout.buffer
        self.position: Positions = {}

    def recover(self) -> Positions:
        st = self.state.load()
        self.position = from_json(st.get("position"), f"{self.state.path}: position")
        return dict(self.position)

    def write(self, records: list[Record], position: Positions) -> None:
        if records:
            try:
                self.out.write(b"".join(r.data + b"\n" for r in records))
                self.out.flush()
            except OSError as exc:
                raise SinkError(f"stdout: {exc}") from exc
        if records or position != self.position:
            self.position = dict(position)
            self.state.save({"version": 1, "sink": "stdout", "position": to_json(position)})
