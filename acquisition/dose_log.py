"""The per-exposure dose log: one SQLite row per irradiation event (dose.md §2, style.md §5).

Implements :class:`dicom_nodes.exposures.ExposureSink` for the SCPs. ``record()`` returns only
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

Writes go to one writer thread that owns the write connection (datasette's pattern): the SCP
threads hand it their batch through a queue and wait for its COMMIT; batches queued meanwhile
share the next transaction (group commit). Reads use a second, lock-guarded connection.
``writer_thread=False`` serialises writers on that lock-guarded connection instead;
``bench/bench_store.py`` measures both beside the bare commit floor.
"""

from __future__ import annotations

import datetime
import logging
import math
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import sqlite_utils

from dicom_nodes.exposures import MEASURED_FIELDS, ExposureRecord, SinkWriteError
from storage.database import DatabaseOpenError, atomic, connect, migrate, open_read_only

log = logging.getLogger(__name__)

migrations = sqlite_utils.Migrations("dose_log")

#: Columns of ``exposure`` that come from an :class:`ExposureRecord` (a test checks that this
#: is every measured field of the record: a new field needs a new migration).
RECORD_COLUMNS: tuple[str, ...] = (*MEASURED_FIELDS, "mpps_item_index")

#: Columns written later by the exam and the dosimetry (``annotate``), not by the SCPs.
ANNOTATION_COLUMNS: tuple[str, ...] = (
    "phase",
    "operator",
    "agd_computed_mgy",
    "dance_g",
    "dance_c",
    "dance_s",
    "agd_computed_basis",
    "repeat_reason",
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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def _to_sql(name: str, value: Any) -> Any:
    if isinstance(value, tuple):
        return ",".join(value) if value else None
    return value


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, float) and isinstance(new, float):
        return not math.isclose(old, new, rel_tol=0.01, abs_tol=1e-6)
    return bool(old != new)


def _split(text: str | None) -> list[str]:
    return [part for part in (text or "").split(",") if part]


REASON_SEPARATOR = "; "


def _reasons(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(";") if part.strip()]


class _WriterThread:
    """One thread owning the write connection; callers hand it batches and wait for COMMIT.

    The datasette pattern (style.md §5), with group commit: batches queued while a COMMIT is
    in progress are written together in the next transaction (one fsync for all of them).
    ``write`` raises :class:`SinkWriteError` when its batch was not committed or no commit
    came within ``timeout_s``.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float, timeout_s: float) -> None:
        self._path, self._busy_timeout_s, self._timeout_s = path, busy_timeout_s, timeout_s
        self._queue: queue.Queue[tuple[Work, Future[None]] | None] = queue.Queue()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="dose-log-writer", daemon=True)
        self._thread.start()
        # The writer's connection (and its WAL file) is open before the first exposure comes:
        # an unusable database fails here, at start-up, not at the first C-STORE.
        if not self._ready.wait(timeout_s):
            raise SinkWriteError("the dose log's writer did not open its database in time")
        if self._open_error is not None:
            raise SinkWriteError(f"the dose log cannot be written: {self._open_error}")

    def _run(self) -> None:
        try:
            conn = connect(self._path, busy_timeout_s=self._busy_timeout_s, check_same_thread=False)
            conn.execute("SELECT COUNT(*) FROM exposure").fetchone()  # opens the WAL too
        except BaseException as exc:
            self._open_error = exc
            return
        finally:
            self._ready.set()
        try:
            while (first := self._queue.get()) is not None:
                pending = [first]
                stop = False
                while not stop:  # group commit: everything queued meanwhile, one COMMIT
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                    else:
                        pending.append(item)
                self._commit(conn, pending)
                if stop:
                    break
        finally:
            conn.close()
            self._fail_pending()

    def _fail_pending(self) -> None:
        """Batches queued after close: tell their callers now rather than at their timeout."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(SinkWriteError("dose log is closed"))

    @staticmethod
    def _commit(conn: sqlite3.Connection, pending: list[tuple[Work, Future[None]]]) -> None:
        try:
            _write_batch(conn, [work for work, _ in pending])
        except Exception as exc:
            if len(pending) == 1:
                pending[0][1].set_exception(exc)
                return
            for work, done in pending:  # find which batch failed: one transaction each
                _WriterThread._commit(conn, [(work, done)])
            return
        for _, done in pending:
            done.set_result(None)

    def write(self, work: Work) -> None:
        if not self._thread.is_alive():
            raise SinkWriteError("dose log is closed")
        done: Future[None] = Future()
        self._queue.put((work, done))
        try:
            done.result(timeout=self._timeout_s)
        except TimeoutError as exc:
            raise SinkWriteError("dose log writer did not commit in time") from exc

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=self._timeout_s)


