"""MPPS SCP: the Modality Performed Procedure Step SOP Class as SCP (PS3.4 Annex F).

The rules are ours (pynetdicom only carries the messages; dicom.md §2, §4):

- N-CREATE (F.7.2.1): the instance UID is the SCU's (if it sends none we assign one and
  return it, PS3.7 10.1.5.1.4); a known UID → 0111H; Performed Procedure Step Status other
  than IN PROGRESS → 0106H; a Type 1 or Type 2 attribute of Table F.7.2-1 missing → 0120H; a
  Type 1 attribute empty → 0121H.
- N-SET (F.7.2.2): unknown instance → 0112H; instance COMPLETED or DISCONTINUED → 0110H with
  Error ID A710 and the Error Comment of Table F.7.2-2; an attribute the instance does not
  have (not created at N-CREATE, F.7.2.2.1: "only attributes created by the N-CREATE may be
  set") → 0105H No such attribute, with the Attribute Identifier List; an attribute Table F.7.2-1
  marks "Not allowed" for N-SET changed to another value → 0106H (the same value sent again
  is accepted: some units echo the identity attributes); a final status without PPS End
  Date/Time or without a Performed Series item carrying Series Instance UID and Protocol Name →
  0121H. Sequences in the Modification List replace the stored sequences whole.
- The Radiation Dose module is turned into exposure records and written through the exposure
  sink, then the merged state is persisted, both *before* the response; a failed write answers
  0110H (without Error ID) and leaves the stored state as it was. Every request is logged as
  received with the status answered: with an :class:`AtomicMppsStore` (the SQLite store) in the
  same transaction as the state; with another store just after it (a failure to log is then
  reported at ERROR, not to the unit, since the state it describes is already durable).
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET

from dicom_nodes.datasets.dose_extract import DoseDataError, from_mpps, step_totals
from dicom_nodes.datasets.uids import new_uid
from dicom_nodes.status import MppsStatus, final_state_status, status_dataset
from dicom_nodes.unit_facing.mpps_store import (
    AtomicMppsStore,
    MppsInstance,
    MppsStore,
    ReceivedMessage,
)
from dicom_nodes.unit_facing.value_lengths import overlong_elements
from dose.plausibility import QaPatterns
from dose.record import ExposureRecord, ExposureSink

log = logging.getLogger(__name__)

MODALITY_PERFORMED_PROCEDURE_STEP = "1.2.840.10008.3.1.2.3.3"
IN_PROGRESS = "IN PROGRESS"
FINAL_STATES = frozenset({"COMPLETED", "DISCONTINUED"})
ALL_STATES = frozenset({IN_PROGRESS, *FINAL_STATES})


@dataclass(frozen=True)
class Requirement:
    """One row of PS3.4 Table F.7.2-1 for the SCU's N-CREATE (type 1 or 2)."""

    keyword: str
    n_create_type: int
    n_set_allowed: bool


#: PS3.4 Table F.7.2-1 (top level), N-CREATE SCU requirement and whether N-SET may change it.
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("ScheduledStepAttributesSequence", 1, False),
    Requirement("PatientName", 2, False),
    Requirement("PatientID", 2, False),
    Requirement("PatientBirthDate", 2, False),
    Requirement("PatientSex", 2, False),
    Requirement("ReferencedPatientSequence", 2, False),
    Requirement("PerformedProcedureStepID", 1, False),
    Requirement("PerformedStationAETitle", 1, False),
    Requirement("PerformedStationName", 2, False),
    Requirement("PerformedLocation", 2, False),
    Requirement("PerformedProcedureStepStartDate", 1, False),
    Requirement("PerformedProcedureStepStartTime", 1, False),
    Requirement("PerformedProcedureStepStatus", 1, True),
    Requirement("PerformedProcedureStepDescription", 2, True),
    Requirement("PerformedProcedureTypeDescription", 2, True),
    Requirement("ProcedureCodeSequence", 2, True),
    Requirement("PerformedProcedureStepEndDate", 2, True),
    Requirement("PerformedProcedureStepEndTime", 2, True),
    Requirement("Modality", 1, False),
    Requirement("StudyID", 2, False),
    Requirement("PerformedProtocolCodeSequence", 2, True),
    Requirement("PerformedSeriesSequence", 2, True),
)

