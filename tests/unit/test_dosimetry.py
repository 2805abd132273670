"""Dose units, the inverse-square correction and the Dance model (dose.md §1, §3)."""

from __future__ import annotations

import pytest

from dose import dance as d


def test_dgy_to_mgy_and_back() -> None:
    assert d.dgy_to_mgy(0.0125) == pytest.approx(1.25)
    assert d.mgy_to_dgy(1.25) == pytest.approx(0.0125)


def test_inverse_square_example_of_dose_md() -> None:
    # SID 700 mm, RP 42 mm above the support, 60 mm breast: (658 / 640)² = 1.05704
    assert d.inverse_square_factor(658, 640) == pytest.approx(1.05704, abs=5e-6)
    k = d.kerma_at_breast_surface_mgy(
        10.0,
        reference_point=d.RP_4_2_CM_ABOVE_SUPPORT,
        focus_to_support_mm=700,
        thickness_mm=60,
    )
    assert k == pytest.approx(10.5704, abs=5e-5)


def test_surface_reference_point_needs_no_correction() -> None:
    k = d.kerma_at_breast_surface_mgy(
        3.3, reference_point=d.RP_AT_SURFACE_OF_PATIENT, focus_to_support_mm=700, thickness_mm=60
    )
    assert k == 3.3


def test_unknown_reference_point_is_refused() -> None:
    with pytest.raises(d.DosimetryError, match="reference point"):
        d.kerma_at_breast_surface_mgy(
            1.0, reference_point="999", focus_to_support_mm=700, thickness_mm=60
        )


@pytest.mark.parametrize(
    ("hvl", "thickness_mm", "expected"),
    [
        (0.30, 20, 0.390),
        (0.50, 45, 0.285),
        (0.55, 60, 0.236),
        (0.60, 110, 0.1385),
        (0.40, 90, 0.1106),
    ],
)
def test_g_at_table_points(hvl: float, thickness_mm: float, expected: float) -> None:
    assert d.g_factor(hvl, thickness_mm).value == pytest.approx(expected)


def test_g_bilinear_midpoint() -> None:
    # HVL 0.425 between 0.40/0.45, 2.5 cm between 2/3 cm: mean of the four corners
    # (0.473 + 0.342 + 0.509 + 0.374) / 4 = 0.4245
    assert d.g_factor(0.425, 25).value == pytest.approx(0.4245)


def test_g_linear_along_one_axis() -> None:
    # HVL 0.50 (a row), 4.75 cm between 4.5 (0.285) and 5 (0.258): 0.2715
    assert d.g_factor(0.50, 47.5).value == pytest.approx(0.2715)


@pytest.mark.parametrize(("hvl", "thickness_mm"), [(0.29, 40), (0.61, 40), (0.4, 19), (0.4, 111)])
def test_g_refuses_to_extrapolate(hvl: float, thickness_mm: float) -> None:
    with pytest.raises(d.OutsideTableError, match="outside the table"):
        d.g_factor(hvl, thickness_mm)


def test_doubtful_cell_is_flagged_only_when_used() -> None:
    assert d.DOUBTFUL_G_CELL in d.g_factor(0.60, 20).flags
    assert d.DOUBTFUL_G_CELL in d.g_factor(0.58, 25).flags
    assert d.g_factor(0.60, 30).flags == ()
    assert d.g_factor(0.55, 20).flags == ()


@pytest.mark.parametrize(
    ("anode", "filt", "s"),
    [
        ("Mo", "Mo", 1.000),
        ("MOLYBDENUM", "RHODIUM", 1.017),
        ("Rh", "Rh", 1.061),
        ("Rh", "Al", 1.044),
        ("W", "Rh", 1.042),
        ("TUNGSTEN", "SILVER", 1.042),
    ],
)
def test_s_factors(anode: str, filt: str, s: float) -> None:
    assert d.s_factor(anode, filt).value == pytest.approx(s)


@pytest.mark.parametrize(
    ("anode", "filt", "reason"),
    [
        ("W", "Al", "Dance, Young & van Engen"),
        ("Rh", "Ag", "not covered"),
        ("W", "Mo", "no published"),
    ],
)
def test_s_not_computable_with_reason(anode: str, filt: str, reason: str) -> None:
    factor = d.s_factor(anode, filt)
    assert not factor.computable
    assert reason in factor.reason


