"""The pure journal fold: the exam as its journal tells it (style.md §4: the state lives in the
journal, nowhere else).

:meth:`ExamRecord.apply` folds one entry; the service applies every entry it writes, and
:func:`replay` folds the open exam's entries at start-up, so a restart resumes in the same state
with the same facts. No I/O beyond reading the journal in :func:`replay`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from acquisition.exam.model import CONTRAST_AGENT, ContrastRecord, ExamOrder
from acquisition.exam_machine import ExamEvent, ExamFacts, ExamState, Limits
from acquisition.journal import Entry, Journal

S, E = ExamState, ExamEvent


@dataclass
class ExamRecord:
    """The exam as the journal tells it; :meth:`apply` is the only thing that changes it."""

    order: ExamOrder | None = None
    state: ExamState = S.IDLE
    checklist_passed: bool = False
    exposures_by_phase: dict[str, int] = field(default_factory=dict)
    noted_exposures: dict[int, str] = field(default_factory=dict)  # exposure id -> phase
    cannulation_confirmed: bool = False
    air_purge_confirmed: bool = False
    injections_started: int = 0
    injection_running: dict[str, Any] | None = None  # started, not yet ended
    volume_given_ml: float = 0.0
    fault_phase: ExamState | None = None
    fault_reason: str | None = None
    discontinuation_reason: str | None = None
    contrast: list[ContrastRecord] = field(default_factory=list)
    #: The syringe: loaded at the last air purge (None before any, or in a journal older than
    #: the loaded volume: its nominal size then), and given from it since.
    syringe_loaded_ml: float | None = None
    syringe_given_ml: float = 0.0

    def apply(self, entry: Entry) -> None:
        """Fold one journal entry into the record (live and on replay alike)."""
        p = entry.payload
        if entry.kind == "exam-opened":
            self._reset()
            self.order = ExamOrder.from_json(p["order"])
        elif entry.kind == "transition":
            self.state = S(p["to"])
            if self.state is S.IDLE:  # the exam was closed: nothing of it carries over
                self._reset()
            if self.state is S.FAULT:
                self.fault_phase = S(p["from"])
            self.fault_reason = p.get("reason") if self.state is S.FAULT else None
            if p["event"] == E.DISCONTINUE.value:
                self.discontinuation_reason = p.get("reason_code")
        elif entry.kind == "checklist":
            self.checklist_passed = bool(p["passed"])
        elif entry.kind == "confirmation":
            setattr(self, f"{p['what'].replace('-', '_')}_confirmed", True)
            if p["what"] == "air-purge":  # only a new purge raises what the syringe holds
                self.syringe_loaded_ml = p.get("loaded_ml")
                self.syringe_given_ml = 0.0
        elif entry.kind == "exposure":
            self.noted_exposures[int(p["exposure_id"])] = str(p["phase"])
            if p["counted"]:
                phase = p["phase"]
                self.exposures_by_phase[phase] = self.exposures_by_phase.get(phase, 0) + 1
        elif entry.kind == "injection-started":
            self.injections_started += 1
            self.injection_running = dict(p)
            # Each injection needs its own air-purge confirmation: the syringe may be refilled
            # and the line re-primed before a second one (bubbles mimic filling defects).
            self.air_purge_confirmed = False
        elif entry.kind == "injection-corrected" and self.contrast:
            last = self.contrast[-1]
            delivered = float(p["delivered_ml"])
            self.volume_given_ml += delivered - last.delivered_ml
            self.syringe_given_ml += delivered - last.delivered_ml
            self.contrast[-1] = dataclasses.replace(last, delivered_ml=delivered)
        elif entry.kind == "injection-ended":
            started, self.injection_running = self.injection_running, None
            if p.get("not_started"):  # refused by the injector before RUN: not an injection
                self.injections_started -= 1
                self.air_purge_confirmed = True  # nothing went through the line
            elif started is not None:
                self.contrast.append(_contrast_record(started, p, entry))
            self.volume_given_ml += float(p["delivered_ml"])
            self.syringe_given_ml += float(p["delivered_ml"])

    def _reset(self) -> None:
        self.__dict__.update(vars(ExamRecord()))

    def facts(self, limits: Limits, injector_healthy: bool, syringe_ml: float) -> ExamFacts:
        """What the machine's interlocks look at (``syringe_ml``: the syringe's nominal size)."""
        loaded = syringe_ml if self.syringe_loaded_ml is None else self.syringe_loaded_ml
        return ExamFacts(
            checklist_passed=self.checklist_passed,
            pre_contrast_exposures=self.exposures_by_phase.get(S.PRE_CONTRAST.value, 0),
            post_injection_exposures=(
                self.exposures_by_phase.get(self.state.value, 0)
                if self.state in (S.POST_INJECTION_1, S.POST_INJECTION_2)
                else 0
            ),
            cannulation_confirmed=self.cannulation_confirmed,
            air_purge_confirmed=self.air_purge_confirmed,
            injector_healthy=injector_healthy,
            injections_started=self.injections_started,
            volume_given_ml=self.volume_given_ml,
            discontinuation_reason=self.discontinuation_reason,
            fault_phase=self.fault_phase,
            syringe_left_ml=loaded - self.syringe_given_ml,
            limits=limits,
        )


def _contrast_record(
    started: Mapping[str, Any], ended: Mapping[str, Any], entry: Entry
) -> ContrastRecord:
    return ContrastRecord(
        number=int(started["number"]),
        agent=str(started.get("agent", CONTRAST_AGENT)),
        programmed_ml=float(started["volume_ml"]),
        delivered_ml=float(ended["delivered_ml"]),
        rate_ml_min=float(started.get("rate_ml_min", 0.0)),
        started_at=str(started.get("started_at", "")),
        stopped_at=str(ended.get("ended_at") or entry.recorded_utc),
        peak_pressure_kpa=ended.get("peak_pressure_kpa"),
        completed=bool(ended.get("completed")),
        reason=str(ended.get("reason", "")),
        event_codes=tuple(ended.get("event_codes") or ()),
    )


def replay(journal: Journal) -> ExamRecord | None:
    """The open exam (the last one opened, unless it was closed) folded from ``journal``;
    None when no exam is open."""
    opened = journal.last("exam-opened")
    if opened is None or opened.exam_id is None:
        return None
    record = ExamRecord()
    for entry in journal.entries(exam_id=opened.exam_id):
        record.apply(entry)
    return None if record.state is S.IDLE else record
