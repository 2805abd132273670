"""A synthetic fleet's dose log: many units, many years, realistic spreads (tests and bench).

:func:`write_fleet` creates a dose log (the real schema, through :class:`DoseLog`'s
migrations) and fills it with galactography exams written straight into the table in large
transactions (``executemany``): 5,000,000 rows take minutes, not the hours that one checked
``DoseLog.record`` per exposure would. The rows look like what the checks write: a Dance
figure within a few per cent of the unit's AGD, a few disagreements, a few implausible rows
(a unit's mGy in the dGy field), physics/QA exposures, EUREF levels exceeded with their alerts.

Spreads (per exam, one breast): compressed thickness ~ N(52, 13) mm within 20–100 mm; W/Rh,
Rh/Rh or Mo/Rh by manufacturer; kV rising with thickness; AGD of a contact view about
0.55 + 0.028 mm⁻¹ · t mGy, ×1.9 for magnification, a per-unit factor (0.85–1.15), a slow drift
over the years and a 15 % log-normal scatter. 4–6 exposures per exam: pre-contrast CC and ML
(or MLO), then magnified CC and ML after the injection(s).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acquisition.dose_log import DoseLog

CC, MLO, ML = "399162004", "399368009", "399260004"
MAGNIFICATION = "399163009"
UNIT_MODELS = (
    ("HOLOGIC, Inc.", "Selenia Dimensions", "TUNGSTEN", "RHODIUM"),
    ("GE MEDICAL SYSTEMS", "Senographe Pristina", "RHODIUM", "RHODIUM"),
    ("SIEMENS", "MAMMOMAT Revelation", "TUNGSTEN", "RHODIUM"),
    ("FUJIFILM Corporation", "FDR MS-3500", "TUNGSTEN", "RHODIUM"),
    ("GE MEDICAL SYSTEMS", "Senographe Essential", "MOLYBDENUM", "RHODIUM"),
)
COLUMNS = (
    "sop_instance_uid", "sop_class_uid", "irradiation_event_uid", "study_instance_uid",
    "series_instance_uid", "accession", "sps_id", "station_ae", "manufacturer", "model",
    "device_serial", "acquisition_datetime", "timezone_offset_from_utc", "laterality",
    "view_code", "view_code_scheme", "view_modifier_codes", "magnification_factor", "kvp",
    "exposure_uas", "tube_current_ma", "exposure_time_ms", "anode", "filter_material",
    "filter_thickness_mm", "focal_spot_mm", "compressed_thickness_mm", "compression_force_n",
    "hvl_mm_al", "hvl_source", "esak_mgy", "esak_reference_point", "agd_reported_mgy",
    "distance_source_to_detector_mm", "exposure_control_mode", "acquisition_protocol",
    "patient_age_years", "qa_reason", "sources", "phase", "operator", "agd_computed_mgy",
    "dance_k_mgy", "dance_hvl_mm_al", "dance_g", "dance_c", "dance_s", "agd_computed_basis",
    "dance_check", "plausibility", "level_comparison", "alert_flags", "created_at",
    "updated_at",
)  # fmt: skip
EXAM_VIEWS = (
    ("pre-contrast", CC, False),
    ("pre-contrast", ML, False),
    ("post-injection-1", CC, True),
    ("post-injection-1", ML, True),
    ("post-injection-2", ML, True),
    ("post-injection-2", MLO, False),
)
QA_REASON = "patient ID or name matches '*PHANTOM*'"


def _exposures(
    count: int, *, units: int, years: int, seed: int, start: dt.date
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """Rows (in COLUMNS order), each with the alert it raised (or None), in time order."""
    rng = random.Random(seed)
    fleet = []
    for n in range(units):
        manufacturer, model, anode, filt = UNIT_MODELS[n % len(UNIT_MODELS)]
        fleet.append(
            (f"MAMMO{n + 1:02d}", f"SN{1000 + n}", manufacturer, model, anode, filt,
             rng.uniform(0.85, 1.15))
        )  # fmt: skip
    span_s = years * 365.25 * 86400
    exams = max(1, count // 5)
    written = 0
    t0 = dt.datetime.combine(start, dt.time(8))
    for exam in range(exams):
        if written >= count:
            return
        station, serial, manufacturer, model, anode, filt, factor = fleet[rng.randrange(units)]
        day = t0 + dt.timedelta(seconds=span_s * exam / exams)
        when = day.replace(hour=8 + rng.randrange(10), minute=rng.randrange(60))
        drift = 1.0 + 0.02 * (when.year - start.year) / max(years, 1)
        side = rng.choice("LR")
        thickness = min(100.0, max(20.0, rng.gauss(52, 13)))
        age = rng.randrange(25, 80)
        qa = rng.random() < 0.005
        study = f"2.25.{seed}.{exam}"
        accession = f"A{exam:09d}"
        views = EXAM_VIEWS[: rng.choice((4, 5, 5, 6))]
        for index, (phase, view, magnified) in enumerate(views):
            if written >= count:
                return
            written += 1
            kvp = float(round(25 + 0.13 * (thickness - 20) + rng.gauss(0, 0.7)))
            agd = (0.55 + 0.028 * thickness) * factor * drift
            agd *= (1.9 if magnified else 1.0) * math.exp(rng.gauss(0, 0.15))
            hvl = 0.0067 * kvp + 0.3533
            g = max(0.07, 0.42 - 0.0042 * thickness)
            esak = agd / g
            uas = esak / 0.07 * 1000.0
            dance = agd * rng.uniform(0.96, 1.04)
            check, plausibility, alert = "agrees", "", None
            reported = agd
            roll = rng.random()
            if roll < 0.002:  # mGy written into the dGy field
                reported = agd * 100
                plausibility = (
                    f"agd_reported_mgy {reported:.4g} mGy outside [0.01, 50] mGy; unit "
                    f"suspected: reported AGD {reported:.4g} mGy is 100 × the Dance figure"
                )
                check, alert = "unit suspected", ("implausible", "plausibility", None, reported)
            elif roll < 0.012:
                dance = agd * rng.choice((0.6, 1.5))
                check = "disagrees"
            levels = ""
            flags = ""
            if not magnified and not plausibility and not qa:
                limit = 1.0 + 0.05 * (thickness - 21)  # about the EUREF acceptable curve
                above = reported > limit
                levels = f"EUREF acceptable: {reported:.3f} {'>' if above else '≤'} {limit:.3f} mGy"
                if above:
                    alert = ("euref-acceptable", "EUREF acceptable", limit, reported)
            if alert is not None:
                flags = alert[1]
            stamp = (when + dt.timedelta(seconds=40 * index)).isoformat()
            row = (
                f"{study}.1.{index}", "1.2.840.10008.5.1.4.1.1.1.2", f"{study}.9.{index}", study,
                f"{study}.2", accession, f"S{exam:09d}", station, manufacturer, model, serial,
                stamp, "+0100", side, view, "SCT", MAGNIFICATION if magnified else None,
                1.8 if magnified else 1.07, kvp, uas, 100.0, uas / 100.0, anode, filt, 0.05,
                0.1 if magnified else 0.3, thickness, rng.uniform(60, 140), hvl, "reported",
                esak, "113865", reported, 700.0, "AUTOMATIC", "Galactography", age,
                QA_REASON if qa else None, "image_header,mpps,rdsr", phase, "RT",
                dance, esak, hvl, g, 1.0, 1.042, "K from 111636 (4.2 cm above the support)",
                check, plausibility, levels, flags, stamp, stamp,
            )  # fmt: skip
            yield row, alert


def write_fleet(
    path: Path,
    count: int,
    *,
    units: int = 20,
    years: int = 10,
    seed: int = 1,
    start: dt.date = dt.date(2016, 1, 1),
    batch: int = 50_000,
) -> int:
    """Create the dose log at ``path`` and write ``count`` synthetic exposures; the count."""
    DoseLog(path).close()  # the real schema, migrated
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA cache_size=-1000000")  # 1 GB: index pages stay in memory
    conn.execute("PRAGMA synchronous=OFF")  # a fixture: rebuilt if the machine stops
    insert = f"INSERT INTO exposure ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    alert_sql = (
        "INSERT INTO dose_alert (scope, exposure_id, sop_instance_uid, study_instance_uid, "
        "laterality, level_id, level_name, limit_mgy, value_mgy, detail, raised_at, journaled) "
        "VALUES ('exposure', ?, ?, ?, ?, ?, ?, ?, ?, 'synthetic', ?, 1)"
    )
    written = 0
    rows: list[tuple[Any, ...]] = []
    alerts: list[tuple[int, tuple[Any, ...], tuple[Any, ...]]] = []

    def flush() -> None:
        conn.execute("BEGIN")
        first = conn.execute("SELECT coalesce(max(id), 0) FROM exposure").fetchone()[0] + 1
        conn.executemany(insert, rows)
        conn.executemany(
            alert_sql,
            [
                (first + offset, row[0], row[3], row[13], a[0], a[1], a[2], a[3], row[11])
                for offset, row, a in alerts
            ],
        )
        conn.execute("COMMIT")
        rows.clear()
        alerts.clear()

    try:
        for row, alert in _exposures(count, units=units, years=years, seed=seed, start=start):
            if alert is not None:
                alerts.append((len(rows), row, alert))
            rows.append(row)
            written += 1
            if len(rows) >= batch:
                flush()
        if rows:
            flush()
    finally:
        conn.close()
    return written