#: Inside each Scheduled Step Attributes Sequence item (Table F.7.2-1).
STEP_ITEM_REQUIREMENTS: tuple[tuple[str, int], ...] = (
    ("StudyInstanceUID", 1),
    ("ReferencedStudySequence", 2),
    ("AccessionNumber", 2),
    ("RequestedProcedureID", 2),
    ("RequestedProcedureDescription", 2),
    ("ScheduledProcedureStepID", 2),
    ("ScheduledProcedureStepDescription", 2),
    ("ScheduledProtocolCodeSequence", 2),
)

#: Final state (COMPLETED / DISCONTINUED): values required (Table F.7.2-1 "Final State").
FINAL_REQUIRED_VALUES = ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime")
FINAL_SERIES_ITEM_VALUES = ("SeriesInstanceUID", "ProtocolName")

NOT_SETTABLE = frozenset(r.keyword for r in REQUIREMENTS if not r.n_set_allowed)

StepResolver = Callable[[ExposureRecord], bool]


def has_scheduled_step(record: ExposureRecord) -> bool:
    """Default step resolver: the exposure names a Scheduled Procedure Step ID."""
    return bool(record.sps_id)


class Refusal(Exception):
    """A request refused with a status (raised inside the rule engine only)."""

    def __init__(self, status: int | Dataset, why: str) -> None:
        super().__init__(why)
        self.status = status


def _is_empty(ds: Dataset, keyword: str) -> bool:
    value = ds[keyword].value
    return value is None or value == "" or (isinstance(value, list) and not value)


def check_lengths(attributes: Dataset) -> None:
    """0106H with an Error Comment naming the attribute for a value longer than its VR
    allows (PS3.5 Table 6.2-1): a 70 KB Long String is not kept, nor sent on to the RIS."""
    try:
        overlong = overlong_elements(attributes)
    except Exception as exc:
        raise Refusal(
            status_dataset(MppsStatus.INVALID_ATTRIBUTE_VALUE, error_comment="unreadable value"),
            "unreadable value",
        ) from exc
    if overlong:  # the comment names the attribute (an N-CREATE-RSP has no identifier list)
        raise Refusal(
            status_dataset(
                MppsStatus.INVALID_ATTRIBUTE_VALUE, error_comment=f"value too long: {overlong[0]}"
            ),
            f"value too long: {overlong[0]}",
        )


def check_n_create(attributes: Dataset) -> None:
    """Raise :class:`Refusal` unless ``attributes`` is a valid N-CREATE Attribute List."""
    check_lengths(attributes)
    missing = [r.keyword for r in REQUIREMENTS if r.keyword not in attributes]
    empty_type1 = [
        r.keyword
        for r in REQUIREMENTS
        if r.n_create_type == 1 and r.keyword in attributes and _is_empty(attributes, r.keyword)
    ]
    for item in attributes.get("ScheduledStepAttributesSequence") or []:
        missing += [kw for kw, _ in STEP_ITEM_REQUIREMENTS if kw not in item]
        empty_type1 += [
            kw
            for kw, kind in STEP_ITEM_REQUIREMENTS
            if kind == 1 and kw in item and _is_empty(item, kw)
        ]
    if missing:
        raise Refusal(
            status_dataset(MppsStatus.MISSING_ATTRIBUTE, error_comment="Missing attribute"),
            f"missing {', '.join(missing)}",
        )
    if empty_type1:
        raise Refusal(
            status_dataset(
                MppsStatus.MISSING_ATTRIBUTE_VALUE, error_comment="Missing attribute value"
            ),
            f"empty {', '.join(empty_type1)}",
        )
    if attributes.PerformedProcedureStepStatus != IN_PROGRESS:
        raise Refusal(
            status_dataset(
                MppsStatus.INVALID_ATTRIBUTE_VALUE,
                error_comment="Performed Procedure Step Status must be IN PROGRESS",
            ),
            "N-CREATE not IN PROGRESS",
        )


