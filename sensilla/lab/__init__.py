"""The lab: a Kubernetes-like cluster made of network namespaces on one machine.

Two node namespaces linked over a fabric, pods as namespaces linked to their node by
veth pairs (host side `lxc…`), a management link per node to the root namespace,
servers in every pod, and the cluster's objects in Kubernetes shapes in a state
directory that sources watch. See docs/lab.md.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

from sensilla.lab.components import Options
from sensilla.lab.runtime import Lab, LabError, down, up

__all__ = ["Lab", "LabError", "Options", "down", "temporary_lab", "up"]


@contextlib.contextmanager
def temporary_lab(
    prefix: str = "t", spec_path: str | None = None, options: Options | None = None
) -> Iterator[Lab]:
    """A lab with a fresh unique name, removed on exit whatever happens."""
    name = (prefix + secrets.token_hex(4))[:8]
    try:
        lab = up(name, spec_path, options)
        yield lab
    finally:
        leftovers = down(name)
        if leftovers:
            raise LabError(f"lab {name} left {leftovers}")
