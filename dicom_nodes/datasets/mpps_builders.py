"""Datasets of the controller's one MPPS per exam toward the RIS (PS3.4 F.7.2; IHE RAD-6/7).

Pure functions from small frozen records to the N-CREATE attribute list and N-SET
modification lists, nothing else:

* :func:`build_mpps_in_progress` — N-CREATE (PS3.4 F.7.2.1, Table F.7.2-1): status IN
  PROGRESS, Scheduled Step Attributes Sequence, patient, PPS ID, station, start date/time,
  Modality MG, Study ID; PPS End Date/Time, Performed Series Sequence and **Discontinuation
  Reason Code Sequence present and empty**, because only attributes created at N-CREATE may be
  set later (F.7.2.2.1). The Radiation Dose module (PS3.3 C.4.16) and the Billing Supplies and
  Devices Sequence (C.4.17) are created empty for the same reason.
* :func:`build_mpps_update` — N-SET while IN PROGRESS: the complete Performed Series Sequence
  (N-SET replaces whole sequences) and the dose so far.
* :func:`build_mpps_completed` / :func:`build_mpps_discontinued` — the final N-SET with PPS End
  Date/Time, at least one Performed Series item (a series must exist for every PPS, even one
  without images), and for DISCONTINUED one CID 9301 reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient, RequestedStep, request_item, set_patient
from dicom_nodes.datasets.references import sop_reference, sop_references
from dicom_nodes.datasets.uids import derived_uid

MODALITY = "MG"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
DISCONTINUED = "DISCONTINUED"

#: Radiation Mode (0018,115A) of a mammography exposure (PS3.3 C.4.16).
RADIATION_MODE = "CONTINUOUS"

#: UCUM code for millilitres, the unit of the contrast quantity in billing (PS3.16 CID 82).
UCUM_ML = Code("ml", "UCUM", "ml")

#: CID 9301 reasons the controller offers (codes.py holds the whole context group).
DISCONTINUATION_REASONS: frozenset[Code] = frozenset(codes.DISCONTINUATION_REASONS)


class MppsBuildError(ValueError):
    """The exam cannot be reported as asked (e.g. COMPLETED without any series)."""


@dataclass(frozen=True)
class MppsExam:
    """The exam as the MPPS reports it; ``steps`` empty means unscheduled (IHE RAD TF-2 4.6)."""

    mpps_instance_uid: str
    pps_id: str
    study_id: str
    station_ae: str
    started_at: dt.datetime
    patient: Patient = field(default_factory=Patient)
    steps: tuple[RequestedStep, ...] = ()
    study_instance_uid: str = ""  #: used when unscheduled (steps empty)
    station_name: str = ""
    location: str = ""
    description: str = "Galactography"
    procedure_codes: tuple[Code, ...] = (codes.DUCTOGRAPHY,)
    performed_protocol_codes: tuple[Code, ...] = ()
    specific_character_set: str = "ISO_IR 192"
    #: The site's root (``site.uid_root``) for the UIDs the MPPS itself must make.
    uid_root: str = ""


@dataclass(frozen=True)
class ExposureDose:
    """One item of the Exposure Dose Sequence (0040,030E), PS3.3 C.4.16."""

    kvp: float
    tube_current_ua: float
    exposure_time_ms: int
    filter_type: str = ""
    filter_material: str = ""
    comments: str = ""


@dataclass(frozen=True)
class RadiationDose:
    """The Radiation Dose module of the MPPS (PS3.3 C.4.16) for the whole exam."""

    exposures: tuple[ExposureDose, ...] = ()
    entrance_dose_mgy: float | None = None
    distance_source_to_detector_mm: float | None = None
    distance_source_to_entrance_mm: float | None = None
    comments: str = ""
    #: Total Number of Exposures when it differs from the items (some could not be itemised).
    total_exposures: int | None = None


@dataclass(frozen=True)
class PerformedSeries:
    """One Performed Series Sequence item (Table F.7.2-1): one series per exam phase."""

    series_instance_uid: str
    protocol_name: str
    description: str = ""
    performing_physician: str = ""
    operator_name: str = ""
    retrieve_ae_title: str = ""
    images: tuple[tuple[str, str], ...] = ()  #: (SOP Class UID, SOP Instance UID)
    non_images: tuple[tuple[str, str], ...] = ()  #: e.g. the RDSR, the contrast SR


@dataclass(frozen=True)
class ContrastUse:
    """Contrast given, for the Billing Supplies and Devices Sequence (PS3.3 C.4.17)."""

    volume_ml: float
    agent: Code = field(default=codes.IOHEXOL)


def _da(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d")


def _tm(moment: dt.datetime) -> str:
    return moment.strftime("%H%M%S")


def _code_sequence(values: Iterable[Code]) -> DicomSequence:
    return DicomSequence(codes.code_sequence(values))


def scheduled_step_item(step: RequestedStep) -> Dataset:
    """One Scheduled Step Attributes Sequence item (Table F.7.2-1)."""
    item = request_item(step, procedure_codes=False)
    item.ReferencedStudySequence = DicomSequence()
    if step.referenced_study_uid:
        item.ReferencedStudySequence = [
            sop_reference("1.2.840.10008.3.1.2.3.1", step.referenced_study_uid)
        ]
    return item


def _steps(exam: MppsExam) -> DicomSequence:
    if exam.steps:
        return DicomSequence([scheduled_step_item(s) for s in exam.steps])
    if not exam.study_instance_uid:
        raise MppsBuildError("an unscheduled exam needs its own Study Instance UID")
    # Unscheduled: one item, Study Instance UID only, the rest zero-length (IHE RAD TF-2 4.6).
    unscheduled = RequestedStep(study_instance_uid=exam.study_instance_uid)
    return DicomSequence([scheduled_step_item(unscheduled)])


def build_mpps_in_progress(exam: MppsExam) -> Dataset:
    """The N-CREATE attribute list (PS3.4 F.7.2.1, Table F.7.2-1; IHE RAD-6)."""
    ds = Dataset()
    ds.SpecificCharacterSet = exam.specific_character_set
    ds.ScheduledStepAttributesSequence = _steps(exam)
    set_patient(ds, exam.patient)
    ds.ReferencedPatientSequence = DicomSequence()
    ds.PerformedProcedureStepID = exam.pps_id
    ds.PerformedStationAETitle = exam.station_ae
    ds.PerformedStationName = exam.station_name
    ds.PerformedLocation = exam.location
    ds.PerformedProcedureStepStartDate = _da(exam.started_at)
    ds.PerformedProcedureStepStartTime = _tm(exam.started_at)
    ds.PerformedProcedureStepStatus = IN_PROGRESS
    ds.PerformedProcedureStepDescription = exam.description
    ds.PerformedProcedureTypeDescription = exam.description
    ds.ProcedureCodeSequence = _code_sequence(exam.procedure_codes)
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = MODALITY
    ds.StudyID = exam.study_id
    ds.PerformedProtocolCodeSequence = _code_sequence(exam.performed_protocol_codes)
    ds.PerformedSeriesSequence = DicomSequence()
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = DicomSequence()
    # Radiation Dose module (C.4.16) and billing (C.4.17), created empty to be set later.
    ds.TotalNumberOfExposures = None
    ds.ExposureDoseSequence = DicomSequence()
    ds.EntranceDoseInmGy = None
    ds.DistanceSourceToDetector = None
    ds.DistanceSourceToEntrance = None
    ds.CommentsOnRadiationDose = ""
    ds.BillingSuppliesAndDevicesSequence = DicomSequence()
    return ds


def performed_series_item(series: PerformedSeries) -> Dataset:
    """One Performed Series Sequence item (Table F.7.2-1)."""
    item = Dataset()
    item.PerformingPhysicianName = series.performing_physician
    item.ProtocolName = series.protocol_name
    item.OperatorsName = series.operator_name
    item.SeriesInstanceUID = series.series_instance_uid
    item.SeriesDescription = series.description
    item.RetrieveAETitle = series.retrieve_ae_title
    item.ReferencedImageSequence = sop_references(series.images)
    item.ReferencedNonImageCompositeSOPInstanceSequence = sop_references(series.non_images)
    return item


def exposure_dose_item(exposure: ExposureDose) -> Dataset:
    """One Exposure Dose Sequence item (PS3.3 C.4.16): µA, ms, kV as the module defines them."""
    item = Dataset()
    item.RadiationMode = RADIATION_MODE
    item.KVP = exposure.kvp
    item.XRayTubeCurrentInuA = exposure.tube_current_ua
    item.ExposureTime = exposure.exposure_time_ms
    item.FilterType = exposure.filter_type
    item.FilterMaterial = exposure.filter_material
    item.CommentsOnRadiationDose = exposure.comments
    return item


def _billing_item(contrast: ContrastUse) -> Dataset:
    quantity = Dataset()
    quantity.Quantity = contrast.volume_ml
    quantity.MeasuringUnitsSequence = _code_sequence([UCUM_ML])
    item = Dataset()
    item.BillingItemSequence = _code_sequence([contrast.agent])
    item.QuantitySequence = DicomSequence([quantity])
    return item


def build_mpps_update(
    exam: MppsExam,
    series: Sequence[PerformedSeries],
    *,
    dose: RadiationDose | None = None,
    contrast: ContrastUse | None = None,
) -> Dataset:
    """An N-SET modification list while IN PROGRESS (PS3.4 F.7.2.2; IHE RAD-7).

    Always the complete Performed Series Sequence: N-SET replaces a sequence whole.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = exam.specific_character_set
    ds.PerformedSeriesSequence = DicomSequence([performed_series_item(s) for s in series])
    ds.PerformedProtocolCodeSequence = _code_sequence(exam.performed_protocol_codes)
    if dose is not None:
        ds.TotalNumberOfExposures = (
            len(dose.exposures) if dose.total_exposures is None else dose.total_exposures
        )
        ds.ExposureDoseSequence = DicomSequence([exposure_dose_item(e) for e in dose.exposures])
        ds.EntranceDoseInmGy = dose.entrance_dose_mgy
        ds.DistanceSourceToDetector = dose.distance_source_to_detector_mm
        ds.DistanceSourceToEntrance = dose.distance_source_to_entrance_mm
        ds.CommentsOnRadiationDose = dose.comments
    if contrast is not None:
        ds.BillingSuppliesAndDevicesSequence = DicomSequence([_billing_item(contrast)])
    return ds


