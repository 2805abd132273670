"""IHE Scheduled Workflow identity end to end, against the simulated RIS and PACS (issue 11).

The controller in the simulated room (tests/exam_room.py): where the MPPS goes, what the unit's
worklist returns of the RIS order, the identity the forwarded objects carry, when the final MPPS
leaves, and how the outbox recovers from a RIS that lost the MPPS or a PACS that refuses a
transfer syntax. The same is proven against Orthanc in tests/interop/test_orthanc.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from acquisition.exam_machine import ExamState
from acquisition.hospital_identity import ORDER_AT_CLOSE, mpps_start
from dicom_nodes.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_nodes.network import Timeouts, make_ae
from dicom_nodes.scu import Peer, associate
from simulators.ris import SimulatedRis
from tests.exam_room import WAIT_S, Room, exam_room

pytestmark = pytest.mark.timeout(90)


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
            assert ds.PatientName == item.patient_name and ds.PatientID == item.patient_id
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
