"""`galacto sim …`: run one simulator as a real peer until SIGINT/SIGTERM.

Each simulator module named in ``SIMULATOR_COMMANDS`` exposes ``register(sim_subparsers)``.
A simulator prints one JSON line describing its endpoint(s) as soon as it is ready.
"""

from __future__ import annotations

import importlib
import signal
import threading
from typing import Any

SIMULATOR_COMMANDS: tuple[str, ...] = (
    "simulators.injector_cli",
    "simulators.unit_cli",
    "simulators.ris_cli",
    "simulators.pacs_cli",
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="run a simulated peer (injector, unit, RIS, PACS)")
    sim = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    for name in SIMULATOR_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # that simulator is not built yet
        module.register(sim)


def wait_for_termination() -> None:
    """Block until SIGINT or SIGTERM (the simulators' serve-forever loop)."""
    stop = threading.Event()

    def _handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(3600):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
