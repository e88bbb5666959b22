"""What a caller may see.

A *scope* is attached to every call a server accepts (by the token interceptor,
sensilla.security.tokens): administrators see everything; a namespace-scoped caller
sees only flows whose source or destination namespace is one of its namespaces, and
only those namespaces. Servers without a token file treat every caller as admin
(mutual TLS alone decides who connects).

    scope = current_scope()             # inside a servicer method
    if not scope.allows_flow(flow): ...
    names = scope.restrict(request.namespaces)   # None: nothing is visible
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scope:
    name: str
    admin: bool = False
    namespaces: frozenset[str] = field(default_factory=frozenset)
    ingest: bool = False  # may push flows (sensilla.ingest.v1)

    @property
    def reads(self) -> bool:
        """May call the read APIs (Observer, Query)."""
        return self.admin or bool(self.namespaces)

    @property
    def may_ingest(self) -> bool:
        return self.admin or self.ingest

    @property
    def unrestricted(self) -> bool:
        return self.admin

    def allows_namespace(self, namespace: str) -> bool:
        return self.admin or namespace in self.namespaces

    def allows_flow(self, flow: Any) -> bool:
        """The flow's source or destination namespace is in scope."""
        if self.admin:
            return True
        ns = self.namespaces
        return flow.source.namespace in ns or flow.destination.namespace in ns

    def restrict(self, requested: Sequence[str]) -> list[str] | None:
        """The namespaces a request may cover: the requested ones within scope (all
        of the scope when none are requested). [] means every namespace (admin
        only); None means nothing is visible."""
        if self.admin:
            return list(requested)
        if not requested:
            return sorted(self.namespaces)
        inside = [n for n in requested if n in self.namespaces]
        return inside or None

    def filter_names(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if self.allows_namespace(n)]

    def flow_predicate(
        self, inner: Callable[[Any], bool] | None = None
    ) -> Callable[[Any], bool] | None:
        """``inner`` and this scope as one flow predicate (None: every flow passes)."""
        if self.admin:
            return inner
        if inner is None:
            return self.allows_flow
        allows = self.allows_flow
        return lambda flow: allows(flow) and inner(flow)

    def sql_condition(self, prefix: str = "scope") -> tuple[str, dict[str, Any]]:
        """The same condition over the store's flow columns (typed parameter)."""
        if self.admin:
            return "1", {}
        key = f"{prefix}_ns"
        return (
            f"(src_namespace IN {{{key}:Set(String)}} OR dst_namespace IN {{{key}:Set(String)}})",
            {key: sorted(self.namespaces)},
        )

    def describe(self) -> str:
        if self.admin:
            return f"{self.name} (admin)"
        parts = []
        if self.namespaces:
            parts.append("namespaces " + ",".join(sorted(self.namespaces)))
        if self.ingest:
            parts.append("ingest")
        return f"{self.name} ({'; '.join(parts) or 'nothing'})"


ADMIN = Scope("admin", admin=True)

_CURRENT: contextvars.ContextVar[Scope] = contextvars.ContextVar("sensilla_scope", default=ADMIN)


def current_scope() -> Scope:
    """The scope of the call being served (ADMIN where no token file is in force)."""
    return _CURRENT.get()


def set_scope(scope: Scope) -> contextvars.Token[Scope]:
    return _CURRENT.set(scope)


def reset_scope(token: contextvars.Token[Scope]) -> None:
    _CURRENT.reset(token)
