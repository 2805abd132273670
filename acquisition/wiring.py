"""The composition root: the only place that names simulators, and only as strings.

``acquisition`` never imports ``simulators``; a simulator is loaded by module name when a
command (``galacto sim …``, ``galacto demo``) asks for one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Sub-commands of `galacto`, each a module exposing register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "acquisition.commands.inject",
    "acquisition.commands.demo",
    "acquisition.commands.worklist",
    "simulators.commands",
)


def simulator(name: str) -> ModuleType:
    """Load a simulator module by name (``"injector"``, ``"unit"``, ``"ris"``, ``"pacs"``)."""
    return importlib.import_module(f"simulators.{name}")
