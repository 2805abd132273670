"""The per-exposure dose log: one SQLite row per irradiation event (dose.md §2, style.md §5).

Implements :class:`dose.record.ExposureSink` for the SCPs. ``record()`` returns only
after COMMIT on a WAL database with ``synchronous=FULL``, so the SCP can acknowledge the DIMSE
request knowing the row survives a power cut; any failure raises and nothing is acknowledged.

Reconciliation: the same exposure reported by the image header, the MPPS and the RDSR is one
row. A record matches a row by any SOP Instance UID of the row's images (table
``exposure_image``: For Presentation and For Processing images of one exposure share it), by
Irradiation Event UID, or by ``(mpps_instance_uid, mpps_item_index)``. When a record matches
several rows (e.g. an MPPS item that now names its image) they are merged into the oldest.
Merging fills missing fields and grows ``sources``; a value from a *new* source that differs
from the stored one is kept as stored and flagged in ``review_reasons``; a value from a source
already in ``sources`` is an update from that source and replaces the stored one. Nothing is
ever double-counted or dropped; an exposure that no source ties to a known step keeps
``unknown_step = 1``.

Writes go to the database's one writer thread (:class:`storage.writer.Database`, datasette's
pattern), shared with every other store of the file: the SCP threads hand it their batch and
wait for its COMMIT; batches queued meanwhile share the next transaction (group commit). Reads
use the calling thread's own read connection. ``bench/bench_store.py`` measures it beside the
bare commit floor, alone and with the other stores writing at the same time.

The reconciliation and the checks are the writes of :mod:`acquisition.dose_reconcile`.

Checks: every record written is checked in the same transaction (:mod:`dose.policy`:
plausibility, the independent Dance check, reference levels) and raises its alerts (table
``dose_alert``); the checks never make a write fail — a failure of theirs is recorded as a
finding of the exposure, which is committed all the same.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from acquisition.dose_reconcile import (
    ALERT_ACKNOWLEDGED,
    ALERT_OPEN,
    MATCHED_BY_TECHNIQUE,
    RECORD_COLUMNS,
    Work,
    reconcile,
    utc_now,
)
from dose.policy import DosePolicy
from dose.record import ExposureRecord, SinkWriteError
from storage.database import DatabaseOpenError, open_read_only
from storage.writer import Database, DatabaseClosed, WriteTimeout, shared

log = logging.getLogger(__name__)

migrations = sqlite_utils.Migrations("dose_log")

#: Columns written later by the exam (``annotate``), not by the SCPs.
ANNOTATION_COLUMNS: tuple[str, ...] = ("phase", "operator", "repeat_reason")

#: Columns the dose checks write with every record (:meth:`dose.policy.Assessment.columns`).
CHECK_COLUMNS: tuple[str, ...] = (
    "agd_computed_mgy",
    "dance_k_mgy",
    "dance_hvl_mm_al",
    "dance_g",
    "dance_c",
    "dance_s",
    "agd_computed_basis",
    "dance_check",
    "plausibility",
    "level_comparison",
    "alert_flags",
)


@migrations()
def m001_exposure(db: sqlite_utils.Database) -> None:
    """Per-exposure table (dose.md §2; names traceable to TID 10003) and its images."""
    db.execute(
        """CREATE TABLE exposure (
  id INTEGER PRIMARY KEY,
  sop_instance_uid TEXT,              -- first image of the exposure (all: exposure_image)
  sop_class_uid TEXT,
  irradiation_event_uid TEXT,         -- (0008,3010) / TID 10003 113769
  mpps_instance_uid TEXT,
  study_instance_uid TEXT,
  series_instance_uid TEXT,
  accession TEXT,
  sps_id TEXT,
  station_ae TEXT,
  manufacturer TEXT,
  model TEXT,
  device_serial TEXT,
  acquisition_datetime TEXT,          -- ISO 8601, as the unit gave it (no zone invented)
  laterality TEXT,                    -- R / L / B
  view_code TEXT,                     -- CID 4014 (SCT)
  view_code_scheme TEXT,
  view_modifier_codes TEXT,           -- CID 4015 codes, comma-separated
  magnification_factor REAL,
  kvp REAL,                           -- 113733
  exposure_uas REAL,                  -- 113736 (uA.s)
  tube_current_ma REAL,               -- 113734
  exposure_time_ms REAL,              -- 113824
  anode TEXT,                         -- 111632
  filter_material TEXT,               -- 113757
  filter_thickness_mm REAL,           -- 113758 / 113773
  grid TEXT,
  focal_spot_mm REAL,                 -- 113766
  compressed_thickness_mm REAL,       -- 111633
  compression_force_n REAL,           -- 111647
  hvl_mm_al REAL,                     -- 111634
  hvl_source TEXT,                    -- reported / physicist table / estimated
  esak_mgy REAL,                      -- 111636 Entrance Exposure at RP
  esak_reference_point TEXT,          -- 113780 value (113865, 113964, ...)
  agd_reported_mgy REAL,              -- 111631
  distance_source_to_detector_mm REAL,
  distance_source_to_entrance_mm REAL,
  exposure_control_mode TEXT,
  comments TEXT,
  mpps_item_index INTEGER,            -- position in the MPPS Exposure Dose Sequence
  sources TEXT NOT NULL,              -- image_header, mpps, rdsr (sorted, comma-separated)
  unknown_step INTEGER NOT NULL DEFAULT 0 CHECK (unknown_step IN (0, 1)),
  review_reasons TEXT NOT NULL DEFAULT '',  -- '; '-separated
  phase TEXT,
  operator TEXT,
  agd_computed_mgy REAL,              -- Dance: K x g x c x s
  dance_g REAL,
  dance_c REAL,
  dance_s REAL,
  agd_computed_basis TEXT,            -- which c table, HVL source, or why not computable
  repeat_reason TEXT,
  alert_flags TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
) STRICT"""
    )
    db.execute(
        "CREATE UNIQUE INDEX exposure_event ON exposure(irradiation_event_uid) "
        "WHERE irradiation_event_uid IS NOT NULL"
    )
    db.execute(
        "CREATE UNIQUE INDEX exposure_mpps_item ON exposure(mpps_instance_uid, mpps_item_index) "
        "WHERE mpps_item_index IS NOT NULL"
    )
    db.execute("CREATE INDEX exposure_accession ON exposure(accession)")
    db.execute("CREATE INDEX exposure_study ON exposure(study_instance_uid)")
    db.execute(
        """CREATE TABLE exposure_image (
  sop_instance_uid TEXT PRIMARY KEY,
  exposure_id INTEGER NOT NULL REFERENCES exposure(id) ON DELETE CASCADE
) STRICT"""
    )
    db.execute("CREATE INDEX exposure_image_exposure ON exposure_image(exposure_id)")


@migrations()
def m002_unannotated(db: sqlite_utils.Database) -> None:
    """Rows the exam has not read yet (``phase`` empty): found at once, however long the log."""
    db.execute("CREATE INDEX exposure_unannotated ON exposure(id) WHERE phase IS NULL")


@migrations()
def m003_dose_checks(db: sqlite_utils.Database) -> None:
    """Issue 9: the record's new fields, what the dose checks write, and the alerts."""
    # (meanings in docs/dose-log-schema.md)
    for column, kind in (
        ("device_uid", "TEXT"),
        ("acquisition_protocol", "TEXT"),
        ("patient_age_years", "INTEGER"),
        ("glandularity_pct", "REAL"),
        ("qa_reason", "TEXT"),
        ("plausibility", "TEXT NOT NULL DEFAULT ''"),
        ("dance_k_mgy", "REAL"),
        ("dance_hvl_mm_al", "REAL"),
        ("dance_check", "TEXT"),
        ("level_comparison", "TEXT"),
    ):
        db.execute(f"ALTER TABLE exposure ADD COLUMN {column} {kind}")
    db.execute(
        """CREATE TABLE dose_alert (
  id INTEGER PRIMARY KEY,
  scope TEXT NOT NULL CHECK (scope IN ('exposure', 'exam-breast')),
  exposure_id INTEGER NOT NULL,       -- the exposure that raised it (crossed the level)
  sop_instance_uid TEXT,              -- that exposure's image
  study_instance_uid TEXT,
  laterality TEXT,
  level_id TEXT NOT NULL,             -- 'implausible' or the reference level's id
  level_name TEXT NOT NULL,
  limit_mgy REAL,                     -- NULL for an implausible exposure
  value_mgy REAL,
  detail TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'acknowledged')),
  raised_at TEXT NOT NULL,
  journaled INTEGER NOT NULL DEFAULT 0 CHECK (journaled IN (0, 1)),
  acknowledged_at TEXT,
  acknowledged_by TEXT,
  acknowledgement_reason TEXT
) STRICT"""
    )
    db.execute("CREATE INDEX dose_alert_exposure ON dose_alert(exposure_id)")
    db.execute("CREATE INDEX dose_alert_state ON dose_alert(state, id)")
    db.execute("CREATE INDEX dose_alert_study ON dose_alert(study_instance_uid, laterality)")
    db.execute("CREATE INDEX dose_alert_unjournaled ON dose_alert(id) WHERE journaled = 0")


