"""The physicist's tables: a unit's measured HVL and the glandularity correction c (dose.md §3).

Both are TOML files a physicist writes from the annual survey and the published tables; galacto
ships none of their values (the c tables of Dance et al. 2000 are not reproduced here). Each file
says what it is and where its numbers come from; docs/dose.md shows one of each.

**HVL of one unit** (``dose.hvl_tables`` lists the files)::

    [unit]                      # which unit: matched on the exposure's header / RDSR
    manufacturer = "Acme"       # compared case-insensitively, surrounding spaces ignored
    model = "Mammo 3000"
    serial = "SN42"             # optional: empty or absent matches every unit of the model
    measured = "2026-01-15 annual survey, with compression paddle"

    [hvl_mm_al."W/Rh"]          # target/filter: Mo, Rh, W / Mo, Rh, Ag, Al
    "25" = 0.50                 # kV = HVL in mm Al, linear between the kV given
    "30" = 0.55

**c table** (``dose.c_tables``), the shape of Dance's g table (rows HVL, columns thickness)::

    name = "c, 25 % glandularity"
    kind = "glandularity"       # or "age": a typical-breast table of Dance 2000
    glandularity_pct = 25       # for kind = "glandularity"
    age_group = "50-64"         # for kind = "age": "40-49" or "50-64"
    source = "Dance et al. 2000, Phys Med Biol 45:3225 (the table copied)"
    hvl_mm_al = [0.30, 0.35]    # the rows and columns of the published table
    thickness_cm = [2, 3, 4]
    values = [[c11, c12, c13], [c21, c22, c23]]   # its values, one list per HVL row

A value outside a table is never extrapolated: the caller gets the reason and no number.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose.dance import (
    AGE_GROUPS,
    C_AT_50_PCT_LABEL,
    C_UNITY_LABEL,
    ConversionTable,
    DosimetryError,
    Factor,
    OutsideTableError,
    age_group,
    material,
    typical_glandularity_pct,
)
from dose.record import DoseError

#: Chemical symbols of the target/filter materials, as physicists write them.
SYMBOLS: Mapping[str, str] = {
    "MOLYBDENUM": "Mo",
    "RHODIUM": "Rh",
    "TUNGSTEN": "W",
    "SILVER": "Ag",
    "ALUMINUM": "Al",
}


class TableError(DoseError, ValueError):
    """A physicist's table file cannot be used (its path and the reason in the message)."""


def symbol_pair(anode: str, filter_material: str) -> str:
    """``"TUNGSTEN", "RHODIUM"`` → ``"W/Rh"``."""
    a, f = material(anode), material(filter_material)
    return f"{SYMBOLS.get(a, a)}/{SYMBOLS.get(f, f)}"


def read_toml(path: str | Path, error: type[DoseError]) -> dict[str, Any]:
    """A physicist's TOML file; ``error`` names the file and what is wrong with it."""
    try:
        with Path(path).open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from exc


