"""Exposure records from the three places a mammography unit reports dose (dose.md §1).

- :func:`from_image_header`: an MG image's header (PS3.3 C.8.11.7 Mammography Image module,
  C.8.7.8 X-Ray Acquisition Dose, C.8.7.10 X-Ray Filtration, C.8.7.9 X-Ray Generation, C.4.23
  X-Ray Grid/Radiation Dose via PS3.3 C.4.16).
- :func:`from_mpps`: the Radiation Dose module of an MPPS (PS3.3 C.4.16) with its Performed
  Series Sequence (C.4.15) linking exposures to images by order.
- :func:`from_rdsr`: an X-Ray Radiation Dose SR, one record per TID 10003 Irradiation Event
  container (PS3.16 TID 10003, 10003B).

The unit traps are handled here and only here: Organ Dose (0040,0316) is in dGy (×100 → mGy);
Entrance Dose in mGy is (0040,8302) — (0040,0302) is integer dGy, used only when 8302 is
absent; MPPS tube current (0018,8151) is in µA; RDSR Exposure (113736) is in µA·s, and the
vendor spellings of a unit outside UCUM (Hologic writes ``uAs``) are read as the unit they mean,
the mapping noted in the record's review reasons (:data:`VENDOR_UNIT_SPELLINGS`). Legacy SRT
codes are accepted on input and translated to SNOMED CT (``dicom_nodes.datasets.codes``).

The patient's age at the exam is kept (Patient's Age, else computed from the birth date and the
exam's date), never the birth date; a physics/QA exposure is recognised by the site's
:class:`~dose.plausibility.QaPatterns` (what matched is not kept). Plausibility is judged where
the records are written (:mod:`dose.plausibility`, applied by the dose log), not here.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from pydicom.dataset import Dataset

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.encoded_item import EncodedItem
from dicom_nodes.datasets.rdsr import CALCULATED_AGD_COMMENT, XRAY_RADIATION_DOSE_SR
from dose.plausibility import QaPatterns
from dose.record import DoseError, ExposureRecord, Source

log = logging.getLogger(__name__)


class DoseDataError(DoseError, ValueError):
    """A dataset whose dose content cannot be understood."""


SCT = "SCT"

#: Laterality of a breast or a laterality qualifier → Image Laterality (0020,0062) letter.
LATERALITY_BY_CODE: dict[str, str] = {
    codes.RIGHT_BREAST.value: "R",
    codes.LEFT_BREAST.value: "L",
    codes.LATERALITY_RIGHT.value: "R",
    codes.LATERALITY_LEFT.value: "L",
    codes.LATERALITY_BOTH.value: "B",
}

#: Anode Target Material (TID 10003 111632, CID 10016) codes → (0018,1191) terms.
ANODE_BY_CODE: dict[str, str] = {
    "71128006": "MOLYBDENUM",
    "59801003": "RHODIUM",
    "26194003": "TUNGSTEN",
}

#: Filter materials (CID 10006) codes → (0018,7050) terms.
FILTER_BY_CODE: dict[str, str] = {
    "71128006": "MOLYBDENUM",
    "59801003": "RHODIUM",
    "41967008": "SILVER",
    "12503006": "ALUMINUM",
    "26194003": "TUNGSTEN",
}

#: UCUM unit → factor to the record's unit, per quantity.
DOSE_TO_MGY = {"mGy": 1.0, "dGy": 100.0, "Gy": 1000.0, "uGy": 0.001, "cGy": 10.0}
CHARGE_TO_UAS = {"uA.s": 1.0, "mA.s": 1000.0, "A.s": 1e6}
CURRENT_TO_MA = {"mA": 1.0, "uA": 0.001, "A": 1000.0}
TIME_TO_MS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "min": 60000.0}
LENGTH_TO_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 0.001}
VOLTAGE_TO_KV = {"kV": 1.0, "V": 0.001}
FORCE_TO_N = {"N": 1.0, "daN": 10.0, "kN": 1000.0}

#: Unit spellings outside UCUM that real units write, and the UCUM unit they mean (dose.md §1:
#: Hologic Selenia Dimensions writes the Exposure (113736) unit as ``uAs``). Read, never
#: dropped; the mapping is noted in the record's review reasons.
VENDOR_UNIT_SPELLINGS = {"uAs": "uA.s", "mAs": "mA.s", "As": "A.s"}

#: Image header: each record field and where it may come from, best first, with its factor.
HEADER_NUMBERS: dict[str, tuple[tuple[str, float], ...]] = {
    "kvp": (("KVP", 1.0),),
    "exposure_uas": (("ExposureInuAs", 1.0), ("ExposureInmAs", 1000.0), ("Exposure", 1000.0)),
    "tube_current_ma": (
        ("XRayTubeCurrentInmA", 1.0),
        ("XRayTubeCurrent", 1.0),
        ("XRayTubeCurrentInuA", 0.001),
    ),
    "exposure_time_ms": (
        ("ExposureTimeInms", 1.0),
        ("ExposureTime", 1.0),
        ("ExposureTimeInuS", 0.001),
    ),
    "filter_thickness_mm": (("FilterThicknessMinimum", 1.0), ("FilterThicknessMaximum", 1.0)),
    "focal_spot_mm": (("FocalSpots", 1.0),),
    "compressed_thickness_mm": (("BodyPartThickness", 1.0),),
    "compression_force_n": (("CompressionForce", 1.0),),
    "hvl_mm_al": (("HalfValueLayer", 1.0),),
    "esak_mgy": (("EntranceDoseInmGy", 1.0),),
    "agd_reported_mgy": (("OrganDose", 100.0),),  # Organ Dose is dGy (PS3.3 C.8.7.8)
    "magnification_factor": (("EstimatedRadiographicMagnificationFactor", 1.0),),
    "distance_source_to_detector_mm": (("DistanceSourceToDetector", 1.0),),
    "distance_source_to_entrance_mm": (("DistanceSourceToEntrance", 1.0),),
}

HEADER_TEXTS: dict[str, str] = {
    "device_uid": "DeviceUID",
    "acquisition_protocol": "ProtocolName",
    "sop_instance_uid": "SOPInstanceUID",
    "sop_class_uid": "SOPClassUID",
    "irradiation_event_uid": "IrradiationEventUID",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "accession": "AccessionNumber",
    "manufacturer": "Manufacturer",
    "model": "ManufacturerModelName",
    "device_serial": "DeviceSerialNumber",
    "laterality": "ImageLaterality",
    "anode": "AnodeTargetMaterial",
    "filter_material": "FilterMaterial",
    "grid": "Grid",
    "exposure_control_mode": "ExposureControlMode",
    "comments": "CommentsOnRadiationDose",
}

#: MPPS Exposure Dose Sequence item (PS3.3 C.4.16, Table C.4-16): field → (keyword, factor).
MPPS_ITEM_NUMBERS: dict[str, tuple[tuple[str, float], ...]] = {
    "kvp": (("KVP", 1.0),),
    "tube_current_ma": (("XRayTubeCurrentInuA", 0.001), ("XRayTubeCurrent", 1.0)),
    "exposure_time_ms": (("ExposureTime", 1.0), ("ExposureTimeInms", 1.0)),
    "exposure_uas": (("ExposureInuAs", 1.0), ("ExposureInmAs", 1000.0)),
    "compressed_thickness_mm": (("BodyPartThickness", 1.0),),
    # Not in Table C.4-16, but some units put the per-exposure dose in the item: same units.
    "agd_reported_mgy": (("OrganDose", 100.0),),
    "esak_mgy": (("EntranceDoseInmGy", 1.0),),
}

#: Step-level distances of the MPPS Radiation Dose module, copied to each exposure.
MPPS_STEP_NUMBERS: dict[str, tuple[tuple[str, float], ...]] = {
    "distance_source_to_detector_mm": (("DistanceSourceToDetector", 1.0),),
    "distance_source_to_entrance_mm": (("DistanceSourceToEntrance", 1.0),),
}

MPPS_ITEM_TEXTS: dict[str, str] = {
    "filter_material": "FilterMaterial",
    "comments": "CommentsOnRadiationDose",
}


#: What the extraction reads: a pydicom Dataset, or the same read from its encoded elements.
Item = Dataset | EncodedItem


def _first(value: Any) -> Any:
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return value[0] if len(value) else None
    return value


def _element(ds: Item, keyword: str) -> Any:
    """The (first) value of an element, None when absent or empty; DoseDataError if unreadable."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
    except Exception as exc:  # pydicom raises many kinds on a corrupt element
        raise DoseDataError(f"unreadable {keyword}") from exc
    if value is None or value == "":
        return None
    return _first(value)


