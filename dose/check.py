"""The independent Dance check of every exposure, and the physicists' calculator (issue 9 §3, §4).

:func:`check_exposure` recomputes the mean glandular dose of one logged exposure from the
exposure's own numbers, never from the unit's AGD: ``MGD = K · g · c · s`` (dose.md §3).

- **K**, the incident air kerma at the breast's upper surface without backscatter: the unit's
  Entrance Exposure at RP (RDSR 111636) corrected by the inverse-square law from its reference
  point (113865, 4.2 cm above the support: the support lies at SID / magnification factor, the
  surface at the Distance Source to Entrance, else support − thickness); with no reference point
  (an image header's Entrance Dose in mGy (0040,8302)), at the patient surface, as PS3.3
  C.8.7.8 defines that attribute.
- **HVL** as the unit reported it, else from the physicist's table of that unit
  (:class:`~dose.tables.HvlTable`): never a generic estimate.
- **g** from Dance 2000, **s** by target/filter, **c** as :meth:`dose.tables.CTables.choose`
  decides (c = 1 with the reason when no table applies).

The basis says where each came from. When an input is missing, implausible or outside a table,
the check gives that reason and no number. Compared with the unit's reported AGD it *agrees*,
*disagrees* (beyond ``dose.cross_check_tolerance``) or points at a *unit suspected* (a factor
of about 10 or 100 either way).

:func:`calculate` is ``galacto dose mgd``: the same model from a kerma given by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dose import dance, plausibility
from dose.record import MAGNIFIED_FROM_FACTOR, DoseError, magnified
from dose.tables import CTables, HvlTable, hvl_table_for, symbol_pair

AGREES = "agrees"
DISAGREES = "disagrees"
UNIT_SUSPECTED = plausibility.UNIT_SUSPECTED

#: Default of ``dose.cross_check_tolerance``: percent of the independent figure.
DEFAULT_TOLERANCE_PCT = 25.0


@dataclass(frozen=True)
class DanceTables:
    """What the physicist loaded: HVL tables of the units, c tables."""

    hvl: tuple[HvlTable, ...] = ()
    c: CTables = field(default_factory=CTables)


@dataclass(frozen=True)
class DanceCheck:
    """The independent figure of one exposure, its factors, its basis and its verdict."""

    mgd_mgy: float | None
    k_mgy: float | None = None
    hvl_mm_al: float | None = None
    g: float | None = None
    c: float | None = None
    s: float | None = None
    glandularity_pct: float | None = None
    basis: str = ""
    #: AGREES / DISAGREES / UNIT_SUSPECTED, or None (no number, or no reported AGD to compare)
    verdict: str | None = None
    #: reported AGD / independent MGD
    ratio: float | None = None


class NotComputable(DoseError, ValueError):
    """An input of the Dance model is missing, implausible or outside a table."""


def _number(row: Mapping[str, Any], name: str, what: str) -> float:
    value = row.get(name)
    if value is None:
        raise NotComputable(f"no {what}")
    number = float(value)
    reason = plausibility.finding(name, number)
    if reason:
        raise NotComputable(f"{what} implausible: {reason}")
    return number


def _optional(row: Mapping[str, Any], name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    number = float(value)
    return None if plausibility.finding(name, number) else number


def incident_kerma(row: Mapping[str, Any]) -> tuple[float, str]:
    """K at the breast's upper surface and how it was obtained (module docstring)."""
    esak = _number(row, "esak_mgy", "entrance air kerma (RDSR 111636 or (0040,8302))")
    thickness = _number(row, "compressed_thickness_mm", "compressed thickness")
    point = row.get("esak_reference_point")
    if point == dance.RP_AT_SURFACE_OF_PATIENT:
        return esak, f"K = {esak:.4g} mGy, 111636 at the surface of the patient (113964)"
    if point is None:
        return esak, (
            f"K = {esak:.4g} mGy, Entrance Dose in mGy (0040,8302) taken at the patient "
            "surface as PS3.3 C.8.7.8 defines it (no reference point given)"
        )
    if point != dance.RP_4_2_CM_ABOVE_SUPPORT:
        raise NotComputable(f"unknown reference point definition {point!r} of 111636")
    sid = _number(row, "distance_source_to_detector_mm", "SID (0018,1110) for the RP correction")
    factor = _optional(row, "magnification_factor")
    if magnified(row):
        if factor is None or factor < MAGNIFIED_FROM_FACTOR:
            raise NotComputable("a magnified view without its magnification factor (0018,1114)")
        support = sid / factor  # the magnification platform lifts the support toward the tube
    else:
        support = sid  # contact: the breast lies on the detector cover
    surface = _optional(row, "distance_source_to_entrance_mm") or support - thickness
    to_rp = support - dance.RP_HEIGHT_ABOVE_SUPPORT_MM
    k = esak * dance.inverse_square_factor(to_rp, surface)
    return k, (
        f"K = {k:.4g} mGy, 111636 {esak:.4g} mGy at 4.2 cm above the support (113865) "
        f"× ({to_rp:.1f} / {surface:.1f})² to the breast surface"
    )


