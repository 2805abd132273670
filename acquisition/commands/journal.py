"""`galacto journal verify`: check the exam journal's hash chain.

Exit 0 when every entry follows from the one before and the head agrees; exit 1 naming the
first bad entry when any row was altered, deleted or reordered (or the tail removed); exit 2
when the database cannot be read.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, load_config
from acquisition.journal import verify_connection

EXIT_TAMPERED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("journal", help="audit the exam journal")
    sub = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="verify the hash chain; name the first bad entry")
    verify.add_argument("--database", metavar="PATH", help="database (default: database.path)")
    verify.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    config = load_config(args, **{"database.path": args.database})
    path = Path(config.database.path)
    if not path.exists():
        print(f"galacto journal: no database at {path}", file=sys.stderr)
        return EXIT_USAGE
    key = config.site.journal_key.encode() or None
    try:
        # Read-only: an audit must not change what it audits (no migration, no write).
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            if not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'"
            ).fetchone():
                print(f"galacto journal: {path} holds no journal", file=sys.stderr)
                return EXIT_USAGE
            result = verify_connection(conn, key)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        print(f"galacto journal: cannot read {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if result.ok:
        print(f"journal intact: {result.entries} entries, chain and head agree")
        return EXIT_OK
    print(f"journal NOT intact: first bad entry {result.first_bad_seq}: {result.reason}")
    return EXIT_TAMPERED
