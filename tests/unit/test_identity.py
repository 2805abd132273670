"""The one request type of images, MPPS and SR (dicom_nodes/datasets/identity.py)."""

from __future__ import annotations

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import RequestedStep, request_item

STEP = RequestedStep(
    accession_number="ACC1",
    requested_procedure_id="RP1",
    requested_procedure_description="Galactography right",
    requested_procedure_codes=(codes.DUCTOGRAPHY,),
    sps_id="SPS1",
    sps_description="Galactography",
    protocol_codes=(codes.VIEW_CC,),
    study_instance_uid="1.2.3",
)


def test_the_request_attributes_of_an_image() -> None:
    item = request_item(STEP, study_instance_uid="1.2.9")
    assert (item.AccessionNumber, item.StudyInstanceUID, item.ScheduledProcedureStepID) == (
        "ACC1",
        "1.2.9",
        "SPS1",
    )
    assert codes.Code.from_item(item.RequestedProcedureCodeSequence[0]) == codes.DUCTOGRAPHY
    assert codes.Code.from_item(item.ScheduledProtocolCodeSequence[0]) == codes.VIEW_CC


def test_an_sr_s_request_has_no_scheduled_step_and_an_mpps_no_procedure_codes() -> None:
    sr = request_item(STEP, scheduled_step=False)
    assert sr.StudyInstanceUID == "1.2.3" and "ScheduledProcedureStepID" not in sr
    mpps = request_item(STEP, procedure_codes=False)
    assert "RequestedProcedureCodeSequence" not in mpps and mpps.ScheduledProcedureStepID == "SPS1"
