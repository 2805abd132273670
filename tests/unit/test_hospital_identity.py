"""The exam's identity toward the hospital, from its journaled order (hospital_identity)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from acquisition.exam.opening import order_from_worklist
from acquisition.hospital_identity import (
    mpps_start,
    pps_id,
    requested_step,
    study_id,
    study_identity,
)
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient, RequestedStep
from dicom_nodes.hospital.mwl_scu import WorklistItem

#: The RIS's order as the exam opened it.
ITEM = WorklistItem(
    patient=Patient(name="DOE^JANE", id="P1", birth_date="19700101", sex="F"),
    accession_number="ACC1",
    requested_procedure_id="RP1",
    requested_procedure_description="Galactography left",
    requested_procedure_codes=(),
    study_instance_uid="1.2.3",
    sps_id="SPS1",
    sps_description="Galactography",
    sps_start_date="",
    sps_start_time="",
    station_ae="GALACTO",
    modality="MG",
    protocol_codes=(Code("X1", "99LOCAL", "Galactography L"),),
    referring_physician="REF^ROSE",
)

#: A scheduled exam journaled before the order was kept whole (no ``ris_item``).
ORDER = dataclasses.replace(
    order_from_worklist(ITEM, "L"),
    exam_id="EXAM-0001-2024-ABCDEFGH",
    mpps_instance_uid="1.2.3.4",
    opened_at="2024-05-06T07:08:09+00:00",
    ris_item=None,
)


def test_the_requested_step_is_read_from_the_order_s_ris_fields() -> None:
    assert requested_step(ORDER) == RequestedStep(
        study_instance_uid="1.2.3",
        accession_number="ACC1",
        requested_procedure_id="RP1",
        requested_procedure_description="Galactography left",
        sps_id="SPS1",
        sps_description="Galactography",
        protocol_codes=(Code("X1", "99LOCAL", "Galactography L"),),
    )


def test_a_scheduled_exam_without_its_ris_item_carries_the_order_as_opened() -> None:
    identity = study_identity(ORDER)
    assert identity.request == requested_step(ORDER)
    assert (identity.study_id, identity.accession_number) == ("RP1", "ACC1")
    assert (identity.patient.name, identity.study_instance_uid) == ("DOE^JANE", "1.2.3")
    assert (identity.mpps_instance_uid, identity.pps_id) == ("1.2.3.4", ORDER.exam_id[-16:])


def test_an_unscheduled_exam_has_no_request_no_accession_and_the_exam_id_as_study_id() -> None:
    order = dataclasses.replace(ORDER, scheduled=False)
    other = dataclasses.replace(ITEM, patient=Patient(name="OTHER^ANN"))
    identity = study_identity(order, other)  # the RIS's item is not consulted
    assert identity.request is None
    assert (identity.study_id, identity.accession_number) == (ORDER.exam_id[-16:], "")
    assert identity.patient.name == "DOE^JANE"


def test_a_scheduled_exam_follows_the_ris_order_as_it_stands() -> None:
    current = dataclasses.replace(
        ITEM,
        patient=dataclasses.replace(ITEM.patient, name="DOE^JANE^M"),
        study_instance_uid="1.2.9",
        requested_procedure_id="RP2",
    )
    identity = study_identity(ORDER, current)
    assert (identity.study_id, study_id(ORDER)) == ("RP2", "RP1")
    assert identity.pps_id == pps_id(ORDER) == ORDER.exam_id[-16:]
    assert (identity.patient.name, identity.referring_physician) == ("DOE^JANE^M", "REF^ROSE")
    assert (identity.study_instance_uid, identity.replaces) == ("1.2.9", ("1.2.3",))
    assert identity.request is not None and identity.request.sps_id == "SPS1"


def test_the_mpps_starts_at_the_opening_in_local_time_and_dates_the_study() -> None:
    opened = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC).astimezone().replace(tzinfo=None)
    assert mpps_start(ORDER) == opened
    identity = study_identity(ORDER)
    assert (identity.study_date, identity.study_time) == (
        opened.strftime("%Y%m%d"),
        opened.strftime("%H%M%S"),
    )


def test_without_a_requested_procedure_id_the_study_id_is_the_pps_id() -> None:
    assert study_id(dataclasses.replace(ORDER, requested_procedure_id="")) == pps_id(ORDER)
    assert study_id(ORDER, dataclasses.replace(ITEM, requested_procedure_id="")) == pps_id(ORDER)