#: CID 4014 view codes (SCT) → the short names of the physicists' forms (NHSBSP, EUREF), as
#: written into ``view_name`` by m004 (a literal copy: an applied migration never changes).
_M004_VIEW_NAMES = (
    ("399162004", "CC"),
    ("399368009", "MLO"),
    ("399260004", "ML"),
    ("399352003", "LM"),
    ("399099002", "LMO"),
    ("399192008", "XCCL"),
    ("399101009", "XCCM"),
    ("399196006", "FB"),
    ("399188001", "SIO"),
    ("441555000", "ISO"),
)


@migrations()
def m004_audit(db: sqlite_utils.Database) -> None:
    """Issue 10: the Timezone Offset From UTC, readable derived columns, an index for every
    audit filter and report query, and the datasette-friendly views (docs/dose-log-schema.md).

    The derived columns are VIRTUAL generated columns: SQLite computes them from the row, so
    they can never disagree with it, and the indexes built on them serve the report's
    groupings (view × magnified × 10 mm thickness band; unit × month; exam × breast) without a
    sort."""
    db.execute("ALTER TABLE exposure ADD COLUMN timezone_offset_from_utc TEXT")
    view_name = " ".join(f"WHEN '{code}' THEN '{name}'" for code, name in _M004_VIEW_NAMES)
    for column, kind, expression in (
        ("view_name", "TEXT", f"coalesce(CASE view_code {view_name} END, view_code)"),
        (
            # dose.record.magnified: the CID 4015 modifier, or a factor of 1.3 or more
            "is_magnified",
            "INTEGER",
            "CASE WHEN ',' || coalesce(view_modifier_codes, '') || ',' LIKE '%,399163009,%' "
            "OR magnification_factor >= 1.3 THEN 1 ELSE 0 END",
        ),
        (
            "thickness_band_mm",
            "INTEGER",
            "CAST(compressed_thickness_mm / 10 AS INTEGER) * 10",
        ),
        ("acquisition_month", "TEXT", "substr(acquisition_datetime, 1, 7)"),
        # dose.plausibility.is_implausible / is_qa
        ("is_implausible", "INTEGER", "trim(replace(plausibility, ';', ' ')) <> ''"),
        ("is_qa", "INTEGER", "coalesce(qa_reason, '') <> ''"),
        (
            # the AGD statistics of the report count: the unit's AGD of a plausible row
            "agd_plausible_mgy",
            "REAL",
            "CASE WHEN trim(replace(plausibility, ';', ' ')) = '' THEN agd_reported_mgy END",
        ),
        (
            # dose.totals.left_out_reason is None: counted in its breast's total
            "in_totals",
            "INTEGER",
            "coalesce(qa_reason, '') = '' AND trim(replace(plausibility, ';', ' ')) = '' "
            "AND agd_reported_mgy IS NOT NULL",
        ),
        (
            # --flagged: implausible, the Dance check disagrees (or suspects a unit), or an
            # alert was raised
            "is_flagged",
            "INTEGER",
            "trim(replace(plausibility, ';', ' ')) <> '' "
            "OR coalesce(dance_check, '') IN ('disagrees', 'unit suspected') "
            "OR coalesce(alert_flags, '') <> ''",
        ),
    ):
        db.execute(
            f"ALTER TABLE exposure ADD COLUMN {column} {kind} "
            f"GENERATED ALWAYS AS ({expression}) VIRTUAL"
        )
    # The report's indexes cover what its queries read and the common filters (dates, unit,
    # side, QA), so that a report over millions of rows reads no table row.
    common = "acquisition_datetime, station_ae, device_serial, laterality, is_qa"
    for name, columns in (
        ("exposure_acquired", "acquisition_datetime"),
        # physics/QA left out by default: every unfiltered listing, export and count
        ("exposure_patient", "is_qa, acquisition_datetime"),
        ("exposure_station", "station_ae, acquisition_datetime"),
        ("exposure_device", "device_serial, acquisition_datetime"),
        ("exposure_manufacturer", "manufacturer, acquisition_datetime"),
        ("exposure_laterality", "laterality, acquisition_datetime"),
        ("exposure_phase", "phase, acquisition_datetime"),
        ("exposure_thickness", "compressed_thickness_mm"),
        # the survey table, its medians, the AGD/kV/mAs-thickness plots, --view, --magnified,
        # the outliers
        (
            "exposure_view_band",
            "is_magnified, view_name, thickness_band_mm, agd_plausible_mgy, "
            f"compressed_thickness_mm, kvp, exposure_uas, {common}",
        ),
        # monthly median AGD per unit
        (
            "exposure_unit_month",
            "station_ae, device_serial, acquisition_month, agd_plausible_mgy, "
            "acquisition_datetime, laterality, is_qa, is_magnified, view_name",
        ),
        # per-exam totals per breast (replaces exposure_study)
        (
            "exposure_exam_breast",
            "study_instance_uid, laterality, in_totals, agd_reported_mgy, "
            "acquisition_datetime, station_ae, device_serial, is_qa, is_magnified, view_name",
        ),
        ("exposure_flagged", "is_flagged, acquisition_datetime"),
        ("exposure_dance_check", "dance_check, acquisition_datetime"),
    ):
        db.execute(f"CREATE INDEX {name} ON exposure({columns})")
    db.execute("DROP INDEX exposure_study")
    db.execute(
        """CREATE VIEW exposure_readable AS SELECT
  id AS "id",
  acquisition_datetime AS "acquired (unit's local time)",
  timezone_offset_from_utc AS "UTC offset",
  station_ae AS "unit AE title",
  manufacturer AS "manufacturer",
  model AS "model",
  device_serial AS "serial number",
  accession AS "accession",
  phase AS "phase",
  laterality AS "side",
  view_name AS "view",
  is_magnified AS "magnified",
  kvp AS "kV",
  exposure_uas / 1000.0 AS "mAs",
  anode AS "target",
  filter_material AS "filter",
  compressed_thickness_mm AS "thickness mm",
  compression_force_n AS "force N",
  hvl_mm_al AS "HVL mm Al",
  esak_mgy AS "entrance air kerma mGy",
  agd_reported_mgy AS "AGD reported mGy",
  agd_computed_mgy AS "AGD Dance mGy",
  dance_check AS "Dance check",
  is_implausible AS "implausible",
  is_qa AS "physics/QA",
  is_flagged AS "flagged",
  in_totals AS "in breast totals",
  plausibility AS "plausibility findings",
  level_comparison AS "reference levels",
  alert_flags AS "alerts raised",
  sources AS "sources",
  review_reasons AS "review notes"
FROM exposure"""
    )
    db.execute(
        """CREATE VIEW exam_breast_total AS SELECT
  study_instance_uid AS "study",
  max(accession) AS "accession",
  laterality AS "side",
  coalesce(sum(CASE WHEN in_totals THEN agd_reported_mgy END), 0.0) AS "AGD total mGy",
  sum(in_totals) AS "events",
  sum(NOT in_totals) AS "events left out",
  min(acquisition_datetime) AS "first exposure"
FROM exposure
WHERE study_instance_uid IS NOT NULL AND laterality IN ('L', 'R')
GROUP BY study_instance_uid, laterality"""
    )
    db.execute(
        """CREATE VIEW open_dose_alert AS SELECT
  a.id AS "alert",
  a.raised_at AS "raised (UTC)",
  a.level_name AS "level",
  a.value_mgy AS "value mGy",
  a.limit_mgy AS "limit mGy",
  a.detail AS "detail",
  e.acquisition_datetime AS "acquired (unit's local time)",
  e.station_ae AS "unit AE title",
  e.device_serial AS "serial number",
  e.accession AS "accession",
  a.laterality AS "side",
  e.view_name AS "view",
  a.sop_instance_uid AS "SOP Instance UID"
FROM dose_alert AS a LEFT JOIN exposure AS e ON e.id = a.exposure_id
WHERE a.state = 'open'"""
    )