def beam_hvl(row: Mapping[str, Any], hvl_tables: Sequence[HvlTable]) -> tuple[float, str]:
    """The HVL used and where it came from: reported, else the unit's table."""
    reported = row.get("hvl_mm_al")
    if reported is not None and row.get("hvl_source") in (None, dance.HVL_SOURCE_REPORTED):
        hvl = _number(row, "hvl_mm_al", "HVL")
        return hvl, f"HVL {hvl:.4g} mm Al reported by the unit"
    table = hvl_table_for(
        hvl_tables, row.get("manufacturer"), row.get("model"), row.get("device_serial")
    )
    if table is None:
        unit = " ".join(
            str(row.get(k)) for k in ("manufacturer", "model", "device_serial") if row.get(k)
        )
        raise NotComputable(f"no HVL: none reported and no HVL table for {unit or 'this unit'}")
    kvp = _number(row, "kvp", "kV for the HVL table")
    anode, filt = row.get("anode"), row.get("filter_material")
    if not anode or not filt:
        raise NotComputable("no target/filter for the HVL table")
    try:
        hvl = table.hvl_mm_al(str(anode), str(filt), kvp)
    except dance.OutsideTableError as exc:
        raise NotComputable(str(exc)) from exc
    return hvl, f"HVL {hvl:.4g} mm Al at {kvp:g} kV from the {table.name}"


def check_exposure(
    row: Mapping[str, Any],
    tables: DanceTables | None = None,
    *,
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
) -> DanceCheck:
    """The independent Dance check of one exposure (a dose-log row or a record's fields)."""
    tables = tables or DanceTables()
    basis: list[str] = []
    try:
        k, how = incident_kerma(row)
        basis.append(how)
        hvl, how = beam_hvl(row, tables.hvl)
        basis.append(how)
        thickness = _number(row, "compressed_thickness_mm", "compressed thickness")
        anode, filt = row.get("anode"), row.get("filter_material")
        if not anode or not filt:
            raise NotComputable("no target/filter")
        try:
            choice = tables.c.choose(
                hvl,
                thickness,
                glandularity_pct=_optional(row, "glandularity_pct"),
                age_years=_optional(row, "patient_age_years"),
            )
        except dance.OutsideTableError as exc:
            raise NotComputable(f"c: {exc}") from exc
        result = dance.mean_glandular_dose(
            k_surface_mgy=k,
            hvl=dance.Hvl(hvl, dance.HVL_SOURCE_REPORTED),
            thickness_mm=thickness,
            anode=str(anode),
            filter_material=str(filt),
            c=choice.factor,
        )
    except NotComputable as exc:
        return DanceCheck(None, basis="; ".join([f"not computed: {exc}", *basis]))
    if result.mgd_mgy is None:
        return DanceCheck(
            None,
            k_mgy=k,
            hvl_mm_al=hvl,
            basis="; ".join([f"not computed: {result.not_computable_reason}", *basis]),
        )
    assert result.g is not None and result.s is not None
    basis += [
        f"g = {result.g:.4g} (Dance 2000, {hvl:.3g} mm Al, {thickness:g} mm)",
        *result.flags,
        f"s = {result.s:.4g} ({symbol_pair(str(anode), str(filt))})",
    ]
    verdict, ratio = compare(row.get("agd_reported_mgy"), result.mgd_mgy, tolerance_pct)
    return DanceCheck(
        mgd_mgy=result.mgd_mgy,
        k_mgy=k,
        hvl_mm_al=hvl,
        g=result.g,
        c=result.c,
        s=result.s,
        glandularity_pct=choice.glandularity_pct,
        basis="; ".join(basis),
        verdict=verdict,
        ratio=ratio,
    )


def compare(
    reported_mgy: Any, independent_mgy: float, tolerance_pct: float
) -> tuple[str | None, float | None]:
    """The verdict on the unit's AGD against ours, and their ratio (None: nothing to compare)."""
    if reported_mgy is None or plausibility.finding("agd_reported_mgy", float(reported_mgy)):
        # an implausible reported AGD may still be a unit error: say so when it is one
        if reported_mgy is not None and plausibility.unit_suspected(
            float(reported_mgy), independent_mgy
        ):
            return UNIT_SUSPECTED, float(reported_mgy) / independent_mgy
        return None, None
    reported = float(reported_mgy)
    ratio = reported / independent_mgy
    if plausibility.unit_suspected(reported, independent_mgy) is not None:
        return UNIT_SUSPECTED, ratio
    if abs(ratio - 1.0) * 100.0 > tolerance_pct:
        return DISAGREES, ratio
    return AGREES, ratio


# ---------------------------------------------------------------------------- the calculator


class InputOutsideError(DoseError, ValueError):
    """A calculator input outside what the model covers: ``name=value outside [lo, hi] of t``."""

    def __init__(self, name: str, value: Any, low: Any, high: Any, table: str) -> None:
        super().__init__(f"{name}={value} outside [{low}, {high}] of {table}")