def merge_n_set(current: Dataset, modifications: Dataset) -> Dataset:
    """Apply an N-SET Modification List to ``current``; raise :class:`Refusal` if not allowed."""
    check_lengths(modifications)
    unknown = [elem.tag for elem in modifications if elem.tag not in current]
    if unknown:
        raise Refusal(
            status_dataset(
                MppsStatus.NO_SUCH_ATTRIBUTE,
                error_comment="Attribute not created by N-CREATE",
                attribute_tags=[int(tag) for tag in unknown],
            ),
            "attribute not created at N-CREATE",
        )
    changed_identity = [
        elem.keyword
        for elem in modifications
        if elem.keyword in NOT_SETTABLE and elem.value != current[elem.tag].value
    ]
    if changed_identity:
        raise Refusal(
            status_dataset(
                MppsStatus.INVALID_ATTRIBUTE_VALUE,
                error_comment="Not allowed in N-SET: " + " ".join(changed_identity),
            ),
            "N-SET of a not-allowed attribute",
        )
    merged = copy.deepcopy(current)
    for elem in modifications:
        merged[elem.tag] = copy.deepcopy(elem)
    status = merged.PerformedProcedureStepStatus
    if status not in ALL_STATES:
        raise Refusal(
            status_dataset(
                MppsStatus.INVALID_ATTRIBUTE_VALUE,
                error_comment="Unknown Performed Procedure Step Status",
            ),
            "bad status value",
        )
    if status in FINAL_STATES:
        _check_final(merged)
    return merged


def _check_final(merged: Dataset) -> None:
    lacking = [kw for kw in FINAL_REQUIRED_VALUES if _is_empty(merged, kw)]
    series = list(merged.get("PerformedSeriesSequence") or [])
    if not series:
        lacking.append("PerformedSeriesSequence")
    for item in series:
        lacking += [kw for kw in FINAL_SERIES_ITEM_VALUES if kw not in item or _is_empty(item, kw)]
    if lacking:
        raise Refusal(
            status_dataset(
                MppsStatus.MISSING_ATTRIBUTE_VALUE,
                error_comment="Final state needs end date/time and a performed series",
            ),
            f"final state lacks {', '.join(lacking)}",
        )


