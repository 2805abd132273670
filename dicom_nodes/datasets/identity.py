"""Who and what an exam is about, written one way into the images, the MPPS and the dose SR.

:class:`RequestedStep` is the RIS's Requested Procedure and the Scheduled Procedure Step being
performed, as the Request Attributes Macro (PS3.3 Table 10-9) of images and SRs and the
Scheduled Step Attributes Sequence of the MPPS (PS3.4 Table F.7.2-1) both carry it;
:func:`request_item` writes the attributes they share.

The patient and the study are read through protocols (:class:`PatientIdentification`,
:class:`PatientAndStudy`) rather than one record type, because each object is built from its own
context (the unit's images from the worklist, the controller's RDSR from the exam's order, the
forwarded copies from the identity journaled at the exam's close): :func:`set_patient` and
:func:`set_patient_and_study` write their modules the same way for all of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

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


class PatientIdentification(Protocol):
    """The patient, as every object of the exam names her (PS3.3 C.7.1.1; PS3.4 F.7.2-1)."""

    @property
    def patient_name(self) -> str: ...

    @property
    def patient_id(self) -> str: ...

    @property
    def patient_birth_date(self) -> str: ...

    @property
    def patient_sex(self) -> str: ...


class PatientAndStudy(PatientIdentification, Protocol):
    """What the Patient and General Study modules need (any context that carries it)."""

    @property
    def study_instance_uid(self) -> str: ...

    @property
    def accession_number(self) -> str: ...

    @property
    def study_id(self) -> str: ...

    @property
    def study_date(self) -> str: ...

    @property
    def study_time(self) -> str: ...

    @property
    def referring_physician_name(self) -> str: ...

    @property
    def study_description(self) -> str: ...


def set_patient(ds: Dataset, patient: PatientIdentification) -> None:
    """Patient's Name, ID, Birth Date and Sex: the Patient module's (PS3.3 C.7.1.1) and the
    MPPS's top-level patient attributes (PS3.4 Table F.7.2-1)."""
    ds.PatientName = patient.patient_name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.patient_birth_date
    ds.PatientSex = patient.patient_sex


def set_patient_and_study(
    ds: Dataset, context: PatientAndStudy, when: dt.datetime | None = None
) -> None:
    """Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) modules, on a new object or over an
    existing one (a Study Description the context does not have is removed).

    An empty Study Date/Time becomes ``when`` when given: a new object is dated by its content."""
    set_patient(ds, context)
    ds.StudyInstanceUID = context.study_instance_uid
    ds.StudyDate = context.study_date or (when.strftime("%Y%m%d") if when else "")
    ds.StudyTime = context.study_time or (when.strftime("%H%M%S") if when else "")
    ds.ReferringPhysicianName = context.referring_physician_name
    ds.StudyID = context.study_id
    ds.AccessionNumber = context.accession_number
    if context.study_description:
        ds.StudyDescription = context.study_description
    elif "StudyDescription" in ds:
        del ds.StudyDescription