# The report's summaries (m005), as written by that migration (literal copies: an applied
# migration never changes). Key columns, then measures: (column, type, per-row expression).
_M005_SUMMARY_KEYS = (
    ("acquisition_month", "TEXT"),
    ("station_ae", "TEXT"),
    ("device_serial", "TEXT"),
    ("manufacturer", "TEXT"),
    ("laterality", "TEXT"),
    ("is_qa", "INTEGER"),
    ("is_magnified", "INTEGER"),
    ("view_name", "TEXT"),
    ("thickness_band_mm", "INTEGER"),
)
_M005_PLAUSIBLE = "agd_plausible_mgy IS NOT NULL"
_M005_SUMMARY_MEASURES = (
    ("n_exposures", "INTEGER", "1"),
    ("n_flagged", "INTEGER", "is_flagged"),
    ("n_dance_disagrees", "INTEGER", "coalesce(dance_check = 'disagrees', 0)"),
    ("n_dance_unit_suspected", "INTEGER", "coalesce(dance_check = 'unit suspected', 0)"),
    (
        "n_open_alerts",
        "INTEGER",
        "(SELECT count(*) FROM dose_alert AS a WHERE a.exposure_id = exposure.id "
        "AND a.state = 'open')",
    ),
    # the survey's statistics: over the plausible rows (the unit's AGD is counted)
    ("n_agd", "INTEGER", _M005_PLAUSIBLE),
    ("sum_agd_mgy", "REAL", "coalesce(agd_plausible_mgy, 0.0)"),
    (
        "sum_thickness_mm",
        "REAL",
        f"CASE WHEN {_M005_PLAUSIBLE} THEN coalesce(compressed_thickness_mm, 0.0) ELSE 0.0 END",
    ),
    ("n_kvp", "INTEGER", f"{_M005_PLAUSIBLE} AND kvp IS NOT NULL"),
    ("sum_kvp", "REAL", f"CASE WHEN {_M005_PLAUSIBLE} THEN coalesce(kvp, 0.0) ELSE 0.0 END"),
    ("n_uas", "INTEGER", f"{_M005_PLAUSIBLE} AND exposure_uas IS NOT NULL"),
    (
        "sum_uas",
        "REAL",
        f"CASE WHEN {_M005_PLAUSIBLE} THEN coalesce(exposure_uas, 0.0) ELSE 0.0 END",
    ),
)
#: The columns an exposure's contribution to the summaries is made of (UPDATE OF).
_M005_WATCHED = (
    "acquisition_datetime", "station_ae", "device_serial", "manufacturer", "laterality",
    "qa_reason", "view_code", "view_modifier_codes", "magnification_factor",
    "compressed_thickness_mm", "plausibility", "agd_reported_mgy", "kvp", "exposure_uas",
    "dance_check", "alert_flags", "study_instance_uid",
)  # fmt: skip
#: Per-exam totals per breast: the key (a missing text as '': a WITHOUT ROWID key is never
#: NULL) and the rows that count (dose.totals: in_totals, of a study and a breast).
_M005_EXAM_KEYS = (
    ("study_instance_uid", "study_instance_uid"),
    ("laterality", "laterality"),
    ("acquisition_date", "coalesce(substr(acquisition_datetime, 1, 10), '')"),
    ("station_ae", "coalesce(station_ae, '')"),
    ("device_serial", "coalesce(device_serial, '')"),
    ("manufacturer", "coalesce(manufacturer, '')"),
)
_M005_EXAM_ROWS = "in_totals AND study_instance_uid IS NOT NULL AND laterality IN ('L', 'R')"
#: The scatter plots' sample: every 64th row, with what the plots and the filters read.
_M005_SAMPLE_EVERY = 64
_M005_SAMPLE_COLUMNS = (
    "acquisition_datetime, is_qa, station_ae, device_serial, manufacturer, laterality, "
    "is_magnified, view_name, compressed_thickness_mm, agd_plausible_mgy, kvp, exposure_uas"
)


