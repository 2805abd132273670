"""Reference levels: per view and thickness band, per exam and breast (issue 9 §5; dose.md §4).

The levels live in TOML (``config/reference-levels.toml`` ships the published ones, each with
its source and year; a site file, ``dose.reference_levels_file``, overrides or adds levels by
``id``). Four ways to compare, one per kind of published level:

- ``pmma-equivalent``: the EUREF acceptable and achievable levels are for PMMA phantoms. A
  clinical exposure is compared at its equivalent-breast thickness: the level's PMMA points are
  placed at the breast thicknesses the PMMA → breast table gives (20 mm PMMA ≙ 21 mm breast …
  40 ≙ 45 … 70 ≙ 90), linear in between; a breast outside that table has no EUREF level.
- ``thickness-band``: a fixed level for the exposures of one thickness band only (the UK
  national DRL, 50–60 mm).
- ``fixed``: one level for every exposure the level's views cover (a site's level for
  magnified views; none is published, so it ships empty: "no level set").
- ``scope = "exam-breast"``: the exam's accumulated AGD per breast (the one total of
  :mod:`dose.totals`) against a fixed level; ships empty too (no galactography level exists).

A level with ``alert = true`` raises an alert when exceeded; ``alert = false`` (the achievable
levels) is reported in the row's comparison only.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydicom.sr.codedict import codes

from dose.record import DoseError, magnified
from dose.tables import read_toml

#: CID 4014 view codes → the short names levels and physicists use.
VIEW_NAMES: Mapping[str, str] = {
    codes.cid4014.CranioCaudal.value: "CC",
    codes.cid4014.MedioLateralObliqueProjection.value: "MLO",
    codes.cid4014.MedioLateralProjection.value: "ML",
    codes.cid4014.LateroMedial.value: "LM",
    codes.cid4014.LateroMedialOblique.value: "LMO",
    codes.cid4014.CranioCaudalExaggeratedLaterally.value: "XCCL",
    codes.cid4014.CranioCaudalExaggeratedMedially.value: "XCCM",
    codes.cid4014.CaudoCranial.value: "FB",
    codes.cid4014.SuperolateralToInferomedialOblique.value: "SIO",
    codes.cid4014.InferomedialToSuperolateralOblique.value: "ISO",
}

EXPOSURE, EXAM_BREAST = "exposure", "exam-breast"
PMMA_EQUIVALENT, THICKNESS_BAND, FIXED = "pmma-equivalent", "thickness-band", "fixed"
CONTACT, MAGNIFIED, ANY = "contact", "magnified", "any"
NO_LEVEL_SET = "no level set"


class LevelError(DoseError, ValueError):
    """A reference-level file cannot be used (its path and the reason in the message)."""


@dataclass(frozen=True)
class PmmaEquivalence:
    """PMMA thickness → equivalent breast thickness (and its glandularity), dose.md §4."""

    pmma_mm: tuple[float, ...]
    breast_mm: tuple[float, ...]
    glandularity_pct: tuple[float, ...]
    source: str

    def breast_for(self, pmma_mm: float) -> float | None:
        """The breast thickness equivalent to ``pmma_mm`` (linear between the tabulated ones)."""
        return _interpolate(self.pmma_mm, self.breast_mm, pmma_mm)


@dataclass(frozen=True)
class ReferenceLevel:
    """One level, as written in the TOML (module docstring)."""

    id: str
    name: str
    scope: str
    compare: str
    source: str
    year: int | None = None
    views: str = ANY  # contact / magnified / any
    view_names: tuple[str, ...] = ()  # () = every view
    mgy: float | None = None  # fixed and thickness-band levels; None = no level set
    thickness_mm: tuple[float, float] | None = None  # thickness-band
    pmma_mm: tuple[float, ...] = ()  # pmma-equivalent: the level at each PMMA thickness
    pmma_mgy: tuple[float, ...] = ()
    alert: bool = True
    enabled: bool = True

    @property
    def cited(self) -> str:
        return f"{self.source}{f', {self.year}' if self.year else ''}"

    def covers_view(self, row: Mapping[str, Any]) -> bool:
        is_magnified = magnified(row)
        if (self.views == CONTACT and is_magnified) or (
            self.views == MAGNIFIED and not is_magnified
        ):
            return False
        if not self.view_names:
            return True
        return VIEW_NAMES.get(str(row.get("view_code") or "")) in self.view_names


@dataclass(frozen=True)
class Comparison:
    """One value against one level: ``limit_mgy`` None when the level has no value here."""

    level: ReferenceLevel
    value_mgy: float
    limit_mgy: float | None
    note: str = ""

    @property
    def above(self) -> bool:
        return self.limit_mgy is not None and self.value_mgy > self.limit_mgy

    def describe(self) -> str:
        where = f" ({self.note})" if self.note else ""
        if self.limit_mgy is None:
            return f"{self.level.name}: {NO_LEVEL_SET}{where}"
        sign = ">" if self.above else "≤"
        return f"{self.level.name}: {self.value_mgy:.3f} {sign} {self.limit_mgy:.3f} mGy{where}"


@dataclass(frozen=True)
class LevelSet:
    """The levels in force and the PMMA → breast table the EUREF levels need."""

    levels: tuple[ReferenceLevel, ...] = ()
    equivalence: PmmaEquivalence | None = None

    def enabled(self, scope: str) -> list[ReferenceLevel]:
        return [level for level in self.levels if level.enabled and level.scope == scope]

    def compare_exposure(self, row: Mapping[str, Any], agd_mgy: float) -> list[Comparison]:
        """``agd_mgy`` of one exposure against every level that covers its view and thickness
        (a level whose band or table excludes the thickness does not apply)."""
        found = []
        thickness = row.get("compressed_thickness_mm")
        for level in self.enabled(EXPOSURE):
            if not level.covers_view(row):
                continue
            if level.compare == FIXED:
                found.append(Comparison(level, agd_mgy, level.mgy))
            elif level.compare == THICKNESS_BAND:
                if _in_band(thickness, level.thickness_mm):
                    assert level.thickness_mm is not None
                    low, high = level.thickness_mm
                    band = f"{low:g}–{high:g} mm band"
                    found.append(Comparison(level, agd_mgy, level.mgy, band))
            elif level.compare == PMMA_EQUIVALENT and isinstance(thickness, int | float):
                limit, note = self._pmma_limit(level, float(thickness))
                if limit is not None:
                    found.append(Comparison(level, agd_mgy, limit, note))
        return found

    def compare_exam_breast(self, total_mgy: float) -> list[Comparison]:
        """An exam's accumulated AGD of one breast against the exam levels."""
        return [Comparison(level, total_mgy, level.mgy) for level in self.enabled(EXAM_BREAST)]

    def _pmma_limit(self, level: ReferenceLevel, thickness_mm: float) -> tuple[float | None, str]:
        if self.equivalence is None or math.isnan(thickness_mm):
            return None, ""
        points = []
        for pmma, mgy in zip(level.pmma_mm, level.pmma_mgy, strict=True):
            breast = self.equivalence.breast_for(pmma)
            if breast is not None:
                points.append((breast, mgy, pmma))
        if not points:
            return None, ""
        breasts = tuple(p[0] for p in points)
        limit = _interpolate(breasts, tuple(p[1] for p in points), thickness_mm)
        if limit is None:
            return None, ""
        pmma_equivalent = _interpolate(breasts, tuple(p[2] for p in points), thickness_mm)
        return limit, f"{thickness_mm:g} mm breast ≙ {pmma_equivalent:.3g} mm PMMA"