def test_c_is_one_by_default_and_says_so() -> None:
    assert d.C_UNITY.value == 1.0
    assert d.C_UNITY_LABEL in d.C_UNITY.flags


@pytest.mark.parametrize(
    ("thickness_mm", "group", "pct"),
    [
        (20, "50-64", 100),
        (40, "50-64", 50),
        (45, "50-64", 41.5),
        (110, "50-64", 3),
        (50, "40-49", 49),
    ],
)
def test_typical_glandularity(thickness_mm: float, group: str, pct: float) -> None:
    assert d.typical_glandularity_pct(thickness_mm, group) == pytest.approx(pct)


def test_typical_glandularity_outside_range() -> None:
    with pytest.raises(d.OutsideTableError):
        d.typical_glandularity_pct(15)
    with pytest.raises(d.DosimetryError, match="age group"):
        d.typical_glandularity_pct(40, "20-29")


@pytest.mark.parametrize(
    ("age", "group"),
    [(39, None), (40, "40-49"), (49, "40-49"), (50, "50-64"), (64, "50-64"), (65, None)],
)
def test_age_groups_of_dance_2000(age: int, group: str | None) -> None:
    assert d.age_group(age) == group


@pytest.mark.parametrize(
    ("anode", "filt", "kv", "hvl"),
    [
        ("Mo", "Mo", 28, 0.36),
        ("Mo", "Rh", 30, 0.4343),
        ("Rh", "Rh", 30, 0.4643),
        ("W", "Rh", 29, 0.5476),
    ],
)
def test_hvl_estimates_are_flagged(anode: str, filt: str, kv: float, hvl: float) -> None:
    estimate = d.estimate_hvl(anode, filt, kv)
    assert estimate.mm_al == pytest.approx(hvl, abs=1e-4)
    assert estimate.source == d.HVL_SOURCE_ESTIMATED


def test_hvl_estimate_unknown_combination() -> None:
    with pytest.raises(d.DosimetryError, match="no HVL fit for TUNGSTEN/SILVER"):
        d.estimate_hvl("W", "Ag", 30)


def test_worked_mgd_example() -> None:
    # A W/Rh unit reports Entrance Exposure at RP = 4.0 mGy at (113865) 4.2 cm above the
    # support; SID 650 mm, contact view, compressed thickness 45 mm, reported HVL 0.525 mm Al.
    #   focus→RP      = 650 − 42 = 608 mm
    #   focus→surface = 650 − 45 = 605 mm
    #   K = 4.0 × (608 / 605)² = 4.0 × 1.0099421 = 4.0397685 mGy
    #   g (HVL 0.525 between 0.50 and 0.55, 4.5 cm a column) = (0.285 + 0.311) / 2 = 0.298
    #   c = 1 (no physicist table), s (W/Rh) = 1.042
    #   MGD = 4.0397685 × 0.298 × 1 × 1.042 = 1.254413 mGy
    k = d.kerma_at_breast_surface_mgy(
        4.0, reference_point=d.RP_4_2_CM_ABOVE_SUPPORT, focus_to_support_mm=650, thickness_mm=45
    )
    result = d.mean_glandular_dose(
        k_surface_mgy=k,
        hvl=d.Hvl(0.525, d.HVL_SOURCE_REPORTED),
        thickness_mm=45,
        anode="TUNGSTEN",
        filter_material="RHODIUM",
    )
    assert result.computable
    assert k == pytest.approx(4.0397685, abs=1e-6)
    assert (result.g, result.c, result.s) == (pytest.approx(0.298), 1.0, 1.042)
    assert result.mgd_mgy == pytest.approx(1.254413, abs=1e-6)
    assert d.C_UNITY_LABEL in result.flags
    assert "HVL estimated from typical fits" not in result.flags


def test_mgd_not_computable_reports_every_reason() -> None:
    result = d.mean_glandular_dose(
        k_surface_mgy=5.0,
        hvl=d.estimate_hvl("W", "Rh", 30),
        thickness_mm=128,  # the implausible thickness of dose.md §1
        anode="W",
        filter_material="Al",
    )
    assert not result.computable
    assert result.mgd_mgy is None
    assert "outside the table" in result.not_computable_reason
    assert "W/Al" in result.not_computable_reason
    assert "HVL estimated from typical fits" in result.flags
