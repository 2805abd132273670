"""Persistence of MPPS instances: every N-CREATE / N-SET as received, and the merged state.

Two tables (migration set ``mpps``): ``mpps_message`` keeps each request exactly as received
(encoded dataset, calling AE, the status we answered) — including refused ones — and
``mpps_instance`` the current merged state of each instance with its status and per-step dose
figures. The MPPS SCP serialises its operations; this store commits each call before returning.
The RIS simulator reuses the class with its own database file.
"""

from __future__ import annotations

import datetime
import io
import logging
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import sqlite_utils
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from storage.writer import Store

log = logging.getLogger(__name__)

migrations = sqlite_utils.Migrations("mpps")


@migrations()
def m001_mpps(db: sqlite_utils.Database) -> None:
    """MPPS instances (merged state) and the log of every message received."""
    db.execute(
        """CREATE TABLE mpps_instance (
  sop_instance_uid TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  calling_ae TEXT NOT NULL,
  dataset BLOB NOT NULL,
  total_exposures INTEGER,
  organ_dose_mgy REAL,
  entrance_dose_mgy REAL,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
) STRICT"""
    )
    db.execute(
        """CREATE TABLE mpps_message (
  id INTEGER PRIMARY KEY,
  sop_instance_uid TEXT,
  operation TEXT NOT NULL CHECK (operation IN ('N-CREATE', 'N-SET')),
  calling_ae TEXT NOT NULL,
  status_code INTEGER NOT NULL,
  dataset BLOB NOT NULL,
  received_at TEXT NOT NULL
) STRICT"""
    )
    db.execute("CREATE INDEX mpps_message_instance ON mpps_message(sop_instance_uid)")


def encode_dataset(ds: Dataset) -> bytes:
    """Explicit VR Little Endian encoding of a dataset (no preamble, no file meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def decode_dataset(data: bytes) -> Dataset:
    """Inverse of :func:`encode_dataset`."""
    return read_dataset(io.BytesIO(data), is_implicit_VR=False, is_little_endian=True)


@dataclass(frozen=True)
class MppsInstance:
    """The merged state of one MPPS instance."""

    sop_instance_uid: str
    status: str
    calling_ae: str
    dataset: Dataset


@dataclass(frozen=True)
class ReceivedMessage:
    """One N-CREATE / N-SET as received, with the status we answered."""

    sop_instance_uid: str | None
    operation: str
    calling_ae: str
    status_code: int
    dataset: Dataset


class MppsStore(Protocol):
    """What the MPPS SCP needs from its persistence."""

    def get(self, sop_instance_uid: str) -> MppsInstance | None: ...

    def save(
        self,
        instance: MppsInstance,
        *,
        created: bool,
        step_totals: dict[str, Any] | None = None,
    ) -> None: ...

    def log_message(self, message: ReceivedMessage) -> None: ...


@runtime_checkable
class AtomicMppsStore(MppsStore, Protocol):
    """A store that commits the merged state and the message log in one transaction."""

    def save_with_message(
        self,
        instance: MppsInstance,
        message: ReceivedMessage,
        *,
        created: bool,
        step_totals: dict[str, Any] | None = None,
    ) -> None: ...


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


class SqliteMppsStore(Store):
    """:class:`MppsStore` on a SQLite file (WAL, synchronous=FULL): writes through the
    database's one writer, committed before they return (:class:`storage.writer.Database`)."""

    migrations = migrations

    def get(self, sop_instance_uid: str) -> MppsInstance | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM mpps_instance WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        if row is None:
            return None
        return MppsInstance(
            sop_instance_uid=row["sop_instance_uid"],
            status=row["status"],
            calling_ae=row["calling_ae"],
            dataset=decode_dataset(row["dataset"]),
        )

    def in_progress(self, study_instance_uid: str, sps_ids: Collection[str] = ()) -> list[str]:
        """The Performed Procedure Step IDs (the SOP Instance UID when the unit gave none) of
        the unit's steps still IN PROGRESS for a study: their Scheduled Step Attributes name
        the study, or one of ``sps_ids``. Oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT sop_instance_uid, dataset FROM mpps_instance "
                "WHERE status = 'IN PROGRESS' ORDER BY created_at, sop_instance_uid"
            ).fetchall()
        found = []
        for row in rows:
            ds = decode_dataset(row["dataset"])
            for step in ds.get("ScheduledStepAttributesSequence") or ():
                study = str(step.get("StudyInstanceUID", "") or "")
                sps_id = str(step.get("ScheduledProcedureStepID", "") or "")
                if study == study_instance_uid or (sps_id and sps_id in sps_ids):
                    found.append(str(ds.get("PerformedProcedureStepID") or row[0]))
                    break
        return found

    def save(
        self,
        instance: MppsInstance,
        *,
        created: bool,
        step_totals: dict[str, Any] | None = None,
    ) -> None:
        """Insert (``created``) or replace the merged state; raises sqlite3.IntegrityError on a
        duplicate insert."""
        self.db.run(lambda conn: _save(conn, instance, created, step_totals or {}))

    def log_message(self, message: ReceivedMessage) -> None:
        self.db.run(lambda conn: _log(conn, message))

    def save_with_message(
        self,
        instance: MppsInstance,
        message: ReceivedMessage,
        *,
        created: bool,
        step_totals: dict[str, Any] | None = None,
    ) -> None:
        """State and message log in one transaction (one fsync instead of two)."""

        def both(conn: sqlite3.Connection) -> None:
            _save(conn, instance, created, step_totals or {})
            _log(conn, message)

        self.db.run(both)

    def messages(self, sop_instance_uid: str) -> list[tuple[str, int]]:
        """(operation, status we answered) of every message for one instance, in order."""
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT operation, status_code FROM mpps_message WHERE sop_instance_uid = ? "
                "ORDER BY id",
                (sop_instance_uid,),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]


def _save(
    conn: sqlite3.Connection, instance: MppsInstance, created: bool, totals: dict[str, Any]
) -> None:
    values = (
        instance.status,
        instance.calling_ae,
        encode_dataset(instance.dataset),
        totals.get("total_exposures"),
        totals.get("organ_dose_mgy"),
        totals.get("entrance_dose_mgy"),
    )
    now = _now()
    if created:
        conn.execute(
            "INSERT INTO mpps_instance (status, calling_ae, dataset, total_exposures, "
            "organ_dose_mgy, entrance_dose_mgy, sop_instance_uid, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, instance.sop_instance_uid, now, now),
        )
    else:
        conn.execute(
            "UPDATE mpps_instance SET status = ?, calling_ae = ?, dataset = ?, "
            "total_exposures = ?, organ_dose_mgy = ?, entrance_dose_mgy = ?, "
            "updated_at = ? WHERE sop_instance_uid = ?",
            (*values, now, instance.sop_instance_uid),
        )


def _log(conn: sqlite3.Connection, message: ReceivedMessage) -> None:
    conn.execute(
        "INSERT INTO mpps_message (sop_instance_uid, operation, calling_ae, "
        "status_code, dataset, received_at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            message.sop_instance_uid,
            message.operation,
            message.calling_ae,
            message.status_code,
            encode_dataset(message.dataset),
            _now(),
        ),
    )
