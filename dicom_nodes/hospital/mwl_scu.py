"""Modality Worklist SCU toward the RIS (PS3.4 Annex K; IHE RAD-5 Query Modality Worklist).

Two query shapes, as IHE Scheduled Workflow names them:

* the **broad query**: Scheduled Station AE Title, Modality MG and a date range of the
  Scheduled Procedure Step Start Date (PS3.4 K.6.1.2.1 matching keys inside the Scheduled
  Procedure Step Sequence);
* the **patient query**: Patient ID, Patient's Name and/or Accession Number.

Every query asks for the same return keys (PS3.4 Table K.6-1, dicom.md §3) and each response
becomes a typed :class:`WorklistItem`, with Patient's Name decoded per the Specific Character
Set the SCP returned (ISO_IR 100, ISO_IR 192, ISO 2022 …: every set pydicom knows). A cap
bounds the number of items: once it is reached a C-CANCEL is sent (PS3.7 9.3.2.3)
and the remaining responses are drained, so the association ends cleanly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from dicom_nodes.datasets.codes import Code, CodeError
from dicom_nodes.datasets.identity import (
    Patient,
    flatten_patient,
    get_patient,
    unflatten_patient,
)
from dicom_nodes.hospital.scu import DimseError, Peer, ScuError, associate, category, status_of

log = logging.getLogger(__name__)

_DATE = r"\d{8}"
_DATE_RANGE = re.compile(rf"^(?:{_DATE}|{_DATE}-|-{_DATE}|{_DATE}-{_DATE})$")
#: Patient Pregnancy Status (0010,21C0) enumerated values, PS3.3 C.7.1.4.
PREGNANCY_STATUS = {
    1: "not pregnant",
    2: "possibly pregnant",
    3: "definitely pregnant",
    4: "unknown",
}


class WorklistError(ScuError):
    """The worklist SCP answered the C-FIND with a failure status."""

    def __init__(self, status: int, comment: str = "") -> None:
        self.status = status
        super().__init__(f"worklist query failed with status 0x{status:04X} {comment}".strip())


def check_date_range(text: str) -> str:
    """Validate a DA matching value: ``YYYYMMDD``, ``A-B``, ``A-`` or ``-B`` (PS3.4 C.2.2.2.5).

    Each date must be a real calendar date. Returns the text unchanged, raises ValueError.
    """
    if text == "":
        return text
    if not _DATE_RANGE.match(text):
        raise ValueError(f"expected YYYYMMDD or YYYYMMDD-YYYYMMDD, got {text!r}")
    for part in filter(None, text.split("-")):
        dt.datetime.strptime(part, "%Y%m%d")
    first, _, last = text.partition("-")
    if first and last and first > last:
        raise ValueError(f"date range ends before it starts: {text!r}")
    return text


def date_range(start: dt.date, end: dt.date) -> str:
    """A DA range matching value covering ``start`` to ``end`` inclusive."""
    return f"{start:%Y%m%d}-{end:%Y%m%d}" if start != end else f"{start:%Y%m%d}"


@dataclass(frozen=True)
class WorklistQuery:
    """Matching keys of one worklist query; empty means universal matching."""

    station_ae: str = ""
    modality: str = "MG"
    sps_date: str = ""
    patient_id: str = ""
    patient_name: str = ""
    accession_number: str = ""

    def __post_init__(self) -> None:
        check_date_range(self.sps_date)

    @classmethod
    def broad(
        cls, station_ae: str, start: dt.date, end: dt.date, modality: str = "MG"
    ) -> WorklistQuery:
        """IHE RAD-5 broad query: this station, this modality, these days."""
        return cls(station_ae=station_ae, modality=modality, sps_date=date_range(start, end))

    @classmethod
    def patient(
        cls, *, patient_id: str = "", patient_name: str = "", accession_number: str = ""
    ) -> WorklistQuery:
        """IHE RAD-5 patient query: by Patient ID, name (wildcards allowed) or accession."""
        return cls(
            modality="",
            patient_id=patient_id,
            patient_name=patient_name,
            accession_number=accession_number,
        )


@dataclass(frozen=True)
class WorklistItem:
    """One Scheduled Procedure Step as the RIS returned it (PS3.4 Table K.6-1)."""

    patient: Patient
    accession_number: str
    requested_procedure_id: str
    requested_procedure_description: str
    requested_procedure_codes: tuple[Code, ...]
    study_instance_uid: str
    sps_id: str
    sps_description: str
    sps_start_date: str
    sps_start_time: str
    station_ae: str
    modality: str
    protocol_codes: tuple[Code, ...]
    scheduled_performing_physician: str = ""
    requested_contrast_agent: str = ""
    pre_medication: str = ""
    allergies: tuple[str, ...] = ()
    pregnancy_status: int | None = None
    medical_alerts: tuple[str, ...] = ()
    priority: str = ""
    referring_physician: str = ""
    specific_character_set: tuple[str, ...] = field(default=())
    requesting_physician: str = ""
    sps_location: str = ""
    scheduled_station_name: str = ""
    patient_weight_kg: float | None = None
    #: The character set assumed because the response named none (``--fallback-charset``).
    assumed_character_set: str = ""

    @property
    def sps_start(self) -> dt.datetime | None:
        """SPS Start Date/Time as a naive local datetime; None when the date is absent."""
        if len(self.sps_start_date) != 8:
            return None
        digits = (self.sps_start_time.split(".")[0] + "000000")[:6]
        try:
            return dt.datetime.strptime(self.sps_start_date + digits, "%Y%m%d%H%M%S")
        except ValueError:
            return None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view (codes as value/scheme/meaning objects, the patient under its
        flat keys: :data:`~dicom_nodes.datasets.identity.PATIENT_KEYS`)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name.endswith("_codes"):
                value = [_code_dict(code) for code in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        start = self.sps_start
        out["sps_start"] = start.isoformat() if start else None
        return flatten_patient(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorklistItem:
        """Inverse of :meth:`as_dict` (the local store keeps items as JSON)."""
        data = unflatten_patient(data)
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if name not in data:
                continue
            value = data[name]
            if name.endswith("_codes"):
                value = tuple(Code(c["value"], c["scheme"], c["meaning"]) for c in value)
            elif isinstance(value, list):
                value = tuple(value)
            values[name] = value
        return cls(**values)


def _code_dict(code: Code) -> dict[str, str]:
    return {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}


def _empty_code_item() -> Dataset:
    item = Dataset()
    item.CodeValue = ""
    item.CodingSchemeDesignator = ""
    item.CodeMeaning = ""
    return item


def _needs_unicode(values: Iterable[str]) -> bool:
    return any(not value.isascii() for value in values)


def build_query(query: WorklistQuery) -> Dataset:
    """The C-FIND identifier: the matching keys of ``query`` plus every return key we use.

    PS3.4 K.6.1.2: matching keys of the Scheduled Procedure Step go inside the one item of
    the Scheduled Procedure Step Sequence (0040,0100); return keys are sent zero-length.
    Specific Character Set (0008,0005) is sent as ISO_IR 192 only when a matching value is
    not plain ASCII (PS3.5 6.1.2.5.3).
    """
    ds = Dataset()
    if _needs_unicode([query.patient_name, query.patient_id, query.accession_number]):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = query.patient_name
    ds.PatientID = query.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.Allergies = ""
    ds.PregnancyStatus = None
    ds.MedicalAlerts = ""
    ds.AccessionNumber = query.accession_number
    ds.ReferringPhysicianName = ""
    ds.RequestingPhysician = ""
    ds.PatientWeight = None
    ds.RequestedProcedureID = ""
    ds.RequestedProcedureDescription = ""
    ds.RequestedProcedureCodeSequence = Sequence([_empty_code_item()])
    ds.RequestedProcedurePriority = ""
    ds.StudyInstanceUID = ""

    sps = Dataset()
    sps.ScheduledStationAETitle = query.station_ae
    sps.ScheduledProcedureStepStartDate = query.sps_date
    sps.ScheduledProcedureStepStartTime = ""
    sps.Modality = query.modality
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = ""
    sps.ScheduledProcedureStepID = ""
    sps.ScheduledProtocolCodeSequence = Sequence([_empty_code_item()])
    sps.RequestedContrastAgent = ""
    sps.PreMedication = ""
    sps.ScheduledProcedureStepLocation = ""
    sps.ScheduledStationName = ""
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def _texts(ds: Dataset, keyword: str) -> tuple[str, ...]:
    element = ds.get(keyword)
    if element is None or element == "":
        return ()
    if isinstance(element, str):
        return (element,)
    return tuple(str(value) for value in element if str(value))


def _codes(ds: Dataset, keyword: str) -> tuple[Code, ...]:
    """The usable items of a code sequence (legacy SRT codes canonicalised, PS3.3 8.8)."""
    codes = []
    for item in ds.get(keyword) or ():
        try:
            codes.append(Code.from_item(item))
        except CodeError:
            log.debug("skipping an incomplete item of %s", keyword)
    return tuple(codes)


def item_from_dataset(ds: Dataset, fallback_character_set: str = "") -> WorklistItem:
    """Decode one C-FIND response identifier into a :class:`WorklistItem`.

    Text is decoded per the Specific Character Set of the response (PS3.5 6.1): pydicom
    converts each element on first access with the data set's character set, sequence items
    inheriting it — the result of ``Dataset.decode()`` without converting the elements we
    never read. A response without Specific Character Set is decoded with
    ``fallback_character_set`` when one is given (a RIS that omits it, such as DCMTK's
    wlmscpfs as shipped, while its files hold UTF-8 or Latin-1), else with the default
    repertoire. A missing Scheduled Procedure Step Sequence leaves the step's fields empty.
    """
    assumed = ""
    if fallback_character_set and not ds.get("SpecificCharacterSet"):
        # pydicom decodes each element on first access with the character set recorded when
        # the identifier was read: record the fallback there, before any text is read.
        implicit_vr, little_endian = ds.original_encoding
        ds.set_original_encoding(
            implicit_vr, little_endian, convert_encodings(fallback_character_set)
        )
        assumed = fallback_character_set
    steps = ds.get("ScheduledProcedureStepSequence") or [Dataset()]
    sps = steps[0]
    pregnancy = ds.get("PregnancyStatus")
    weight = ds.get("PatientWeight")
    charset = ds.get("SpecificCharacterSet") or ()
    return WorklistItem(
        patient=get_patient(ds),
        accession_number=_text(ds, "AccessionNumber"),
        requested_procedure_id=_text(ds, "RequestedProcedureID"),
        requested_procedure_description=_text(ds, "RequestedProcedureDescription"),
        requested_procedure_codes=_codes(ds, "RequestedProcedureCodeSequence"),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        sps_id=_text(sps, "ScheduledProcedureStepID"),
        sps_description=_text(sps, "ScheduledProcedureStepDescription"),
        sps_start_date=_text(sps, "ScheduledProcedureStepStartDate"),
        sps_start_time=_text(sps, "ScheduledProcedureStepStartTime"),
        station_ae=_text(sps, "ScheduledStationAETitle"),
        modality=_text(sps, "Modality"),
        protocol_codes=_codes(sps, "ScheduledProtocolCodeSequence"),
        scheduled_performing_physician=_text(sps, "ScheduledPerformingPhysicianName"),
        requested_contrast_agent=_text(sps, "RequestedContrastAgent"),
        pre_medication=_text(sps, "PreMedication"),
        allergies=_texts(ds, "Allergies"),
        pregnancy_status=int(pregnancy) if pregnancy not in (None, "") else None,
        medical_alerts=_texts(ds, "MedicalAlerts"),
        priority=_text(ds, "RequestedProcedurePriority"),
        referring_physician=_text(ds, "ReferringPhysicianName"),
        specific_character_set=(charset,) if isinstance(charset, str) else tuple(charset),
        requesting_physician=_text(ds, "RequestingPhysician"),
        sps_location=_text(sps, "ScheduledProcedureStepLocation"),
        scheduled_station_name=_text(sps, "ScheduledStationName"),
        patient_weight_kg=float(weight) if weight not in (None, "") else None,
        assumed_character_set=assumed,
    )


@dataclass(frozen=True)
class WorklistResult:
    """The items of one query; ``truncated`` when the cap was reached and C-CANCEL sent."""

    items: tuple[WorklistItem, ...]
    truncated: bool
    final_status: int


def find_worklist(
    peer: Peer,
    query: WorklistQuery,
    *,
    max_results: int = 5000,
    fallback_character_set: str = "",
) -> WorklistResult:
    """Query ``peer`` (IHE RAD-5) and return at most ``max_results`` items; a response without
    Specific Character Set is read in ``fallback_character_set`` (see :func:`item_from_dataset`).

    Raises :class:`~dicom_nodes.hospital.scu.AssociationError` when no association can be made,
    :class:`~dicom_nodes.hospital.scu.DimseError` when the SCP goes silent or aborts, and
    :class:`WorklistError` on a failure status.
    """
    if max_results < 1:
        raise ValueError("max_results must be at least 1")
    identifier = build_query(query)
    contexts = [build_context(ModalityWorklistInformationFind)]
    with associate(peer, contexts) as assoc:
        items, truncated, final = _collect(
            assoc.send_c_find(identifier, ModalityWorklistInformationFind),
            max_results,
            fallback_character_set,
            cancel=lambda: assoc.send_c_cancel(1, query_model=ModalityWorklistInformationFind),
        )
    log.info(
        "worklist query to %s: %d item(s)%s",
        peer.describe(),
        len(items),
        " (capped, C-CANCEL sent)" if truncated else "",
    )
    return WorklistResult(tuple(items), truncated, final)


def _collect(
    responses: Iterator[tuple[Dataset, Dataset | None]],
    max_results: int,
    fallback_character_set: str,
    cancel: Any,
) -> tuple[list[WorklistItem], bool, int]:
    items: list[WorklistItem] = []
    truncated = False
    for status_ds, identifier in responses:
        status = status_of(status_ds)
        kind = category(status)
        if kind == "Pending":
            if truncated:
                continue  # drained after our C-CANCEL
            if identifier is not None:
                items.append(item_from_dataset(identifier, fallback_character_set))
            if len(items) >= max_results:
                truncated = True
                cancel()
            continue
        if kind in ("Success", "Cancel", "Warning"):
            return items, truncated, status
        raise WorklistError(status, _text(status_ds, "ErrorComment"))
    raise DimseError("the worklist SCP ended the query without a final response")
