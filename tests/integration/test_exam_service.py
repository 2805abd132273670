"""The exam service over real SQLite files and the injector simulator on a real pty.

Exposures arrive as the SCPs would write them: an MG image header from the simulated unit's
image builder, extracted and recorded into the dose log with the phase's SPS ID.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from acquisition.commands.demo import ALL_CLEAR
from acquisition.dose_log import DoseLog
from acquisition.exam.model import (
    INTERRUPTED_BY_RESTART,
    JournalUnavailable,
    Patient,
    PhysicianOverride,
)
from acquisition.exam.service import ExamService
from acquisition.exam_machine import ExamState, Limits, Refused
from acquisition.exam_reporting import ExamReporting, ReportingSettings
from acquisition.journal import Entry, Journal
from device_drivers.base import InjectorState
from device_drivers.driver import NewEraInjector
from dicom_nodes.datasets.codes import (
    DISCONTINUED_EQUIPMENT_FAILURE,
    DISCONTINUED_EXTRAVASATION,
    DISCONTINUED_PATIENT_REFUSED,
    VIEW_CC,
    VIEW_ML,
)
from dicom_nodes.datasets.dose_extract import from_image_header
from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.hospital.outbox import RIS
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import WorklistStore
from simulators.injector import InjectorSimulator
from simulators.unit import SimulatedUnit
from simulators.unit_images import StudyContext, sample_mg_image
from tests.exam_room import journaled_refusal
from tests.injector_clock import real_wire, simulated_injector
from tests.integration.test_injector_driver import FAST_LIMITS, FAST_TIMING
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

S = ExamState
WAIT_S = 20.0
ACC = "ACC0042"
STUDY_UID = "1.2.826.0.1.3680043.8.498.42"
ORDER = WorklistItem(
    patient=Patient(name="DOE^JANE", id="P0042", birth_date="19750102", sex="F"),
    accession_number=ACC,
    requested_procedure_id="RP42",
    requested_procedure_description="Galactography left",
    requested_procedure_codes=(),
    study_instance_uid=STUDY_UID,
    sps_id="RIS-SPS-42",
    sps_description="Galactography",
    sps_start_date="20261125",
    sps_start_time="090000",
    station_ae="UNIT",
    modality="MG",
    protocol_codes=(),
)


@dataclass
class Room:
    """The files and peers one exam uses; ``service()`` builds an ExamService on them."""

    journal: Journal
    worklist: WorklistStore
    dose_log: DoseLog
    sim: InjectorSimulator
    driver: NewEraInjector
    make: Callable[..., ExamService]

    def service(self, **kwargs: object) -> ExamService:
        return self.make(**kwargs)


@pytest.fixture
def room(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Room]:
    """The exam's files and peers; the pump in process on the test's clock, or on a pty in
    scaled real time for the tests marked ``slow`` (tests/injector_clock.py)."""
    services: list[ExamService] = []
    with (
        Journal(tmp_path / "journal.db", busy_timeout_s=0.2) as journal,
        DoseLog(tmp_path / "dose.db") as dose_log,
        simulated_injector(tmp_path, real_wire=real_wire(request)) as (sim, url),
        closing(NewEraInjector(url, limits=FAST_LIMITS, timing=FAST_TIMING)) as driver,
    ):
        driver.connect()
        worklist = WorklistStore(tmp_path / "worklist.db")

        def make(**kwargs: object) -> ExamService:
            kwargs.setdefault("injector", driver)
            kwargs.setdefault("limits", Limits())
            service = ExamService(
                journal,
                worklist,
                station_ae="UNIT",
                dose_log=dose_log,
                **kwargs,  # type: ignore[arg-type]
            )
            services.append(service)
            return service

        try:
            yield Room(journal, worklist, dose_log, sim, driver, make)
        finally:
            for service in services:
                service.close()


def expose(room: Room, service: ExamService, phase: ExamState, seed: int, view: str = "CC") -> None:
    """The unit's image for one exposure of ``phase`` reaches the dose log; the exam notes it."""
    study = StudyContext(
        study_instance_uid=STUDY_UID,
        accession_number=ACC,
        scheduled_procedure_step_id=service.sps_id(phase),
    )
    image = sample_mg_image(seed=seed, laterality="L", view=view, study=study)
    room.dose_log.record([from_image_header(image, station_ae="UNIT")])
    assert service.note_exposures() == 1


def to_cannulation(room: Room, service: ExamService) -> None:
    service.select_order(ORDER, "L", "tech1")
    assert service.answer_checklist(ALL_CLEAR, "tech1")
    service.pass_checklist("tech1")
    expose(room, service, S.PRE_CONTRAST, seed=1, view="CC")
    expose(room, service, S.PRE_CONTRAST, seed=2, view="ML")
    service.finish_pre_contrast("tech1")
    service.confirm_cannulation("tech1")
    service.confirm_air_purge("tech1")


def inject(service: ExamService, volume_ml: float, expected: ExamState) -> None:
    service.start_injection(volume_ml, 0.3, "tech1")
    assert service.wait_for_state(expected, WAIT_S), service.state


def kinds(journal: Journal, kind: str) -> list[Entry]:
    return [entry for entry in journal.entries(exam_id=ACC) if entry.kind == kind]


def port_back(room: Room) -> None:
    """Wait until the vanished port is back and the stable link names the new pty (until then
    the old /dev/pts/N may already belong to another simulator on this machine)."""
    assert room.sim.wait_until(lambda s: s.connected, WAIT_S), "the port never came back"


