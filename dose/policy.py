"""Everything galacto checks on one exposure, in one place: :meth:`DosePolicy.assess`.

The dose log applies it to each row as the row is written (the same transaction as the
exposure: a row is never visible without its checks):

1. the plausibility findings of the values received (:mod:`dose.plausibility`), kept in the row;
2. the independent Dance check (:mod:`dose.check`): its figure, factors and basis; a unit
   factor between the unit's AGD and ours is one more finding ("unit suspected");
3. the reference levels (:mod:`dose.levels`) for a plausible patient exposure, with the unit's
   AGD (or, when the unit gave none, the Dance figure, and the comparison says so);
4. the alerts: one for an implausible exposure, one per level with ``alert = true`` exceeded.

Per exam and breast, :meth:`DosePolicy.exam_breast_alerts` compares the one total of
:mod:`dose.totals` with the exam levels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dose import plausibility
from dose.check import (
    DEFAULT_TOLERANCE_PCT,
    UNIT_SUSPECTED,
    DanceCheck,
    DanceTables,
    check_exposure,
)
from dose.levels import Comparison, LevelSet
from dose.totals import BreastTotal

#: ``level_id`` of the alert an implausible exposure raises.
IMPLAUSIBLE_ALERT = "implausible"
IMPLAUSIBLE_ALERT_NAME = "plausibility"


@dataclass(frozen=True)
class AlertSpec:
    """An alert to raise: which level, its limit (None for plausibility), the value, why."""

    level_id: str
    level_name: str
    limit_mgy: float | None
    value_mgy: float | None
    detail: str


@dataclass(frozen=True)
class Assessment:
    """What the dose log writes into one row, and the alerts the row raises."""

    check: DanceCheck
    #: every finding of the row: the values' own and the Dance check's ("unit suspected")
    plausibility: tuple[str, ...]
    comparisons: tuple[Comparison, ...]
    alerts: tuple[AlertSpec, ...]
    level_comparison: str

    def columns(self) -> dict[str, Any]:
        """The row's computed columns (dose-log schema)."""
        c = self.check
        return {
            "agd_computed_mgy": c.mgd_mgy,
            "dance_k_mgy": c.k_mgy,
            "dance_hvl_mm_al": c.hvl_mm_al,
            "dance_g": c.g,
            "dance_c": c.c,
            "dance_s": c.s,
            "agd_computed_basis": c.basis,
            "dance_check": c.verdict,
            "plausibility": plausibility.SEPARATOR.join(self.plausibility),
            "level_comparison": self.level_comparison,
            "alert_flags": plausibility.SEPARATOR.join(a.level_name for a in self.alerts),
        }


def _unit_suspected(check: DanceCheck, reported: Any) -> str | None:
    if check.verdict != UNIT_SUSPECTED or check.mgd_mgy is None or check.ratio is None:
        return None
    return (
        f"{UNIT_SUSPECTED}: reported AGD {float(reported):.4g} mGy is {check.ratio:.3g} × the "
        f"Dance figure {check.mgd_mgy:.4g} mGy"
    )


@dataclass(frozen=True)
class DosePolicy:
    """The physicist's tables, the cross-check tolerance and the levels in force."""

    tables: DanceTables = field(default_factory=DanceTables)
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT
    levels: LevelSet = field(default_factory=LevelSet)

    def assess(self, row: Mapping[str, Any], findings: tuple[str, ...] = ()) -> Assessment:
        """Check one row (column → value). ``findings`` are its values' own plausibility
        findings as received (kept in the row even once a value was replaced)."""
        check = check_exposure(row, self.tables, tolerance_pct=self.tolerance_pct)
        found = [f for f in findings if not f.startswith(UNIT_SUSPECTED)]
        suspected = _unit_suspected(check, row.get("agd_reported_mgy"))
        if suspected:
            found.append(suspected)
        alerts: list[AlertSpec] = []
        comparisons: list[Comparison] = []
        note = ""
        reported = row.get("agd_reported_mgy")
        if found:
            alerts.append(
                AlertSpec(
                    IMPLAUSIBLE_ALERT,
                    IMPLAUSIBLE_ALERT_NAME,
                    None,
                    None if reported is None else float(reported),
                    plausibility.SEPARATOR.join(found),
                )
            )
            note = "not compared: implausible"
        elif plausibility.is_qa(row):
            note = "not compared: physics/QA exposure"
        else:
            value = reported if reported is not None else check.mgd_mgy
            if value is None:
                note = "not compared: no AGD (none reported, no Dance figure)"
            else:
                comparisons = self.levels.compare_exposure(row, float(value))
                if not comparisons:
                    note = "no reference level applies to this view and thickness"
                elif reported is None:
                    note = "compared with the Dance figure: the unit reported no AGD"
                alerts += [
                    AlertSpec(c.level.id, c.level.name, c.limit_mgy, c.value_mgy, c.describe())
                    for c in comparisons
                    if c.above and c.level.alert
                ]
        text = "; ".join([*(c.describe() for c in comparisons), *([note] if note else [])])
        return Assessment(check, tuple(found), tuple(comparisons), tuple(alerts), text)

    def exam_breast_alerts(self, total: BreastTotal) -> list[AlertSpec]:
        """The exam levels one breast's accumulated AGD exceeds."""
        return [
            AlertSpec(
                c.level.id,
                c.level.name,
                c.limit_mgy,
                c.value_mgy,
                f"{total.laterality} breast: {c.describe()}; total {total.describe()}",
            )
            for c in self.levels.compare_exam_breast(total.agd_mgy)
            if c.above and c.level.alert
        ]
