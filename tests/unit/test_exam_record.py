"""The exam service's pure parts: the checklist rule and the record rebuilt from journal entries."""

from __future__ import annotations

from typing import Any

import pytest

from acquisition.exam.model import ExamOrder, checklist_blockers
from acquisition.exam.record import ExamRecord
from acquisition.exam_machine import ExamState, Limits
from acquisition.journal import Entry
from dicom_nodes.datasets.identity import Patient

S = ExamState
CLEAR = {"pregnancy_possible": False, "contrast_allergy": False}
CLEAR |= {"active_mastitis": False, "no_discharge": False}


@pytest.mark.parametrize(
    ("answers", "blockers"),
    [
        (CLEAR, []),
        ({**CLEAR, "lactation": True, "hormone_use": True}, []),  # recorded, not blocking
        ({**CLEAR, "no_discharge": True}, ["no_discharge"]),
        ({**CLEAR, "pregnancy_possible": True}, ["pregnancy_possible"]),
        ({**CLEAR, "contrast_allergy": True}, ["contrast_allergy"]),
        ({**CLEAR, "contrast_allergy": True, "premedication_documented": True}, []),
        ({"active_mastitis": False}, ["pregnancy_possible", "contrast_allergy", "no_discharge"]),
    ],
)
def test_checklist_blockers(answers: dict[str, bool], blockers: list[str]) -> None:
    assert checklist_blockers(answers) == blockers


ORDER = ExamOrder("A1", "A1", "1.2.3", Patient("DOE^JANE", "P1", "19700101", "F"), "L")


def entry(kind: str, **payload: Any) -> Entry:
    return Entry(0, "", kind, "A1", "tech", payload, "", "")


def move(before: ExamState, after: ExamState, event: str = "x") -> Entry:
    return entry("transition", event=event, **{"from": before.value, "to": after.value})


def replay(*entries: Entry) -> ExamRecord:
    record = ExamRecord()
    for e in entries:
        record.apply(e)
    return record


def test_replay_rebuilds_the_facts() -> None:
    record = replay(
        entry("exam-opened", order=ORDER.to_json()),
        move(S.IDLE, S.CHECKLIST),
        entry("checklist", passed=True),
        move(S.CHECKLIST, S.PRE_CONTRAST),
        entry("exposure", exposure_id=1, sps_id="A1-PRE", phase="pre-contrast", counted=True),
        entry("exposure", exposure_id=2, sps_id="X", phase="unexpected", counted=False),
        move(S.PRE_CONTRAST, S.CANNULATION),
        entry("confirmation", what="cannulation"),
        entry("confirmation", what="air-purge"),
        entry("injection-started", number=1, volume_ml=0.5, rate_ml_min=0.3),
        move(S.CANNULATION, S.INJECTION_1),
        entry("injection-ended", delivered_ml=0.4, completed=False),
        move(S.INJECTION_1, S.FAULT, "fault"),
    )
    assert record.order == ORDER
    assert record.state is S.FAULT
    assert set(record.noted_exposures) == {1, 2}
    assert record.injection_running is None
    facts = record.facts(Limits(), injector_healthy=True, syringe_ml=1.0)
    assert facts.checklist_passed and facts.cannulation_confirmed
    assert not facts.air_purge_confirmed  # consumed by the injection: the next needs its own
    assert facts.pre_contrast_exposures == 1
    assert (facts.injections_started, facts.volume_given_ml) == (1, 0.4)
    assert facts.fault_phase is S.INJECTION_1


def test_a_running_injection_is_visible_and_closing_forgets_the_exam() -> None:
    opened = entry("exam-opened", order=ORDER.to_json())
    started = entry("injection-started", number=1, volume_ml=0.5, rate_ml_min=0.3)
    assert replay(opened, started).injection_running == dict(started.payload)
    closed = replay(opened, entry("checklist", passed=True), move(S.DISCONTINUED, S.IDLE))
    assert closed == ExamRecord()