def transitions(journal: Journal) -> list[tuple[str, str]]:
    return [(e.payload["event"], e.payload["to"]) for e in kinds(journal, "transition")]


def test_happy_path_publishes_each_phase_and_counts_exposures(room: Room) -> None:
    service = room.service()
    service.select_order(ORDER, "L", "tech1")
    assert service.state is S.CHECKLIST
    assert service.answer_checklist(ALL_CLEAR, "tech1")
    service.pass_checklist("tech1")

    pre = room.worklist.get(f"{ACC}-PRE")
    assert pre is not None
    assert pre.protocol_codes[:2] == (VIEW_CC, VIEW_ML)
    assert (pre.accession_number, pre.study_instance_uid, pre.station_ae) == (
        ACC,
        STUDY_UID,
        "UNIT",
    )

    expose(room, service, S.PRE_CONTRAST, seed=1)
    service.finish_pre_contrast("tech1")
    assert room.worklist.get(f"{ACC}-PRE") is None
    service.confirm_cannulation("tech1")
    service.confirm_air_purge("tech1")
    inject(service, 0.1, S.POST_INJECTION_1)
    assert room.worklist.get(f"{ACC}-POST1") is not None
    expose(room, service, S.POST_INJECTION_1, seed=3)
    service.confirm_air_purge("tech1")  # each injection has its own air-purge confirmation
    inject(service, 0.05, S.POST_INJECTION_2)
    assert room.worklist.get(f"{ACC}-POST1") is None
    expose(room, service, S.POST_INJECTION_2, seed=4, view="ML")
    service.complete("tech1")
    assert room.worklist.get(f"{ACC}-POST2") is None

    assert service.facts().volume_given_ml == pytest.approx(0.15, abs=0.01)
    assert room.sim.run_count == 2
    phases = [row["phase"] for row in room.dose_log.list_exposures(ACC)]
    assert phases == ["pre-contrast", "post-injection-1", "post-injection-2"]
    assert transitions(room.journal) == [
        ("select-order", "checklist"),
        ("pass-checklist", "pre-contrast"),
        ("finish-pre-contrast", "cannulation"),
        ("start-injection", "injection-1"),
        ("injection-completed", "post-injection-1"),
        ("start-injection", "injection-2"),
        ("injection-completed", "post-injection-2"),
        ("complete", "completed"),
    ]
    assert {e.operator for e in kinds(room.journal, "command")} == {"tech1"}
    service.close_exam("tech1")
    assert service.state is S.IDLE and service.exam_id is None


def assert_refused(room: Room, action: Callable[[], object], reason_part: str) -> None:
    """The command is refused, the refusal journaled with the same reason, the state kept."""
    service_state = [e for e in room.journal.entries() if e.kind == "transition"]
    refused, entry = journaled_refusal(room.journal, action)
    assert reason_part in refused.reason
    assert entry.operator == "tech1"
    assert [e for e in room.journal.entries() if e.kind == "transition"] == service_state


def test_every_interlock_refusal_is_journaled(room: Room) -> None:
    service = room.service(limits=Limits(max_volume_per_exam_ml=0.08))
    assert_refused(room, lambda: service.pass_checklist("tech1"), "not allowed in idle")
    service.select_order(ORDER, "L", "tech1")
    assert_refused(room, lambda: service.select_order(ORDER, "L", "tech1"), "not allowed")

    assert not service.answer_checklist({**ALL_CLEAR, "no_discharge": True}, "tech1")
    assert_refused(room, lambda: service.pass_checklist("tech1"), "physician override")
    assert not service.answer_checklist({"pregnancy_possible": False}, "tech1")  # unanswered
    assert service.answer_checklist(
        {**ALL_CLEAR, "contrast_allergy": True},
        "tech1",
        override=PhysicianOverride("DR^WHO", "premedicated with prednisolone"),
    )
    service.pass_checklist("tech1")

    assert_refused(room, lambda: service.finish_pre_contrast("tech1"), "pre-contrast exposure")
    assert_refused(room, lambda: service.confirm_cannulation("tech1"), "not in pre-contrast")
    expose(room, service, S.PRE_CONTRAST, seed=1)
    service.finish_pre_contrast("tech1")

    start = lambda volume_ml=0.1: service.start_injection(volume_ml, 0.3, "tech1")  # noqa: E731
    assert_refused(room, start, "cannulation is not confirmed")
    service.confirm_cannulation("tech1")
    assert_refused(room, start, "air purge")
    service.confirm_air_purge("tech1")
    assert_refused(room, lambda: start(3.5), "above the maximum of 3 mL")
    assert_refused(room, lambda: service.complete("tech1"), "not allowed in cannulation")
    assert_refused(room, lambda: service.discontinue("999", "tech1"), "not a CID 9301 code")

    service.attach_injector(None)
    assert_refused(room, start, "injector link is not healthy")
    assert room.sim.run_count == 0
    service.attach_injector(room.driver)
    inject(service, 0.05, S.POST_INJECTION_1)
    assert_refused(room, start, "air purge")  # the second injection needs a new confirmation
    assert_refused(room, lambda: service.complete("tech1"), "no post-injection exposure")
    assert_refused(room, lambda: service.acknowledge_fault("tech1"), "no fault")
    service.confirm_air_purge("tech1")
    assert_refused(room, lambda: start(0.05), "per exam")