def _number(ds: Item, choices: Sequence[tuple[str, float]]) -> float | None:
    for keyword, factor in choices:
        value = _element(ds, keyword)
        if value is None:
            continue
        try:
            return float(value) * factor
        except (TypeError, ValueError) as exc:
            raise DoseDataError(f"{keyword} is not a number") from exc
    return None


def _text(ds: Item, keyword: str) -> str | None:
    value = _element(ds, keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _sequence_item(ds: Item, keyword: str) -> Item | None:
    try:
        sequence = ds.get(keyword)
    except Exception as exc:
        raise DoseDataError(f"unreadable {keyword}") from exc
    return sequence[0] if sequence else None


def _code_of(item: Item) -> str | None:
    """A code item's value, legacy SRT codes translated to SNOMED CT (``codes.Code``)."""
    try:
        return codes.Code.from_item(item).value
    except codes.CodeError:
        return _text(item, "CodeValue")


def _datetime(ds: Item, dt_keyword: str, date_keyword: str, time_keyword: str) -> str | None:
    """DT, or DA + TM, as an ISO-8601-like string (no time zone invented; a DT's own offset
    is read by :func:`timezone_offset`)."""
    raw = _text(ds, dt_keyword)
    if raw is None:
        date = _text(ds, date_keyword)
        if date is None:
            return None
        raw = date + (_text(ds, time_keyword) or "")
    return _dicom_dt_to_iso(raw)


#: The "&ZZXX" suffix of a DT value (PS3.5 Table 6.2-1) and Timezone Offset From UTC (0008,0201).
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})$")


