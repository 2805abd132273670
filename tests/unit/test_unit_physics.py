"""Physics of the simulated mammography unit: AEC, geometry, reference point, dose."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import asdict

import pytest

from dicom_nodes.datasets.dose_extract import from_image_header
from dose import dance
from dose.check import DanceTables, check_exposure
from dose.tables import load_hvl_table
from simulators import unit_physics as p
from simulators.room import UNIT_HVL_TABLE
from simulators.unit_images import sample_mg_image

WHEN = dt.datetime(2026, 1, 15, 10, 0, 0)


def shot(
    vendor: str = "w-rh",
    view: str = "L-CC",
    thickness_mm: float = 45,
    glandularity_pct: float = 40,
    seed: int = 0,
) -> p.Exposure:
    return p.expose(
        p.VENDORS[vendor],
        p.View.parse(view),
        thickness_mm=thickness_mm,
        glandularity_pct=glandularity_pct,
        rng=random.Random(seed),
        when=WHEN,
    )


def test_deterministic_with_a_seed() -> None:
    assert shot(seed=3) == shot(seed=3)
    assert shot(seed=3).exposure_uas != shot(seed=4).exposure_uas


@pytest.mark.parametrize(
    ("vendor", "thickness_mm", "anode", "filt", "kvp"),
    [
        ("w-rh", 25, "TUNGSTEN", "RHODIUM", 26),
        ("w-rh", 45, "TUNGSTEN", "RHODIUM", 29),
        ("w-rh", 85, "TUNGSTEN", "RHODIUM", 33),
        ("mo-rh", 25, "MOLYBDENUM", "MOLYBDENUM", 25),
        ("mo-rh", 50, "MOLYBDENUM", "RHODIUM", 28),
        ("mo-rh", 75, "RHODIUM", "RHODIUM", 30),
    ],
)
def test_aec_picks_technique_by_thickness(
    vendor: str, thickness_mm: float, anode: str, filt: str, kvp: float
) -> None:
    e = shot(vendor, thickness_mm=thickness_mm)
    assert (e.anode, e.filter_material, e.kvp) == (anode, filt, kvp)


def test_dense_breast_gets_one_more_kv_and_more_dose() -> None:
    fatty, dense = shot(glandularity_pct=30), shot(glandularity_pct=70)
    assert dense.kvp == fatty.kvp + 1
    assert dense.exposure_control_mode == "AUTOMATIC"


def test_thicker_breast_needs_more_exposure() -> None:
    doses = [shot(thickness_mm=t).agd_mgy for t in (20, 40, 60, 80)]
    assert doses == sorted(doses)
    assert 0.8 < shot(thickness_mm=50).agd_mgy < 2.5  # where clinical units land


def test_magnification_geometry_and_dose() -> None:
    contact, mag = shot(view="L-ML"), shot(view="L-ML-MAG")
    assert mag.magnification_factor == 1.8 and contact.magnification_factor == 1.0
    assert mag.focal_spot_mm == 0.1 and contact.focal_spot_mm == 0.3
    assert not mag.grid and contact.grid
    assert mag.source_to_support_mm == pytest.approx(700 / 1.8)
    assert mag.source_to_entrance_mm == pytest.approx(700 / 1.8 - 45)
    assert mag.k_surface_mgy > 1.5 * contact.k_surface_mgy
    assert mag.agd_mgy > contact.agd_mgy


def test_exposure_time_from_mas_and_current() -> None:
    e = shot()
    assert e.exposure_time_ms == pytest.approx(
        e.exposure_uas / e.tube_current_ma / 1000 * 1000, abs=0.05
    )
    assert e.exposure_uas % 100 == 0


@pytest.mark.parametrize("view", ["L-CC", "R-ML-MAG"])
@pytest.mark.parametrize("vendor", ["w-rh", "mo-rh"])
def test_reported_esak_corrects_back_to_the_surface_kerma(vendor: str, view: str) -> None:
    # The controller's cross-check path: ESAK at the vendor's RP → K at the surface → Dance.
    e = shot(vendor, view)
    k = dance.kerma_at_breast_surface_mgy(
        e.esak_mgy,
        reference_point=e.reference_point,
        focus_to_support_mm=e.source_to_support_mm,
        thickness_mm=e.compressed_thickness_mm,
    )
    assert k == pytest.approx(e.k_surface_mgy)
    again = dance.mean_glandular_dose(
        k_surface_mgy=k,
        hvl=dance.Hvl(e.hvl_mm_al, dance.HVL_SOURCE_REPORTED),
        thickness_mm=e.compressed_thickness_mm,
        anode=e.anode,
        filter_material=e.filter_material,
    )
    assert again.mgd_mgy == pytest.approx(e.agd_mgy)


def test_rp_above_support_is_below_the_surface_of_a_thick_breast() -> None:
    # 60 mm breast, RP 42 mm above the support: the surface is nearer the focus → K > ESAK
    e = shot("w-rh", thickness_mm=60)
    assert e.reference_point == dance.RP_4_2_CM_ABOVE_SUPPORT
    assert e.k_surface_mgy / e.esak_mgy == pytest.approx((658 / 640) ** 2)


def test_hvl_is_reported_from_the_fits() -> None:
    e = shot("mo-rh", thickness_mm=50)  # Mo/Rh 28 kV
    assert e.hvl_mm_al == pytest.approx(0.0067 * 28 + 0.2333, abs=1e-4)


@pytest.mark.parametrize("thickness_mm", [5, 19, 120])
def test_thickness_out_of_range(thickness_mm: float) -> None:
    with pytest.raises(p.PhysicsError, match="thickness"):
        shot(thickness_mm=thickness_mm)


@pytest.mark.parametrize("text", ["L", "B-CC", "L-XX", "L-CC-SPOT", "L-CC-MAG-X"])
def test_bad_views(text: str) -> None:
    with pytest.raises(p.PhysicsError):
        p.View.parse(text)


def test_view_parse() -> None:
    assert p.View.parse("r-ml-mag") == p.View("R", "ML", magnified=True)


@pytest.mark.parametrize(("factor", "aec"), [(1.4, "W/Rh"), (2.0, "W/Rh"), (1.8, "Cu/Zn")])
def test_vendor_profile_is_checked(factor: float, aec: str) -> None:
    with pytest.raises(p.PhysicsError):
        p.VendorProfile("M", "X", aec, dance.RP_AT_SURFACE_OF_PATIENT, 650, factor)


@pytest.mark.parametrize(
    ("vendor", "view", "magnified"),
    [("w-rh", "CC", False), ("w-rh", "ML", True), ("mo-rh", "MLO", False), ("mo-rh", "CC", True)],
)
def test_image_dose_header_is_self_consistent(vendor: str, view: str, magnified: bool) -> None:
    # The controller's cross-check: the AGD recomputed from the header alone (the W/Rh unit
    # reports no HVL: it comes from the unit's table, as in the demo).
    ds = sample_mg_image(vendor=vendor, view=view, magnified=magnified)
    assert ("HalfValueLayer" in ds) is p.VENDORS[vendor].reports_hvl
    record = from_image_header(ds)
    tables = DanceTables(hvl=(load_hvl_table(UNIT_HVL_TABLE),))
    result = check_exposure(asdict(record), tables)
    assert result.mgd_mgy == pytest.approx(dance.dgy_to_mgy(float(ds.OrganDose)), rel=1e-3)
    assert result.verdict == "agrees"
    assert float(ds.EstimatedRadiographicMagnificationFactor) == (
        p.VENDORS[vendor].magnification_factor if magnified else 1.0
    )
