"""Reconciling and checking exposure records into the dose log (the writes of
:mod:`acquisition.dose_log`).

Pure functions of a connection inside the writer's transaction (no I/O of their own, no clock
but :func:`utc_now`): :func:`reconcile` is the write that folds records into ``exposure`` rows
(matching by image, Irradiation Event UID, MPPS item, or technique; merging; flagging what
disagrees) and checks each written row against the :class:`~dose.policy.DosePolicy`, raising
its alerts (table ``dose_alert``). :mod:`acquisition.dose_log` owns the schema and the API.
"""

from __future__ import annotations

import datetime
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dose import plausibility
from dose.policy import IMPLAUSIBLE_ALERT, IMPLAUSIBLE_ALERT_NAME, AlertSpec, DosePolicy
from dose.record import MEASURED_FIELDS, ExposureRecord
from dose.totals import per_breast_totals

log = logging.getLogger(__name__)

#: Columns of ``exposure`` that come from an :class:`ExposureRecord` (a test checks that this
#: is every measured field of the record: a new field needs a new migration).
RECORD_COLUMNS: tuple[str, ...] = (*MEASURED_FIELDS, "mpps_item_index")

#: States of an alert (table ``dose_alert``).
ALERT_OPEN, ALERT_ACKNOWLEDGED = "open", "acknowledged"


def utc_now() -> str:
    """The time of a write (UTC, ISO 8601 with microseconds)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")


def _to_sql(name: str, value: Any) -> Any:
    if isinstance(value, tuple):
        return ",".join(value) if value else None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # SQLite keeps no NaN; the plausibility finding records what came
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


Work = Callable[[sqlite3.Connection], None]


def reconcile(
    exposures: Sequence[ExposureRecord], policy: DosePolicy, gained: list[int] | None = None
) -> Work:
    """The write that reconciles and checks ``exposures`` into the table; ``gained[0]`` (when
    given) is then how many rows the table gained."""
    counted = gained if gained is not None else [0]

    def work(conn: sqlite3.Connection) -> None:
        counted[0] = 0  # a batch whose group transaction failed runs again on its own
        for exposure in exposures:
            exposure_id, added = _record_one(conn, exposure)
            counted[0] += added
            _check_row(conn, exposure_id, plausibility.findings(_fields(exposure)), policy)

    return work


def _fields(record: ExposureRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in RECORD_COLUMNS}


def _image_uids(record: ExposureRecord) -> list[str]:
    """The record's image and the other images of its exposure (For Processing)."""
    own = [record.sop_instance_uid] if record.sop_instance_uid else []
    return [*own, *(uid for uid in record.other_image_uids if uid and uid not in own)]


