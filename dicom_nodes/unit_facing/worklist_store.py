"""The worklist galacto serves the unit: one row per Scheduled Procedure Step (PS3.4 Annex K).

The exam sequencer publishes one step per exam phase (pre-contrast, post-injection 1,
post-injection 2) and withdraws it when the phase ends. Each row keeps

- the matching keys, normalised (:func:`dicom_nodes.unit_facing.mwl_matching.column_values`), in
indexed
  columns, so a query with 100,000 steps reads only the rows it needs;
- the complete response Identifier, **encoded once at publish time** for both transfer
  syntaxes we accept (Implicit and Explicit VR Little Endian) in UTF-8 (ISO_IR 192) and,
  when every character fits, in Latin-1 (ISO_IR 100). Every return key this SCP supports is
  present, zero-length when the step has no value (the Type 2 return keys of PS3.4
  Table K.6-1 are returned zero-length when unknown).
  A query that asks for a subset gets the encoded bytes trimmed to its keys
  (:func:`trim_identifier`), never a decode/re-encode.

Writes are durable (WAL, ``synchronous=FULL``, see :mod:`storage.database`) and
serialised by one lock; every read opens its own connection, because the SCP answers each
association on its own thread and SQLite connections are bound to the thread that opened them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import struct
import threading
from collections import OrderedDict
from collections.abc import Generator, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils
from pydicom import config as pydicom_config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode

from dicom_nodes.datasets.codes import Code, code_sequence
from dicom_nodes.datasets.identity import Patient, flatten_patient, unflatten_patient
from dicom_nodes.unit_facing.mwl_matching import (
    SPECIFIC_CHARACTER_SET,
    START_DATETIME_COLUMN,
    ReturnKeys,
    WorklistQuery,
    column_values,
    requested_keys,
)
from storage.writer import Database, Store

log = logging.getLogger(__name__)

UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
_PYTHON_CODEC = {UTF8: "utf-8", LATIN1: "latin-1"}


class WorklistError(Exception):
    """Base of the worklist store's errors."""


class InvalidStepError(WorklistError, ValueError):
    """A step whose values are not valid DICOM (VR length, character repertoire ...)."""


