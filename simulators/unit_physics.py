"""Physics of the simulated mammography unit: AEC, tube output, HVL, geometry, dose.

A deliberately simple, deterministic model (seeded ``random.Random`` for small jitter) whose
numbers land where clinical units land (AGD ≈ 1–2 mGy for a 5 cm breast, about twice that for
a magnified view). What it models:

- **AEC** (:data:`AEC_TABLES`): target/filter/kV by compressed-thickness band, +1 kV for dense
  breasts (glandularity > 50 %); mAs chosen to deliver a target air kerma at the breast surface
  that grows exponentially with thickness (:func:`target_surface_kerma_mgy`), doubled for a
  gridded contact view and halved again without grid (Bucky factor 2).
- **Tube output**: µGy/mAs at 1 m per target/filter at 28 kV, scaled as (kV/28)^2.5 and by the
  inverse square law to the point of interest.
- **Geometry**: contact views with the breast on the detector cover (support = SID); a
  magnification view lifts the support toward the tube so that the support plane is magnified by
  ``M`` (1.5–1.8): focus→support = SID / M. Small focal spot 0.1 mm and no grid in
  magnification, large 0.3 mm with grid otherwise.
- **Entrance air kerma at the reference point** of the vendor: (113865) 4.2 cm above the
  support or (113964) at the breast surface, in the RDSR; the image header's Entrance Dose in
  mGy (0040,8302) is at the patient surface, as PS3.3 C.8.7.8 defines it.
- **HVL** from the typical measured fits of dose.md §3, reported by the units whose profile
  says so (``reports_hvl``); the W/Rh unit of the demo reports none, as many real units, and
  the controller takes its HVL from that unit's table (``config/units/sim-mg-w-rh.toml``,
  the same fits).
- **AGD** by the Dance model (:mod:`dose.dance`), c = 1 corrected only through
  the glandularity of the AEC choice.

It does not model spectra, heel effect, scatter, detector response, tube loading limits, or
pre-exposure/main-exposure pairs.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, replace

from dose import dance as dosimetry


class PhysicsError(ValueError):
    """The requested exposure is outside what the simulated unit can do."""


# --- Vendor profiles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AecBand:
    """Technique for compressed thicknesses up to ``max_thickness_mm`` (inclusive)."""

    max_thickness_mm: float
    anode: str
    filter_material: str
    filter_thickness_mm: float
    kvp: float


#: W/Rh-style unit (tungsten target, rhodium filter throughout).
AEC_W_RH: tuple[AecBand, ...] = (
    AecBand(30, "TUNGSTEN", "RHODIUM", 0.050, 26),
    AecBand(40, "TUNGSTEN", "RHODIUM", 0.050, 27),
    AecBand(50, "TUNGSTEN", "RHODIUM", 0.050, 29),
    AecBand(60, "TUNGSTEN", "RHODIUM", 0.050, 30),
    AecBand(70, "TUNGSTEN", "RHODIUM", 0.050, 31),
    AecBand(90, "TUNGSTEN", "RHODIUM", 0.050, 33),
    AecBand(110, "TUNGSTEN", "RHODIUM", 0.050, 34),
)

#: Mo/Rh-style unit (Mo/Mo thin, Mo/Rh middle, Rh/Rh thick).
AEC_MO_RH: tuple[AecBand, ...] = (
    AecBand(30, "MOLYBDENUM", "MOLYBDENUM", 0.030, 25),
    AecBand(45, "MOLYBDENUM", "MOLYBDENUM", 0.030, 27),
    AecBand(55, "MOLYBDENUM", "RHODIUM", 0.025, 28),
    AecBand(65, "MOLYBDENUM", "RHODIUM", 0.025, 29),
    AecBand(80, "RHODIUM", "RHODIUM", 0.025, 30),
    AecBand(110, "RHODIUM", "RHODIUM", 0.025, 32),
)

AEC_TABLES = {"W/Rh": AEC_W_RH, "Mo/Rh": AEC_MO_RH}

#: Tube output at 1 m and 28 kV, µGy/mAs, by (target, filter).
TUBE_OUTPUT_UGY_PER_MAS_1M_28KV: dict[tuple[str, str], float] = {
    ("MOLYBDENUM", "MOLYBDENUM"): 48.0,
    ("MOLYBDENUM", "RHODIUM"): 40.0,
    ("RHODIUM", "RHODIUM"): 38.0,
    ("TUNGSTEN", "RHODIUM"): 22.0,
}
OUTPUT_KV_EXPONENT = 2.5


@dataclass(frozen=True)
class VendorProfile:
    """What distinguishes one simulated unit from another."""

    manufacturer: str
    model_name: str
    aec: str  # key of AEC_TABLES
    reference_point: str  # dosimetry.RP_4_2_CM_ABOVE_SUPPORT or RP_AT_SURFACE_OF_PATIENT
    sid_mm: float
    magnification_factor: float = 1.8
    large_focal_spot_mm: float = 0.3
    small_focal_spot_mm: float = 0.1
    tube_current_large_ma: float = 160.0
    tube_current_small_ma: float = 40.0
    detector_pixel_spacing_mm: float = 0.07
    software_versions: str = "sim-1.0"
    #: whether the unit writes its HVL into its images and RDSR (0040,0314 / 111634)
    reports_hvl: bool = True

    def __post_init__(self) -> None:
        if not 1.5 <= self.magnification_factor <= 1.8:
            raise PhysicsError(f"magnification factor {self.magnification_factor} outside 1.5–1.8")
        if self.aec not in AEC_TABLES:
            raise PhysicsError(f"unknown AEC table {self.aec!r} (known: {', '.join(AEC_TABLES)})")


VENDORS: dict[str, VendorProfile] = {
    "w-rh": VendorProfile(
        "Galacto Simulated Imaging",
        "SIM-MG W/Rh",
        "W/Rh",
        dosimetry.RP_4_2_CM_ABOVE_SUPPORT,
        sid_mm=700.0,
        reports_hvl=False,  # its HVL comes from config/units/sim-mg-w-rh.toml
    ),
    "mo-rh": VendorProfile(
        "Galacto Simulated Imaging",
        "SIM-MG Mo/Rh",
        "Mo/Rh",
        dosimetry.RP_AT_SURFACE_OF_PATIENT,
        sid_mm=660.0,
        magnification_factor=1.5,
        tube_current_large_ma=100.0,
        tube_current_small_ma=25.0,
        detector_pixel_spacing_mm=0.1,
    ),
}

BUCKY_FACTOR = 2.0
SURFACE_KERMA_AT_45_MM_MGY = 4.5
SURFACE_KERMA_GROWTH_PER_MM = 0.03
MIN_THICKNESS_MM = 20.0  # the Dance g table starts at 2 cm
MAX_THICKNESS_MM = 110.0


# --- Views ---------------------------------------------------------------------------------------

#: CID 4014 view codes (SCT) by the short names technologists use.
VIEW_CODES: dict[str, tuple[str, str]] = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
    "LM": ("399352003", "latero-medial"),
    "LMO": ("399099002", "latero-medial oblique"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
    "XCCM": ("399101009", "cranio-caudal exaggerated medially"),
}
MAGNIFICATION_CODE = ("399163009", "magnification")  # CID 4015
SPOT_COMPRESSION_CODE = ("399055006", "spot compression")


@dataclass(frozen=True)
class View:
    """One requested view: laterality, view name (key of VIEW_CODES), magnified or not."""

    laterality: str
    name: str
    magnified: bool = False

    def __post_init__(self) -> None:
        if self.laterality not in ("L", "R"):
            raise PhysicsError(f"laterality must be L or R, not {self.laterality!r}")
        if self.name not in VIEW_CODES:
            raise PhysicsError(f"unknown view {self.name!r} (known: {', '.join(VIEW_CODES)})")

    @classmethod
    def parse(cls, text: str) -> View:
        """``"L-CC"``, ``"R-ML-MAG"`` → View."""
        parts = text.upper().split("-")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "MAG"):
            raise PhysicsError(f"a view looks like L-CC or R-ML-MAG, not {text!r}")
        return cls(parts[0], parts[1], magnified=len(parts) == 3)


# --- The exposure --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """Everything the unit knows about one exposure (units in the names)."""

    view: View
    datetime: dt.datetime
    anode: str
    filter_material: str
    filter_thickness_mm: float
    kvp: float
    exposure_uas: int
    tube_current_ma: float
    exposure_time_ms: float
    focal_spot_mm: float
    grid: bool
    magnification_factor: float
    sid_mm: float
    source_to_support_mm: float
    source_to_entrance_mm: float  # focus → upper breast surface (SED, 0040,0306)
    compressed_thickness_mm: float
    compression_force_n: float
    glandularity_pct: float
    hvl_mm_al: float
    k_surface_mgy: float
    esak_mgy: float  # at the vendor's reference point
    reference_point: str
    agd_mgy: float
    dance: dosimetry.MgdResult
    exposure_control_mode: str = "AUTOMATIC"
    hvl_reported: bool = True  #: the unit writes hvl_mm_al into its objects


def aec_band(profile: VendorProfile, thickness_mm: float) -> AecBand:
    """The AEC table row for a compressed thickness."""
    if not MIN_THICKNESS_MM <= thickness_mm <= MAX_THICKNESS_MM:
        raise PhysicsError(
            f"compressed thickness {thickness_mm} mm outside "
            f"{MIN_THICKNESS_MM:g}–{MAX_THICKNESS_MM:g} mm"
        )
    for band in AEC_TABLES[profile.aec]:
        if thickness_mm <= band.max_thickness_mm:
            return band
    raise PhysicsError(f"no AEC band for {thickness_mm} mm")  # pragma: no cover


def tube_output_ugy_per_mas(
    anode: str, filter_material: str, kvp: float, distance_mm: float
) -> float:
    """Air kerma per mAs at ``distance_mm`` from the focus (no backscatter)."""
    at_1m = TUBE_OUTPUT_UGY_PER_MAS_1M_28KV[(anode, filter_material)]
    return at_1m * (kvp / 28.0) ** OUTPUT_KV_EXPONENT * (1000.0 / distance_mm) ** 2


def target_surface_kerma_mgy(thickness_mm: float, glandularity_pct: float) -> float:
    """Air kerma the AEC aims for at the breast surface (gridded contact view)."""
    density = 1.0 + 0.004 * (glandularity_pct - 50.0)
    growth = math.exp(SURFACE_KERMA_GROWTH_PER_MM * (thickness_mm - 45.0))
    return SURFACE_KERMA_AT_45_MM_MGY * growth * density


def expose(
    profile: VendorProfile,
    view: View,
    *,
    thickness_mm: float,
    glandularity_pct: float,
    rng: random.Random,
    when: dt.datetime,
    compression_force_n: float | None = None,
) -> Exposure:
    """Run the AEC and the dose model for one view."""
    band = aec_band(profile, thickness_mm)
    kvp = band.kvp + (1 if glandularity_pct > 50 else 0)
    magnification = profile.magnification_factor if view.magnified else 1.0
    source_to_support = profile.sid_mm / magnification
    source_to_surface = source_to_support - thickness_mm

    # The AEC aims a detector signal: with the breast nearer the focus the surface kerma grows
    # by the inverse square ratio to the contact geometry; without grid it halves.
    contact_surface = profile.sid_mm - thickness_mm
    k_target = target_surface_kerma_mgy(thickness_mm, glandularity_pct)
    if view.magnified:
        k_target *= (contact_surface / source_to_surface) ** 2 / BUCKY_FACTOR
    k_target *= rng.uniform(0.97, 1.03)

    output = tube_output_ugy_per_mas(band.anode, band.filter_material, kvp, source_to_surface)
    exposure_uas = max(1000, round(k_target * 1000.0 / output * 1000.0 / 100.0) * 100)
    k_surface = exposure_uas / 1000.0 * output / 1000.0  # mGy actually delivered

    if profile.reference_point == dosimetry.RP_4_2_CM_ABOVE_SUPPORT:
        rp_distance = source_to_support - dosimetry.RP_HEIGHT_ABOVE_SUPPORT_MM
        esak = k_surface / dosimetry.inverse_square_factor(rp_distance, source_to_surface)
    else:
        esak = k_surface

    current_ma = profile.tube_current_small_ma if view.magnified else profile.tube_current_large_ma
    hvl = dosimetry.estimate_hvl(band.anode, band.filter_material, kvp)
    hvl = replace(hvl, source=dosimetry.HVL_SOURCE_REPORTED)  # the unit reports it
    dance = dosimetry.mean_glandular_dose(
        k_surface_mgy=k_surface,
        hvl=hvl,
        thickness_mm=thickness_mm,
        anode=band.anode,
        filter_material=band.filter_material,
    )
    if dance.mgd_mgy is None:
        raise PhysicsError(f"AGD not computable: {dance.not_computable_reason}")
    force = compression_force_n
    if force is None:
        force = round(rng.uniform(40, 70) if view.magnified else rng.uniform(70, 120))
    return Exposure(
        view=view,
        datetime=when,
        anode=band.anode,
        filter_material=band.filter_material,
        filter_thickness_mm=band.filter_thickness_mm,
        kvp=kvp,
        exposure_uas=exposure_uas,
        tube_current_ma=current_ma,
        exposure_time_ms=round(exposure_uas / 1000.0 / current_ma * 1000.0, 1),
        focal_spot_mm=profile.small_focal_spot_mm
        if view.magnified
        else profile.large_focal_spot_mm,
        grid=not view.magnified,
        magnification_factor=magnification,
        sid_mm=profile.sid_mm,
        source_to_support_mm=source_to_support,
        source_to_entrance_mm=source_to_surface,
        compressed_thickness_mm=thickness_mm,
        compression_force_n=float(force),
        glandularity_pct=glandularity_pct,
        hvl_mm_al=hvl.mm_al,
        k_surface_mgy=k_surface,
        esak_mgy=esak,
        reference_point=profile.reference_point,
        agd_mgy=dance.mgd_mgy,
        dance=dance,
        hvl_reported=profile.reports_hvl,
    )
