"""Who and what an exam is about, written one way into the images, the MPPS and the dose SR.

:class:`RequestedStep` is the RIS's Requested Procedure and the Scheduled Procedure Step being
performed, as the Request Attributes Macro (PS3.3 Table 10-9) of images and SRs and the
Scheduled Step Attributes Sequence of the MPPS (PS3.4 Table F.7.2-1) both carry it;
:func:`request_item` writes the attributes they share.

The patient is one value, :class:`Patient`, handed whole from the RIS's worklist item to the
exam's order, the unit's worklist, the MPPS, the dose SR and the forwarded copies;
:func:`set_patient` writes it, :func:`get_patient` reads it. The study is read through a
protocol (:class:`PatientAndStudy`) rather than one record type, because each object is built
from its own context (the unit's images from the worklist, the controller's RDSR from the exam's
order, the forwarded copies from the identity journaled at the exam's close):
:func:`set_patient_and_study` writes the Patient and General Study modules the same way for all
of them.

Journals and stores keep a patient as four flat keys (:data:`PATIENT_KEYS`), as they did before
the patient was one value, so that what was written then still loads:
:func:`flatten_patient` and :func:`unflatten_patient` map a record's ``patient`` to and from them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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


#: The keys a patient is journaled and stored under: Patient's Name, ID, Birth Date and Sex.
PATIENT_KEYS = ("patient_name", "patient_id", "patient_birth_date", "patient_sex")


@dataclass(frozen=True)
class Patient:
    """The patient, as every object of the exam names her: the Patient module's four attributes
    (PS3.3 C.7.1.1; PS3.4 Table F.7.2-1), as DICOM strings (empty: not known).

    ``name`` is a PN string (``Family^Given``), ``birth_date`` a DA (``YYYYMMDD``), ``sex``
    F, M, O or empty. Name, ID and birth date are left out of the ``repr``, so that a record
    holding a patient does not carry them into a log line.
    """

    name: str = field(default="", repr=False)
    id: str = field(default="", repr=False)
    birth_date: str = field(default="", repr=False)
    sex: str = ""

    def flat(self) -> dict[str, str]:
        """The patient under its journaled and stored keys (:data:`PATIENT_KEYS`)."""
        return dict(zip(PATIENT_KEYS, (self.name, self.id, self.birth_date, self.sex), strict=True))

    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> Patient:
        """Inverse of :meth:`flat` (an absent key is an empty value)."""
        name, patient_id, birth_date, sex = (str(values.get(key) or "") for key in PATIENT_KEYS)
        return cls(name, patient_id, birth_date, sex)


def flatten_patient(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (a record's fields, e.g. from :func:`dataclasses.asdict`) with its
    ``patient`` (a :class:`Patient` or the mapping ``asdict`` made of one) replaced, in its
    place, by the four :data:`PATIENT_KEYS`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key == "patient":
            patient = value if isinstance(value, Patient) else Patient(**value)
            out.update(patient.flat())
        else:
            out[key] = value
    return out


def unflatten_patient(values: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten_patient`: the :data:`PATIENT_KEYS` of ``values`` taken out
    and read into its ``patient``."""
    if "patient" in values:
        raise ValueError("a patient is read from its flat keys, not from a 'patient' entry")
    out = {key: value for key, value in values.items() if key not in PATIENT_KEYS}
    out["patient"] = Patient.from_flat(values)
    return out


class PatientAndStudy(Protocol):
    """What the Patient and General Study modules need (any context that carries it)."""

    @property
    def patient(self) -> Patient: ...

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


def set_patient(ds: Dataset, patient: Patient) -> None:
    """Patient's Name, ID, Birth Date and Sex: the Patient module's (PS3.3 C.7.1.1) and the
    MPPS's top-level patient attributes (PS3.4 Table F.7.2-1)."""
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex


def get_patient(ds: Dataset) -> Patient:
    """The patient a dataset names (the inverse of :func:`set_patient`; an absent or empty
    attribute is an empty value). A Patient's Name is read as its character set decodes it."""

    def text(keyword: str) -> str:
        value = ds.get(keyword)
        return "" if value is None else str(value)

    return Patient(
        text("PatientName"), text("PatientID"), text("PatientBirthDate"), text("PatientSex")
    )


def set_patient_and_study(
    ds: Dataset, context: PatientAndStudy, when: dt.datetime | None = None
) -> None:
    """Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1) modules, on a new object or over an
    existing one (a Study Description the context does not have is removed).

    An empty Study Date/Time becomes ``when`` when given: a new object is dated by its content."""
    set_patient(ds, context.patient)
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
