"""`galacto dose list|export`: the per-exposure dose log for technologists and physicists.

``list`` prints the logged exposures (one exam with ``--exam ACCESSION``) and, for one exam,
the accumulated reported AGD per breast. ``export`` writes every exposure as CSV or JSON with
the log's own column names (units in the names, TID 10003 traceable). Exports are pseudonymised
by default (dose.md §6): the accession, the SPS ID (it carries the accession) and every UID
become HMAC-SHA256 pseudonyms under ``site.pseudonym_secret``, or are left out when no secret
is set; ``--identified`` keeps them. The log holds no patient name or birth date.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import hmac
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, load_config
from acquisition.commands import dose_checks
from acquisition.dose_log import DoseLog
from dose.totals import per_breast_totals
from storage.files import open_private

#: Columns that identify the patient or link to their records (PS3.15 Basic Profile replaces
#: UIDs too): the SPS ID carries the accession, and a UID finds the images in any PACS.
IDENTIFYING_COLUMNS = (
    "accession",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "irradiation_event_uid",
    "mpps_instance_uid",
    "sps_id",
)

#: Columns of `dose list` (the export has them all).
LIST_COLUMNS = (
    ("id", "id", "{}"),
    ("accession", "accession", "{}"),
    ("phase", "phase", "{}"),
    ("side", "laterality", "{}"),
    ("view", "view_code", "{}"),
    ("kV", "kvp", "{:.0f}"),
    ("mAs", "exposure_uas", "{:.1f}"),
    ("target/filter", None, "{}"),
    ("thick mm", "compressed_thickness_mm", "{:.0f}"),
    ("AGD mGy", "agd_reported_mgy", "{:.3f}"),
    ("Dance mGy", "agd_computed_mgy", "{:.3f}"),
    ("sources", "sources", "{}"),
    ("flags", None, "{}"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dose", help="the per-exposure dose log: list, export, alerts; the MGD calculator"
    )
    sub = parser.add_subparsers(dest="dose_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the logged exposures, one exam or all")
    listing.add_argument("--database", metavar="PATH", help="database (default: database.path)")
    listing.add_argument("--exam", metavar="ACCESSION", help="only this exam")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    listing.set_defaults(func=run_list)
    export = sub.add_parser("export", help="every exposure as CSV or JSON, pseudonymised")
    export.add_argument("--database", metavar="PATH", help="database (default: database.path)")
    export.add_argument("--format", choices=("csv", "json"), required=True)
    export.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    export.add_argument(
        "--identified", action="store_true", help="keep the accession, SPS ID and UIDs as they are"
    )
    export.set_defaults(func=run_export)
    dose_checks.register(sub)


def _open(args: argparse.Namespace) -> tuple[DoseLog | None, str]:
    config = load_config(args, **{"database.path": args.database})
    path = Path(config.database.path)
    if not path.exists():
        print(f"galacto dose: no database at {path}", file=sys.stderr)
        return None, ""
    return DoseLog(path, read_only=True), config.site.pseudonym_secret


def _mas(row: dict[str, Any]) -> float | None:
    uas = row.get("exposure_uas")
    return None if uas is None else uas / 1000.0


def _cell(row: dict[str, Any], header: str, column: str | None, fmt: str) -> str:
    if header == "target/filter":
        return f"{row.get('anode') or '?'}/{row.get('filter_material') or '?'}"
    if header == "flags":
        flags = ["unknown-step"] if row.get("unknown_step") else []
        if row.get("review_reasons"):
            flags.append("review")
        if row.get("plausibility"):
            flags.append("implausible")
        if row.get("dance_check") in ("disagrees", "unit suspected"):
            flags.append(str(row["dance_check"]).replace(" ", "-"))
        if row.get("qa_reason"):
            flags.append("qa")
        if row.get("alert_flags"):
            flags.append("alert")
        return ",".join(flags)
    value = _mas(row) if column == "exposure_uas" else row.get(column or "")
    if value is None or value == "":
        return "—"
    return fmt.format(value)


def run_list(args: argparse.Namespace) -> int:
    log, _ = _open(args)
    if log is None:
        return EXIT_USAGE
    with log:
        rows = log.list_exposures(args.exam)
    totals = per_breast_totals(rows) if args.exam else None
    if args.json:
        doc: dict[str, Any] = {"exposures": rows}
        if totals is not None:
            doc["agd_total_mgy"] = totals.agd_mgy
            doc["agd_total"] = totals.as_json()
        print(json.dumps(doc, indent=1, default=str))
        return EXIT_OK
    table = [[h for h, _, _ in LIST_COLUMNS]]
    table += [[_cell(row, h, c, f) for h, c, f in LIST_COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(LIST_COLUMNS))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(f"{len(rows)} exposure(s)", file=sys.stderr)
    if totals is not None:
        for side, total in totals.breasts.items():
            print(f"accumulated reported AGD, {side}: {total.describe()}")
        if totals.without_laterality:
            print(f"{totals.without_laterality} exposure(s) without a breast laterality")
    return EXIT_OK


def pseudonymise(rows: Iterable[dict[str, Any]], secret: str) -> list[dict[str, Any]]:
    """Replace identifying columns by HMAC-SHA256 pseudonyms, or drop them without a secret."""
    out = []
    for original in rows:
        row = dict(original)
        for column in IDENTIFYING_COLUMNS:
            value = row.get(column)
            if value is None:
                continue
            if secret:
                digest = hmac.new(secret.encode(), str(value).encode(), hashlib.sha256)
                row[column] = digest.hexdigest()[:32]
            else:
                row[column] = None
        out.append(row)
    return out


def run_export(args: argparse.Namespace) -> int:
    log, secret = _open(args)
    if log is None:
        return EXIT_USAGE
    with log:
        rows = log.list_exposures()
        columns = log.columns()
    if not args.identified:
        rows = pseudonymise(rows, secret)
        if not secret:
            print(
                "galacto dose: no site.pseudonym_secret: accession, SPS ID and UIDs left out",
                file=sys.stderr,
            )
    with contextlib.ExitStack() as stack:
        stream = (  # an export holds patient-related data: 0600
            stack.enter_context(open_private(args.output, "w", newline="", encoding="utf-8"))
            if args.output
            else sys.stdout
        )
        if args.format == "json":
            json.dump(rows, stream, indent=1, default=str)
            stream.write("\n")
        else:
            writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    print(f"{len(rows)} exposure(s) exported", file=sys.stderr)
    return EXIT_OK