def _read(path: str | Path) -> dict[str, Any]:
    return read_toml(path, TableError)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TableError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _text(doc: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = doc.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise TableError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").strip().casefold() == (b or "").strip().casefold()


# ---------------------------------------------------------------------------------- HVL


@dataclass(frozen=True)
class HvlTable:
    """The HVL a physicist measured on one unit (or every unit of a model), by target/filter
    and kV; linear in kV between the points measured, never extrapolated."""

    path: str
    manufacturer: str
    model: str
    serial: str
    measured: str
    #: "W/Rh" → ((kV, HVL mm Al), ...) sorted by kV
    points: Mapping[str, tuple[tuple[float, float], ...]]

    @property
    def name(self) -> str:
        unit = f"{self.manufacturer} {self.model}" + (f" {self.serial}" if self.serial else "")
        return f"HVL table of {unit} ({self.measured or Path(self.path).name})"

    def matches(self, manufacturer: str | None, model: str | None, serial: str | None) -> bool:
        """Whether an exposure of this unit is served by the table."""
        if not (_same(manufacturer, self.manufacturer) and _same(model, self.model)):
            return False
        return not self.serial or _same(serial, self.serial)

    def hvl_mm_al(self, anode: str, filter_material: str, kvp: float) -> float:
        """The HVL at ``kvp``; :class:`OutsideTableError` (with the reason) when the table has
        no such target/filter or the kV is outside the kV measured."""
        pair = symbol_pair(anode, filter_material)
        points = self.points.get(pair)
        if not points:
            raise OutsideTableError(f"{self.name} has no {pair} row")
        kvs = [kv for kv, _ in points]
        if math.isnan(kvp) or not kvs[0] - 1e-9 <= kvp <= kvs[-1] + 1e-9:
            raise OutsideTableError(
                f"{kvp:g} kV is outside [{kvs[0]:g}, {kvs[-1]:g}] kV of the {pair} row of "
                f"{self.name}"
            )
        for (kv0, h0), (kv1, h1) in itertools.pairwise(points):
            if kvp <= kv1 + 1e-9:
                return h0 + (h1 - h0) * (kvp - kv0) / (kv1 - kv0)
        return points[-1][1]  # a single-point row at exactly that kV


def load_hvl_table(path: str | Path) -> HvlTable:
    """Read one unit's HVL table (module docstring); :class:`TableError` naming the problem."""
    doc = _read(path)
    unit = doc.get("unit")
    if not isinstance(unit, dict):
        raise TableError(f"{path}: a [unit] table (manufacturer, model) is required")
    rows = doc.get("hvl_mm_al")
    if not isinstance(rows, dict) or not rows:
        raise TableError(f'{path}: an [hvl_mm_al."<target>/<filter>"] table is required')
    points: dict[str, tuple[tuple[float, float], ...]] = {}
    for pair, row in rows.items():
        target, _, filt = str(pair).partition("/")
        key = symbol_pair(target, filt)
        if key not in _KNOWN_PAIRS:
            raise TableError(f'{path}: {pair!r} is not a target/filter such as "W/Rh"')
        if not isinstance(row, dict) or not row:
            raise TableError(f"{path}: hvl_mm_al.{pair} must map kV to HVL")
        measured = []
        for kv, hvl in row.items():
            where = f"{path}: hvl_mm_al.{pair}.{kv}"
            try:
                kv_value = float(kv)
            except ValueError:
                raise TableError(f'{where}: the key must be a kV such as "28"') from None
            hvl_value = _number(hvl, where)
            if not (15 <= kv_value <= 50 and 0.1 <= hvl_value <= 2.0):
                raise TableError(f"{where}: {kv_value:g} kV / {hvl_value:g} mm Al is no HVL")
            measured.append((kv_value, hvl_value))
        points[key] = tuple(sorted(measured))
    return HvlTable(
        path=str(path),
        manufacturer=_text(unit, "manufacturer", f"{path}: [unit]"),
        model=_text(unit, "model", f"{path}: [unit]"),
        serial=_text(unit, "serial", f"{path}: [unit]", required=False),
        measured=_text(unit, "measured", f"{path}: [unit]", required=False),
        points=points,
    )


_KNOWN_PAIRS = {f"{a}/{f}" for a in ("Mo", "Rh", "W") for f in ("Mo", "Rh", "Ag", "Al", "Cu", "Sn")}


def hvl_table_for(
    tables: Iterable[HvlTable], manufacturer: str | None, model: str | None, serial: str | None
) -> HvlTable | None:
    """The table of this unit: one naming its serial number first, else one of its model."""
    candidates = [t for t in tables if t.matches(manufacturer, model, serial)]
    candidates.sort(key=lambda t: not t.serial)
    return candidates[0] if candidates else None


# ---------------------------------------------------------------------------------- c


@dataclass(frozen=True)
class CTable:
    """One physicist-loaded c table: for one glandularity, or Dance 2000's typical breast of
    one age group."""

    table: ConversionTable
    kind: str  # "glandularity" or "age"
    glandularity_pct: float | None
    age_group: str | None
    source: str

    @property
    def name(self) -> str:
        return self.table.name


def load_c_table(path: str | Path) -> CTable:
    """Read one c table (module docstring); :class:`TableError` naming the problem."""
    doc = _read(path)
    where = str(path)
    kind = doc.get("kind")
    if kind not in ("glandularity", "age"):
        raise TableError(f'{where}: kind must be "glandularity" or "age", got {kind!r}')
    glandularity = age = None
    if kind == "glandularity":
        glandularity = _number(doc.get("glandularity_pct"), f"{where}: glandularity_pct")
        if not 0 <= glandularity <= 100:
            raise TableError(f"{where}: glandularity_pct must be within [0, 100]")
    else:
        age = doc.get("age_group")
        if age not in AGE_GROUPS:
            raise TableError(f"{where}: age_group must be one of {', '.join(AGE_GROUPS)}")
    try:
        hvls = tuple(_number(v, f"{where}: hvl_mm_al") for v in doc.get("hvl_mm_al", []))
        thicknesses = tuple(
            _number(v, f"{where}: thickness_cm") for v in doc.get("thickness_cm", [])
        )
        values = tuple(
            tuple(_number(v, f"{where}: values") for v in row) for row in doc.get("values", [])
        )
        table = ConversionTable(_text(doc, "name", where), hvls, thicknesses, values, doubtful={})
    except (TypeError, DosimetryError) as exc:
        raise TableError(f"{where}: not a c table ({exc})") from exc
    if not hvls or not thicknesses:
        raise TableError(f"{where}: hvl_mm_al, thickness_cm and values are required")
    if any(not 0.3 <= v <= 2.0 for row in values for v in row):
        raise TableError(f"{where}: a c value outside [0.3, 2.0] is no glandularity correction")
    return CTable(table, kind, glandularity, age, _text(doc, "source", where))


@dataclass(frozen=True)
class CChoice:
    """The c used for one exposure, the glandularity it stands for (None: unknown) and why."""

    factor: Factor
    glandularity_pct: float | None


@dataclass(frozen=True)
class CTables:
    """Every c table loaded; :meth:`choose` picks c for one exposure (dose.md §3)."""

    tables: tuple[CTable, ...] = ()

    def _by_glandularity(self) -> list[CTable]:
        return sorted(
            (t for t in self.tables if t.kind == "glandularity"),
            key=lambda t: t.glandularity_pct or 0.0,
        )

    def _for_age(self, group: str) -> CTable | None:
        return next((t for t in self.tables if t.age_group == group), None)

    def choose(
        self,
        hvl_mm_al: float,
        thickness_mm: float,
        *,
        glandularity_pct: float | None = None,
        age_years: float | None = None,
    ) -> CChoice:
        """c for one exposure, best first:

        1. a known glandularity (the unit's): c = 1.000 at 50 %; else the glandularity tables,
           linear between the two that bracket it;
        2. a known age in a Dance 2000 band (40–49, 50–64): that band's typical-breast table,
           else the glandularity tables at that band's typical glandularity;
        3. otherwise c = 1, and the basis says why (no table, unknown age, an age outside the
           bands — galactography patients are often younger).

        Raises :class:`OutsideTableError` when the chosen table does not cover the HVL or the
        thickness (never extrapolated).
        """
        if glandularity_pct is not None:
            return self._by_gland(hvl_mm_al, thickness_mm, glandularity_pct, "")
        if age_years is None:
            return CChoice(Factor(1.0, flags=(f"{C_UNITY_LABEL}; age unknown",)), None)
        group = age_group(age_years)
        if group is None:
            bands = ", ".join(f"{a}–{b}" for a, b in AGE_GROUPS.values())
            why = f"c = 1: age {age_years:g} is outside Dance 2000's typical-breast bands {bands}"
            return CChoice(Factor(1.0, flags=(why,)), None)
        typical = typical_glandularity_pct(thickness_mm, group)
        table = self._for_age(group)
        if table is not None:
            value, flags = table.table.lookup(hvl_mm_al, thickness_mm / 10.0)
            basis = f"c from {table.name!r} (typical breast, age {group}; {table.source})"
            return CChoice(Factor(value, flags=(basis, *flags)), typical)
        return self._by_gland(
            hvl_mm_al, thickness_mm, typical, f"typical for age {group}, Dance 2000"
        )

    def _by_gland(self, hvl_mm_al: float, thickness_mm: float, pct: float, why: str) -> CChoice:
        label = f"{pct:g} % glandularity" + (f", {why}" if why else "")
        if math.isclose(pct, 50.0):
            at_50 = C_AT_50_PCT_LABEL + (f" ({why})" if why else "")
            return CChoice(Factor(1.0, flags=(at_50,)), pct)
        tables = self._by_glandularity()
        lower = [t for t in tables if (t.glandularity_pct or 0) <= pct + 1e-9]
        upper = [t for t in tables if (t.glandularity_pct or 0) >= pct - 1e-9]
        if not lower or not upper:
            known = ", ".join(f"{t.glandularity_pct:g} %" for t in tables) or "none"
            why_not = f"c = 1: no c table brackets {label} (loaded: {known})"
            return CChoice(Factor(1.0, flags=(why_not,)), pct)
        lo, hi = lower[-1], upper[0]
        c_lo, flags_lo = lo.table.lookup(hvl_mm_al, thickness_mm / 10.0)
        if lo is hi:
            basis = f"c from {lo.name!r} ({label}; {lo.source})"
            return CChoice(Factor(c_lo, flags=(basis, *flags_lo)), pct)
        c_hi, flags_hi = hi.table.lookup(hvl_mm_al, thickness_mm / 10.0)
        w = (pct - (lo.glandularity_pct or 0)) / (
            (hi.glandularity_pct or 0) - (lo.glandularity_pct or 0)
        )
        basis = f"c linear between {lo.name!r} and {hi.name!r} ({label}; {lo.source}; {hi.source})"
        return CChoice(Factor(c_lo + (c_hi - c_lo) * w, flags=(basis, *flags_lo, *flags_hi)), pct)


def load_c_tables(paths: Sequence[str | Path]) -> CTables:
    """Every c table named; two tables for the same glandularity or age group are refused."""
    tables = tuple(load_c_table(p) for p in paths)
    seen: dict[object, str] = {}
    for t in tables:
        key = (t.kind, t.glandularity_pct, t.age_group)
        if key in seen:
            raise TableError(f"{t.name!r} and {seen[key]!r} cover the same {t.kind}")
        seen[key] = t.name
    return CTables(tables)
