"""``galacto dose export --format {csv,json,openrem,nhsbsp}``: streamed, pseudonymised.

Formats (docs/dose.md, "Exports", documents each column and its source):

- ``csv`` / ``json``: every stored column of the log under its own name (units in the names,
  TID 10003 traceable), plus ``exam_key``.
- ``openrem``: the column layout of OpenREM 0.10's mammography CSV export, one row per
  exposure (:data:`OPENREM_HEADER`).
- ``nhsbsp``: the layout of OpenREM 0.10's NHSBSP mammography export, the 15 columns the
  NCCPM breast dose surveys take (:data:`NHSBSP_HEADER`), exam by exam.

**Pseudonyms** (dose.md §6): unless ``--identified``, the accession, the SPS ID and every UID
are replaced by HMAC-SHA256 pseudonyms under ``site.pseudonym_secret`` (stable across
exports), or left out when no secret is set. Either way each row carries an ``exam_key``: the
HMAC of its Study Instance UID (else its accession) under the secret, or, without one, under a
random key made for this export alone — rows group by exam within the export, and two exports
cannot be linked.

Everything is written as it is read, page by page (:mod:`.reader`): memory stays constant.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Any

from dose.survey import (
    LATERALITY_MEANINGS,
    VIEW_MEANINGS,
    NhsbspViewCodes,
    element_symbol,
    nhsbsp_excluded,
)

from .filters import ExposureFilter
from .reader import AuditLog

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

FORMATS = ("csv", "json", "openrem", "nhsbsp")
#: Pseudonyms are this many hex digits of the HMAC-SHA256 (128 bits).
PSEUDONYM_HEX = 32


class Pseudonyms:
    """HMAC-SHA256 pseudonyms under the site secret, and the per-export exam key."""

    def __init__(self, secret: str, *, identified: bool = False) -> None:
        self.identified = identified
        self.has_secret = bool(secret)
        self._secret = secret.encode()
        self._exam_secret = self._secret or secrets.token_bytes(32)
        self._keyed = hmac.new(self._secret, digestmod=hashlib.sha256)  # the key set up once
        # consecutive rows share their exam's UIDs: most lookups are cache hits
        self.pseudonym = lru_cache(maxsize=4096)(self._pseudonym)
        self._exam = lru_cache(maxsize=4096)(self._exam_key)

    def _pseudonym(self, value: str | None) -> str | None:
        return None if value is None else self.make_pseudonym(value)

    def make_pseudonym(self, value: str) -> str:
        """The pseudonym of ``value``: HMAC-SHA256 under the site secret (not cached)."""
        keyed = self._keyed.copy()
        keyed.update(value.encode())
        return keyed.hexdigest()[:PSEUDONYM_HEX]

    def _exam_key(self, value: str) -> str:
        return hmac.digest(self._exam_secret, value.encode(), hashlib.sha256).hex()[:PSEUDONYM_HEX]

    def identifier(self, value: Any) -> Any:
        """An identifying value as the export writes it (itself, a pseudonym, or None)."""
        if value is None or self.identified:
            return value
        return self.pseudonym(str(value)) if self.has_secret else None

    def exam_key(self, study_instance_uid: Any, accession: Any) -> str | None:
        """The exam's key in this export (module docstring); None for a row of no exam."""
        key = study_instance_uid or accession
        return None if key is None else self._exam(str(key))


@dataclass(frozen=True)
class Export:
    """An OpenREM layout: what it selects, its header, and how rows become lines."""

    header: tuple[str, ...]
    #: SQL expressions over ``exposure``, in the order ``lines`` reads them
    columns: tuple[str, ...]
    lines: Callable[[Iterable[Sequence[Any]], Pseudonyms], Iterator[Sequence[Any]]]


# ------------------------------------------------------------------------------ csv / json

#: The SQLite function an export registers on its connection for the pseudonyms.
PSEUDONYM_FUNCTION = "galacto_pseudonym"
#: SQLite takes at most 127 arguments per function: JSON objects are built in parts.
_JSON_PAIRS_PER_CALL = 60


def stored_columns(log: AuditLog) -> list[tuple[str, str, bool]]:
    """The log's stored columns in table order: (name, SQL expression, is text)."""
    return [
        (name, f"exposure.{name}", str(kind).upper() == "TEXT")
        for _, name, kind, *_ in log.conn.execute("PRAGMA table_info(exposure)")
    ]


