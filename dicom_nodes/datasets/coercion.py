"""Attribute coercion of the objects forwarded to the PACS (IHE RAD TF-2x Appendix A).

IHE Scheduled Workflow asks the worklist, the images and the MPPS to agree: a PACS or RIS
matches images to the order and to the performed step by the Study Instance UID, the Accession
Number, the Request Attributes Sequence and the Referenced Performed Procedure Step Sequence.
The unit copies what the controller's worklist gave it — the controller's own phase step (its
SPS ID names the phase, e.g. ``ACC123-POST1``), and its own MPPS toward the controller — so the
copy the controller forwards is coerced (:func:`coerce`) to the identity the hospital knows
(:class:`StudyIdentity`):

==================================================  ===============================================
Attribute                                           Value on the forwarded copy
==================================================  ===============================================
Patient's Name, Patient ID, Birth Date, Sex         the RIS order's (the registration, unscheduled)
Study Instance UID (also inside sequences and the   the RIS order's (unscheduled: the exam's own)
SR content item 110180)
Accession Number                                    the RIS order's (empty, unscheduled)
Study ID                                            the Requested Procedure ID (unscheduled: the
                                                    exam ID)
Study Date, Study Time                              the start of galacto's MPPS, on every object
Study Description                                   the Requested Procedure Description
Referring Physician's Name                          the RIS order's (empty, unscheduled)
Request Attributes Sequence (images), Referenced    one item: the RIS's Requested Procedure ID and
Request Sequence (SR)                               Description/Codes, SPS ID and Description,
                                                    Scheduled Protocol Code Sequence, Accession
                                                    Number, Study Instance UID (removed,
                                                    unscheduled)
Referenced Performed Procedure Step Sequence,       galacto's MPPS at the RIS (class
                                                    1.2.840.10008.3.1.2.3.3)
Performed Procedure Step ID/Start Date/Start Time
Performed Protocol Code Sequence, Series            the exam's phase (images only): it leaves the
Description                                         Request Attributes, which carries the RIS's
                                                    step
==================================================  ===============================================

Every other attribute, the pixel data and the SOP Instance UID stay as the unit wrote them; the
original is kept as received and only the copy is coerced. Text is re-encoded in UTF-8
(ISO_IR 192) when a coerced value does not fit the object's character set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom_nodes.datasets.codes import Code, code_sequence
from dicom_nodes.datasets.identity import (
    Patient,
    RequestedStep,
    flatten_patient,
    request_item,
    set_patient_and_study,
    unflatten_patient,
)
from dicom_nodes.datasets.references import MPPS_SOP_CLASS, sop_reference

#: SR Study Instance UID concept (DCM 110180), e.g. in the RDSR's Scope of Accumulation.
STUDY_INSTANCE_UID_CONCEPT = "110180"
UTF8 = "ISO_IR 192"
#: Coding scheme of galacto's phase codes (PS3.16 8.2: a private scheme starts with 99).
PHASE_SCHEME = "99GALACTO"


@dataclass(frozen=True)
class Phase:
    """One phase of the exam, as its images name it (Performed Protocol, Series Description)."""

    code: Code
    description: str


@dataclass(frozen=True)
class StudyIdentity:
    """What every forwarded object of one exam carries (see the module docstring)."""

    study_instance_uid: str
    study_id: str
    study_date: str  #: DA: the start of galacto's MPPS
    study_time: str  #: TM
    patient: Patient
    mpps_instance_uid: str
    pps_id: str
    accession_number: str = ""
    referring_physician: str = ""
    study_description: str = ""
    request: RequestedStep | None = None  #: None: the unscheduled case (IHE RAD TF-1 4.3)
    #: The phase of each of galacto's own steps, by the SPS ID the unit copied into its images.
    phases: Mapping[str, Phase] = field(default_factory=dict)
    #: Study Instance UIDs that stand for this study on the unit's side (the order's, when the
    #: RIS changed it during the exam): replaced wherever they occur.
    replaces: tuple[str, ...] = ()

    @property
    def referring_physician_name(self) -> str:
        """Referring Physician's Name, as :class:`~dicom_nodes.datasets.identity.PatientAndStudy`
        reads it (the journaled field keeps its name)."""
        return self.referring_physician

    def to_json(self) -> dict[str, Any]:
        """The identity as journaled (``order-at-close``), the patient under its flat keys."""
        out = flatten_patient(asdict(self))
        out["phases"] = {sps: asdict(phase) for sps, phase in self.phases.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyIdentity:
        """Inverse of :meth:`to_json`."""
        values = unflatten_patient(data)
        request = values.get("request")
        if request is not None:
            request = dict(request)
            for name in ("requested_procedure_codes", "protocol_codes"):
                request[name] = tuple(Code(**c) for c in request.get(name, ()))
            values["request"] = RequestedStep(**request)
        values["phases"] = {
            sps: Phase(Code(**p["code"]), p["description"])
            for sps, p in (values.get("phases") or {}).items()
        }
        values["replaces"] = tuple(values.get("replaces", ()))
        return cls(**values)


def phase_of(ds: Dataset, identity: StudyIdentity) -> Phase | None:
    """The exam phase an object was acquired in, from the SPS ID the unit copied."""
    for item in ds.get("RequestAttributesSequence") or ():
        phase = identity.phases.get(str(item.get("ScheduledProcedureStepID", "") or ""))
        if phase is not None:
            return phase
    return None


def coerce(ds: Dataset, identity: StudyIdentity) -> list[str]:
    """Coerce ``ds`` in place to ``identity``; the keywords whose value changed, in order.

    Images get the Request Attributes Sequence; SR documents (which have no such attribute)
    the Referenced Request Sequence. The phase is read before the request is replaced.
    """
    before = _snapshot(ds)
    phase = phase_of(ds, identity)
    old_study = str(ds.get("StudyInstanceUID", "") or "")
    _prepare_character_set(ds, identity)
    old = {old_study, *identity.replaces} - {"", identity.study_instance_uid}
    nested = _replace_study_uid(ds, old, identity.study_instance_uid)
    set_patient_and_study(ds, identity)
    is_sr = str(ds.get("Modality", "")) == "SR" or "ContentSequence" in ds
    keyword = "ReferencedRequestSequence" if is_sr else "RequestAttributesSequence"
    if identity.request is None:
        if keyword in ds:
            delattr(ds, keyword)
    else:
        setattr(ds, keyword, Sequence([_request_item(identity, sr=is_sr)]))
    pps = sop_reference(MPPS_SOP_CLASS, identity.mpps_instance_uid)
    ds.ReferencedPerformedProcedureStepSequence = Sequence([pps])
    if not is_sr:  # Performed Procedure Step Information (C.4.15) of the image's step
        ds.PerformedProcedureStepID = identity.pps_id
        ds.PerformedProcedureStepStartDate = identity.study_date
        ds.PerformedProcedureStepStartTime = identity.study_time
    if phase is not None:
        ds.PerformedProtocolCodeSequence = code_sequence((phase.code,))
        ds.SeriesDescription = phase.description
    after = _snapshot(ds)
    changed = [k for k in after if before.get(k) != after[k]]
    return [*changed, "ContentSequence"] if nested and "ContentSequence" in ds else changed


def _request_item(identity: StudyIdentity, *, sr: bool) -> Dataset:
    request = identity.request
    assert request is not None
    item = request_item(
        request, study_instance_uid=identity.study_instance_uid, scheduled_step=not sr
    )
    if sr:  # Referenced Request Sequence (PS3.3 C.17.2): these are Type 2
        item.ReferencedStudySequence = []
        item.PlacerOrderNumberImagingServiceRequest = ""
        item.FillerOrderNumberImagingServiceRequest = ""
    return item


def _replace_study_uid(ds: Dataset, old: set[str], new: str) -> int:
    """Every Study Instance UID in ``old`` in a sequence item (evidence, requests), and every
    SR UIDREF content item naming one, or naming the concept 110180, becomes ``new``; how many
    nested values changed (the top-level attribute is set by the caller)."""
    changed = 0
    for item in _datasets(ds):
        if item is not ds and str(item.get("StudyInstanceUID", "") or "") in old:
            item.StudyInstanceUID = new
            changed += 1
        if item.get("ValueType") == "UIDREF" and "UID" in item:
            concepts = item.get("ConceptNameCodeSequence") or ()
            names_study = any(
                str(c.get("CodeValue", "")) == STUDY_INSTANCE_UID_CONCEPT for c in concepts
            )
            if (names_study or str(item.UID) in old) and str(item.UID) != new:
                item.UID = new
                changed += 1
    return changed


def _datasets(ds: Dataset) -> Iterator[Dataset]:
    """``ds`` and every sequence item below it (pixel data is never decoded)."""
    yield ds
    for element in ds.iterall():
        if element.VR == "SQ":
            yield from element.value


def _prepare_character_set(ds: Dataset, identity: StudyIdentity) -> None:
    """Decode the object's text, and switch it to UTF-8 when a coerced value would not fit
    its character set (every text element is then written again in UTF-8)."""
    if all(text.isascii() for text in _strings(identity.to_json())):
        return
    current = ds.get("SpecificCharacterSet")
    if current == UTF8:
        return
    ds.decode()  # every text element to str, read in the object's own character set
    ds.SpecificCharacterSet = UTF8


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for part in value.values():
            yield from _strings(part)
    elif isinstance(value, list | tuple):
        for part in value:
            yield from _strings(part)


def _snapshot(ds: Dataset) -> dict[str, str]:
    """A comparable form of the attributes :func:`coerce` may change."""
    keywords = (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDescription",
        "RequestAttributesSequence",
        "ReferencedRequestSequence",
        "ReferencedPerformedProcedureStepSequence",
        "PerformedProcedureStepID",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProtocolCodeSequence",
        "SeriesDescription",
    )
    return {k: str(ds.get(k)) for k in keywords}