@pytest.mark.parametrize("phase", [S.CHECKLIST, S.PRE_CONTRAST, S.CANNULATION, S.INJECTION_1])
def test_discontinue_at_each_phase(room: Room, phase: ExamState) -> None:
    service = room.service()
    service.select_order(ORDER, "L", "tech1")
    if phase is not S.CHECKLIST:
        service.answer_checklist(ALL_CLEAR, "tech1")
        service.pass_checklist("tech1")
    if phase in (S.CANNULATION, S.INJECTION_1):
        expose(room, service, S.PRE_CONTRAST, seed=1)
        service.finish_pre_contrast("tech1")
    if phase is S.INJECTION_1:
        service.confirm_cannulation("tech1")
        service.confirm_air_purge("tech1")
        service.start_injection(1.0, 0.3, "tech1")  # 200 s simulated: still running
        assert room.sim.wait_until(lambda sim: sim.infused_ml >= 0.02, WAIT_S)
    assert service.state is phase

    service.discontinue(DISCONTINUED_EXTRAVASATION.value, "tech1")

    assert service.state is S.DISCONTINUED
    assert room.driver.state is not InjectorState.INJECTING
    assert room.worklist.count() == 0
    last = kinds(room.journal, "transition")[-1]
    assert last.payload["reason_code"] == DISCONTINUED_EXTRAVASATION.value
    if phase is S.INJECTION_1:
        # The injector was stopped first, and the partial volume is on record.
        assert ("injection-stopped", "post-injection-1") in transitions(room.journal)
        (ended,) = kinds(room.journal, "injection-ended")
        assert 0 < ended.payload["delivered_ml"] < 1.0
        assert room.sim.run_count == 1


def test_injector_fault_holds_the_exam_until_acknowledged(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)
    room.sim.add_fault("stall@volume=0.1")
    service.start_injection(0.5, 0.3, "tech1")
    assert service.wait_for_state(S.FAULT, WAIT_S), service.state

    assert room.driver.state is InjectorState.ERROR  # the driver stopped it first
    (ended,) = kinds(room.journal, "injection-ended")
    assert not ended.payload["completed"] and not ended.payload["stopped_by_operator"]
    assert room.worklist.count() == 0
    assert_refused(room, lambda: service.complete("tech1"), "acknowledge the fault first")
    assert_refused(
        room,
        lambda: service.discontinue(DISCONTINUED_EQUIPMENT_FAILURE.value, "tech1"),
        "acknowledge the fault first",
    )

    service.acknowledge_fault("tech1")
    assert service.state is S.POST_INJECTION_1
    assert room.driver.state is InjectorState.READY
    assert room.worklist.get(f"{ACC}-POST1") is not None
    assert service.facts().volume_given_ml == pytest.approx(ended.payload["delivered_ml"])


