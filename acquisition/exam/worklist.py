"""The worklist steps of the exam's imaging phases (PS3.4 Annex K).

The step of each imaging phase (pre-contrast, post-injection 1 and 2) is published when the
phase is entered and withdrawn when it is left: the unit's MWL query sees only the phase being
acquired. :func:`phase_step` builds a step (pure); :class:`PhaseWorklist` writes the worklist
store and has each change journaled through the callback it is given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from acquisition.exam.model import (
    CONTRAST_AGENT,
    PHASE_PROTOCOLS,
    PHASE_STEPS,
    ExamError,
    ExamOrder,
    phase_sps_id,
)
from acquisition.exam_machine import ExamState
from acquisition.ris_request import with_ris_request
from dicom_nodes.datasets.codes import MAMMARY_DUCTOGRAM
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore

S = ExamState


def phase_step(
    order: ExamOrder, phase: ExamState, station_ae: str, now: dt.datetime
) -> ScheduledStep:
    """The Scheduled Procedure Step of one phase of the exam ``order`` (PS3.4 Table K.6-1)."""
    side = {"L": "left", "R": "right"}[order.side]
    contrast = phase is not S.PRE_CONTRAST
    step = ScheduledStep(
        sps_id=phase_sps_id(order.exam_id, phase),
        sps_start_date=now.strftime("%Y%m%d"),
        sps_start_time=now.strftime("%H%M%S"),
        station_ae=station_ae,
        sps_description=f"Galactography {phase.value}, {side} CC and ML",
        protocol_codes=PHASE_PROTOCOLS[phase],
        requested_contrast_agent=CONTRAST_AGENT if contrast else "",
        requested_procedure_id=order.requested_procedure_id,
        requested_procedure_description=order.requested_procedure_description,
        requested_procedure_codes=(MAMMARY_DUCTOGRAM,),
        study_instance_uid=order.study_instance_uid,
        accession_number=order.accession,
        patient=order.patient,
    )
    return with_ris_request(step, order.ris_item)  # what the RIS gave, for the unit


class PhaseWorklist:
    """Publishes and withdraws the phases' steps in the worklist store.

    ``journal`` records each change (``{"action": "publish"|"withdraw", "sps_id": …}``) right
    after the store's write.
    """

    def __init__(
        self,
        store: WorklistStore,
        station_ae: str,
        clock: Callable[[], dt.datetime],
        journal: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self._store = store
        self.station_ae = station_ae
        self._clock = clock
        self._journal = journal

    def step(self, order: ExamOrder, phase: ExamState) -> ScheduledStep:
        return phase_step(order, phase, self.station_ae, self._clock())

    def sync(self, order: ExamOrder | None, before: ExamState, after: ExamState) -> None:
        """Withdraw the step of the phase left, publish the step of the phase entered."""
        if before is after:
            return
        if (before in PHASE_STEPS or after in PHASE_STEPS) and order is None:
            raise ExamError("no exam is open")
        if before in PHASE_STEPS:
            assert order is not None
            sps_id = phase_sps_id(order.exam_id, before)
            self._store.withdraw(sps_id)
            self._journal({"action": "withdraw", "sps_id": sps_id})
        if after in PHASE_STEPS:
            assert order is not None
            step = self.step(order, after)
            self._store.publish(step)
            self._journal({"action": "publish", "sps_id": step.sps_id})

    def restore(self, order: ExamOrder, state: ExamState) -> None:
        """A crash, or a failed worklist write, may have come between a transition and its
        worklist change: offer only the current phase's step (idempotent: a step already
        offered is left as it is; no write when there is nothing to withdraw)."""
        for phase in PHASE_STEPS:
            sps_id = phase_sps_id(order.exam_id, phase)
            if phase is state:
                if self._store.get(sps_id) is None:
                    self._store.publish(self.step(order, phase))
            elif self._store.get(sps_id) is not None:
                self._store.withdraw(sps_id)
