"""The request an exam fulfils: one value type for the images, the MPPS and the dose SR.

:class:`RequestedStep` is the RIS's Requested Procedure and the Scheduled Procedure Step being
performed, as the Request Attributes Macro (PS3.3 Table 10-9) of images and SRs and the
Scheduled Step Attributes Sequence of the MPPS (PS3.4 Table F.7.2-1) both carry it;
:func:`request_item` writes the attributes they share.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_nodes.datasets.codes import Code, code_sequence


@dataclass(frozen=True)
class RequestedStep:
    """The RIS's request and the scheduled step being performed (empty values: not known)."""

    accession_number: str = ""
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    requested_procedure_codes: tuple[Code, ...] = ()
    sps_id: str = ""
    sps_description: str = ""
    protocol_codes: tuple[Code, ...] = ()
    study_instance_uid: str = ""
    #: Detached Study Management SOP Instance, if the RIS gave one (MPPS only).
    referenced_study_uid: str = ""


def request_item(
    step: RequestedStep,
    *,
    study_instance_uid: str | None = None,
    procedure_codes: bool = True,
    scheduled_step: bool = True,
) -> Dataset:
    """One item naming the request: Accession Number, Study Instance UID (``study_instance_uid``
    when given, else the step's), Requested Procedure ID and Description, with its codes when
    ``procedure_codes``, and the Scheduled Procedure Step ID, Description and Protocol Codes
    when ``scheduled_step``."""
    item = Dataset()
    item.AccessionNumber = step.accession_number
    item.StudyInstanceUID = (
        step.study_instance_uid if study_instance_uid is None else study_instance_uid
    )
    item.RequestedProcedureID = step.requested_procedure_id
    item.RequestedProcedureDescription = step.requested_procedure_description
    if procedure_codes:
        item.RequestedProcedureCodeSequence = code_sequence(step.requested_procedure_codes)
    if scheduled_step:
        item.ScheduledProcedureStepID = step.sps_id
        item.ScheduledProcedureStepDescription = step.sps_description
        item.ScheduledProtocolCodeSequence = code_sequence(step.protocol_codes)
    return item
