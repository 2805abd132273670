"""`galacto dose list|export`: the per-exposure dose log for technologists and physicists.

Both take the physicist's filters (:mod:`acquisition.dose_audit.filters`), open the database
read-only, stream in constant memory in bounded read transactions and lower their priority
(``os.nice(10)``): a long export never starves the live controller nor holds back its WAL
checkpoints (:mod:`acquisition.dose_audit.reader`).

``list`` prints the exposures (for one exam with ``--exam ACCESSION``, also the accumulated
reported AGD per breast). ``export --format {csv,json,openrem,nhsbsp} [--output FILE]`` writes
them in the log's own columns or the layouts of OpenREM's mammography and NHSBSP exports,
pseudonymised by default (:mod:`acquisition.dose_audit.exports`; ``--identified`` keeps the
accession, SPS ID and UIDs). Exit codes: 0 done, 2 bad arguments or a database that cannot be
read. ``import`` and ``report`` are in :mod:`acquisition.commands.dose_audit`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import IO, Any

from acquisition.cli import EXIT_OK, add_database_option
from acquisition.commands import dose_audit, dose_checks
from acquisition.dose_audit import (
    FORMATS,
    AuditLog,
    ExposureFilter,
    Pseudonyms,
    add_filter_arguments,
    write_export,
)
from acquisition.dose_audit.exports import json_object_sql, stored_columns
from dose.survey import element_symbol
from dose.totals import per_breast_totals
from storage.files import open_private

#: Columns of `dose list` (the export has them all): header, column, format, width.
LIST_COLUMNS = (
    ("id", "id", "{}", 7),
    ("acquired", "acquisition_datetime", "{}", 19),
    ("unit", "station_ae", "{}", 12),
    ("accession", "accession", "{}", 14),
    ("phase", "phase", "{}", 16),
    ("side", "laterality", "{}", 4),
    ("view", None, "{}", 8),
    ("kV", "kvp", "{:.0f}", 3),
    ("mAs", "exposure_uas", "{:.1f}", 6),
    ("target/filter", None, "{}", 6),
    ("thick mm", "compressed_thickness_mm", "{:.0f}", 8),
    ("AGD mGy", "agd_reported_mgy", "{:.3f}", 7),
    ("Dance mGy", "agd_computed_mgy", "{:.3f}", 9),
    ("sources", "sources", "{}", 22),
    ("flags", None, "{}", 0),
)

#: What `dose list` reads of each row.
LIST_READS = (
    "id", "acquisition_datetime", "station_ae", "accession", "phase", "laterality", "view_name",
    "is_magnified", "kvp", "exposure_uas", "anode", "filter_material",
    "compressed_thickness_mm", "agd_reported_mgy", "agd_computed_mgy", "sources",
    "unknown_step", "review_reasons", "plausibility", "dance_check", "qa_reason", "alert_flags",
)  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dose",
        help="the per-exposure dose log: list, export, import, report, alerts; the MGD calculator",
    )
    sub = parser.add_subparsers(dest="dose_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="the logged exposures, filtered")
    add_database_option(listing)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    add_filter_arguments(listing)
    listing.set_defaults(func=run_list)
    export = sub.add_parser("export", help="the exposures as CSV, JSON, OpenREM or NHSBSP")
    add_database_option(export)
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("--output", metavar="FILE", help="write here (0600) instead of stdout")
    export.add_argument(
        "--identified", action="store_true", help="keep the accession, SPS ID and UIDs as they are"
    )
    add_filter_arguments(export)
    export.set_defaults(func=run_export)
    dose_audit.register(sub)
    dose_checks.register(sub)


def _mas(row: dict[str, Any]) -> float | None:
    uas = row.get("exposure_uas")
    return None if uas is None else uas / 1000.0


def _cell(row: dict[str, Any], header: str, column: str | None, fmt: str) -> str:
    if header == "target/filter":
        anode, filter_material = row.get("anode"), row.get("filter_material")
        return f"{element_symbol(anode) or '?'}/{element_symbol(filter_material) or '?'}"
    if header == "view":
        view = row.get("view_name") or "—"
        return f"{view} MAG" if row.get("is_magnified") else view
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


def _rows(log: AuditLog, flt: ExposureFilter, reads: Sequence[str]) -> Iterator[dict[str, Any]]:
    for page in log.pages(flt, reads):
        for row in page:
            yield dict(zip(reads, row, strict=True))


def run_list(args: argparse.Namespace) -> int:
    started = dose_audit.start_audit(args)
    if isinstance(started, int):
        return started
    log, flt, _ = started
    count = 0
    with log:
        if args.json:  # every stored column, each row's object built by SQLite
            rows = log.pages(flt, [json_object_sql(stored_columns(log))])
            sys.stdout.write('{"exposures": [\n')
            for page in rows:
                sys.stdout.write((",\n" if count else "") + ",\n".join(r[0] for r in page))
                count += len(page)
            sys.stdout.write("\n]")
        else:
            print(_line([h for h, _, _, _ in LIST_COLUMNS]))
            for row in _rows(log, flt, LIST_READS):
                print(_line([_cell(row, h, c, f) for h, c, f, _ in LIST_COLUMNS]))
                count += 1
        totals = _exam_totals(log, flt) if flt.accession else None
    if args.json:
        if totals is not None:
            print(f', "agd_total_mgy": {json.dumps(totals.agd_mgy)}', end="")
            print(f', "agd_total": {json.dumps(totals.as_json())}', end="")
        print("}")
        return EXIT_OK
    print(f"{count} exposure(s)", file=sys.stderr)
    if totals is not None:
        for side, total in totals.breasts.items():
            print(f"accumulated reported AGD, {side}: {total.describe()}")
        if totals.without_laterality:
            print(f"{totals.without_laterality} exposure(s) without a breast laterality")
    return EXIT_OK


def _line(cells: list[str]) -> str:
    widths = [w for _, _, _, w in LIST_COLUMNS]
    return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()


def _exam_totals(log: AuditLog, flt: ExposureFilter) -> Any:
    """The one per-breast total (dose.totals) of the listed exam's rows."""
    reads = ("laterality", "agd_reported_mgy", "plausibility", "qa_reason")
    rows = (dict(zip(reads, r, strict=True)) for page in log.pages(flt, reads) for r in page)
    return per_breast_totals(rows)


def run_export(args: argparse.Namespace) -> int:
    started = dose_audit.start_audit(args)
    if isinstance(started, int):
        return started
    log, flt, config = started
    names = Pseudonyms(config.site.pseudonym_secret, identified=args.identified)
    if not args.identified and not names.has_secret:
        print(
            "galacto dose: no site.pseudonym_secret: accession, SPS ID and UIDs left out; "
            "exam_key groups the rows of an exam within this export only",
            file=sys.stderr,
        )
    with log, contextlib.ExitStack() as stack:
        stream: IO[str] = (  # an export holds patient-related data: 0600
            stack.enter_context(
                open_private(args.output, "w", newline="", encoding="utf-8", buffering=1 << 20)
            )
            if args.output
            else sys.stdout
        )
        count = write_export(log, flt, args.format, stream, names)
    print(f"{count} exposure(s) exported", file=sys.stderr)
    return EXIT_OK
