"""The real controller in the simulated room, end to end (issue 4 §5).

Every test starts :class:`acquisition.controller.Controller` from a configuration built like
``galacto serve`` builds it, beside the injector simulator on a real pseudo-terminal and the RIS,
PACS and unit simulators over loopback DICOM (tests/exam_room.py). What is asserted is what the
peers hold at the end: the RIS's MPPS, the PACS's objects, the dose log and the journal.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from acquisition.commands.demo import OPERATOR
from acquisition.exam.model import Patient
from acquisition.exam_machine import ExamState
from acquisition.journal import Entry
from device_drivers.base import InjectorState
from device_drivers.codec import Prompt
from device_drivers.events import InjectorEvent
from dicom_nodes.datasets import codes
from dicom_nodes.datasets.codes import Code
from dicom_nodes.hospital.dicom_outbox import Kind
from dicom_nodes.hospital.outbox import State
from simulators.unit import Fault
from tests.exam_room import (
    MG_FOR_PRESENTATION,
    WAIT_S,
    XRAY_RADIATION_DOSE_SR,
    Room,
    exam_room,
    journaled_refusal,
)
from tests.peers import free_port
from tests.serve_process import JOURNAL_KEY
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

S = ExamState
GALACTO = [sys.executable, "-m", "acquisition"]
#: A slow injection, so that the test acts while it runs: 0.5 mL at 0.1 mL/min is 300 s
#: simulated, ~2.5 s at the room's time scale.
LONG_ML, SLOW_ML_MIN = 0.5, 0.1


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with exam_room(tmp_path) as room:
        yield room


def test_serve_journals_a_simulated_injector_at_start(room: Room) -> None:
    (entry,) = room.entries("injector-simulated")
    assert entry.payload["url"].startswith("injsim://")
    assert entry.payload["version"].startswith("NE1000")


# ---------------------------------------------------------------------- helpers


def referenced(mpps: Dataset, keyword: str) -> dict[str, str]:
    """SOP Instance UID → SOP Class UID of every reference of the Performed Series Sequence."""
    found = {}
    for series in mpps.get("PerformedSeriesSequence", []):
        for ref in series.get(keyword, []):
            found[str(ref.ReferencedSOPInstanceUID)] = str(ref.ReferencedSOPClassUID)
    return found


def billed_ml(mpps: Dataset) -> float:
    (item,) = mpps.BillingSuppliesAndDevicesSequence
    (quantity,) = item.QuantitySequence
    return float(quantity.Quantity)


def exam_report_uid(room: Room) -> str:
    """The exam's own dose report (its ``dose-report`` entry), of the exam opened last."""
    (entry,) = room.entries("dose-report", room.last_order().exam_id)
    return str(entry.payload["sop_instance_uid"])


def start_long_injection(room: Room) -> None:
    """Start a slow injection; return once the pump is infusing it. (The driver zeroes the
    pump's counter, ``CLD INF``, when it arms: ``infused_ml`` is this injection's volume.)"""
    room.exam.start_injection(LONG_ML, SLOW_ML_MIN, OPERATOR)
    assert room.injector_sim.wait_until(
        lambda s: s.prompt is Prompt.INFUSING and s.infused_ml >= 0.02, WAIT_S
    ), "the injector never infused"


def assert_refused(room: Room, action: Callable[[], object], reason_part: str) -> None:
    """Refused, the refusal journaled with the same reason, the state unchanged."""
    state = room.exam.state
    refused, _ = journaled_refusal(room.journal, action)
    assert reason_part in refused.reason
    assert room.exam.state is state


# ---------------------------------------------------------------------- 1. the scripted exam


