"""``galacto sim ris``: serve the simulated RIS (MWL + MPPS SCP) until SIGINT/SIGTERM.

Prints exactly one JSON line ``{"host": ..., "port": ..., "ae_title": ..., "orders": N}`` on
stdout as soon as the server listens (worklist and MPPS share the endpoint), then serves.
Exit 0 on a signal, 2 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from simulators.commands import (
    add_listen_arguments,
    ae_title_arg,
    non_negative_float,
    parsed,
    serve_peer,
)
from simulators.ris import RisFaults, SimulatedRis

log = logging.getLogger(__name__)


def _order_count(text: str) -> int:
    value = parsed(text, int, "an integer")
    if not 0 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1000000, got {value}")
    return value


def register(sim_subparsers: Any) -> None:
    parser = sim_subparsers.add_parser(
        "ris",
        help="simulated RIS: worklist of demo galactography orders + MPPS SCP",
        description=(
            "Serve a simulated RIS (Modality Worklist SCP with today's demo galactography "
            "orders, MPPS SCP enforcing PS3.4 Annex F) until SIGINT/SIGTERM. Prints one JSON "
            'line {"host": ..., "port": ..., "ae_title": ...} when ready.'
        ),
    )
    parser.add_argument(
        "--orders",
        type=_order_count,
        default=10,
        metavar="N",
        help="scheduled galactography orders for today to preload (default 10)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the order generator")
    add_listen_arguments(parser, ae_title="RIS")
    parser.add_argument(
        "--station-ae",
        type=ae_title_arg,
        default="GALACTO",
        metavar="AE",
        help="Scheduled Station AE Title of the orders",
    )
    parser.add_argument(
        "--find-delay-s",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="fault: pause before each worklist response",
    )
    parser.add_argument(
        "--mpps-delay-s",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="fault: pause before answering each MPPS N-CREATE/N-SET",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    faults = RisFaults(find_response_delay_s=args.find_delay_s, mpps_delay_s=args.mpps_delay_s)
    ris = SimulatedRis(
        ae_title=args.ae_title,
        seed=args.seed,
        orders=args.orders,
        station_ae=args.station_ae,
        faults=faults,
    )
    return serve_peer(ris, args.host, args.port, orders=args.orders)