def own_columns(log: AuditLog, names: Pseudonyms) -> list[tuple[str, str, bool]]:
    """The log's stored columns as the export writes them: (name, SQL expression, is text);
    ``exam_key`` is added to each line in Python (one key per exam, looked up once)."""
    log.conn.create_function(PSEUDONYM_FUNCTION, 1, names.pseudonym, deterministic=True)
    found = []
    for name, stored, is_text in stored_columns(log):
        expression = stored
        if name in IDENTIFYING_COLUMNS and not names.identified:
            expression = f"{PSEUDONYM_FUNCTION}({stored})" if names.has_secret else "NULL"
        found.append((name, expression, is_text))
    return found


#: What each page reads beside the line, for its exam key.
_EXAM_COLUMNS = ("exposure.study_instance_uid", "exposure.accession")

#: Fields per ``printf`` call (SQLite takes at most 127 arguments).
_FIELDS_PER_CALL = 100


def csv_line_sql(columns: Sequence[tuple[str, str, bool]]) -> str:
    """One CSV line per row, built by SQLite's ``printf``: every text quoted, its quotes
    doubled (``"%w"``, RFC 4180), an empty or missing text as ``""``; numbers bare, with 15
    significant digits as the sqlite3 shell writes them, a missing one as nothing.

    Quoting every text costs SQLite nothing beyond the formatting itself, where testing each
    text for a comma, a quote or a line break (``GLOB``) cost as much again."""
    formats = ['"%w"' if is_text else "%s" for _, _, is_text in columns]
    values = [f"coalesce({e}, '')" if is_text else e for _, e, is_text in columns]
    calls = [
        f"printf('{','.join(formats[i : i + _FIELDS_PER_CALL])}', "
        f"{', '.join(values[i : i + _FIELDS_PER_CALL])})"
        for i in range(0, len(columns), _FIELDS_PER_CALL)
    ]
    return " || ',' || ".join(calls)


def csv_pages(log: AuditLog, flt: ExposureFilter, names: Pseudonyms) -> Iterator[list[str]]:
    """The filtered rows as CSV lines, their exam key last, page by page (:mod:`.reader`).

    SQLite builds the lines (:func:`csv_line_sql`). With the site's secret the identifying
    columns are read as stored and pseudonymised here, a page at a time: one HMAC per distinct
    value of the page — once per exam for the values its rows share (accession, study, series,
    MPPS, SPS), once per row only for the row's own SOP Instance and Irradiation Event UIDs."""
    pseudonymised = names.has_secret and not names.identified
    segments: list[str] = []  # SQL: a run of columns as CSV, or one identifier as stored
    raw: list[bool] = []  # is the segment an identifier to pseudonymise?
    run: list[tuple[str, str, bool]] = []
    for name, stored, is_text in stored_columns(log):
        hidden = name in IDENTIFYING_COLUMNS and not names.identified
        if hidden and pseudonymised:
            if run:
                segments.append(csv_line_sql(run))
                raw.append(False)
                run = []
            segments.append(stored)
            raw.append(True)
        else:  # without the secret an identifier is left out
            run.append((name, "NULL" if hidden else stored, is_text))
    if run:
        segments.append(csv_line_sql(run))
        raw.append(False)
    for page in log.pages(flt, [*segments, *_EXAM_COLUMNS]):
        *fields, studies, accessions = zip(*page, strict=True)
        lines: Iterable[str] = fields[0]
        if len(fields) > 1:
            made = [
                _quoted_pseudonyms(names, column) if is_raw else iter(column)
                for column, is_raw in zip(fields, raw, strict=True)
            ]
            lines = map(",".join, zip(*made, strict=True))
        yield list(map(_CSV_KEYED.format, lines, exam_keys(names, studies, accessions)))


def _quoted_pseudonyms(names: Pseudonyms, values: Sequence[str | None]) -> Iterator[str]:
    """``values`` pseudonymised as CSV texts (an HMAC per distinct value)."""
    known = {v: '""' if v is None else f'"{names.make_pseudonym(v)}"' for v in set(values)}
    return map(known.__getitem__, values)


def exam_keys(
    names: Pseudonyms, studies: Sequence[str | None], accessions: Sequence[str | None]
) -> list[str]:
    """Each row's exam key as a text ("" for a row of no exam)."""
    return [names.exam_key(s, a) or "" for s, a in zip(studies, accessions, strict=True)]


#: A CSV line and its exam key.
_CSV_KEYED = '{},"{}"'


