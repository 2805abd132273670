"""Plausibility on ingest: every number against its physical range (issue 9 §2; dose.md §1).

A value outside its range, NaN or infinite, is **flagged, never dropped**: :func:`findings`
returns one reason per offending value ("``kvp 75 kV outside [20, 50] kV``"), which the dose log
writes in the row's ``plausibility`` column. A row with any finding is *implausible*: it stays
in the log and in every export, but is left out of the per-breast totals and the reference-level
comparison, and it raises an alert.

The ranges are deliberately wide: they catch what no mammography unit can have done (a negative
force, an HVL of 5 mm Al, an AGD of 10⁸ mGy), not what is merely unusual. Each carries the
source of its bounds (docs/dose.md lists them). A value inside its range can still be wrong by a
unit factor; the independent Dance check catches that (:func:`unit_suspected`).

Physics/QA exposures (phantoms, calibrations) are recognised by their patient ID or name and
their protocol (:class:`QaPatterns`, site settings): they are kept and flagged, and left out of
patient totals and levels.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """The physical range of one value of the per-exposure record, with where it comes from."""

    field: str
    low: float
    high: float
    unit: str
    source: str
    #: shown in the reason as the value times this (µA·s is shown as mAs)
    shown_as: float = 1.0

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


#: Physical ranges of the record's numbers (record units; sources in docs/dose.md).
RANGES: tuple[Range, ...] = (
    Range(
        "kvp",
        20,
        50,
        "kV",
        "mammography tube voltages: 2D techniques about 24–35 kV, tomosynthesis up to 49 kV",
    ),
    Range(
        "exposure_uas",
        500,
        1_000_000,
        "mAs",
        "AEC exposures of 5–600 mAs; mammography generators stop near 500–1000 mAs",
        shown_as=0.001,
    ),
    Range(
        "tube_current_ma",
        1,
        500,
        "mA",
        "mammography tubes run at 20–200 mA (small focus 20–50 mA)",
    ),
    Range("exposure_time_ms", 1, 10_000, "ms", "mammography exposures last 0.05–5 s"),
    Range(
        "compressed_thickness_mm",
        10,
        120,
        "mm",
        "UK and EUREF dose surveys: 20–110 mm covers nearly every compressed breast; dose.md §1 "
        "names 128 mm as an implausible reported thickness",
    ),
    Range(
        "compression_force_n",
        0,
        300,
        "N",
        "IEC 60601-2-45 limits powered compression to 200 N; 300 N leaves room for manual "
        "compression; a negative force is impossible",
    ),
    Range(
        "hvl_mm_al",
        0.2,
        1.5,
        "mm Al",
        "the MQSA minimum HVL (kV/100 + 0.03 mm Al) is above 0.2 mm Al at 20 kV; tungsten/"
        "aluminium tomosynthesis beams reach about 1 mm Al",
    ),
    Range(
        "esak_mgy",
        0.01,
        100,
        "mGy",
        "an exposure always delivers some air kerma; the thickest magnified views stay below "
        "about 50 mGy at the breast surface",
    ),
    Range(
        "agd_reported_mgy",
        0.01,
        50,
        "mGy",
        "EUREF acceptable MGD is 1.0–6.5 mGy for 20–70 mm PMMA; magnified views of thick "
        "breasts reach a few times that; 50 mGy is far beyond any clinical exposure",
    ),
    Range(
        "magnification_factor",
        1.0,
        2.5,
        "",
        "contact views about 1.0–1.1, magnification views 1.5–2.0 (dose.md §1)",
    ),
    Range(
        "distance_source_to_detector_mm",
        450,
        900,
        "mm",
        "mammography source-to-image distances are 600–700 mm",
    ),
    Range(
        "distance_source_to_entrance_mm",
        150,
        900,
        "mm",
        "the breast surface lies between the tube and the detector (checked against the SID)",
    ),
    Range("focal_spot_mm", 0.05, 0.6, "mm", "nominal focal spots of 0.1 and 0.3 mm (IEC 60336)"),
    Range(
        "filter_thickness_mm",
        0.01,
        2.0,
        "mm",
        "K-edge filters of 0.025–0.075 mm; aluminium filters of 0.5–0.7 mm",
    ),
    Range("glandularity_pct", 0, 100, "%", "a fraction of the breast's fibroglandular tissue"),
    Range("patient_age_years", 0, 130, "years", "a human age: the oldest recorded is 122 years"),
)

RANGE_BY_FIELD: Mapping[str, Range] = {r.field: r for r in RANGES}

#: The prefix of the finding a unit factor between the unit's AGD and ours gives.
UNIT_SUSPECTED = "unit suspected"

#: Ratio bands (reported AGD / independent AGD) that point at a unit error: a factor 10 (cGy,
#: or dGy read as cGy) or 100 (mGy written into the dGy field), either way (issue 9 §2).
UNIT_FACTOR_BANDS: tuple[tuple[float, float], ...] = (
    (7.0, 14.0),
    (70.0, 140.0),
    (1 / 14, 1 / 7),
    (1 / 140, 1 / 70),
)

#: Separator of findings in the ``plausibility`` column.
SEPARATOR = "; "


def _show(value: float) -> str:
    return f"{value:.6g}"


def finding(field: str, value: float) -> str | None:
    """The reason ``value`` of ``field`` is implausible, or None when it is in its range."""
    if math.isnan(value):
        return f"{field} NaN (not a number) as received"
    if math.isinf(value):
        return f"{field} {'+' if value > 0 else '-'}inf (infinite) as received"
    spec = RANGE_BY_FIELD.get(field)
    if spec is None or spec.contains(value):
        return None
    unit = f" {spec.unit}" if spec.unit else ""
    return (
        f"{field} {_show(value * spec.shown_as)}{unit} outside "
        f"[{_show(spec.low * spec.shown_as)}, {_show(spec.high * spec.shown_as)}]{unit}"
    )


def findings(values: Mapping[str, Any]) -> tuple[str, ...]:
    """Every implausible number of one record or row (field → value), in range order."""
    found: list[str] = []
    for name in (*RANGE_BY_FIELD, *(k for k in values if k not in RANGE_BY_FIELD)):
        value = values.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        reason = finding(name, float(value))
        if reason:
            found.append(reason)
    sid = values.get("distance_source_to_detector_mm")
    sed = values.get("distance_source_to_entrance_mm")
    if isinstance(sid, int | float) and isinstance(sed, int | float) and sed >= sid:
        found.append(
            f"distance_source_to_entrance_mm {_show(sed)} mm not shorter than the SID "
            f"{_show(sid)} mm"
        )
    return tuple(found)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def unit_suspected(reported_mgy: float, independent_mgy: float) -> float | None:
    """The ratio reported / independent when it lies in a unit-factor band, else None."""
    if not (_finite(reported_mgy) and _finite(independent_mgy)) or independent_mgy <= 0:
        return None
    ratio = reported_mgy / independent_mgy
    return ratio if any(lo <= ratio <= hi for lo, hi in UNIT_FACTOR_BANDS) else None


def split(text: str | None) -> list[str]:
    """The findings of a ``plausibility`` column."""
    return [part.strip() for part in (text or "").split(";") if part.strip()]


def is_implausible(row: Mapping[str, Any]) -> bool:
    """Whether a dose-log row carries any plausibility finding."""
    return bool(split(row.get("plausibility")))


def is_qa(row: Mapping[str, Any]) -> bool:
    """Whether a dose-log row is a physics/QA exposure."""
    return bool(row.get("qa_reason"))


# ---------------------------------------------------------------------------------- QA


@dataclass(frozen=True)
class QaPatterns:
    """Shell-style patterns (``*PHANTOM*``) that mark an exposure as physics/QA, matched
    case-insensitively against the patient ID and name, and against the protocol texts (Protocol
    Name, Series/Study/Performed Procedure Step Description, the RDSR's Acquisition Protocol).
    Nothing matched is stored: only the reason, e.g. "patient ID matches '*PHANTOM*'"."""

    patient: tuple[str, ...] = ()
    protocol: tuple[str, ...] = ()

    def reason(
        self, *, patient_texts: Iterable[str | None], protocol_texts: Iterable[str | None]
    ) -> str | None:
        """Why the exposure is physics/QA, or None for a patient exposure."""
        for what, texts, patterns in (
            ("patient ID or name", patient_texts, self.patient),
            ("protocol", protocol_texts, self.protocol),
        ):
            for text in texts:
                if not text:
                    continue
                for pattern in patterns:
                    if fnmatch.fnmatchcase(text.strip().upper(), pattern.strip().upper()):
                        return f"{what} matches {pattern!r}"
        return None
