"""MPPS SCU toward the RIS: one Modality Performed Procedure Step per exam (PS3.4 F.7; IHE RAD-6/7).

The exam's reporting (``acquisition/exam_reporting.py``) builds each message
(:mod:`dicom_nodes.datasets.mpps_builders`) and only *enqueues* it, through :class:`MppsSender`'s
``create`` and ``set``, into the durable outbox (:mod:`dicom_nodes.hospital.outbox`): an RIS
outage never blocks the exam and never loses a message, and the messages of one MPPS instance
leave in order (N-CREATE before its N-SETs).
The outbox calls :func:`exchange` on an established association and classifies the response
with :func:`mpps_outcome`:

* Success / Warning → done; 0111H (duplicate SOP instance) on N-CREATE → done, because it means
  our own earlier N-CREATE got through (resent after a crash: at least once, deduplicated by
  SOP Instance UID at the RIS);
* 0110H with ErrorID A710 (PS3.4 Table F.7.2-2: the step is COMPLETED or DISCONTINUED) →
  terminal, never retried: a final state is final;
* 0112H (no such instance) on N-SET: the RIS lost the MPPS. :func:`deliver` re-creates it once,
  with its whole content (the N-CREATE IN PROGRESS it was created with, then the N-SET), on the
  same association; a second 0112H for the same MPPS is terminal (the console and the journal
  say so);
* statuses that say the request itself is wrong (:data:`MPPS_TERMINAL`) → terminal: sending
  the same bytes again cannot change the verdict;
* anything else (processing failure, resource limitation, no response, no association) →
  retried with backoff.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from dicom_nodes.datasets.uids import new_uid
from dicom_nodes.hospital.outbox import (
    RIS,
    Message,
    Outbox,
    Outcome,
    SendResult,
    default_contexts,
)
from dicom_nodes.hospital.scu import category, status_of
from dicom_nodes.status import FINAL_STATE_ERROR_ID, MppsStatus

log = logging.getLogger(__name__)

N_CREATE = "mpps_create"
N_SET = "mpps_set"

DONE = Outcome.DONE
RETRY = Outcome.RETRY
TERMINAL = Outcome.TERMINAL

#: N-CREATE / N-SET failures that retrying can never change (PS3.7 C.4.2, C.4.3; PS3.4 F.7.2).
MPPS_TERMINAL: frozenset[int] = frozenset(
    {
        MppsStatus.NO_SUCH_ATTRIBUTE,  # 0105H
        MppsStatus.INVALID_ATTRIBUTE_VALUE,  # 0106H
        MppsStatus.NO_SUCH_OBJECT_INSTANCE,  # 0112H
        0x0116,  # attribute value out of range
        0x0117,  # invalid object instance
        MppsStatus.MISSING_ATTRIBUTE,  # 0120H
        MppsStatus.MISSING_ATTRIBUTE_VALUE,  # 0121H
        0x0122,  # SOP class not supported
    }
)


def mpps_outcome(operation: str, status: int, error_id: int | None) -> str:
    """``"done"``, ``"retry"`` or ``"terminal"`` for one N-CREATE/N-SET response."""
    if category(status) in ("Success", "Warning"):
        return DONE
    if operation == N_CREATE and status == MppsStatus.DUPLICATE_SOP_INSTANCE:
        return DONE
    if status == MppsStatus.PROCESSING_FAILURE and error_id == FINAL_STATE_ERROR_ID:
        return TERMINAL
    if status in MPPS_TERMINAL:
        return TERMINAL
    return RETRY


@dataclass(frozen=True)
class MppsResponse:
    """What the RIS answered to one N-CREATE or N-SET, and what it means for the message."""

    status: int
    error_id: int | None
    error_comment: str
    outcome: str


def exchange(
    assoc: Association, operation: str, sop_instance_uid: str, dataset: Dataset
) -> MppsResponse:
    """Send one N-CREATE (F.7.2.1) or N-SET (F.7.2.2) on ``assoc`` and classify the answer.

    Raises :class:`~dicom_nodes.hospital.scu.DimseError` when no valid response came back.
    """
    if operation == N_CREATE:
        response, _ = assoc.send_n_create(dataset, ModalityPerformedProcedureStep, sop_instance_uid)
    elif operation == N_SET:
        response, _ = assoc.send_n_set(dataset, ModalityPerformedProcedureStep, sop_instance_uid)
    else:
        raise ValueError(f"not an MPPS operation: {operation!r}")
    status = status_of(response)
    raw_error_id = response.get("ErrorID")
    error_id = int(raw_error_id) if raw_error_id not in (None, "") else None
    comment = str(response.get("ErrorComment") or "")
    outcome = mpps_outcome(operation, status, error_id)
    if outcome == DONE and status == MppsStatus.DUPLICATE_SOP_INSTANCE:
        log.info("MPPS N-CREATE answered 0111H: already created by an earlier attempt")
    return MppsResponse(status, error_id, comment, outcome)


#: The recovery note of an MPPS re-created after 0112H (at most once per instance).
RECREATED = "re-created after 0112H (the RIS had lost it)"


@dataclass(frozen=True)
class Delivery:
    """One N-CREATE or N-SET to send, and what its re-creation would need."""

    operation: str
    sop_instance_uid: str
    dataset: Dataset
    #: The N-CREATE content the instance was created with (None: not known).
    created_with: Dataset | None = None
    #: Whether the instance was already re-created once.
    recreated: bool = False


def deliver(assoc: Association, delivery: Delivery) -> tuple[MppsResponse, str | None]:
    """:func:`exchange` one message; an N-SET answered 0112H re-creates the MPPS once (see the
    module docstring). Returns the answer that decides the message and the recovery done."""
    uid = delivery.sop_instance_uid
    answer = exchange(assoc, delivery.operation, uid, delivery.dataset)
    if delivery.operation != N_SET or answer.status != MppsStatus.NO_SUCH_OBJECT_INSTANCE:
        return answer, None
    if delivery.recreated or delivery.created_with is None:
        why = "again, after it was re-created" if delivery.recreated else "(no N-CREATE to redo)"
        log.error("MPPS N-SET answered 0112H %s: not retried", why)
        comment = f"the RIS lost the MPPS {why}"
        return dataclasses.replace(answer, outcome=TERMINAL, error_comment=comment), None
    log.warning("MPPS N-SET answered 0112H: the RIS lost the MPPS; re-creating it once")
    created = exchange(assoc, N_CREATE, uid, delivery.created_with)
    if created.outcome != DONE:
        return created, None  # retried (or terminal) as an N-CREATE would be
    return exchange(assoc, N_SET, uid, delivery.dataset), RECREATED


def new_mpps_uid(uid_root: str) -> str:
    """A new MPPS SOP Instance UID under the site's root (PS3.5 §9)."""
    return new_uid(uid_root)


