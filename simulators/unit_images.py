"""MG images and dose reports as the simulated unit creates them.

Digital Mammography X-Ray Image Storage – For Presentation (PS3.3 A.26.2), with the full dose
header of dose.md §1, and the unit's X-Ray Radiation Dose SR (through
:mod:`dicom_nodes.datasets.rdsr`).

Modules written: Patient, General Study, General Series, DX Series, Frame of Reference,
General Equipment, Enhanced General Equipment, General Image, General Acquisition, Image Pixel,
Contrast/Bolus (post-contrast images only), DX Anatomy Imaged, DX Image, DX Detector,
DX Positioning, X-Ray Acquisition Dose, X-Ray Generation, X-Ray Filtration, X-Ray Grid,
Mammography Image, VOI LUT, Acquisition Context, SOP Common.

Pixel data is a deterministic pattern (a half-ellipse "breast" against the background, a bright
"duct" from the nipple after contrast), small by default (64 × 80) or full detector size
(3328 × 4096, 16 bits allocated) on request; built from ``bytes`` without numpy.

Convenience builders for other tests: :func:`sample_mg_image`, :func:`sample_rdsr`.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr._snomed_dict import mapping as _snomed_mapping
from pydicom.sr.codedict import codes
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.contrast import (
    ContrastAdministration,
    Injection,
    decimal_string,
    set_contrast_bolus,
)
from dicom_nodes.datasets.identity import Patient, set_patient_and_study
from dicom_nodes.datasets.rdsr import (
    CodedConcept,
    DoseReportContext,
    IrradiationEvent,
    build_rdsr,
)
from dicom_nodes.datasets.references import MPPS_SOP_CLASS, sop_reference
from dose import dance
from simulators.unit_physics import (
    MAGNIFICATION_CODE,
    VENDORS,
    VIEW_CODES,
    Exposure,
    VendorProfile,
    View,
    expose,
)

#: UID root of everything the simulated unit creates (below the project's root). The simulated
#: unit stands for the mammography unit, another maker's equipment, which names its images,
#: series and irradiation events under its own root: not galacto's ``site.uid_root``.
SIM_UID_ROOT = "1.2.826.0.1.3680043.10.1466.99."
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"

SMALL_COLUMNS, SMALL_ROWS = 64, 80
FULL_COLUMNS, FULL_ROWS = 3328, 4096
BITS_STORED = 14


class ImageBuildError(ValueError):
    """The inputs do not make a valid MG image."""


# --- Inputs --------------------------------------------------------------------------------------


#: The patient of images made without a worklist step's (a context built by hand).
SIMULATED_PATIENT = Patient(name="GALACTO^SIMULATED", id="SIM0001", birth_date="19700101", sex="F")


@dataclass(frozen=True)
class StudyContext:
    """Patient, study and the worklist step the images belong to (copied from MWL)."""

    study_instance_uid: str
    patient: Patient = SIMULATED_PATIENT
    accession_number: str = "SIMACC0001"
    study_id: str = "1"
    study_date: str = ""
    study_time: str = ""
    referring_physician_name: str = ""
    study_description: str = "Galactography"
    requested_procedure_id: str = ""
    requested_procedure_description: str = ""
    scheduled_procedure_step_id: str = ""
    scheduled_procedure_step_description: str = ""
    scheduled_protocol_codes: tuple[CodedConcept, ...] = ()
    performed_procedure_step_uid: str = ""
    performed_procedure_step_id: str = ""
    specific_character_set: str = "ISO_IR 192"

    @property
    def has_request(self) -> bool:
        return bool(self.scheduled_procedure_step_id or self.requested_procedure_id)


@dataclass(frozen=True)
class SeriesInfo:
    """Series and instance numbering of one image."""

    series_instance_uid: str
    series_number: int = 1
    instance_number: int = 1
    series_description: str = ""
    protocol_name: str = ""
    #: When the series began (Series Date/Time, the same on every image of the series); None:
    #: the image's own acquisition time (a series of one image).
    started: dt.datetime | None = None


@dataclass
class UidSource:
    """UIDs under :data:`SIM_UID_ROOT`, deterministic for a seed (thread-safe)."""

    seed: int = 0
    counter: int = field(default=0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def next(self, what: str) -> str:
        with self._lock:
            self.counter += 1
            count = self.counter
        return generate_uid(prefix=SIM_UID_ROOT, entropy_srcs=[str(self.seed), what, str(count)])


# --- Small helpers -------------------------------------------------------------------------------


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    return Code(value, scheme, meaning).to_dataset()  # the one coded-item builder


_ds = decimal_string


#: Patient Orientation (0020,0020) by view family and laterality (PS3.17 mammography
#: hanging convention: the row direction points toward the nipple).
_ORIENTATION: dict[tuple[str, str], str] = {
    ("CC", "L"): "A\\R",
    ("CC", "R"): "P\\L",
    ("MLO", "L"): "A\\FR",
    ("MLO", "R"): "P\\FL",
    ("ML", "L"): "A\\F",
    ("ML", "R"): "P\\F",
}
_VIEW_FAMILY = {
    "CC": "CC",
    "XCCL": "CC",
    "XCCM": "CC",
    "MLO": "MLO",
    "LMO": "MLO",
    "ML": "ML",
    "LM": "ML",
}

#: Positioner Primary Angle (degrees) by view and laterality.
_PRIMARY_ANGLE = {
    "CC": 0.0,
    "XCCL": 0.0,
    "XCCM": 0.0,
    "MLO": 45.0,
    "LMO": -45.0,
    "ML": 90.0,
    "LM": -90.0,
}


def view_concept(view: View) -> CodedConcept:
    value, meaning = VIEW_CODES[view.name]
    return CodedConcept(value, "SCT", meaning)


def view_modifier_concepts(view: View) -> tuple[CodedConcept, ...]:
    if not view.magnified:
        return ()
    value, meaning = MAGNIFICATION_CODE
    return (CodedConcept(value, "SCT", meaning),)


# --- Pixel data ----------------------------------------------------------------------------------


def pixel_data(columns: int, rows: int, *, laterality: str, contrast: bool, seed: int) -> bytes:
    """A 16-bit little-endian pattern: background, a half-ellipse breast, a duct if contrast."""
    max_value = (1 << BITS_STORED) - 1
    background = (max_value // 20).to_bytes(2, "little")
    rng = random.Random(seed)
    shades = [int(max_value * (0.45 + 0.1 * rng.random())).to_bytes(2, "little") for _ in range(8)]
    duct = int(max_value * 0.95).to_bytes(2, "little")
    centre, radius_rows = rows / 2.0, rows / 2.0 * 0.9
    chest_wall_left = laterality == "L"  # left breast (A\\R): the nipple points right
    out = []
    for r in range(rows):
        y = (r - centre) / radius_rows
        width = int(columns * 0.85 * max(0.0, 1.0 - y * y) ** 0.5) if abs(y) < 1 else 0
        shade = shades[(r * 8) // rows]
        near_chest, near_nipple = shade * width, b""
        if contrast and abs(r - centre) < max(1, rows // 60) and width > 4:
            # the opacified duct runs from the nipple toward the chest wall
            near_chest, near_nipple = shade * (width // 4), duct * (width - width // 4)
        pad = background * (columns - width)
        if chest_wall_left:
            out.append(near_chest + near_nipple + pad)
        else:
            out.append(pad + near_nipple + near_chest)
    return b"".join(out)


# --- The image -----------------------------------------------------------------------------------


def build_mg_image(
    exposure: Exposure,
    study: StudyContext,
    series: SeriesInfo,
    *,
    profile: VendorProfile,
    sop_instance_uid: str,
    irradiation_event_uid: str,
    frame_of_reference_uid: str,
    contrast: ContrastAdministration | None = None,
    full_size: bool = False,
    device_serial_number: str = "SIM-0001",
    station_name: str = "MG_SIM",
    pixel_seed: int = 0,
) -> Dataset:
    """A Digital Mammography X-Ray Image – For Presentation (PS3.3 A.26.2) for one exposure."""
    ds = Dataset()
    when = exposure.datetime
    view = exposure.view
    ds.file_meta = _file_meta(MG_FOR_PRESENTATION, sop_instance_uid)

    # SOP Common (C.12.1)
    ds.SpecificCharacterSet = study.specific_character_set
    ds.SOPClassUID = MG_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")

    set_patient_and_study(ds, study, when)
    _series(ds, study, series, when)

    # Frame of Reference (C.7.4.1)
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    # General Equipment (C.7.5.1) + Enhanced General Equipment (C.7.5.2)
    ds.Manufacturer = profile.manufacturer
    ds.InstitutionName = "Galacto Simulation Site"
    ds.StationName = station_name
    ds.ManufacturerModelName = profile.model_name
    ds.DeviceSerialNumber = device_serial_number
    ds.SoftwareVersions = profile.software_versions

    # General Image (C.7.6.1) + General Acquisition (C.7.10.1)
    ds.InstanceNumber = series.instance_number
    family = _VIEW_FAMILY[view.name]
    ds.PatientOrientation = _ORIENTATION[(family, view.laterality)]
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.IrradiationEventUID = irradiation_event_uid
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"

    _pixels(ds, full_size=full_size, laterality=view.laterality, contrast=contrast, seed=pixel_seed)
    if contrast is not None:
        set_contrast_bolus(ds, contrast)
    _anatomy_and_positioning(ds, exposure)
    _detector(ds, profile, full_size=full_size)
    _dose_and_generation(ds, exposure)

    # Acquisition Context (C.7.6.14)
    ds.AcquisitionContextSequence = []
    return ds


def _series(ds: Dataset, study: StudyContext, series: SeriesInfo, when: dt.datetime) -> None:
    # General Series (C.7.3.1), DX Series (C.8.11.1)
    ds.Modality = "MG"
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    began = series.started or when
    ds.SeriesDate = began.strftime("%Y%m%d")
    ds.SeriesTime = began.strftime("%H%M%S")
    if series.series_description:
        ds.SeriesDescription = series.series_description
    if series.protocol_name:
        ds.ProtocolName = series.protocol_name
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ReferencedPerformedProcedureStepSequence = []
    if study.performed_procedure_step_uid:
        ds.ReferencedPerformedProcedureStepSequence = [
            sop_reference(MPPS_SOP_CLASS, study.performed_procedure_step_uid)
        ]
        ds.PerformedProcedureStepID = study.performed_procedure_step_id or "1"
        ds.PerformedProcedureStepStartDate = when.strftime("%Y%m%d")
        ds.PerformedProcedureStepStartTime = when.strftime("%H%M%S")
    if study.has_request:
        ds.RequestAttributesSequence = [request_attributes_item(study)]


def request_attributes_item(study: StudyContext) -> Dataset:
    """One Request Attributes Sequence (0040,0275) item copied from the worklist step."""
    item = Dataset()
    item.RequestedProcedureID = study.requested_procedure_id
    item.AccessionNumber = study.accession_number
    item.StudyInstanceUID = study.study_instance_uid
    if study.requested_procedure_description:
        item.RequestedProcedureDescription = study.requested_procedure_description
    item.ScheduledProcedureStepID = study.scheduled_procedure_step_id
    if study.scheduled_procedure_step_description:
        item.ScheduledProcedureStepDescription = study.scheduled_procedure_step_description
    if study.scheduled_protocol_codes:
        item.ScheduledProtocolCodeSequence = [
            _code_item(c.value, c.scheme, c.meaning) for c in study.scheduled_protocol_codes
        ]
    return item


def _pixels(
    ds: Dataset,
    *,
    full_size: bool,
    laterality: str,
    contrast: ContrastAdministration | None,
    seed: int,
) -> None:
    # Image Pixel (C.7.6.3), DX Image (C.8.11.3), VOI LUT (C.11.2)
    columns, rows = (FULL_COLUMNS, FULL_ROWS) if full_size else (SMALL_COLUMNS, SMALL_ROWS)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = BITS_STORED
    ds.HighBit = BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter = str((1 << BITS_STORED) // 2)
    ds.WindowWidth = str(1 << BITS_STORED)
    ds.VOILUTFunction = "LINEAR"
    ds.PixelData = pixel_data(
        columns, rows, laterality=laterality, contrast=contrast is not None, seed=seed
    )


def _code_tuple(code: object) -> tuple[str, str, str]:
    return (code.value, code.scheme_designator, code.meaning)  # type: ignore[attr-defined]


def _anatomy_and_positioning(ds: Dataset, exposure: Exposure) -> None:
    view = exposure.view
    # DX Anatomy Imaged (C.8.11.2)
    ds.ImageLaterality = view.laterality
    ds.AnatomicRegionSequence = [_code_item(*_code_tuple(codes.SCT.Breast))]
    ds.BodyPartExamined = "BREAST"
    # DX Positioning (C.8.11.5) + Mammography Image (C.8.11.7)
    concept = view_concept(view)
    view_item = _code_item(concept.value, concept.scheme, concept.meaning)
    view_item.ViewModifierCodeSequence = [
        _code_item(m.value, m.scheme, m.meaning) for m in view_modifier_concepts(view)
    ]
    ds.ViewCodeSequence = [view_item]
    ds.PositionerType = "MAMMOGRAPHIC"
    angle = _PRIMARY_ANGLE[view.name]
    ds.PositionerPrimaryAngle = _ds(angle if view.laterality == "R" else -angle, 1)
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.EstimatedRadiographicMagnificationFactor = _ds(exposure.magnification_factor, 3)


def _detector(ds: Dataset, profile: VendorProfile, *, full_size: bool) -> None:
    # DX Detector (C.8.11.4)
    spacing = profile.detector_pixel_spacing_mm
    if not full_size:  # the small image covers the same field with coarser pixels
        spacing = round(spacing * FULL_COLUMNS / SMALL_COLUMNS, 4)
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "SIM-DET-1"
    ds.ImagerPixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "detector plane"
    ds.FieldOfViewShape = "RECTANGLE"
    ds.FieldOfViewDimensions = [
        round(spacing * (FULL_ROWS if full_size else SMALL_ROWS)),
        round(spacing * (FULL_COLUMNS if full_size else SMALL_COLUMNS)),
    ]


def _dose_and_generation(ds: Dataset, exposure: Exposure) -> None:
    """X-Ray Acquisition Dose (C.8.7.8), Generation (C.8.7.9), Filtration, Grid (C.8.7.10-11)."""
    ds.KVP = _ds(exposure.kvp, 1)
    ds.ExposureInuAs = exposure.exposure_uas
    ds.Exposure = round(exposure.exposure_uas / 1000)
    ds.XRayTubeCurrent = round(exposure.tube_current_ma)
    ds.XRayTubeCurrentInuA = _ds(exposure.tube_current_ma * 1000.0, 1)
    ds.ExposureTime = round(exposure.exposure_time_ms)
    ds.ExposureTimeInuS = _ds(exposure.exposure_time_ms * 1000.0, 1)
    ds.ExposureControlMode = exposure.exposure_control_mode
    ds.ExposureControlModeDescription = "AEC, thickness-banded target/filter and kV"
    ds.ExposureStatus = "NORMAL"
    ds.FocalSpots = _ds(exposure.focal_spot_mm, 2)
    ds.AnodeTargetMaterial = exposure.anode
    ds.RectificationType = "CONST POTENTIAL"
    ds.DistanceSourceToDetector = _ds(exposure.sid_mm, 1)
    ds.DistanceSourceToPatient = _ds(exposure.source_to_support_mm, 1)
    ds.DistanceSourceToEntrance = _ds(exposure.source_to_entrance_mm, 1)
    ds.BodyPartThickness = _ds(exposure.compressed_thickness_mm, 1)
    ds.CompressionForce = _ds(exposure.compression_force_n, 1)
    # Entrance Dose (in mGy) is at the patient surface (PS3.3 C.8.7.8); the RDSR gives the
    # kerma at the vendor's reference point instead.
    ds.EntranceDose = round(dance.mgy_to_dgy(exposure.k_surface_mgy))  # dGy US: usually 0
    ds.EntranceDoseInmGy = _ds(exposure.k_surface_mgy, 4)
    ds.OrganDose = _ds(dance.mgy_to_dgy(exposure.agd_mgy), 8)  # dGy (dose.md §1)
    if exposure.hvl_reported:
        ds.HalfValueLayer = _ds(exposure.hvl_mm_al, 4)
    ds.CommentsOnRadiationDose = f"{exposure.glandularity_pct:.0f} % glandularity"
    # X-Ray Filtration
    ds.FilterMaterial = exposure.filter_material
    ds.FilterThicknessMinimum = _ds(exposure.filter_thickness_mm, 3)
    ds.FilterThicknessMaximum = _ds(exposure.filter_thickness_mm, 3)
    # X-Ray Grid
    if exposure.grid:
        ds.Grid = ["FOCUSED", "RECIPROCATING"]
        ds.GridAbsorbingMaterial = "LEAD"
        ds.GridSpacingMaterial = "CARBON FIBER"
    else:
        ds.Grid = "NONE"


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


# --- Legacy codes -------------------------------------------------------------------------------

#: SNOMED CT → SNOMED-RT (PS3.16 Annex O, pydicom's copy of the mapping).
_SCT_TO_SRT: dict[str, str] = _snomed_mapping["SCT"]


def to_legacy_codes(ds: Dataset) -> int:
    """Rewrite every SCT code item in ``ds`` (recursively) as the legacy SRT code, in place.

    Older units still send ``R-10242`` for a cranio-caudal view; readers must accept both
    (dose.md §1, dicom.md §5). Returns the number of items rewritten.
    """
    changed = 0
    for elem in ds:
        if elem.VR != "SQ":
            continue
        for item in elem.value:
            if item.get("CodingSchemeDesignator") == "SCT" and item.get("CodeValue") in _SCT_TO_SRT:
                item.CodeValue = _SCT_TO_SRT[item.CodeValue]
                item.CodingSchemeDesignator = "SRT"
                changed += 1
            changed += to_legacy_codes(item)
    return changed


# --- RDSR habits of real units ---------------------------------------------------------------

PRE_EXPOSURE_KV_BELOW_MAIN = 2.0


def _concept_of(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or [Dataset()]
    return str(names[0].get("CodeValue", ""))


def add_pre_exposure_rows(rdsr: Dataset) -> int:
    """Give each irradiation event a pre-exposure KVP and tube current before the main ones.

    Some AEC units report the pre-exposure inside the same TID 10003 event, so an event has
    two KVP (113733) and two X-Ray Tube Current (113734) rows; the pre-exposure here runs
    2 kV below the main exposure at the same current. Returns the number of events changed.
    """
    changed = 0
    for event in rdsr.ContentSequence:
        if _concept_of(event) != "113706":
            continue
        rows = list(event.ContentSequence)
        for code in ("113733", "113734"):
            index = next(i for i, row in enumerate(rows) if _concept_of(row) == code)
            pre = copy.deepcopy(rows[index])
            if code == "113733":
                main_kv = float(pre.MeasuredValueSequence[0].NumericValue)
                pre.MeasuredValueSequence[
                    0
                ].NumericValue = f"{main_kv - PRE_EXPOSURE_KV_BELOW_MAIN:g}"
            rows.insert(index, pre)
        event.ContentSequence = rows
        changed += 1
    return changed


def add_zero_for_other_breast(rdsr: Dataset) -> bool:
    """List the breast not imaged in TID 10005 with 0 mGy accumulated AGD, as some units do."""
    accumulated = next(i for i in rdsr.ContentSequence if _concept_of(i) == "113702")
    rows = [r for r in accumulated.ContentSequence if _concept_of(r) == "111637"]
    sides = {r.ContentSequence[0].ConceptCodeSequence[0].CodeValue for r in rows}
    missing = {"7771000", "24028007"} - sides  # SCT Left, Right
    if len(rows) != 1 or len(missing) != 1:
        return False
    other = copy.deepcopy(rows[0])
    other.MeasuredValueSequence[0].NumericValue = "0"
    laterality = other.ContentSequence[0].ConceptCodeSequence[0]
    laterality.CodeValue = missing.pop()
    laterality.CodeMeaning = "Left" if laterality.CodeValue == "7771000" else "Right"
    accumulated.ContentSequence.append(other)
    return True


# --- Exposure → RDSR event -----------------------------------------------------------------------


def irradiation_event(
    exposure: Exposure, irradiation_event_uid: str, protocol: str = ""
) -> IrradiationEvent:
    """The RDSR's view of one simulated exposure."""
    view = exposure.view
    return IrradiationEvent(
        irradiation_event_uid=irradiation_event_uid,
        datetime_started=exposure.datetime,
        laterality=view.laterality,
        view=view_concept(view),
        view_modifiers=view_modifier_concepts(view),
        kvp=exposure.kvp,
        exposure_uas=exposure.exposure_uas,
        tube_current_ma=exposure.tube_current_ma,
        exposure_time_ms=exposure.exposure_time_ms,
        focal_spot_mm=exposure.focal_spot_mm,
        anode=exposure.anode,
        filter_material=exposure.filter_material,
        filter_thickness_min_mm=exposure.filter_thickness_mm,
        filter_thickness_max_mm=exposure.filter_thickness_mm,
        compressed_thickness_mm=exposure.compressed_thickness_mm,
        compression_force_n=exposure.compression_force_n,
        hvl_mm_al=exposure.hvl_mm_al if exposure.hvl_reported else None,
        esak_mgy=exposure.esak_mgy,
        reference_point=exposure.reference_point,
        agd_mgy=exposure.agd_mgy,
        acquisition_protocol=protocol,
    )


