"""An in-test syslog receiver: TCP, RFC 6587 octet counting, RFC 5424 messages; keeps
every complete message per connection (a torn frame at a connection's end is
dropped, as a receiver must)."""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

SD = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Message:
    pri: int
    hostname: str
    app: str
    msgid: str
    sd: dict[str, str]
    msg: bytes


def parse(raw: bytes) -> Message:
    head, rest = raw.split(b" ", 6)[:6], raw.split(b" ", 6)[6]
    pri = int(head[0][1 : head[0].index(b">")])
    if rest.startswith(b"-"):
        sd: dict[str, str] = {}
        msg = rest[2:]
    else:
        end = rest.index(b"] ")
        sd_text = rest[: end + 1].decode()
        sd = {k: v.replace('\\"', '"').replace("\\]", "]") for k, v in SD.findall(sd_text)}
        msg = rest[end + 2 :]
    return Message(pri, head[2].decode(), head[3].decode(), head[5].decode(), sd, msg)


@dataclass
class SyslogReceiver:
    host: str = "127.0.0.1"
    port: int = 0
    connections: list[list[Message]] = field(default_factory=list)
    torn: int = 0

    def start(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                msgs: list[Message] = []
                self.connections.append(msgs)
            threading.Thread(target=self._read, args=(conn, msgs), daemon=True).start()

    def _read(self, conn: socket.socket, msgs: list[Message]) -> None:
        buf = b""
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    if buf:
                        self.torn += 1
                    return
                buf += data
                while True:
                    sp = buf.find(b" ")
                    if sp < 0:
                        break
                    n = int(buf[:sp])
                    if len(buf) < sp + 1 + n:
                        break
                    frame, buf = buf[sp + 1 : sp + 1 + n], buf[sp + 1 + n :]
                    with self._lock:
                        msgs.append(parse(frame))

    def messages(self) -> list[Message]:
        with self._lock:
            return [m for c in self.connections for m in c]

    def stop(self) -> None:
        self._stop = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress
        except OSError:
            pass
        self.sock.close()