def test_the_scripted_exam_leaves_one_complete_mpps_and_every_object_at_the_pacs(
    room: Room,
) -> None:
    accession = room.sim_room.schedule_order("L").accession_number

    result = room.script().run(accession)  # returns once the RIS and the PACS hold everything

    assert (result["exam"]["accession"], result["exam"]["status"]) == (accession, "completed")
    assert room.exam.state is S.IDLE  # the script closes the exam: the room is free
    order = room.last_order()
    # Exactly one MPPS toward the RIS for the exam: N-CREATE IN PROGRESS, N-SETs, COMPLETED.
    assert [m.sop_instance_uid for m in room.ris.mpps_instances()] == [order.mpps_instance_uid]
    mpps = room.wait_for_final_mpps(order.mpps_instance_uid)
    operations = [(m.operation, m.status_code) for m in mpps.messages]
    assert operations[0] == ("N-CREATE", 0x0000)
    assert len(operations) >= 2
    assert set(operations[1:]) == {("N-SET", 0x0000)}
    created = mpps.created
    assert created is not None
    assert created.PerformedProcedureStepStatus == "IN PROGRESS"
    assert created.ScheduledStepAttributesSequence[0].AccessionNumber == accession
    assert not created.PerformedProcedureStepEndDate  # set at the end, created empty
    reasons = created.PerformedProcedureStepDiscontinuationReasonCodeSequence
    assert len(reasons) == 0  # created empty: only what N-CREATE held may be set later
    statuses = [m.dataset.get("PerformedProcedureStepStatus") for m in mpps.messages[1:]]
    assert statuses[-1] == "COMPLETED" and statuses.count("COMPLETED") == 1
    final = mpps.dataset
    assert final.PerformedProcedureStepStatus == "COMPLETED"
    assert final.PerformedProcedureStepEndDate and final.PerformedProcedureStepEndTime

    # The PACS holds the 5 images, the unit's 3 dose reports (one per step) and the exam's.
    images = {o.sop_instance_uid for o in room.pacs_objects(MG_FOR_PRESENTATION)}
    reports = {o.sop_instance_uid for o in room.pacs_objects(XRAY_RADIATION_DOSE_SR)}
    assert len(images) == 5
    assert len(reports) == 3 + 1
    assert len(room.pacs.received()) == 9
    assert exam_report_uid(room) in reports
    rows = room.dose_log.list_exposures(accession)
    assert {row["sop_instance_uid"] for row in rows} == images

    # The final Performed Series Sequence references every image and every dose report.
    assert referenced(final, "ReferencedImageSequence") == dict.fromkeys(
        images, MG_FOR_PRESENTATION
    )
    non_images = referenced(final, "ReferencedNonImageCompositeSOPInstanceSequence")
    assert non_images == dict.fromkeys(reports, XRAY_RADIATION_DOSE_SR)
    assert non_images[exam_report_uid(room)] == "1.2.840.10008.5.1.4.1.1.88.67"

    # Radiation Dose module: one item per exposure; the contrast given is billed.
    assert final.TotalNumberOfExposures == 5
    assert len(final.ExposureDoseSequence) == 5
    assert {float(item.KVP) for item in final.ExposureDoseSequence} == {
        float(row["kvp"]) for row in rows
    }
    assert billed_ml(final) == pytest.approx(0.8, abs=0.01)
    assert result["contrast_ml"] == pytest.approx(0.8, abs=0.01)

    assert [row["phase"] for row in rows] == [
        "pre-contrast",
        "pre-contrast",
        "post-injection-1",
        "post-injection-1",
        "post-injection-2",
    ]
    assert all(row["unknown_step"] == 0 and row["review_reasons"] == "" for row in rows)

    # The images forwarded to the PACS carry the contrast given before them (Contrast/Bolus).
    given_before = {"pre-contrast": None, "post-injection-1": 0.5, "post-injection-2": 0.8}
    for row in rows:
        received = room.pacs.get(row["sop_instance_uid"])
        assert received is not None
        volume = received.read().get("ContrastBolusVolume")
        expected = given_before[row["phase"]]
        assert (volume is None) if expected is None else float(volume) == pytest.approx(expected)
    verdict = room.journal.verify()
    assert verdict.ok, verdict.reason
    assert verdict.entries == len(room.entries())


# ---------------------------------------------------------------------- 2. discontinuation


@dataclass(frozen=True)
class Stop:
    """Where the exam is discontinued, and why (CID 9301)."""

    phase: str
    reason: Code