def dose_report_context(
    study: StudyContext,
    profile: VendorProfile,
    *,
    device_observer_uid: str,
    serial: str,
    station_name: str,
) -> DoseReportContext:
    return DoseReportContext(
        study_instance_uid=study.study_instance_uid,
        patient=study.patient,
        accession_number=study.accession_number,
        study_id=study.study_id,
        study_date=study.study_date,
        study_time=study.study_time,
        referring_physician_name=study.referring_physician_name,
        study_description=study.study_description,
        manufacturer=profile.manufacturer,
        model_name=profile.model_name,
        device_serial_number=serial,
        software_versions=profile.software_versions,
        station_name=station_name,
        device_observer_uid=device_observer_uid,
        dose_sources=("automated",),
        performed_procedure_step_uid=study.performed_procedure_step_uid,
        specific_character_set=study.specific_character_set,
        uid_prefix=SIM_UID_ROOT,
    )


# --- Samples for other tests ---------------------------------------------------------------------

SAMPLE_TIME = dt.datetime(2026, 1, 15, 10, 30, 0)


def sample_contrast() -> ContrastAdministration:
    """One 0.4 mL injection over 60 s (a typical first injection)."""
    return ContrastAdministration(
        (Injection(0.4, dt.time(10, 20, 0), dt.time(10, 21, 0), round(0.4 / 60, 4), 60.0),)
    )


