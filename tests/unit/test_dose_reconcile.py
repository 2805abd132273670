"""The dose log's writes, run on a bare connection (acquisition/dose_reconcile.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from acquisition.dose_log import DoseLog
from acquisition.dose_reconcile import RECORD_COLUMNS, reconcile, utc_now
from dose.policy import DosePolicy
from dose.record import MEASURED_FIELDS, ExposureRecord, Source


def migrated(tmp_path: Path) -> sqlite3.Connection:
    DoseLog(tmp_path / "db.sqlite").close()  # the real schema
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def write(conn: sqlite3.Connection, *records: ExposureRecord) -> None:
    conn.execute("BEGIN")
    reconcile(records, DosePolicy())(conn)
    conn.execute("COMMIT")


def test_one_exposure_from_two_sources_is_one_row_and_a_disagreement_is_flagged(
    tmp_path: Path,
) -> None:
    conn = migrated(tmp_path)
    try:
        write(conn, ExposureRecord(Source.IMAGE_HEADER, irradiation_event_uid="1.2.8.1", kvp=28.0))
        write(conn, ExposureRecord(Source.RDSR, irradiation_event_uid="1.2.8.1", kvp=31.0))
        (row,) = conn.execute("SELECT * FROM exposure").fetchall()
        assert row["kvp"] == 28.0  # kept as stored: a new source does not overwrite
        assert "kvp" in (row["review_reasons"] or "")
        assert set(row["sources"].split(",")) == {Source.IMAGE_HEADER.value, Source.RDSR.value}
    finally:
        conn.close()


def test_every_record_field_is_a_column_and_times_are_utc() -> None:
    assert set(MEASURED_FIELDS) <= set(RECORD_COLUMNS)
    assert utc_now().endswith("+00:00")