STOPS = [
    Stop("checklist", codes.DISCONTINUED_PATIENT_PREGNANT),  # 110508
    Stop("pre-contrast", codes.DISCONTINUED_PATIENT_REFUSED),  # 110505
    Stop("cannulation", codes.DISCONTINUED_PATIENT_CONDITION),  # 110515: duct not cannulated
    Stop("injection-1", codes.DISCONTINUED_EXTRAVASATION),  # 95384003 (SCT)
    Stop("post-injection-1", codes.DISCONTINUED_ALLERGIC_TO_CONTRAST),  # 110503
    Stop("injection-2", codes.DISCONTINUED_DOCTOR_CANCELED),  # 110500
    Stop("post-injection-2", codes.DISCONTINUED_INCORRECT_SIDE),  # 110512
    Stop("fault", codes.DISCONTINUED_EQUIPMENT_FAILURE),  # 110501
]


def drive_to(room: Room, where: str) -> bool:
    """Take the exam to ``where``; True when an injection is running there."""
    room.open_order("L")
    if where == "checklist":
        return False
    room.pass_checklist()
    if where == "pre-contrast":
        room.image(S.PRE_CONTRAST, ["L-CC"])
        return False
    room.image(S.PRE_CONTRAST)
    room.exam.finish_pre_contrast(OPERATOR)
    room.exam.confirm_cannulation(OPERATOR)
    if where == "cannulation":
        return False
    room.exam.confirm_air_purge(OPERATOR)
    if where == "injection-1":
        start_long_injection(room)
        return True
    if where == "fault":
        room.injector_sim.add_fault("stall@volume=0.05")
        room.inject(0.5, S.FAULT)
        assert_refused(
            room,
            lambda: room.exam.discontinue(codes.DISCONTINUED_EQUIPMENT_FAILURE.value, OPERATOR),
            "acknowledge the fault first",
        )
        room.exam.acknowledge_fault(OPERATOR)
        assert room.exam.state is S.POST_INJECTION_1
        return False
    room.inject(0.1, S.POST_INJECTION_1)
    room.image(S.POST_INJECTION_1, ["L-CC-MAG"])
    if where == "post-injection-1":
        return False
    room.exam.confirm_air_purge(OPERATOR)
    if where == "injection-2":
        start_long_injection(room)
        return True
    room.inject(0.1, S.POST_INJECTION_2)
    room.image(S.POST_INJECTION_2, ["L-ML-MAG"])
    return False


@pytest.mark.parametrize("stop", STOPS, ids=[s.phase for s in STOPS])
def test_discontinued_at_each_phase_reports_its_reason_to_the_ris(room: Room, stop: Stop) -> None:
    running = drive_to(room, stop.phase)
    assert room.exam.state.value == ("post-injection-1" if stop.phase == "fault" else stop.phase)

    room.exam.discontinue(stop.reason.value, OPERATOR)

    assert room.exam.state is S.DISCONTINUED
    mpps = room.wait_for_final_mpps()
    assert mpps.status == "DISCONTINUED"
    assert mpps.discontinuation_reason == stop.reason
    final = mpps.dataset
    assert final.PerformedProcedureStepEndDate and final.PerformedProcedureStepEndTime
    assert len(final.PerformedSeriesSequence) >= 1
    images = {row["sop_instance_uid"] for row in room.dose_log.list_exposures(room.order.accession)}
    assert set(referenced(final, "ReferencedImageSequence")) == images
    assert [m.sop_instance_uid for m in room.ris.mpps_instances()] == [room.order.mpps_instance_uid]
    assert room.unit.poll_worklist() == []  # no step is offered for a discontinued exam
    if images:
        assert exam_report_uid(room) in referenced(
            final, "ReferencedNonImageCompositeSOPInstanceSequence"
        )

    ended = room.entries("injection-ended", room.order.exam_id)
    given = sum(float(e.payload["delivered_ml"]) for e in ended)
    if running:
        # The injector was stopped first: the pump stands still short of the programmed volume.
        sim = room.injector_sim.snapshot()
        assert sim.prompt is Prompt.STOPPED
        assert 0.02 <= sim.infused_ml < LONG_ML
        assert room.controller.injector is not None
        assert room.controller.injector.state is not InjectorState.INJECTING
        last = ended[-1].payload
        assert last["stopped_by_operator"] and not last["completed"]
        assert float(last["delivered_ml"]) == pytest.approx(sim.infused_ml, abs=0.01)
        transitions = [e.payload["event"] for e in room.entries("transition")]
        assert transitions[-2:] == ["injection-stopped", "discontinue"]
    if given > 0:
        assert billed_ml(final) == pytest.approx(given, abs=0.001)
    else:
        assert not final.get("BillingSuppliesAndDevicesSequence")
    assert room.journal.verify().ok


