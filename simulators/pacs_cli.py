"""``galacto sim pacs``: serve the simulated PACS (Storage + Storage Commitment) until a signal.

Prints exactly one JSON line ``{"host": ..., "port": ..., "ae_title": ...}`` on stdout as soon
as the server listens, then serves. Exit 0 on SIGINT/SIGTERM, 2 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from simulators.commands import (
    add_listen_arguments,
    ae_title_arg,
    non_negative_float,
    port_arg,
    serve_peer,
)
from simulators.pacs import PacsFaults, Refusal, SimulatedPacs


def commitment_target_arg(text: str) -> tuple[str, int, str]:
    """``HOST:PORT:AE`` → ``(host, port, ae)``."""
    host, sep1, rest = text.rpartition(":")
    host, sep2, port = host.rpartition(":")
    if not (sep1 and sep2 and host):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT:AE, got {text!r}")
    number = port_arg(port)
    if number == 0:
        raise argparse.ArgumentTypeError("the commitment target needs a real port")
    return host, number, ae_title_arg(rest)


def register(sim_subparsers: Any) -> None:
    parser = sim_subparsers.add_parser(
        "pacs",
        help="simulated PACS: Storage SCP + Storage Commitment SCP",
        description=(
            "Serve a simulated PACS (Storage of MG images and SRs, Storage Commitment Push "
            "Model) until SIGINT/SIGTERM. Prints one JSON line "
            '{"host": ..., "port": ..., "ae_title": ...} when ready.'
        ),
    )
    add_listen_arguments(parser, ae_title="PACS")
    parser.add_argument("--seed", type=int, default=0, help="seed (which commitments fail)")
    parser.add_argument(
        "--storage-dir",
        type=Path,
        metavar="DIR",
        help="keep received objects as DIR/<SOP Instance UID>.dcm (default: in memory)",
    )
    parser.add_argument(
        "--commitment-delay-s",
        type=non_negative_float,
        default=0.0,
        metavar="S",
        help="wait S seconds before sending each commitment result",
    )
    parser.add_argument(
        "--refuse",
        nargs="?",
        const=Refusal.STORAGE.value,
        default=Refusal.NONE.value,
        choices=[r.value for r in Refusal],
        help="fault: 'storage' (the default when given alone) answers every C-STORE A700; "
        "'commitment' fails every commitment item; 'commitment-some' a seeded half",
    )
    parser.add_argument(
        "--drop-stores",
        type=int,
        default=0,
        metavar="N",
        help="fault: abort the association in the middle of the next N C-STOREs",
    )
    parser.add_argument(
        "--commitment-target",
        type=commitment_target_arg,
        metavar="HOST:PORT:AE",
        help="send commitment results on a new association to this listener "
        "(default: on the requester's association)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    faults = PacsFaults(
        delay_commitment_s=args.commitment_delay_s,
        refuse=Refusal(args.refuse),
        drop_stores=max(0, args.drop_stores),
    )
    pacs = SimulatedPacs(
        ae_title=args.ae_title,
        seed=args.seed,
        storage_dir=args.storage_dir,
        commitment_target=args.commitment_target,
        faults=faults,
    )
    return serve_peer(pacs, args.host, args.port)