@migrations()
def m005_report_summaries(db: sqlite_utils.Database) -> None:
    """Issue 10 at fleet scale: what the report counts, kept by the database as it is written.

    - ``exposure_summary``: per month, unit, side, physics/QA, view (contact or magnified)
      and 10 mm band, the counts and sums of the report's questions (the survey table, the
      monthly counts per unit, flagged, Dance disagreements, open alerts);
      ``exposure_summary_row`` is one row's share of it.
    - ``exam_breast_summary``: per exam, breast, day and unit, the one total of dose.totals
      (``exam_breast_summary_row``: one row's share).
    - ``exposure_sample``: an index of every 64th row for the scatter plots.

    Triggers keep both summaries equal to the rows in the transaction that changes them (an
    insert adds a row's share, a delete takes it away, an update of a column it depends on
    does both; an alert opened, acknowledged or moved by a merge moves its count): whatever
    writes the table — the controller, an import, the checks, a repair by hand."""
    measures = ", ".join(f"{expr} AS {name}" for name, _, expr in _M005_SUMMARY_MEASURES)
    db.execute(f"CREATE VIEW exposure_summary_row AS SELECT exposure.*, {measures} FROM exposure")
    columns = [
        *(f"{key} {kind}" for key, kind in _M005_SUMMARY_KEYS),
        *(
            f"{name} {kind} NOT NULL DEFAULT {'0.0' if kind == 'REAL' else '0'}"
            for name, kind, _ in _M005_SUMMARY_MEASURES
        ),
    ]
    db.execute(f"CREATE TABLE exposure_summary ({', '.join(columns)}) STRICT")
    keys = ", ".join(key for key, _ in _M005_SUMMARY_KEYS)
    db.execute(f"CREATE UNIQUE INDEX exposure_summary_key ON exposure_summary({keys})")
    names = [name for name, _, _ in _M005_SUMMARY_MEASURES]

    def same_key(summary: str, row: str) -> str:
        return " AND ".join(f"{summary}.{k} IS {row}.{k}" for k, _ in _M005_SUMMARY_KEYS)

    def share(row: str, sign: str) -> str:
        """The statements that add (sign +) or take away (-) the share of exposure ``row``
        (an UPDATE in a trigger takes no alias: the summary is named in full)."""
        table = "exposure_summary"
        add = ", ".join(f"{n} = {table}.{n} {sign} r.{n}" for n in names)
        found = f"FROM exposure_summary_row AS r WHERE r.id = {row}.id"
        statements = [
            f"INSERT INTO {table} ({keys}) SELECT {keys} {found} AND NOT EXISTS "
            f"(SELECT 1 FROM {table} AS s WHERE {same_key('s', 'r')})",
            f"UPDATE {table} SET {add} {found} AND {same_key(table, 'r')}",
        ]
        if sign == "-":
            statements.append(
                f"DELETE FROM {table} WHERE rowid IN (SELECT s.rowid FROM {table} AS s, "
                f"exposure_summary_row AS r WHERE r.id = {row}.id AND {same_key('s', 'r')} "
                "AND s.n_exposures = 0)"
            )
        return "; ".join(statements) + ";"

    exam_keys = ", ".join(k for k, _ in _M005_EXAM_KEYS)
    db.execute(
        "CREATE VIEW exam_breast_summary_row AS SELECT id, "
        + ", ".join(f"{expr} AS {k}" for k, expr in _M005_EXAM_KEYS)
        + f", 1 AS events, agd_reported_mgy AS total_mgy FROM exposure WHERE {_M005_EXAM_ROWS}"
    )
    db.execute(
        "CREATE TABLE exam_breast_summary ("
        + ", ".join(f"{k} TEXT NOT NULL" for k, _ in _M005_EXAM_KEYS)
        + ", events INTEGER NOT NULL, total_mgy REAL NOT NULL, "
        f"PRIMARY KEY ({exam_keys})) STRICT, WITHOUT ROWID"
    )

    def exam_share(row: str, sign: str) -> str:
        statements = [
            f"INSERT INTO exam_breast_summary ({exam_keys}, events, total_mgy) "
            f"SELECT {exam_keys}, {sign}events, {sign}total_mgy FROM exam_breast_summary_row "
            f"WHERE id = {row}.id ON CONFLICT ({exam_keys}) DO UPDATE SET "
            "events = events + excluded.events, total_mgy = total_mgy + excluded.total_mgy"
        ]
        if sign == "-":
            statements.append(
                f"DELETE FROM exam_breast_summary WHERE ({exam_keys}) IN (SELECT {exam_keys} "
                f"FROM exam_breast_summary_row WHERE id = {row}.id) AND events = 0"
            )
        return "; ".join(statements) + ";"

    watched = ", ".join(_M005_WATCHED)
    for name, when, row, sign in (
        ("inserted", "AFTER INSERT", "NEW", "+"),
        ("deleted", "BEFORE DELETE", "OLD", "-"),
        ("updating", f"BEFORE UPDATE OF {watched}", "OLD", "-"),
        ("updated", f"AFTER UPDATE OF {watched}", "NEW", "+"),
    ):
        db.execute(
            f"CREATE TRIGGER exposure_summary_{name} {when} ON exposure BEGIN "
            f"{share(row, sign)} {exam_share(row, sign)} END"
        )

    # an alert opened, closed or moved to another row (a merge) moves its row's count
    def alert(row: str, sign: str) -> str:
        return (
            f"UPDATE exposure_summary SET n_open_alerts = n_open_alerts {sign} 1 "
            f"FROM exposure AS e WHERE {row}.state = 'open' AND e.id = {row}.exposure_id "
            f"AND {same_key('exposure_summary', 'e')};"
        )

    for name, when, body in (
        ("raised", "AFTER INSERT", alert("NEW", "+")),
        ("removed", "AFTER DELETE", alert("OLD", "-")),
        ("changed", "AFTER UPDATE OF state, exposure_id", alert("OLD", "-") + alert("NEW", "+")),
    ):
        db.execute(
            f"CREATE TRIGGER dose_alert_summary_{name} {when} ON dose_alert BEGIN {body} END"
        )
    # what the log already holds
    sums = ", ".join(f"sum({n})" for n in names)
    db.execute(
        f"INSERT INTO exposure_summary ({keys}, {', '.join(names)}) "
        f"SELECT {keys}, {sums} FROM exposure_summary_row GROUP BY {keys}"
    )
    db.execute(
        f"INSERT INTO exam_breast_summary ({exam_keys}, events, total_mgy) "
        f"SELECT {exam_keys}, sum(events), sum(total_mgy) FROM exam_breast_summary_row "
        f"GROUP BY {exam_keys}"
    )
    db.execute(
        f"CREATE INDEX exposure_sample ON exposure({_M005_SAMPLE_COLUMNS}) "
        f"WHERE id % {_M005_SAMPLE_EVERY} = 0"
    )