@dataclass(frozen=True)
class ScheduledStep:
    """One Scheduled Procedure Step and the request and patient it belongs to.

    Text is plain ``str``; the character set is chosen when the step is encoded. Names are
    DICOM PN strings (``Family^Given^Middle^Prefix^Suffix``). Dates are ``YYYYMMDD``, times
    ``HHMMSS``. Only the Scheduled Procedure Step Sequence's single item is modelled: the
    controller publishes one step per exam phase.
    """

    # Scheduled Procedure Step (PS3.4 Table K.6-1, SPS Sequence item)
    sps_id: str
    sps_start_date: str
    sps_start_time: str
    station_ae: str
    sps_description: str = ""
    modality: str = "MG"
    performing_physician: str = ""
    station_name: str = ""
    protocol_codes: tuple[Code, ...] = ()
    sps_status: str = "SCHEDULED"
    requested_contrast_agent: str = ""
    pre_medication: str = ""
    sps_location: str = ""  # Scheduled Procedure Step Location (0040,0011)
    # Requested Procedure and Imaging Service Request
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    requested_procedure_codes: tuple[Code, ...] = ()
    study_instance_uid: str = ""
    accession_number: str = ""
    priority: str = ""  # Requested Procedure Priority: STAT, HIGH, ROUTINE, MEDIUM, LOW
    referring_physician: str = ""
    requesting_physician: str = ""
    # Patient
    patient: Patient = field(default_factory=Patient)
    patient_weight_kg: float | None = None
    pregnancy_status: int | None = None  # 1 not pregnant, 2 possible, 3 definite, 4 unknown
    medical_alerts: tuple[str, ...] = ()
    allergies: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The step as stored (``step_json``), the patient under its flat keys."""
        values = flatten_patient(dataclasses.asdict(self))
        return json.dumps(values, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ScheduledStep:
        """Inverse of :meth:`to_json`."""
        raw = unflatten_patient(json.loads(text))
        for name in ("protocol_codes", "requested_procedure_codes"):
            raw[name] = tuple(Code(**code) for code in raw[name])
        for name in ("medical_alerts", "allergies"):
            raw[name] = tuple(raw[name])
        return cls(**raw)

    def text_values(self) -> Iterator[str]:
        """Every character string of the step (for choosing a character set)."""
        for value in dataclasses.astuple(self):
            yield from _strings(value)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for part in value:
            yield from _strings(part)


def _put(ds: Dataset, keyword: str, value: Any) -> None:
    """Add one attribute, its value validated for its VR (PS3.5 §6.2) before it is stored.

    The error names the attribute, never the value (which may identify the patient).
    """
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    vr = dictionary_VR(tag)
    try:
        ds.add(DataElement(tag, vr, value, validation_mode=pydicom_config.RAISE))
    except ValueError:
        raise InvalidStepError(f"{keyword}: value not valid for VR {vr}") from None


def build_identifier(step: ScheduledStep, character_set: str = UTF8) -> Dataset:
    """The complete MWL response Identifier of one step (PS3.4 Table K.6-1).

    Every supported return key is present; a key without a value is zero-length.
    Raises :class:`InvalidStepError` for a value its VR does not allow.
    """
    sps_attributes: list[tuple[str, Any]] = [
        ("Modality", step.modality),
        ("RequestedContrastAgent", step.requested_contrast_agent),
        ("ScheduledStationAETitle", step.station_ae),
        ("ScheduledProcedureStepStartDate", step.sps_start_date),
        ("ScheduledProcedureStepStartTime", step.sps_start_time),
        ("ScheduledPerformingPhysicianName", step.performing_physician),
        ("ScheduledProcedureStepDescription", step.sps_description),
        ("ScheduledProtocolCodeSequence", code_sequence(step.protocol_codes)),
        ("ScheduledProcedureStepID", step.sps_id),
        ("ScheduledStationName", step.station_name),
        ("ScheduledProcedureStepLocation", step.sps_location),
        ("PreMedication", step.pre_medication),
        ("ScheduledProcedureStepStatus", step.sps_status),
    ]
    sps = Dataset()
    for keyword, value in sps_attributes:
        _put(sps, keyword, value)

    attributes: list[tuple[str, Any]] = [
        ("SpecificCharacterSet", character_set),
        ("AccessionNumber", step.accession_number),
        ("ReferringPhysicianName", step.referring_physician),
        ("ReferencedStudySequence", []),
        ("ReferencedPatientSequence", []),
        ("PatientName", step.patient.name),
        ("PatientID", step.patient.id),
        ("PatientBirthDate", step.patient.birth_date),
        ("PatientSex", step.patient.sex),
        ("PatientWeight", step.patient_weight_kg),
        ("MedicalAlerts", list(step.medical_alerts) or None),
        ("Allergies", list(step.allergies) or None),
        ("PregnancyStatus", step.pregnancy_status),
        ("StudyInstanceUID", step.study_instance_uid),
        ("RequestingPhysician", step.requesting_physician),
        ("RequestedProcedureDescription", step.requested_procedure_description),
        ("RequestedProcedureCodeSequence", code_sequence(step.requested_procedure_codes)),
        ("ScheduledProcedureStepSequence", [sps]),
        ("RequestedProcedureID", step.requested_procedure_id),
        ("RequestedProcedurePriority", step.priority),
    ]
    ds = Dataset()
    for keyword, value in attributes:
        _put(ds, keyword, value)
    return ds


def _supported_keys() -> ReturnKeys:
    code = Code("0", "DCM", "x")
    keys = requested_keys(build_identifier(ScheduledStep("", "", "", "", protocol_codes=(code,))))
    for sequence_tag in (0x00081110, 0x00081120, 0x00321064):
        keys[sequence_tag] = {}  # any attribute of these items is returned as stored
    sps = keys[0x00400100]
    assert sps is not None
    sps[0x00400008] = {}
    return keys


#: Every return key this SCP supports, as a :data:`ReturnKeys` tree.
SUPPORTED_KEYS: ReturnKeys = _supported_keys()


def _fits(step: ScheduledStep, codec: str) -> bool:
    try:
        for text in step.text_values():
            text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class EncodedStep:
    """A step's row: normalised matching values and its pre-encoded Identifiers."""

    columns: dict[str, str]
    utf8: tuple[bytes, bytes]  # (implicit VR LE, explicit VR LE)
    latin1: tuple[bytes, bytes] | None


def encode_step(step: ScheduledStep) -> EncodedStep:
    """Validate and encode a step (raises :class:`InvalidStepError`).

    pydicom encodes Explicit VR Little Endian once; the Implicit VR form is re-framed from
    it (:func:`explicit_to_implicit`). A pure-ASCII step's Latin-1 form differs only in the
    Specific Character Set value, which has the same length in both terms.
    """
    if not step.sps_id:
        raise InvalidStepError("a scheduled step needs an SPS ID")
    identifier = build_identifier(step, UTF8)
    utf8 = _encode_both(identifier)
    latin1 = None
    if all(text.isascii() for text in step.text_values()):
        latin1 = (_relabel(utf8[0], False), _relabel(utf8[1], True))
    elif _fits(step, "latin-1"):
        latin1 = _encode_both(build_identifier(step, LATIN1))
    return EncodedStep(column_values(identifier), utf8, latin1)


