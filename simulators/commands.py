"""`galacto sim …`: run one simulator as a real peer until SIGINT/SIGTERM.

Each simulator module named in ``SIMULATOR_COMMANDS`` exposes ``register(sim_subparsers)``.
A simulator prints one JSON line describing its endpoint(s) as soon as it is ready.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from simulators.dicom_peer import SimulatedPeer

SIMULATOR_COMMANDS: tuple[str, ...] = (
    "simulators.injector_cli",
    "simulators.unit_cli",
    "simulators.ris_cli",
    "simulators.pacs_cli",
)


#: PS3.5 §6.2: AE is 1-16 characters, no backslash or control characters.
_AE_MAX = 16

_Number = TypeVar("_Number", int, float)

# -- argument types shared by the simulators' command lines ----------------------------


def ae_title_arg(text: str) -> str:
    """An Application Entity title (PS3.5 §6.2, VR AE)."""
    value = text.strip()
    if not value or len(value) > _AE_MAX or "\\" in value or not value.isprintable():
        raise argparse.ArgumentTypeError(f"not a valid AE title (1-16 characters): {text!r}")
    return value


def parsed(text: str, parse: Callable[[str], _Number], noun: str) -> _Number:
    """``parse(text)``, or the argparse error ``not <noun>: '<text>'``."""
    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from exc


def port_arg(text: str) -> int:
    value = parsed(text, int, "a port number")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def non_negative_float(text: str) -> float:
    value = parsed(text, float, "a number")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def add_listen_arguments(parser: argparse.ArgumentParser, *, ae_title: str) -> None:
    """``--ae-title``, ``--host`` and ``--port`` of a simulated DICOM peer (see
    :func:`serve_peer`)."""
    parser.add_argument("--ae-title", type=ae_title_arg, default=ae_title, metavar="AE")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=port_arg, default=0, help="port (0 picks a free one)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="run a simulated peer (injector, unit, RIS, PACS)")
    sim = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    for name in SIMULATOR_COMMANDS:
        importlib.import_module(name).register(sim)


def serve_peer(peer: SimulatedPeer, host: str, port: int, **extra: object) -> int:
    """Start a simulated DICOM peer, print its endpoint as one JSON line, serve until
    SIGINT/SIGTERM, stop it. Exit 0, or 2 when the port cannot be bound."""
    termination = Termination()
    try:
        bound_host, bound_port = peer.start(host, port)
    except OSError as exc:
        sys.stderr.write(
            f"galacto sim {peer.kind.lower()}: cannot listen on {host}:{port}: {exc}\n"
        )
        return 2
    try:
        endpoint = {"host": bound_host, "port": bound_port, "ae_title": peer.ae_title, **extra}
        sys.stdout.write(json.dumps(endpoint) + "\n")
        sys.stdout.flush()
        termination.wait()
    finally:
        peer.stop()
    return 0


class Termination:
    """SIGINT and SIGTERM, caught from construction on — before the ready line, so that a
    signal right after it is a clean stop: :meth:`wait` returns once one came (the simulators'
    serve-forever loop).

    The wait wakes every 0.2 s: a signal the kernel gives to a worker thread runs its Python
    handler only when the main thread executes bytecode again. The same as
    ``acquisition.cli.Termination``, which the simulators may not import."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.requested.set())

    def wait(self) -> None:
        while not self.requested.wait(0.2):
            pass
