"""IHE Scheduled Workflow identity end to end, against the simulated RIS and PACS (issue 11).

The controller in the simulated room (tests/exam_room.py): where the MPPS goes, what the unit's
worklist returns of the RIS order, the identity the forwarded objects carry, when the final MPPS
leaves, and how the outbox recovers from a RIS that lost the MPPS or a PACS that refuses a
transfer syntax. The same is proven against Orthanc in tests/interop/test_orthanc.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from acquisition.exam_machine import ExamState
from dicom_nodes.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_nodes.network import Timeouts, make_ae
from dicom_nodes.scu import Peer, associate
from simulators.ris import SimulatedRis
from tests.exam_room import WAIT_S, exam_room

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
