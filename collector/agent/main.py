"""The node agent's process: an asyncio main running components until stopped.

Components implement `name` and `async run(stop)`. The enforcing half is one
component (the Enforcer loop, in a thread of its own because sources and the
datapath block); the observing half (flows, Observer API, shipping) adds its own
components next to it and shares the StatusPublisher (it sets `observer`).

    agent = Agent(node, status, [EnforcerComponent(enforcer), ...])
    asyncio.run(agent.run())          # returns on SIGINT/SIGTERM or a component failure
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from collector.agent.enforcer import Enforcer, Source
from collector.agent.status import StatusPublisher, Writer

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def run(self, stop: asyncio.Event) -> None: ...


class EnforcerComponent:
    name = "enforcer"

    def __init__(self, enforcer: Enforcer, poll: float = 0.2) -> None:
        self.enforcer = enforcer
        self.poll = poll

    async def run(self, stop: asyncio.Event) -> None:
        done = threading.Event()
        thread = asyncio.ensure_future(asyncio.to_thread(self.enforcer.run, done, self.poll))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({thread, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.set()
            stopper.cancel()
            await thread  # re-raises what the loop raised


class ReadyLine:
    """Print "ready" on stdout once the enforcer enforces a first revision (the
    lab's process starter waits for that line), then wait for stop."""

    name = "ready-line"

    def __init__(self, enforcer: Enforcer, interval: float = 0.02) -> None:
        self.enforcer = enforcer
        self.interval = interval

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set() and self.enforcer.enforced_revision < 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        if not stop.is_set():
            print("ready", flush=True)
        await stop.wait()


class Agent:
    def __init__(self, node: str, status: StatusPublisher, components: Sequence[Component]) -> None:
        self.node = node
        self.status = status
        self.components = list(components)

    async def run(self, stop: asyncio.Event | None = None) -> int:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        tasks = {asyncio.ensure_future(c.run(stop)): c for c in self.components}
        rc = 0
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    exc = t.exception()
                    if exc is not None:
                        log.error("component %s failed: %s", tasks[t].name, exc, exc_info=exc)
                        rc = 1
                    if not stop.is_set():
                        if exc is None:
                            log.warning("component %s stopped", tasks[t].name)
                            rc = rc or 1
                        stop.set()
        finally:
            for t in tasks:
                t.cancel()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        return rc


@dataclass
class AgentContext:
    """What component factories get to build their part of the agent."""

    node: str
    source: Source
    status: StatusPublisher
    enforcer: Enforcer
    netns: str | None


# The observing half appends factories here (each returns a Component or None).
COMPONENT_FACTORIES: list[Callable[[AgentContext], Component | None]] = []


def build_agent(
    node: str,
    source: Source,
    status_writer: Writer | None = None,
    netns: str | None = None,
    pin_root: str | Path = "/sys/fs/bpf/sensilla",
    poll: float = 0.2,
    ready_line: bool = False,
) -> Agent:
    """The agent of a real node: the datapath under `pin_root`, interfaces found by
    endpoint discovery in `netns` (None: our own namespace)."""
    from collector.agent.enforcer import DiscoveryResolver
    from collector.discovery import EndpointDiscovery
    from datapath import Datapath

    status = StatusPublisher(node, status_writer)
    datapath = Datapath.open(node, pin_root=pin_root, netns=netns)
    resolver = DiscoveryResolver(EndpointDiscovery(node, netns=netns))
    enforcer = Enforcer(node, source, datapath, status, resolver)
    ctx = AgentContext(node, source, status, enforcer, netns)
    components: list[Component] = [EnforcerComponent(enforcer, poll)]
    if ready_line:
        components.append(ReadyLine(enforcer))
    for factory in COMPONENT_FACTORIES:
        c = factory(ctx)
        if c is not None:
            components.append(c)
    return Agent(node, status, components)