def _in_band(thickness: Any, band: tuple[float, float] | None) -> bool:
    if band is None or not isinstance(thickness, int | float) or math.isnan(thickness):
        return False
    return band[0] <= thickness <= band[1]


def _interpolate(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """Linear interpolation on increasing ``xs``; None outside (never extrapolated)."""
    if not xs or math.isnan(x) or not xs[0] - 1e-9 <= x <= xs[-1] + 1e-9:
        return None
    i = bisect.bisect_left(xs, x)
    if i < len(xs) and math.isclose(xs[i], x, abs_tol=1e-9):
        return ys[i]
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


# ---------------------------------------------------------------------------------- loading


def _read(path: str | Path) -> dict[str, Any]:
    return read_toml(path, LevelError)


def _numbers(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise LevelError(f"{where}: expected a list of numbers")
    return tuple(float(v) for v in value)


def _increasing(values: tuple[float, ...], where: str) -> None:
    if list(values) != sorted(set(values)):
        raise LevelError(f"{where}: must be strictly increasing")


_LEVEL_KEYS = {
    "id", "name", "scope", "compare", "source", "year", "views", "view_names", "mgy",
    "thickness_mm", "pmma_mm", "alert", "enabled",
}  # fmt: skip


def _level(entry: Mapping[str, Any], where: str) -> ReferenceLevel:
    unknown = set(entry) - _LEVEL_KEYS
    if unknown:
        raise LevelError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    for key in ("id", "name", "scope", "compare", "source"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise LevelError(f"{where}: {key} must be a non-empty string")
    scope, compare = entry["scope"], entry["compare"]
    if scope not in (EXPOSURE, EXAM_BREAST):
        raise LevelError(f"{where}: scope must be {EXPOSURE!r} or {EXAM_BREAST!r}")
    if compare not in (PMMA_EQUIVALENT, THICKNESS_BAND, FIXED):
        raise LevelError(f"{where}: compare must be {PMMA_EQUIVALENT}, {THICKNESS_BAND} or {FIXED}")
    if scope == EXAM_BREAST and compare != FIXED:
        raise LevelError(f"{where}: an exam-breast level compares a fixed value")
    views = entry.get("views", ANY)
    if views not in (CONTACT, MAGNIFIED, ANY):
        raise LevelError(f"{where}: views must be {CONTACT}, {MAGNIFIED} or {ANY}")
    names = entry.get("view_names", [])
    if not isinstance(names, list) or not all(n in VIEW_NAMES.values() for n in names):
        raise LevelError(f"{where}: view_names must list views of {', '.join(VIEW_NAMES.values())}")
    year = entry.get("year")
    if year is not None and (not isinstance(year, int) or not 1950 <= year <= 2100):
        raise LevelError(f"{where}: year must be a year")
    level = ReferenceLevel(
        id=entry["id"].strip(),
        name=entry["name"].strip(),
        scope=scope,
        compare=compare,
        source=entry["source"].strip(),
        year=year,
        views=views,
        view_names=tuple(names),
        alert=bool(entry.get("alert", True)),
        enabled=bool(entry.get("enabled", True)),
    )
    if compare == PMMA_EQUIVALENT:
        pmma = _numbers(entry.get("pmma_mm"), f"{where}: pmma_mm")
        mgy = _numbers(entry.get("mgy"), f"{where}: mgy")
        _increasing(pmma, f"{where}: pmma_mm")
        if len(pmma) != len(mgy) or not pmma:
            raise LevelError(f"{where}: pmma_mm and mgy must have the same, non-zero length")
        level = replace(level, pmma_mm=pmma, pmma_mgy=mgy)
    else:
        value = entry.get("mgy")
        if value is not None:
            (number,) = _numbers([value], f"{where}: mgy")
            if number <= 0:
                raise LevelError(f"{where}: mgy must be positive")
            level = replace(level, mgy=number)
        if compare == THICKNESS_BAND:
            band = _numbers(entry.get("thickness_mm"), f"{where}: thickness_mm")
            if len(band) != 2 or band[0] >= band[1]:
                raise LevelError(f"{where}: thickness_mm must be [low, high]")
            level = replace(level, thickness_mm=(band[0], band[1]))
    return level


def _equivalence(doc: Mapping[str, Any], where: str) -> PmmaEquivalence:
    pmma = _numbers(doc.get("pmma_mm"), f"{where}: pmma_mm")
    breast = _numbers(doc.get("breast_mm"), f"{where}: breast_mm")
    glandularity = _numbers(doc.get("glandularity_pct"), f"{where}: glandularity_pct")
    if not (len(pmma) == len(breast) == len(glandularity)) or not pmma:
        raise LevelError(f"{where}: pmma_mm, breast_mm and glandularity_pct differ in length")
    _increasing(pmma, f"{where}: pmma_mm")
    _increasing(breast, f"{where}: breast_mm")
    source = doc.get("source")
    if not isinstance(source, str) or not source.strip():
        raise LevelError(f"{where}: source must name where the table comes from")
    return PmmaEquivalence(pmma, breast, glandularity, source.strip())


def load_levels(paths: Iterable[str | Path]) -> LevelSet:
    """The levels of the first file, each later file overriding keys of the levels it names
    by ``id`` (a site's file may hold only ``id`` and ``mgy``), adding new ones, and replacing
    ``[pmma_equivalence]`` when it has one."""
    raw: dict[str, dict[str, Any]] = {}
    origin: dict[str, str] = {}
    equivalence: PmmaEquivalence | None = None
    for path in paths:
        doc = _read(path)
        unknown = set(doc) - {"level", "pmma_equivalence"}
        if unknown:
            raise LevelError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}")
        if "pmma_equivalence" in doc:
            equivalence = _equivalence(doc["pmma_equivalence"], f"{path}: [pmma_equivalence]")
        entries = doc.get("level", [])
        if not isinstance(entries, list):
            raise LevelError(f"{path}: levels are [[level]] tables")
        for number, entry in enumerate(entries, 1):
            level_id = entry.get("id") if isinstance(entry, dict) else None
            if not isinstance(level_id, str) or not level_id.strip():
                raise LevelError(f"{path}: level {number} has no id")
            raw[level_id] = {**raw.get(level_id, {}), **entry}
            origin[level_id] = f"{path}: level {level_id!r}"
    levels = tuple(_level(entry, origin[level_id]) for level_id, entry in raw.items())
    if equivalence is None and any(lv.compare == PMMA_EQUIVALENT and lv.enabled for lv in levels):
        raise LevelError("a pmma-equivalent level needs a [pmma_equivalence] table")
    return LevelSet(levels, equivalence)
