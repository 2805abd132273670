"""The exam's rooms on their own: the model's rules, the ledger, the worklist steps, exposure
noting and the injection supervisor's pure parts (the service drives them all in
tests/integration/test_exam_service.py)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from acquisition.exam.exposures import exposure_entry, phase_of_sps, stray_entry
from acquisition.exam.injection import InjectionSupervisor, correction, interrupted_entry
from acquisition.exam.ledger import ExamLedger
from acquisition.exam.model import (
    INTERRUPTED_BY_RESTART,
    UNEXPECTED,
    ContrastRecord,
    ExamOrder,
    ExamSnapshot,
    JournalUnavailable,
    Patient,
    PhysicianOverride,
    checklist_entry,
    phase_sps_id,
    service_refusal,
    syringe_refusal,
)
from acquisition.exam.opening import SideMismatch, laterality_decision, unscheduled_order
from acquisition.exam.record import ExamRecord, replay
from acquisition.exam.worklist import PhaseWorklist, phase_step
from acquisition.exam_machine import ExamEvent, ExamState, Limits, Refused
from acquisition.journal import Journal
from acquisition.laterality import OrderSide
from device_drivers.base import InjectionResult
from device_drivers.events import InjectorEvent
from dicom_nodes.unit_facing.worklist_store import WorklistStore

S, E = ExamState, ExamEvent
ORDER = ExamOrder("A1", "A1", "1.2.3", Patient("DOE^JANE", "P1", "19700101", "F"), "L")
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_phase_sps_ids_fit_sh_and_stay_distinct() -> None:
    assert phase_sps_id("A1", S.POST_INJECTION_1) == "A1-POST1"
    long_ids = {phase_sps_id("X" * 40 + str(n), S.PRE_CONTRAST) for n in range(5)}
    assert len(long_ids) == 5 and all(len(i) <= 16 for i in long_ids)
    with pytest.raises(KeyError):
        phase_sps_id("A1", S.CHECKLIST)  # not an imaging phase


@pytest.mark.parametrize(
    ("command", "state", "refused"),
    [
        ("answer-checklist", S.CHECKLIST, False),
        ("answer-checklist", S.PRE_CONTRAST, True),
        ("confirm-cannulation", S.CANNULATION, False),
        ("confirm-air-purge", S.POST_INJECTION_1, False),
        ("confirm-air-purge", S.PRE_CONTRAST, True),
        ("stop-injection", S.INJECTION_1, False),
        ("stop-injection", S.CANNULATION, True),
        ("anything", S.FAULT, True),
    ],
)
def test_service_refusal(command: str, state: ExamState, refused: bool) -> None:
    assert (service_refusal(command, state) is not None) is refused


# ---------------------------------------------------------------- exposures


def open_record(state: ExamState) -> ExamRecord:
    return ExamRecord(order=ORDER, state=state)


def test_an_exposure_of_the_phase_in_progress_is_counted() -> None:
    row = {"id": 7, "sps_id": "A1-PRE"}
    assert exposure_entry(row, open_record(S.PRE_CONTRAST)) == {
        "exposure_id": 7,
        "sps_id": "A1-PRE",
        "phase": S.PRE_CONTRAST.value,
        "counted": True,
    }


@pytest.mark.parametrize("sps_id", ["A1-POST1", "OTHER-PRE", None])
def test_an_exposure_of_another_step_is_kept_unexpected(sps_id: str | None) -> None:
    entry = exposure_entry({"id": 8, "sps_id": sps_id}, open_record(S.PRE_CONTRAST))
    assert (entry["phase"], entry["counted"]) == (UNEXPECTED, False)


def test_phase_of_sps_and_strays() -> None:
    assert phase_of_sps("A1", "A1-POST2") is S.POST_INJECTION_2
    assert phase_of_sps("A1", "B1-POST2") is None
    assert stray_entry({"id": 3, "sps_id": None}, None)["why"] == "no open exam"
    assert stray_entry({"id": 3, "sps_id": None}, "1.2")["why"] == "not the open exam"


# ---------------------------------------------------------------- worklist steps


def test_phase_step_names_the_side_the_phase_and_the_contrast() -> None:
    pre = phase_step(ORDER, S.PRE_CONTRAST, "UNIT", NOW)
    post = phase_step(ORDER, S.POST_INJECTION_1, "UNIT", NOW)
    assert (pre.sps_id, pre.sps_start_date, pre.sps_start_time) == ("A1-PRE", "20260102", "030405")
    assert "left" in pre.sps_description and pre.requested_contrast_agent == ""
    assert post.requested_contrast_agent == "Iohexol 300"
    assert (post.study_instance_uid, post.patient.id) == ("1.2.3", "P1")


def test_phase_worklist_offers_only_the_phase_in_progress(tmp_path: Path) -> None:
    store = WorklistStore(tmp_path / "wl.sqlite")
    journaled: list[dict[str, Any]] = []
    steps = PhaseWorklist(store, "UNIT", lambda: NOW, lambda p: journaled.append(dict(p)))
    steps.sync(ORDER, S.CHECKLIST, S.PRE_CONTRAST)
    steps.sync(ORDER, S.PRE_CONTRAST, S.CANNULATION)
    assert journaled == [
        {"action": "publish", "sps_id": "A1-PRE"},
        {"action": "withdraw", "sps_id": "A1-PRE"},
    ]
    steps.restore(ORDER, S.POST_INJECTION_1)  # a crash left the worklist behind
    assert store.get("A1-POST1") is not None and store.get("A1-PRE") is None


# ---------------------------------------------------------------- the ledger


CHANGED = threading.Condition(threading.RLock())


def make_ledger(tmp_path: Path, failures: list[Exception]) -> tuple[ExamLedger, Journal]:
    journal = Journal(tmp_path / "journal.sqlite", busy_timeout_s=0.1)
    store = WorklistStore(tmp_path / "wl.sqlite")
    ledger = ExamLedger(
        journal,
        ExamRecord(),
        clock=lambda: NOW,
        steps=PhaseWorklist(store, "UNIT", lambda: NOW, lambda p: None),
        reporter=None,
        changed=CHANGED,
        facts=lambda record, healthy: record.facts(Limits(), healthy, 1.0),
        injector_healthy=lambda: True,
        on_failure=lambda exc, on_driver_thread: failures.append(exc),
    )
    return ledger, journal


def test_the_ledger_journals_folds_and_publishes(tmp_path: Path) -> None:
    ledger, journal = make_ledger(tmp_path, [])
    ledger.append("exam-opened", {"order": ORDER.to_json()}, "tech", "A1")
    with CHANGED:  # held as the service holds its lock
        ledger.transition(E.SELECT_ORDER, S.CHECKLIST, "tech")
    assert isinstance(ledger.published, ExamSnapshot)
    assert (ledger.published.state, ledger.exam_id) == (S.CHECKLIST, "A1")
    assert replay(journal) == ledger.record  # the journal alone gives the same record
    with pytest.raises(Refused):
        ledger.check(E.FINISH_PRE_CONTRAST, ledger.facts(), "tech")
    assert [e.kind for e in journal.entries(exam_id="A1")][-1] == "refusal"
    journal.close()


def test_a_journal_that_fails_is_a_logging_fault(tmp_path: Path) -> None:
    failures: list[Exception] = []
    ledger, journal = make_ledger(tmp_path, failures)
    with closing(sqlite3.connect(tmp_path / "journal.sqlite", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # another process holds the database
        with pytest.raises(JournalUnavailable):
            ledger.append("exam-opened", {"order": ORDER.to_json()}, "tech", "A1")
        other.execute("ROLLBACK")
    assert ledger.journal_fault is not None and len(failures) == 1
    assert ledger.record == ExamRecord()  # nothing applied
    journal.close()


def test_replay_of_no_open_exam(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    assert replay(journal) is None
    journal.close()


# ---------------------------------------------------------------- the injection supervisor


def given(delivered_ml: float) -> ContrastRecord:
    return ContrastRecord(1, "Iohexol 300", 0.5, delivered_ml, 0.3, "", "", None, False, "")


@pytest.mark.parametrize(
    ("read_back_ml", "recorded_ml", "running", "corrected"),
    [
        (0.5, 0.3, False, True),
        (0.3005, 0.3, False, False),  # within the display resolution
        (0.2, 0.3, False, False),  # never down
        (0.5, 0.3, True, False),  # another injection runs: not the last one's figure
    ],
)
def test_correction_follows_the_pump_upward_only(
    read_back_ml: float, recorded_ml: float, running: bool, corrected: bool
) -> None:
    result = InjectionResult(False, read_back_ml, "link lost", InjectorEvent.TERMINATED_COMM_LOSS)
    payload = correction(result, [given(recorded_ml)], running)
    assert (payload is not None) is corrected
    if payload is not None:
        assert (payload["delivered_ml"], payload["previous_ml"]) == (read_back_ml, recorded_ml)


def test_a_supervisor_without_injector_stops_nothing(tmp_path: Path) -> None:
    ledger, journal = make_ledger(tmp_path, [])
    supervisor = InjectionSupervisor(ledger, threading.RLock(), lambda: NOW)
    assert not supervisor.healthy() and not supervisor.running
    assert supervisor.stop_now("operator stop", by_operator=True) is False
    assert supervisor.outcome() is None
    supervisor.settle()  # nothing to settle: nothing journaled
    assert list(journal.entries()) == []
    supervisor.close()
    journal.close()


def test_an_interrupted_injection_counts_its_programmed_volume() -> None:
    entry = interrupted_entry({"volume_ml": 0.4, "number": 1})
    assert (entry["delivered_ml"], entry["completed"]) == (0.4, False)
    assert entry["reason"].startswith(INTERRUPTED_BY_RESTART)


# ---------------------------------------------------------------- opening an exam


def test_the_side_chosen_must_agree_with_the_order() -> None:
    left = OrderSide("L", ("procedure: LEFT",))
    agreed = laterality_decision("L", left, "")
    assert isinstance(agreed, dict) and agreed["decision"] == "the side chosen is the order's"
    mismatch = laterality_decision("R", left, "")
    assert isinstance(mismatch, SideMismatch)
    assert mismatch.details == {
        "code": "laterality-mismatch",
        "order_side": "L",
        "chosen_side": "R",
    }
    overridden = laterality_decision("R", left, "the order is wrong, checked with the RIS")
    assert isinstance(overridden, dict) and "override_reason" in overridden
    unnamed = laterality_decision("R", OrderSide(None, ()), "")
    assert isinstance(unnamed, dict) and "chosen explicitly" in unnamed["decision"]


def test_an_unscheduled_exam_has_no_accession_and_its_own_study() -> None:
    order = unscheduled_order(Patient("DOE^JANE", "P1", sex="F"), "R", "U20260102030405")
    assert (order.accession, order.scheduled, order.side) == ("", False, "R")
    assert order.study_instance_uid and order.study_instance_uid != ORDER.study_instance_uid


@pytest.mark.parametrize(
    ("loaded_ml", "refused"), [(1.0, False), (0.4, False), (0.0, True), (1.5, True)]
)
def test_the_syringe_loaded_fits_the_syringe(loaded_ml: float, refused: bool) -> None:
    assert (syringe_refusal(loaded_ml, 1.0, "1ml") is not None) is refused
    assert syringe_refusal(float("nan"), 1.0, "1ml") is not None


def test_the_checklist_entry_says_whether_it_passes() -> None:
    answers = {"pregnancy_possible": True}
    assert checklist_entry(answers, None)["passed"] is False
    override = PhysicianOverride("Dr House", "test negative this morning")
    entry = checklist_entry(answers, override)
    assert entry["passed"] is True and entry["override"]["physician"] == "Dr House"
    assert checklist_entry(answers, PhysicianOverride("Dr House", " "))["passed"] is False


def test_an_exam_s_study_uid_is_made_under_the_site_root() -> None:
    root = "1.2.826.0.1.3680043.10.9999"
    order = unscheduled_order(Patient("DOE^JANE", "P1", sex="F"), "R", "U20260102030405", root)
    assert order.study_instance_uid.startswith(root + ".")