# ---------------------------------------------------------------------- 3. RIS and PACS down


@pytest.mark.parametrize("outage", ["before-n-create", "after-n-create"])
def test_ris_and_pacs_down_never_block_the_exam_and_lose_nothing(room: Room, outage: str) -> None:
    accession = room.sim_room.schedule_order("L").accession_number
    item = room.script().ris_order(accession)
    if outage == "before-n-create":
        room.ris.down()
        room.pacs.down()
    order = room.exam.select_order(item, "L", OPERATOR)
    if outage == "after-n-create":

        def created() -> bool:  # answered, and the answer recorded: nothing in flight
            return any(
                m.kind == Kind.MPPS_CREATE and m.state == State.SENT
                for m in room.outbox.messages(order.mpps_instance_uid)
            )

        assert room.outbox.wait_for(created, WAIT_S), room.outbox.messages()
        room.ris.down()
        room.pacs.down()

    # The whole exam goes on while both are down: imaging and injecting never wait for them.
    room.pass_checklist()
    room.image(S.PRE_CONTRAST)
    room.exam.finish_pre_contrast(OPERATOR)
    room.exam.confirm_cannulation(OPERATOR)
    room.exam.confirm_air_purge(OPERATOR)
    room.inject(0.5, S.POST_INJECTION_1)
    room.image(S.POST_INJECTION_1)
    room.exam.complete(OPERATOR)
    assert room.exam.state is S.COMPLETED

    # Nothing reached them; the outbox holds it all.
    assert room.pacs.received() == []
    held = room.ris.mpps(order.mpps_instance_uid)
    pending = [m for m in room.outbox.messages() if m.state == State.PENDING]
    kinds = {(m.kind, m.destination) for m in pending}
    assert (Kind.MPPS_SET, "ris") in kinds
    assert (Kind.C_STORE, "pacs") in kinds
    if outage == "before-n-create":
        assert held is None
        assert (Kind.MPPS_CREATE, "ris") in kinds
    else:
        assert held is not None and held.status == "IN PROGRESS"
    stores = {m.sop_instance_uid for m in pending if m.kind == Kind.C_STORE}
    assert exam_report_uid(room) in stores

    room.ris.up()
    room.pacs.up()

    mpps = room.wait_for_final_mpps(order.mpps_instance_uid)
    room.wait_for_outbox_drained()
    assert room.pacs.wait_for(lambda: len(room.pacs.received()) == 4 + 2 + 1, WAIT_S), [
        o.sop_class_uid for o in room.pacs.received()
    ]
    assert mpps.status == "COMPLETED"
    assert [m.sop_instance_uid for m in room.ris.mpps_instances()] == [order.mpps_instance_uid]
    assert mpps.messages[0].operation == "N-CREATE"
    assert {m.status_code for m in mpps.messages} == {0x0000}
    images = {o.sop_instance_uid for o in room.pacs_objects(MG_FOR_PRESENTATION)}
    assert len(images) == 4
    assert set(referenced(mpps.dataset, "ReferencedImageSequence")) == images
    reports = {o.sop_instance_uid for o in room.pacs_objects(XRAY_RADIATION_DOSE_SR)}
    assert set(referenced(mpps.dataset, "ReferencedNonImageCompositeSOPInstanceSequence")) == (
        reports
    )
    assert exam_report_uid(room) in reports
    assert billed_ml(mpps.dataset) == pytest.approx(0.5, abs=0.01)


