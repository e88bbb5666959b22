"""The collector's published status (status/collectors/<node>.json in a lab).

Both halves of the agent contribute fields: the enforcing half the revision it
enforces, the observing half its Observer address. Every update rewrites the whole
file atomically.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

Writer = Callable[[Mapping[str, Any]], None]


class StatusPublisher:
    def __init__(self, node: str, writer: Writer | None = None) -> None:
        self._lock = threading.Lock()
        self._writer = writer
        self._fields: dict[str, Any] = {
            "node": node,
            "pid": os.getpid(),
            "started": time.time(),
            "revision": -1,
            "error": None,
            "observer": None,
        }

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._fields.update(fields)
            self._fields["updated"] = time.time()
            snapshot = dict(self._fields)
            if self._writer is not None:
                self._writer(snapshot)

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._fields.get(key, default)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._fields)