def sample_study(seed: int = 0) -> StudyContext:
    uids = UidSource(seed)
    return StudyContext(
        study_instance_uid=uids.next("study"),
        requested_procedure_id="RP0001",
        requested_procedure_description="Galactography left",
        scheduled_procedure_step_id="SPS0001",
        scheduled_procedure_step_description="Pre-contrast",
        performed_procedure_step_uid=uids.next("pps"),
    )


def sample_exposures(
    views: Sequence[View],
    *,
    seed: int = 0,
    vendor: str = "w-rh",
    thickness_mm: float = 45.0,
    glandularity_pct: float = 40.0,
) -> list[Exposure]:
    rng = random.Random(seed)
    profile = VENDORS[vendor]
    return [
        expose(
            profile,
            v,
            thickness_mm=thickness_mm,
            glandularity_pct=glandularity_pct,
            rng=rng,
            when=SAMPLE_TIME + dt.timedelta(minutes=i),
        )
        for i, v in enumerate(views)
    ]


def sample_mg_image(
    *,
    seed: int = 0,
    laterality: str = "L",
    view: str = "CC",
    magnified: bool = False,
    post_contrast: bool = False,
    full_size: bool = False,
    vendor: str = "w-rh",
    study: StudyContext | None = None,
) -> Dataset:
    """One complete, valid MG For Presentation image with a dose header (for tests)."""
    uids = UidSource(seed)
    study = study or sample_study(seed)
    (exposure,) = sample_exposures([View(laterality, view, magnified)], seed=seed, vendor=vendor)
    return build_mg_image(
        exposure,
        study,
        SeriesInfo(uids.next("series"), series_description="Galactography"),
        profile=VENDORS[vendor],
        sop_instance_uid=uids.next("sop"),
        irradiation_event_uid=uids.next("event"),
        frame_of_reference_uid=uids.next("for"),
        contrast=sample_contrast() if post_contrast else None,
        full_size=full_size,
        pixel_seed=seed,
    )


def sample_rdsr(
    *, seed: int = 0, vendor: str = "w-rh", study: StudyContext | None = None
) -> Dataset:
    """An RDSR for a pre-contrast CC + ML-mag pair and a post-contrast CC-mag (for tests)."""
    uids = UidSource(seed)
    study = study or sample_study(seed)
    views = [View("L", "CC"), View("L", "ML", True), View("L", "CC", True)]
    exposures = sample_exposures(views, seed=seed, vendor=vendor)
    events = [irradiation_event(e, uids.next("event")) for e in exposures]
    context = dose_report_context(
        study,
        VENDORS[vendor],
        device_observer_uid=uids.next("device"),
        serial="SIM-0001",
        station_name="MG_SIM",
    )
    context = replace(context, content_datetime=SAMPLE_TIME + dt.timedelta(minutes=10))
    return build_rdsr(
        context, events, sop_instance_uid=uids.next("sop"), series_instance_uid=uids.next("series")
    )
