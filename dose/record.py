"""One irradiation event as the dose log keeps it, and the sink the SCPs write it through.

The record follows ``dose.md`` §2: every number carries its unit in its name, already converted
(Organ Dose dGy → ``agd_reported_mgy``; MPPS tube current µA → ``tube_current_ma``). A record
comes from one *source* (image header, MPPS, RDSR); the sink reconciles records of the same
exposure into one row (by SOP Instance UID, Irradiation Event UID, or MPPS item).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class DoseError(Exception):
    """Base of the errors of the ``dose`` package."""


class SinkWriteError(DoseError, OSError):
    """The sink could not commit a record: the DIMSE request must not be acknowledged."""


class Source(StrEnum):
    """Where a record's numbers came from (dose.md §1; TID 10003 Source of Dose Information)."""

    IMAGE_HEADER = "image_header"
    MPPS = "mpps"
    RDSR = "rdsr"


@dataclass(frozen=True)
class ExposureRecord:
    """One exposure (irradiation event), all values optional except its source.

    Keys for reconciliation: ``sop_instance_uid`` (the image), ``irradiation_event_uid``
    (0008,3010 / TID 10003 113769) and ``(mpps_instance_uid, mpps_item_index)`` (position of
    the item in the MPPS Exposure Dose Sequence).
    """

    source: Source
    sop_instance_uid: str | None = None
    sop_class_uid: str | None = None
    irradiation_event_uid: str | None = None
    mpps_instance_uid: str | None = None
    mpps_item_index: int | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    accession: str | None = None
    sps_id: str | None = None
    station_ae: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    device_serial: str | None = None
    #: the unit's own Device UID (0018,1002) or its RDSR's Device Observer UID: never invented
    device_uid: str | None = None
    acquisition_datetime: str | None = None
    #: the unit's Timezone Offset From UTC (0008,0201, or the offset of a DT value), "+HHMM" /
    #: "-HHMM", when it sends one; ``acquisition_datetime`` stays the unit's local time
    timezone_offset_from_utc: str | None = None
    laterality: str | None = None
    view_code: str | None = None
    view_code_scheme: str | None = None
    view_modifier_codes: tuple[str, ...] = ()
    magnification_factor: float | None = None
    kvp: float | None = None
    exposure_uas: float | None = None
    tube_current_ma: float | None = None
    exposure_time_ms: float | None = None
    anode: str | None = None
    filter_material: str | None = None
    filter_thickness_mm: float | None = None
    grid: str | None = None
    focal_spot_mm: float | None = None
    compressed_thickness_mm: float | None = None
    compression_force_n: float | None = None
    hvl_mm_al: float | None = None
    hvl_source: str | None = None
    esak_mgy: float | None = None
    esak_reference_point: str | None = None
    agd_reported_mgy: float | None = None
    distance_source_to_detector_mm: float | None = None
    distance_source_to_entrance_mm: float | None = None
    exposure_control_mode: str | None = None
    comments: str | None = None
    #: Protocol Name (0018,1030) or the RDSR event's Acquisition Protocol (125203)
    acquisition_protocol: str | None = None
    #: the patient's age at the exam, from Patient's Age (0010,1010) or computed at ingest from
    #: the birth date and the acquisition date (the birth date itself is never kept)
    patient_age_years: int | None = None
    #: a glandularity the unit states (e.g. "30 % glandularity" in Comments on Radiation Dose)
    glandularity_pct: float | None = None
    #: why this is a physics/QA exposure (phantom patient ID, QA protocol), None for a patient
    qa_reason: str | None = None
    known_step: bool = True
    review_reasons: tuple[str, ...] = ()
    #: SOP Instance UIDs of other images of the same exposure: a For Presentation image's
    #: Source Image Sequence naming its For Processing image (older units send both without an
    #: Irradiation Event UID); the dose log reconciles by them as by the record's own image
    other_image_uids: tuple[str, ...] = ()

    def with_values(self, **changes: object) -> ExposureRecord:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


#: The measured values a record can carry (what reconciliation fills in and compares).
MEASURED_FIELDS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(ExposureRecord)
    if f.name
    not in {"source", "known_step", "review_reasons", "mpps_item_index", "other_image_uids"}
)


MAGNIFICATION_CODE = "399163009"  # CID 4015 Magnification (SCT)
#: Above this Estimated Radiographic Magnification Factor a view without the modifier code is
#: taken as magnified (contact views report 1.0–1.1: the breast sits just above the detector).
MAGNIFIED_FROM_FACTOR = 1.3


def magnified(values: Mapping[str, Any]) -> bool:
    """Whether a record or dose-log row (field → value) is a magnification view: the CID 4015
    modifier, or a magnification factor only magnification views have."""
    modifiers = values.get("view_modifier_codes") or ()
    if isinstance(modifiers, str):
        modifiers = modifiers.split(",")
    if MAGNIFICATION_CODE in modifiers:
        return True
    factor = values.get("magnification_factor")
    return isinstance(factor, int | float) and factor >= MAGNIFIED_FROM_FACTOR


class ExposureSink(Protocol):
    """Where the SCPs put exposures. ``record`` returns only once the records are durable.

    It raises :class:`SinkWriteError` (or any ``OSError``/``sqlite3.Error``) when they are not;
    the caller then answers the DIMSE request with a failure status.
    """

    def record(self, exposures: Sequence[ExposureRecord]) -> None: ...
