"""A TCP server in a pod's namespace for long-lived connections: echoes (or just
counts) what it receives, one thread, until closed."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

from sensilla.lab import netns as N


class TcpServer:
    def __init__(self, netns: str, port: int, *, echo: bool = True) -> None:
        with N.entered(netns):
            self.listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("::", port))
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.echo = echo
        self.received = 0
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if sock is self.listener:
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = sock.accept()
                        conn.setblocking(False)
                        self.sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(sock)
                    sock.close()
                    continue
                self.received += len(data)
                if self.echo:
                    with contextlib.suppress(OSError):
                        sock.setblocking(True)
                        sock.sendall(data)
                        sock.setblocking(False)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(netns: str, addr: str, port: int, timeout: float = 1.0) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with N.entered(netns):
        s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((addr, port))
    return s


def exchange(s: socket.socket, data: bytes = b"ping") -> bool:
    """Send and read the echo back; False on any failure or timeout."""
    try:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(len(data) - len(got))
            if not chunk:
                return False
            got += chunk
        return got == data
    except OSError:
        return False
