"""Attribute coercion of forwarded copies (dicom_nodes/datasets/coercion.py; IHE RAD TF-2x Appendix
A)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.coercion import PHASE_SCHEME, Phase, StudyIdentity, coerce
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.datasets.identity import RequestedStep as Request
from simulators.unit_images import SIMULATED_PATIENT, StudyContext, sample_mg_image

OLD_STUDY = "1.2.826.0.1.3680043.10.1466.7.100"
NEW_STUDY = "1.2.826.0.1.3680043.10.1466.7.200"
MPPS = "1.2.826.0.1.3680043.10.1466.7.300"
PRE = Phase(Code("PRE", PHASE_SCHEME, "Galactography pre contrast"), "Galactography pre contrast")


def identity(**changes: object) -> StudyIdentity:
    values: dict[str, object] = {
        "study_instance_uid": NEW_STUDY,
        "study_id": "RP7",
        "study_date": "20261125",
        "study_time": "093000",
        "patient": Patient(name="Łukasiewicz^Zofia", id="P7", birth_date="19680527", sex="F"),
        "mpps_instance_uid": MPPS,
        "pps_id": "ACC7",
        "accession_number": "ACC7",
        "referring_physician": "Referrer^Rita",
        "study_description": "Galactography left breast",
        "request": Request(
            "ACC7", "RP7", "Galactography left breast", (), "RISSPS7", "Galactography", ()
        ),
        "phases": {"ACC7-PRE": PRE},
        "replaces": (OLD_STUDY,),
    }
    values.update(changes)
    return StudyIdentity(**values)  # type: ignore[arg-type]


def image() -> Dataset:
    study = StudyContext(
        study_instance_uid=OLD_STUDY,
        patient=dataclasses.replace(SIMULATED_PATIENT, name="Muller^Anna"),
        accession_number="OLDACC",
        scheduled_procedure_step_id="ACC7-PRE",
        requested_procedure_id="RP7",
        performed_procedure_step_uid="1.2.826.0.1.3680043.10.1466.7.400",
        specific_character_set="ISO_IR 100",
    )
    return sample_mg_image(seed=3, laterality="L", view="CC", study=study)


def test_an_image_gets_the_ris_request_galactos_mpps_and_its_phase(tmp_path: Path) -> None:
    ds = image()
    pixels = bytes(ds.PixelData)
    changed = coerce(ds, identity())
    assert {"StudyInstanceUID", "AccessionNumber", "RequestAttributesSequence"} <= set(changed)
    (request,) = ds.RequestAttributesSequence
    assert (request.ScheduledProcedureStepID, request.StudyInstanceUID) == ("RISSPS7", NEW_STUDY)
    assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == MPPS
    (performed,) = ds.PerformedProtocolCodeSequence
    assert (performed.CodeValue, ds.SeriesDescription) == ("PRE", "Galactography pre contrast")
    assert (ds.StudyID, ds.StudyDate, ds.StudyTime) == ("RP7", "20261125", "093000")
    # A name beyond Latin-1: the copy is written again in UTF-8, and reads back right.
    ds.save_as(tmp_path / "copy.dcm", enforce_file_format=True)
    back = dcmread(tmp_path / "copy.dcm")
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.PatientName == "Łukasiewicz^Zofia"
    assert bytes(back.PixelData) == pixels  # nothing else touched


def test_the_unscheduled_case_has_no_request_and_no_accession() -> None:
    ds = image()
    coerce(ds, identity(accession_number="", referring_physician="", request=None))
    assert "RequestAttributesSequence" not in ds
    assert ds.AccessionNumber == ""
    assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == MPPS


def test_an_sr_gets_the_study_uid_in_its_content_and_evidence_and_a_referenced_request() -> None:
    ds = Dataset()
    ds.Modality = "SR"
    ds.StudyInstanceUID = OLD_STUDY
    evidence = Dataset()
    evidence.StudyInstanceUID = OLD_STUDY
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    concept = Dataset()
    concept.CodeValue = "110180"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Study Instance UID"
    uid_item = Dataset()
    uid_item.ValueType = "UIDREF"
    uid_item.ConceptNameCodeSequence = [concept]
    uid_item.UID = OLD_STUDY
    container = Dataset()
    container.ValueType = "CONTAINER"
    container.ContentSequence = [uid_item]
    ds.ContentSequence = [container]
    changed = coerce(ds, identity())
    assert "ContentSequence" in changed
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == NEW_STUDY
    assert ds.ContentSequence[0].ContentSequence[0].UID == NEW_STUDY
    (request,) = ds.ReferencedRequestSequence
    assert request.RequestedProcedureID == "RP7" and request.ReferencedStudySequence == []
    assert "RequestAttributesSequence" not in ds and "PerformedProtocolCodeSequence" not in ds


def test_the_identity_survives_its_journal_form() -> None:
    original = identity()
    assert StudyIdentity.from_json(original.to_json()) == original
