"""The Sensilla processes a lab runs besides its pod servers.

Later parts of the system register here: the collectors (one per node, inside the
node's namespace) and the relay (root namespace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sensilla.lab.layout import LabLayout
    from sensilla.lab.runtime import Lab


@dataclass
class Options:
    relay: bool = True
    collectors: bool = True


def start(lab: Lab, layout: LabLayout, options: Options, say: Callable[[str], None]) -> None:
    """Start the lab's Sensilla components; none exist yet in this wave."""
    del lab, layout, options, say