def _dicom_dt_to_iso(raw: str) -> str:
    """A DT (or DA + TM) as ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` in the unit's local time: the
    offset suffix of a DT is left out here (it is the record's ``timezone_offset_from_utc``)."""
    raw = _OFFSET.sub("", raw.strip())
    date, time = raw[:8], raw[8:]
    iso = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else date
    if time:
        iso += f"T{time[:2]}:{time[2:4] or '00'}:{time[4:] or '00'}"
    return iso


def timezone_offset(ds: Item, *raw_datetimes: str | None) -> tuple[str | None, list[str]]:
    """The unit's offset from UTC, ``+HHMM`` / ``-HHMM``: the offset suffix of a DT value it
    sent, else its Timezone Offset From UTC (0008,0201); None when it sent neither (none is
    invented). An offset that is not one (``+2500``) is named in the review reasons."""
    candidates = [_OFFSET.search(raw.strip()) for raw in raw_datetimes if raw]
    found = next((m.group(0) for m in candidates if m is not None), None)
    if found is None:
        found = _text(ds, "TimezoneOffsetFromUTC")
    if found is None:
        return None, []
    match = _OFFSET.fullmatch(found.strip())
    if match is None or int(match.group(2)) > 14 or int(match.group(3)) >= 60:
        return None, [f"{UNREADABLE} timezone_offset_from_utc: {found!r} is not +HHMM/-HHMM"]
    return match.group(0), []


#: "30 % glandularity", "glandularity 30 %": a glandularity in Comments on Radiation Dose.
_GLANDULARITY = re.compile(
    r"(\d+(?:\.\d+)?)\s*%\s*gland|gland\w*\W{0,3}(\d+(?:\.\d+)?)\s*%", re.IGNORECASE
)


def glandularity_in(comment: str | None) -> float | None:
    """The glandularity a unit states in a comment, or None."""
    match = _GLANDULARITY.search(comment or "")
    if match is None:
        return None
    return float(match.group(1) or match.group(2))


_AGE_UNITS_YEARS = {"Y": 1.0, "M": 1 / 12, "W": 7 / 365.25, "D": 1 / 365.25}