def test_operator_stop_ends_the_injection_and_allows_a_second(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(1.0, 0.3, "tech1")
    service.stop_injection("tech1")
    assert service.state is S.POST_INJECTION_1
    assert room.driver.state is InjectorState.READY
    assert_refused(room, lambda: service.stop_injection("tech1"), "no injection is running")
    expose(room, service, S.POST_INJECTION_1, seed=5)
    service.confirm_air_purge("tech1")
    inject(service, 0.05, S.POST_INJECTION_2)


def test_restart_resumes_in_the_same_state_with_the_same_facts(room: Room) -> None:
    first = room.service()
    to_cannulation(room, first)
    facts = first.facts()
    first.close()

    second = room.service()
    assert second.state is S.CANNULATION
    assert second.facts() == facts
    assert second.facts().pre_contrast_exposures == 2
    assert second.note_exposures() == 0  # nothing counted twice
    inject(second, 0.05, S.POST_INJECTION_1)
    assert room.worklist.get(f"{ACC}-POST1") is not None


def test_restart_during_an_injection_is_a_fault_and_never_reinjects(room: Room) -> None:
    first = room.service()
    to_cannulation(room, first)
    first.start_injection(0.5, 0.3, "tech1")
    first.close()  # the process "dies": the outcome is never fed to the machine
    room.driver.stop()
    assert room.sim.run_count == 1

    second = room.service()
    assert second.state is S.FAULT
    (ended,) = kinds(room.journal, "injection-ended")
    assert INTERRUPTED_BY_RESTART in ended.payload["reason"]
    assert second.facts().volume_given_ml == pytest.approx(0.5)  # counted as given
    assert room.driver.session_delivered_ml == pytest.approx(0.5)  # the driver's cap agrees
    assert second.facts().injections_started == 1
    second.acknowledge_fault("tech1")
    assert second.state is S.POST_INJECTION_1
    assert room.sim.run_count == 1


def test_unexpected_exposure_is_kept_and_flagged(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)
    expose(room, service, S.PRE_CONTRAST, seed=9)  # a pre-contrast image after the phase ended
    rows = room.dose_log.list_exposures(ACC)
    assert [row["phase"] for row in rows] == ["pre-contrast", "pre-contrast", "unexpected"]
    assert service.facts().pre_contrast_exposures == 2


def test_unscheduled_patient_and_closing(room: Room) -> None:
    service = room.service()
    order = service.register_unscheduled(Patient("ROE^ANN", "P7", sex="F"), "R", "tech2")
    assert not order.scheduled and service.exam_id == order.exam_id
    assert order.accession == ""  # IHE unscheduled case: no accession is invented
    assert service.state is S.CHECKLIST
    assert service.answer_checklist(ALL_CLEAR, "tech2")
    service.pass_checklist("tech2")
    step = room.worklist.get(service.sps_id(S.PRE_CONTRAST))
    assert step is not None and step.accession_number == ""
    assert step.study_instance_uid == order.study_instance_uid
    # the unit's image carries the step's study and no accession: it is the exam's all the same
    study = StudyContext(
        study_instance_uid=order.study_instance_uid,
        accession_number="",
        scheduled_procedure_step_id=service.sps_id(S.PRE_CONTRAST),
    )
    image = sample_mg_image(seed=8, laterality="R", view="CC", study=study)
    room.dose_log.record([from_image_header(image, station_ae="UNIT")])
    assert service.note_exposures() == 1
    assert service.facts().pre_contrast_exposures == 1
    service.discontinue(DISCONTINUED_PATIENT_REFUSED.value, "tech2")
    service.close_exam("tech2")
    assert room.service().state is S.IDLE  # a closed exam is not resumed


def test_scripted_exam_with_the_simulated_unit_over_loopback_dicom(
    room: Room, tmp_path: Path
) -> None:
    """The unit finds each phase's step on the worklist, performs it (MPPS, images, RDSR) and
    the exam counts the exposures the SCPs logged."""
    mpps = SqliteMppsStore(tmp_path / "mpps.db")
    server = UnitFacingServer(
        room.worklist, mpps, room.dose_log, storage_dir=tmp_path / "objects", fsync_objects=False
    )
    try:
        _, port = server.start()
        unit = SimulatedUnit("127.0.0.1", port, "GALACTO", seed=11, station_ae="UNIT")
        service = room.service()
        today = dt.datetime.now(dt.UTC).strftime("%Y%m%d")

        def perform(phase: ExamState, views: list[str]) -> None:
            (step,) = unit.poll_worklist(today)
            assert step.sps_id == service.sps_id(phase)
            performed = unit.perform_step(step, views)
            assert performed.status == "COMPLETED"
            assert service.note_exposures() == len(views)

        service.select_order(ORDER, "L", "tech1")
        service.answer_checklist(ALL_CLEAR, "tech1")
        service.pass_checklist("tech1")
        perform(S.PRE_CONTRAST, ["L-CC", "L-ML"])
        service.finish_pre_contrast("tech1")
        assert unit.poll_worklist(today) == []
        service.confirm_cannulation("tech1")
        service.confirm_air_purge("tech1")
        inject(service, 0.1, S.POST_INJECTION_1)
        perform(S.POST_INJECTION_1, ["L-CC-MAG", "L-ML-MAG"])
        service.complete("tech1")
    finally:
        server.stop()
        mpps.close()

    rows = room.dose_log.list_exposures(ACC)
    assert [row["phase"] for row in rows] == ["pre-contrast"] * 2 + ["post-injection-1"] * 2
    assert all(set(row["sources"].split(",")) == {"image_header", "mpps", "rdsr"} for row in rows)
    assert service.state is S.COMPLETED


def test_restart_between_injection_record_and_run_counts_the_volume(room: Room) -> None:
    """Died after ``injection-started`` was durable, before the transition: never re-run."""
    first = room.service()
    to_cannulation(room, first)
    first.close()
    payload = {"number": 1, "volume_ml": 0.3, "rate_ml_min": 0.3}
    room.journal.append("injection-started", payload, exam_id=ACC, operator="tech1")

    second = room.service()
    assert second.state is S.FAULT
    assert second.facts().volume_given_ml == pytest.approx(0.3)
    second.acknowledge_fault("tech1")
    assert second.state is S.CANNULATION
    assert room.sim.run_count == 0


def test_restart_offers_only_the_current_phase_step(room: Room) -> None:
    first = room.service()
    first.select_order(ORDER, "L", "tech1")
    first.answer_checklist(ALL_CLEAR, "tech1")
    first.pass_checklist("tech1")
    first.close()
    room.worklist.withdraw(f"{ACC}-PRE")  # as if the process died before publishing it
    room.worklist.publish(first.phase_step(S.POST_INJECTION_1))  # and a stale step left behind

    room.service()
    assert room.worklist.get(f"{ACC}-PRE") is not None
    assert room.worklist.get(f"{ACC}-POST1") is None


def test_injector_refusals_before_run_are_journaled_and_cost_nothing(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)
    start = lambda: service.start_injection(0.1, 0.3, "tech1")  # noqa: E731
    room.sim.add_fault("na")  # the next setting is answered ?NA
    assert_refused(room, start, "the injector did not arm")
    room.driver.limits = dataclasses.replace(FAST_LIMITS, arm_timeout_s=1e-9)
    assert_refused(room, start, "the injector did not start")  # arming lapsed: no RUN sent
    assert (service.facts().injections_started, service.facts().volume_given_ml) == (0, 0.0)
    assert room.sim.run_count == 0

    room.driver.limits = FAST_LIMITS
    inject(service, 0.05, S.POST_INJECTION_1)
    assert room.sim.run_count == 1


def test_a_journal_that_cannot_be_written_stops_the_injection_and_pauses_the_exam(
    room: Room, tmp_path: Path
) -> None:
    """A logging fault during an injection: the injector is stopped first, every command is
    refused while the journal is unwritable, and once it is writable again the fault is
    recorded and the exam waits in FAULT for the operator."""
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(1.0, 0.3, "tech1")  # 200 s of pump time, ~1.7 s at x120
    wait_until(
        lambda: room.sim.snapshot().infused_ml >= 0.02, WAIT_S, "the injection never started"
    )
    with closing(sqlite3.connect(tmp_path / "journal.db", isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # another process holds the database
        with pytest.raises(JournalUnavailable):
            service.stop_injection("tech1")
        assert service.journal_fault is not None
        wait_until(
            lambda: room.sim.snapshot().prompt.name != "INFUSING",
            WAIT_S,
            "the pump was not stopped",
        )
        with pytest.raises(JournalUnavailable):
            service.complete("tech1")
        other.execute("ROLLBACK")
    service.acknowledge_fault("tech1")
    assert service.journal_fault is None
    assert service.state is S.POST_INJECTION_1
    assert room.sim.snapshot().infused_ml < 1.0
    (ended,) = kinds(room.journal, "injection-ended")
    assert not ended.payload["completed"]
    assert ended.payload["delivered_ml"] < 1.0
    assert [e.payload["what"] for e in kinds(room.journal, "logging-fault")] == [
        "journal write failed"
    ]
    assert ("fault", "fault") in [(e, t) for e, t in transitions(room.journal)]
    assert room.journal.verify().ok


def test_each_exam_gets_the_whole_per_exam_volume_again(room: Room) -> None:
    """The driver's own per-exam cap (a second line behind the exam's interlock) counts from
    zero for each exam, and from the journaled volume when an exam resumes after a restart."""
    room.driver.limits = dataclasses.replace(room.driver.limits, max_volume_per_session_ml=0.15)
    service = room.service()
    to_cannulation(room, service)
    inject(service, 0.1, S.POST_INJECTION_1)
    expose(room, service, S.POST_INJECTION_1, seed=5)
    service.complete("tech1")
    service.close_exam("tech1")
    assert room.driver.session_delivered_ml == pytest.approx(0.1, abs=0.005)
    service.register_unscheduled(Patient("ROE^ANN", "P7", sex="F"), "L", "tech1")
    assert room.driver.session_delivered_ml == 0.0
    room.driver.check_limits("1ml", 0.3, 0.1)  # the next exam's 0.1 mL is allowed again
    service.close()
    resumed = room.service()  # a restart in the second exam: its own volume (none yet)
    assert room.driver.session_delivered_ml == 0.0
    assert resumed.state is S.CHECKLIST


def test_an_injector_fault_between_injections_stops_the_exam_until_acknowledged(
    room: Room,
) -> None:
    service = room.service()
    to_cannulation(room, service)
    room.sim.add_fault("syringe_detached")
    wait_until(
        lambda: room.driver.state is InjectorState.ERROR,
        WAIT_S,
        "the driver never noticed the fault",
    )
    assert not service.facts().injector_healthy
    service.check_injector()  # the controller's tick
    assert service.state is S.FAULT
    (fault,) = [e for e in kinds(room.journal, "transition") if e.payload["to"] == "fault"]
    assert fault.payload["reason"].startswith("injector fault")
    with pytest.raises(Refused):
        service.reset_injector("tech1")  # during an exam the fault is acknowledged
    service.acknowledge_fault("tech1")  # the alarm is acknowledged, the link re-established
    assert service.state is S.CANNULATION
    assert room.driver.state is not InjectorState.ERROR
    assert service.facts().injector_healthy


def test_with_no_exam_open_the_injector_is_reset_by_its_own_command(room: Room) -> None:
    service = room.service()
    room.sim.add_fault("syringe_detached")
    wait_until(
        lambda: room.driver.state is InjectorState.ERROR,
        WAIT_S,
        "the driver never noticed the fault",
    )
    service.check_injector()
    assert service.state is S.IDLE  # no exam to stop
    service.reset_injector("tech1")
    assert room.driver.state is not InjectorState.ERROR
    (reset,) = [e for e in room.journal.entries() if e.kind == "injector-reset"]
    assert reset.operator == "tech1"
    with pytest.raises(Refused):
        service.reset_injector("tech1")  # nothing to reset any more


def test_an_order_done_again_is_a_new_exam_with_its_own_exposures(room: Room) -> None:
    """Discontinued (equipment failure), then done again from the same RIS order: the second
    exam has its own ID, steps and exposures; the first one's rows stay the first one's."""
    first = room.service()
    first.select_order(ORDER, "L", "tech1")
    assert first.answer_checklist(ALL_CLEAR, "tech1")
    first.pass_checklist("tech1")
    expose(room, first, S.PRE_CONTRAST, seed=1)
    first.discontinue(DISCONTINUED_EQUIPMENT_FAILURE.value, "tech1")
    first.close_exam("tech1")

    again = first.select_order(ORDER, "L", "tech1")
    assert again.exam_id == f"{ACC}-2" and again.accession == ACC
    assert first.facts().pre_contrast_exposures == 0
    assert first.note_exposures() == 0  # the first exam's row is not this exam's
    first.answer_checklist(ALL_CLEAR, "tech1")
    first.pass_checklist("tech1")
    assert first.sps_id(S.PRE_CONTRAST) != f"{ACC}-PRE"
    expose(room, first, S.PRE_CONTRAST, seed=2)
    assert first.facts().pre_contrast_exposures == 1
    assert [row["phase"] for row in room.dose_log.list_exposures(ACC)] == ["pre-contrast"] * 2
    assert len([e for e in room.journal.entries(exam_id=f"{ACC}-2") if e.kind == "exposure"]) == 1


@pytest.mark.slow  # the real wire: a pty that vanishes, a watchdog on its clock
def test_a_link_lost_during_an_injection_is_corrected_from_the_pump_when_it_is_back(
    room: Room,
) -> None:
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(0.9, 0.6, "tech1")  # the link goes long before the end
    wait_until(
        lambda: room.sim.snapshot().infused_ml >= 0.05, WAIT_S, "the injection never started"
    )
    room.sim.add_fault("port_vanish")
    assert service.wait_for_state(S.FAULT, WAIT_S)
    recorded = service.facts().volume_given_ml
    wait_until(
        lambda: room.sim.snapshot().prompt.name != "INFUSING", WAIT_S, "the pump was never stopped"
    )
    given = room.sim.snapshot().infused_ml
    assert given > recorded + 0.015  # 2 simulated s at 0.6 mL/min, at least
    port_back(room)
    service.acknowledge_fault("tech1")
    assert service.facts().volume_given_ml == pytest.approx(given, abs=0.002)
    (corrected,) = kinds(room.journal, "injection-corrected")
    assert corrected.payload["previous_ml"] == pytest.approx(recorded)
    assert service.contrast_administrations()[-1].delivered_ml == pytest.approx(given, abs=0.002)
    replayed = room.service()  # the correction survives a restart
    assert replayed.facts().volume_given_ml == pytest.approx(given, abs=0.002)


def test_an_exam_is_closed_only_once_its_final_report_is_queued(room: Room, tmp_path: Path) -> None:
    """Once closed, the exam is no longer the open one and nothing would queue its final MPPS:
    the close is refused while the outbox cannot take it."""
    outbox_db = tmp_path / "outbox.db"
    unreachable = Peer("127.0.0.1", 9, "RIS")  # never contacted: the sender is not started
    outbox = Outbox(outbox_db, {RIS: unreachable}, busy_timeout_s=0.2)
    reporting = ExamReporting(
        room.journal,
        room.dose_log,
        outbox,
        ReportingSettings(
            station_ae="GALACTO",
            uid_root="1.2.826.0.1.3680043.10.1466",
            storage_dir=tmp_path,
            pacs=False,
        ),
    )
    service = room.service(reporter=reporting)
    service.select_order(ORDER, "L", "tech1")
    assert service.answer_checklist(ALL_CLEAR, "tech1")
    service.pass_checklist("tech1")
    expose(room, service, S.PRE_CONTRAST, seed=1)
    with closing(sqlite3.connect(outbox_db, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")  # the outbox cannot be written
        service.discontinue(DISCONTINUED_PATIENT_REFUSED.value, "tech1")  # the exam goes on
        with pytest.raises(Refused, match="report could not be queued"):
            service.close_exam("tech1")
        other.execute("ROLLBACK")
    service.close_exam("tech1")
    order_mpps = [m for m in outbox.messages() if m.kind == "mpps_set"]
    assert order_mpps, "the final N-SET is queued"
    final = Dataset.from_json(order_mpps[-1].payload_json)
    assert final.PerformedProcedureStepStatus == "DISCONTINUED"
    assert service.state is S.IDLE


def test_stop_reaches_the_pump_before_the_journal_and_the_lock(room: Room, tmp_path: Path) -> None:
    """STOP is sent first: while the journal waits for a database another program holds, the
    pump is already stopped (the command is journaled once the database is free)."""
    slow = tmp_path / "slow-journal.db"
    with Journal(slow, busy_timeout_s=60.0) as journal:
        service = ExamService(
            journal, room.worklist, station_ae="UNIT", dose_log=room.dose_log, injector=room.driver
        )
        try:
            to_cannulation(room, service)
            service.start_injection(0.5, 0.05, "tech1")  # 600 s of pump time, 5 s at x120
            wait_until(
                lambda: room.sim.snapshot().infused_ml >= 0.001,
                WAIT_S,
                "the injection never started",
            )
            with closing(sqlite3.connect(slow, isolation_level=None)) as other:
                other.execute("BEGIN EXCLUSIVE")
                stopper = threading.Thread(target=service.stop_injection, args=("tech1",))
                stopper.start()
                wait_until(
                    lambda: room.sim.snapshot().prompt.name != "INFUSING",
                    WAIT_S,
                    "the pump was not stopped",
                )
                assert stopper.is_alive(), "the stop waited for the journal"
                other.execute("ROLLBACK")
            stopper.join(timeout=WAIT_S)
            assert not stopper.is_alive()
            assert service.state is S.POST_INJECTION_1
            commands = [e.payload["command"] for e in journal.entries() if e.kind == "command"]
            assert commands[-1] == "stop-injection"
        finally:
            service.close()


def test_completing_reads_in_every_exposure_already_stored(room: Room) -> None:
    """An image stored a moment before Complete (not yet read by the controller's tick) is the
    exam's: it is counted in its phase and in the final report, never left "unexpected"."""
    service = room.service()
    to_cannulation(room, service)
    inject(service, 0.1, S.POST_INJECTION_1)
    expose(room, service, S.POST_INJECTION_1, seed=5)
    study = StudyContext(
        study_instance_uid=STUDY_UID,
        accession_number=ACC,
        scheduled_procedure_step_id=service.sps_id(S.POST_INJECTION_1),
    )
    late = sample_mg_image(seed=6, laterality="L", view="ML", study=study)
    room.dose_log.record([from_image_header(late, station_ae="UNIT")])  # not yet noted
    service.complete("tech1")
    service.note_exposures()
    phases = [row["phase"] for row in room.dose_log.list_exposures(ACC)]
    assert phases == ["pre-contrast"] * 2 + ["post-injection-1"] * 2
    view = service.view()
    assert view is not None and len(view.exposure_ids) == 4


# ----------------------------------------------------------------------------------------------
# Injection safety (issue 8): each layer of the exam, with the pump's own layer off where it has
# one.


@pytest.mark.parametrize(
    ("volume_ml", "rate_ml_min", "reason"),
    [
        (0.0004, 0.3, "the volume 0.0004 mL is below the minimum of 0.05 mL"),
        (0.5, 0.0001, "the rate 0.0001 mL/min is below the minimum of 0.05 mL/min"),
        (0.5, 1.5, "the rate 1.5 mL/min is above the maximum of 1 mL/min"),
        (0.9, 0.08, "0.9 mL at 0.08 mL/min takes 675 s, more than the 600 s allowed"),
    ],
)
def test_values_the_pump_cannot_honour_are_refused_by_the_exam(
    room: Room, volume_ml: float, rate_ml_min: float, reason: str
) -> None:
    service = room.service()
    to_cannulation(room, service)
    assert_refused(room, lambda: service.start_injection(volume_ml, rate_ml_min, "tech1"), reason)
    assert room.sim.run_count == 0
    assert service.facts().injections_started == 0


def test_the_longest_injection_allowed_is_600_s_inclusive(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(0.5, 0.05, "tech1")  # 600 s exactly
    assert room.sim.wait_until(lambda s: s.infused_ml > 0.005, WAIT_S)
    service.stop_injection("tech1")
    assert service.state is S.POST_INJECTION_1


def test_an_over_delivery_is_stopped_journaled_and_recorded_as_delivered(room: Room) -> None:
    """The pump ignores its volume (its layer off): the controller stops it at target +
    tolerance, journals 130160 "controller stop: over-delivery", and records everywhere what
    was delivered, not what was programmed."""
    room.sim.add_fault("ignore_volume")
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(0.3, 0.3, "tech1")
    assert service.wait_for_state(S.FAULT, WAIT_S), service.state

    assert room.sim.wait_until(lambda s: s.prompt.name == "STOPPED", WAIT_S)
    given = room.sim.snapshot().infused_ml
    assert 0.32 < given < 0.4  # not the whole 1 mL syringe
    stops = [
        e.payload for e in kinds(room.journal, "injector-event") if e.payload["code"] == "130160"
    ]
    assert stops[-1]["detail"] == "controller stop: over-delivery"
    (ended,) = kinds(room.journal, "injection-ended")
    assert ended.payload["delivered_ml"] == pytest.approx(given, abs=0.002)
    assert ended.payload["reason"] == "controller stop: over-delivery"
    (record,) = service.contrast_administrations()
    assert (record.programmed_ml, record.delivered_ml) == (0.3, ended.payload["delivered_ml"])
    assert service.facts().volume_given_ml == pytest.approx(given, abs=0.002)
    snapshot = service.snapshot()
    assert snapshot.fault_reason == "controller stop: over-delivery"


def test_the_syringe_is_tracked_across_a_restart_and_a_larger_injection_is_refused(
    room: Room,
) -> None:
    """The pump's end-of-travel stall is off: only the exam's own account of the syringe
    stands between an injection and an empty syringe."""
    room.sim.add_fault("end_stop_off")
    service = room.service()
    service.select_order(ORDER, "L", "tech1")
    assert service.answer_checklist(ALL_CLEAR, "tech1")
    service.pass_checklist("tech1")
    expose(room, service, S.PRE_CONTRAST, seed=1)
    service.finish_pre_contrast("tech1")
    service.confirm_cannulation("tech1")
    assert_refused(room, lambda: service.confirm_air_purge("tech1", loaded_ml=1.5), "at most 1 mL")
    assert_refused(room, lambda: service.confirm_air_purge("tech1", loaded_ml=0.0), "loaded")
    service.confirm_air_purge("tech1", loaded_ml=0.8)
    assert_refused(room, lambda: service.start_injection(0.9, 0.3, "tech1"), "holds 0.8 mL")
    inject(service, 0.5, S.POST_INJECTION_1)
    given = service.facts().volume_given_ml
    expose(room, service, S.POST_INJECTION_1, seed=3)
    service.close()

    resumed = room.service()  # a restart: the syringe is folded from the journal
    assert resumed.facts().syringe_left_ml == pytest.approx(0.8 - given)
    resumed.confirm_air_purge("tech1", loaded_ml=0.3)  # purged again, not refilled
    assert_refused(
        room, lambda: resumed.start_injection(0.5, 0.3, "tech1"), "the syringe holds 0.3 mL"
    )
    assert room.sim.run_count == 1
    inject(resumed, 0.25, S.POST_INJECTION_2)
    assert resumed.facts().syringe_left_ml == pytest.approx(0.05, abs=0.005)
    purges = [
        e.payload for e in kinds(room.journal, "confirmation") if e.payload["what"] == "air-purge"
    ]
    assert [p["loaded_ml"] for p in purges] == [0.8, 0.3]


def test_an_air_purge_without_a_volume_loads_a_full_syringe(room: Room) -> None:
    service = room.service()
    to_cannulation(room, service)  # confirm-air-purge without loaded_ml
    assert service.facts().syringe_left_ml == 1.0  # injector.syringe: 1ml
    purge = [e for e in kinds(room.journal, "confirmation") if e.payload["what"] == "air-purge"]
    assert purge[-1].payload["loaded_ml"] == 1.0


def test_an_order_for_the_other_side_is_refused_unless_the_override_is_given(room: Room) -> None:
    service = room.service()  # ORDER is "Galactography left"
    with pytest.raises(Refused) as refused:
        service.select_order(ORDER, "R", "tech1")
    assert refused.value.details == {
        "code": "laterality-mismatch",
        "order_side": "L",
        "chosen_side": "R",
    }
    assert service.state is S.IDLE
    (refusal,) = [e for e in room.journal.entries() if e.kind == "refusal"]
    assert refusal.payload["code"] == "laterality-mismatch"

    why = "the referral letter says right; RIS order to be corrected"
    order = service.select_order(ORDER, "R", "tech1", side_override_reason=why)
    assert order.side == "R" and service.state is S.CHECKLIST
    (laterality,) = kinds(room.journal, "laterality")
    assert laterality.payload["order_side"] == "L"
    assert laterality.payload["chosen_side"] == "R"
    assert laterality.payload["override_reason"] == why
    assert laterality.operator == "tech1"


def test_an_order_without_a_side_is_opened_with_the_side_chosen_and_journaled(room: Room) -> None:
    service = room.service()
    no_side = dataclasses.replace(
        ORDER, requested_procedure_description="Galactography", sps_description="Ductography"
    )
    service.select_order(no_side, "R", "tech1")
    (laterality,) = kinds(room.journal, "laterality")
    assert laterality.payload["order_side"] is None
    assert laterality.payload["chosen_side"] == "R"
    assert "no side" in laterality.payload["decision"]


@pytest.mark.slow  # the real wire: a pty that vanishes, a watchdog on its clock
def test_a_stop_on_a_dead_link_is_a_fault_and_the_volume_is_read_back(room: Room) -> None:
    """The link dies and the operator's STOP comes before the monitor notices: STP cannot be
    sent, so the stop is not a stop. The exam goes to FAULT (never "terminated by operator"),
    and the acknowledgement reads the pump's counter back into the record."""
    room.driver.limits = dataclasses.replace(FAST_LIMITS, poll_interval_s=1.0)
    service = room.service()
    to_cannulation(room, service)
    service.start_injection(0.9, 0.6, "tech1")
    assert room.sim.wait_until(lambda s: s.infused_ml > 0.1, WAIT_S)
    room.sim.add_fault("port_vanish")  # back after 1 s
    service.stop_injection("tech1")

    assert service.state is S.FAULT
    (ended,) = kinds(room.journal, "injection-ended")
    assert ended.payload["unconfirmed"] and not ended.payload["stopped_by_operator"]
    assert room.sim.wait_until(lambda s: s.prompt.name == "STOPPED", WAIT_S)  # its watchdog
    given = room.sim.snapshot().infused_ml
    assert given > ended.payload["delivered_ml"] + 0.001
    port_back(room)
    service.acknowledge_fault("tech1")
    assert service.facts().volume_given_ml == pytest.approx(given, abs=0.001)
    (corrected,) = kinds(room.journal, "injection-corrected")
    assert corrected.payload["delivered_ml"] == pytest.approx(given, abs=0.001)


def test_a_journal_that_cannot_record_the_start_disarms_the_injector(
    room: Room, tmp_path: Path
) -> None:
    """The pump's own arm timeout is off: only the controller's disarm stands between an armed
    pump and an injection nobody recorded."""
    room.sim.add_fault("arm_timeout_off")
    service = room.service()
    to_cannulation(room, service)
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        db.execute(
            "CREATE TRIGGER disk_full BEFORE INSERT ON journal "
            "WHEN NEW.kind = 'injection-started' "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        db.commit()
    with pytest.raises(JournalUnavailable):
        service.start_injection(0.3, 0.3, "tech1")
    assert room.driver.state is InjectorState.READY
    assert not room.sim.snapshot().armed
    assert room.sim.run_count == 0
    with closing(sqlite3.connect(tmp_path / "journal.db")) as db:
        db.execute("DROP TRIGGER disk_full")
        db.commit()
    with pytest.raises(Refused, match="acknowledge the fault first"):
        service.start_injection(0.3, 0.3, "tech1")
    assert service.state is S.FAULT
    service.acknowledge_fault("tech1")
    assert service.state is S.CANNULATION
    assert service.facts().injections_started == 0
    inject(service, 0.1, S.POST_INJECTION_1)
    assert room.sim.run_count == 1


@pytest.mark.slow  # the real wire: a pty that vanishes, a watchdog on its clock
def test_a_link_cut_exactly_at_run_is_a_fault_counted_as_given_never_run_again(room: Room) -> None:
    """RUN executed, the link gone before its reply: whether it ran is unknown. The exam counts
    the programmed volume as given and stops in FAULT; nothing ever sends RUN again."""
    service = room.service()
    to_cannulation(room, service)
    room.sim.add_fault("port_vanish@on=RUN")
    service.start_injection(0.3, 0.3, "tech1")

    assert service.state is S.FAULT
    (ended,) = kinds(room.journal, "injection-ended")
    assert ended.payload["reason"].startswith("start unconfirmed")
    assert service.facts().volume_given_ml == pytest.approx(0.3)
    assert service.snapshot().fault_reason is not None
    assert room.sim.wait_until(lambda s: s.prompt.name == "STOPPED", WAIT_S)  # its watchdog
    port_back(room)
    service.acknowledge_fault("tech1")
    assert service.state is S.POST_INJECTION_1
    assert room.sim.run_count == 1
