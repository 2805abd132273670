"""The one request type of images, MPPS and SR (dicom_nodes/datasets/identity.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataset import Dataset

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import (
    PATIENT_KEYS,
    Patient,
    RequestedStep,
    flatten_patient,
    get_patient,
    request_item,
    set_patient,
    set_patient_and_study,
    unflatten_patient,
)

JANE = Patient(name="DOE^JANE", id="P1", birth_date="19700101", sex="F")

STEP = RequestedStep(
    accession_number="ACC1",
    requested_procedure_id="RP1",
    requested_procedure_description="Galactography right",
    requested_procedure_codes=(codes.DUCTOGRAPHY,),
    sps_id="SPS1",
    sps_description="Galactography",
    protocol_codes=(codes.VIEW_CC,),
    study_instance_uid="1.2.3",
)


def test_the_request_attributes_of_an_image() -> None:
    item = request_item(STEP, study_instance_uid="1.2.9")
    assert (item.AccessionNumber, item.StudyInstanceUID, item.ScheduledProcedureStepID) == (
        "ACC1",
        "1.2.9",
        "SPS1",
    )
    assert codes.Code.from_item(item.RequestedProcedureCodeSequence[0]) == codes.DUCTOGRAPHY
    assert codes.Code.from_item(item.ScheduledProtocolCodeSequence[0]) == codes.VIEW_CC


def test_an_sr_s_request_has_no_scheduled_step_and_an_mpps_no_procedure_codes() -> None:
    sr = request_item(STEP, scheduled_step=False)
    assert sr.StudyInstanceUID == "1.2.3" and "ScheduledProcedureStepID" not in sr
    mpps = request_item(STEP, procedure_codes=False)
    assert "RequestedProcedureCodeSequence" not in mpps and mpps.ScheduledProcedureStepID == "SPS1"


@dataclass(frozen=True)
class Context:
    """Any record that carries the patient and the study (the helpers read it by protocol)."""

    study_instance_uid: str = "1.2.3"
    patient: Patient = JANE
    accession_number: str = "ACC1"
    study_id: str = "RP1"
    study_date: str = ""
    study_time: str = ""
    referring_physician_name: str = "REF^ROSE"
    study_description: str = ""


def test_the_patient_is_written_from_any_record_that_names_her() -> None:
    ds = Dataset()
    set_patient(ds, Context().patient)
    assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
        "DOE^JANE",
        "P1",
        "19700101",
        "F",
    )
    assert "StudyInstanceUID" not in ds
    assert get_patient(ds) == JANE


def test_a_patient_the_dataset_does_not_name_is_read_empty() -> None:
    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.PatientSex = None  # type 2, empty
    assert get_patient(ds) == Patient(name="DOE^JANE")


def test_a_new_object_without_a_study_date_is_dated_by_its_content() -> None:
    ds = Dataset()
    set_patient_and_study(ds, Context(), dt.datetime(2024, 5, 6, 7, 8, 9))
    assert (ds.StudyDate, ds.StudyTime) == ("20240506", "070809")
    assert (ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber) == ("1.2.3", "RP1", "ACC1")
    assert ds.ReferringPhysicianName == "REF^ROSE" and "StudyDescription" not in ds


def test_over_an_existing_object_the_context_s_values_replace_the_old_ones() -> None:
    ds = Dataset()
    ds.PatientName = "WRONG^NAME"
    ds.StudyDescription = "Mammography"
    set_patient_and_study(ds, Context(study_date="20240101", study_time="120000"))
    assert (ds.PatientName, ds.StudyDate, ds.StudyTime) == ("DOE^JANE", "20240101", "120000")
    assert "StudyDescription" not in ds  # the context has none: the old one does not stay
    set_patient_and_study(ds, Context(study_description="Galactography"))
    assert (ds.StudyDescription, ds.StudyDate) == ("Galactography", "")


def test_a_patient_is_kept_under_the_four_flat_keys_journals_have_always_had() -> None:
    flat = flatten_patient({"exam_id": "E1", "patient": JANE, "side": "R"})
    assert list(flat) == ["exam_id", *PATIENT_KEYS, "side"]  # in the patient's place
    assert flat == {
        "exam_id": "E1",
        "patient_name": "DOE^JANE",
        "patient_id": "P1",
        "patient_birth_date": "19700101",
        "patient_sex": "F",
        "side": "R",
    }
    assert unflatten_patient(flat) == {"exam_id": "E1", "side": "R", "patient": JANE}
    # dataclasses.asdict gives the patient as a mapping: flattened the same way
    assert flatten_patient(
        {"patient": {"name": "A^B", "id": "X", "birth_date": "", "sex": ""}}
    ) == (Patient("A^B", "X").flat())


def test_a_flat_key_that_is_absent_or_null_is_an_empty_value() -> None:
    assert Patient.from_flat({"patient_name": "DOE^JANE", "patient_sex": None}) == Patient(
        name="DOE^JANE"
    )


def test_a_patient_s_repr_names_no_identifier() -> None:
    assert repr(JANE) == "Patient(sex='F')"
    text = repr(Context())  # a record holding her
    assert "DOE^JANE" not in text and "'P1'" not in text and "19700101" not in text