def _date(text: str | None) -> dt.date | None:
    if not text or len(text.strip()) < 8:
        return None
    try:
        return dt.datetime.strptime(text.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def patient_age_years(ds: Item, exam_date: str | None) -> tuple[int | None, list[str]]:
    """The patient's age at the exam in whole years: Patient's Age (0010,1010, AS such as
    ``045Y``), else from Patient's Birth Date and the exam's date. The birth date is read
    here and nowhere kept."""
    age = _text(ds, "PatientAge")
    if age is not None:
        match = re.fullmatch(r"(\d{3})([DWMY])", age)
        if match is None:
            return None, [f"{UNREADABLE} patient_age_years: Patient's Age {age!r} is not AS"]
        return int(int(match.group(1)) * _AGE_UNITS_YEARS[match.group(2)]), []
    born, on = _date(_text(ds, "PatientBirthDate")), _date(exam_date)
    if born is None or on is None:
        return None, []
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return years, []


def _qa_reason(
    qa: QaPatterns | None, ds: Item, protocol_keywords: Sequence[str], *more: str | None
) -> str | None:
    if qa is None:
        return None
    return qa.reason(
        patient_texts=(_text(ds, "PatientID"), _text(ds, "PatientName")),
        protocol_texts=(*(_text(ds, k) for k in protocol_keywords), *more),
    )


#: Descriptions that may name a physics/QA protocol, per dataset kind.
HEADER_PROTOCOL_TEXTS = (
    "ProtocolName",
    "SeriesDescription",
    "StudyDescription",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
)
MPPS_PROTOCOL_TEXTS = ("PerformedProcedureStepDescription", "PerformedProcedureTypeDescription")
RDSR_PROTOCOL_TEXTS = ("StudyDescription", "SeriesDescription")


# --------------------------------------------------------------------------- any object

DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
DIGITAL_MAMMOGRAPHY_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
#: The MG image classes whose header reports an exposure (PS3.3 A.26).
MG_IMAGE_CLASSES = frozenset(
    {DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION, DIGITAL_MAMMOGRAPHY_FOR_PROCESSING}
)
#: X-Ray Radiation Dose Report document title (TID 10001).
RDSR_TITLE = "113701"
#: Image Type value of a tomosynthesis unit's synthesised 2D image (PS3.3 C.8.11.7.1.4).
GENERATED_2D = "GENERATED_2D"


class NotADoseObject(DoseDataError):
    """An object that reports no exposure by its kind (the message says what it is)."""


def is_dose_report(ds: Item) -> bool:
    """An X-Ray Radiation Dose SR whose document title is the dose report's (TID 10001)."""
    title = _sequence_item(ds, "ConceptNameCodeSequence")
    return title is not None and _text(title, "CodeValue") == RDSR_TITLE


def not_an_exposure(ds: Item) -> str | None:
    """Why an MG image shows no exposure of its own, or None: a tomosynthesis unit's
    synthesised 2D image (Image Type GENERATED_2D) is computed from the projections, whose
    dose the unit reports with them; counting it would count the breast's dose twice."""
    try:
        image_type = [str(value).strip().upper() for value in ds.get("ImageType") or ()]
    except Exception as exc:
        raise DoseDataError("unreadable Image Type") from exc
    if GENERATED_2D in image_type:
        return "synthesised 2D image (Image Type GENERATED_2D): not an exposure"
    return None


def exposures_in(
    ds: Item, *, station_ae: str | None = None, qa: QaPatterns | None = None
) -> list[ExposureRecord]:
    """Every exposure an object reports: one for an MG image (none for a synthesised 2D
    image), one per irradiation event for an X-Ray Radiation Dose SR. Raises
    :class:`NotADoseObject` for any other object and :class:`DoseDataError` for one whose dose
    content cannot be understood."""
    ds = EncodedItem.of(ds)
    sop_class = _text(ds, "SOPClassUID")
    if sop_class in MG_IMAGE_CLASSES:
        if not_an_exposure(ds) is not None:
            return []
        return [from_image_header(ds, station_ae=station_ae, qa=qa)]
    if sop_class == XRAY_RADIATION_DOSE_SR:
        if not is_dose_report(ds):
            raise NotADoseObject("an X-Ray Radiation Dose SR that is not a dose report (TID 10001)")
        return from_rdsr(ds, station_ae=station_ae, qa=qa)
    raise NotADoseObject(f"not an MG image nor an X-Ray Radiation Dose SR (SOP class {sop_class})")


def for_processing_sources(ds: Item) -> tuple[str, ...]:
    """The For Processing images a For Presentation MG image was made from (its Source Image
    Sequence, 0008,2112): older units send both images of one exposure without an Irradiation
    Event UID, and this is how they are known to be one exposure."""
    if _text(ds, "SOPClassUID") != DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION:
        return ()
    try:
        items = list(ds.get("SourceImageSequence") or [])
    except Exception as exc:
        raise DoseDataError("unreadable Source Image Sequence") from exc
    return tuple(
        uid
        for item in items
        if _text(item, "ReferencedSOPClassUID") == DIGITAL_MAMMOGRAPHY_FOR_PROCESSING
        and (uid := _text(item, "ReferencedSOPInstanceUID"))
    )


# --------------------------------------------------------------------------- image header


#: Prefix of the review reason given to a value the header carries but that cannot be read.
UNREADABLE = "unreadable"


def _readable_numbers(
    ds: Item, table: dict[str, tuple[tuple[str, float], ...]]
) -> tuple[dict[str, Any], list[str]]:
    """The numbers of ``table`` read from ``ds``; an unreadable one is left empty and named in
    the review reasons (``"unreadable …"``): the exposure is kept, the physicist told."""
    values: dict[str, Any] = {}
    reasons: list[str] = []
    for name, choices in table.items():
        try:
            values[name] = _number(ds, choices)
        except DoseDataError as exc:
            values[name] = None
            reasons.append(f"{UNREADABLE} {name}: {exc}")
    return values, reasons


def from_image_header(
    ds: Item, *, station_ae: str | None = None, qa: QaPatterns | None = None
) -> ExposureRecord:
    """The exposure an MG image reports in its header (dose.md §1; PS3.3 C.8.7.8, C.8.11.7).

    The exposure happened whatever its header says: a value that is present but unreadable is
    left empty and named in ``review_reasons`` (``"unreadable …"``), never a reason to drop the
    exposure. Raises :class:`DoseDataError` only when the dataset has no SOP Instance UID (there
    is nothing to tie the exposure to).
    """
    ds = EncodedItem.of(ds)
    values, reasons = _readable_numbers(ds, HEADER_NUMBERS)
    values.update({f: _text(ds, kw) for f, kw in HEADER_TEXTS.items()})
    if not values["sop_instance_uid"]:
        raise DoseDataError("no SOP Instance UID")
    if values["esak_mgy"] is None:
        entrance_dgy = _number(ds, (("EntranceDose", 1.0),))
        if entrance_dgy:  # integer dGy: coarse, only when 8302 is absent (dose.md §1)
            values["esak_mgy"] = entrance_dgy * 100.0
            reasons.append("entrance dose from integer dGy (0040,0302)")
    if values["hvl_mm_al"] is not None:
        values["hvl_source"] = "reported"
    values["acquisition_datetime"] = _datetime(
        ds, "AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime"
    )
    values["timezone_offset_from_utc"], offset_reasons = timezone_offset(
        ds, _text(ds, "AcquisitionDateTime")
    )
    reasons += offset_reasons
    values["other_image_uids"] = for_processing_sources(ds)
    view = _sequence_item(ds, "ViewCodeSequence")
    if view is not None:
        values["view_code"] = _code_of(view)
        values["view_code_scheme"] = SCT if values["view_code"] else None
        modifiers = view.get("ViewModifierCodeSequence") or []
        values["view_modifier_codes"] = tuple(
            code for code in (_code_of(item) for item in modifiers) if code
        )
    pps = _sequence_item(ds, "ReferencedPerformedProcedureStepSequence")
    if pps is not None:
        values["mpps_instance_uid"] = _text(pps, "ReferencedSOPInstanceUID")
    request = _sequence_item(ds, "RequestAttributesSequence")
    if request is not None:
        values["sps_id"] = _text(request, "ScheduledProcedureStepID")
        values["accession"] = values["accession"] or _text(request, "AccessionNumber")
    exam_date = _text(ds, "AcquisitionDate") or (_text(ds, "AcquisitionDateTime") or "")[:8]
    values["patient_age_years"], age_reasons = patient_age_years(
        ds, exam_date or _text(ds, "ContentDate") or _text(ds, "StudyDate")
    )
    values["glandularity_pct"] = glandularity_in(values["comments"])
    values["qa_reason"] = _qa_reason(
        qa,
        ds,
        HEADER_PROTOCOL_TEXTS,
        _text(request, "RequestedProcedureDescription") if request is not None else None,
        _text(request, "ScheduledProcedureStepDescription") if request is not None else None,
    )
    record = ExposureRecord(source=Source.IMAGE_HEADER, station_ae=station_ae, **values)
    return record.with_values(review_reasons=(*reasons, *age_reasons))


# --------------------------------------------------------------------------- MPPS


def referenced_image_uids(mpps: Item) -> list[str]:
    """SOP Instance UIDs of the images in the Performed Series Sequence, in order (C.4.15)."""
    uids: list[str] = []
    for series in mpps.get("PerformedSeriesSequence") or []:
        for image in series.get("ReferencedImageSequence") or []:
            uid = _text(image, "ReferencedSOPInstanceUID")
            if uid:
                uids.append(uid)
    return uids


def from_mpps(
    mpps: Item,
    *,
    mpps_instance_uid: str,
    station_ae: str | None = None,
    qa: QaPatterns | None = None,
) -> list[ExposureRecord]:
    """Exposure records from an MPPS's Radiation Dose module (PS3.3 C.4.16).

    The Exposure Dose Sequence (0040,030E) has one item per exposure; when its length equals
    the number of referenced images, item *i* is taken to be image *i* (the unit lists both in
    acquisition order). Otherwise items and images are recorded separately, so nothing is
    linked on a guess. Step totals (Organ Dose, Entrance Dose) are per step, not per image:
    see :func:`step_totals`.
    """
    step = _sequence_item(mpps, "ScheduledStepAttributesSequence")
    distances, step_reasons = _readable_numbers(mpps, MPPS_STEP_NUMBERS)
    age, age_reasons = patient_age_years(mpps, _text(mpps, "PerformedProcedureStepStartDate"))
    step_reasons += age_reasons
    common: dict[str, Any] = {
        "patient_age_years": age,
        "qa_reason": _qa_reason(
            qa,
            mpps,
            MPPS_PROTOCOL_TEXTS,
            *(
                (
                    _text(step, "RequestedProcedureDescription"),
                    _text(step, "ScheduledProcedureStepDescription"),
                )
                if step is not None
                else ()
            ),
        ),
        "mpps_instance_uid": mpps_instance_uid,
        "station_ae": _text(mpps, "PerformedStationAETitle") or station_ae,
        "study_instance_uid": _text(step, "StudyInstanceUID") if step else None,
        "accession": _text(step, "AccessionNumber") if step else None,
        "sps_id": _text(step, "ScheduledProcedureStepID") if step else None,
        **distances,
    }
    try:
        items = list(mpps.get("ExposureDoseSequence") or [])
    except Exception as exc:
        raise DoseDataError("unreadable Exposure Dose Sequence") from exc
    images = referenced_image_uids(mpps)
    linked = len(items) == len(images)
    records = []
    for index, item in enumerate(items):
        values, reasons = _readable_numbers(item, MPPS_ITEM_NUMBERS)
        values.update({f: _text(item, kw) for f, kw in MPPS_ITEM_TEXTS.items()})
        if linked:
            values["sop_instance_uid"] = images[index]
        record = ExposureRecord(source=Source.MPPS, mpps_item_index=index, **common, **values)
        records.append(record.with_values(review_reasons=(*step_reasons, *reasons)))
    if not linked:
        records.extend(
            ExposureRecord(source=Source.MPPS, sop_instance_uid=uid, **common) for uid in images
        )
    return records


#: Per-step figures of the MPPS Radiation Dose module: name → (keyword, factor).
MPPS_STEP_TOTALS: dict[str, tuple[tuple[str, float], ...]] = {
    "total_exposures": (("TotalNumberOfExposures", 1.0),),
    "organ_dose_mgy": (("OrganDose", 100.0),),
    "entrance_dose_mgy": (("EntranceDoseInmGy", 1.0),),
}


def step_totals(mpps: Item) -> dict[str, float | int | None]:
    """Per-step dose figures of the Radiation Dose module, converted (PS3.3 C.4.16); an
    unreadable one is empty (the exposures carry their own values and flags)."""
    values, _ = _readable_numbers(mpps, MPPS_STEP_TOTALS)
    return values


# --------------------------------------------------------------------------- RDSR

CONCEPT_IRRADIATION_EVENT = "113706"


def _concept(item: Item) -> str | None:
    name = _sequence_item(item, "ConceptNameCodeSequence")
    return _code_of(name) if name is not None else None


def _measured(item: Item, units: dict[str, float]) -> tuple[float | None, str | None]:
    """A NUM content item's value in the record's unit (PS3.3 C.18.1 Numeric Measurement), and
    the vendor spelling of its unit that was read as UCUM (:data:`VENDOR_UNIT_SPELLINGS`)."""
    measured = _sequence_item(item, "MeasuredValueSequence")
    if measured is None:
        return None, None
    value = _number(measured, (("NumericValue", 1.0),))
    unit_item = _sequence_item(measured, "MeasurementUnitsCodeSequence")
    unit = _text(unit_item, "CodeValue") if unit_item is not None else None
    if value is None:
        return None, None
    spelling = None
    if unit not in units and unit in VENDOR_UNIT_SPELLINGS:
        spelling, unit = unit, VENDOR_UNIT_SPELLINGS[unit]
    if unit not in units:
        raise DoseDataError(f"unexpected unit {unit!r}")
    return value * units[unit], spelling


def _concept_code(item: Item) -> str | None:
    code = _sequence_item(item, "ConceptCodeSequence")
    return _code_of(code) if code is not None else None


def _children(item: Item) -> list[Item]:
    return list(item.get("ContentSequence") or [])


def _events(items: Sequence[Item]) -> Iterator[Item]:
    """The Irradiation Event containers (113706) of a content tree, at any depth; an event's
    own content is left for :func:`_event_record` to read (once: parsing is the cost)."""
    for item in items:
        if _concept(item) == CONCEPT_IRRADIATION_EVENT:
            yield item
        else:
            yield from _events(_children(item))


def _walk(items: Sequence[Item]) -> Iterator[Item]:
    for item in items:
        yield item
        yield from _walk(_children(item))


NumHandler = tuple[str, dict[str, float]]

#: TID 10003 numeric rows: concept code → (record field, unit table).
RDSR_NUMBERS: dict[str, NumHandler] = {
    "111631": ("agd_reported_mgy", DOSE_TO_MGY),
    "111636": ("esak_mgy", DOSE_TO_MGY),
    "113736": ("exposure_uas", CHARGE_TO_UAS),
    "113733": ("kvp", VOLTAGE_TO_KV),
    "113734": ("tube_current_ma", CURRENT_TO_MA),
    "113824": ("exposure_time_ms", TIME_TO_MS),
    "111634": ("hvl_mm_al", LENGTH_TO_MM),
    "111633": ("compressed_thickness_mm", LENGTH_TO_MM),
    "111647": ("compression_force_n", FORCE_TO_N),
    "113750": ("distance_source_to_detector_mm", LENGTH_TO_MM),  # TID 10003C
    "113766": ("focal_spot_mm", LENGTH_TO_MM),
    "113758": ("filter_thickness_mm", LENGTH_TO_MM),  # X-Ray Filter Thickness Maximum
    "113773": ("filter_thickness_mm", LENGTH_TO_MM),  # X-Ray Filter Thickness Minimum
}

#: TID 10003 coded rows: concept code → (record field, value mapping or None for the code).
RDSR_CODES: dict[str, tuple[str, dict[str, str] | None]] = {
    "111632": ("anode", ANODE_BY_CODE),
    "113757": ("filter_material", FILTER_BY_CODE),
    "111031": ("view_code", None),
    "113780": ("esak_reference_point", None),
    "123014": ("laterality", LATERALITY_BY_CODE),  # Target Region: a lateralised breast
    "272741003": ("laterality", LATERALITY_BY_CODE),  # Laterality qualifier (SRT G-C171)
}

MULTI_VALUE_FIELDS = ("kvp", "tube_current_ma")

#: TID 1021 Device Participant rows (the Irradiating Device of an event): concept → field.
DEVICE_PARTICIPANT_TEXTS: dict[str, str] = {
    "113878": "manufacturer",
    "113879": "model",
    "113880": "device_serial",
}
DEVICE_ROLE_IN_PROCEDURE = "113876"
DEVICE_OBSERVER_UID = "121012"
OBSERVER_TYPE = "121005"
OBSERVER_TYPE_DEVICE = "121007"
ACQUISITION_PROTOCOL = "125203"
COMMENT = "121106"


def _event_record(
    container: Item, common: dict[str, Any], station_ae: str | None, qa: QaPatterns | None
) -> ExposureRecord:
    values: dict[str, Any] = {}
    reasons: list[str] = []
    modifiers: list[str] = []
    comments: list[str] = []
    device: dict[str, Any] | None = None
    for item in _walk(_children(container)):
        concept = _concept(item)
        if concept is None:
            continue
        if concept == DEVICE_ROLE_IN_PROCEDURE:  # TID 1021: this event's irradiating device
            device = dict.fromkeys((*DEVICE_PARTICIPANT_TEXTS.values(), "device_uid"))
        elif device is not None and concept in DEVICE_PARTICIPANT_TEXTS:
            device[DEVICE_PARTICIPANT_TEXTS[concept]] = _text(item, "TextValue")
        elif device is not None and concept == DEVICE_OBSERVER_UID:
            device["device_uid"] = _text(item, "UID")
        elif concept == ACQUISITION_PROTOCOL:
            values["acquisition_protocol"] = _text(item, "TextValue")
        elif concept == COMMENT:
            comments.append(_text(item, "TextValue") or "")
        elif concept in RDSR_NUMBERS:
            field_name, units = RDSR_NUMBERS[concept]
            try:
                value, spelling = _measured(item, units)
            except DoseDataError as exc:  # the event happened: kept, the value flagged
                reasons.append(f"{UNREADABLE} {field_name}: {exc}")
                continue
            if value is None:
                continue
            if spelling is not None:
                note = f"{field_name}: unit {spelling!r} read as UCUM "
                note += f"{VENDOR_UNIT_SPELLINGS[spelling]!r} (vendor spelling)"
                if note not in reasons:
                    reasons.append(note)
            if field_name in values and field_name in MULTI_VALUE_FIELDS:
                reasons.append(f"several {field_name} values (last kept)")
            if field_name == "filter_thickness_mm" and field_name in values:
                continue  # the first of min/max given wins; they are equal for a flat filter
            values[field_name] = value
        elif concept in RDSR_CODES:
            field_name, mapping = RDSR_CODES[concept]
            code = _concept_code(item)
            if code is None and mapping is None:
                code = _text(item, "TextValue")  # e.g. 113780 given as TEXT by older units
            if code is None:
                continue
            mapped = mapping.get(code) if mapping is not None else code
            if mapped is not None and field_name not in values:
                values[field_name] = mapped
        elif concept == "111032":  # Image View Modifier
            code = _concept_code(item)
            if code:
                modifiers.append(code)
        elif concept == "113769":  # Irradiation Event UID
            values["irradiation_event_uid"] = _text(item, "UID")
        elif concept == "111526":  # DateTime Started
            raw = _text(item, "DateTime")
            values["acquisition_datetime"] = _dicom_dt_to_iso(raw) if raw else None
            if raw and _OFFSET.search(raw.strip()):
                offset, offset_reasons = timezone_offset(item, raw)
                values["timezone_offset_from_utc"] = offset
                reasons += offset_reasons
    if "view_code" in values:
        values["view_code_scheme"] = SCT
    if "hvl_mm_al" in values:
        values["hvl_source"] = "reported"
    if any(CALCULATED_AGD_COMMENT in comment for comment in comments):
        values.pop("agd_reported_mgy", None)  # galacto's Dance figure: not the unit's dose
    protocol = values.get("acquisition_protocol")
    values["qa_reason"] = common["qa_reason"] or (
        qa.reason(patient_texts=(), protocol_texts=(protocol,)) if qa is not None else None
    )
    fields = {**common, **(device or {}), **values}
    record = ExposureRecord(
        source=Source.RDSR,
        station_ae=station_ae,
        view_modifier_codes=tuple(modifiers),
        **fields,
    )
    return record.with_values(review_reasons=tuple(reasons))


def from_rdsr(
    ds: Item, *, station_ae: str | None = None, qa: QaPatterns | None = None
) -> list[ExposureRecord]:
    """One record per Irradiation Event X-Ray Data container (TID 10003, 113706) of an RDSR.

    A value that cannot be read (not a number, a unit we do not know) is left empty and named
    in the event's review reasons, like an image header's. Raises :class:`DoseDataError` only
    when the SR has no content tree.
    """
    ds = EncodedItem.of(ds)
    if "ContentSequence" not in ds:
        raise DoseDataError("SR without content")
    pps = _sequence_item(ds, "ReferencedPerformedProcedureStepSequence")
    request = _sequence_item(ds, "ReferencedRequestSequence")
    content = _children(ds)
    age, age_reasons = patient_age_years(ds, _text(ds, "StudyDate") or _text(ds, "ContentDate"))
    offset, offset_reasons = timezone_offset(ds)
    age_reasons += offset_reasons
    common = {
        "timezone_offset_from_utc": offset,
        "study_instance_uid": _text(ds, "StudyInstanceUID"),
        "accession": _text(ds, "AccessionNumber")
        or (_text(request, "AccessionNumber") if request is not None else None),
        "mpps_instance_uid": _text(pps, "ReferencedSOPInstanceUID") if pps is not None else None,
        # The document's equipment and device observer: the unit, in a unit's own report (an
        # event's TID 1021 Device Participant names its irradiating device instead).
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "device_serial": _text(ds, "DeviceSerialNumber"),
        "device_uid": _observer_device_uid(content),
        "patient_age_years": age,
        "qa_reason": _qa_reason(qa, ds, RDSR_PROTOCOL_TEXTS),
    }
    records = [_event_record(item, common, station_ae, qa) for item in _events(content)]
    if age_reasons:
        records = [r.with_values(review_reasons=(*r.review_reasons, *age_reasons)) for r in records]
    return records


def _observer_device_uid(items: Sequence[Item]) -> str | None:
    """The Device Observer UID (121012) of the document's observer context (its root content
    ``items``), when the observer is a device (TID 1002/1004 at the root)."""
    is_device = any(
        _concept(item) == OBSERVER_TYPE and _concept_code(item) == OBSERVER_TYPE_DEVICE
        for item in items
    )
    if not is_device:
        return None
    for item in items:
        if _concept(item) == DEVICE_OBSERVER_UID:
            return _text(item, "UID")
    return None