class DroppingPeer:
    """A "RIS" half down: it accepts each TCP connection and resets it as soon as the
    A-ASSOCIATE-RQ arrives (a peer that dies during association negotiation)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = int(self._listener.getsockname()[1])
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dropping-peer", daemon=True)

    def __enter__(self) -> DroppingPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5.0)
                with contextlib.suppress(OSError):
                    conn.recv(6)  # the PDU header of the A-ASSOCIATE-RQ
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.dropped += 1


def socket_fds() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found[fd] = target
    return found


def test_a_ris_dropping_associations_leaves_no_socket_open(tmp_path: Path) -> None:
    """Every failed association toward the RIS (worklist refresh, MPPS) closes its socket."""
    before = socket_fds()
    with (
        DroppingPeer() as ris,
        exam_room(tmp_path, overrides={"ris.port": ris.port}) as room,
    ):
        room.exam.register_unscheduled(Patient("ROE^ANN", "P7", sex="F"), "L", OPERATOR)  # N-CREATE
        refresher = room.controller.refresher
        assert refresher is not None
        assert refresher.wait_for_refreshes(2, WAIT_S)
        assert room.outbox.wait_for(
            lambda: any(m.attempts >= 2 for m in room.outbox.messages()), WAIT_S
        ), room.outbox.messages()
        assert ris.dropped >= 4
        assert refresher.last_error

    def closed() -> bool:
        gc.collect()
        return not {fd: t for fd, t in socket_fds().items() if before.get(fd) != t}

    closed_in_time = eventually(closed, 3.0)
    left = {fd: t for fd, t in socket_fds().items() if before.get(fd) != t}
    assert closed_in_time, f"sockets left open after everything stopped: {left}"


# ---------------------------------------------------------------------- 4. injector fault


@dataclass(frozen=True)
class PumpFault:
    """A fault switched on in the injector simulator, and the CID 71 termination it means."""

    spec: str
    from_ml: float  # the volume at which it fires
    termination: InjectorEvent


PUMP_FAULTS = [
    PumpFault("stall@volume=0.1", 0.1, InjectorEvent.TERMINATED_INJECTOR_FAILURE),  # 130160
    PumpFault("air@volume=0.1", 0.1, InjectorEvent.TERMINATED_AIR),  # 130176
    PumpFault("pressure_ramp@volume=0.05", 0.05, InjectorEvent.TERMINATED_PRESSURE),  # 130156
]


@pytest.mark.parametrize("fault", PUMP_FAULTS, ids=[f.spec.split("@")[0] for f in PUMP_FAULTS])
def test_an_injector_fault_during_injection_1_stops_the_pump_and_holds_the_exam(
    room: Room, fault: PumpFault
) -> None:
    room.to_cannulation()
    room.injector_sim.add_fault(fault.spec)

    room.inject(0.5, S.FAULT)

    # The pump stands still, short of the programmed volume; the driver saw the alarm.
    sim = room.injector_sim.snapshot()
    assert sim.prompt is Prompt.STOPPED
    # The counter sums the pump's float steps (0.09999999999998 for 0.1): compared in µL.
    assert fault.from_ml <= round(sim.infused_ml, 6) < 0.5
    driver = room.controller.injector
    assert driver is not None and driver.state is InjectorState.ERROR
    exam_id = room.order.exam_id
    (ended,) = room.entries("injection-ended", exam_id)
    assert not ended.payload["completed"] and not ended.payload["stopped_by_operator"]
    assert float(ended.payload["delivered_ml"]) == pytest.approx(sim.infused_ml, abs=0.01)
    failure = fault.termination.code  # CID 71
    assert failure in sim.events_raised
    assert ended.payload["event_code"] == failure
    events = room.entries("injector-event", exam_id)
    assert failure in {e.payload["code"] for e in events}
    transition = room.entries("transition", exam_id)[-1].payload
    assert (transition["from"], transition["to"]) == ("injection-1", "fault")
    assert room.unit.poll_worklist() == []  # nothing to image while in FAULT

    # Everything but acknowledging the fault is refused (and journaled) while in FAULT.
    exam = room.exam
    reason = codes.DISCONTINUED_EQUIPMENT_FAILURE.value
    assert_refused(room, lambda: exam.complete(OPERATOR), "acknowledge the fault first")
    assert_refused(room, lambda: exam.discontinue(reason, OPERATOR), "acknowledge the fault first")
    assert_refused(room, lambda: exam.start_injection(0.1, 0.3, OPERATOR), "acknowledge the fault")
    assert_refused(room, lambda: exam.finish_pre_contrast(OPERATOR), "acknowledge the fault")
    assert_refused(room, lambda: exam.confirm_air_purge(OPERATOR), "acknowledge the fault")
    assert_refused(room, lambda: exam.stop_injection(OPERATOR), "acknowledge the fault")
    assert sim.run_count == room.injector_sim.run_count == 1

    exam.acknowledge_fault(OPERATOR)

    # Back in the phase after the interrupted injection, the pump reset, its step offered.
    assert exam.state is S.POST_INJECTION_1
    assert driver.state is InjectorState.READY
    assert exam.facts().volume_given_ml == pytest.approx(float(ended.payload["delivered_ml"]))
    room.image(S.POST_INJECTION_1, ["L-CC-MAG"])
    exam.complete(OPERATOR)
    mpps = room.wait_for_final_mpps()
    assert mpps.status == "COMPLETED"
    assert billed_ml(mpps.dataset) == pytest.approx(float(ended.payload["delivered_ml"]), abs=1e-3)
    assert room.journal.verify().ok


# ---------------------------------------------------------------------- 5. unexpected exposures


def exposure_entries(room: Room) -> dict[int, dict[str, object]]:
    return {int(e.payload["exposure_id"]): e.payload for e in room.entries("exposure")}


def test_an_exposure_outside_any_step_is_kept_flagged_and_journaled(room: Room) -> None:
    order = room.open_order("L")
    room.pass_checklist()
    step = room.offered(S.PRE_CONTRAST)
    room.unit.arm_fault(Fault.EXPOSURE_OUTSIDE_STEP)  # the first image names no step
    performed = room.perform(step, ["L-CC", "L-ML"])
    (outside,) = room.unit.state.unscheduled_images
    (inside,) = performed.images

    def noted() -> bool:
        return len(exposure_entries(room)) == 2

    room.wait_until(noted, "both exposures noted by the exam")
    rows = {row["sop_instance_uid"]: row for row in room.dose_log.list_exposures(order.accession)}
    assert set(rows) == {outside.sop_instance_uid, inside.sop_instance_uid}
    flagged, counted = rows[outside.sop_instance_uid], rows[inside.sop_instance_uid]
    assert (flagged["phase"], flagged["unknown_step"], flagged["sps_id"]) == ("unexpected", 1, None)
    assert (counted["phase"], counted["unknown_step"]) == ("pre-contrast", 0)
    assert flagged["agd_reported_mgy"] > 0  # its dose is on record like any other
    journaled = exposure_entries(room)[int(flagged["id"])]
    assert (journaled["phase"], journaled["counted"]) == ("unexpected", False)
    assert room.exam.facts().pre_contrast_exposures == 1


def test_an_exposure_of_an_earlier_phase_step_is_kept_flagged_and_journaled(room: Room) -> None:
    order = room.open_order("L")
    room.pass_checklist()
    pre_step, _ = room.image(S.PRE_CONTRAST)
    room.exam.finish_pre_contrast(OPERATOR)
    room.exam.confirm_cannulation(OPERATOR)
    room.exam.confirm_air_purge(OPERATOR)
    room.inject(0.1, S.POST_INJECTION_1)
    room.image(S.POST_INJECTION_1, ["L-CC-MAG"])

    late = room.perform(pre_step, ["L-CC"])  # the unit performs the pre-contrast step again
    (image,) = late.images

    def noted() -> bool:
        rows = room.dose_log.list_exposures(order.accession)
        return any(r["sop_instance_uid"] == image.sop_instance_uid and r["phase"] for r in rows)

    room.wait_until(noted, "the late pre-contrast exposure noted by the exam")
    (row,) = [
        r
        for r in room.dose_log.list_exposures(order.accession)
        if r["sop_instance_uid"] == image.sop_instance_uid
    ]
    assert row["sps_id"] == room.exam.sps_id(S.PRE_CONTRAST)
    assert row["phase"] == "unexpected"
    assert row["agd_reported_mgy"] > 0
    journaled = exposure_entries(room)[int(row["id"])]
    assert (journaled["phase"], journaled["counted"]) == ("unexpected", False)
    facts = room.exam.facts()
    assert (facts.pre_contrast_exposures, facts.post_injection_exposures) == (2, 1)
    phases = [r["phase"] for r in room.dose_log.list_exposures(order.accession)]
    assert phases == ["pre-contrast"] * 2 + ["post-injection-1", "unexpected"]


def kept_and_flagged(room: Room, sop_instance_uid: str) -> tuple[dict[str, Any], Entry]:
    """The dose-log row of one image, once the controller has flagged it ``unexpected``, and
    its ``exposure`` journal entry (the tick reads new exposures at least every 0.5 s)."""
    found: list[tuple[dict[str, Any], Entry]] = []

    def flagged() -> bool:
        rows = [
            r for r in room.dose_log.list_exposures() if r["sop_instance_uid"] == sop_instance_uid
        ]
        assert len(rows) <= 1
        if not rows or rows[0]["phase"] != "unexpected":
            return False
        entries = [e for e in room.entries("exposure") if e.payload["exposure_id"] == rows[0]["id"]]
        if entries:
            found.append((rows[0], entries[0]))
        return bool(found)

    def describe() -> str:
        rows = [
            r for r in room.dose_log.list_exposures() if r["sop_instance_uid"] == sop_instance_uid
        ]
        return f"not flagged and journaled: {rows}"

    assert eventually(flagged, WAIT_S), describe()
    return found[0]


def test_an_exposure_before_any_exam_is_kept_flagged_and_journaled(room: Room) -> None:
    images = room.unit.acquire(None, ["R-CC"])  # no worklist step: the unit's own study
    assert room.unit.send_images(images) == [0x0000]
    (image,) = images

    row, entry = kept_and_flagged(room, image.sop_instance_uid)

    assert (row["unknown_step"], row["sps_id"]) == (1, None)
    assert row["agd_reported_mgy"] > 0
    assert entry.exam_id is None and entry.payload["counted"] is False
    arrived = [
        e
        for e in room.entries("dicom-in")
        if e.payload["sop_instance_uid"] == image.sop_instance_uid
    ]
    assert len(arrived) == 1 and arrived[0].exam_id is None
    assert room.exam.state is S.IDLE


def test_an_exposure_after_the_exam_was_closed_is_kept_flagged_and_journaled(room: Room) -> None:
    order = room.open_order("L")
    room.pass_checklist()
    room.image(S.PRE_CONTRAST, ["L-CC"])
    room.exam.finish_pre_contrast(OPERATOR)
    room.exam.confirm_cannulation(OPERATOR)
    room.exam.confirm_air_purge(OPERATOR)
    room.inject(0.1, S.POST_INJECTION_1)
    post_step, _ = room.image(S.POST_INJECTION_1, ["L-CC-MAG"])
    room.exam.complete(OPERATOR)
    room.exam.close_exam(OPERATOR)
    assert room.exam.state is S.IDLE

    late = room.perform(post_step, ["L-ML-MAG"])  # the unit performs the closed exam's step
    (image,) = late.images

    row, entry = kept_and_flagged(room, image.sop_instance_uid)

    assert (row["accession"], row["sps_id"]) == (order.accession, post_step.sps_id)
    assert row["agd_reported_mgy"] > 0
    assert entry.exam_id is None and entry.payload["counted"] is False
    phases = [r["phase"] for r in room.dose_log.list_exposures(order.accession)]
    assert phases == ["pre-contrast", "post-injection-1", "unexpected"]


# ---------------------------------------------------------------------- 6. tampering


@pytest.fixture(scope="module")
def finished_exam_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database a completed exam left behind (controller and room stopped)."""
    data_dir = tmp_path_factory.mktemp("tamper")
    with exam_room(data_dir) as room:
        room.to_cannulation()
        room.inject(0.3, S.POST_INJECTION_1)
        room.image(S.POST_INJECTION_1)
        room.exam.complete(OPERATOR)
        room.wait_for_final_mpps()
        database = room.database
    return database


