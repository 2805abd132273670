"""What journals and stores written before the patient was one value (flat ``patient_*`` keys)
still load, and what is written now is the same (dicom_nodes/datasets/identity.py, issue 13).

Each literal below is what the main branch wrote (commit 475150e) for the same record: the
``exam-opened`` order, with the RIS item kept whole; the RIS item in ``ris_orders`` and in
``galacto worklist query --json``; the ``order-at-close`` identity; a worklist row's
``step_json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from acquisition.exam.model import ExamOrder
from acquisition.exam.record import replay
from acquisition.hospital_identity import ORDER_AT_CLOSE, ForwardingIdentity
from acquisition.journal import Journal
from dicom_nodes.datasets.coercion import StudyIdentity
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore

ZOFIA = Patient(name="Łukasiewicz^Zofia", id="P7", birth_date="19680527", sex="F")

#: A RIS item as ``WorklistItem.as_dict`` wrote it (``ris_orders.item_json``, ``--json``).
OLD_ITEM: dict[str, Any] = {
    "patient_name": "Łukasiewicz^Zofia",
    "patient_id": "P7",
    "patient_birth_date": "19680527",
    "patient_sex": "F",
    "accession_number": "ACC7",
    "requested_procedure_id": "RP7",
    "requested_procedure_description": "Galactography left breast",
    "requested_procedure_codes": [
        {"value": "P5-40010", "scheme": "SRT", "meaning": "Mammary ductogram"}
    ],
    "study_instance_uid": "1.2.3.7",
    "sps_id": "RISSPS7",
    "sps_description": "Galactography",
    "sps_start_date": "20261125",
    "sps_start_time": "093000",
    "station_ae": "MAMMO1",
    "modality": "MG",
    "protocol_codes": [{"value": "399162004", "scheme": "SCT", "meaning": "cranio-caudal"}],
    "scheduled_performing_physician": "",
    "requested_contrast_agent": "",
    "pre_medication": "",
    "allergies": ["Iodine"],
    "pregnancy_status": 1,
    "medical_alerts": [],
    "priority": "",
    "referring_physician": "Referrer^Rita",
    "specific_character_set": ["ISO_IR 192"],
    "requesting_physician": "",
    "sps_location": "",
    "scheduled_station_name": "",
    "patient_weight_kg": 61.5,
    "assumed_character_set": "",
    "sps_start": "2026-11-25T09:30:00",
}

#: The ``order`` of an ``exam-opened`` entry (its ``ris_item``: the RIS item as ``asdict`` gave it).
OLD_ORDER: dict[str, Any] = {
    "exam_id": "ACC7",
    "accession": "ACC7",
    "study_instance_uid": "1.2.3.7",
    "patient_name": "Łukasiewicz^Zofia",
    "patient_id": "P7",
    "patient_birth_date": "19680527",
    "patient_sex": "F",
    "side": "L",
    "requested_procedure_id": "RP7",
    "requested_procedure_description": "Galactography left breast",
    "scheduled": True,
    "ris_sps_id": "RISSPS7",
    "ris_sps_description": "Galactography",
    "ris_protocol_codes": [["399162004", "SCT", "cranio-caudal"]],
    "mpps_instance_uid": "1.2.3.7.9",
    "opened_at": "2026-11-25T09:30:00+00:00",
    #: the RIS item kept whole: as ``as_dict`` writes it, without the derived ``sps_start``
    "ris_item": {key: value for key, value in OLD_ITEM.items() if key != "sps_start"},
}

#: The ``identity`` of an ``order-at-close`` entry.
OLD_IDENTITY: dict[str, Any] = {
    "study_instance_uid": "1.2.3.7",
    "study_id": "RP7",
    "study_date": "20261125",
    "study_time": "093000",
    "patient_name": "Łukasiewicz^Zofia",
    "patient_id": "P7",
    "patient_birth_date": "19680527",
    "patient_sex": "F",
    "mpps_instance_uid": "1.2.3.7.9",
    "pps_id": "ACC7",
    "accession_number": "ACC7",
    "referring_physician": "Referrer^Rita",
    "study_description": "Galactography left breast",
    "request": {
        "accession_number": "ACC7",
        "requested_procedure_id": "RP7",
        "requested_procedure_description": "Galactography left breast",
        "requested_procedure_codes": [],
        "sps_id": "RISSPS7",
        "sps_description": "Galactography",
        "protocol_codes": [],
        "study_instance_uid": "",
        "referenced_study_uid": "",
    },
    "phases": {
        "ACC7-PRE": {
            "code": {
                "value": "PRE",
                "scheme": "99GALACTO",
                "meaning": "Galactography pre contrast",
            },
            "description": "Galactography pre contrast",
        }
    },
    "replaces": ["1.2.3.6"],
}

#: A worklist row's ``step_json``, as ``ScheduledStep.to_json`` wrote it.
OLD_STEP_VALUES: dict[str, Any] = {
    "accession_number": "ACC7",
    "allergies": ["Iodine"],
    "medical_alerts": [],
    "modality": "MG",
    "patient_birth_date": "19680527",
    "patient_id": "P7",
    "patient_name": "Łukasiewicz^Zofia",
    "patient_sex": "F",
    "patient_weight_kg": None,
    "performing_physician": "",
    "pre_medication": "",
    "pregnancy_status": None,
    "priority": "",
    "protocol_codes": [{"meaning": "cranio-caudal", "scheme": "SCT", "value": "399162004"}],
    "referring_physician": "",
    "requested_contrast_agent": "",
    "requested_procedure_codes": [],
    "requested_procedure_description": "",
    "requested_procedure_id": "",
    "requesting_physician": "",
    "sps_description": "Galactography PRE",
    "sps_id": "ACC7-PRE",
    "sps_location": "",
    "sps_start_date": "20261125",
    "sps_start_time": "093000",
    "sps_status": "SCHEDULED",
    "station_ae": "MAMMO1",
    "station_name": "",
    "study_instance_uid": "1.2.3.7",
}
OLD_STEP = json.dumps(OLD_STEP_VALUES, ensure_ascii=False, sort_keys=True)


def as_written(values: dict[str, Any]) -> Any:
    """What the journal gives back: the values through JSON (tuples become lists)."""
    return json.loads(json.dumps(values, ensure_ascii=False))


def test_an_old_exam_opened_order_loads_with_its_patient_and_is_written_the_same() -> None:
    order = ExamOrder.from_json(OLD_ORDER)
    assert order.patient == ZOFIA
    assert order.ris_item is not None and order.ris_item.patient == ZOFIA
    assert (order.exam_id, order.side, order.mpps_instance_uid) == ("ACC7", "L", "1.2.3.7.9")
    assert order.ris_protocol_codes == (("399162004", "SCT", "cranio-caudal"),)
    written = as_written(order.to_json())
    assert written == OLD_ORDER
    assert list(written) == list(OLD_ORDER)  # `galacto journal list` prints the same
    assert list(written["ris_item"]) == list(OLD_ORDER["ris_item"])


def test_an_old_journal_replays_to_the_open_exam(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.append("exam-opened", {"order": OLD_ORDER}, exam_id="ACC7", operator="tech")
        transition = {"event": "select_order", "from": "idle", "to": "checklist"}
        journal.append("transition", transition, exam_id="ACC7", operator="tech")
        record = replay(journal)
    assert record is not None and record.order == ExamOrder.from_json(OLD_ORDER)
    assert record.order.patient == ZOFIA


def test_an_old_ris_item_loads_with_its_patient_and_is_written_the_same() -> None:
    item = WorklistItem.from_dict(OLD_ITEM)
    assert item.patient == ZOFIA
    assert (item.accession_number, item.patient_weight_kg, item.allergies) == (
        "ACC7",
        61.5,
        ("Iodine",),
    )
    written = as_written(item.as_dict())
    assert written == OLD_ITEM and list(written) == list(OLD_ITEM)


def test_an_old_order_at_close_identity_loads_with_its_patient_and_is_written_the_same(
    tmp_path: Path,
) -> None:
    identity = StudyIdentity.from_json(OLD_IDENTITY)
    assert identity.patient == ZOFIA
    assert (identity.study_id, identity.replaces) == ("RP7", ("1.2.3.6",))
    written = as_written(identity.to_json())
    assert written == OLD_IDENTITY and list(written) == list(OLD_IDENTITY)
    # the forwarder reads it from a journal
    payload = {"unit_study_instance_uid": "1.2.3.6", "status": "as opened", "changes": []}
    with Journal(tmp_path / "journal.sqlite") as journal:
        journal.append(ORDER_AT_CLOSE, {**payload, "identity": OLD_IDENTITY}, exam_id="ACC7")
        header = Dataset()
        header.StudyInstanceUID = "1.2.3.6"
        found = ForwardingIdentity(journal, lambda: None).identity_for(header)
    assert found == identity and found.patient == ZOFIA


def test_an_old_worklist_row_loads_with_its_patient_and_is_written_the_same(
    tmp_path: Path,
) -> None:
    step = ScheduledStep.from_json(OLD_STEP)
    assert step.patient == ZOFIA
    assert (step.sps_id, step.allergies) == ("ACC7-PRE", ("Iodine",))
    assert step.to_json() == OLD_STEP
    with WorklistStore(tmp_path / "galacto.db") as store:
        store.publish(step)
        assert store.get("ACC7-PRE") == step
