"""The one per-breast total (issue 9 §2): used by the console, the CLI, the demo, the reports
and the accumulated dose of the exam's RDSR (TID 10005).

It is the sum of the unit's **reported** AGD over the exam's events of that breast, leaving out
the events a reader cannot trust: those flagged implausible (a value outside its physical range,
NaN or infinite, a unit suspected), physics/QA exposures, and events without a reported AGD.
Every total says how many events it left out and why; the Dance figure is never summed in (it
is a check, not the unit's dose).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dose.plausibility import is_implausible, is_qa

SIDES = ("L", "R")

IMPLAUSIBLE = "implausible"
QA = "physics/QA"
NO_AGD = "no reported AGD"


@dataclass
class BreastTotal:
    """Accumulated reported AGD of one breast and what was left out of it."""

    laterality: str
    agd_mgy: float = 0.0
    events: int = 0
    #: reason → number of events left out
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def left_out_count(self) -> int:
        return sum(self.left_out.values())

    def describe(self) -> str:
        """``2.345 mGy (3 events; 1 event left out: 1 implausible)``."""
        text = f"{self.agd_mgy:.3f} mGy ({self.events} event{'s' * (self.events != 1)}"
        if self.left_out:
            n = self.left_out_count
            reasons = ", ".join(f"{count} {why}" for why, count in sorted(self.left_out.items()))
            text += f"; {n} event{'s' * (n != 1)} left out: {reasons}"
        return text + ")"

    def as_json(self) -> dict[str, Any]:
        return {
            "agd_mgy": self.agd_mgy,
            "events": self.events,
            "left_out": self.left_out_count,
            "left_out_reasons": dict(self.left_out),
        }


@dataclass
class Totals:
    """The per-breast totals of some events (L and R always present)."""

    breasts: dict[str, BreastTotal]
    #: events with no breast laterality (none, or "B"): in no breast's total
    without_laterality: int = 0

    @property
    def agd_mgy(self) -> dict[str, float]:
        return {side: total.agd_mgy for side, total in self.breasts.items()}

    def describe(self) -> str:
        parts = [f"{side} {total.describe()}" for side, total in self.breasts.items()]
        if self.without_laterality:
            parts.append(f"{self.without_laterality} event(s) without a breast laterality")
        return " · ".join(parts)

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {side: t.as_json() for side, t in self.breasts.items()}
        doc["without_laterality"] = self.without_laterality
        return doc


def left_out_reason(row: Mapping[str, Any]) -> str | None:
    """Why an event does not count in its breast's total, or None when it counts."""
    if is_qa(row):
        return QA
    if is_implausible(row):
        return IMPLAUSIBLE
    if row.get("agd_reported_mgy") is None:
        return NO_AGD
    return None


def per_breast_totals(rows: Iterable[Mapping[str, Any]]) -> Totals:
    """The one per-breast total of ``rows`` (dose-log rows, or records' fields)."""
    breasts = {side: BreastTotal(side) for side in SIDES}
    without = 0
    for row in rows:
        total = breasts.get(str(row.get("laterality") or ""))
        if total is None:
            without += 1
            continue
        reason = left_out_reason(row)
        if reason is None:
            total.agd_mgy += float(row["agd_reported_mgy"])
            total.events += 1
        else:
            total.left_out[reason] = total.left_out.get(reason, 0) + 1
    return Totals(breasts, without)
