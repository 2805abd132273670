"""``galacto sim injector``: serve the simulated injector until SIGINT/SIGTERM.

Prints exactly one JSON line ``{"url": "..."}`` on stdout as soon as the port is ready (a pty path,
or ``socket://127.0.0.1:PORT``), then serves. Exit 0 on a signal, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from simulators.commands import Termination, parsed
from simulators.injector import InjectorSimulator
from simulators.injector_faults import FaultSpec, FaultSyntaxError, parse_fault
from simulators.injector_physics import SYRINGES, SimParams

EXIT_OK = 0
EXIT_USAGE = 2

_LISTEN = re.compile(r"socket://(?P<host>[^:/]+):(?P<port>\d{1,5})")
_RANDOM = re.compile(r"random:(?P<count>\d{1,4})")


def _fault_arg(text: str) -> FaultSpec | int:
    """``NAME[@WHEN]`` → FaultSpec; ``random:N`` → N (a count of seeded random faults)."""
    m = _RANDOM.fullmatch(text)
    if m:
        return int(m["count"])
    try:
        return parse_fault(text)
    except FaultSyntaxError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _listen_arg(text: str) -> tuple[str, int]:
    m = _LISTEN.fullmatch(text)
    if m is None or int(m["port"]) > 65535:
        raise argparse.ArgumentTypeError(f"expected socket://HOST:PORT, got {text!r}")
    return m["host"], int(m["port"])


def _time_scale_arg(text: str) -> float:
    value = parsed(text, float, "a number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def register(sim_subparsers: Any) -> None:
    parser = sim_subparsers.add_parser(
        "injector",
        help="simulated New Era contrast injector on a pty or socket://",
        description=(
            "Serve a simulated NE-1000 injector (with galacto extensions) until SIGINT/SIGTERM. "
            'Prints one JSON line {"url": ...} when ready.'
        ),
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal (default)")
    where.add_argument(
        "--listen",
        metavar="socket://HOST:PORT",
        type=_listen_arg,
        help="serve on TCP instead (port 0 picks a free port)",
    )
    parser.add_argument(
        "--pty-link",
        metavar="PATH",
        help="with --pty: keep a symlink PATH to the current pty (stable across port_vanish); "
        "the JSON url is then PATH",
    )
    parser.add_argument(
        "--fault",
        metavar="NAME[@WHEN]",
        type=_fault_arg,
        action="append",
        default=[],
        help="inject a fault: NAME, NAME@t=S, NAME@after=N, NAME@volume=ML, or random:N "
        "(repeatable; see docs/injector-simulator.md)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random generator")
    parser.add_argument(
        "--time-scale",
        type=_time_scale_arg,
        default=1.0,
        help="simulated seconds per real second (physics, arm and hold timeouts)",
    )
    parser.add_argument(
        "--plain", action="store_true", help="behave as a plain New Era pump (no X commands)"
    )
    parser.add_argument("--syringe", choices=sorted(SYRINGES), default="1ml")
    parser.add_argument(
        "--random-within-s",
        type=_time_scale_arg,
        default=30.0,
        help="simulated window of the random:N fault schedule",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.listen and args.pty_link:
        sys.stderr.write("galacto sim injector: --pty-link needs --pty, not --listen\n")
        return EXIT_USAGE
    faults = [f for f in args.fault if isinstance(f, FaultSpec)]
    random_count = sum(f for f in args.fault if isinstance(f, int))
    sim = InjectorSimulator(
        SimParams(syringe=args.syringe),
        seed=args.seed,
        time_scale=args.time_scale,
        plain=args.plain,
    )
    termination = Termination()
    try:
        url = sim.serve_socket(*args.listen) if args.listen else sim.serve_pty(args.pty_link)
        for spec in faults:
            sim.add_fault(spec)
        if random_count:
            sim.add_random_faults(random_count, within_s=args.random_within_s)
        sys.stdout.write(json.dumps({"url": url}) + "\n")
        sys.stdout.flush()
        termination.wait()
    except OSError as exc:
        sys.stderr.write(f"galacto sim injector: {exc}\n")
        return EXIT_USAGE
    finally:
        sim.close()
    return EXIT_OK