def _matching_ids(conn: sqlite3.Connection, record: ExposureRecord) -> list[int]:
    ids: set[int] = set()
    for uid in _image_uids(record):
        ids.update(
            row[0]
            for row in conn.execute(
                "SELECT exposure_id FROM exposure_image WHERE sop_instance_uid = ?", (uid,)
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


#: The review note of a record reconciled by its technique rather than by a shared UID.
MATCHED_BY_TECHNIQUE = (
    "same exposure as another source by unit, acquisition time, side, view, kV and mAs "
    "(no shared UID)"
)


def _same_exposure_ids(conn: sqlite3.Connection, record: ExposureRecord) -> list[int]:
    """Rows of the same exposure that share no UID with ``record``: older units send a For
    Processing and a For Presentation image of one exposure without an Irradiation Event UID
    (and their RDSR, if any, has one the images lack). Same unit (serial, else AE title),
    same acquisition time to the second, same side and view, kV and mAs within 1 %; never two
    rows that carry different Irradiation Event UIDs. Two exposures cannot share all of these:
    the unit needs far more than a second between exposures."""
    when = (record.acquisition_datetime or "")[:19]
    unit_column, unit = (
        ("device_serial", record.device_serial)
        if record.device_serial
        else ("station_ae", record.station_ae)
    )
    if (
        len(when) < 19
        or not unit
        or not record.laterality
        or not record.view_code
        or record.kvp is None
        or record.exposure_uas is None
    ):
        return []
    rows = conn.execute(
        f"SELECT id, irradiation_event_uid, kvp, exposure_uas FROM exposure "
        f"WHERE acquisition_datetime >= ? AND acquisition_datetime < ? AND {unit_column} = ? "
        "AND laterality = ? AND view_code = ?",
        (when, when + "\x7f", unit, record.laterality, record.view_code),
    ).fetchall()
    return sorted(
        row["id"]
        for row in rows
        if not (row["irradiation_event_uid"] and record.irradiation_event_uid)
        and row["kvp"] is not None
        and row["exposure_uas"] is not None
        and not _differs(float(row["kvp"]), float(record.kvp))
        and not _differs(float(row["exposure_uas"]), float(record.exposure_uas))
    )


def _record_one(conn: sqlite3.Connection, record: ExposureRecord) -> tuple[int, int]:
    """Insert or merge one record; returns the row id and how many rows the table gained (1
    for a new row; 0 for a merge, less when the record joined several rows into one). A NaN
    or infinite value is stored as NULL (SQLite cannot keep NaN): its plausibility finding
    keeps what was received."""
    ids = _matching_ids(conn, record)
    if not ids:
        ids = _same_exposure_ids(conn, record)
        if ids:
            record = record.with_values(
                review_reasons=(*record.review_reasons, MATCHED_BY_TECHNIQUE)
            )
    incoming = {name: _to_sql(name, value) for name, value in _fields(record).items()}
    now = utc_now()
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
        target, added = int(cursor.lastrowid or 0), 1
    else:
        added = 1 - len(ids)
        target = ids[0]
        rows = [
            dict(conn.execute("SELECT * FROM exposure WHERE id = ?", (i,)).fetchone()) for i in ids
        ]
        merged = rows[0]
        for other in rows[1:]:
            merged = _merge(merged, other, same_source=False, new_sources=other["sources"])
            merged["plausibility"] = _union(merged["plausibility"], other["plausibility"])
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
            for table, column in (("exposure_image", "exposure_id"), ("dose_alert", "exposure_id")):
                conn.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (target, other_id)
                )
            conn.execute("DELETE FROM exposure WHERE id = ?", (other_id,))
        updates = [*RECORD_COLUMNS, "sources", "unknown_step", "review_reasons", "plausibility"]
        conn.execute(
            f"UPDATE exposure SET {', '.join(f'{c} = ?' for c in updates)}, updated_at = ? "
            "WHERE id = ?",
            (*(merged[c] for c in updates), now, target),
        )
    for uid in _image_uids(record):
        conn.execute(
            "INSERT OR REPLACE INTO exposure_image (sop_instance_uid, exposure_id) VALUES (?, ?)",
            (uid, target),
        )
    return target, added


def _union(stored: str | None, new: Sequence[str] | str | None) -> str:
    """Findings of ``stored`` followed by those of ``new`` not already there."""
    found = plausibility.split(stored)
    for item in plausibility.split(new) if isinstance(new, str | None) else new:
        if item not in found:
            found.append(item)
    return plausibility.SEPARATOR.join(found)


def _check_row(
    conn: sqlite3.Connection, exposure_id: int, received: Sequence[str], policy: DosePolicy
) -> None:
    """Apply the dose checks to one row just written (same transaction), raise its alerts.

    A failure of the checks themselves never loses the exposure: the row is committed with
    the failure as a finding (so it is flagged and raises an alert)."""
    row = dict(conn.execute("SELECT * FROM exposure WHERE id = ?", (exposure_id,)).fetchone())
    findings = tuple(plausibility.split(_union(row["plausibility"], received)))
    try:
        assessment = policy.assess(row, findings)
        columns = assessment.columns()
        alerts = list(assessment.alerts)
    except Exception as exc:
        log.exception("dose checks failed on exposure %d; the exposure is kept", exposure_id)
        failure = f"dose checks failed ({type(exc).__name__}: {exc})"
        columns = {"plausibility": _union(row["plausibility"], [*received, failure])}
        alerts = [AlertSpec(IMPLAUSIBLE_ALERT, IMPLAUSIBLE_ALERT_NAME, None, None, failure)]
    conn.execute(
        f"UPDATE exposure SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
        (*columns.values(), exposure_id),
    )
    row.update(columns)
    for alert in alerts:
        _raise_alert(conn, "exposure", row, alert)
    _check_exam_breast(conn, row, policy)


def _check_exam_breast(conn: sqlite3.Connection, row: dict[str, Any], policy: DosePolicy) -> None:
    """The exam levels per breast (scope: the study, as TID 10005 accumulates) after a write."""
    study, side = row.get("study_instance_uid"), row.get("laterality")
    levels = [level for level in policy.levels.enabled("exam-breast") if level.mgy is not None]
    if not study or side not in ("L", "R") or not levels:
        return
    rows = [
        dict(r)
        for r in conn.execute(
            "SELECT laterality, agd_reported_mgy, plausibility, qa_reason FROM exposure "
            "WHERE study_instance_uid = ? AND laterality = ?",
            (study, side),
        )
    ]
    total = per_breast_totals(rows).breasts[side]
    for alert in policy.exam_breast_alerts(total):
        _raise_alert(conn, "exam-breast", row, alert)


def _raise_alert(
    conn: sqlite3.Connection, scope: str, row: Mapping[str, Any], alert: AlertSpec
) -> None:
    """Insert an alert unless the same one was raised before (per exposure and level, or per
    study, breast and level): an alert, once raised, stays until acknowledged."""
    if scope == "exposure":
        exists = conn.execute(
            "SELECT 1 FROM dose_alert WHERE scope = 'exposure' AND exposure_id = ? "
            "AND level_id = ?",
            (row["id"], alert.level_id),
        ).fetchone()
    else:
        exists = conn.execute(
            "SELECT 1 FROM dose_alert WHERE scope = 'exam-breast' AND study_instance_uid = ? "
            "AND laterality = ? AND level_id = ?",
            (row["study_instance_uid"], row["laterality"], alert.level_id),
        ).fetchone()
    if exists:
        return
    conn.execute(
        "INSERT INTO dose_alert (scope, exposure_id, sop_instance_uid, study_instance_uid, "
        "laterality, level_id, level_name, limit_mgy, value_mgy, detail, raised_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            scope,
            row["id"],
            row.get("sop_instance_uid"),
            row.get("study_instance_uid"),
            row.get("laterality"),
            alert.level_id,
            alert.level_name,
            alert.limit_mgy,
            alert.value_mgy,
            alert.detail,
            utc_now(),
        ),
    )


