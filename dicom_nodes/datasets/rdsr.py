"""X-Ray Radiation Dose SR for mammography (PS3.3 A.35.8; PS3.16 TID 10001/10002/10003/10005).

Built with pydicom from a clean input: a list of :class:`IrradiationEvent` (one per exposure,
repeats and rejects included) and a :class:`DoseReportContext` (patient, study, device). The
simulated unit uses it for its own report; the controller uses it for the exam's report
(:mod:`acquisition.exam_reporting`; IHE REM "Store Dose Information", dose.md §5).

An event holds only what is known: a value it lacks is left out of its TID 10003 container,
never the event, and the reference point (113780) is written only with a known one. The
observer (TID 1002/1004) is whoever records the report; when that is not the unit, each event
names the mammography unit as its Irradiating Device (TID 1021, with only the identifiers the
unit gave: no Device Observer UID is invented). An AGD the unit did not report and the
recorder calculated is marked by :data:`CALCULATED_AGD_COMMENT` in the event's comment, and
the report lists "System Calculated" among its sources of dose information.

Content tree written::

    CONTAINER 113701 X-Ray Radiation Dose Report                       TID 10001
      HAS CONCEPT MOD 121058 Procedure reported = Mammography
        HAS CONCEPT MOD 363703001 Has intent = Diagnostic intent
      HAS OBS CONTEXT 121005 Observer Type = Device … (TID 1002/1004)
      HAS OBS CONTEXT 113705 Scope of Accumulation = Study
        HAS PROPERTIES 110180 Study Instance UID
      CONTAINS 113809/113810 Start/End of X-Ray Irradiation
      CONTAINS 113945/113943/113944 detector/source/mechanical data available
      CONTAINS CONTAINER 113702 Accumulated X-Ray Dose Data            TID 10002
        HAS CONCEPT MOD 113764 Acquisition Plane = Single Plane
        CONTAINS NUM 111637 Accumulated AGD, one per breast             TID 10005
          HAS CONCEPT MOD 272741003 Laterality = Left | Right
      CONTAINS CONTAINER 113706 Irradiation Event X-Ray Data, per event TID 10003 (+A/B/C)
        … CONTAINS CODE 113876 Device Role in Procedure = Irradiating Device  TID 1021
      CONTAINS 113854 Source of Dose Information (one per source)

Dose values are in mGy here (dose.md §1); Exposure is in µA·s (UCUM ``uA.s``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_nodes.datasets import codes as coded
from dicom_nodes.datasets.identity import Patient, set_patient_and_study
from dicom_nodes.datasets.references import MPPS_SOP_CLASS, sop_reference
from dicom_nodes.datasets.uids import new_uid

XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"


class DoseReportError(ValueError):
    """The inputs do not make a valid dose report."""


# --- Code tables (CIDs named where they come from) -----------------------------------------------

#: Image Laterality → Laterality concept modifier value (CID 244).
LATERALITY_CODES: dict[str, Code] = {"L": codes.SCT.Left, "R": codes.SCT.Right}

#: Anode Target Material (0018,1191) defined term → CID 10016 code.
ANODE_CODES: dict[str, Code] = {
    "MOLYBDENUM": codes.SCT.Molybdenum,
    "RHODIUM": codes.SCT.Rhodium,
    "TUNGSTEN": codes.SCT.Tungsten,
}

#: Filter Material (0018,7050) defined term → CID 10006 code.
FILTER_MATERIAL_CODES: dict[str, Code] = {
    "MOLYBDENUM": codes.SCT.Molybdenum,
    "RHODIUM": codes.SCT.Rhodium,
    "SILVER": codes.SCT.Silver,
    "ALUMINUM": codes.SCT.Aluminum,
}

#: Reference Point Definition (CID 10025).
REFERENCE_POINT_CODES: dict[str, Code] = {
    "113865": Code("113865", "DCM", "4.2cm above Breast Support Surface"),
    "113964": codes.DCM.AtSurfaceOfPatient,
}

#: Begins the comment of an event whose AGD (111631) the recorder calculated because the unit
#: reported none (dose.md §5, 113940 System Calculated); ``dose_extract`` reads it back.
CALCULATED_AGD_COMMENT = "AGD system calculated"

#: Source of Dose Information (CID 10021), by the short names used in :class:`IrradiationEvent`.
DOSE_SOURCE_CODES: dict[str, Code] = {
    "automated": codes.DCM.AutomatedDataCollection,  # 113856
    "mpps": codes.DCM.MPPSContent,  # 113858
    "image": codes.DCM.CopiedFromImageAttributes,  # 113866
    "calculated": codes.DCM.SystemCalculated,  # 113940
}

#: UCUM units used in the report.
UNITS: dict[str, Code] = {
    "mGy": Code("mGy", "UCUM", "mGy"),
    "mm": Code("mm", "UCUM", "mm"),
    "kV": Code("kV", "UCUM", "kV"),
    "mA": Code("mA", "UCUM", "mA"),
    "ms": Code("ms", "UCUM", "ms"),
    "uA.s": Code("uA.s", "UCUM", "uA.s"),
    "N": Code("N", "UCUM", "N"),
}

#: PS3.16 Annex D meaning; pydicom's dictionary says "… (mammo)", and readers such as OpenREM
#: match on the standard's meaning.
ACCUMULATED_AGD = Code("111637", "DCM", "Accumulated Average Glandular Dose")
HAS_INTENT = codes.SCT.HasIntent
DIAGNOSTIC_INTENT = codes.SCT.DiagnosticIntent


# --- Input types ---------------------------------------------------------------------------------


#: A code as plain values (value, scheme, meaning), so that callers need not import pydicom's
#: ``Code``: galacto's one code type (:class:`dicom_nodes.datasets.codes.Code`).
CodedConcept = coded.Code


@dataclass(frozen=True)
class IrradiatingDevice:
    """The unit that made an exposure (TID 1021), with only what it said about itself."""

    manufacturer: str = ""
    model_name: str = ""
    serial_number: str = ""
    device_uid: str = ""  #: only one the unit sent (Device UID, its own observer UID)


@dataclass(frozen=True)
class IrradiationEvent:
    """One exposure as TID 10003 reports it (units in the names; dose.md §2). Only the event
    UID is required: a value that is None is left out of the report."""

    irradiation_event_uid: str
    datetime_started: dt.datetime | None = None
    laterality: str | None = None  # "L" or "R"
    view: CodedConcept | None = None  # CID 4014
    view_modifiers: tuple[CodedConcept, ...] = ()  # CID 4015
    kvp: float | None = None
    exposure_uas: float | None = None
    tube_current_ma: float | None = None
    exposure_time_ms: float | None = None
    focal_spot_mm: float | None = None
    anode: str | None = None  # Anode Target Material defined term
    filter_material: str | None = None  # Filter Material defined term
    filter_thickness_min_mm: float | None = None
    filter_thickness_max_mm: float | None = None
    compressed_thickness_mm: float | None = None
    compression_force_n: float | None = None
    distance_source_to_detector_mm: float | None = None
    hvl_mm_al: float | None = None
    esak_mgy: float | None = None  # Entrance Exposure at RP
    reference_point: str | None = None  # "113865" or "113964"; None: not known
    agd_mgy: float | None = None
    #: the AGD is the recorder's (Dance) figure: the unit reported none (113940)
    agd_calculated: bool = False
    acquisition_protocol: str = ""
    comment: str = ""  # e.g. "rejected: motion" for a repeat
    #: the unit, when it is not the recorder of the report (TID 1021 Irradiating Device)
    device: IrradiatingDevice | None = None

    def __post_init__(self) -> None:
        if self.laterality is not None and self.laterality not in LATERALITY_CODES:
            raise DoseReportError(f"laterality must be L or R, not {self.laterality!r}")
        if self.anode is not None and self.anode not in ANODE_CODES:
            raise DoseReportError(f"unknown anode target material {self.anode!r}")
        if self.filter_material is not None and self.filter_material not in FILTER_MATERIAL_CODES:
            raise DoseReportError(f"unknown filter material {self.filter_material!r}")
        if self.reference_point is not None and self.reference_point not in REFERENCE_POINT_CODES:
            raise DoseReportError(f"unknown reference point definition {self.reference_point!r}")
        if self.agd_calculated and self.agd_mgy is None:
            raise DoseReportError("a calculated AGD needs its value")
        for name in _NUMBERS:
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise DoseReportError(f"{name} must be a finite number (a DS), not {value!r}")


_NUMBERS = (
    "kvp",
    "exposure_uas",
    "tube_current_ma",
    "exposure_time_ms",
    "focal_spot_mm",
    "filter_thickness_min_mm",
    "filter_thickness_max_mm",
    "compressed_thickness_mm",
    "compression_force_n",
    "distance_source_to_detector_mm",
    "hvl_mm_al",
    "esak_mgy",
    "agd_mgy",
)


@dataclass(frozen=True)
class DoseReportContext:
    """Who, which study and which device the report is about (TID 1002, General Study)."""

    study_instance_uid: str
    patient: Patient = field(default_factory=Patient)
    accession_number: str = ""
    study_id: str = ""
    study_date: str = ""
    study_time: str = ""
    referring_physician_name: str = ""
    study_description: str = ""
    manufacturer: str = "galacto"
    model_name: str = ""
    device_serial_number: str = ""
    software_versions: str = ""
    station_name: str = ""
    institution_name: str = ""
    device_observer_uid: str = ""
    #: Sources of dose information (keys of DOSE_SOURCE_CODES)
    dose_sources: tuple[str, ...] = ("automated",)
    performed_procedure_step_uid: str = ""
    specific_character_set: str = "ISO_IR 192"
    uid_prefix: str | None = None
    content_datetime: dt.datetime | None = None
    series_number: int = 900
    instance_number: int = 1


# --- Content item helpers (PS3.3 C.17.3) ---------------------------------------------------------


def _code_seq(code: Code) -> list[Dataset]:
    """A one-item Code Sequence of a pydicom code (the one builder: :mod:`.codes`)."""
    return [coded.Code.from_pydicom(code).to_dataset()]


def _item(relationship: str, value_type: str, concept: Code) -> Dataset:
    ds = Dataset()
    ds.RelationshipType = relationship
    ds.ValueType = value_type
    ds.ConceptNameCodeSequence = _code_seq(concept)
    return ds


def container(
    relationship: str, concept: Code, children: Iterable[Dataset], template: str = ""
) -> Dataset:
    """CONTAINER content item with SEPARATE continuity."""
    ds = _item(relationship, "CONTAINER", concept)
    ds.ContinuityOfContent = "SEPARATE"
    if template:
        tpl = Dataset()
        tpl.MappingResource = "DCMR"
        tpl.TemplateIdentifier = template
        ds.ContentTemplateSequence = [tpl]
    ds.ContentSequence = list(children)
    return ds


def code_item(
    relationship: str, concept: Code, value: Code, children: Sequence[Dataset] = ()
) -> Dataset:
    ds = _item(relationship, "CODE", concept)
    ds.ConceptCodeSequence = _code_seq(value)
    if children:
        ds.ContentSequence = list(children)
    return ds


def num_item(
    relationship: str, concept: Code, value: float, unit: str, children: Sequence[Dataset] = ()
) -> Dataset:
    ds = _item(relationship, "NUM", concept)
    measured = Dataset()
    measured.NumericValue = _ds_str(value)
    measured.MeasurementUnitsCodeSequence = _code_seq(UNITS[unit])
    ds.MeasuredValueSequence = [measured]
    if children:
        ds.ContentSequence = list(children)
    return ds


def text_item(relationship: str, concept: Code, value: str) -> Dataset:
    ds = _item(relationship, "TEXT", concept)
    ds.TextValue = value
    return ds


def uidref_item(
    relationship: str, concept: Code, uid: str, children: Sequence[Dataset] = ()
) -> Dataset:
    ds = _item(relationship, "UIDREF", concept)
    ds.UID = uid
    if children:
        ds.ContentSequence = list(children)
    return ds


def datetime_item(relationship: str, concept: Code, when: dt.datetime) -> Dataset:
    ds = _item(relationship, "DATETIME", concept)
    ds.DateTime = _dt_str(when)
    return ds


def _ds_str(value: float) -> str:
    """A DS value of at most 16 characters (PS3.5 §6.2)."""
    text = f"{value:.6g}"
    if "e" in text:
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text[:16]


def _dt_str(when: dt.datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S")


# --- Templates -----------------------------------------------------------------------------------


def observer_context(context: DoseReportContext) -> list[Dataset]:
    """TID 1002 with a device observer (TID 1004)."""
    items = [
        code_item("HAS OBS CONTEXT", codes.DCM.ObserverType, codes.DCM.Device),
        uidref_item(
            "HAS OBS CONTEXT",
            codes.DCM.DeviceObserverUID,
            context.device_observer_uid or new_uid(context.uid_prefix),
        ),
    ]
    optional = (
        (codes.DCM.DeviceObserverName, context.station_name),
        (codes.DCM.DeviceObserverManufacturer, context.manufacturer),
        (codes.DCM.DeviceObserverModelName, context.model_name),
        (codes.DCM.DeviceObserverSerialNumber, context.device_serial_number),
    )
    items += [text_item("HAS OBS CONTEXT", concept, v) for concept, v in optional if v]
    return items


def summed_agd_by_breast(events: Sequence[IrradiationEvent]) -> dict[str, float]:
    """The plain sum of the events' AGD per breast (a unit's own report)."""
    per_side: dict[str, float] = {}
    for event in events:
        if event.laterality is not None and event.agd_mgy is not None:
            per_side[event.laterality] = per_side.get(event.laterality, 0.0) + event.agd_mgy
    return per_side


def accumulated_mammography_dose(per_side: Mapping[str, float]) -> Dataset:
    """TID 10002 with TID 10005: accumulated AGD per breast imaged, with its laterality."""
    children = [code_item("HAS CONCEPT MOD", codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane)]
    for side in sorted(per_side):
        laterality = code_item("HAS CONCEPT MOD", codes.SCT.Laterality, LATERALITY_CODES[side])
        children.append(
            num_item(
                "CONTAINS",
                ACCUMULATED_AGD,
                per_side[side],
                "mGy",
                [laterality],
            )
        )
    return container("CONTAINS", codes.DCM.AccumulatedXRayDoseData, children, template="10002")


def device_participant(device: IrradiatingDevice) -> Dataset:
    """TID 1021 with $DeviceProcedureRole = Irradiating Device: only what the unit said."""
    rel = "HAS PROPERTIES"
    properties = [
        text_item(rel, concept, value)
        for concept, value in (
            (codes.DCM.DeviceManufacturer, device.manufacturer),
            (codes.DCM.DeviceModelName, device.model_name),
            (codes.DCM.DeviceSerialNumber, device.serial_number),
        )
        if value
    ]
    if device.device_uid:
        properties.append(uidref_item(rel, codes.DCM.DeviceObserverUID, device.device_uid))
    return code_item(
        "CONTAINS", codes.DCM.DeviceRoleInProcedure, codes.DCM.IrradiatingDevice, properties
    )


def irradiation_event(event: IrradiationEvent) -> Dataset:
    """TID 10003 (with 10003A dose, 10003B source and 10003C mechanical data) for one
    exposure; what the event does not know is left out."""
    rel = "CONTAINS"

    def number(concept: Code, value: float | None, unit: str) -> list[Dataset]:
        return [] if value is None else [num_item(rel, concept, value, unit)]

    children = [
        code_item(rel, codes.DCM.AcquisitionPlane, codes.DCM.SinglePlane),
        uidref_item(rel, codes.DCM.IrradiationEventUID, event.irradiation_event_uid),
    ]
    if event.datetime_started is not None:
        children.append(datetime_item(rel, codes.DCM.DatetimeStarted, event.datetime_started))
    children.append(code_item(rel, codes.DCM.IrradiationEventType, codes.DCM.StationaryAcquisition))
    if event.acquisition_protocol:
        children.append(text_item(rel, codes.DCM.AcquisitionProtocol, event.acquisition_protocol))
    breast_side = (
        []
        if event.laterality is None
        else [
            code_item("HAS CONCEPT MOD", codes.SCT.Laterality, LATERALITY_CODES[event.laterality])
        ]
    )
    children.append(code_item(rel, codes.DCM.TargetRegion, codes.SCT.Breast, breast_side))
    if event.view is not None:
        modifiers = [
            code_item("HAS CONCEPT MOD", codes.DCM.ImageViewModifier, m.to_pydicom())
            for m in event.view_modifiers
        ]
        children.append(code_item(rel, codes.DCM.ImageView, event.view.to_pydicom(), modifiers))
    children += number(codes.DCM.HalfValueLayer, event.hvl_mm_al, "mm")
    if event.esak_mgy is not None:
        children.append(num_item(rel, codes.DCM.EntranceExposureAtRP, event.esak_mgy, "mGy"))
        if event.reference_point is not None:
            point = REFERENCE_POINT_CODES[event.reference_point]
            children.append(code_item(rel, codes.DCM.ReferencePointDefinition, point))
    children += number(codes.DCM.AverageGlandularDose, event.agd_mgy, "mGy")
    # TID 10003B source data
    children += number(codes.DCM.KVP, event.kvp, "kV")
    children += number(codes.DCM.XRayTubeCurrent, event.tube_current_ma, "mA")
    children += number(codes.DCM.ExposureTime, event.exposure_time_ms, "ms")
    children += number(codes.DCM.Exposure, event.exposure_uas, "uA.s")
    children += number(codes.DCM.FocalSpotSize, event.focal_spot_mm, "mm")
    if event.anode is not None:
        children.append(code_item(rel, codes.DCM.AnodeTargetMaterial, ANODE_CODES[event.anode]))
    filters = [
        *number(codes.DCM.XRayFilterThicknessMinimum, event.filter_thickness_min_mm, "mm"),
        *number(codes.DCM.XRayFilterThicknessMaximum, event.filter_thickness_max_mm, "mm"),
    ]
    if event.filter_material is not None:
        material = FILTER_MATERIAL_CODES[event.filter_material]
        filters[:0] = [
            code_item(rel, codes.DCM.XRayFilterType, codes.DCM.FlatFilter),
            code_item(rel, codes.DCM.XRayFilterMaterial, material),
        ]
    if filters:
        children.append(container(rel, codes.DCM.XRayFilters, filters))
    # TID 10003C mechanical data
    children += number(codes.DCM.CompressionThickness, event.compressed_thickness_mm, "mm")
    children += number(codes.DCM.CompressionForce, event.compression_force_n, "N")
    children += number(
        codes.DCM.DistanceSourceToDetector, event.distance_source_to_detector_mm, "mm"
    )
    if event.device is not None:
        children.append(device_participant(event.device))
    comment = event.comment
    if event.agd_calculated and CALCULATED_AGD_COMMENT not in comment:
        comment = "; ".join(c for c in (CALCULATED_AGD_COMMENT, comment) if c)
    if comment:
        children.append(text_item(rel, codes.DCM.Comment, comment))
    return container(rel, codes.DCM.IrradiationEventXRayData, children)


def dose_report_content(
    context: DoseReportContext,
    events: Sequence[IrradiationEvent],
    accumulated_agd_mgy: Mapping[str, float] | None = None,
) -> Dataset:
    """The root CONTAINER of TID 10001 as a dataset holding the SR Document Content module.

    ``accumulated_agd_mgy`` (breast → mGy) is TID 10005's accumulated AGD; without it, the
    plain sum of the events' AGD per breast (what a unit reports of itself)."""
    yes = codes.SCT.Yes
    if accumulated_agd_mgy is None:
        accumulated_agd_mgy = summed_agd_by_breast(events)
    started = [e.datetime_started for e in events if e.datetime_started is not None]
    ended = [
        e.datetime_started + dt.timedelta(milliseconds=e.exposure_time_ms or 0.0)
        for e in events
        if e.datetime_started is not None
    ]
    irradiation = [
        datetime_item("CONTAINS", concept, when)
        for concept, when in (
            (codes.DCM.StartOfXRayIrradiation, min(started, default=None)),
            (codes.DCM.EndOfXRayIrradiation, max(ended, default=None)),
        )
        if when is not None
    ]
    intent = code_item("HAS CONCEPT MOD", HAS_INTENT, DIAGNOSTIC_INTENT)
    children = [
        code_item("HAS CONCEPT MOD", codes.DCM.ProcedureReported, codes.SCT.Mammography, [intent]),
        *observer_context(context),
        code_item(
            "HAS OBS CONTEXT",
            codes.DCM.ScopeOfAccumulation,
            codes.DCM.Study,
            [uidref_item("HAS PROPERTIES", codes.DCM.StudyInstanceUID, context.study_instance_uid)],
        ),
        *irradiation,
        code_item("CONTAINS", codes.DCM.XRayDetectorDataAvailable, codes.SCT.No),
        code_item("CONTAINS", codes.DCM.XRaySourceDataAvailable, yes),
        code_item("CONTAINS", codes.DCM.XRayMechanicalDataAvailable, yes),
        accumulated_mammography_dose(accumulated_agd_mgy),
        *(irradiation_event(e) for e in events),
    ]
    for source in context.dose_sources:
        if source not in DOSE_SOURCE_CODES:
            raise DoseReportError(f"unknown source of dose information {source!r}")
        children.append(
            code_item("CONTAINS", codes.DCM.SourceOfDoseInformation, DOSE_SOURCE_CODES[source])
        )
    root = container("", codes.DCM.XRayRadiationDoseReport, children, template="10001")
    del root.RelationshipType  # the root item has none (PS3.3 C.17.3)
    return root