class DoseLog:
    """SQLite per-exposure dose log; an :class:`~dose.record.ExposureSink`."""

    def __init__(
        self,
        path: str | Path | Database,
        *,
        busy_timeout_s: float = 5.0,
        write_timeout_s: float = 10.0,
        policy: DosePolicy | None = None,
        read_only: bool = False,
    ) -> None:
        """Open (and migrate) the dose log at ``path``.

        ``path`` (or the :class:`~storage.writer.Database` of it): writes go to its one writer
        thread, with group commit; a write not committed within ``write_timeout_s`` raises
        :class:`~dose.record.SinkWriteError`.

        ``policy`` is what every record is checked against as it is written (plausibility,
        the independent Dance check, reference levels and alerts); the default has no
        physicist's tables and no levels.

        ``read_only``: for the audit commands — the one read-only open of :mod:`storage`
        (``mode=ro``; a copy or ``immutable=1`` on read-only media), no migration, no writer.
        """
        self.policy = policy or DosePolicy()
        self._lock = threading.Lock()
        self._closed = False
        self._write_timeout_s = write_timeout_s
        self.db: Database | None = None
        self._read_only = None
        if read_only:
            assert not isinstance(path, Database), "a read-only dose log opens its own file"
            self._read_only = open_read_only(path, busy_timeout_s=busy_timeout_s)
            if not self._read_only.has_table("exposure"):
                self._read_only.close()
                raise DatabaseOpenError(path, "it holds no dose log")
            return
        self.db = shared(path, busy_timeout_s=busy_timeout_s)
        try:
            self.db.migrate(migrations)
        except BaseException:
            self.db.close()
            raise

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the log (idempotent); the database closes with its last store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._read_only is not None:
            self._read_only.close()  # and its private copy, if it made one
        elif self.db is not None:
            self.db.close()

    def __enter__(self) -> DoseLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def record(self, exposures: Sequence[ExposureRecord]) -> None:
        """Reconcile, check and commit ``exposures`` in one transaction; durable on return."""
        self.record_counted(exposures)

    def record_counted(self, exposures: Sequence[ExposureRecord]) -> int:
        """:meth:`record`, and how many rows the log gained by it: a new exposure adds one, a
        record merged into a known row none (an import counts its rows without counting the
        table, which takes a pass over millions of rows)."""
        if not exposures:
            return 0
        gained = [0]
        self._write(reconcile(exposures, self.policy, gained))
        return gained[0]

    def _write(self, work: Work) -> None:
        """Run ``work`` on the database's writer; committed on return (a failure of SQLite's,
        a timeout or a closed log: :class:`SinkWriteError`, the cause chained)."""
        if self._closed or self.db is None:
            raise SinkWriteError("dose log is closed")
        try:
            self.db.run(work, self._write_timeout_s)
        except WriteTimeout as exc:
            raise SinkWriteError("dose log writer did not commit in time") from exc
        except DatabaseClosed as exc:
            raise SinkWriteError("dose log is closed") from exc
        except sqlite3.Error as exc:
            raise SinkWriteError(f"dose log write failed: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        if self._read_only is not None:
            with self._lock:
                rows = self._read_only.connection.execute(sql, tuple(params)).fetchall()
        else:
            assert self.db is not None
            with self.db.read() as conn:
                rows = conn.execute(sql, tuple(params)).fetchall()
        return [dict(row) for row in rows]

    # ------------------------------------------------------------------ reading
    def list_exposures(
        self, accession: str | None = None, *, study: str | None = None
    ) -> list[dict[str, Any]]:
        """Every logged exposure (of one accession, or one Study Instance UID), oldest first,
        as column → value dicts."""
        sql = "SELECT * FROM exposure"
        params: tuple[Any, ...] = ()
        if accession is not None:
            sql += " WHERE accession = ?"
            params = (accession,)
        elif study is not None:
            sql += " WHERE study_instance_uid = ?"
            params = (study,)
        return self._read(sql + " ORDER BY id", params)

    def unannotated_exposures(
        self, *, study: str | None = None, exclude_study: str | None = None
    ) -> list[dict[str, Any]]:
        """Rows no exam has annotated yet (``phase`` empty), oldest first: of one Study
        Instance UID only, or all but those of ``exclude_study`` (the open exam reads its own).
        """
        sql = "SELECT * FROM exposure WHERE phase IS NULL"
        params: tuple[Any, ...] = ()
        if study is not None:
            sql += " AND study_instance_uid = ?"
            params = (study,)
        elif exclude_study is not None:
            sql += " AND study_instance_uid IS NOT ?"
            params = (exclude_study,)
        return self._read(sql + " ORDER BY id", params)

    def exposure_count(self) -> int:
        """How many rows (irradiation events) the log holds."""
        return int(self._read("SELECT count(*) AS n FROM exposure")[0]["n"])

    def columns(self) -> list[str]:
        """The exposure table's columns, in table order (the export's header)."""
        return [row["name"] for row in self._read("PRAGMA table_info(exposure)")]

    def annotate(self, exposure_id: int, **values: Any) -> None:
        """Write exam columns (``ANNOTATION_COLUMNS``) of one row; durable on return."""
        unknown = set(values) - set(ANNOTATION_COLUMNS)
        if unknown:
            raise ValueError(f"not annotation columns: {sorted(unknown)}")
        if not values:
            return
        assignments = ", ".join(f"{name} = ?" for name in values)

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                f"UPDATE exposure SET {assignments}, updated_at = ? WHERE id = ?",
                (*values.values(), utc_now(), exposure_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no exposure {exposure_id}")

        self._write(work)

    def image_uids(self, exposure_id: int) -> list[str]:
        """SOP Instance UIDs of the images that show one exposure."""
        rows = self._read(
            "SELECT sop_instance_uid FROM exposure_image WHERE exposure_id = ? "
            "ORDER BY sop_instance_uid",
            (exposure_id,),
        )
        return [row["sop_instance_uid"] for row in rows]

    # ------------------------------------------------------------------ alerts
    def alerts(
        self,
        *,
        open_only: bool = False,
        exposure_ids: Sequence[int] | None = None,
        study: str | None = None,
    ) -> list[dict[str, Any]]:
        """Alerts, oldest first: all, the open ones, those of some exposures or of a study."""
        where: list[str] = []
        params: list[Any] = []
        if open_only:
            where.append("state = ?")
            params.append(ALERT_OPEN)
        if exposure_ids is not None:
            where.append(f"exposure_id IN ({', '.join('?' * len(exposure_ids))})")
            params.extend(exposure_ids)
        if study is not None:
            where.append("study_instance_uid = ?")
            params.append(study)
        sql = "SELECT * FROM dose_alert" + (f" WHERE {' AND '.join(where)}" if where else "")
        return self._read(sql + " ORDER BY id", params)

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM dose_alert WHERE id = ?", (alert_id,))
        return rows[0] if rows else None

    def acknowledge_alert(self, alert_id: int, *, user: str, reason: str) -> None:
        """Mark an open alert acknowledged by ``user`` with ``reason``; durable on return.

        :class:`KeyError` for an unknown alert, :class:`AlertStateError` for one already
        acknowledged (the first acknowledgement stands).
        """
        if not user.strip() or not reason.strip():
            raise ValueError("an acknowledgement needs the user and a reason")

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM dose_alert WHERE id = ?", (alert_id,)).fetchone()
            if row is None:
                raise KeyError(f"no alert {alert_id}")
            if row["state"] != ALERT_OPEN:
                raise AlertStateError(f"alert {alert_id} is already {row['state']}")
            conn.execute(
                "UPDATE dose_alert SET state = ?, acknowledged_at = ?, acknowledged_by = ?, "
                "acknowledgement_reason = ? WHERE id = ?",
                (ALERT_ACKNOWLEDGED, utc_now(), user.strip(), reason.strip(), alert_id),
            )

        self._write(work)

    def unjournaled_alerts(self) -> list[dict[str, Any]]:
        """Alerts raised but not journaled yet (the controller journals them), oldest first."""
        return self._read("SELECT * FROM dose_alert WHERE journaled = 0 ORDER BY id")

    def mark_alerts_journaled(self, alert_ids: Sequence[int]) -> None:
        if not alert_ids:
            return
        marks = ", ".join("?" * len(alert_ids))

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE dose_alert SET journaled = 1 WHERE id IN ({marks})", alert_ids)

        self._write(work)


class AlertStateError(ValueError):
    """The alert is not open (already acknowledged)."""


__all__ = [
    "ALERT_ACKNOWLEDGED",
    "ALERT_OPEN",
    "ANNOTATION_COLUMNS",
    "CHECK_COLUMNS",
    "MATCHED_BY_TECHNIQUE",
    "RECORD_COLUMNS",
    "AlertStateError",
    "DoseLog",
    "migrations",
]
