"""IHE Scheduled Workflow identity end to end, against the simulated RIS and PACS (issue 11).

The controller in the simulated room (tests/exam_room.py): where the MPPS goes, what the unit's
worklist returns of the RIS order, the identity the forwarded objects carry, when the final MPPS
leaves, and how the outbox recovers from a RIS that lost the MPPS or a PACS that refuses a
transfer syntax. The same is proven against Orthanc in tests/interop/test_orthanc.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, RLELossless
from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from acquisition.commands.demo import OPERATOR
from acquisition.exam import Patient
from acquisition.exam_machine import ExamState
from acquisition.hospital_identity import ORDER_AT_CLOSE, mpps_start
from acquisition.journal import Entry
from dicom_nodes.datasets import codes
from dicom_nodes.hospital import mpps_scu
from dicom_nodes.hospital.dicom_outbox import Kind
from dicom_nodes.hospital.outbox import Message, State
from dicom_nodes.hospital.scu import Peer, associate
from dicom_nodes.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_nodes.network import Timeouts, make_ae
from simulators.ris import SimulatedRis
from tests.exam_room import WAIT_S, Room, exam_room, journaled_refusal

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    with exam_room(tmp_path) as room:
        yield room


def test_the_mpps_goes_to_its_own_manager_and_the_worklist_to_the_ris(tmp_path: Path) -> None:
    """ris.mpps_host / ris.mpps_port: the MPPS manager split from the worklist provider."""
    with SimulatedRis("MPPS_MGR") as manager:
        host, port = manager.address
        overrides = {"ris.mpps_host": host, "ris.mpps_port": port, "ris.mpps_ae_title": "MPPS_MGR"}
        with exam_room(tmp_path, overrides=overrides) as room:
            order = room.open_order("L")  # listed from the worklist provider, the room's RIS
            assert manager.wait_for(
                lambda: manager.mpps(order.mpps_instance_uid) is not None, WAIT_S
            ), "the MPPS manager got no N-CREATE"
            assert room.ris.mpps_instances() == []
            assert room.ris.queries() >= 1


def test_our_associations_name_galacto_not_pynetdicom() -> None:
    """The Implementation Class UID and Version Name of our AEs, both ways (PS3.7 D.3.3.2)."""
    seen: list[tuple[str, str]] = []

    def requested(event: evt.Event) -> None:
        info = event.assoc.requestor
        seen.append((str(info.implementation_class_uid), str(info.implementation_version_name)))

    scp = make_ae("ANY_SCP", Timeouts())
    scp.add_supported_context(Verification)
    server = scp.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_REQUESTED, requested)]
    )
    try:
        peer = Peer("127.0.0.1", server.server_address[1], "ANY_SCP")
        with associate(peer, [scp.supported_contexts[0]]) as assoc:
            acceptor = assoc.acceptor
            assert str(acceptor.implementation_class_uid) == IMPLEMENTATION_CLASS_UID
        assert seen == [(IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)]
    finally:
        scp.shutdown()
    assert IMPLEMENTATION_CLASS_UID.startswith("1.2.826.0.1.3680043.10.1466.")
    assert (
        IMPLEMENTATION_VERSION_NAME.startswith("GALACTO_")
        and len(IMPLEMENTATION_VERSION_NAME) <= 16
    )


def test_the_units_worklist_returns_every_attribute_the_ris_gave(tmp_path: Path) -> None:
    with exam_room(tmp_path) as room:
        order = room.open_order("L")
        room.pass_checklist()
        step = room.offered(ExamState.PRE_CONTRAST).dataset
        ris = next(
            d for d in room.ris.worklist() if d.AccessionNumber == order.accession
        )  # the RIS's own item for the order
        (ris_sps,) = ris.ScheduledProcedureStepSequence
        assert step.ReferringPhysicianName == ris.ReferringPhysicianName == "Referrer^Rita^^Dr"
        assert step.RequestingPhysician == ris.RequestingPhysician == "Requester^Rhea^^Dr"
        (sps,) = step.ScheduledProcedureStepSequence
        assert sps.ScheduledPerformingPhysicianName == ris_sps.ScheduledPerformingPhysicianName
        assert sps.ScheduledProcedureStepLocation == ris_sps.ScheduledProcedureStepLocation
        assert sps.ScheduledStationName == ris_sps.ScheduledStationName
        assert [c.CodeValue for c in step.RequestedProcedureCodeSequence] == [
            c.CodeValue for c in ris.RequestedProcedureCodeSequence
        ]
        assert step.RequestedProcedureCodeSequence[0].CodeMeaning == (
            ris.RequestedProcedureCodeSequence[0].CodeMeaning
        )
        assert step.RequestedProcedurePriority == ris.RequestedProcedurePriority
        assert float(step.PatientWeight) == float(ris.PatientWeight)
        assert step.PregnancyStatus == ris.PregnancyStatus
        assert str(step.AccessionNumber) == order.accession
        assert step.StudyInstanceUID == ris.StudyInstanceUID
        # Galacto's own phase step, as before: its SPS ID names the phase.
        assert sps.ScheduledProcedureStepID == room.exam.sps_id(ExamState.PRE_CONTRAST)
        # ... and the unit copies the referring physician into its images.
        performed = room.perform(room.offered(ExamState.PRE_CONTRAST), ["L-CC"])
        assert performed.images[0].dataset.ReferringPhysicianName == "Referrer^Rita^^Dr"


# ---------------------------------------------------------------------- coercion on forward

DCENTVFY = shutil.which("dcentvfy")


def pacs_datasets(room: Room) -> list[Dataset]:
    return [o.read() for o in room.pacs.received()]


def dcentvfy_errors(datasets: list[Dataset], folder: Path) -> list[str]:
    """dicom3tools' entity check over the study's objects: its Error lines."""
    assert DCENTVFY is not None
    folder.mkdir()
    paths = []
    for n, ds in enumerate(datasets):
        path = folder / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    done = subprocess.run(
        [DCENTVFY, *paths], capture_output=True, text=True, timeout=60, check=False
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]


def request_of(ds: Dataset) -> Dataset:
    keyword = "ReferencedRequestSequence" if ds.Modality == "SR" else "RequestAttributesSequence"
    (item,) = ds[keyword].value
    return item


def content_study_uids(ds: Dataset) -> list[str]:
    found = []
    for item in ds.iterall():
        if item.keyword == "ContentSequence":
            for content in item.value:
                names = [c.CodeValue for c in content.get("ConceptNameCodeSequence", [])]
                if "110180" in names:
                    found.append(str(content.UID))
    return found


@pytest.mark.skipif(DCENTVFY is None, reason="dicom3tools (dcentvfy) not installed")
def test_the_forwarded_copies_carry_the_ris_identity(tmp_path: Path) -> None:
    with exam_room(tmp_path / "room") as room:
        accession = room.sim_room.schedule_order("L").accession_number
        room.script().run(accession)
        order = room.last_order()
        item = order.ris_item
        assert item is not None
        objects = pacs_datasets(room)
        assert len(objects) == 9  # five images, three unit dose reports, the exam's
        started = mpps_start(order)
        for ds in objects:
            assert ds.StudyInstanceUID == item.study_instance_uid
            assert ds.AccessionNumber == accession
            assert ds.StudyID == item.requested_procedure_id
            assert (ds.StudyDate, ds.StudyTime) == (
                started.strftime("%Y%m%d"),
                started.strftime("%H%M%S"),
            )
            assert ds.ReferringPhysicianName == item.referring_physician
            assert ds.PatientName == item.patient.name and ds.PatientID == item.patient.id
            request = request_of(ds)
            assert request.RequestedProcedureID == item.requested_procedure_id
            assert request.AccessionNumber == accession
            (pps,) = ds.ReferencedPerformedProcedureStepSequence
            assert pps.ReferencedSOPClassUID == "1.2.840.10008.3.1.2.3.3"
            assert pps.ReferencedSOPInstanceUID == order.mpps_instance_uid
            if ds.Modality == "SR":
                assert content_study_uids(ds) == [item.study_instance_uid]
                continue
            assert request.ScheduledProcedureStepID == item.sps_id  # the RIS's, not galacto's
            assert [c.CodeValue for c in request.ScheduledProtocolCodeSequence] == [
                c.value for c in item.protocol_codes
            ]
            (performed,) = ds.PerformedProtocolCodeSequence  # the phase left the request
            assert performed.CodingSchemeDesignator == "99GALACTO"
            assert performed.CodeValue in ("PRE", "POST1", "POST2")
            assert ds.SeriesDescription == performed.CodeMeaning
        phases = {ds.SeriesDescription for ds in objects if ds.Modality == "MG"}
        assert phases == {
            "Galactography pre contrast",
            "Galactography post injection 1",
            "Galactography post injection 2",
        }
        # The originals stay as the unit sent them: galacto's phase step, the unit's MPPS.
        kept = (room.data_dir / "objects" / order.study_instance_uid).glob("*.dcm")
        original = next(ds for ds in map(dcmread, sorted(kept)) if ds.Modality == "MG")
        assert original.RequestAttributesSequence[0].ScheduledProcedureStepID != item.sps_id
        unit_pps = original.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
        assert unit_pps != order.mpps_instance_uid
        # One Study ID, Date and Time across the study: dicom3tools finds no inconsistency.
        assert dcentvfy_errors(objects, tmp_path / "pacs") == []
        # The MPPS references every object the PACS holds.
        final = room.wait_for_final_mpps(order.mpps_instance_uid).dataset
        listed = {
            str(ref.ReferencedSOPInstanceUID)
            for series in final.PerformedSeriesSequence
            for keyword in (
                "ReferencedImageSequence",
                "ReferencedNonImageCompositeSOPInstanceSequence",
            )
            for ref in series.get(keyword, [])
        }
        assert listed == {str(ds.SOPInstanceUID) for ds in objects}
        assert final.ScheduledStepAttributesSequence[0].ScheduledProcedureStepID == item.sps_id
        (closing,) = room.entries(ORDER_AT_CLOSE, order.exam_id)
        assert closing.payload["status"] == "as opened"


def image_and_end(room: Room, views: tuple[str, ...] = ("L-CC", "L-ML")) -> None:
    """Pre-contrast images, then the exam ends (discontinued: the duct was not cannulated)."""
    room.pass_checklist()
    room.image(ExamState.PRE_CONTRAST, list(views))
    room.exam.discontinue(codes.DISCONTINUED_PATIENT_CONDITION.value, OPERATOR)


def test_an_unscheduled_exam_follows_the_ihe_unscheduled_case(room: Room) -> None:
    patient = Patient(name="Walk-In^Wanda", id="WALKIN-7", birth_date="19750505", sex="F")
    order = room.exam.register_unscheduled(patient, "L", OPERATOR)
    image_and_end(room)
    mpps = room.wait_for_final_mpps(order.mpps_instance_uid)
    room.wait_for_outbox_drained()
    objects = pacs_datasets(room)
    assert {ds.Modality for ds in objects} == {"MG", "SR"}
    for ds in objects:
        assert ds.AccessionNumber == ""
        assert "RequestAttributesSequence" not in ds and "ReferencedRequestSequence" not in ds
        assert ds.StudyInstanceUID == order.study_instance_uid
        assert ds.StudyID == order.exam_id[-16:]
        assert (ds.PatientName, ds.PatientID) == ("Walk-In^Wanda", "WALKIN-7")
        (pps,) = ds.ReferencedPerformedProcedureStepSequence
        assert pps.ReferencedSOPInstanceUID == order.mpps_instance_uid
    created = mpps.created
    assert created is not None
    assert (created.PatientName, created.PatientID) == ("Walk-In^Wanda", "WALKIN-7")
    (step,) = created.ScheduledStepAttributesSequence
    assert step.StudyInstanceUID == order.study_instance_uid and not step.AccessionNumber


def refresh_orders(room: Room) -> None:
    refresher = room.controller.refresher
    assert refresher is not None
    done = refresher.refreshes
    refresher.wake()
    assert refresher.wait_for_refreshes(done + 2, WAIT_S)  # one begun after the change


def test_a_ris_change_mid_exam_is_shown_and_the_copies_carry_the_order_at_the_close(
    room: Room,
) -> None:
    scheduled = room.sim_room.schedule_order("L")
    item = room.script().ris_order(scheduled.accession_number)
    order = room.exam.select_order(item, "L", OPERATOR)
    assert not any("RIS changed" in alert for alert in room.controller.alerts())
    # The RIS desk corrects the patient's name and the referring physician while she is imaged.
    corrected = dataclasses.replace(
        scheduled,
        patient=dataclasses.replace(scheduled.patient, name="Müller-Lüdenscheidt^Anna"),
        referring_physician="Other^Otto^^Dr",
    )
    room.ris.withdraw_order(scheduled.accession_number)
    room.ris.add_order(corrected)
    refresh_orders(room)
    (alert,) = [a for a in room.controller.alerts() if "RIS changed" in a]
    assert "patient's name" in alert and "referring physician" in alert
    image_and_end(room)
    room.wait_for_final_mpps(order.mpps_instance_uid)
    room.wait_for_outbox_drained()
    for ds in pacs_datasets(room):
        assert ds.PatientName == "Müller-Lüdenscheidt^Anna"
        assert ds.ReferringPhysicianName == "Other^Otto^^Dr"
        assert ds.SpecificCharacterSet == "ISO_IR 192"
    (closing,) = room.entries(ORDER_AT_CLOSE, order.exam_id)
    assert closing.payload["status"] == "changed"
    assert set(closing.payload["changes"]) == {"patient's name", "referring physician"}


def test_a_ris_cancelling_the_order_mid_exam_is_shown_and_the_copies_keep_it(room: Room) -> None:
    order = room.open_order("L")
    room.ris.withdraw_order(order.accession)
    refresh_orders(room)
    assert any("no longer lists" in alert for alert in room.controller.alerts())
    image_and_end(room)
    room.wait_for_outbox_drained()
    for ds in pacs_datasets(room):
        assert ds.AccessionNumber == order.accession
        assert request_of(ds).RequestedProcedureID == order.requested_procedure_id
    (closing,) = room.entries(ORDER_AT_CLOSE, order.exam_id)
    assert closing.payload["status"] == "no longer listed"


# ---------------------------------------------------------------------- MPPS timing


def final_set(room: Room, mpps_uid: str) -> Message:
    (final,) = [
        m
        for m in room.outbox.messages(mpps_uid)
        if m.kind == Kind.MPPS_SET
        and Dataset.from_json(m.payload_json or "{}").get("PerformedProcedureStepStatus")
        in ("COMPLETED", "DISCONTINUED")
    ]
    return final


def listed_in(mpps: Dataset) -> set[str]:
    return {
        str(ref.ReferencedSOPInstanceUID)
        for series in mpps.PerformedSeriesSequence
        for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")
        for ref in series.get(keyword, [])
    }


def test_the_final_mpps_waits_for_the_pacs_to_store_what_it_lists(room: Room) -> None:
    order = room.open_order("L")
    room.pacs.down()
    image_and_end(room)
    final = final_set(room, order.mpps_instance_uid)

    def ris_caught_up() -> bool:  # everything for the RIS but the held final N-SET is sent
        return all(
            m.state == State.SENT
            for m in room.outbox.messages(order.mpps_instance_uid)
            if m.id != final.id
        )

    assert room.outbox.wait_for(ris_caught_up, WAIT_S)
    assert room.outbox.run_once() >= 0  # one more round: the final N-SET stays held
    held = next(m for m in room.outbox.messages(order.mpps_instance_uid) if m.id == final.id)
    assert (held.state, held.attempts) == (State.PENDING, 0)
    mpps = room.ris.mpps(order.mpps_instance_uid)
    assert mpps is not None and not mpps.is_final
    listed = set(held.awaits)
    assert listed == listed_in(Dataset.from_json(held.payload_json or "{}"))

    room.pacs.up()
    mpps = room.wait_for_final_mpps(order.mpps_instance_uid)
    assert room.outbox.wait_for(
        lambda: final_set(room, order.mpps_instance_uid).state == State.SENT, WAIT_S
    )
    stores = {m.sop_instance_uid: m for m in room.outbox.messages() if m.kind == Kind.C_STORE}
    sent = final_set(room, order.mpps_instance_uid)
    assert sent.sent_at_s is not None
    for uid in listed:  # every object it lists was stored before the RIS heard of it
        stored = stores[uid].sent_at_s
        assert stored is not None and stored <= sent.sent_at_s
    assert listed_in(mpps.dataset) == listed
    assert room.entries("outbox-hold-expired") == []


def test_the_final_mpps_goes_anyway_after_the_hold_maximum(tmp_path: Path) -> None:
    with exam_room(tmp_path, overrides={"pacs.mpps_hold_max_s": 0.5}) as room:
        order = room.open_order("L")
        room.pacs.down()
        image_and_end(room)
        mpps = room.wait_for_final_mpps(order.mpps_instance_uid)  # the PACS is still down
        assert mpps.status == "DISCONTINUED"
        assert room.pacs_objects() == []
        (expired,) = room.entries("outbox-hold-expired", order.exam_id)
        listed = len(listed_in(mpps.dataset))
        assert expired.payload["missing"] == listed > 0
        assert expired.payload["sop_instance_uid"] == order.mpps_instance_uid


def test_complete_is_refused_while_the_units_step_is_in_progress(room: Room) -> None:
    room.to_cannulation()
    room.inject(0.1, ExamState.POST_INJECTION_1)
    step = room.offered(ExamState.POST_INJECTION_1)
    performed = room.unit.start_step(step)  # N-CREATE IN PROGRESS; the patient is on the unit
    images = room.unit.acquire(performed, ["L-CC-MAG"])
    room.unit.send_images(images)
    room.wait_until(
        lambda: room.counted(ExamState.POST_INJECTION_1) == 1, "the post-contrast image counted"
    )

    refused, _ = journaled_refusal(room.journal, lambda: room.exam.complete(OPERATOR))
    assert refused.reason == (
        f"the unit's step {performed.pps_id} is still in progress: close the patient on the unit"
    )
    assert refused.details == {"code": "unit-step-in-progress", "steps": performed.pps_id}
    assert room.exam.state is ExamState.POST_INJECTION_1

    # The unit cannot close it (say, it froze): the technologist completes with a reason.
    room.pacs.down()  # and the PACS is down: the final MPPS is held
    room.exam.complete(OPERATOR, override_reason="unit frozen, service called")
    assert room.exam.state is ExamState.COMPLETED
    (override,) = room.entries("override", room.order.exam_id)
    assert override.payload == {
        "what": "unit-step-in-progress",
        "steps": [performed.pps_id],
        "reason": "unit frozen, service called",
    }
    # The unit comes back and sends its dose report after Complete: the held MPPS takes it in.
    assert room.unit.send_rdsr(performed) == 0
    room.unit.complete_step(performed)
    rdsr = str(performed.rdsr.SOPInstanceUID) if performed.rdsr is not None else ""

    def listed_now() -> bool:
        room.exam.report()
        held = final_set(room, room.order.mpps_instance_uid)
        return rdsr in held.awaits

    room.wait_until(listed_now, "the late dose report in the held final MPPS")
    room.pacs.up()
    mpps = room.wait_for_final_mpps()
    assert rdsr in listed_in(mpps.dataset)
    assert room.pacs.wait_for(lambda: room.pacs.get(rdsr) is not None, WAIT_S)


# ---------------------------------------------------------------------- outbox recovery


def created_and_sent(room: Room, mpps_uid: str) -> None:
    def sent() -> bool:
        return any(
            m.kind == Kind.MPPS_CREATE and m.state == State.SENT
            for m in room.outbox.messages(mpps_uid)
        )

    assert room.outbox.wait_for(sent, WAIT_S), room.outbox.messages(mpps_uid)


def test_a_ris_that_lost_the_mpps_gets_it_again_once(room: Room) -> None:
    order = room.open_order("L")
    uid = order.mpps_instance_uid
    created_and_sent(room, uid)
    assert room.ris.forget_mpps(uid)  # the RIS was restored from last night's backup
    room.pass_checklist()
    room.image(ExamState.PRE_CONTRAST)  # the N-SET with the images: answered 0112H

    def recreated() -> bool:
        mpps = room.ris.mpps(uid)
        return mpps is not None and bool(mpps.dataset.PerformedSeriesSequence)

    assert room.ris.wait_for(recreated, WAIT_S)
    mpps = room.ris.mpps(uid)
    assert mpps is not None
    assert [m.operation for m in mpps.messages][:2] == ["N-CREATE", "N-SET"]  # created again
    assert mpps.created is not None and mpps.created.PerformedProcedureStepStatus == "IN PROGRESS"
    (recovered,) = room.entries("outbox-recovered", order.exam_id)
    assert recovered.payload["recovery"] == mpps_scu.RECREATED
    assert recovered.payload["outcome"] == "done"
    room.exam.discontinue(codes.DISCONTINUED_PATIENT_CONDITION.value, OPERATOR)
    assert room.wait_for_final_mpps(uid).status == "DISCONTINUED"


def test_a_second_0112_for_the_same_mpps_is_terminal_with_an_alert(room: Room) -> None:
    room.ris.faults.lose_created_mpps = True  # it loses everything it is sent
    order = room.open_order("L")
    room.pass_checklist()
    room.image(ExamState.PRE_CONTRAST)

    def failed() -> bool:
        return any(m.state == State.FAILED for m in room.outbox.messages(order.mpps_instance_uid))

    assert room.outbox.wait_for(failed, WAIT_S), room.outbox.messages(order.mpps_instance_uid)
    lost = next(m for m in room.outbox.messages(order.mpps_instance_uid) if m.state == "failed")
    assert (lost.kind, lost.last_status, lost.recovery) == (
        Kind.MPPS_SET,
        0x0112,
        mpps_scu.RECREATED,
    )
    creates = [m for m in room.ris.mpps_messages() if m.operation == "N-CREATE"]
    assert len(creates) == 2  # created, and re-created once: never a third time
    delivered = [
        e.payload for e in room.entries("dicom-delivered") if e.payload["outcome"] == "terminal"
    ]
    assert delivered and delivered[0]["status"] == "0112"
    assert any("RIS failed for good" in alert for alert in room.controller.alerts())


MG = "1.2.840.10008.5.1.4.1.1.1.2"


def test_an_image_the_pacs_refuses_for_its_syntax_is_resent_lossless_same_uid(room: Room) -> None:
    room.pacs.accept_only(MG, [JPEGLSLossless, RLELossless])  # no uncompressed MG images
    order = room.open_order("L")
    image_and_end(room)
    room.wait_for_outbox_drained()
    images = room.pacs_objects(MG)
    assert len(images) == 2
    for received in images:
        assert received.transfer_syntax_uid == JPEGLSLossless
        ds = received.read()
        ds.decompress(generate_instance_uid=False)
        study = room.data_dir / "objects" / order.study_instance_uid
        kept = dcmread(study / f"{received.sop_instance_uid}.dcm")
        assert ds.SOPInstanceUID == kept.SOPInstanceUID  # the same object, another encoding
        assert ds.PixelData == kept.PixelData  # lossless: every pixel as acquired
        assert ds.get("LossyImageCompression", "00") == "00"
    recovered = [e.payload for e in room.entries("outbox-recovered")]
    assert len(recovered) == 2
    assert all("JPEG-LS Lossless" in p["recovery"] for p in recovered)


def test_an_image_the_pacs_accepts_in_no_lossless_syntax_fails_with_an_alert(room: Room) -> None:
    room.pacs.accept_only(MG, [JPEGBaseline8Bit])  # lossy only: never for a mammogram
    image_and_end_of(room)
    stores = [m for m in room.outbox.messages() if m.sop_class_uid == MG]

    def settled() -> bool:
        return all(m.state == State.FAILED for m in room.outbox.messages() if m.sop_class_uid == MG)

    assert room.outbox.wait_for(settled, WAIT_S), room.outbox.messages()
    assert len(stores) == 2
    assert all(m.attempts == 1 for m in room.outbox.messages() if m.sop_class_uid == MG)
    assert room.pacs_objects(MG) == []
    failures = [m.last_error or "" for m in room.outbox.messages() if m.sop_class_uid == MG]
    assert all("no lossless syntax" in error for error in failures)
    assert any("PACS failed for good" in alert for alert in room.controller.alerts())


def image_and_end_of(room: Room) -> None:
    room.open_order("L")
    image_and_end(room)


def test_a_message_stuck_too_long_raises_an_alert_once(tmp_path: Path) -> None:
    with exam_room(tmp_path, overrides={"pacs.stuck_alert_s": 1.0}) as room:
        room.pacs.down()
        image_and_end_of(room)
        assert room.outbox.wait_for(lambda: bool(room.outbox.stuck(1.0)), WAIT_S)
        stuck = room.outbox.alert_stuck(1.0)
        # the objects for the PACS, and the final MPPS held for them
        assert {m.destination for m in stuck} <= {"pacs", "ris"} and stuck[0].destination == "pacs"

        def alerted(destination: str) -> list[Entry]:
            return [
                e for e in room.entries("outbox-stuck") if e.payload["destination"] == destination
            ]

        room.wait_until(lambda: bool(alerted("pacs")), "the stuck alert in the journal")
        room.outbox.alert_stuck(1.0)  # the outage goes on: said once, not at every look
        (entry,) = alerted("pacs")
        assert entry.payload["count"] >= 1 and entry.payload["age_s"] >= 1.0
        (alert,) = [a for a in room.controller.alerts() if "to the PACS not delivered for" in a]
        pacs_stuck = [m for m in room.outbox.stuck(1.0) if m.destination == "pacs"]
        assert alert.startswith(f"{len(pacs_stuck)} message(s) to the PACS")
