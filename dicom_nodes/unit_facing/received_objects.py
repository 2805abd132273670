"""What the unit has stored with us, by SOP Instance UID, and what was held back (quarantine).

A SOP Instance UID names one object for ever (PS3.3 C.12.1.1.1). The Storage SCP looks every
incoming instance up here: unknown, it is stored; known, the incoming object is compared with the
stored one (:class:`Fingerprint`). An identical resend is acknowledged and changes nothing; a
different object under a known UID replaces nothing: it is refused and **held** in quarantine
(its file under ``<storage_dir>/quarantine/``, a row in ``quarantine``), and stays there until a
person decides (``galacto quarantine accept ID --reason TEXT``).

Tables (migration set ``received_objects``): ``received_object`` (SOP Instance UID → file) and
``quarantine`` (one row per object held: why, from whom, its exposures as the header gave them,
and the decision).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from pydicom import dcmread

from dicom_nodes.unit_facing.pixel_data import pixel_digest
from dose.record import MEASURED_FIELDS, ExposureRecord, Source
from storage.writer import Database, Store

MIGRATIONS = sqlite_utils.Migrations("received_objects")
HELD = "held"
ACCEPTED = "accepted"

#: Attributes that say whose object it is and where it belongs (compared on a resend).
IDENTITY_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "AccessionNumber",
)
#: Measured fields not compared: how the object reached us, not what it says.
_NOT_COMPARED = frozenset({"station_ae"})


@MIGRATIONS()
def m001_received_objects(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE received_object (
  sop_instance_uid TEXT PRIMARY KEY,
  sop_class_uid TEXT NOT NULL,
  file TEXT NOT NULL,
  received_at TEXT NOT NULL
) STRICT"""
    )
    db.execute(
        """CREATE TABLE quarantine (
  id INTEGER PRIMARY KEY,
  sop_instance_uid TEXT NOT NULL,
  sop_class_uid TEXT NOT NULL,
  calling_ae TEXT NOT NULL,
  reason TEXT NOT NULL,
  file TEXT NOT NULL,
  exposures_json TEXT NOT NULL,        -- the held object's exposures, as extracted
  received_at TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('held', 'accepted')),
  decided_at TEXT,
  decided_by TEXT,
  decision_reason TEXT
) STRICT"""
    )
    db.execute("CREATE INDEX quarantine_state ON quarantine(state, id)")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Fingerprint:
    """What makes two objects under one SOP Instance UID "the same" (issue 12 §1): the SOP
    Class, the identity attributes, the dose values as extracted, and what the object shows
    (the decoded pixels of an image, the content tree of an SR). Transfer syntax, group
    lengths and private attributes are not part of it."""

    sop_class: str
    identity: str
    dose: str
    content: str

    def difference(self, other: Fingerprint) -> str | None:
        """Why ``other`` is another object (None: the same)."""
        if self.sop_class != other.sop_class:
            return "another SOP Class"
        if self.identity != other.identity:
            return "another patient, study or series"
        if self.dose != other.dose:
            return "other dose values"
        if self.content != other.content:
            return "other pixel data or content"
        return None


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _without_private(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for tag, element in node.items():
            if int(tag[:4], 16) % 2:  # odd group: private
                continue
            value = element.get("Value")
            if isinstance(value, list):
                out[tag] = {**element, "Value": [_without_private(v) for v in value]}
            else:
                out[tag] = element
        return out
    return node


def fingerprint(path: Path, records: Sequence[ExposureRecord], *, is_image: bool) -> Fingerprint:
    """The :class:`Fingerprint` of the file at ``path`` whose exposures are ``records``."""
    if is_image:
        header = dcmread(path, stop_before_pixels=True)
        content = pixel_digest(path)
    else:
        header = dcmread(path)
        tree = [item.to_json_dict() for item in header.get("ContentSequence", [])]
        content = _digest([_without_private(item) for item in tree])
    identity = {kw: str(header.get(kw, "") or "").strip() for kw in IDENTITY_KEYWORDS}
    dose = [
        {name: getattr(r, name) for name in MEASURED_FIELDS if name not in _NOT_COMPARED}
        for r in records
    ]
    return Fingerprint(
        str(header.get("SOPClassUID", "")), _digest(identity), _digest(dose), content
    )


@dataclass(frozen=True)
class QuarantineItem:
    """One object held back, and what became of it."""

    id: int
    sop_instance_uid: str
    sop_class_uid: str
    calling_ae: str
    reason: str
    file: str
    exposures: list[dict[str, Any]]
    received_at: str
    state: str
    decided_at: str | None
    decided_by: str | None
    decision_reason: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> QuarantineItem:
        values = dict(row)
        values["exposures"] = json.loads(values.pop("exposures_json"))
        return cls(**values)

    def records(self) -> list[ExposureRecord]:
        """The held object's exposures as :class:`ExposureRecord` (for logging on accept)."""
        out = []
        for stored in self.exposures:
            values = dict(stored)
            values["view_modifier_codes"] = tuple(values.get("view_modifier_codes") or ())
            values["review_reasons"] = tuple(values.get("review_reasons") or ())
            values["source"] = Source(values["source"])
            out.append(ExposureRecord(**values))
        return out


class ReceivedObjects(Store):
    """The SOP Instance UID index and the quarantine, in the controller's database."""

    migrations = MIGRATIONS

    def __init__(self, db_path: str | Path | Database, *, busy_timeout_s: float = 5.0) -> None:
        super().__init__(db_path, busy_timeout_s=busy_timeout_s)
        self.db_path = self.db.path

    def file_of(self, sop_instance_uid: str) -> Path | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT file FROM received_object WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else Path(row["file"])

    def register(self, sop_instance_uid: str, sop_class_uid: str, path: Path) -> None:
        """Record that ``path`` holds the instance (durable on return; idempotent)."""
        values = (sop_instance_uid, sop_class_uid, str(path), _now())
        self.db.run(
            lambda conn: conn.execute(
                "INSERT INTO received_object VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sop_instance_uid) DO UPDATE SET file = excluded.file",
                values,
            )
        )

    def is_empty(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM received_object LIMIT 1").fetchone() is None

    def register_existing(self, files: Sequence[tuple[str, str, Path]]) -> None:
        """Index objects kept before this index existed: ``(sop uid, sop class, path)``."""
        rows = [(uid, cls, str(path), _now()) for uid, cls, path in files]
        self.db.run(
            lambda conn: conn.executemany(
                "INSERT OR IGNORE INTO received_object VALUES (?, ?, ?, ?)", rows
            )
        )

    # -- quarantine ------------------------------------------------------------------------

    def hold(
        self,
        *,
        sop_instance_uid: str,
        sop_class_uid: str,
        calling_ae: str,
        reason: str,
        records: Sequence[ExposureRecord],
        place: Callable[[int], Path],
    ) -> QuarantineItem:
        """Hold a refused object: ``place(id)`` moves its file into quarantine and returns
        where; the row is committed in the same transaction (a failed move leaves no row)."""
        exposures = [
            {**asdict(r), "source": r.source.value, "known_step": r.known_step} for r in records
        ]
        exposures_json = json.dumps(exposures, default=str)

        def insert(conn: sqlite3.Connection) -> int:
            cursor = conn.execute(
                "INSERT INTO quarantine (sop_instance_uid, sop_class_uid, calling_ae, reason, "
                "file, exposures_json, received_at, state) VALUES (?, ?, ?, ?, '', ?, ?, ?)",
                (
                    sop_instance_uid,
                    sop_class_uid,
                    calling_ae,
                    reason,
                    exposures_json,
                    _now(),
                    HELD,
                ),
            )
            item_id = int(cursor.lastrowid or 0)
            path = place(item_id)
            conn.execute("UPDATE quarantine SET file = ? WHERE id = ?", (str(path), item_id))
            return item_id

        item_id = self.db.run(insert, alone=True)  # the move happens once
        item = self.item(item_id)
        assert item is not None
        return item

    def item(self, item_id: int) -> QuarantineItem | None:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM quarantine WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else QuarantineItem.from_row(row)

    def items(self, state: str | None = None) -> list[QuarantineItem]:
        with self.db.read() as conn:
            return list_quarantine(conn, state)

    def held_count(self) -> int:
        with self.db.read() as conn:
            return int(
                conn.execute("SELECT COUNT(*) FROM quarantine WHERE state = ?", (HELD,)).fetchone()[
                    0
                ]
            )

    def accept(self, item_id: int, operator: str, reason: str) -> QuarantineItem:
        """Record a person's decision to accept a held object (its exposures are then logged
        by the caller). Raises ``KeyError`` for an unknown ID, ``ValueError`` when it was
        already decided or the reason is empty."""
        if not reason.strip() or not operator.strip():
            raise ValueError("a decision needs an operator and a reason")

        def decide(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM quarantine WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise KeyError(item_id)
            if row["state"] != HELD:
                raise ValueError(f"quarantine item {item_id} was already {row['state']}")
            conn.execute(
                "UPDATE quarantine SET state = ?, decided_at = ?, decided_by = ?, "
                "decision_reason = ? WHERE id = ?",
                (ACCEPTED, _now(), operator.strip(), reason.strip(), item_id),
            )

        self.db.run(decide)
        item = self.item(item_id)
        assert item is not None
        return item


def list_quarantine(conn: sqlite3.Connection, state: str | None = None) -> list[QuarantineItem]:
    """Every quarantine item (of one state), oldest first, from a writable or read-only
    connection (``galacto quarantine list`` opens the database read-only)."""
    sql = "SELECT * FROM quarantine"
    params: tuple[Any, ...] = ()
    if state is not None:
        sql += " WHERE state = ?"
        params = (state,)
    rows = conn.execute(sql + " ORDER BY id", params).fetchall()
    return [QuarantineItem.from_row(row) for row in rows]