VERIFY = ("journal", "verify", "--database")


def verify(database: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GALACTO_")}
    return subprocess.run(
        [*GALACTO, "--set", f"site.journal_key={JOURNAL_KEY}", *VERIFY, str(database)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def tampered_copy(database: Path, tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    copy = tmp_path / "copy.db"
    shutil.copyfile(database, copy)
    for suffix in ("-wal", "-shm"):  # whatever was not checkpointed goes along
        if database.with_name(database.name + suffix).exists():
            shutil.copyfile(database.with_name(database.name + suffix), f"{copy}{suffix}")
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("DROP TRIGGER journal_no_delete")
    return copy, conn


def seq_of(conn: sqlite3.Connection, kind: str) -> int:
    (seq,) = conn.execute("SELECT MIN(seq) FROM journal WHERE kind = ?", (kind,)).fetchone()
    assert seq is not None, f"no {kind} entry"
    return int(seq)


def test_an_untouched_journal_verifies(finished_exam_db: Path) -> None:
    result = verify(finished_exam_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "journal intact" in result.stdout


def alter(conn: sqlite3.Connection) -> int:
    """Halve the volume the first injection delivered."""
    seq = seq_of(conn, "injection-ended")
    conn.execute(
        "UPDATE journal SET payload_json = json_set(payload_json, '$.delivered_ml', 0.15) "
        "WHERE seq = ?",
        (seq,),
    )
    return seq


def delete(conn: sqlite3.Connection) -> int:
    """Remove the record of the first exposure; the entry after it is the first bad one."""
    seq = seq_of(conn, "exposure")
    conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
    return seq + 1


def reorder(conn: sqlite3.Connection) -> int:
    """Swap the injection's start and the entry after it (each keeps its own hash)."""
    first = seq_of(conn, "injection-started")
    rows = conn.execute(
        "SELECT * FROM journal WHERE seq IN (?, ?) ORDER BY seq", (first, first + 1)
    ).fetchall()
    conn.execute("DELETE FROM journal WHERE seq IN (?, ?)", (first, first + 1))
    conn.execute("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)", (first, *rows[1][1:]))
    conn.execute("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)", (first + 1, *rows[0][1:]))
    return first


@pytest.mark.parametrize("tamper", [alter, delete, reorder], ids=["alter", "delete", "reorder"])
def test_journal_verify_names_the_first_bad_entry(
    finished_exam_db: Path, tmp_path: Path, tamper: Callable[[sqlite3.Connection], int]
) -> None:
    copy, conn = tampered_copy(finished_exam_db, tmp_path)
    try:
        first_bad = tamper(conn)
    finally:
        conn.close()

    result = verify(copy)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"first bad entry {first_bad}:" in result.stdout


@pytest.mark.parametrize("own_port", [False, True], ids=["main-port", "own-port"])
def test_storage_commitment_of_every_object_sent_during_the_exam(
    tmp_path: Path, own_port: bool
) -> None:
    """With Storage Commitment, the archive's N-EVENT-REPORT reaches the controller on its
    main port (pacs.commitment_port = 0) or on a listener of its own, on an association the
    archive opens; every object the exam sent ends committed."""
    listener = free_port() if own_port else 0
    overrides = {"pacs.storage_commitment": True, "pacs.commitment_port": listener}
    with exam_room(tmp_path, overrides=overrides) as room:
        endpoints = room.controller.endpoints()
        target = listener or endpoints.port
        room.sim_room.pacs.commitment_target = ("127.0.0.1", target, endpoints.ae_title)
        accession = room.sim_room.schedule_order("L").accession_number
        room.script().run(accession)
        outbox = room.controller.outbox
        assert outbox is not None
        stores = [m for m in outbox.messages() if m.kind == Kind.C_STORE]
        assert len(stores) == 9  # five images, three unit dose reports, the exam's own
        assert outbox.wait_for(
            lambda: (
                {m.state for m in outbox.messages() if m.kind == Kind.C_STORE} == {State.COMMITTED}
            ),
            WAIT_S,
        ), outbox.counts()
        pacs = room.sim_room.pacs  # marks a report delivered once its send has returned
        sent = {m.sop_instance_uid for m in stores}
        assert pacs.wait_for(lambda: sent <= pacs.committed(), WAIT_S), pacs.committed()
