"""`galacto journal verify [--witness FILE]` and `galacto journal list [--exam ACCESSION] [--json]`.

``list`` prints the journal for an auditor: each entry's number, time, kind, exam, who (the
console account, the OS user of a command line, or "no session" for a STOP without a login),
the client address and session of a console request, and its fields. ``--exam ACCESSION``
keeps the entries of that order's exams (``ACCESSION``, ``ACCESSION-2``…), and the commands
that opened them; ``--json`` prints one JSON object per entry and line.

``verify`` checks the exam journal's hash chain.

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
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, add_database_option, database_config
from acquisition.journal import Head, missing_heads, verify_connection
from storage import DatabaseOpenError, open_read_only

EXIT_TAMPERED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("journal", help="audit the exam journal")
    sub = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="verify the hash chain; name the first bad entry")
    add_database_option(verify)
    verify.add_argument(
        "--witness",
        metavar="FILE",
        help="check that every head written to this witness file (site.journal_witness) is "
        "still in the journal",
    )
    verify.set_defaults(func=run_verify)
    listing = sub.add_parser("list", help="the entries, with who, from where and what")
    add_database_option(listing)
    listing.add_argument("--exam", metavar="ACCESSION", help="the entries of one order's exams")
    listing.add_argument("--json", action="store_true", help="one JSON object per entry and line")
    listing.set_defaults(func=run_list)


def _exam_condition(accession: str) -> tuple[str, list[str]]:
    """The entries of an order's exams: its exam IDs, and the commands that opened them."""
    pattern = accession.replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
    return (
        "(exam_id = ? OR exam_id GLOB ? OR json_extract(payload_json, '$.exam_id') = ? "
        "OR json_extract(payload_json, '$.exam_id') GLOB ?)",
        [accession, f"{pattern}-[0-9]*", accession, f"{pattern}-[0-9]*"],
    )


def entry_json(row: sqlite3.Row) -> dict[str, Any]:
    """One entry as ``journal list --json`` prints it."""
    payload = json.loads(row["payload_json"])
    console = payload.get("console") if isinstance(payload.get("console"), dict) else {}
    return {
        "seq": row["seq"],
        "recorded_utc": row["recorded_utc"],
        "kind": row["kind"],
        "exam_id": row["exam_id"],
        "user": row["operator"],
        "client": console.get("client", payload.get("client")),
        "session": console.get("session", payload.get("session")),
        "payload": payload,
    }


def _summary(payload: dict[str, Any]) -> str:
    shown = {k: v for k, v in payload.items() if k not in ("console", "client", "session")}
    text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
    return text if len(text) <= 160 else text[:159] + "…"


def run_list(args: argparse.Namespace) -> int:
    config = database_config(args)
    where, params = _exam_condition(args.exam) if args.exam else ("1", [])
    try:
        with open_read_only(config.database.path) as db:
            if not db.has_table("journal"):
                print(f"galacto journal: {config.database.path} holds no journal", file=sys.stderr)
                return EXIT_USAGE
            rows = db.connection.execute(
                f"SELECT * FROM journal WHERE {where} ORDER BY seq", params
            )
            for row in rows:
                entry = entry_json(row)
                if args.json:
                    print(json.dumps(entry, ensure_ascii=False))
                    continue
                print(
                    f"{entry['seq']:>6} {entry['recorded_utc'][:23]} {entry['kind']:<24} "
                    f"{entry['exam_id'] or '-':<16} {entry['user'] or '-':<16} "
                    f"{entry['client'] or '-':<15} {entry['session'] or '-':<16} "
                    f"{_summary(entry['payload'])}"
                )
    except (DatabaseOpenError, sqlite3.Error) as exc:
        print(f"galacto journal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `| head`
        return EXIT_OK
    return EXIT_OK


def read_witness(path: Path) -> list[Head]:
    """The heads of a witness file, oldest first (OSError, ValueError when unreadable)."""
    text = path.read_text(encoding="utf-8")
    return [Head.parse(line) for line in text.splitlines() if line.strip()]


def run_verify(args: argparse.Namespace) -> int:
    config = database_config(args)
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
