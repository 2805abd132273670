"""The independent Dance check of one exposure and the MGD calculator (issue 9 §3, §4).

Expected figures are worked by hand from the dose brief's tables (dose.md §1, §3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dose.check import (
    AGREES,
    DISAGREES,
    UNIT_SUSPECTED,
    DanceTables,
    InputOutsideError,
    calculate,
    check_exposure,
)
from dose.tables import load_hvl_table

# A W/Rh unit reports Entrance Exposure at RP = 4.0 mGy at (113865) 4.2 cm above the support;
# SID 650 mm, contact view, compressed thickness 45 mm, reported HVL 0.525 mm Al.
#   focus→RP = 650 − 42 = 608 mm; focus→surface = 650 − 45 = 605 mm
#   K = 4.0 × (608 / 605)² = 4.0397685 mGy
#   g (HVL 0.525 between 0.50 and 0.55, 4.5 cm a column) = (0.285 + 0.311) / 2 = 0.298
#   c = 1 (no physicist table), s (W/Rh) = 1.042
#   MGD = 4.0397685 × 0.298 × 1.042 = 1.254413 mGy
WORKED: dict[str, Any] = {
    "esak_mgy": 4.0,
    "esak_reference_point": "113865",
    "distance_source_to_detector_mm": 650.0,
    "compressed_thickness_mm": 45.0,
    "hvl_mm_al": 0.525,
    "hvl_source": "reported",
    "anode": "TUNGSTEN",
    "filter_material": "RHODIUM",
    "kvp": 29.0,
    "manufacturer": "Acme",
    "model": "Mammo 3000",
    "device_serial": "SN42",
}
WORKED_MGD = 1.254413


def row(**changes: Any) -> dict[str, Any]:
    return {**WORKED, **changes}


def test_the_worked_example() -> None:
    check = check_exposure(row(agd_reported_mgy=1.25))
    assert check.k_mgy == pytest.approx(4.0397685, abs=1e-6)
    assert (check.g, check.c, check.s) == (pytest.approx(0.298), 1.0, 1.042)
    assert check.mgd_mgy == pytest.approx(WORKED_MGD, abs=1e-6)
    assert check.verdict == AGREES and check.ratio == pytest.approx(1.25 / WORKED_MGD)
    assert "111636 4 mGy at 4.2 cm above the support (113865) × (608.0 / 605.0)²" in check.basis
    assert "HVL 0.525 mm Al reported by the unit" in check.basis
    assert "c = 1 (50 % glandular assumed; no physicist c table loaded); age unknown" in check.basis


def test_an_image_header_kerma_is_at_the_patient_surface() -> None:
    check = check_exposure(row(esak_reference_point=None))
    assert check.k_mgy == 4.0
    assert "Entrance Dose in mGy (0040,8302) taken at the patient surface" in check.basis
    assert check.mgd_mgy == pytest.approx(4.0 * 0.298 * 1.042)


def test_magnification_lifts_the_support_toward_the_tube() -> None:
    # M = 1.8 at SID 700: support at 388.9 mm; RP 346.9 mm and surface 343.9 mm from the focus
    check = check_exposure(
        row(
            esak_mgy=8.0,
            distance_source_to_detector_mm=700.0,
            magnification_factor=1.8,
            view_modifier_codes="399163009",
        )
    )
    support = 700 / 1.8
    assert check.k_mgy == pytest.approx(8.0 * ((support - 42) / (support - 45)) ** 2)


def test_the_distance_to_the_surface_the_unit_gives_is_used() -> None:
    check = check_exposure(row(distance_source_to_entrance_mm=600.0))
    assert check.k_mgy == pytest.approx(4.0 * (608 / 600) ** 2)


def test_hvl_from_the_units_table_when_none_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(
        '[unit]\nmanufacturer = "Acme"\nmodel = "Mammo 3000"\n'
        '[hvl_mm_al."W/Rh"]\n"28" = 0.50\n"30" = 0.55\n'
    )
    tables = DanceTables(hvl=(load_hvl_table(path),))
    check = check_exposure(row(hvl_mm_al=None, hvl_source=None, kvp=29.0), tables)
    assert check.hvl_mm_al == pytest.approx(0.525)
    assert check.mgd_mgy == pytest.approx(WORKED_MGD, abs=1e-6)
    assert "HVL 0.525 mm Al at 29 kV from the HVL table of Acme Mammo 3000" in check.basis


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"hvl_mm_al": None}, "no HVL: none reported and no HVL table for Acme Mammo 3000 SN42"),
        ({"esak_mgy": None}, "no entrance air kerma"),
        ({"esak_mgy": -5.0}, "entrance air kerma (RDSR 111636 or (0040,8302)) implausible"),
        ({"compressed_thickness_mm": 128.0}, "compressed thickness implausible"),
        ({"compressed_thickness_mm": 15.0}, "thickness (cm) 1.5 is outside the table [2, 11]"),
        ({"hvl_mm_al": 0.7}, "HVL (mm Al) 0.7 is outside the table [0.3, 0.6]"),
        ({"filter_material": "ALUMINUM"}, "W/Al needs the thickness-dependent s table"),
        ({"esak_reference_point": "999"}, "unknown reference point definition '999'"),
        ({"distance_source_to_detector_mm": None}, "no SID (0018,1110)"),
        ({"view_modifier_codes": "399163009"}, "magnified view without its magnification"),
    ],
)
def test_no_number_without_its_inputs_and_the_reason_says_why(
    changes: dict[str, Any], why: str
) -> None:
    check = check_exposure(row(**changes, agd_reported_mgy=1.25))
    assert check.mgd_mgy is None and check.verdict is None
    assert check.basis.startswith("not computed: ")
    assert why in check.basis


@pytest.mark.parametrize(
    ("reported", "tolerance", "verdict"),
    [
        (WORKED_MGD * 1.2, 25.0, AGREES),
        (WORKED_MGD * 0.8, 25.0, AGREES),
        (WORKED_MGD * 1.3, 25.0, DISAGREES),
        (WORKED_MGD * 1.2, 10.0, DISAGREES),
        (WORKED_MGD * 100, 25.0, UNIT_SUSPECTED),  # mGy written into the dGy field
        (WORKED_MGD / 10, 25.0, UNIT_SUSPECTED),
    ],
)
def test_verdict_against_the_units_agd(reported: float, tolerance: float, verdict: str) -> None:
    check = check_exposure(row(agd_reported_mgy=reported), tolerance_pct=tolerance)
    assert check.verdict == verdict
    assert check.ratio == pytest.approx(reported / WORKED_MGD)


def test_no_verdict_without_a_reported_agd() -> None:
    check = check_exposure(row())
    assert check.mgd_mgy is not None and check.verdict is None


# ---------------------------------------------------------------------------- calculator


def test_the_calculator_states_glandularity_and_basis() -> None:
    by_age = calculate(
        kerma_mgy=5.0,
        hvl_mm_al=0.5,
        thickness_mm=45,
        target="W",
        filter_material="Rh",
        age_years=55,
    )
    assert by_age.glandularity_pct == pytest.approx(41.5)  # 4.5 cm, 50-64: (50 + 33) / 2
    assert by_age.c == 1.0  # no c table loaded
    assert "no c table brackets 41.5 % glandularity" in by_age.basis
    assert by_age.mgd_mgy == pytest.approx(5.0 * 0.285 * 1.042)
    young = calculate(
        kerma_mgy=5.0,
        hvl_mm_al=0.5,
        thickness_mm=45,
        target="W",
        filter_material="Rh",
        age_years=30,
    )
    assert young.glandularity_pct is None and "age 30 is outside" in young.basis


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"kerma_mgy": 0.0}, "kerma=0 outside [0.01, 100] of plausible incident air kerma (mGy)"),
        ({"kerma_mgy": -2.0}, "kerma=-2 outside [0.01, 100] of plausible incident air kerma"),
        ({"hvl_mm_al": 0.25}, "hvl=0.25 outside [0.3, 0.6] of Dance 2000 g (mm Al)"),
        ({"thickness_mm": 15.0}, "thickness=15 outside [20, 110] of Dance 2000 g (mm)"),
        ({"thickness_mm": 128.0}, "thickness=128 outside [20, 110] of Dance 2000 g (mm)"),
        ({"target": "Cu"}, "target=Cu outside [Mo, W] of Dance 2000 s factors (Mo, Rh, W)"),
        ({"filter_material": "Al"}, "filter=Al outside [Rh, Ag] of Dance 2000 s factors for "),
        ({"glandularity_pct": 120.0}, "glandularity=120 outside [0, 100] of glandularity (%)"),
        ({"age_years": -3.0}, "age=-3 outside [0, 130] of age (years)"),
    ],
)
def test_the_calculator_refuses_what_the_tables_do_not_cover(
    changes: dict[str, Any], line: str
) -> None:
    inputs: dict[str, Any] = {
        "kerma_mgy": 5.0,
        "hvl_mm_al": 0.5,
        "thickness_mm": 45.0,
        "target": "W",
        "filter_material": "Rh",
    }
    with pytest.raises(InputOutsideError) as error:
        calculate(**{**inputs, **changes})
    assert str(error.value).startswith(line)
    assert "\n" not in str(error.value)
