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
from typing import Any

from simulators.dicom_peer import SimulatedPeer

SIMULATOR_COMMANDS: tuple[str, ...] = (
    "simulators.injector_cli",
    "simulators.unit_cli",
    "simulators.ris_cli",
    "simulators.pacs_cli",
)


#: PS3.5 §6.2: AE is 1-16 characters, no backslash or control characters.
_AE_MAX = 16

# -- argument types shared by the simulators' command lines ----------------------------


def ae_title_arg(text: str) -> str:
    """An Application Entity title (PS3.5 §6.2, VR AE)."""
    value = text.strip()
    if not value or len(value) > _AE_MAX or "\\" in value or not value.isprintable():
        raise argparse.ArgumentTypeError(f"not a valid AE title (1-16 characters): {text!r}")
    return value


def port_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from exc
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("sim", help="run a simulated peer (injector, unit, RIS, PACS)")
    sim = parser.add_subparsers(dest="simulator", metavar="SIMULATOR", required=True)
    for name in SIMULATOR_COMMANDS:
        importlib.import_module(name).register(sim)


def serve_peer(peer: SimulatedPeer, host: str, port: int, **extra: object) -> int:
    """Start a simulated DICOM peer, print its endpoint as one JSON line, serve until
    SIGINT/SIGTERM, stop it. Exit 0, or 2 when the port cannot be bound."""
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
        wait_for_termination()
    finally:
        peer.stop()
    return 0


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