#: The columns of the row's first image: another image of the same exposure never replaces them.
_IMAGE_FIELDS = ("sop_instance_uid", "sop_class_uid", "series_instance_uid")

#: A value and the column that says where it was taken: taken together or not at all.
_PAIRED = {"esak_reference_point": "esak_mgy", "hvl_source": "hvl_mm_al"}


def _merge(
    stored: dict[str, Any], incoming: dict[str, Any], *, same_source: bool, new_sources: str
) -> dict[str, Any]:
    """Fill missing fields of ``stored`` from ``incoming``; flag cross-source disagreements.

    The Entrance Exposure at RP goes with its reference point: an image's Entrance Dose in mGy
    (no reference point) and an RDSR's 111636 at 4.2 cm above the support are two quantities,
    not a disagreement; the value that names its reference point is kept."""
    merged = dict(stored)
    reasons = _reasons(stored.get("review_reasons"))
    for name in RECORD_COLUMNS:
        new = incoming.get(name)
        if new is None or name in _PAIRED:
            continue
        old = merged.get(name)
        if name in _IMAGE_FIELDS:  # the row's first image names it; its other images are
            if old is None:  # in exposure_image (For Processing and For Presentation)
                merged[name] = new
            continue
        take = old is None or same_source
        if name == "esak_mgy" and not take:
            old_point, new_point = (
                merged.get("esak_reference_point"),
                incoming.get("esak_reference_point"),
            )
            if old_point != new_point:
                take = old_point is None  # the one with a known reference point wins
                if not take:
                    continue  # two known points: keep the first, nothing disagrees
        if take:
            merged[name] = new
            for paired, value in _PAIRED.items():
                if value == name:
                    merged[paired] = incoming.get(paired)
        elif _differs(old, new):
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