class DoseLog:
    """SQLite per-exposure dose log; an :class:`~dicom_nodes.exposures.ExposureSink`."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        writer_thread: bool = True,
        write_timeout_s: float = 10.0,
        read_only: bool = False,
    ) -> None:
        """Open (and migrate) the dose log at ``path``.

        ``writer_thread`` (default): hand writes to one writer thread through a queue, with
        group commit; ``False`` serialises callers on a lock-guarded connection instead.
        ``bench_store`` compares both: with several SCP threads writing at once the writer
        thread keeps p99 near the commit floor, the lock does not (waiters are not served in
        order and each pays its own fsync).

        ``read_only``: for the audit commands — the one read-only open of :mod:`storage`
        (``mode=ro``; a copy or ``immutable=1`` on read-only media), no migration, no writer.
        """
        self._lock = threading.Lock()
        self._closed = False
        self._read_only = open_read_only(path, busy_timeout_s=busy_timeout_s) if read_only else None
        if self._read_only is not None:
            self._conn = self._read_only.connection
            self._writer = None
            if not self._read_only.has_table("exposure"):
                self._read_only.close()
                raise DatabaseOpenError(path, "it holds no dose log")
            return
        self._conn = connect(path, busy_timeout_s=busy_timeout_s, check_same_thread=False)
        migrate(self._conn, migrations)
        self._writer = (
            _WriterThread(path, busy_timeout_s, write_timeout_s) if writer_thread else None
        )

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._writer is not None:
            self._writer.close()
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._read_only is not None:
                    self._read_only.close()  # and its private copy, if it made one
                else:
                    self._conn.close()

    def __enter__(self) -> DoseLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing
    def record(self, exposures: Sequence[ExposureRecord]) -> None:
        """Reconcile and commit ``exposures`` in one transaction; durable on return."""
        if not exposures:
            return
        self._write(_reconcile(exposures))

    def _write(self, work: Work) -> None:
        if self._writer is not None:
            self._writer.write(work)
            return
        with self._lock:
            if self._closed:
                raise SinkWriteError("dose log is closed")
            _write_batch(self._conn, [work])

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
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [dict(row) for row in rows]

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
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [dict(row) for row in rows]

    def columns(self) -> list[str]:
        """The exposure table's columns, in table order (the export's header)."""
        with self._lock:
            rows = self._conn.execute("PRAGMA table_info(exposure)").fetchall()
        return [row["name"] for row in rows]

    def agd_totals_by_breast(self, accession: str) -> dict[str, float]:
        """Accumulated reported AGD (mGy) per Image Laterality for one exam (TID 10005 style).

        Exposures without a reported AGD count as zero here; ``list_exposures`` shows them.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT COALESCE(laterality, '') AS side, "
                "TOTAL(agd_reported_mgy) AS agd_mgy FROM exposure "
                "WHERE accession = ? GROUP BY side ORDER BY side",
                (accession,),
            ).fetchall()
        return {row["side"]: float(row["agd_mgy"]) for row in rows}

    def annotate(self, exposure_id: int, **values: Any) -> None:
        """Write exam/dosimetry columns (``ANNOTATION_COLUMNS``) of one row; durable on return."""
        unknown = set(values) - set(ANNOTATION_COLUMNS)
        if unknown:
            raise ValueError(f"not annotation columns: {sorted(unknown)}")
        if not values:
            return
        assignments = ", ".join(f"{name} = ?" for name in values)

        def work(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                f"UPDATE exposure SET {assignments}, updated_at = ? WHERE id = ?",
                (*values.values(), _now(), exposure_id),
            )
            if cursor.rowcount != 1:
                raise KeyError(f"no exposure {exposure_id}")

        self._write(work)

    def image_uids(self, exposure_id: int) -> list[str]:
        """SOP Instance UIDs of the images that show one exposure."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT sop_instance_uid FROM exposure_image WHERE exposure_id = ? "
                "ORDER BY sop_instance_uid",
                (exposure_id,),
            ).fetchall()
        return [row[0] for row in rows]


Work = Callable[[sqlite3.Connection], None]


def _reconcile(exposures: Sequence[ExposureRecord]) -> Work:
    """The write that reconciles ``exposures`` into the table."""

    def work(conn: sqlite3.Connection) -> None:
        for exposure in exposures:
            _record_one(conn, exposure)

    return work


def _write_batch(conn: sqlite3.Connection, works: Sequence[Work]) -> None:
    """Run ``works`` in one transaction (COMMIT before return)."""
    try:
        with atomic(conn):  # a full disk is named as such, never "cannot rollback"
            for work in works:
                work(conn)
    except sqlite3.Error as exc:
        raise SinkWriteError(f"dose log write failed: {exc}") from exc


def _matching_ids(conn: sqlite3.Connection, record: ExposureRecord) -> list[int]:
    ids: set[int] = set()
    if record.sop_instance_uid:
        ids.update(
            row[0]
            for row in conn.execute(
                "SELECT exposure_id FROM exposure_image WHERE sop_instance_uid = ?",
                (record.sop_instance_uid,),
            )
        )
    if record.irradiation_event_uid:
        ids.update(
            row[0]
            for row in conn.execute(
                "SELECT id FROM exposure WHERE irradiation_event_uid = ?",
                (record.irradiation_event_uid,),
            )
        )
    if record.mpps_instance_uid and record.mpps_item_index is not None:
        ids.update(
            row[0]
            for row in conn.execute(
                "SELECT id FROM exposure WHERE mpps_instance_uid = ? AND mpps_item_index = ?",
                (record.mpps_instance_uid, record.mpps_item_index),
            )
        )
    return sorted(ids)


def _record_one(conn: sqlite3.Connection, record: ExposureRecord) -> None:
    ids = _matching_ids(conn, record)
    incoming = {name: _to_sql(name, getattr(record, name)) for name in RECORD_COLUMNS}
    now = _now()
    if not ids:
        columns = [*RECORD_COLUMNS, "sources", "unknown_step", "review_reasons"]
        values = [
            *incoming.values(),
            record.source.value,
            int(not record.known_step),
            REASON_SEPARATOR.join(record.review_reasons),
        ]
        cursor = conn.execute(
            f"INSERT INTO exposure ({', '.join(columns)}, created_at, updated_at) "
            f"VALUES ({', '.join('?' * len(columns))}, ?, ?)",
            (*values, now, now),
        )
        target = int(cursor.lastrowid or 0)
    else:
        target = ids[0]
        rows = [
            dict(conn.execute("SELECT * FROM exposure WHERE id = ?", (i,)).fetchone()) for i in ids
        ]
        merged = rows[0]
        for other in rows[1:]:
            merged = _merge(merged, other, same_source=False, new_sources=other["sources"])
        merged = _merge(
            merged,
            {
                **incoming,
                "unknown_step": int(not record.known_step),
                "review_reasons": REASON_SEPARATOR.join(record.review_reasons),
            },
            same_source=record.source.value in _split(merged["sources"]),
            new_sources=record.source.value,
        )
        for other_id in ids[1:]:
            conn.execute(
                "UPDATE exposure_image SET exposure_id = ? WHERE exposure_id = ?",
                (target, other_id),
            )
            conn.execute("DELETE FROM exposure WHERE id = ?", (other_id,))
        updates = [*RECORD_COLUMNS, "sources", "unknown_step", "review_reasons"]
        conn.execute(
            f"UPDATE exposure SET {', '.join(f'{c} = ?' for c in updates)}, updated_at = ? "
            "WHERE id = ?",
            (*(merged[c] for c in updates), now, target),
        )
    if record.sop_instance_uid:
        conn.execute(
            "INSERT OR REPLACE INTO exposure_image (sop_instance_uid, exposure_id) VALUES (?, ?)",
            (record.sop_instance_uid, target),
        )


def _merge(
    stored: dict[str, Any], incoming: dict[str, Any], *, same_source: bool, new_sources: str
) -> dict[str, Any]:
    """Fill missing fields of ``stored`` from ``incoming``; flag cross-source disagreements."""
    merged = dict(stored)
    reasons = _reasons(stored.get("review_reasons"))
    for name in RECORD_COLUMNS:
        new = incoming.get(name)
        if new is None:
            continue
        old = merged.get(name)
        if old is None or (same_source and name != "sop_instance_uid"):
            merged[name] = new
        elif name != "sop_instance_uid" and _differs(old, new):
            reason = f"sources disagree on {name}"
            if reason not in reasons:
                reasons.append(reason)
    for reason in _reasons(incoming.get("review_reasons")):
        if reason not in reasons:
            reasons.append(reason)
    merged["review_reasons"] = REASON_SEPARATOR.join(reasons)
    merged["sources"] = ",".join(sorted({*_split(stored["sources"]), *_split(new_sources)}))
    merged["unknown_step"] = int(bool(stored["unknown_step"]) and bool(incoming["unknown_step"]))
    return merged
