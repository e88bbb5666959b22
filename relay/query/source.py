"""The relay's read-only watch of the cluster source (``--source lab:DIR`` or
``kubernetes[:KUBECONFIG]``), for Explain, ListEndpoints and the node list.

The same source classes the collectors use (collector.sources), and the one policy
model (collector.policy): the ClusterState and its identity table are rebuilt only
when the source's revision moves. Every read runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from collector.identity import IdentityTable, identities_for
from collector.policy.cluster import ClusterState

T = TypeVar("T")


class SourceSpecError(ValueError):
    """A --source value the relay cannot use."""


class _Source(Protocol):
    @property
    def revision(self) -> int: ...

    def cluster_state(self) -> ClusterState: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "lab" or "kubernetes"
    path: str = ""  # lab: the state directory; kubernetes: a kubeconfig (or "")

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


def parse_source(text: str) -> SourceSpec:
    """``lab:DIR`` (a lab state directory) or ``kubernetes`` / ``kubernetes:KUBECONFIG``."""
    kind, _, rest = text.partition(":")
    if kind == "lab":
        if not rest:
            raise SourceSpecError("--source lab:DIR needs the lab's state directory")
        return SourceSpec("lab", rest)
    if kind == "kubernetes":
        return SourceSpec("kubernetes", rest)
    raise SourceSpecError(f"--source {text!r}: expected lab:DIR or kubernetes[:KUBECONFIG]")


def open_source(spec: SourceSpec, sync_timeout: float = 60.0) -> _Source:
    """Open (and for Kubernetes, start and sync) a source. Blocking."""
    if spec.kind == "lab":
        from collector.sources.lab import LabSource

        if not Path(spec.path).is_dir():
            raise SourceSpecError(f"--source lab:{spec.path}: no such directory")
        return LabSource(spec.path)
    from collector.sources.kubernetes import DEFAULT_KINDS, KubernetesSource, SourceError

    try:
        src = KubernetesSource.connect(kubeconfig=spec.path or None, kinds=DEFAULT_KINDS)
    except SourceError as exc:
        raise SourceSpecError(f"--source kubernetes: {exc}") from exc
    src.start()
    if not src.wait_synced(timeout=sync_timeout):
        src.close()
        raise SourceSpecError(f"--source kubernetes: not synced within {sync_timeout:.0f} s")
    return src


@dataclass(frozen=True)
class View:
    """One revision of the source: the policy model's state and its identities."""

    state: ClusterState
    identities: IdentityTable

    @property
    def revision(self) -> int:
        return self.state.revision


class SourceWatch:
    def __init__(self, source: _Source, executor: Executor, spec: SourceSpec | None = None):
        self.source = source
        self.executor = executor
        self.spec = spec
        self._lock = threading.Lock()
        self._view: View | None = None

    @classmethod
    def from_spec(cls, spec: SourceSpec, executor: Executor) -> SourceWatch:
        return cls(open_source(spec), executor, spec)

    def describe(self) -> str:
        return self.spec.describe() if self.spec else getattr(self.source, "name", "source")

    def view_blocking(self) -> View:
        """The current revision's view (PolicyValidationError: an invalid policy)."""
        rev = self.source.revision
        with self._lock:
            if self._view is not None and self._view.revision == rev and rev >= 0:
                return self._view
        state = self.source.cluster_state()
        view = View(state, identities_for(state))
        with self._lock:
            if self._view is None or view.revision >= self._view.revision:
                self._view = view
        return view

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def view(self) -> View:
        return await self._run(self.view_blocking)

    async def node_names(self) -> list[str]:
        v = await self.view()
        return sorted(v.state.nodes)

    async def namespace_names(self) -> list[str]:
        v = await self.view()
        return sorted({*v.state.namespaces, *(p.namespace for p in v.state.pods.values())})

    def close(self) -> None:
        self.source.close()
