"""The kernel's Python side: compile, load, pin, attach, typed map access, events.

Public API (see docs/datapath.md):
    Datapath.open(node_name, pin_root=..., netns=...) -> Datapath
    EventReader (from Datapath.event_reader()), Losses, AggregationLevel, ...
The contract with the policy compiler lives in datapath.types.
"""

from datapath.datapath import (
    DEFAULT_PIN_ROOT,
    AggregationConfig,
    AggregationLevel,
    Counter,
    Datapath,
    HookBusyError,
    IpcacheDelta,
    LoadResult,
    NotLoadedError,
    ProgStats,
    StatsHandle,
)
from datapath.events import EVENT_DTYPE, CtState, EventReason, FlowEventRecord, to_records
from datapath.perf import EventReader, Losses

__all__ = [
    "DEFAULT_PIN_ROOT",
    "EVENT_DTYPE",
    "AggregationConfig",
    "AggregationLevel",
    "Counter",
    "CtState",
    "Datapath",
    "EventReader",
    "EventReason",
    "FlowEventRecord",
    "HookBusyError",
    "IpcacheDelta",
    "LoadResult",
    "Losses",
    "NotLoadedError",
    "ProgStats",
    "StatsHandle",
    "to_records",
]
