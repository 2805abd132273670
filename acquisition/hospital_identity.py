"""The exam's identity toward the hospital: the order it performs, as it stands at the close.

IHE Scheduled Workflow (RAD TF-1 4; RAD TF-2x Appendix A) wants the worklist, the images and
the MPPS to agree. The controller coerces the copies it forwards
(:func:`dicom_nodes.datasets.coercion.coerce`) to the
:class:`~dicom_nodes.datasets.coercion.StudyIdentity` built
here:

* a scheduled exam carries the RIS order — **as it stands when the exam ends** (completed or
  discontinued): the RIS may correct a patient's name or change the order while the exam runs.
  The console shows such a change as it is seen (:func:`mismatch`); when the exam ends its
  identity is journaled once (``order-at-close``, :func:`order_at_close`) and every copy is
  coerced to it, also after a restart;
* an unscheduled exam follows IHE's unscheduled case: its own Study Instance UID, no Accession
  Number, no Request Attributes; the patient is the one registered at the console.

Study ID is the Requested Procedure ID (the exam ID when there is none), Study Date/Time the
start of galacto's MPPS, the Referenced Performed Procedure Step galacto's MPPS at the RIS, and
each image says its phase in Performed Protocol Code Sequence and Series Description.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from acquisition.exam.model import PHASE_STEPS, ExamOrder, ExamSnapshot, phase_sps_id
from acquisition.journal import Journal
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.coercion import PHASE_SCHEME, Phase, StudyIdentity
from dicom_nodes.datasets.identity import RequestedStep, flatten_patient
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.hospital.ris_orders import StoredOrder

#: Journal kind of the identity the exam's objects are forwarded with (written once, at its end).
ORDER_AT_CLOSE = "order-at-close"

#: The order's attributes that make the exam's identity, with the names the console shows.
IDENTITY_ATTRIBUTES: dict[str, str] = {
    "patient_name": "patient's name",
    "patient_id": "patient ID",
    "patient_birth_date": "birth date",
    "patient_sex": "sex",
    "accession_number": "accession number",
    "study_instance_uid": "Study Instance UID",
    "requested_procedure_id": "requested procedure ID",
    "requested_procedure_description": "requested procedure",
    "requested_procedure_codes": "requested procedure code",
    "sps_id": "scheduled step ID",
    "sps_description": "scheduled step",
    "protocol_codes": "scheduled protocol",
    "referring_physician": "referring physician",
}


def exam_phase(state: Any) -> Phase:
    """How the images of one phase name it (a galacto code: no standard one exists)."""
    name = state.value.replace("-", " ")
    return Phase(
        Code(PHASE_STEPS[state], PHASE_SCHEME, f"Galactography {name}"), f"Galactography {name}"
    )


def mpps_start(order: ExamOrder) -> dt.datetime:
    """The start of galacto's MPPS (the exam's opening), as naive local time (DICOM DA/TM)."""
    moment = dt.datetime.fromisoformat(order.opened_at) if order.opened_at else None
    moment = moment or dt.datetime.now(dt.UTC)
    return moment.astimezone().replace(tzinfo=None)


def pps_id(order: ExamOrder) -> str:
    """Performed Procedure Step ID (SH): the exam ID's last 16 characters. galacto's MPPS and
    the forwarded images (C.4.15) must name the same step."""
    return order.exam_id[-16:]


def study_id(order: ExamOrder, current: WorklistItem | None = None) -> str:
    """Study ID (SH): the Requested Procedure ID (of ``current``, the RIS order as it stands,
    when given), else the PPS ID; the same in the MPPS, the dose report and the images."""
    if not order.scheduled:  # IHE's unscheduled case: there is no Requested Procedure
        return pps_id(order)
    procedure = order.requested_procedure_id if current is None else current.requested_procedure_id
    return (procedure or pps_id(order))[:16]


def requested_step(order: ExamOrder) -> RequestedStep:
    """The RIS's request and step as the exam opened it, from the journaled order.

    The MPPS reports it in its Scheduled Step Attributes, and an exam journaled before the
    order was kept whole (no ``ris_item``) is forwarded with it: one reading of the order's
    ``ris_*`` fields for both."""
    return RequestedStep(
        study_instance_uid=order.study_instance_uid,
        accession_number=order.accession,
        requested_procedure_id=order.requested_procedure_id,
        requested_procedure_description=order.requested_procedure_description,
        sps_id=order.ris_sps_id,
        sps_description=order.ris_sps_description,
        protocol_codes=tuple(Code(*c) for c in order.ris_protocol_codes),
    )


def study_identity(order: ExamOrder, current: WorklistItem | None = None) -> StudyIdentity:
    """The identity every forwarded object of the exam carries; ``current``: the RIS order as
    it stands now (None: as the exam opened it)."""
    started = mpps_start(order)
    phases = {phase_sps_id(order.exam_id, state): exam_phase(state) for state in PHASE_STEPS}
    common: dict[str, Any] = {
        "study_date": started.strftime("%Y%m%d"),
        "study_time": started.strftime("%H%M%S"),
        "mpps_instance_uid": order.mpps_instance_uid,
        "pps_id": pps_id(order),
        "phases": phases,
    }
    item = (current or order.ris_item) if order.scheduled else None
    if item is None:
        # Unscheduled (IHE's case: no request, no accession), or an exam journaled before the
        # order was kept whole: the order as the exam opened it.
        request = requested_step(order) if order.scheduled else None
        return StudyIdentity(
            study_instance_uid=order.study_instance_uid,
            study_id=study_id(order),
            patient=order.patient,
            accession_number=order.accession if order.scheduled else "",
            study_description=order.requested_procedure_description,
            request=request,
            **common,
        )
    request = RequestedStep(
        accession_number=item.accession_number,
        requested_procedure_id=item.requested_procedure_id,
        requested_procedure_description=item.requested_procedure_description,
        requested_procedure_codes=item.requested_procedure_codes,
        sps_id=item.sps_id,
        sps_description=item.sps_description,
        protocol_codes=item.protocol_codes,
    )
    study = item.study_instance_uid or order.study_instance_uid
    return StudyIdentity(
        study_instance_uid=study,
        study_id=study_id(order, item),
        patient=item.patient,
        accession_number=item.accession_number,
        referring_physician=item.referring_physician,
        study_description=item.requested_procedure_description or "Galactography",
        request=request,
        replaces=(order.study_instance_uid,) if study != order.study_instance_uid else (),
        **common,
    )


def order_changes(opened: WorklistItem, current: WorklistItem) -> list[str]:
    """What the RIS changed in the order's identity since the exam opened it (console names)."""
    before, after = flatten_patient(vars(opened)), flatten_patient(vars(current))
    return [label for name, label in IDENTITY_ATTRIBUTES.items() if before[name] != after[name]]


