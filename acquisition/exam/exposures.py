"""Exposure noting: the exam's exposures read back from the dose log, each given its phase.

Every exposure the unit reports is logged by the storage side whatever state the exam is in;
this room only annotates the rows. A row of the open exam's study gets the phase its SPS ID
names when the exam is in that phase (``counted``: it is one of the phase's exposures), else
:data:`~acquisition.exam.model.UNEXPECTED` (kept, flagged for review, not counted). A row of no
open exam (before any exam, after one was closed, another patient's) is a stray: annotated
``unexpected`` and journaled without an exam.

The journal entry always comes before the annotation, so a crash in between leaves a row the
journal knows: it is annotated on the next pass (:meth:`ExposureNoter.note`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from acquisition.dose_log import DoseLog
from acquisition.exam.model import PHASE_STEPS, UNEXPECTED, phase_sps_id
from acquisition.exam.record import ExamRecord
from acquisition.exam_machine import ExamState

log = logging.getLogger(__name__)

#: Journals one ``exposure`` entry (of the open exam, or of none for a stray).
JournalExposure = Callable[[Mapping[str, Any]], None]


def phase_of_sps(exam_id: str, sps_id: str | None) -> ExamState | None:
    """The imaging phase whose step of exam ``exam_id`` has SPS ID ``sps_id`` (None: none)."""
    for state in PHASE_STEPS:
        if sps_id is not None and sps_id == phase_sps_id(exam_id, state):
            return state
    return None


def exposure_entry(row: Mapping[str, Any], record: ExamRecord) -> dict[str, Any]:
    """The ``exposure`` payload of a new dose-log row of the open exam ``record``."""
    assert record.order is not None
    sps_id = row.get("sps_id")
    step_phase = phase_of_sps(record.order.exam_id, sps_id)
    counted = step_phase is not None and step_phase is record.state
    phase = step_phase.value if counted and step_phase else UNEXPECTED
    return {"exposure_id": int(row["id"]), "sps_id": sps_id, "phase": phase, "counted": counted}


def stray_entry(row: Mapping[str, Any], open_study: str | None) -> dict[str, Any]:
    """The ``exposure`` payload of a row of no open exam."""
    return {
        "exposure_id": int(row["id"]),
        "sps_id": row.get("sps_id"),
        "phase": UNEXPECTED,
        "counted": False,
        "why": "no open exam" if open_study is None else "not the open exam",
    }


class ExposureNoter:
    """Annotates the dose log's new rows and journals each (see the module docstring).

    ``journal`` writes an entry of the open exam (folded into its record by the service);
    ``journal_stray`` one of no exam. Both are durable on return, or raise.
    """

    def __init__(
        self, dose_log: DoseLog, *, journal: JournalExposure, journal_stray: JournalExposure
    ) -> None:
        self._dose_log = dose_log
        self._journal = journal
        self._journal_stray = journal_stray

    def note(self, record: ExamRecord) -> int:
        """Annotate and journal the new rows; return how many there were. ``record`` is the
        open exam's (its noted exposures grow as the service folds each entry)."""
        order = record.order
        new = self._note_strays(None if order is None else order.study_instance_uid)
        if order is None:
            return new
        for row in self._dose_log.unannotated_exposures(study=order.study_instance_uid):
            exposure_id = int(row["id"])
            noted = record.noted_exposures.get(exposure_id)
            if noted is not None:  # journaled just before a crash: finish the annotation
                self._dose_log.annotate(exposure_id, phase=noted)
                continue
            payload = exposure_entry(row, record)
            self._journal(payload)
            self._dose_log.annotate(exposure_id, phase=payload["phase"])
            new += 1
        return new

    def _note_strays(self, open_study: str | None) -> int:
        strays = self._dose_log.unannotated_exposures(exclude_study=open_study)
        for row in strays:
            self._journal_stray(stray_entry(row, open_study))
            self._dose_log.annotate(int(row["id"]), phase=UNEXPECTED)
        if strays:
            log.warning("%d exposure(s) of no open exam: kept and flagged", len(strays))
        return len(strays)
