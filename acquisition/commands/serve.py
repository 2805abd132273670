"""`galacto serve --config FILE`: run the controller until SIGINT or SIGTERM.

Prints one JSON line with its endpoints once it is ready (the same object as ``galacto demo``),
then serves. Exit codes: 0 after a clean stop, 2 for a configuration error (named setting).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from acquisition.cli import EXIT_OK, Termination, configure_logging, load_config
from acquisition.controller import Controller


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the controller (unit-facing SCPs, RIS/PACS outbox, injector, console)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args)
    configure_logging(args.log_level or config.logging.level)
    termination = Termination()  # a signal during the start-up stops it cleanly too
    with Controller(config) as controller:
        print(json.dumps(controller.endpoints().as_json()), flush=True)
        termination.wait()
    return EXIT_OK
