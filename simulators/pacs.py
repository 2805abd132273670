"""A simulated PACS: Storage SCP and Storage Commitment Push Model SCP on loopback.

What it models
--------------
- **Storage** (PS3.4 Annex B) of Digital Mammography (For Presentation / For Processing), Breast
  Tomosynthesis, X-Ray Radiation Dose SR, Performed Imaging Agent Administration SR and the
  general SR classes. Objects are kept as received (encoded bytes, never decoded), in memory or
  under ``storage_dir`` as ``<SOP Instance UID>.dcm``, indexed by SOP Instance UID. A duplicate
  is answered Success, counted, and not stored twice.
- **Storage Commitment Push Model** (PS3.4 Annex J): N-ACTION "Request Storage Commitment" is
  answered Success at once, which means only "request accepted" (J.3.2). The result follows as
  an N-EVENT-REPORT (J.3.3): event type 1 when every instance is committed, 2 when failures
  exist, with the Failed SOP Sequence and a Failure Reason per instance (J.3.3.1.1). It is sent
  on a *separate association that the PACS opens* to ``commitment_target`` (proposing the SCP
  role, PS3.7 D.3.3.4), or on the requester's association when no target is configured or
  ``commitment_on_same_association`` is set.
- **Faults** (mutable at run time through ``pacs.faults``): commitment delay, storage refused
  with A700, commitment failures for some or all instances, association aborted in the middle
  of a C-STORE, and ``down()``/``up()`` (stops listening, comes back on the same port).

What it does NOT model
----------------------
No query/retrieve, no study/series model, no validation of the stored objects, no persistence
across restarts (unless ``storage_dir`` is reused, and then only the files), no N-EVENT-REPORT
retries beyond a few quick attempts, no per-AE routing table (one commitment target), no TLS.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import logging
import queue
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    BasicTextSRStorage,
    BreastTomosynthesisImageStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    EnhancedSRStorage,
    EnhancedXRayRadiationDoseSRStorage,
    KeyObjectSelectionDocumentStorage,
    PerformedImagingAgentAdministrationSRStorage,
    StorageCommitmentPushModel,
    Verification,
    XRayRadiationDoseSRStorage,
)
from pynetdicom.status import code_to_category

from dicom_nodes.datasets.references import sop_references
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae

from .dicom_peer import SimulatedPeer

log = logging.getLogger(__name__)

#: Storage SOP classes the simulated PACS accepts (PS3.4 B.5).
STORAGE_SOP_CLASSES: tuple[str, ...] = (
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    BreastTomosynthesisImageStorage,
    XRayRadiationDoseSRStorage,
    EnhancedXRayRadiationDoseSRStorage,
    PerformedImagingAgentAdministrationSRStorage,
    BasicTextSRStorage,
    EnhancedSRStorage,
    ComprehensiveSRStorage,
    Comprehensive3DSRStorage,
    KeyObjectSelectionDocumentStorage,
)

#: Storage Commitment Push Model SOP Instance (PS3.4 J.3.5): the well-known instance UID.
STORAGE_COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"

#: N-ACTION Action Type ID "Request Storage Commitment" (PS3.4 J.3.2).
ACTION_REQUEST_COMMITMENT = 1

#: N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3).
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

#: C-STORE status "Refused: Out of Resources" (PS3.4 B.2.3).
STATUS_STORE_OUT_OF_RESOURCES = 0xA700

#: N-ACTION failure statuses (PS3.7 Annex C): missing attribute, no such action type.
STATUS_MISSING_ATTRIBUTE = 0x0120
STATUS_NO_SUCH_ACTION = 0x0123


class FailureReason(enum.IntEnum):
    """Failure Reason (0008,1197) values for the Failed SOP Sequence (PS3.4 J.3.3.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    RESOURCE_LIMITATION = 0x0213
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    CLASS_INSTANCE_CONFLICT = 0x0119
    DUPLICATE_TRANSACTION_UID = 0x0131


class Refusal(enum.Enum):
    """What the PACS refuses (the ``--refuse`` fault)."""

    NONE = "none"
    STORAGE = "storage"  #: every C-STORE answers A700
    COMMITMENT = "commitment"  #: every commitment item fails (event type 2)
    COMMITMENT_SOME = "commitment-some"  #: a seeded half of the items fail


@dataclass
class PacsFaults:
    """Fault controls; tests and the CLI change them while the PACS runs."""

    delay_commitment_s: float = 0.0
    refuse: Refusal = Refusal.NONE
    #: Send A-ABORT instead of answering the next N C-STOREs (nothing is stored).
    drop_stores: int = 0


@dataclass
class ReceivedObject:
    """One stored instance, as received (never decoded on receipt)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    received_at: datetime
    times_received: int = 1
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> Dataset:
        """Decode the stored object (file meta included)."""
        if self.path is not None:
            return dcmread(self.path)
        assert self.data is not None
        return dcmread(DicomBytesIO(self.data))


@dataclass
class CommitmentReport:
    """One Storage Commitment transaction and the N-EVENT-REPORT that closed it."""

    transaction_uid: str
    requester_ae: str
    requested: list[tuple[str, str]]  #: (SOP Class UID, SOP Instance UID)
    committed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, FailureReason]] = field(default_factory=list)
    event_type_id: int = 0
    delivered: bool = False
    delivery_status: int | None = None
    attempts: int = 0
    via: str = ""  #: "separate" or "same" association


@dataclass
class _PacsState:
    objects: dict[str, ReceivedObject] = field(default_factory=dict)
    stores_refused: int = 0
    stores_dropped: int = 0
    reports: list[CommitmentReport] = field(default_factory=list)


@dataclass
class _PendingCommitment:
    report: CommitmentReport
    assoc: Any  #: the requester's association (for delivery on the same association)


class SimulatedPacs(SimulatedPeer):
    """Storage SCP + Storage Commitment SCP; see the module docstring for what it models."""

    def __init__(
        self,
        ae_title: str = "PACS",
        seed: int = 0,
        storage_dir: str | Path | None = None,
        *,
        commitment_target: tuple[str, int, str] | None = None,
        commitment_on_same_association: bool = False,
        faults: PacsFaults | None = None,
        timeouts: Timeouts | None = None,
        delivery_attempts: int = 3,
        delivery_backoff_s: float = 0.2,
    ) -> None:
        super().__init__(ae_title, timeouts if timeouts is not None else Timeouts(dimse_s=10.0))
        self.storage_dir = Path(storage_dir) if storage_dir is not None else None
        self.commitment_target = commitment_target
        self.commitment_on_same_association = commitment_on_same_association
        self.faults = faults if faults is not None else PacsFaults()
        self.delivery_attempts = delivery_attempts
        self.delivery_backoff_s = delivery_backoff_s
        self._rng = random.Random(seed)
        self._state = _PacsState()
        self._changed = threading.Condition(threading.RLock())
        self._queue: queue.Queue[_PendingCommitment | None] = queue.Queue()
        self._worker: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------

    kind = "PACS"

    def _on_start(self) -> None:
        if self.storage_dir is not None:
            self.storage_dir.mkdir(parents=True, exist_ok=True)
        self._worker = threading.Thread(
            target=self._deliver_loop, name=f"pacs-commitment-{self.ae_title}", daemon=True
        )
        self._worker.start()

    def _on_stop(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=self.timeouts.connection_s + self.timeouts.dimse_s)
            self._worker = None

    def accept_only(self, sop_class_uid: str, transfer_syntaxes: Iterable[str]) -> None:
        """Fault: from the next association on, accept ``sop_class_uid`` only in these transfer
        syntaxes (none: refuse the SOP class), as a PACS limited by its licence or codecs."""
        if self._ae is None:
            raise RuntimeError("the simulated PACS is not started")
        self._ae.remove_supported_context(sop_class_uid)
        syntaxes = list(transfer_syntaxes)
        if syntaxes:
            self._ae.add_supported_context(sop_class_uid, syntaxes)
        if self.is_up:  # a listening server keeps the contexts it started with
            self.down()
            self.up()

    # -- queries for tests ------------------------------------------------------------------

    def received(self) -> list[ReceivedObject]:
        """Every distinct stored instance, in order of first arrival (snapshots)."""
        with self._changed:
            return [dataclasses.replace(o) for o in self._state.objects.values()]

    def get(self, sop_instance_uid: str) -> ReceivedObject | None:
        with self._changed:
            stored = self._state.objects.get(sop_instance_uid)
            return dataclasses.replace(stored) if stored is not None else None

    def duplicates(self) -> int:
        """How many C-STOREs repeated an instance already stored."""
        with self._changed:
            return sum(o.times_received - 1 for o in self._state.objects.values())

    def stores_refused(self) -> int:
        with self._changed:
            return self._state.stores_refused

    def stores_dropped(self) -> int:
        with self._changed:
            return self._state.stores_dropped

    def commitment_reports(self) -> list[CommitmentReport]:
        """Every commitment transaction received, in order."""
        with self._changed:
            return copy.deepcopy(self._state.reports)

    def committed(self) -> set[str]:
        """SOP Instance UIDs reported committed in a *delivered* N-EVENT-REPORT."""
        with self._changed:
            return {uid for r in self._state.reports if r.delivered for _cls, uid in r.committed}

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` is true; False on timeout.

        Re-checked on every change of the PACS's state, and every 50 ms for predicates that
        also look at the peer's side.
        """
        return wait_until(self._changed, predicate, timeout_s)

    # -- association set-up -------------------------------------------------------------------

    def _build_ae(self) -> AE:
        ae = make_ae(self.ae_title, self.timeouts)
        for uid in STORAGE_SOP_CLASSES:
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(StorageCommitmentPushModel)
        ae.add_supported_context(Verification)
        return ae

    def _handlers(self) -> list[Any]:
        return [
            (evt.EVT_C_STORE, _handle_store, [self]),
            (evt.EVT_N_ACTION, _handle_commitment_request, [self]),
        ]

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # -- storage (PS3.4 B.2) ----------------------------------------------------------------

    def _store(self, event: evt.Event) -> int:
        request: Any = event.request  # a C_STORE primitive
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        sop_class_uid = str(request.AffectedSOPClassUID)
        calling_ae = str(event.assoc.requestor.ae_title)
        with self._changed:
            if self.faults.drop_stores > 0:
                self.faults.drop_stores -= 1
                self._state.stores_dropped += 1
                self._changed.notify_all()
                drop = True
            else:
                drop = False
        if drop:
            log.info("fault: aborting the association in the middle of a C-STORE")
            event.assoc.abort()
            return STATUS_STORE_OUT_OF_RESOURCES  # never sent: the association is gone
        if self.faults.refuse is Refusal.STORAGE:
            with self._changed:
                self._state.stores_refused += 1
                self._changed.notify_all()
            return STATUS_STORE_OUT_OF_RESOURCES
        with self._changed:
            existing = self._state.objects.get(sop_instance_uid)
            if existing is not None:
                existing.times_received += 1
                self._changed.notify_all()
                log.debug("duplicate C-STORE of an instance already stored")
                return 0x0000
        stored = ReceivedObject(
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=calling_ae,
            received_at=datetime.now(UTC),
        )
        received_file = _received_file(event)
        if self.storage_dir is not None:
            stored.path = self.storage_dir / f"{sop_instance_uid}.dcm"
            if received_file is not None:
                shutil.move(received_file, stored.path)
            else:
                stored.path.write_bytes(event.encoded_dataset(include_meta=True))
        elif received_file is not None:
            stored.data = received_file.read_bytes()
        else:
            stored.data = event.encoded_dataset(include_meta=True)
        with self._changed:
            # Two associations may race on the same instance: the first one in wins.
            existing = self._state.objects.setdefault(sop_instance_uid, stored)
            if existing is not stored:
                existing.times_received += 1
            self._changed.notify_all()
        return 0x0000

    # -- storage commitment (PS3.4 J.3) ------------------------------------------------------

    def _request_commitment(self, event: evt.Event) -> tuple[int, Dataset | None]:
        if event.action_type != ACTION_REQUEST_COMMITMENT:
            return STATUS_NO_SUCH_ACTION, None
        info: Dataset = event.action_information
        transaction_uid = str(info.get("TransactionUID", "") or "")
        items = info.get("ReferencedSOPSequence") or []
        if not transaction_uid or not items:
            return STATUS_MISSING_ATTRIBUTE, None
        requested = [_reference(item) for item in items]
        if not all(cls and uid for cls, uid in requested):
            return STATUS_MISSING_ATTRIBUTE, None
        report = CommitmentReport(
            transaction_uid=transaction_uid,
            requester_ae=str(event.assoc.requestor.ae_title),
            requested=requested,
        )
        with self._changed:
            duplicate = any(r.transaction_uid == transaction_uid for r in self._state.reports)
            self._state.reports.append(report)
            self._changed.notify_all()
        self._decide(report, duplicate_transaction=duplicate)
        self._queue.put(_PendingCommitment(report, event.assoc))
        return 0x0000, None

    def _decide(self, report: CommitmentReport, *, duplicate_transaction: bool) -> None:
        """Commit or fail each referenced instance (J.3.3.1.1 Failure Reasons)."""
        refuse = self.faults.refuse
        with self._changed:
            for sop_class_uid, sop_instance_uid in report.requested:
                stored = self._state.objects.get(sop_instance_uid)
                reason: FailureReason | None = None
                if duplicate_transaction:
                    reason = FailureReason.DUPLICATE_TRANSACTION_UID
                elif sop_class_uid not in STORAGE_SOP_CLASSES:
                    reason = FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED
                elif stored is None:
                    reason = FailureReason.NO_SUCH_OBJECT_INSTANCE
                elif stored.sop_class_uid != sop_class_uid:
                    reason = FailureReason.CLASS_INSTANCE_CONFLICT
                elif refuse is Refusal.COMMITMENT or (
                    refuse is Refusal.COMMITMENT_SOME and self._rng.random() < 0.5
                ):
                    reason = FailureReason.RESOURCE_LIMITATION
                if reason is None:
                    report.committed.append((sop_class_uid, sop_instance_uid))
                else:
                    report.failed.append((sop_class_uid, sop_instance_uid, reason))
            report.event_type_id = EVENT_FAILURES_EXIST if report.failed else EVENT_ALL_COMMITTED

    def _deliver_loop(self) -> None:
        while True:
            pending = self._queue.get()
            if pending is None:
                return
            if self._stopping.wait(self.faults.delay_commitment_s):
                return
            try:
                self._deliver(pending)
            except Exception:  # a broken peer must not kill the worker
                log.exception("N-EVENT-REPORT delivery failed")
            self._notify()

    def _deliver(self, pending: _PendingCommitment) -> None:
        report = pending.report
        dataset = build_commitment_event(report)
        same = self.commitment_on_same_association or self.commitment_target is None
        for attempt in range(1, self.delivery_attempts + 1):
            with self._changed:
                report.attempts = attempt
            if same:
                status = self._send_on_same_association(pending.assoc, dataset, report)
            else:
                status = self._send_on_new_association(dataset, report)
            if status is not None:
                with self._changed:
                    report.delivery_status = status
                    report.delivered = code_to_category(status) == "Success"
                    report.via = "same" if same else "separate"
                    self._changed.notify_all()
                return
            if same or self._stopping.wait(self.delivery_backoff_s * 2 ** (attempt - 1)):
                break
        log.warning("N-EVENT-REPORT for a commitment transaction could not be delivered")

    def _send_on_same_association(
        self, assoc: Any, dataset: Dataset, report: CommitmentReport
    ) -> int | None:
        if not assoc.is_established:
            log.warning("the requester's association closed before the commitment result")
            return None
        return _send_event(assoc, dataset, report.event_type_id)

    def _send_on_new_association(self, dataset: Dataset, report: CommitmentReport) -> int | None:
        assert self.commitment_target is not None
        host, port, called_ae = self.commitment_target
        ae = make_ae(self.ae_title, self.timeouts)
        ae.add_requested_context(StorageCommitmentPushModel)
        # PS3.4 J.3.3 / PS3.7 D.3.3.4: the PACS opens the association and proposes the SCP role.
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        assoc = ae.associate(
            host, port, ae_title=called_ae, ext_neg=[role], evt_handlers=list(NODELAY_HANDLERS)
        )
        if not assoc.is_established:
            log.info("commitment target %s:%d refused or unreachable", host, port)
            return None
        try:
            return _send_event(assoc, dataset, report.event_type_id)
        finally:
            if assoc.is_established:
                assoc.release()


def _received_file(event: evt.Event) -> Path | None:
    """The complete file pynetdicom wrote when chunked receiving is on (a process-wide switch,
    ``_config.STORE_RECV_CHUNKED_DATASET``, that the controller's Storage SCP turns on), else
    None (the dataset is in memory, still encoded)."""
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    return Path(path) if path else None


def _send_event(assoc: Any, dataset: Dataset, event_type_id: int) -> int | None:
    status, _reply = assoc.send_n_event_report(
        dataset, event_type_id, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE_UID
    )
    if "Status" not in status:
        return None
    return int(status.Status)


def build_commitment_event(report: CommitmentReport) -> Dataset:
    """Event Information of the Storage Commitment N-EVENT-REPORT (PS3.4 J.3.3.1.1, J.3.3.1.2).

    Event type 1 carries the Referenced SOP Sequence; event type 2 the Failed SOP Sequence with
    a Failure Reason per instance, plus the Referenced SOP Sequence for the instances that were
    committed (if any).
    """
    ds = Dataset()
    ds.TransactionUID = report.transaction_uid
    if report.committed:
        ds.ReferencedSOPSequence = sop_references(report.committed)
    if report.failed:
        failed = sop_references((cls, uid) for cls, uid, _reason in report.failed)
        for item, (_cls, _uid, reason) in zip(failed, report.failed, strict=True):
            item.FailureReason = int(reason)
        ds.FailedSOPSequence = failed
    return ds


def _reference(item: Dataset) -> tuple[str, str]:
    """(SOP Class UID, SOP Instance UID) of a Referenced SOP Sequence item; "" when absent."""
    return (
        str(item.get("ReferencedSOPClassUID") or ""),
        str(item.get("ReferencedSOPInstanceUID") or ""),
    )


def wait_until(
    changed: threading.Condition, predicate: Callable[[], bool], timeout_s: float
) -> bool:
    """Wait on ``changed`` until ``predicate()`` holds (polled every 50 ms too); False on timeout.

    Shared by the simulators' ``wait_for`` query APIs.
    """
    deadline = time.monotonic() + timeout_s
    with changed:
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            changed.wait(min(remaining, 0.05))
    return True


def _handle_store(event: evt.Event, pacs: SimulatedPacs) -> int:
    return pacs._store(event)


def _handle_commitment_request(event: evt.Event, pacs: SimulatedPacs) -> tuple[int, Dataset | None]:
    return pacs._request_commitment(event)
