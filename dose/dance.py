"""Breast dosimetry: unit conversions and the Dance mean glandular dose model (dose.md §1, §3).

Pure functions and tables, no I/O. Shared by the simulated mammography unit (which uses them to
report an AGD), the controller's independent cross-check of the unit's own figure
(:mod:`dose.check`) and the physicists' calculator (``galacto dose mgd``).

- Units (dose.md §1): Organ Dose (0040,0316) and Entrance Dose (0040,0302) are in dGy, Entrance
  Dose in mGy (0040,8302) and the RDSR's AGD (111631) / Entrance Exposure at RP (111636) in mGy.
- Dance model, 2D: ``MGD = K · g · c · s`` with K the incident air kerma at the upper breast
  surface, without backscatter (Dance 1990; Dance et al. 2000; EUREF / IAEA protocols).

A result that cannot be computed (no published s factor, thickness or HVL outside the g table)
is reported as *not computable* with the reason — the model never guesses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class DosimetryError(ValueError):
    """A dose figure cannot be computed from the inputs given."""


class OutsideTableError(DosimetryError):
    """A lookup asked for a point outside a table: we refuse to extrapolate.

    ``table`` names the table and ``axis`` the quantity (e.g. ``"HVL (mm Al)"``); ``value``,
    ``low`` and ``high`` say where the point fell (None when the reason is not an axis).
    """

    def __init__(
        self,
        message: str,
        *,
        table: str = "",
        axis: str = "",
        value: float | None = None,
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        super().__init__(message)
        self.table, self.axis = table, axis
        self.value, self.low, self.high = value, low, high


# ---------------------------------------------------------------------------------------------
# §1 Units and the reference point


def dgy_to_mgy(value_dgy: float) -> float:
    """Organ Dose (0040,0316) and Entrance Dose (0040,0302) are in dGy: 1 dGy = 100 mGy."""
    return value_dgy * 100.0


def mgy_to_dgy(value_mgy: float) -> float:
    """The inverse of :func:`dgy_to_mgy`, for writing (0040,0316)."""
    return value_mgy / 100.0


#: Reference Point Definition codes (CID 10025) the units use for Entrance Exposure at RP.
RP_4_2_CM_ABOVE_SUPPORT = "113865"  # (113865, DCM) "4.2 cm above breast support surface"
RP_AT_SURFACE_OF_PATIENT = "113964"  # (113964, DCM) "At surface of patient"
REFERENCE_POINT_MEANINGS: Mapping[str, str] = {
    RP_4_2_CM_ABOVE_SUPPORT: "4.2 cm above breast support surface",
    RP_AT_SURFACE_OF_PATIENT: "At surface of patient",
}
RP_HEIGHT_ABOVE_SUPPORT_MM = 42.0


def inverse_square_factor(focus_to_rp_mm: float, focus_to_surface_mm: float) -> float:
    """``(d_focus→RP / d_focus→surface)²``: a kerma at the RP times this is K at the surface.

    dose.md §1: SID 700 mm, RP 42 mm above the support, 60 mm breast →
    (658 / 640)² = 1.05704.
    """
    if focus_to_rp_mm <= 0 or focus_to_surface_mm <= 0:
        raise DosimetryError(
            f"distances must be positive (focus→RP {focus_to_rp_mm} mm, "
            f"focus→surface {focus_to_surface_mm} mm)"
        )
    return (focus_to_rp_mm / focus_to_surface_mm) ** 2


def kerma_at_breast_surface_mgy(
    esak_rp_mgy: float,
    *,
    reference_point: str,
    focus_to_support_mm: float,
    thickness_mm: float,
) -> float:
    """Correct the unit's Entrance Exposure at RP to the breast's upper surface (Dance's K).

    ``focus_to_support_mm`` is the distance from the focal spot to the surface the breast lies
    on: the SID for a contact view, less the platform height for a magnification view.
    """
    if reference_point == RP_AT_SURFACE_OF_PATIENT:
        return esak_rp_mgy
    if reference_point != RP_4_2_CM_ABOVE_SUPPORT:
        raise DosimetryError(f"unknown reference point definition {reference_point!r}")
    focus_to_rp_mm = focus_to_support_mm - RP_HEIGHT_ABOVE_SUPPORT_MM
    focus_to_surface_mm = focus_to_support_mm - thickness_mm
    return esak_rp_mgy * inverse_square_factor(focus_to_rp_mm, focus_to_surface_mm)


# ---------------------------------------------------------------------------------------------
# §3 Tables


@dataclass(frozen=True)
class ConversionTable:
    """A factor tabulated by HVL (rows, mm Al) and compressed thickness (columns, cm).

    The shape of Dance's g table; a physicist's c table has the same shape (dose.md §3).
    """

    name: str
    hvls_mm_al: tuple[float, ...]
    thicknesses_cm: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
    #: cells whose use must be flagged, (hvl, thickness) → why
    doubtful: Mapping[tuple[float, float], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.values) != len(self.hvls_mm_al) or any(
            len(row) != len(self.thicknesses_cm) for row in self.values
        ):
            raise DosimetryError(f"table {self.name!r}: values do not match its axes")
        for axis in (self.hvls_mm_al, self.thicknesses_cm):
            if list(axis) != sorted(set(axis)):
                raise DosimetryError(f"table {self.name!r}: axes must be strictly increasing")

    def lookup(self, hvl_mm_al: float, thickness_cm: float) -> tuple[float, tuple[str, ...]]:
        """Bilinear interpolation; returns the value and the flags of the cells it used."""
        i0, i1, u = _bracket(self.hvls_mm_al, hvl_mm_al, self.name, HVL_AXIS)
        j0, j1, v = _bracket(self.thicknesses_cm, thickness_cm, self.name, THICKNESS_AXIS)
        corners = (
            (i0, j0, (1 - u) * (1 - v)),
            (i1, j0, u * (1 - v)),
            (i0, j1, (1 - u) * v),
            (i1, j1, u * v),
        )
        value = sum(self.values[i][j] * w for i, j, w in corners)
        flags = []
        for i, j, w in corners:
            note = self.doubtful.get((self.hvls_mm_al[i], self.thicknesses_cm[j]))
            if w > 0 and note and note not in flags:
                flags.append(note)
        return value, tuple(flags)


HVL_AXIS = "HVL (mm Al)"
THICKNESS_AXIS = "thickness (cm)"


def _bracket(axis: Sequence[float], x: float, table: str, what: str) -> tuple[int, int, float]:
    """Indices of the two axis points around ``x`` and the fraction between them."""
    lo, hi = axis[0], axis[-1]
    eps = 1e-9
    if not (lo - eps <= x <= hi + eps) or math.isnan(x):
        raise OutsideTableError(
            f"{table}: {what} {x:g} is outside the table [{lo:g}, {hi:g}]",
            table=table,
            axis=what,
            value=x,
            low=lo,
            high=hi,
        )
    for k in range(len(axis) - 1):
        if x <= axis[k + 1] + eps:
            span = axis[k + 1] - axis[k]
            return k, k + 1, min(1.0, max(0.0, (x - axis[k]) / span))
    return len(axis) - 1, len(axis) - 1, 0.0  # single-point axis


DOUBTFUL_G_CELL = "g uses the doubtful Dance 2000 cell HVL 0.60 mm Al / 2 cm"

#: Dance et al. 2000, g for a 50 % glandular breast, mGy per mGy (dose.md §3).
DANCE_2000_G = ConversionTable(
    name="Dance 2000 g",
    hvls_mm_al=(0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60),
    thicknesses_cm=(2, 3, 4, 4.5, 5, 6, 7, 8, 9, 10, 11),
    values=(
        (0.390, 0.274, 0.207, 0.183, 0.164, 0.135, 0.114, 0.098, 0.0859, 0.0763, 0.0687),
        (0.433, 0.309, 0.235, 0.208, 0.187, 0.154, 0.130, 0.112, 0.0981, 0.0873, 0.0783),
        (0.473, 0.342, 0.261, 0.232, 0.209, 0.172, 0.145, 0.126, 0.1106, 0.0986, 0.0887),
        (0.509, 0.374, 0.289, 0.258, 0.232, 0.192, 0.163, 0.140, 0.1233, 0.1096, 0.0988),
        (0.543, 0.406, 0.318, 0.285, 0.258, 0.214, 0.177, 0.154, 0.1357, 0.1207, 0.1088),
        (0.573, 0.437, 0.346, 0.311, 0.287, 0.236, 0.202, 0.175, 0.1543, 0.1375, 0.1240),
        (0.587, 0.466, 0.374, 0.339, 0.310, 0.261, 0.224, 0.195, 0.1723, 0.1540, 0.1385),
    ),
    doubtful={(0.60, 2): DOUBTFUL_G_CELL},
)


# Target/filter names are DICOM defined terms: Anode Target Material (0018,1191), Filter
# Material (0018,7050).
_MATERIAL_ALIASES = {
    "MO": "MOLYBDENUM",
    "RH": "RHODIUM",
    "W": "TUNGSTEN",
    "AG": "SILVER",
    "AL": "ALUMINUM",
    "ALUMINIUM": "ALUMINUM",
}


def material(name: str) -> str:
    """Normalise a target/filter name to the DICOM defined term (``"Rh"`` → ``"RHODIUM"``)."""
    key = name.strip().upper()
    return _MATERIAL_ALIASES.get(key, key)


def _pair(anode: str, filter_material: str) -> tuple[str, str]:
    return material(anode), material(filter_material)


#: Spectrum correction s, by (target, filter) (Dance et al. 2000; dose.md §3).
S_FACTORS: Mapping[tuple[str, str], float] = {
    ("MOLYBDENUM", "MOLYBDENUM"): 1.000,
    ("MOLYBDENUM", "RHODIUM"): 1.017,
    ("RHODIUM", "RHODIUM"): 1.061,
    ("RHODIUM", "ALUMINUM"): 1.044,
    ("TUNGSTEN", "RHODIUM"): 1.042,
    ("TUNGSTEN", "SILVER"): 1.042,
}

#: Combinations we know we cannot serve, with the reason (dose.md §3).
S_NOT_COMPUTABLE: Mapping[tuple[str, str], str] = {
    ("TUNGSTEN", "ALUMINUM"): (
        "W/Al needs the thickness-dependent s table of Dance, Young & van Engen 2009 (not loaded)"
    ),
    ("RHODIUM", "SILVER"): "Rh/Ag is not covered by the published s factors",
}


@dataclass(frozen=True)
class Factor:
    """A looked-up factor, or why there is none."""

    value: float | None
    reason: str = ""
    flags: tuple[str, ...] = ()

    @property
    def computable(self) -> bool:
        return self.value is not None


def s_factor(anode: str, filter_material: str) -> Factor:
    """Dance's spectrum correction s for a target/filter combination."""
    pair = _pair(anode, filter_material)
    if pair in S_FACTORS:
        return Factor(S_FACTORS[pair])
    reason = S_NOT_COMPUTABLE.get(pair, f"no published s factor for {pair[0]}/{pair[1]}")
    return Factor(None, reason=reason)


def g_factor(hvl_mm_al: float, thickness_mm: float) -> Factor:
    """Dance 2000 g by bilinear interpolation; raises :class:`OutsideTableError` outside it."""
    value, flags = DANCE_2000_G.lookup(hvl_mm_al, thickness_mm / 10.0)
    return Factor(value, flags=flags)


C_UNITY_LABEL = "c = 1 (50 % glandular assumed; no physicist c table loaded)"
#: c = 1.000 at 50 % glandularity by construction of g (Dance 2000): no table is needed.
C_AT_50_PCT_LABEL = "c = 1.000 at 50 % glandularity (by construction of g)"
C_UNITY = Factor(1.0, flags=(C_UNITY_LABEL,))


#: Typical glandularity (%) by compressed thickness (cm), Dance 2000 (dose.md §3).
TYPICAL_GLANDULARITY_PCT: Mapping[str, Mapping[float, float]] = {
    "50-64": {2: 100, 3: 72, 4: 50, 5: 33, 6: 21, 7: 12, 8: 7, 9: 4, 10: 3, 11: 3},
    "40-49": {2: 100, 3: 82, 4: 65, 5: 49, 6: 35, 7: 24, 8: 14, 9: 8, 10: 5, 11: 5},
}


#: The age bands of Dance 2000's typical-breast tables, ``[first, last]`` years inclusive.
AGE_GROUPS: Mapping[str, tuple[int, int]] = {"40-49": (40, 49), "50-64": (50, 64)}


def age_group(age_years: float) -> str | None:
    """The Dance 2000 typical-breast band an age falls in, or None (galactography patients are
    often younger than 40)."""
    for name, (first, last) in AGE_GROUPS.items():
        if first <= age_years < last + 1:
            return name
    return None


def typical_glandularity_pct(thickness_mm: float, age_group: str = "50-64") -> float:
    """Typical glandularity for a thickness, linear between the tabulated centimetres."""
    try:
        table = TYPICAL_GLANDULARITY_PCT[age_group]
    except KeyError:
        raise DosimetryError(
            f"no typical glandularity for age group {age_group!r} "
            f"(known: {', '.join(TYPICAL_GLANDULARITY_PCT)})"
        ) from None
    axis = sorted(table)
    i0, i1, u = _bracket(
        axis, thickness_mm / 10.0, f"Dance 2000 typical glandularity {age_group}", THICKNESS_AXIS
    )
    return table[axis[i0]] * (1 - u) + table[axis[i1]] * u


#: Typical measured HVL with paddle, linear fits ``slope · kV + intercept`` (mm Al; dose.md §3).
HVL_FITS: Mapping[tuple[str, str], tuple[float, float]] = {
    ("MOLYBDENUM", "MOLYBDENUM"): (0.01, 0.08),
    ("MOLYBDENUM", "RHODIUM"): (0.0067, 0.2333),
    ("RHODIUM", "RHODIUM"): (0.0167, -0.0367),
    ("TUNGSTEN", "RHODIUM"): (0.0067, 0.3533),
}

HVL_SOURCE_REPORTED = "reported"
HVL_SOURCE_PHYSICIST = "physicist table"
HVL_SOURCE_ESTIMATED = "estimated"


@dataclass(frozen=True)
class Hvl:
    """A half value layer and where it came from (dose.md §2: reported / physicist / estimated)."""

    mm_al: float
    source: str


def estimate_hvl(anode: str, filter_material: str, kvp: float) -> Hvl:
    """HVL from the typical linear fits, flagged as an estimate; raises for unknown combinations."""
    pair = _pair(anode, filter_material)
    try:
        slope, intercept = HVL_FITS[pair]
    except KeyError:
        raise DosimetryError(f"no HVL fit for {pair[0]}/{pair[1]}") from None
    return Hvl(round(slope * kvp + intercept, 4), HVL_SOURCE_ESTIMATED)


# ---------------------------------------------------------------------------------------------
# §3 The model


@dataclass(frozen=True)
class MgdResult:
    """One mean glandular dose, the factors used, and what a reader must know about it."""

    mgd_mgy: float | None
    k_surface_mgy: float
    g: float | None
    c: float | None
    s: float | None
    hvl: Hvl
    thickness_mm: float
    flags: tuple[str, ...] = ()
    not_computable_reason: str = ""

    @property
    def computable(self) -> bool:
        return self.mgd_mgy is not None


def mean_glandular_dose(
    *,
    k_surface_mgy: float,
    hvl: Hvl,
    thickness_mm: float,
    anode: str,
    filter_material: str,
    c: Factor = C_UNITY,
) -> MgdResult:
    """``MGD = K · g · c · s`` (Dance; dose.md §3), K at the breast's upper surface.

    ``c`` is chosen by the caller (:class:`dose.tables.CTables`), with its basis in its flags;
    by default c = 1 and the flags say so. Never raises for a clinical input: a missing factor
    gives a result that is not computable with the reason (outside the g table, no s factor for
    the target/filter, no c).
    """
    flags: list[str] = []
    if hvl.source == HVL_SOURCE_ESTIMATED:
        flags.append("HVL estimated from typical fits")
    reasons: list[str] = []
    try:
        g = g_factor(hvl.mm_al, thickness_mm)
    except OutsideTableError as exc:
        reasons.append(str(exc))
        g = Factor(None)
    flags += [*g.flags, *c.flags]
    if not c.computable:
        reasons.append(c.reason)
    s = s_factor(anode, filter_material)
    if not s.computable:
        reasons.append(s.reason)
    mgd = None
    if g.value is not None and c.value is not None and s.value is not None:
        mgd = k_surface_mgy * g.value * c.value * s.value
    return MgdResult(
        mgd_mgy=mgd,
        k_surface_mgy=k_surface_mgy,
        g=g.value,
        c=c.value,
        s=s.value,
        hvl=hvl,
        thickness_mm=thickness_mm,
        flags=tuple(flags),
        not_computable_reason="; ".join(reasons),
    )
