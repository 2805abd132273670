"""`galacto dose import|report`: the physicist's import of objects, and the report with plots.

``import PATH... [--database DB] [--recursive] [--station AE] [--strict]`` reads MG images and
X-Ray Radiation Dose SRs into the dose log (:mod:`acquisition.dose_audit.importer`). On a
terminal it shows a progress bar (records/s, files left), otherwise one summary line; every
unreadable or non-dose file is named with its reason. Exit codes: 0 done (bad files listed),
1 with ``--strict`` and at least one bad file, 2 bad arguments or a database error.

``report [filters] --output FILE.html|FOLDER`` writes one self-contained HTML page
(:mod:`acquisition.dose_audit.report`); a folder as ``--output`` also gets each figure as PNG
and SVG beside ``report.html``. Exit codes: 0 done, 2 bad arguments or a database error.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from acquisition.cli import EXIT_OK, EXIT_USAGE, add_database_option, database_config
from acquisition.dose_audit import (
    AuditLog,
    ExposureFilter,
    FilterError,
    add_filter_arguments,
    filter_from_args,
    lower_priority,
)
from acquisition.dose_audit.importer import ImportDatabaseError, import_paths
from acquisition.dose_log import DoseLog
from acquisition.dose_policy import dose_policy, qa_patterns, reference_levels
from acquisition.settings import Config

EXIT_BAD_FILES = 1


def register(sub: Any) -> None:
    """Add ``import`` and ``report`` to ``galacto dose``."""
    imp = sub.add_parser(
        "import",
        help="MG images and dose reports from folders into the dose log",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to read")
    add_database_option(imp, metavar="DB")
    imp.add_argument("--recursive", action="store_true", help="read the folders below too")
    imp.add_argument(
        "--station", metavar="AE", help="the AE title of the unit these objects come from"
    )
    imp.add_argument(
        "--strict", action="store_true", help="exit 1 when a file was unreadable or not dose"
    )
    imp.set_defaults(func=run_import)

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page of dose plots and tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_option(report)
    report.add_argument(
        "--output",
        metavar="FILE.html|FOLDER",
        required=True,
        help="the page; a folder (existing, or ending in /) also gets every figure as PNG/SVG",
    )
    add_filter_arguments(report)
    report.set_defaults(func=run_report)


class ProgressBar:
    """One line on a terminal, redrawn at most every 0.2 s: files done, rows/s, files left."""

    WIDTH = 30

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._last = 0.0

    def __call__(self, done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if done < total and now - self._last < 0.2:
            return
        self._last = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self._stream.write(
            f"\r[{bar}] {done}/{total} files · {rate:.0f} records/s · {total - done} files left"
        )
        if done == total:
            self._stream.write("\n")
        self._stream.flush()


def run_import(args: argparse.Namespace) -> int:
    config = database_config(args)
    lower_priority()
    progress = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    with DoseLog(Path(config.database.path), policy=dose_policy(config)) as dose_log:
        try:
            summary = import_paths(
                dose_log,
                args.paths,
                recursive=args.recursive,
                qa=qa_patterns(config),
                station_ae=args.station,
                progress=progress,
            )
        except ImportDatabaseError as exc:
            print(f"galacto dose import: the dose log cannot be written: {exc}", file=sys.stderr)
            return EXIT_USAGE
    for title, entries in (("skipped", summary.skipped), ("bad", summary.bad)):
        if entries:
            print(f"{title} ({len(entries)}):", file=sys.stderr)
            for path, reason in entries:
                print(f"  {path}: {reason}", file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    if args.strict and summary.bad:
        return EXIT_BAD_FILES
    return EXIT_OK


def start_audit(args: argparse.Namespace) -> tuple[AuditLog, ExposureFilter, Config] | int:
    """What every read-only audit command starts with: its filter, the database opened
    read-only (a :class:`~storage.DatabaseOpenError` propagates: the CLI names the file, exit
    2), its configuration, and a lowered priority; or the exit code of a bad argument."""
    try:
        flt = filter_from_args(args)
    except FilterError as exc:
        print(f"galacto dose: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = database_config(args)
    path = Path(config.database.path)
    if not path.exists():
        print(f"galacto dose: no database at {path}", file=sys.stderr)
        return EXIT_USAGE
    log = AuditLog(path)
    lower_priority()
    return log, flt, config


def run_report(args: argparse.Namespace) -> int:
    from acquisition.dose_audit.report import write_report  # matplotlib: only when reporting

    started = start_audit(args)
    if isinstance(started, int):
        return started
    log, flt, config = started
    levels = reference_levels(config)
    with log:
        written = write_report(log, flt, args.output, levels)
    extra = f" and {len(written.figure_files)} figure file(s)" if written.figure_files else ""
    print(
        f"galacto dose report: {written.page}{extra}: {written.data.overview.exposures} "
        f"exposure(s), {written.elapsed_s:.1f} s",
        file=sys.stderr,
    )
    return EXIT_OK