@dataclass(frozen=True)
class Calculation:
    """``galacto dose mgd``'s result (its ``--json`` keys are the first six fields)."""

    mgd_mgy: float
    g: float
    c: float
    s: float
    glandularity_pct: float | None
    basis: str
    kerma_mgy: float
    hvl_mm_al: float
    thickness_mm: float
    target: str
    filter: str


TARGETS = ("Mo", "Rh", "W")
FILTERS = ("Mo", "Rh", "Ag", "Al")


def _within(name: str, value: float, low: float, high: float, table: str) -> None:
    """:class:`InputOutsideError` unless ``value`` is finite and in ``[low, high]``."""
    if not (math.isfinite(value) and low <= value <= high):
        raise InputOutsideError(name, f"{value:g}", f"{low:g}", f"{high:g}", table)


def _symbol(name: str, given: str, allowed: Sequence[str], table: str) -> str:
    """The symbol in ``allowed`` of the material ``given``; :class:`InputOutsideError` if none."""
    wanted = dance.material(given)
    for symbol in allowed:
        if dance.material(symbol) == wanted:
            return symbol
    raise InputOutsideError(name, given, allowed[0], allowed[-1], table)


def calculate(
    *,
    kerma_mgy: float,
    hvl_mm_al: float,
    thickness_mm: float,
    target: str,
    filter_material: str,
    glandularity_pct: float | None = None,
    age_years: float | None = None,
    c_tables: CTables | None = None,
) -> Calculation:
    """MGD = K · g · c · s from an incident air kerma at the breast surface (no inverse-square
    correction). :class:`InputOutsideError` for an input the tables or ranges do not cover."""
    g_table = dance.DANCE_2000_G
    kerma_range = plausibility.RANGE_BY_FIELD["esak_mgy"]
    _within(
        "kerma", kerma_mgy, kerma_range.low, kerma_range.high, "plausible incident air kerma (mGy)"
    )
    hvls = g_table.hvls_mm_al
    _within("hvl", hvl_mm_al, hvls[0], hvls[-1], "Dance 2000 g (mm Al)")
    thicknesses_mm = g_table.thicknesses_cm[0] * 10, g_table.thicknesses_cm[-1] * 10
    _within("thickness", thickness_mm, *thicknesses_mm, "Dance 2000 g (mm)")
    anode = _symbol("target", target, TARGETS, f"Dance 2000 s factors ({', '.join(TARGETS)})")
    served = [f for f in FILTERS if dance.s_factor(anode, f).computable]
    filt = _symbol(
        "filter",
        filter_material,
        served,
        f"Dance 2000 s factors for target {anode} ({', '.join(served)})",
    )
    if glandularity_pct is not None:
        _within("glandularity", glandularity_pct, 0, 100, "glandularity (%)")
    age_range = plausibility.RANGE_BY_FIELD["patient_age_years"]
    if age_years is not None:
        _within("age", age_years, age_range.low, age_range.high, "age (years)")
    tables = c_tables or CTables()
    try:
        choice = tables.choose(
            hvl_mm_al, thickness_mm, glandularity_pct=glandularity_pct, age_years=age_years
        )
    except dance.OutsideTableError as exc:  # a c table narrower than the g table
        if exc.low is None or exc.high is None:
            raise InputOutsideError("c", "?", "?", "?", str(exc)) from exc
        if exc.axis == dance.THICKNESS_AXIS:
            low, high, name, value = exc.low * 10, exc.high * 10, "thickness", thickness_mm
        else:
            low, high, name, value = exc.low, exc.high, "hvl", hvl_mm_al
        raise InputOutsideError(name, f"{value:g}", f"{low:g}", f"{high:g}", exc.table) from exc
    result = dance.mean_glandular_dose(
        k_surface_mgy=kerma_mgy,
        hvl=dance.Hvl(hvl_mm_al, "given"),
        thickness_mm=thickness_mm,
        anode=anode,
        filter_material=filt,
        c=choice.factor,
    )
    assert result.mgd_mgy is not None and result.g is not None
    assert result.c is not None and result.s is not None
    basis = "; ".join(
        [
            f"K = {kerma_mgy:g} mGy incident air kerma at the breast surface, as given",
            f"g = {result.g:.4g} (Dance 2000, {hvl_mm_al:g} mm Al, {thickness_mm:g} mm)",
            *result.flags,
            f"s = {result.s:.4g} ({anode}/{filt})",
        ]
    )
    return Calculation(
        mgd_mgy=result.mgd_mgy,
        g=result.g,
        c=result.c,
        s=result.s,
        glandularity_pct=choice.glandularity_pct,
        basis=basis,
        kerma_mgy=kerma_mgy,
        hvl_mm_al=hvl_mm_al,
        thickness_mm=thickness_mm,
        target=anode,
        filter=filt,
    )