class MppsSCP:
    """MPPS SOP Class SCP bound to a store and an exposure sink.

    ``contexts`` lists the abstract syntaxes to add with ``AE.add_supported_context``;
    ``handlers()`` returns the ``(event, handler)`` pairs to pass to ``start_server``.
    One lock serialises operations so N-CREATE/N-SET races between associations are ordered.
    """

    contexts: tuple[str, ...] = (MODALITY_PERFORMED_PROCEDURE_STEP,)

    def __init__(
        self,
        store: MppsStore,
        sink: ExposureSink | None = None,
        *,
        step_resolver: StepResolver = has_scheduled_step,
        uid_prefix: str | None = None,
        on_message: Callable[[str, str, str, int], None] | None = None,
        qa_patterns: QaPatterns | None = None,
    ) -> None:
        self._store = store
        self._qa = qa_patterns  # marks physics/QA exposures (dose.plausibility)
        #: Called with (operation, SOP Instance UID, calling AE, status) after every N-CREATE
        #: and N-SET is answered-to-be (the journal); its failure never changes the answer.
        self._on_message = on_message
        # ``site.uid_root`` has no trailing dot; generate_uid wants one.
        self._uid_prefix = uid_prefix.rstrip(".") + "." if uid_prefix else None
        self._sink = sink
        self._resolve_step = step_resolver
        self._lock = threading.Lock()

    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_N_CREATE, self.handle_create), (evt.EVT_N_SET, self.handle_set)]

    # ------------------------------------------------------------------ N-CREATE
    def handle_create(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """EVT_N_CREATE (PS3.4 F.7.2.1)."""
        calling_ae = _calling_ae(event)
        requested = cast(N_CREATE, event.request).AffectedSOPInstanceUID
        uid = str(requested) if requested else new_uid(self._uid_prefix)
        attributes: Dataset = event.attribute_list
        status, reply = self._answer("N-CREATE", uid, calling_ae, attributes, self._create)
        if not requested and reply is not None:
            reply = copy.copy(reply)
            reply.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the N-CREATE-RSP
        return status, reply

    def _create(self, uid: str, attributes: Dataset, calling_ae: str) -> tuple[Dataset, bool]:
        """Check and store a new instance: (the reply, whether its message was logged with it)."""
        if self._store.get(uid) is not None:
            raise Refusal(MppsStatus.DUPLICATE_SOP_INSTANCE, "duplicate instance")
        check_n_create(attributes)
        instance = MppsInstance(uid, IN_PROGRESS, calling_ae, copy.deepcopy(attributes))
        self._record_dose(instance)
        message = ReceivedMessage(uid, "N-CREATE", calling_ae, MppsStatus.SUCCESS, attributes)
        logged = self._persist(instance, message, created=True)
        log.info("MPPS created by %s (IN PROGRESS)", calling_ae)
        return attributes, logged

    # ------------------------------------------------------------------ N-SET
    def handle_set(self, event: evt.Event) -> tuple[int | Dataset, Dataset | None]:
        """EVT_N_SET (PS3.4 F.7.2.2); reads ``event.modification_list``."""
        calling_ae = _calling_ae(event)
        uid = str(cast(N_SET, event.request).RequestedSOPInstanceUID)
        modifications: Dataset = event.modification_list
        return self._answer("N-SET", uid, calling_ae, modifications, self._set)

    def _set(self, uid: str, modifications: Dataset, calling_ae: str) -> tuple[None, bool]:
        """Check and merge an N-SET: (no reply, whether its message was logged with it)."""
        current = self._store.get(uid)
        if current is None:
            raise Refusal(MppsStatus.NO_SUCH_OBJECT_INSTANCE, "unknown instance")
        if current.status in FINAL_STATES:
            raise Refusal(final_state_status(), f"instance already {current.status}")
        merged = merge_n_set(current.dataset, modifications)
        instance = MppsInstance(uid, merged.PerformedProcedureStepStatus, calling_ae, merged)
        self._record_dose(instance)
        message = ReceivedMessage(uid, "N-SET", calling_ae, MppsStatus.SUCCESS, modifications)
        logged = self._persist(instance, message, created=False)
        log.info("MPPS set by %s (%s)", calling_ae, instance.status)
        return None, logged

    # ------------------------------------------------------------------ helpers
    def _answer(
        self,
        operation: str,
        uid: str,
        calling_ae: str,
        received: Dataset,
        action: Callable[[str, Dataset, str], tuple[Dataset | None, bool]],
    ) -> tuple[int | Dataset, Dataset | None]:
        """Run ``action(uid, received, calling_ae)`` under the lock (its outcome mapped to a
        status by :func:`_answered`), log the message as received unless the store logged it
        with the state, and tell the message hook."""
        with self._lock:
            status, reply, logged = _answered(
                operation, calling_ae, lambda: action(uid, received, calling_ae)
            )
            code = int(status.Status) if isinstance(status, Dataset) else int(status)
            if not logged:
                self._log(ReceivedMessage(uid or None, operation, calling_ae, code, received))
            self._notify(operation, uid, calling_ae, code)
        return status, reply

    def _notify(self, operation: str, uid: str, calling_ae: str, code: int) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(operation, uid, calling_ae, code)
        except Exception:
            log.exception("MPPS %s: message hook failed", operation)

    def _persist(self, instance: MppsInstance, message: ReceivedMessage, *, created: bool) -> bool:
        """Save the merged state (and the message with it when the store can); True if logged."""
        totals = step_totals(instance.dataset)
        if isinstance(self._store, AtomicMppsStore):
            self._store.save_with_message(instance, message, created=created, step_totals=totals)
            return True
        self._store.save(instance, created=created, step_totals=totals)
        return False

    def _record_dose(self, instance: MppsInstance) -> None:
        if self._sink is None:
            return
        records = [
            record.with_values(known_step=self._resolve_step(record))
            for record in from_mpps(
                instance.dataset,
                mpps_instance_uid=instance.sop_instance_uid,
                station_ae=instance.calling_ae,
                qa=self._qa,
            )
        ]
        self._sink.record(records)

    def _log(self, message: ReceivedMessage) -> None:
        try:
            self._store.log_message(message)
        except Exception:
            log.exception("MPPS %s could not be logged", message.operation)


def _answered(
    verb: str, calling_ae: str, action: Callable[[], tuple[Dataset | None, bool]]
) -> tuple[int | Dataset, Dataset | None, bool]:
    """Run one N-CREATE/N-SET and map its outcome to a status (PS3.4 F.7.2): a refusal to its
    own status, an unreadable dose module to 0106H, a storage failure to 0110H (never
    acknowledged). Returns ``(status, reply, logged)``."""
    try:
        reply, logged = action()
    except Refusal as refusal:
        log.warning("MPPS %s refused from %s: %s", verb, calling_ae, refusal)
        return refusal.status, None, False
    except DoseDataError as exc:
        log.warning("MPPS %s from %s: unreadable dose module: %s", verb, calling_ae, exc)
        return MppsStatus.INVALID_ATTRIBUTE_VALUE, None, False
    except Exception:
        log.exception("MPPS %s from %s could not be stored", verb, calling_ae)
        return MppsStatus.PROCESSING_FAILURE, None, False
    return MppsStatus.SUCCESS, reply, logged


def _calling_ae(event: evt.Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


__all__ = ["REQUIREMENTS", "MppsSCP", "Refusal", "check_n_create", "merge_n_set"]
