"""`galacto quarantine list|accept`: objects refused because their SOP Instance UID was reused.

When the unit sends a different object under a SOP Instance UID already stored, the Storage SCP
refuses it (C010H), keeps the first version and its exposure, and holds the refused object in
quarantine (``<storage_dir>/quarantine/``; docs/conformance-statement.md). The technologist's
console shows that objects are held until a person decides.

``list`` (read-only: the database is opened the audit way) shows every held and decided item.
``accept ID --reason TEXT`` records the decision that the held object is a real object of its
own (e.g. a second exposure the unit mislabelled): its exposure(s) are logged in the dose log as
exposure(s) of their own — not linked to the reused UID, flagged for review with the item and
the reason — and the decision is journaled (``quarantine-accepted``). The held file stays in
quarantine: the PACS holds another object under its UID, so it is never forwarded. Exit codes:
0 done; 2 a bad ID, an item already decided, or a database that cannot be opened.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, add_database_option, database_config
from acquisition.dose_log import DoseLog
from acquisition.journal import Journal
from dicom_nodes.unit_facing.received_objects import (
    HELD,
    QuarantineItem,
    ReceivedObjects,
    list_quarantine,
)
from storage import open_read_only


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("quarantine", help="objects refused for a reused SOP UID")
    sub = parser.add_subparsers(dest="quarantine_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="held and decided objects")
    add_database_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(func=run_list)
    accept = sub.add_parser("accept", help="accept a held object as an object of its own")
    accept.add_argument("id", type=int, metavar="ID", help="the item, from `quarantine list`")
    accept.add_argument("--reason", required=True, help="why (journaled)")
    accept.add_argument("--operator", default=None, help="who decides (default: the login name)")
    add_database_option(accept)
    accept.set_defaults(func=run_accept)


def _row(item: QuarantineItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "state": item.state,
        "received_at": item.received_at,
        "calling_ae": item.calling_ae,
        "sop_instance_uid": item.sop_instance_uid,
        "reason": item.reason,
        "exposures": len(item.exposures),
        "decided_by": item.decided_by,
        "decision_reason": item.decision_reason,
    }


def run_list(args: argparse.Namespace) -> int:
    config = database_config(args)
    with open_read_only(config.database.path) as db:
        items = list_quarantine(db.connection) if db.has_table("quarantine") else []
    rows = [_row(item) for item in items]
    if args.json:
        print(json.dumps({"items": rows}, indent=1))
        return EXIT_OK
    for row in rows:
        decided = f" — accepted by {row['decided_by']}: {row['decision_reason']}"
        print(
            f"{row['id']:>4}  {row['state']:<8}  {row['received_at']}  from {row['calling_ae']}  "
            f"{row['sop_instance_uid']}  {row['reason']}  ({row['exposures']} exposure(s))"
            f"{decided if row['state'] != HELD else ''}"
        )
    held = sum(1 for row in rows if row["state"] == HELD)
    print(f"{len(rows)} item(s), {held} held", file=sys.stderr)
    return EXIT_OK


def run_accept(args: argparse.Namespace) -> int:
    config = database_config(args)
    operator = (args.operator or getpass.getuser()).strip()
    reason = args.reason.strip()
    if not reason:
        print("galacto quarantine: --reason must say why", file=sys.stderr)
        return EXIT_USAGE
    key = config.site.journal_key.encode() or None
    path = config.database.path
    objects = ReceivedObjects(path, busy_timeout_s=config.database.busy_timeout_s)
    item = objects.item(args.id)
    if item is None or item.state != HELD:
        state = "no such item" if item is None else f"already {item.state}"
        print(f"galacto quarantine: item {args.id}: {state}", file=sys.stderr)
        return EXIT_USAGE
    with Journal(path, key=key) as journal:
        if not journal.key_matches():
            print(
                "galacto quarantine: site.journal_key is not the key the journal is sealed with",
                file=sys.stderr,
            )
            return EXIT_USAGE
        note = f"accepted from quarantine item {item.id} (SOP Instance UID reused): {reason}"
        records = [
            record.with_values(sop_instance_uid=None, review_reasons=(*record.review_reasons, note))
            for record in item.records()
        ]
        with DoseLog(path) as dose_log:
            dose_log.record(records)
        try:
            objects.accept(item.id, operator, reason)
        except (KeyError, ValueError) as exc:
            print(f"galacto quarantine: item {args.id}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        journal.append(
            "quarantine-accepted",
            {
                "quarantine_id": item.id,
                "sop_instance_uid": item.sop_instance_uid,
                "exposures_logged": len(records),
                "reason": reason,
            },
            operator=operator,
        )
    print(f"quarantine item {item.id} accepted: {len(records)} exposure(s) logged for review")
    return EXIT_OK