def _encode_both(ds: Dataset) -> tuple[bytes, bytes]:
    explicit = encode(ds, False, True)
    if explicit is None:
        raise InvalidStepError("the step could not be encoded")
    return explicit_to_implicit(explicit), explicit


def _relabel(encoded: bytes, explicit: bool) -> bytes:
    """The same ASCII-only identifier labelled ISO_IR 100 instead of ISO_IR 192."""
    first = next(_elements(encoded, 0, len(encoded), explicit))
    tag, _, value_start, value_end = first
    if tag != SPECIFIC_CHARACTER_SET or encoded[value_start:value_end] != UTF8.encode():
        raise WorklistError("stored identifier does not start with Specific Character Set")
    return encoded[:value_start] + LATIN1.encode() + encoded[value_end:]


# -- trimming pre-encoded identifiers to the requested keys (PS3.5 §7.1, §7.5) ------------

_LONG_LENGTH_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_UNDEFINED_LENGTH = 0xFFFFFFFF
_HEADER = struct.Struct("<HHL")
_EXPLICIT_SQ_HEADER = struct.Struct("<HH2sHL")
_ITEM_GROUP, _ITEM_ELEMENT = 0xFFFE, 0xE000
_DROP: ReturnKeys = {0: None}  # sentinel: "not requested" (a non-empty dict, never a key tree)