def build_mpps_completed(
    exam: MppsExam,
    series: Sequence[PerformedSeries],
    ended_at: dt.datetime,
    *,
    dose: RadiationDose | None = None,
    contrast: ContrastUse | None = None,
) -> Dataset:
    """The final N-SET: COMPLETED with PPS End Date/Time (Table F.7.2-1 final state)."""
    if not series:
        raise MppsBuildError("a COMPLETED step needs at least one performed series")
    return _final(exam, series, ended_at, COMPLETED, dose=dose, contrast=contrast)


def build_mpps_discontinued(
    exam: MppsExam,
    series: Sequence[PerformedSeries],
    ended_at: dt.datetime,
    *,
    reason: Code,
    dose: RadiationDose | None = None,
    contrast: ContrastUse | None = None,
) -> Dataset:
    """The final N-SET: DISCONTINUED with one CID 9301 reason (PS3.3 C.4.14).

    Without any series yet (stopped before the first image) one series without images is
    reported, because the final state requires a Performed Series item.
    """
    if not any(reason.same_concept(known) for known in DISCONTINUATION_REASONS):
        raise MppsBuildError(f"not a CID 9301 discontinuation reason: {reason.value}")
    if not series:
        empty = derived_uid(exam.uid_root or None, exam.mpps_instance_uid, "series without images")
        series = [PerformedSeries(empty, exam.description, "No images acquired")]
    ds = _final(exam, series, ended_at, DISCONTINUED, dose=dose, contrast=contrast)
    ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = _code_sequence([reason])
    return ds


def _final(
    exam: MppsExam,
    series: Sequence[PerformedSeries],
    ended_at: dt.datetime,
    status: str,
    *,
    dose: RadiationDose | None,
    contrast: ContrastUse | None,
) -> Dataset:
    if ended_at < exam.started_at:
        raise MppsBuildError("the step cannot end before it started")
    ds = build_mpps_update(exam, series, dose=dose, contrast=contrast)
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = _da(ended_at)
    ds.PerformedProcedureStepEndTime = _tm(ended_at)
    return ds
