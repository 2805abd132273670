"""Plausibility on ingest: physical ranges, NaN and ∞, unit factors, physics/QA (issue 9 §2)."""

from __future__ import annotations

import math

import pytest

from dose import plausibility as p
from dose.record import MEASURED_FIELDS

# The absurd values of the findings, each with the reason the row must carry.
ABSURD = [
    ("agd_reported_mgy", 1e8, "agd_reported_mgy 1e+08 mGy outside [0.01, 50] mGy"),
    ("esak_mgy", -5.0, "esak_mgy -5 mGy outside [0.01, 100] mGy"),
    ("hvl_mm_al", 5.0, "hvl_mm_al 5 mm Al outside [0.2, 1.5] mm Al"),
    ("compression_force_n", -20.0, "compression_force_n -20 N outside [0, 300] N"),
    ("agd_reported_mgy", -1.2, "agd_reported_mgy -1.2 mGy outside [0.01, 50] mGy"),
    ("compressed_thickness_mm", 128.0, "compressed_thickness_mm 128 mm outside [10, 120] mm"),
    ("kvp", 75.0, "kvp 75 kV outside [20, 50] kV"),
    ("exposure_uas", 5_000_000.0, "exposure_uas 5000 mAs outside [0.5, 1000] mAs"),
    ("magnification_factor", 4.0, "magnification_factor 4 outside [1, 2.5]"),
    ("distance_source_to_detector_mm", 7000.0, "outside [450, 900] mm"),
]


@pytest.mark.parametrize(("field", "value", "reason"), ABSURD)
def test_a_value_outside_its_range_is_named_with_its_range(
    field: str, value: float, reason: str
) -> None:
    found = p.findings({field: value})
    assert len(found) == 1
    assert reason in found[0]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(math.nan, "esak_mgy NaN (not a number) as received"), (math.inf, "esak_mgy +inf")],
)
def test_nan_and_infinity_are_flagged_as_such(value: float, reason: str) -> None:
    assert p.findings({"esak_mgy": value}) == (p.finding("esak_mgy", value),)
    assert reason in p.findings({"esak_mgy": value})[0]


def test_a_clinical_exposure_has_no_finding() -> None:
    clinical = {
        "kvp": 29.0,
        "exposure_uas": 80_000.0,
        "tube_current_ma": 100.0,
        "exposure_time_ms": 800.0,
        "compressed_thickness_mm": 45.0,
        "compression_force_n": 110.0,
        "hvl_mm_al": 0.52,
        "esak_mgy": 5.67,
        "agd_reported_mgy": 1.23,
        "magnification_factor": 1.0,
        "distance_source_to_detector_mm": 700.0,
        "distance_source_to_entrance_mm": 655.0,
        "focal_spot_mm": 0.3,
        "filter_thickness_mm": 0.05,
        "glandularity_pct": 30.0,
        "patient_age_years": 38,
    }
    assert p.findings(clinical) == ()


def test_the_surface_cannot_lie_beyond_the_detector() -> None:
    found = p.findings(
        {"distance_source_to_detector_mm": 650, "distance_source_to_entrance_mm": 660}
    )
    assert found == ("distance_source_to_entrance_mm 660 mm not shorter than the SID 650 mm",)


def test_every_range_is_a_record_field_with_a_source() -> None:
    for spec in p.RANGES:
        assert spec.field in MEASURED_FIELDS
        assert spec.low < spec.high
        assert len(spec.source) > 20


@pytest.mark.parametrize(
    ("reported", "independent", "suspected"),
    [
        (137.0, 1.57, True),  # mGy written into the dGy field: ×100 (the finding)
        (1.57 * 10, 1.57, True),  # ×10
        (1.57 / 10, 1.57, True),
        (1.57 / 100, 1.57, True),
        (1.57 * 1.3, 1.57, False),  # a 30 % disagreement is not a unit
        (1.57 * 3, 1.57, False),
        (1.57 * 25, 1.57, False),
        (1.0, 0.0, False),
    ],
)
def test_unit_suspected_bands(reported: float, independent: float, suspected: bool) -> None:
    assert (p.unit_suspected(reported, independent) is not None) is suspected


def test_qa_patterns_match_patient_and_protocol_without_keeping_them() -> None:
    qa = p.QaPatterns(patient=("*PHANTOM*", "QA*"), protocol=("*QC *",))
    assert qa.reason(patient_texts=("cdmam phantom",), protocol_texts=()) == (
        "patient ID or name matches '*PHANTOM*'"
    )
    assert qa.reason(patient_texts=("P123",), protocol_texts=("Weekly QC flat field",)) == (
        "protocol matches '*QC *'"
    )
    assert qa.reason(patient_texts=("P123", None), protocol_texts=("Galactography L",)) is None