def json_object_sql(columns: Sequence[tuple[str, str, bool]]) -> str:
    """One JSON object per row, built by SQLite (numbers with 15 significant digits, NULL as
    null), its keys in table order: ``json_object`` of the first columns, ``json_insert`` of
    the others (SQLite takes at most 127 arguments per call)."""
    n = _JSON_PAIRS_PER_CALL
    sql = "json_object(" + ", ".join(f"'{name}', {e}" for name, e, _ in columns[:n]) + ")"
    for i in range(n, len(columns), n):
        pairs = ", ".join(f"'$.{name}', {e}" for name, e, _ in columns[i : i + n])
        sql = f"json_insert({sql}, {pairs})"
    return sql


def _write_lines(stream: IO[str], pages: Iterable[list[str]], sep: str) -> int:
    """Write the lines of ``pages`` separated by ``sep``; how many."""
    count = 0
    for page in pages:
        if count:
            stream.write(sep)
        stream.write(sep.join(page))
        count += len(page)
    return count


def json_pages(log: AuditLog, flt: ExposureFilter, names: Pseudonyms) -> Iterator[list[str]]:
    """The filtered rows as JSON objects built by SQLite, ``exam_key`` last, page by page."""
    objects = log.pages(flt, [json_object_sql(own_columns(log, names)), *_EXAM_COLUMNS])
    for page in objects:
        lines, studies, accessions = zip(*page, strict=True)
        keys = ("null" if not key else f'"{key}"' for key in exam_keys(names, studies, accessions))
        yield list(map(_JSON_KEYED.format, (line[:-1] for line in lines), keys))


#: A JSON object without its closing brace, and its exam key (hex digits: nothing to escape).
_JSON_KEYED = '{},"exam_key":{}}}'


# ------------------------------------------------------------------------------ OpenREM

#: OpenREM 0.10 mammography CSV export (remapp/exports/exportcsv.py ``exportMG2csv``, the
#: common headers of export_common.py), one row per irradiation event.
OPENREM_HEADER = (
    "Institution",
    "Manufacturer",
    "Model name",
    "Station name",
    "Display name",
    "Accession number",
    "Operator",
    "Study date",
    "Study time",
    "Age",
    "Sex",
    "Test patient?",
    "Study description",
    "Requested procedure",
    "Study Comments",
    "No. events",
    "View",
    "Laterality",
    "Acquisition",
    "Thickness",
    "Radiological thickness",
    "Force",
    "Mag",
    "Area",
    "Mode",
    "Target",
    "Filter",
    "Filter thickness",
    "Focal spot size",
    "kVp",
    "mA",
    "ms",
    "uAs",
    "ESD",
    "AGD",
    "% Fibroglandular tissue",
    "Exposure mode description",
)

_OPENREM_COLUMNS = (
    "manufacturer",
    "model",
    "station_ae",
    "device_serial",
    "accession",
    "operator",
    "acquisition_datetime",
    "patient_age_years",
    "qa_reason",
    "study_instance_uid",
    # No. events: the exam's events in the log, as OpenREM counts its study's
    "(SELECT count(*) FROM exposure AS x WHERE x.study_instance_uid = exposure.study_instance_uid)",
    "view_name",
    "laterality",
    "acquisition_protocol",
    "compressed_thickness_mm",
    "compression_force_n",
    "magnification_factor",
    "exposure_control_mode",
    "anode",
    "filter_material",
    "filter_thickness_mm",
    "focal_spot_mm",
    "kvp",
    "tube_current_ma",
    "exposure_time_ms",
    "exposure_uas",
    "esak_mgy",
    "agd_reported_mgy",
    "glandularity_pct",
    "comments",
)


def _text(value: Any) -> Any:
    """OpenREM writes a comma inside a text as a semicolon, and nothing for None."""
    if value is None:
        return ""
    return value.replace(",", ";") if isinstance(value, str) else value


