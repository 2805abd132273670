"""Storage Commitment toward the PACS (PS3.4 Annex J): the outbox's ``commitment`` messages.

When enabled, the objects the PACS has answered with success are grouped into a transaction (a
new Transaction UID under the site's root) and an N-ACTION (Action Type 1, instance
1.2.840.10008.1.20.1.1) carries their Referenced SOP Sequence. N-ACTION success only means
"request accepted" (J.3.2). The result arrives as an N-EVENT-REPORT (event 1: all committed; 2:
failures exist), on the same association if the archive sends it while we wait, or on an
association the archive opens to us: :class:`CommitmentReceiver` provides the handlers and
presentation contexts for whichever server accepts it (the unit-facing server, or the dedicated
listener of ``pacs.commitment_port``). Committed instances become ``committed``; failed ones go
back to ``pending`` and are sent again. A transaction without a report within
``commitment_timeout_s`` is asked again, in a new one.

:class:`CommitmentSender` is the outbox's sender of the ``commitment`` kind (registered by
:class:`~dicom_nodes.hospital.dicom_outbox.DicomOutbox`).
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from dicom_nodes.datasets.references import sop_references
from dicom_nodes.datasets.uids import new_uid
from dicom_nodes.hospital.outbox import (
    PACS,
    Message,
    Outbox,
    Outcome,
    SendResult,
    State,
    default_contexts,
)
from dicom_nodes.hospital.scu import category, status_of
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae

log = logging.getLogger(__name__)

#: The outbox's message kind of a commitment transaction (its SOP Instance UID: the
#: Transaction UID).
COMMITMENT = "commitment"
#: The kind of the messages a transaction commits (:data:`dicom_nodes.hospital.store_scu.C_STORE`).
COMMITTED_KIND = "c_store"
#: Storage Commitment Push Model SOP Instance (PS3.4 J.3.5), the well-known instance UID.
STORAGE_COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
#: N-ACTION Action Type ID "Request Storage Commitment" (PS3.4 J.3.2).
ACTION_REQUEST_COMMITMENT = 1
#: N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3).
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2


# -- storage commitment results (N-EVENT-REPORT, PS3.4 J.3.3) ----------------------------------


class CommitmentReceiver:
    """Handlers for the archive's Storage Commitment N-EVENT-REPORT, on any association.

    Bind :meth:`handlers` on the server that accepts the archive's association (the
    unit-facing server, or :meth:`CommitmentSender.listen`) and add :meth:`contexts` with
    :meth:`add_contexts` so the archive may propose the SCP role (PS3.7 D.3.3.4). The outbox
    binds the same handler on its own N-ACTION association for reports sent there.
    """

    def __init__(
        self,
        outbox: Outbox,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self._on_change = on_change
        self._clock = clock

    @staticmethod
    def contexts() -> list[PresentationContext]:
        """Storage Commitment Push Model, SCU and SCP roles both acceptable."""
        context = build_context(StorageCommitmentPushModel)
        context.scu_role = True
        context.scp_role = True
        return [context]

    @classmethod
    def add_contexts(cls, ae: Any) -> None:
        """Add :meth:`contexts` to an acceptor AE, keeping the role selection."""
        for cx in cls.contexts():
            ae.add_supported_context(
                cx.abstract_syntax, cx.transfer_syntax, scu_role=cx.scu_role, scp_role=cx.scp_role
            )

    def handlers(self) -> list[tuple[Any, ...]]:
        """``[(evt.EVT_N_EVENT_REPORT, handler)]`` to bind on an AE or association."""
        return [(evt.EVT_N_EVENT_REPORT, self.handle_event_report)]

    def handle_event_report(self, event: evt.Event) -> tuple[int, Dataset | None]:
        """Record an N-EVENT-REPORT of the Storage Commitment SOP class (PS3.4 J.3.3.1)."""
        if str(getattr(event.request, "AffectedSOPClassUID", "")) != StorageCommitmentPushModel:
            return 0x0122, None  # SOP class not supported
        event_type = event.event_type
        if event_type not in (EVENT_ALL_COMMITTED, EVENT_FAILURES_EXIST):
            return 0x0113, None  # no such event type
        info = event.event_information
        transaction_uid = str(info.get("TransactionUID", ""))
        committed = [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])]
        failed = [
            (str(i.ReferencedSOPInstanceUID), int(i.get("FailureReason", 0x0110)))
            for i in info.get("FailedSOPSequence", [])
        ]
        self.record(transaction_uid, committed, failed)
        return 0x0000, None

    def record(
        self,
        transaction_uid: str,
        committed: Sequence[str],
        failed: Sequence[tuple[str, int]],
        now_s: float | None = None,
    ) -> None:
        """Apply one commitment result to the outbox, durably, in one transaction."""
        now_s = self._clock() if now_s is None else now_s

        def apply(conn: sqlite3.Connection) -> bool:
            known = conn.execute(
                "SELECT 1 FROM outbox_messages WHERE kind = ? AND sop_instance_uid = ?",
                (COMMITMENT, transaction_uid),
            ).fetchone()
            for uid in committed:
                # A late report of an earlier transaction still states a fact: commit it.
                conn.execute(
                    "UPDATE outbox_messages SET state = 'committed', committed_at_s = ? "
                    "WHERE kind = ? AND sop_instance_uid = ? AND state = 'sent'",
                    (now_s, COMMITTED_KIND, uid),
                )
            for uid, reason in failed:
                conn.execute(
                    "UPDATE outbox_messages SET state = 'pending', transaction_uid = NULL, "
                    "next_attempt_at_s = ?, last_status = ?, last_error = ? "
                    "WHERE kind = ? AND sop_instance_uid = ? AND state = 'sent' "
                    "AND transaction_uid = ?",
                    (
                        now_s,
                        reason,
                        f"commitment failed: 0x{reason:04X}",
                        COMMITTED_KIND,
                        uid,
                        transaction_uid,
                    ),
                )
            conn.execute(
                "UPDATE outbox_messages SET state = 'committed', committed_at_s = ? "
                "WHERE kind = ? AND sop_instance_uid = ?",
                (now_s, COMMITMENT, transaction_uid),
            )
            return known is not None

        known = self.outbox.db.run(apply)
        if not known:
            log.warning("storage commitment result for a transaction we do not know")
        log.info(
            "storage commitment result: %d committed, %d failed (resent)",
            len(committed),
            len(failed),
        )
        if self._on_change is not None:
            self._on_change()


# -- the sender ----------------------------------------------------------------------------------


class CommitmentSender:
    """The outbox's sender of ``commitment`` messages (see the module docstring).

    ``enabled``: whether transactions are formed at all (``pacs.storage_commitment``); the
    receiver stands either way, so a report the archive sends is recorded. With commitment
    enabled, an awaited object counts as held by the PACS only once committed.
    """

    destination = PACS
    ordered = False
    alerted = False  # an expired transaction is asked again in a new one, not alerted

    def __init__(
        self,
        outbox: Outbox,
        *,
        enabled: bool,
        uid_root: str | None,
        wait_s: float = 2.0,
        timeout_s: float = 3600.0,
    ) -> None:
        self.outbox = outbox
        self.enabled = enabled
        self.uid_root = uid_root
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.receiver = CommitmentReceiver(outbox, on_change=outbox.changed, clock=outbox.clock)
        self._listener_ae: Any = None
        if enabled:
            outbox.settled_states = (State.COMMITTED,)  # type: ignore[misc]
        outbox.register([COMMITMENT], self)

    def handlers(self) -> list[tuple[Any, ...]]:
        return self.receiver.handlers()

    def contexts(self, messages: Sequence[Message]) -> list[PresentationContext]:
        return default_contexts(messages)

    def before_round(self, now_s: float) -> None:
        if self.enabled:
            self.outbox.db.run(lambda conn: self._expire(conn, now_s))
            self.outbox.db.run(lambda conn: self._form_transaction(conn, now_s))

    def send(self, assoc: Association, message: Message) -> SendResult:
        references = self._references(message.sop_instance_uid)
        if not references:
            return Outcome.DONE, None, "nothing left to commit", None
        info = Dataset()
        info.TransactionUID = message.sop_instance_uid
        info.ReferencedSOPSequence = references
        response, _ = assoc.send_n_action(
            info,
            ACTION_REQUEST_COMMITMENT,
            StorageCommitmentPushModel,
            STORAGE_COMMITMENT_INSTANCE_UID,
        )
        status = status_of(response)
        if category(status) not in ("Success", "Warning"):
            return Outcome.RETRY, status, "storage commitment request refused", None
        # Success means "accepted" (J.3.2); give the archive a moment to answer here.
        self.outbox.wait_for(lambda: self._closed(message.sop_instance_uid), self.wait_s)
        return Outcome.DONE, status, None, None

    def _references(self, transaction_uid: str) -> list[Dataset]:
        with self.outbox.db.read() as conn:
            rows = conn.execute(
                "SELECT sop_class_uid, sop_instance_uid FROM outbox_messages "
                "WHERE kind = ? AND state = 'sent' AND transaction_uid = ? ORDER BY id",
                (COMMITTED_KIND, transaction_uid),
            ).fetchall()
        return sop_references((row["sop_class_uid"], row["sop_instance_uid"]) for row in rows)

    def _closed(self, transaction_uid: str) -> bool:
        with self.outbox.db.read() as conn:
            row = conn.execute(
                "SELECT state FROM outbox_messages WHERE kind = ? AND sop_instance_uid = ?",
                (COMMITMENT, transaction_uid),
            ).fetchone()
        return row is not None and row["state"] == State.COMMITTED

    def _form_transaction(self, conn: sqlite3.Connection, now_s: float) -> None:
        """Group sent, uncommitted objects into a new commitment transaction (PS3.4 J.3.2)."""
        rows = conn.execute(
            "SELECT id FROM outbox_messages WHERE kind = ? AND state = 'sent' "
            "AND transaction_uid IS NULL ORDER BY id LIMIT 1000",
            (COMMITTED_KIND,),
        ).fetchall()
        if not rows:
            return
        transaction_uid = new_uid(self.uid_root)
        conn.executemany(
            "UPDATE outbox_messages SET transaction_uid = ? WHERE id = ?",
            [(transaction_uid, row["id"]) for row in rows],
        )
        conn.execute(
            "INSERT INTO outbox_messages (kind, destination, sop_class_uid, "
            "sop_instance_uid, state, next_attempt_at_s, created_at_s) "
            "VALUES (?, ?, ?, ?, 'pending', ?, ?)",
            (COMMITMENT, PACS, StorageCommitmentPushModel, transaction_uid, now_s, now_s),
        )

    def _expire(self, conn: sqlite3.Connection, now_s: float) -> None:
        """A transaction without an event report in time is asked again, in a new one."""
        expired = conn.execute(
            "SELECT sop_instance_uid FROM outbox_messages WHERE kind = ? "
            "AND state = 'sent' AND sent_at_s <= ?",
            (COMMITMENT, now_s - self.timeout_s),
        ).fetchall()
        for row in expired:
            conn.execute(
                "UPDATE outbox_messages SET transaction_uid = NULL "
                "WHERE kind = ? AND state = 'sent' AND transaction_uid = ?",
                (COMMITTED_KIND, row["sop_instance_uid"]),
            )
            conn.execute(
                "UPDATE outbox_messages SET state = 'failed', "
                "last_error = 'no N-EVENT-REPORT in time; asked again' "
                "WHERE kind = ? AND sop_instance_uid = ?",
                (COMMITMENT, row["sop_instance_uid"]),
            )
            log.warning("storage commitment: no result in time, asking again")

    # -- the dedicated listener (pacs.commitment_port) ---------------------------------------------

    def listen(
        self,
        ae_title: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        timeouts: Timeouts | None = None,
        allowed_calling_aes: Sequence[str] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> tuple[str, int]:
        """A dedicated listener for the archive's N-EVENT-REPORT association
        (``pacs.commitment_port``); returns the bound address. Stopped by :meth:`stop`."""
        if self._listener_ae is not None:
            raise RuntimeError("the commitment listener is already running")
        ae = make_ae(ae_title, timeouts or Timeouts())
        ae.require_calling_aet = list(allowed_calling_aes)
        self.receiver.add_contexts(ae)
        server = ae.start_server(
            (host, port),
            block=False,
            evt_handlers=[*self.receiver.handlers(), *NODELAY_HANDLERS],
            ssl_context=ssl_context,
        )
        self._listener_ae = ae
        assert server is not None
        bound_host, bound_port = server.server_address[:2]
        return str(bound_host), int(bound_port)

    def stop(self, release_grace_s: float = 2.0) -> None:
        """Stop the listener once the archive's associations on it have ended (at most
        ``release_grace_s``; then aborted)."""
        if self._listener_ae is None:
            return
        deadline = time.monotonic() + release_grace_s
        while self._listener_ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)  # let the archive send its A-RELEASE after the event report
        self._listener_ae.shutdown()
        self._listener_ae = None
