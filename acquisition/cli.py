"""The ``galacto`` command line: one entry point, one sub-command per module.

Exit codes are decided here and in the command modules only: 0 success, 2 bad arguments,
bad configuration or no link, 3 an action aborted by a fault (e.g. an injection stopped).
Every command module exposes ``register(subparsers)`` and sets ``func`` on its parser.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from acquisition import wiring
from acquisition.settings import Config, ConfigError, load, parse_override
from storage import DatabaseOpenError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_ABORTED = 3

log = logging.getLogger(__name__)


def _add_common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--config, --set and --log-level, accepted before and after the sub-command."""
    parser.add_argument("--config", metavar="FILE", default=default, help="TOML configuration file")
    parser.add_argument(
        "--set",
        metavar="SECTION.NAME=VALUE",
        action="append",
        default=default,
        dest="overrides",
        help="override one setting (repeatable); see docs/configuration.md",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=default,
        help="diagnostic log level on stderr (default: logging.level)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="galacto",
        description="Galactography acquisition controller and dose logger.",
    )
    _add_common_options(parser, None)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in wiring.COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for sub in list(subparsers.choices.values()):
        # SUPPRESS: a sub-command that does not repeat an option keeps the main one; one that
        # declares --config itself refuses the first of them (a conflicting option string).
        with contextlib.suppress(argparse.ArgumentError):
            _add_common_options(sub, argparse.SUPPRESS)
    return parser


def load_config(args: argparse.Namespace, **flag_overrides: object) -> Config:
    """The effective configuration of this invocation (file, environment, --set, flags)."""
    overrides: dict[str, object] = dict(parse_override(text) for text in args.overrides or ())
    overrides.update({k: v for k, v in flag_overrides.items() if v is not None})
    return load(args.config, overrides=overrides)


def add_database_option(parser: argparse.ArgumentParser, metavar: str = "PATH") -> None:
    """``--database``: the database this command opens instead of ``database.path``
    (:func:`database_config` applies it)."""
    parser.add_argument("--database", metavar=metavar, help="database (default: database.path)")


def database_config(args: argparse.Namespace) -> Config:
    """:func:`load_config` with the ``--database`` of :func:`add_database_option` applied."""
    return load_config(args, **{"database.path": args.database})


def os_user() -> str:
    """Who runs this command, as the journal names a change made from the command line."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (a bare container)
        return f"uid {os.getuid()}"


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger().setLevel(level)  # also when logging was configured before
    # pynetdicom logs request/response identifiers (patient names) by default.
    from dicom_nodes.network import quiet_identifier_logging

    quiet_identifier_logging()


#: How often a main thread waiting for SIGINT/SIGTERM wakes to run their handler.
TERMINATION_POLL_S = 0.2


class Termination:
    """SIGINT and SIGTERM, caught from construction on: :meth:`wait` returns once one came.

    The wait wakes every :data:`TERMINATION_POLL_S` on purpose. The kernel gives a process's
    signal to any thread that does not block it; when it lands on a worker thread (the serial
    reader, an association), Python's handler runs only once the *main* thread executes
    bytecode again — which a main thread asleep in an untimed ``Event.wait()`` never does:
    `galacto serve` then ran on after a SIGTERM (seen about once in 50 stops;
    tests/integration/test_serve_cli.py sends it to a worker thread).
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.requested.set())

    def wait(self) -> None:
        while not self.requested.wait(TERMINATION_POLL_S):
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level or "WARNING")
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"galacto: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseOpenError as exc:  # names the file and the setting; no traceback
        print(f"galacto: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