def mismatch(order: ExamOrder | None, stored: StoredOrder | None) -> str | None:
    """What the console says when the RIS order no longer is the one the exam opened (None:
    unchanged, or no RIS order)."""
    if order is None or not order.scheduled or order.ris_item is None or stored is None:
        return None
    changes = order_changes(order.ris_item, stored.item)
    if stored.disappeared:
        return (
            "The RIS no longer lists this exam's order (cancelled, or taken off the worklist "
            "once started). The images go to the PACS with the order as last listed; tell the "
            "RIS desk."
        )
    if changes:
        return (
            f"The RIS changed this exam's order since it was opened: {', '.join(changes)}. "
            "The images go to the PACS with the order as it stands when the exam ends."
        )
    return None


def order_at_close(order: ExamOrder, stored: StoredOrder | None) -> dict[str, Any]:
    """The ``order-at-close`` journal payload: the identity the exam's objects carry, and how
    the RIS order stood when the exam ended."""
    current = stored.item if stored is not None else None
    changes: list[str] = []
    if not order.scheduled:
        status = "unscheduled"
    elif stored is None or order.ris_item is None:
        status = "not listed"
    else:
        changes = order_changes(order.ris_item, stored.item)
        status = "no longer listed" if stored.disappeared else "changed" if changes else "as opened"
    return {
        "unit_study_instance_uid": order.study_instance_uid,
        "status": status,
        "changes": changes,
        "identity": study_identity(order, current).to_json(),
    }


class ForwardingIdentity:
    """Which identity a received object is forwarded with (the Forwarder's two questions).

    ``held_for``: an object of the open exam waits until the exam has ended *and* its
    ``order-at-close`` is journaled. ``identity_for``: an object of the exam that ended last
    is coerced to its journaled identity; any other object is forwarded as received.
    """

    def __init__(self, journal: Journal, open_exam: Callable[[], ExamSnapshot | None]) -> None:
        self._journal = journal
        self._open_exam = open_exam
        self._cached: tuple[int, StudyIdentity] | None = None

    def held_for(self, header: Dataset) -> bool:
        view = self._open_exam()
        if view is None or view.order is None:
            return False
        study = view.order.study_instance_uid
        if _study_of(header) != study:
            return False
        return not view.state.is_final or self._closing(study) is None

    def identity_for(self, header: Dataset) -> StudyIdentity | None:
        return self._closing(_study_of(header))

    def _closing(self, study: str) -> StudyIdentity | None:
        entry = self._journal.last(ORDER_AT_CLOSE)
        if entry is None or entry.payload.get("unit_study_instance_uid") != study:
            return None
        if self._cached is None or self._cached[0] != entry.seq:
            self._cached = (entry.seq, StudyIdentity.from_json(entry.payload["identity"]))
        return self._cached[1]


def _study_of(header: Dataset) -> str:
    return str(header.get("StudyInstanceUID", "") or "")