class MppsSender:
    """The outbox's sender of MPPS N-CREATE and N-SET messages (toward the RIS).

    The messages of one instance leave in the order they were enqueued (N-CREATE before its
    N-SETs); an N-SET answered 0112H re-creates the MPPS once from the N-CREATE it was created
    with (:func:`deliver`).
    """

    destination = RIS
    ordered = True
    alerted = True

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        outbox.register([N_CREATE, N_SET], self)

    def create(self, sop_instance_uid: str, dataset: Dataset) -> None:
        """Queue the MPPS N-CREATE (PS3.4 F.7.2.1) of ``sop_instance_uid``; idempotent."""
        self.outbox.enqueue(
            N_CREATE,
            RIS,
            ModalityPerformedProcedureStep,
            sop_instance_uid,
            payload_json=dataset.to_json(),
        )

    def set(
        self,
        sop_instance_uid: str,
        dataset: Dataset,
        *,
        awaits: Sequence[str] = (),
        hold_s: float = 0.0,
    ) -> None:
        """Queue an MPPS N-SET (PS3.4 F.7.2.2); sent after every earlier message of the step.

        ``awaits``: SOP Instance UIDs that the PACS must have stored (committed, with storage
        commitment) before it leaves, for at most ``hold_s`` seconds from now.
        """
        self.outbox.enqueue(
            N_SET,
            RIS,
            ModalityPerformedProcedureStep,
            sop_instance_uid,
            payload_json=dataset.to_json(),
            awaits=awaits,
            hold_s=hold_s,
        )

    def send(self, assoc: Association, message: Message) -> SendResult:
        assert message.payload_json is not None
        instance = self.outbox.messages(message.sop_instance_uid)
        created = next((m for m in instance if m.kind == N_CREATE), None)
        delivery = Delivery(
            message.kind,
            message.sop_instance_uid,
            Dataset.from_json(message.payload_json),
            created_with=(
                Dataset.from_json(created.payload_json)
                if created is not None and created.payload_json
                else None
            ),
            recreated=any(m.recovery == RECREATED for m in instance),
        )
        answer, recovery = deliver(assoc, delivery)
        return answer.outcome, answer.status, answer.error_comment or None, recovery

    def contexts(self, messages: Sequence[Message]) -> list[PresentationContext]:
        return default_contexts(messages)

    def before_round(self, now_s: float) -> None:
        """Nothing of its own: the outbox's order and holds are enough."""

    def handlers(self) -> list[tuple[Any, ...]]:
        return []
