"""What an exam is opened with: its order (a RIS worklist item, or a patient registered at the
console) and the decision on its side. Pure: the service journals and refuses.

Wrong side is not silent (procedure.md): the breast chosen must agree with the side the order's
words name (:func:`~acquisition.laterality.order_side`), unless the operator gives a reason to
override it; a side the order does not name is taken as chosen explicitly. Either way the
decision is journaled (kind ``laterality``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from acquisition.exam.model import ExamOrder, Patient
from acquisition.journal import Journal
from acquisition.laterality import SIDE_NAMES, OrderSide
from dicom_nodes.datasets.uids import new_uid
from dicom_nodes.hospital.mwl_scu import WorklistItem


@dataclass(frozen=True)
class SideMismatch:
    """The side chosen disagrees with the order's and no reason overrides it: refused."""

    reason: str
    details: dict[str, str]


def order_from_worklist(item: WorklistItem, side: str, uid_root: str | None = None) -> ExamOrder:
    """The exam of a RIS worklist order, on the breast ``side`` (the order's Study Instance
    UID; a new one under ``uid_root`` when the RIS gave none)."""
    return ExamOrder(
        exam_id=item.accession_number or item.sps_id,
        accession=item.accession_number,
        study_instance_uid=item.study_instance_uid or new_uid(uid_root),
        patient=item.patient,
        side=side,
        requested_procedure_id=item.requested_procedure_id,
        requested_procedure_description=item.requested_procedure_description or "Galactography",
        ris_sps_id=item.sps_id,
        ris_sps_description=item.sps_description,
        ris_protocol_codes=tuple((c.value, c.scheme, c.meaning) for c in item.protocol_codes),
        ris_item=item,
    )


def unscheduled_order(
    patient: Patient, side: str, exam_id: str, uid_root: str | None = None
) -> ExamOrder:
    """The exam of a patient registered at the console: no accession number (IHE's unscheduled
    case: none is invented for the images), its own Study Instance UID under ``uid_root``."""
    return ExamOrder(
        exam_id=exam_id,
        accession="",
        study_instance_uid=new_uid(uid_root),
        patient=patient,
        side=side,
        scheduled=False,
    )


def laterality_decision(
    chosen: str, found: OrderSide, override: str
) -> dict[str, Any] | SideMismatch:
    """The payload of the ``laterality`` entry, or the mismatch that refuses the opening."""
    payload: dict[str, Any] = {
        "order_side": found.side,
        "chosen_side": chosen,
        "evidence": list(found.evidence),
    }
    if found.side is None:
        named = "names both sides" if found.conflicting else "names no side"
        return {**payload, "decision": f"the order {named}: the side was chosen explicitly"}
    if found.side == chosen:
        return {**payload, "decision": "the side chosen is the order's"}
    if override:
        decision = "the order's side was overridden"
        return {**payload, "decision": decision, "override_reason": override}
    reason = (
        f"the order is for the {SIDE_NAMES[found.side]} breast ({found.side}), not the "
        f"{SIDE_NAMES[chosen]} ({chosen}): choose {found.side}, or give the reason to "
        "override the order's side"
    )
    details = {"code": "laterality-mismatch", "order_side": found.side, "chosen_side": chosen}
    return SideMismatch(reason, details)


def unused_exam_id(journal: Journal, wanted: str) -> str:
    """``wanted`` (the accession), or ``wanted-2``, ``-3``… when an earlier exam of the same
    order is in the journal (an exam repeated after a discontinuation): each exam keeps its own
    journal entries, worklist steps and MPPS."""
    candidate, number = wanted, 1
    while any(e.kind == "exam-opened" for e in journal.entries(exam_id=candidate)):
        number += 1
        candidate = f"{wanted}-{number}"
    return candidate
