"""The node agent (`sensilla collector`): sources -> policy compiler -> datapath
(enforcing half), and, from the observing half, flows -> Observer API -> relay."""

from collector.agent.enforcer import Enforcer, SyncResult, ifindex_by_name
from collector.agent.main import Agent, Component, EnforcerComponent
from collector.agent.status import StatusPublisher

__all__ = [
    "Agent",
    "Component",
    "Enforcer",
    "EnforcerComponent",
    "StatusPublisher",
    "SyncResult",
    "ifindex_by_name",
]
