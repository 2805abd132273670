"""`galacto journal verify [--witness FILE]`: check the exam journal's hash chain.

The database is opened read-only (:func:`storage.open_read_only`: an audit changes nothing, and
a database on read-only media is read too). Exit codes:

- 0 every entry follows from the one before, the head agrees (and is sealed with the site key,
  when one is set) and, with ``--witness``, every head written to the witness file is in the
  journal;
- 1 the first bad entry is named (altered, deleted, reordered, the tail removed), or a witnessed
  head is missing — printed as ``seq hash time``: the database was restored from an older copy
  or rewritten;
- 2 the database or the witness file cannot be opened or read (the file and setting named).

Entries written before a key rotation are verified under ``site.journal_previous_keys``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, load_config
from acquisition.journal import Head, missing_heads, verify_connection
from storage import DatabaseOpenError, open_read_only

EXIT_TAMPERED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("journal", help="audit the exam journal")
    sub = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="verify the hash chain; name the first bad entry")
    verify.add_argument("--database", metavar="PATH", help="database (default: database.path)")
    verify.add_argument(
        "--witness",
        metavar="FILE",
        help="check that every head written to this witness file (site.journal_witness) is "
        "still in the journal",
    )
    verify.set_defaults(func=run_verify)


def read_witness(path: Path) -> list[Head]:
    """The heads of a witness file, oldest first (OSError, ValueError when unreadable)."""
    text = path.read_text(encoding="utf-8")
    return [Head.parse(line) for line in text.splitlines() if line.strip()]


def run_verify(args: argparse.Namespace) -> int:
    config = load_config(args, **{"database.path": args.database})
    key = config.site.journal_key.encode() or None
    previous = [k.encode() for k in config.site.journal_previous_keys]
    heads: list[Head] = []
    if args.witness:
        try:
            heads = read_witness(Path(args.witness))
        except (OSError, ValueError) as exc:
            print(
                f"galacto journal: cannot read the witness {args.witness}: {exc}", file=sys.stderr
            )
            return EXIT_USAGE
    try:
        with open_read_only(config.database.path) as db:
            if not db.has_table("journal"):
                print(f"galacto journal: {config.database.path} holds no journal", file=sys.stderr)
                return EXIT_USAGE
            result = verify_connection(db.connection, key, previous)
            missing = missing_heads(db.connection, heads)
    except (DatabaseOpenError, sqlite3.Error) as exc:
        print(f"galacto journal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not result.ok:
        print(f"journal NOT intact: first bad entry {result.first_bad_seq}: {result.reason}")
        return EXIT_TAMPERED
    if missing is not None:
        print(
            "journal NOT intact: a witnessed head is missing (the database was restored from an "
            "older copy, or rewritten); first missing head:"
        )
        print(missing.line())
        return EXIT_TAMPERED
    witnessed = f", {len(heads)} witnessed head(s) present" if args.witness else ""
    print(f"journal intact: {result.entries} entries, chain and head agree{witnessed}")
    return EXIT_OK