def _elements(
    buf: bytes, start: int, end: int, explicit: bool
) -> Iterator[tuple[int, int, int, int]]:
    """(tag, element start, value start, value end) of each element in ``buf[start:end]``.

    Only definite lengths occur: the identifiers are ours, written by pydicom.
    """
    pos = start
    while pos < end:
        group, element = struct.unpack_from("<HH", buf, pos)
        if explicit and buf[pos + 4 : pos + 6] not in _LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<H", buf, pos + 6)
            value = pos + 8
        elif explicit:
            (length,) = struct.unpack_from("<L", buf, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<L", buf, pos + 4)
            value = pos + 8
        if length == _UNDEFINED_LENGTH:
            raise WorklistError("undefined length in a stored identifier")
        yield (group << 16) | element, pos, value, value + length
        pos = value + length


def _trim(buf: bytes, start: int, end: int, keys: ReturnKeys, explicit: bool) -> bytes:
    """Requested elements of ``buf[start:end]``; runs of kept elements are copied as one slice."""
    out = []
    run_start = -1  # start of the current run of elements kept whole
    for tag, elem_start, value_start, value_end in _elements(buf, start, end, explicit):
        sub = keys.get(tag, _DROP) if tag != SPECIFIC_CHARACTER_SET else None
        if not sub:  # None or {}: keep whole
            if run_start < 0:
                run_start = elem_start
            continue
        if run_start >= 0:
            out.append(buf[run_start:elem_start])
            run_start = -1
        if sub is _DROP:
            continue
        items = []
        for _, _, content_start, content_end in _elements(buf, value_start, value_end, False):
            content = _trim(buf, content_start, content_end, sub, explicit)
            items.append(_HEADER.pack(_ITEM_GROUP, _ITEM_ELEMENT, len(content)) + content)
        value = b"".join(items)
        group, element = tag >> 16, tag & 0xFFFF
        if explicit:
            out.append(_EXPLICIT_SQ_HEADER.pack(group, element, b"SQ", 0, len(value)))
        else:
            out.append(_HEADER.pack(group, element, len(value)))
        out.append(value)
    if run_start >= 0:
        out.append(buf[run_start:end])
    return b"".join(out)


def _to_implicit(buf: bytes, start: int, end: int) -> bytes:
    out = []
    for tag, elem_start, value_start, value_end in _elements(buf, start, end, True):
        group, element = tag >> 16, tag & 0xFFFF
        if buf[elem_start + 4 : elem_start + 6] != b"SQ":
            out.append(_HEADER.pack(group, element, value_end - value_start))
            out.append(buf[value_start:value_end])
            continue
        items = []
        for _, _, content_start, content_end in _elements(buf, value_start, value_end, False):
            content = _to_implicit(buf, content_start, content_end)
            items.append(_HEADER.pack(_ITEM_GROUP, _ITEM_ELEMENT, len(content)) + content)
        value = b"".join(items)
        out.append(_HEADER.pack(group, element, len(value)) + value)
    return b"".join(out)


def explicit_to_implicit(encoded: bytes) -> bytes:
    """Re-frame an Explicit VR Little Endian data set as Implicit VR Little Endian
    (PS3.5 §7.1.2 → §7.1.3): same values, no VR fields, 4-byte lengths. Valid only for
    attributes whose VR the data dictionary fixes, which holds for every MWL key."""
    return _to_implicit(encoded, 0, len(encoded))


def covers(requested: ReturnKeys, supported: ReturnKeys = SUPPORTED_KEYS) -> bool:
    """True if ``requested`` asks for every supported key (no trimming needed)."""
    for tag, sub in supported.items():
        if tag not in requested:
            return False
        wanted = requested[tag]
        if sub and wanted and not covers(wanted, sub):
            return False
        if sub == {} and wanted:
            return False
    return True


def trim_identifier(encoded: bytes, keys: ReturnKeys, *, explicit_vr: bool) -> bytes:
    """Keep only the requested attributes (and Specific Character Set) of an encoded
    Little Endian identifier; sequences are re-framed with their new definite lengths."""
    return _trim(encoded, 0, len(encoded), keys, explicit_vr)


# -- the store -----------------------------------------------------------------------------

MIGRATIONS = sqlite_utils.Migrations("worklist_store")


@MIGRATIONS()
def m001_worklist_step(db: sqlite_utils.Database) -> None:
    """One row per Scheduled Procedure Step; matching keys indexed (PS3.4 Table K.6-1)."""
    db.execute(
        """
        CREATE TABLE worklist_step (
            sps_id TEXT PRIMARY KEY,
            sps_start_date TEXT NOT NULL,
            sps_start_time TEXT NOT NULL,
            sps_start_datetime TEXT NOT NULL,
            station_ae TEXT NOT NULL,
            modality TEXT NOT NULL,
            performing_physician TEXT NOT NULL,
            sps_status TEXT NOT NULL,
            patient_name TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            patient_birth_date TEXT NOT NULL,
            patient_sex TEXT NOT NULL,
            accession TEXT NOT NULL,
            requested_procedure_id TEXT NOT NULL,
            study_uid TEXT NOT NULL,
            step_json TEXT NOT NULL,
            identifier_utf8_implicit BLOB NOT NULL,
            identifier_utf8_explicit BLOB NOT NULL,
            identifier_latin1_implicit BLOB,
            identifier_latin1_explicit BLOB,
            revision INTEGER NOT NULL,
            published_at TEXT NOT NULL
        ) STRICT
        """
    )
    for name, columns in (
        ("station_date", "station_ae, sps_start_date, sps_start_time"),
        ("start", "sps_start_datetime, sps_id"),
        ("accession", "accession"),
        ("patient_id", "patient_id"),
        ("patient_name", "patient_name"),
        ("requested_procedure", "requested_procedure_id"),
        ("study_uid", "study_uid"),
    ):
        db.execute(f"CREATE INDEX worklist_step_{name} ON worklist_step ({columns})")


@MIGRATIONS()
def m002_published_step(db: sqlite_utils.Database) -> None:
    """Every SPS ID ever offered, kept after the step is withdrawn.

    The dose log asks whether an exposure belongs to a step this controller scheduled; images
    and dose reports for a phase may arrive after its step left the worklist.
    """
    db.execute(
        "CREATE TABLE worklist_published "
        "(sps_id TEXT PRIMARY KEY, first_published_at TEXT NOT NULL) STRICT"
    )
    db.execute(
        "INSERT OR IGNORE INTO worklist_published SELECT sps_id, published_at FROM worklist_step"
    )


_MATCH_COLUMNS = (
    "sps_id",
    "sps_start_date",
    "sps_start_time",
    START_DATETIME_COLUMN,
    "station_ae",
    "modality",
    "performing_physician",
    "sps_status",
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "patient_sex",
    "accession",
    "requested_procedure_id",
    "study_uid",
)
_INSERT = (
    f"INSERT OR REPLACE INTO worklist_step ({', '.join(_MATCH_COLUMNS)}, step_json,"
    " identifier_utf8_implicit, identifier_utf8_explicit, identifier_latin1_implicit,"
    f" identifier_latin1_explicit, revision, published_at) VALUES ({', '.join('?' * 22)})"
)


def _freeze(keys: ReturnKeys) -> tuple[Any, ...]:
    """A hashable form of a return-key tree."""
    return tuple(sorted((tag, None if sub is None else _freeze(sub)) for tag, sub in keys.items()))


class _LruCache:
    """Trimmed identifiers by (SPS ID, revision, requested keys, syntax, character set).

    A unit polls with the same keys again and again; the revision changes on every publish,
    so a republished step is never answered from a stale entry.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._entries[key] = value
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)


_LAST_REVISION = "SELECT coalesce(max(revision), 0) FROM worklist_step"


class WorklistStore(Store):
    """The controller's worklist in SQLite: publish, withdraw, query.

    Safe to share between threads: writes go to the database's one writer
    (:class:`storage.writer.Database`), reads to the calling thread's read connection.
    """

    migrations = MIGRATIONS

    def __init__(self, path: str | Path | Database, *, trimmed_cache_size: int = 20_000) -> None:
        super().__init__(path)
        self.path = self.db.path
        self._trimmed = _LruCache(trimmed_cache_size)

    def publish(self, step: ScheduledStep) -> None:
        """Offer ``step`` on the worklist (replacing a step with the same SPS ID)."""
        self.publish_many([step])

    def publish_many(self, steps: Iterable[ScheduledStep]) -> int:
        """Publish several steps in one durable transaction; returns how many."""
        now = datetime.now(UTC).isoformat()
        rows = []
        for step in steps:
            encoded = encode_step(step)
            latin1 = encoded.latin1 or (None, None)
            rows.append(
                (
                    *(encoded.columns[c] for c in _MATCH_COLUMNS),
                    step.to_json(),
                    *encoded.utf8,
                    *latin1,
                )
            )

        def insert(conn: sqlite3.Connection) -> None:
            (last,) = conn.execute(
                "SELECT coalesce(max(revision), 0) FROM worklist_step"
            ).fetchone()
            conn.executemany(
                _INSERT, [(*row, last + n, now) for n, row in enumerate(rows, start=1)]
            )
            conn.executemany(
                "INSERT OR IGNORE INTO worklist_published VALUES (?, ?)",
                [(row[0], now) for row in rows],
            )

        self.db.run(insert)
        log.debug("published %d scheduled step(s)", len(rows))
        return len(rows)

    def withdraw(self, sps_id: str) -> bool:
        """Take a step off the worklist; False if it was not there."""
        removed: int = self.db.run(
            lambda conn: (
                conn.execute("DELETE FROM worklist_step WHERE sps_id = ?", (sps_id,)).rowcount
            )
        )
        return removed > 0

    def was_published(self, sps_id: str) -> bool:
        """True if ``sps_id`` was ever offered on this worklist, withdrawn or not."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM worklist_published WHERE sps_id = ?", (sps_id,)
            ).fetchone()
        return row is not None

    def get(self, sps_id: str) -> ScheduledStep | None:
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT step_json FROM worklist_step WHERE sps_id = ?", (sps_id,)
            ).fetchone()
        return None if row is None else ScheduledStep.from_json(row[0])

    def count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM worklist_step").fetchone()[0])

    def find(
        self,
        query: WorklistQuery,
        *,
        explicit_vr: bool = False,
        latin1: bool = False,
    ) -> Generator[bytes, None, None]:
        """Encoded response Identifiers of the matching steps, by SPS start date-time.

        ``latin1``: answer in ISO_IR 100 where the step fits it (ISO_IR 192 otherwise).
        A generator holding a read connection: close it (or exhaust it) when done.
        """
        syntax = "explicit" if explicit_vr else "implicit"
        blob = f"identifier_utf8_{syntax}"
        if latin1:
            blob = f"coalesce(identifier_latin1_{syntax}, {blob})"
        where, params = query.sql()
        sql = (
            f"SELECT {', '.join(_MATCH_COLUMNS)}, {blob}, revision FROM worklist_step"
            f" WHERE {where} ORDER BY {START_DATETIME_COLUMN}, sps_id"
        )
        keys = query.return_keys
        whole = covers(keys)
        matches = query.row_matcher(_MATCH_COLUMNS)
        variant = (_freeze(keys), explicit_vr, latin1)
        n_columns = len(_MATCH_COLUMNS)
        with self.db.read() as conn:
            cursor = conn.execute(sql, params)
            cursor.row_factory = None
            try:
                for row in cursor:
                    if not matches(row):
                        continue
                    if whole:
                        yield row[n_columns]
                        continue
                    cache_key = (row[0], row[n_columns + 1], variant)
                    encoded = self._trimmed.get(cache_key)
                    if encoded is None:
                        encoded = trim_identifier(row[n_columns], keys, explicit_vr=explicit_vr)
                        self._trimmed.put(cache_key, encoded)
                    yield encoded
            finally:
                cursor.close()
