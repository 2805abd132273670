"""The MPPS datasets we send, checked against PS3.4 Table F.7.2-1 (and the RIS's own table)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom.dataset import Dataset

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.datasets.identity import RequestedStep as ScheduledStep
from dicom_nodes.datasets.mpps_builders import (
    ContrastUse,
    ExposureDose,
    MppsBuildError,
    MppsExam,
    PerformedSeries,
    RadiationDose,
    build_mpps_completed,
    build_mpps_discontinued,
    build_mpps_in_progress,
    build_mpps_update,
)
from dicom_nodes.unit_facing.mpps_scp import REQUIREMENTS, STEP_ITEM_REQUIREMENTS

START = dt.datetime(2026, 11, 25, 9, 30, 5)
END = START + dt.timedelta(minutes=42)
MG = "1.2.840.10008.5.1.4.1.1.1.2"
RDSR = "1.2.840.10008.5.1.4.1.1.88.67"

STEP = ScheduledStep(
    study_instance_uid="1.2.3.4",
    accession_number="ACC1",
    requested_procedure_id="RP1",
    requested_procedure_description="Galactography right",
    sps_id="SPS1",
    sps_description="Galactography",
    protocol_codes=(codes.VIEW_CC, codes.VIEW_ML),
)
EXAM = MppsExam(
    mpps_instance_uid="1.2.3.9",
    pps_id="PPS1",
    study_id="S1",
    station_ae="GALACTO",
    started_at=START,
    patient=Patient(name="Øvergård^Åse", id="GAL-1", birth_date="19700101", sex="F"),
    steps=(STEP,),
)
PRE = PerformedSeries("1.2.3.5", "Pre-contrast", images=((MG, "1.2.3.5.1"), (MG, "1.2.3.5.2")))
POST = PerformedSeries(
    "1.2.3.6", "Post-injection 1", images=((MG, "1.2.3.6.1"),), non_images=((RDSR, "1.2.3.7"),)
)
DOSE = RadiationDose(
    exposures=(
        ExposureDose(28.0, 95000.0, 1100, "STRIP", "RHODIUM", "CC"),
        ExposureDose(29.0, 98000.0, 1250, "STRIP", "RHODIUM", "ML"),
    ),
    entrance_dose_mgy=5.1,
    distance_source_to_detector_mm=650.0,
)

#: The nine CID 9301 reasons the task names, plus extravasation (SCT).
REASONS = [
    ("110500", "DCM"),
    ("110501", "DCM"),
    ("110502", "DCM"),
    ("110503", "DCM"),
    ("110505", "DCM"),
    ("110508", "DCM"),
    ("110512", "DCM"),
    ("110513", "DCM"),
    ("110514", "DCM"),
    ("110515", "DCM"),
    ("110516", "DCM"),
    ("95384003", "SCT"),
]


def test_n_create_has_every_type_1_and_2_attribute_of_table_f_7_2_1() -> None:
    ds = build_mpps_in_progress(EXAM)
    missing = [r.keyword for r in REQUIREMENTS if r.keyword not in ds]
    assert missing == []
    step = ds.ScheduledStepAttributesSequence[0]
    assert [kw for kw, _ in STEP_ITEM_REQUIREMENTS if kw not in step] == []
    for requirement in REQUIREMENTS:
        if requirement.n_create_type == 1:
            assert ds[requirement.keyword].value not in (None, "", []), requirement.keyword


@pytest.mark.parametrize(
    ("keyword", "expected"),
    [
        ("PerformedProcedureStepStatus", "IN PROGRESS"),
        ("Modality", "MG"),
        ("PerformedProcedureStepStartDate", "20261125"),
        ("PerformedProcedureStepStartTime", "093005"),
        ("PerformedProcedureStepID", "PPS1"),
        ("PerformedStationAETitle", "GALACTO"),
        ("StudyID", "S1"),
        ("SpecificCharacterSet", "ISO_IR 192"),
    ],
)
def test_n_create_values(keyword: str, expected: str) -> None:
    assert build_mpps_in_progress(EXAM)[keyword].value == expected


@pytest.mark.parametrize(
    "keyword",
    [
        "PerformedProcedureStepEndDate",
        "PerformedProcedureStepEndTime",
        "PerformedSeriesSequence",
        "PerformedProcedureStepDiscontinuationReasonCodeSequence",
        "ExposureDoseSequence",
        "TotalNumberOfExposures",
        "EntranceDoseInmGy",
        "BillingSuppliesAndDevicesSequence",
    ],
)
def test_n_create_creates_empty_what_is_set_later(keyword: str) -> None:
    ds = build_mpps_in_progress(EXAM)
    assert keyword in ds
    assert ds[keyword].value in (None, "", [])


def test_the_scheduled_step_is_copied_from_the_worklist() -> None:
    step = build_mpps_in_progress(EXAM).ScheduledStepAttributesSequence[0]
    assert step.StudyInstanceUID == "1.2.3.4"
    assert step.AccessionNumber == "ACC1"
    assert step.ScheduledProcedureStepID == "SPS1"
    assert [c.CodeValue for c in step.ScheduledProtocolCodeSequence] == ["399162004", "399260004"]


def test_unscheduled_exam_has_one_step_item_with_its_own_study() -> None:
    exam = MppsExam("1.9", "PPS2", "S2", "GALACTO", START, study_instance_uid="1.9.1")
    (step,) = build_mpps_in_progress(exam).ScheduledStepAttributesSequence
    assert step.StudyInstanceUID == "1.9.1" and step.AccessionNumber == ""
    with pytest.raises(MppsBuildError):
        build_mpps_in_progress(MppsExam("1.9", "PPS2", "S2", "GALACTO", START))


def test_update_sends_the_whole_series_sequence_and_the_dose() -> None:
    ds = build_mpps_update(EXAM, [PRE, POST], dose=DOSE, contrast=ContrastUse(0.8))
    assert [s.ProtocolName for s in ds.PerformedSeriesSequence] == [
        "Pre-contrast",
        "Post-injection 1",
    ]
    post = ds.PerformedSeriesSequence[1]
    assert post.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.6.1"
    assert post.ReferencedNonImageCompositeSOPInstanceSequence[0].ReferencedSOPClassUID == RDSR
    assert ds.TotalNumberOfExposures == 2
    first = ds.ExposureDoseSequence[0]
    assert (first.KVP, first.XRayTubeCurrentInuA, first.ExposureTime) == (28.0, 95000.0, 1100)
    assert ds.EntranceDoseInmGy == 5.1
    billing = ds.BillingSuppliesAndDevicesSequence[0]
    assert billing.BillingItemSequence[0].CodeValue == "109218004"
    assert billing.QuantitySequence[0].Quantity == 0.8
    assert "PerformedProcedureStepStatus" not in ds


def test_completed_sets_status_and_end() -> None:
    ds = build_mpps_completed(EXAM, [PRE, POST], END, dose=DOSE)
    assert ds.PerformedProcedureStepStatus == "COMPLETED"
    assert (ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime) == (
        "20261125",
        "101205",
    )


def test_completed_without_series_is_refused() -> None:
    with pytest.raises(MppsBuildError):
        build_mpps_completed(EXAM, [], END)


def test_a_step_cannot_end_before_it_started() -> None:
    with pytest.raises(MppsBuildError):
        build_mpps_completed(EXAM, [PRE], START - dt.timedelta(seconds=1))


@pytest.mark.parametrize(("value", "scheme"), REASONS)
def test_discontinued_with_each_cid_9301_reason(value: str, scheme: str) -> None:
    reason = next(c for c in codes.DISCONTINUATION_REASONS if c.value == value)
    ds = build_mpps_discontinued(EXAM, [PRE], END, reason=reason)
    assert ds.PerformedProcedureStepStatus == "DISCONTINUED"
    (item,) = ds.PerformedProcedureStepDiscontinuationReasonCodeSequence
    assert (item.CodeValue, item.CodingSchemeDesignator) == (value, scheme)


def test_a_reason_outside_cid_9301_is_refused() -> None:
    with pytest.raises(MppsBuildError):
        build_mpps_discontinued(EXAM, [PRE], END, reason=Code("12345", "DCM", "Made up"))


def test_discontinued_before_any_image_still_reports_one_series() -> None:
    ds = build_mpps_discontinued(EXAM, [], END, reason=codes.DISCONTINUED_PATIENT_REFUSED)
    (series,) = ds.PerformedSeriesSequence
    assert series.SeriesInstanceUID and series.ProtocolName
    assert list(series.ReferencedImageSequence) == []


def test_datasets_survive_the_outbox_json_round_trip() -> None:
    for ds in (
        build_mpps_in_progress(EXAM),
        build_mpps_completed(EXAM, [PRE, POST], END, dose=DOSE, contrast=ContrastUse(1.2)),
    ):
        again = Dataset.from_json(ds.to_json())
        assert again == ds
        assert str(again.get("PatientName", "Øvergård^Åse")) == "Øvergård^Åse"