def _openrem_lines(rows: Iterable[Sequence[Any]], names: Pseudonyms) -> Iterator[Sequence[Any]]:
    for (
        manufacturer, model, station, serial, accession, operator, acquired, age, qa, study,
        events, view, side, protocol, thickness, force, mag, mode, anode, filter_material,
        filter_mm, focal, kvp, ma, ms, uas, esak, agd, glandularity, comments,
    ) in rows:  # fmt: skip
        date, _, time = str(acquired or "").partition("T")
        accession_out = (
            names.identifier(accession)
            if names.identified or names.has_secret
            else names.exam_key(study, accession)  # no secret: the exam still groups
        )
        yield [
            _text(x)
            for x in (
                None,  # Institution: not kept in the dose log
                manufacturer,
                model,
                station,
                station or serial,  # Display name: the unit as galacto knows it
                accession_out,
                operator,
                date or None,
                time[:8] or None,
                age,
                None,  # Sex: not kept (dose.md §6)
                qa,  # Test patient?: why it is a physics/QA exposure
                None,
                None,
                None,
                events,
                VIEW_MEANINGS.get(view, view) if view else None,
                LATERALITY_MEANINGS.get(side, side) if side else None,
                protocol,
                thickness,
                None,  # Radiological thickness: not reported by mammography units
                force,
                mag,
                None,  # Area: not kept
                mode,
                element_symbol(anode),
                element_symbol(filter_material),
                filter_mm,
                focal,
                kvp,
                ma,
                ms,
                uas,
                esak,
                agd,
                glandularity,
                comments,
            )
        ]


# ------------------------------------------------------------------------------ NHSBSP

#: OpenREM 0.10 NHSBSP mammography export (remapp/exports/mg_csv_nhsbsp.py), the NCCPM
#: breast dose survey's 15 columns.
NHSBSP_HEADER = (
    "Survey number",
    "Patient number",
    "View code",
    "kV",
    "Anode",
    "Filter",
    "Thickness",
    "mAs",
    "large cassette used",
    "auto/man",
    "Auto mode",
    "Density setting",
    "Age",
    "Comment",
    "AEC density mode",
)

_NHSBSP_COLUMNS = (
    "coalesce(study_instance_uid, accession, 'row ' || exposure.id)",
    "laterality",
    "view_name",
    "acquisition_protocol",
    "kvp",
    "anode",
    "filter_material",
    "compressed_thickness_mm",
    "exposure_uas",
    "exposure_control_mode",
    "patient_age_years",
)


def _nhsbsp_lines(rows: Iterable[Sequence[Any]], _: Pseudonyms) -> Iterator[Sequence[Any]]:
    """Exam by exam: the patient number counts the exams; views are numbered per exam.
    Exposures without a side, a view, a target or a filter, and scout, biopsy, specimen …
    acquisitions are left out (as OpenREM does)."""
    exam_number, current, codes = 0, None, NhsbspViewCodes()
    for exam, side, view, protocol, kvp, anode, filter_material, thickness, uas, mode, age in rows:
        if exam != current:
            current, codes = exam, NhsbspViewCodes()
            exam_number += 1
        if nhsbsp_excluded(protocol, view) or not anode or not filter_material:
            continue
        code = codes.next_code(side, view)
        if code is None:
            continue
        upper = (mode or "").upper()
        auto = "AUTO" if "AUTO" in upper else "MANUAL" if "MAN" in upper else None
        yield [
            _text(x)
            for x in (
                1,
                exam_number,
                code,
                kvp,
                element_symbol(anode),
                element_symbol(filter_material),
                thickness,
                None if uas is None else uas / 1000.0,
                None,  # large cassette: not applicable to digital units
                auto,
                mode,
                None,  # density setting: no consistent DICOM attribute
                age,
                None,
                None,
            )
        ]


def write_export(
    log: AuditLog, flt: ExposureFilter, name: str, stream: IO[str], names: Pseudonyms
) -> int:
    """Write the filtered exposures to ``stream`` in format ``name``; the rows written."""
    if name in ("csv", "json"):
        if name == "csv":
            header = [column for column, _, _ in stored_columns(log)]
            stream.write(",".join([*header, "exam_key"]) + "\n")
            count = _write_lines(stream, csv_pages(log, flt, names), "\n")
            stream.write("\n" if count else "")
            return count
        stream.write("[\n")
        count = _write_lines(stream, json_pages(log, flt, names), ",\n")
        stream.write("\n]\n" if count else "]\n")
        return count
    if name == "openrem":
        fmt = Export(OPENREM_HEADER, _OPENREM_COLUMNS, _openrem_lines)
        pages = log.pages(flt, fmt.columns)
    elif name == "nhsbsp":
        fmt = Export(NHSBSP_HEADER, _NHSBSP_COLUMNS, _nhsbsp_lines)
        pages = log.pages_by_exam(flt, fmt.columns)
    else:
        raise ValueError(f"unknown export format {name!r}")
    stream.write("\ufeff")  # as OpenREM writes them: a byte-order mark, CRLF lines
    writer = csv.writer(stream, lineterminator="\r\n")
    writer.writerow(fmt.header)
    count = 0
    for row in fmt.lines((row for page in pages for row in page), names):
        writer.writerow(row)
        count += 1
    return count