def build_rdsr(
    context: DoseReportContext,
    events: Sequence[IrradiationEvent],
    *,
    sop_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    accumulated_agd_mgy: Mapping[str, float] | None = None,
) -> Dataset:
    """An X-Ray Radiation Dose SR instance (PS3.3 A.35.8) for a mammography study
    (``accumulated_agd_mgy``: see :func:`dose_report_content`)."""
    if not events:
        raise DoseReportError("a dose report needs at least one irradiation event")
    now = context.content_datetime or dt.datetime.now()
    prefix = context.uid_prefix
    sop_uid = sop_instance_uid or new_uid(prefix)

    ds = Dataset()
    ds.file_meta = _file_meta(sop_uid)
    ds.SpecificCharacterSet = context.specific_character_set
    # SOP Common
    ds.SOPClassUID = XRAY_RADIATION_DOSE_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    set_patient_and_study(ds, context, now)
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_instance_uid or new_uid(prefix)
    ds.SeriesNumber = context.series_number
    ds.ReferencedPerformedProcedureStepSequence = _pps_reference(
        context.performed_procedure_step_uid
    )
    # General Equipment + Enhanced General Equipment
    ds.Manufacturer = context.manufacturer
    ds.ManufacturerModelName = context.model_name or "unknown"
    ds.DeviceSerialNumber = context.device_serial_number or "unknown"
    ds.SoftwareVersions = context.software_versions or "unknown"
    if context.station_name:
        ds.StationName = context.station_name
    if context.institution_name:
        ds.InstitutionName = context.institution_name
    # SR Document General
    ds.InstanceNumber = context.instance_number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.PerformedProcedureCodeSequence = []
    # SR Document Content
    ds.update(dose_report_content(context, events, accumulated_agd_mgy))
    return ds


def _pps_reference(pps_uid: str) -> list[Dataset]:
    if not pps_uid:
        return []
    return [sop_reference(MPPS_SOP_CLASS, pps_uid)]


def _file_meta(sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(XRAY_RADIATION_DOSE_SR)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta
