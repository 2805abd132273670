"""Small builders of realistic test objects: MG images with a dose header, RDSRs, MPPS lists.

Local stand-ins until ``simulators/unit_images.py`` and ``dicom_nodes/datasets/rdsr.py`` land.
Values
follow dose.md §1 (Organ Dose in dGy, Entrance Dose in mGy in 0040,8302, Exposure in µAs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
XRAY_RDSR = "1.2.840.10008.5.1.4.1.1.88.67"
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"

VIEW_CODES = {"CC": "399162004", "MLO": "399368009", "ML": "399260004"}
MAGNIFICATION = "399163009"


@dataclass
class Exposure:
    """One exposure's truth, in record units (mGy, µAs, mA, ms, mm, N)."""

    laterality: str = "R"
    view: str = "CC"
    magnified: bool = False
    kvp: float = 29.0
    exposure_uas: float = 80000.0
    tube_current_ma: float = 100.0
    exposure_time_ms: float = 800.0
    agd_mgy: float = 1.23
    esak_mgy: float = 5.67
    thickness_mm: float = 45.0
    force_n: float = 110.0
    hvl_mm_al: float = 0.52
    sop_instance_uid: str = field(default_factory=generate_uid)
    irradiation_event_uid: str = field(default_factory=generate_uid)
    acquired: str = "20261125101500"  # DT, the unit's local time


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def mg_image(
    exposure: Exposure,
    *,
    study_uid: str,
    accession: str = "ACC1",
    sps_id: str | None = "SPS1",
    mpps_uid: str | None = None,
    sop_class: str = MG_FOR_PRESENTATION,
    legacy_codes: bool = False,
    rows: int = 8,
    columns: int = 8,
) -> Dataset:
    """An MG image (PS3.3 A.26) with the full dose header and tiny pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = exposure.sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = exposure.sop_instance_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PID1"
    ds.AccessionNumber = accession
    ds.Manufacturer = "Acme"
    ds.ManufacturerModelName = "Mammo 3000"
    ds.DeviceSerialNumber = "SN42"
    ds.AcquisitionDateTime = exposure.acquired
    ds.ImageLaterality = exposure.laterality
    ds.KVP = exposure.kvp
    ds.ExposureInuAs = int(exposure.exposure_uas)
    ds.XRayTubeCurrent = int(exposure.tube_current_ma)
    ds.ExposureTime = int(exposure.exposure_time_ms)
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.FilterThicknessMinimum = 0.05
    ds.FilterThicknessMaximum = 0.05
    ds.FocalSpots = 0.1 if exposure.magnified else 0.3
    ds.BodyPartThickness = exposure.thickness_mm
    ds.CompressionForce = exposure.force_n
    ds.HalfValueLayer = exposure.hvl_mm_al
    ds.OrganDose = round(exposure.agd_mgy / 100.0, 6)  # dGy
    ds.EntranceDoseInmGy = exposure.esak_mgy
    ds.EntranceDose = 0  # integer dGy: must be ignored when 8302 is present
    ds.OrganExposed = "BREAST"
    ds.DistanceSourceToDetector = 700
    ds.DistanceSourceToEntrance = 655
    ds.ExposureControlMode = "AUTOMATIC"
    ds.CommentsOnRadiationDose = "glandularity 30 %"
    ds.IrradiationEventUID = exposure.irradiation_event_uid
    if exposure.magnified:
        ds.EstimatedRadiographicMagnificationFactor = 1.8
    view_value = VIEW_CODES[exposure.view]
    scheme = "SCT"
    if legacy_codes:
        view_value = {"CC": "R-10242", "MLO": "R-10226", "ML": "R-10224"}[exposure.view]
        scheme = "SRT"
    view = _code(view_value, scheme, exposure.view)
    view.ViewModifierCodeSequence = Sequence(
        [_code("R-102D6" if legacy_codes else MAGNIFICATION, scheme, "magnification")]
        if exposure.magnified
        else []
    )
    ds.ViewCodeSequence = Sequence([view])
    if sps_id is not None:
        request = Dataset()
        request.ScheduledProcedureStepID = sps_id
        request.RequestedProcedureID = "RP1"
        request.AccessionNumber = accession
        ds.RequestAttributesSequence = Sequence([request])
    if mpps_uid is not None:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MPPS_SOP_CLASS
        ref.ReferencedSOPInstanceUID = mpps_uid
        ds.ReferencedPerformedProcedureStepSequence = Sequence([ref])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 14
    ds.HighBit = 13
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(rows * columns * 2)
    return ds


def _num(concept: str, meaning: str, value: float, unit: str) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "NUM"
    item.ConceptNameCodeSequence = Sequence([_code(concept, "DCM", meaning)])
    measured = Dataset()
    measured.NumericValue = DSfloat(value, auto_format=True)  # DS: at most 16 characters
    measured.MeasurementUnitsCodeSequence = Sequence([_code(unit, "UCUM", unit)])
    item.MeasuredValueSequence = Sequence([measured])
    return item


def _coded(concept: str, value: str, scheme: str = "SCT", concept_scheme: str = "DCM") -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CODE"
    item.ConceptNameCodeSequence = Sequence([_code(concept, concept_scheme, concept)])
    item.ConceptCodeSequence = Sequence([_code(value, scheme, value)])
    return item


def _event(exposure: Exposure) -> Dataset:
    """A TID 10003 Irradiation Event X-Ray Data container."""
    container = Dataset()
    container.RelationshipType = "CONTAINS"
    container.ValueType = "CONTAINER"
    container.ContinuityOfContent = "SEPARATE"
    container.ConceptNameCodeSequence = Sequence([_code("113706", "DCM", "Irradiation Event")])
    uid = Dataset()
    uid.RelationshipType = "CONTAINS"
    uid.ValueType = "UIDREF"
    uid.ConceptNameCodeSequence = Sequence([_code("113769", "DCM", "Irradiation Event UID")])
    uid.UID = exposure.irradiation_event_uid
    started = Dataset()
    started.RelationshipType = "CONTAINS"
    started.ValueType = "DATETIME"
    started.ConceptNameCodeSequence = Sequence([_code("111526", "DCM", "DateTime Started")])
    started.DateTime = exposure.acquired
    view = _coded("111031", VIEW_CODES[exposure.view])
    if exposure.magnified:
        view.ContentSequence = Sequence([_coded("111032", MAGNIFICATION)])
    target = _coded("123014", "76752008")
    target.ContentSequence = Sequence(
        [
            _coded(
                "272741003",
                "24028007" if exposure.laterality == "R" else "7771000",
                concept_scheme="SCT",
            )
        ]
    )
    esak = _num("111636", "Entrance Exposure at RP", exposure.esak_mgy, "mGy")
    filters = Dataset()
    filters.RelationshipType = "CONTAINS"
    filters.ValueType = "CONTAINER"
    filters.ContinuityOfContent = "SEPARATE"
    filters.ConceptNameCodeSequence = Sequence([_code("113771", "DCM", "X-Ray Filters")])
    filters.ContentSequence = Sequence(
        [_coded("113757", "59801003"), _num("113758", "max", 0.05, "mm")]
    )
    container.ContentSequence = Sequence(
        [
            uid,
            started,
            view,
            target,
            _num("111634", "HVL", exposure.hvl_mm_al, "mm"),
            esak,
            _coded("113780", "113865"),
            _num("111631", "Average Glandular Dose", exposure.agd_mgy, "mGy"),
            _num("113733", "KVP", exposure.kvp, "kV"),
            _num("113736", "Exposure", exposure.exposure_uas, "uA.s"),
            _num("113734", "X-Ray Tube Current", exposure.tube_current_ma, "mA"),
            _num("113824", "Exposure Time", exposure.exposure_time_ms, "ms"),
            _num("111633", "Compression Thickness", exposure.thickness_mm, "mm"),
            _num("111647", "Compression Force", exposure.force_n, "N"),
            _coded("111632", "26194003"),
            filters,
        ]
    )
    return container


def rdsr(exposures: list[Exposure], *, study_uid: str, accession: str = "ACC1") -> Dataset:
    """An X-Ray Radiation Dose SR (TID 10001) with one TID 10003 container per exposure."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = XRAY_RDSR
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = XRAY_RDSR
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.AccessionNumber = accession
    ds.Manufacturer = "Acme"
    ds.ManufacturerModelName = "Mammo 3000"
    ds.DeviceSerialNumber = "SN42"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("113701", "DCM", "X-Ray Radiation Dose Report")])
    ds.ContentSequence = Sequence([_event(e) for e in exposures])
    return ds


def mpps_create(
    *, study_uid: str, accession: str = "ACC1", sps_id: str = "SPS1", status: str = "IN PROGRESS"
) -> Dataset:
    """An N-CREATE Attribute List with every Type 1/2 attribute of PS3.4 Table F.7.2-1."""
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.ReferencedStudySequence = Sequence([])
    step.AccessionNumber = accession
    step.RequestedProcedureID = "RP1"
    step.RequestedProcedureDescription = "Galactography"
    step.ScheduledProcedureStepID = sps_id
    step.ScheduledProcedureStepDescription = "pre-contrast"
    step.ScheduledProtocolCodeSequence = Sequence([])
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PID1"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.ReferencedPatientSequence = Sequence([])
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "MAMMO"
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20261125"
    ds.PerformedProcedureStepStartTime = "101000"
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepDescription = "Galactography"
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = Sequence([])
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "MG"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = Sequence([])
    ds.PerformedSeriesSequence = Sequence([])
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence([])
    ds.ExposureDoseSequence = Sequence([])
    ds.TotalNumberOfExposures = None
    ds.OrganDose = None
    ds.EntranceDoseInmGy = None
    return ds


def mpps_set(
    exposures: list[Exposure], *, status: str = "IN PROGRESS", final: bool | None = None
) -> Dataset:
    """An N-SET Modification List: complete Performed Series + Radiation Dose module."""
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    series = Dataset()
    series.PerformingPhysicianName = ""
    series.ProtocolName = "pre-contrast"
    series.OperatorsName = ""
    series.SeriesInstanceUID = generate_uid()
    series.SeriesDescription = ""
    series.RetrieveAETitle = ""
    refs = []
    for exposure in exposures:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MG_FOR_PRESENTATION
        ref.ReferencedSOPInstanceUID = exposure.sop_instance_uid
        refs.append(ref)
    series.ReferencedImageSequence = Sequence(refs)
    series.ReferencedNonImageCompositeSOPInstanceSequence = Sequence([])
    ds.PerformedSeriesSequence = Sequence([series])
    items = []
    for exposure in exposures:
        item = Dataset()
        item.KVP = exposure.kvp
        item.XRayTubeCurrentInuA = exposure.tube_current_ma * 1000.0  # µA in MPPS
        item.ExposureTime = int(exposure.exposure_time_ms)
        item.FilterType = "STRIP"
        item.FilterMaterial = "RHODIUM"
        items.append(item)
    ds.ExposureDoseSequence = Sequence(items)
    ds.TotalNumberOfExposures = len(exposures)
    ds.OrganDose = round(sum(e.agd_mgy for e in exposures) / 100.0, 6)
    ds.EntranceDoseInmGy = round(sum(e.esak_mgy for e in exposures), 4)
    if final if final is not None else status != "IN PROGRESS":
        ds.PerformedProcedureStepEndDate = "20261125"
        ds.PerformedProcedureStepEndTime = "103000"
    return ds


# --------------------------------------------------------------------------- loopback peers


def scu_ae(*contexts: str, ae_title: str = "MAMMO") -> object:
    """A pynetdicom SCU with explicit timeouts and TCP_NODELAY, for tests and benchmarks."""
    from dicom_nodes.network import Timeouts, make_ae

    ae = make_ae(ae_title, Timeouts(connection_s=5, acse_s=5, dimse_s=10, network_s=10))
    for uid in contexts:  # Explicit VR LE first: the SCP accepts the first it supports
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae
