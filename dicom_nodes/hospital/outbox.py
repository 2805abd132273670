"""The durable outbox: every message toward the RIS and PACS, retried until acknowledged.

One SQLite table (``outbox_messages``, migration set ``outbox``) holds each outbound DIMSE
message: a C-STORE of a file (PS3.4 Annex B), an MPPS N-CREATE or N-SET (PS3.4 Annex F), a
Storage Commitment N-ACTION (PS3.4 Annex J). A worker thread sends what is due, one association
per destination and round, and records the outcome row by row, durably, right after each
response:

``pending`` ─success─▶ ``sent`` ─(commitment: event report, instance committed)─▶ ``committed``
``pending`` ─terminal failure─▶ ``failed``  ·  any other failure: stays ``pending``, retried with
exponential backoff (``retry_initial_s`` × 2ⁿ up to ``retry_max_s``, with jitter drawn from an
injectable ``random.Random``).

Delivery is **at least once, deduplicated by SOP Instance UID at the receiver**: a row is
marked sent only after a success status, so a crash between the response and the commit
resends the message; the PACS stores the same SOP Instance UID once, and an N-CREATE answered
0111H (duplicate instance) means our earlier attempt got through. Enqueueing is idempotent by
SOP Instance UID for C-STOREs and N-CREATEs. MPPS messages of one instance leave in the order
they were enqueued (N-CREATE before its N-SETs): a message waits while an earlier one for the
same instance is still pending.

Storage Commitment (PS3.4 J.3): when enabled, sent objects are grouped into a transaction
(new Transaction UID) and an N-ACTION (Action Type 1, instance 1.2.840.10008.1.20.1.1) carries
their Referenced SOP Sequence. N-ACTION success only means "request accepted". The result
arrives as an N-EVENT-REPORT (event 1: all committed; 2: failures exist), on the same
association if the archive sends it while we wait, or on an association the archive opens to
us: :class:`CommitmentReceiver` provides the handlers and presentation contexts for whichever
server accepts it. Committed instances become ``committed``; failed ones go back to
``pending`` and are sent again. A transaction without a report within ``commitment_timeout_s``
is asked again. The outbox never deletes the files it sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import generate_uid
from pynetdicom import _config, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    StorageCommitmentPushModel,
)

from dicom_nodes.hospital import mpps_scu, store_scu
from dicom_nodes.hospital.scu import (
    AssociationError,
    DimseError,
    Peer,
    ScuError,
    associate,
    category,
    status_of,
)
from dicom_nodes.hospital.store_scu import store_outcome
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from storage import WriteFailures, database

log = logging.getLogger(__name__)

#: Storage Commitment Push Model SOP Instance (PS3.4 J.3.5), the well-known instance UID.
STORAGE_COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
#: N-ACTION Action Type ID "Request Storage Commitment" (PS3.4 J.3.2).
ACTION_REQUEST_COMMITMENT = 1
#: N-EVENT-REPORT Event Type IDs (PS3.4 J.3.3).
EVENT_ALL_COMMITTED = 1
EVENT_FAILURES_EXIST = 2

PACS = "pacs"
RIS = "ris"


class OutboxError(ScuError):
    """A message cannot be enqueued (unreadable file, unknown destination)."""


class Kind:
    """Message kinds, as stored in ``outbox_messages.kind``."""

    C_STORE = "c_store"
    MPPS_CREATE = mpps_scu.N_CREATE
    MPPS_SET = mpps_scu.N_SET
    COMMITMENT = "commitment"


class State:
    """Message states, as stored in ``outbox_messages.state``."""

    PENDING = "pending"
    SENT = "sent"
    COMMITTED = "committed"
    FAILED = "failed"


class Outcome:
    """What a response means for the message that caused it."""

    DONE = mpps_scu.DONE
    RETRY = mpps_scu.RETRY
    TERMINAL = mpps_scu.TERMINAL


#: What one sender reports: (outcome, status, error, recovery done to deliver it).
SendResult = tuple[str, int | None, str | None, str | None]


# -- schema ---------------------------------------------------------------------------------

MIGRATIONS = sqlite_utils.Migrations("outbox")


@MIGRATIONS()
def m001_outbox_messages(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE outbox_messages (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL
                CHECK (kind IN ('c_store', 'mpps_create', 'mpps_set', 'commitment')),
            destination TEXT NOT NULL,
            sop_class_uid TEXT NOT NULL,
            -- the stored object, the MPPS instance, or the commitment Transaction UID
            sop_instance_uid TEXT NOT NULL,
            transfer_syntax_uid TEXT,
            file_path TEXT,
            payload_json TEXT,
            state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'committed', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at_s REAL NOT NULL,
            created_at_s REAL NOT NULL,
            sent_at_s REAL,
            committed_at_s REAL,
            transaction_uid TEXT,
            last_status INTEGER,
            last_error TEXT
        ) STRICT
        """
    )
    db.execute(
        "CREATE UNIQUE INDEX outbox_once ON outbox_messages(kind, sop_instance_uid) "
        "WHERE kind IN ('c_store', 'mpps_create', 'commitment')"
    )
    db.execute("CREATE INDEX outbox_due ON outbox_messages(state, next_attempt_at_s)")
    db.execute("CREATE INDEX outbox_instance ON outbox_messages(sop_instance_uid, id)")
    db.execute("CREATE INDEX outbox_transaction ON outbox_messages(transaction_uid)")


@MIGRATIONS()
def m002_holds_and_alerts(db: sqlite_utils.Database) -> None:
    """A message may wait for stored objects (the final MPPS for the PACS), until a deadline;
    a message stuck too long is alerted once; what a sender did to recover is noted."""
    db.execute("ALTER TABLE outbox_messages ADD COLUMN awaits_json TEXT")
    db.execute("ALTER TABLE outbox_messages ADD COLUMN hold_until_s REAL")
    db.execute("ALTER TABLE outbox_messages ADD COLUMN stuck_alerted_at_s REAL")
    db.execute("ALTER TABLE outbox_messages ADD COLUMN recovery TEXT")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits initial·2ⁿ⁻¹ (capped), ×[0.5, 1]."""

    initial_s: float = 2.0
    max_s: float = 300.0

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        base = min(self.max_s, self.initial_s * 2 ** max(0, attempts - 1))
        return base * (0.5 + 0.5 * rng.random())


@dataclass(frozen=True)
class Message:
    """One row of the outbox, as the API returns it."""

    id: int
    kind: str
    destination: str
    sop_class_uid: str
    sop_instance_uid: str
    state: str
    attempts: int
    next_attempt_at_s: float
    transaction_uid: str | None
    last_status: int | None
    last_error: str | None
    file_path: str | None
    transfer_syntax_uid: str | None
    payload_json: str | None
    created_at_s: float = 0.0
    sent_at_s: float | None = None
    committed_at_s: float | None = None
    #: SOP Instance UIDs of C-STOREs this message waits for (stored, or committed), or None.
    awaits_json: str | None = None
    hold_until_s: float | None = None  #: the wait ends then, stored or not
    stuck_alerted_at_s: float | None = None
    recovery: str | None = None  #: what its sender did to recover (e.g. "re-created")

    @property
    def awaits(self) -> list[str]:
        return list(json.loads(self.awaits_json)) if self.awaits_json else []

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Message:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


# -- storage commitment results (N-EVENT-REPORT, PS3.4 J.3.3) ----------------------------------


class CommitmentReceiver:
    """Handlers for the archive's Storage Commitment N-EVENT-REPORT, on any association.

    Bind :meth:`handlers` on the server that accepts the archive's association (the
    unit-facing server, or :meth:`Outbox.listen_for_commitment`) and add :meth:`contexts` with
    :meth:`add_contexts` so the archive may propose the SCP role (PS3.7 D.3.3.4). The outbox
    binds the same handler on its own N-ACTION association for reports sent there.
    """

    def __init__(
        self,
        db_path: str | Path,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db_path = Path(db_path)
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
        with contextlib.closing(database.connect(self.db_path)) as conn, database.atomic(conn):
            known = conn.execute(
                "SELECT 1 FROM outbox_messages WHERE kind = 'commitment' AND sop_instance_uid = ?",
                (transaction_uid,),
            ).fetchone()
            for uid in committed:
                # A late report of an earlier transaction still states a fact: commit it.
                conn.execute(
                    "UPDATE outbox_messages SET state = 'committed', committed_at_s = ? "
                    "WHERE kind = 'c_store' AND sop_instance_uid = ? AND state = 'sent'",
                    (now_s, uid),
                )
            for uid, reason in failed:
                conn.execute(
                    "UPDATE outbox_messages SET state = 'pending', transaction_uid = NULL, "
                    "next_attempt_at_s = ?, last_status = ?, last_error = ? "
                    "WHERE kind = 'c_store' AND sop_instance_uid = ? AND state = 'sent' "
                    "AND transaction_uid = ?",
                    (now_s, reason, f"commitment failed: 0x{reason:04X}", uid, transaction_uid),
                )
            conn.execute(
                "UPDATE outbox_messages SET state = 'committed', committed_at_s = ? "
                "WHERE kind = 'commitment' AND sop_instance_uid = ?",
                (now_s, transaction_uid),
            )
        if not known:
            log.warning("storage commitment result for a transaction we do not know")
        log.info(
            "storage commitment result: %d committed, %d failed (resent)",
            len(committed),
            len(failed),
        )
        if self._on_change is not None:
            self._on_change()


# -- the outbox --------------------------------------------------------------------------------


class Outbox:
    """Durable outbound queue with a sender thread; see the module docstring.

    ``destinations`` maps ``"pacs"`` (C-STORE, Storage Commitment) and ``"ris"`` (MPPS) to
    their :class:`~dicom_nodes.hospital.scu.Peer`. Messages for a destination that is not configured
    are refused at enqueue time. ``clock`` (seconds, default ``time.time``) and ``rng`` are
    injectable so that tests drive time and jitter.
    """

    def __init__(
        self,
        db_path: str | Path,
        destinations: Mapping[str, Peer],
        *,
        storage_commitment: bool = False,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        commitment_wait_s: float = 2.0,
        commitment_timeout_s: float = 3600.0,
        batch_size: int = 50,
        poll_s: float = 1.0,
        on_delivery: Callable[[Message, str, int | None], None] | None = None,
        on_event: Callable[[str, Message, dict[str, Any]], None] | None = None,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.busy_timeout_s = busy_timeout_s
        #: Called with (message, "done" | "terminal", status) once a delivery outcome is durable;
        #: retries are not reported (an outage would report every attempt).
        self.on_delivery = on_delivery
        #: Called with (event, message, details) for what must reach the journal and the console:
        #: "hold-expired", "recreated", "converted", "stuck" (see the senders and stuck()).
        self.on_event = on_event
        self.destinations = dict(destinations)
        self.storage_commitment = storage_commitment
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.clock = clock
        self.commitment_wait_s = commitment_wait_s
        self.commitment_timeout_s = commitment_timeout_s
        self.batch_size = batch_size
        self.poll_s = poll_s
        self._changed = threading.Condition()
        self._wake = threading.Event()
        self._alerting = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener_ae: Any = None
        self._sendable = _sendable(storage_commitment)
        self.receiver = CommitmentReceiver(self.db_path, on_change=self._committed, clock=clock)
        _config.STORE_SEND_CHUNKED_DATASET = True  # send files as they are (dicom.md §2)
        db = database.open_database(self.db_path)
        try:
            database.migrate(db, MIGRATIONS)
        finally:
            db.close()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread (pending work from an earlier run is resumed)."""
        if self._thread is not None:
            raise RuntimeError("the outbox is already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="outbox-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0, *, release_grace_s: float = 2.0) -> None:
        """Stop the sender after the message in flight; stop the commitment listener once the
        archive's associations on it have ended (at most ``release_grace_s``; then aborted)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("the outbox sender did not stop within %.0f s", timeout_s)
            self._thread = None
        if self._listener_ae is not None:
            deadline = time.monotonic() + release_grace_s
            while self._listener_ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.01)  # let the archive send its A-RELEASE after the event report
            self._listener_ae.shutdown()
            self._listener_ae = None

    close = stop

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wake(self) -> None:
        """Look for due work now rather than at the next poll."""
        self._wake.set()

    def listen_for_commitment(
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

    # -- enqueue -------------------------------------------------------------------------------

    def enqueue_store(self, path: str | Path) -> str:
        """Queue a C-STORE of the DICOM file at ``path``; returns its SOP Instance UID.

        Idempotent by SOP Instance UID: the same instance is queued once (a terminally failed
        one is queued again). The file must stay in place until it is sent (or committed).
        """
        path = Path(path).resolve()
        try:
            meta = read_file_meta_info(path)
            sop_class = str(meta.MediaStorageSOPClassUID)
            sop_instance = str(meta.MediaStorageSOPInstanceUID)
            syntax = str(meta.TransferSyntaxUID)
        except (OSError, AttributeError, ValueError, EOFError, InvalidDicomError) as exc:
            raise OutboxError(
                f"cannot queue {path.name}: not a DICOM file with meta: {exc}"
            ) from exc
        self._insert(
            Kind.C_STORE,
            PACS,
            sop_class,
            sop_instance,
            transfer_syntax_uid=syntax,
            file_path=str(path),
        )
        return sop_instance

    def enqueue_mpps_create(self, sop_instance_uid: str, dataset: Dataset) -> None:
        """Queue the MPPS N-CREATE (PS3.4 F.7.2.1) of ``sop_instance_uid``; idempotent."""
        self._insert(
            Kind.MPPS_CREATE,
            RIS,
            ModalityPerformedProcedureStep,
            sop_instance_uid,
            payload_json=dataset.to_json(),
        )

    def enqueue_mpps_set(
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
        self._insert(
            Kind.MPPS_SET,
            RIS,
            ModalityPerformedProcedureStep,
            sop_instance_uid,
            payload_json=dataset.to_json(),
            awaits=awaits,
            hold_s=hold_s,
        )

    def update_pending(
        self, message_id: int, dataset: Dataset, *, awaits: Sequence[str] = ()
    ) -> bool:
        """Replace the content (and what it waits for) of a message not sent yet; False when
        it has left meanwhile. Its place in the queue and its hold deadline stay."""
        with self._connect() as conn:
            updated = conn.execute(
                "UPDATE outbox_messages SET payload_json = ?, "
                "awaits_json = CASE WHEN awaits_json IS NULL THEN NULL ELSE ? END "
                "WHERE id = ? AND state = 'pending'",
                (dataset.to_json(), json.dumps(list(awaits)), message_id),
            ).rowcount
        self._notify()
        return bool(updated)

    def _insert(
        self,
        kind: str,
        destination: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        *,
        transfer_syntax_uid: str | None = None,
        file_path: str | None = None,
        payload_json: str | None = None,
        awaits: Sequence[str] = (),
        hold_s: float = 0.0,
    ) -> None:
        if destination not in self.destinations:
            raise OutboxError(f"no {destination.upper()} configured: cannot queue {kind}")
        now_s = self.clock()
        awaits_json = json.dumps(list(awaits)) if awaits else None
        hold_until_s = now_s + hold_s if awaits else None
        with self._connect() as conn:
            conn.execute(
                """
                INSERT INTO outbox_messages (kind, destination, sop_class_uid, sop_instance_uid,
                    transfer_syntax_uid, file_path, payload_json, state, next_attempt_at_s,
                    created_at_s, awaits_json, hold_until_s)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)
                ON CONFLICT (kind, sop_instance_uid)
                    WHERE kind IN ('c_store', 'mpps_create', 'commitment')
                DO UPDATE SET state = 'pending', attempts = 0, last_error = NULL,
                    next_attempt_at_s = excluded.next_attempt_at_s
                WHERE state = 'failed'
                """,
                (
                    kind,
                    destination,
                    sop_class_uid,
                    sop_instance_uid,
                    transfer_syntax_uid,
                    file_path,
                    payload_json,
                    now_s,
                    now_s,
                    awaits_json,
                    hold_until_s,
                ),
            )
        self._notify()
        self.wake()

    # -- inspection ------------------------------------------------------------------------------

    def messages(self, sop_instance_uid: str | None = None) -> list[Message]:
        """Every message (of one instance), oldest first."""
        with self._connect() as conn:
            if sop_instance_uid is None:
                rows = conn.execute("SELECT * FROM outbox_messages ORDER BY id").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM outbox_messages WHERE sop_instance_uid = ? ORDER BY id",
                    (sop_instance_uid,),
                ).fetchall()
        return [Message.from_row(row) for row in rows]

    def stuck(self, older_than_s: float) -> list[Message]:
        """Messages still pending ``older_than_s`` after they were queued, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_messages WHERE state = 'pending' AND created_at_s <= ? "
                "ORDER BY created_at_s, id",
                (self.clock() - older_than_s,),
            ).fetchall()
        return [Message.from_row(row) for row in rows]

    def failed(self, since_s: float) -> list[Message]:
        """Messages that failed for good (never retried) and were queued after ``since_s``."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_messages WHERE state = 'failed' AND created_at_s >= ? "
                "AND kind != 'commitment' ORDER BY id",
                (since_s,),
            ).fetchall()
        return [Message.from_row(row) for row in rows]

    def alert_stuck(self, older_than_s: float) -> list[Message]:
        """Nothing retries forever in silence: the messages stuck longer than ``older_than_s``
        (``pacs.stuck_alert_s``); those newly stuck are marked, and reported once per
        destination and episode (none of its messages was stuck and alerted already) through
        ``on_event("stuck", oldest, {"count", "age_s", ...})``."""
        with self._alerting:  # the tick and a caller never alert the same message twice
            stuck = self.stuck(older_than_s)
            new = [m for m in stuck if m.stuck_alerted_at_s is None]
            if not new:
                return stuck
            now_s = self.clock()
            with self._connect() as conn:
                conn.executemany(
                    "UPDATE outbox_messages SET stuck_alerted_at_s = ? WHERE id = ?",
                    [(now_s, m.id) for m in new],
                )
        for destination in dict.fromkeys(m.destination for m in new):
            if any(m.destination == destination and m.stuck_alerted_at_s for m in stuck):
                continue  # the same episode: its alert was given, and stands
            of_destination = [m for m in new if m.destination == destination]
            oldest = of_destination[0]
            details = {
                "count": len(of_destination),
                "age_s": round(now_s - oldest.created_at_s, 1),
                "last_error": oldest.last_error or _hex(oldest.last_status),
            }
            log.error(
                "outbox: %d message(s) to the %s not delivered for %.0f s: %s",
                len(of_destination),
                destination.upper(),
                details["age_s"],
                details["last_error"],
            )
            self._event("stuck", oldest, details)
        return stuck

    def counts(self) -> dict[str, int]:
        """Number of messages per state."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT state, COUNT(*) AS n FROM outbox_messages GROUP BY state"
            ).fetchall()
        return {row["state"]: row["n"] for row in rows}

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until ``predicate()`` holds (re-checked after every change); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.1))
        return True

    # -- the sender -------------------------------------------------------------------------

    def _run(self) -> None:
        failures = WriteFailures(log, "outbox round failed")  # a full disk: said once
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # keep sending; the rows say what is pending
                failures.failed(exc)
                worked = 0
            else:
                failures.recovered()
            if worked:
                continue
            self._wake.wait(self.seconds_until_due())
            self._wake.clear()

    def seconds_until_due(self) -> float:
        """Seconds until the next sendable message is due (at most ``poll_s``)."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT MIN(next_attempt_at_s) AS due FROM outbox_messages AS m "
                f"WHERE {self._sendable} AND destination IN ({self._destination_marks()})",
                (self.clock(), *self.destinations),
            ).fetchone()
        if row["due"] is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, row["due"] - self.clock()))

    def _destination_marks(self) -> str:
        return ", ".join("?" for _ in self.destinations) or "NULL"

    def run_once(self) -> int:
        """One round: expire commitments, form a transaction, send what is due.

        Returns the number of messages attempted. The sender thread calls it in a loop; tests
        may call it directly (without :meth:`start`) to step the outbox deterministically.
        """
        now_s = self.clock()
        attempted = 0
        with self._connect() as conn:
            if self.storage_commitment:
                self._expire_commitments(conn, now_s)
                self._form_transaction(conn, now_s)
            due = self._due(conn, tuple(self.destinations), now_s)
            for destination in dict.fromkeys(m.destination for m in due):
                if self._stop.is_set():
                    break
                batch = [m for m in due if m.destination == destination]
                attempted += self._send_batch(conn, destination, batch)
        self._notify()
        return attempted

    def _due(
        self, conn: sqlite3.Connection, destinations: tuple[str, ...], now_s: float
    ) -> list[Message]:
        marks = ", ".join("?" for _ in destinations) or "NULL"
        rows = conn.execute(
            f"SELECT * FROM outbox_messages AS m WHERE {self._sendable} "
            f"AND next_attempt_at_s <= ? AND destination IN ({marks}) ORDER BY id LIMIT ?",
            (now_s, now_s, *destinations, self.batch_size),
        ).fetchall()
        return [Message.from_row(row) for row in rows]

    def _send_batch(self, conn: sqlite3.Connection, destination: str, batch: list[Message]) -> int:
        """Send ``batch`` on one association, then whatever became due for the same peer
        meanwhile (e.g. the N-SET behind its N-CREATE) and fits the negotiated contexts.

        Returns how many messages got an outcome.
        """
        contexts = _contexts_for(batch)
        fits = {(m.sop_class_uid, m.transfer_syntax_uid) for m in batch}
        attempted = 0
        tried: set[int] = set()
        peer = self.destinations[destination]
        try:
            with associate(peer, contexts, evt_handlers=self.receiver.handlers()) as assoc:
                while batch:
                    for message in batch:
                        if self._stop.is_set() or not assoc.is_established:
                            return attempted
                        tried.add(message.id)
                        self._send_one(conn, assoc, message)
                        attempted += 1
                    batch = [
                        m
                        for m in self._due(conn, (destination,), self.clock())
                        if m.id not in tried and (m.sop_class_uid, m.transfer_syntax_uid) in fits
                    ]
        except AssociationError as exc:
            log.warning("outbox: %s", exc)
            for message in batch:
                self._record(conn, message, Outcome.RETRY, None, str(exc))
            attempted = len(batch)
        return attempted

    def _send_one(self, conn: sqlite3.Connection, assoc: Association, message: Message) -> None:
        if message.awaits and message.recovery is None:
            self._release_held(conn, message)
        recovery = None
        try:
            outcome, status, error, recovery = _SENDERS[message.kind](self, assoc, message)
        except (DimseError, RuntimeError, ValueError) as exc:
            outcome, status, error = Outcome.RETRY, None, str(exc)
        except FileNotFoundError as exc:
            outcome, status, error = Outcome.TERMINAL, None, f"file missing: {exc.filename}"
        if recovery is not None:  # noted before the outcome, so that a crash keeps it
            conn.execute(
                "UPDATE outbox_messages SET recovery = ? WHERE id = ?", (recovery, message.id)
            )
            self._event("recovered", message, {"recovery": recovery, "outcome": outcome})
        self._record(conn, message, outcome, status, error)

    def _record(
        self,
        conn: sqlite3.Connection,
        message: Message,
        outcome: str,
        status: int | None,
        error: str | None,
    ) -> None:
        now_s = self.clock()
        attempts = message.attempts + 1
        if outcome == Outcome.DONE:
            conn.execute(
                "UPDATE outbox_messages SET attempts = ?, sent_at_s = ?, last_status = ?, "
                "last_error = NULL, state = CASE state WHEN 'pending' THEN 'sent' ELSE state END "
                "WHERE id = ?",
                (attempts, now_s, status, message.id),
            )
        elif outcome == Outcome.TERMINAL:
            log.error(
                "outbox: %s message %d failed terminally: %s",
                message.kind,
                message.id,
                error or _hex(status),
            )
            conn.execute(
                "UPDATE outbox_messages SET state = 'failed', attempts = ?, last_status = ?, "
                "last_error = ? WHERE id = ?",
                (attempts, status, error, message.id),
            )
        else:
            delay_s = self.retry.delay_s(attempts, self.rng)
            log.info(
                "outbox: %s message %d will be retried in %.1f s (%s)",
                message.kind,
                message.id,
                delay_s,
                error or _hex(status),
            )
            conn.execute(
                "UPDATE outbox_messages SET attempts = ?, next_attempt_at_s = ?, "
                "last_status = ?, last_error = ? WHERE id = ?",
                (attempts, now_s + delay_s, status, error, message.id),
            )
            return
        if self.on_delivery is not None:
            try:
                self.on_delivery(message, outcome, status)
            except Exception:
                log.exception("outbox: delivery hook failed (the outcome is recorded)")

    def _release_held(self, conn: sqlite3.Connection, message: Message) -> None:
        """A held message leaves: said once when its hold ended before the PACS stored all it
        waited for (journaled by the controller, pacs.mpps_hold_max_s)."""
        stored = _stored_states(self.storage_commitment)
        missing = [
            row[0]
            for row in conn.execute(
                "SELECT w.value FROM json_each(?) AS w WHERE NOT EXISTS (SELECT 1 FROM "
                "outbox_messages AS s WHERE s.kind = 'c_store' AND s.sop_instance_uid = w.value "
                f"AND s.state IN {stored})",
                (message.awaits_json,),
            )
        ]
        if not missing:
            return
        note = f"sent before the PACS held {len(missing)} of the {len(message.awaits)} objects"
        conn.execute("UPDATE outbox_messages SET recovery = ? WHERE id = ?", (note, message.id))
        log.warning("outbox: %s message %d %s (hold ended)", message.kind, message.id, note)
        held_s = round(self.clock() - message.created_at_s, 1)
        self._event("hold-expired", message, {"missing": len(missing), "held_s": held_s})

    def _event(self, event: str, message: Message, details: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, message, details)
        except Exception:
            log.exception("outbox: event hook failed (%s)", event)

    # -- per kind ----------------------------------------------------------------------------------

    def _send_store(self, assoc: Association, message: Message) -> SendResult:
        assert message.file_path is not None
        path = Path(message.file_path)
        if not path.exists():
            raise FileNotFoundError(2, "No such file", message.file_path)
        result = store_scu.send_file(
            assoc, path, message.sop_class_uid, message.transfer_syntax_uid
        )
        return result.outcome, result.status, result.error, result.recovery

    def _send_mpps(self, assoc: Association, message: Message) -> SendResult:
        assert message.payload_json is not None
        instance = self.messages(message.sop_instance_uid)
        created = next((m for m in instance if m.kind == Kind.MPPS_CREATE), None)
        delivery = mpps_scu.Delivery(
            message.kind,
            message.sop_instance_uid,
            Dataset.from_json(message.payload_json),
            created_with=(
                Dataset.from_json(created.payload_json)
                if created is not None and created.payload_json
                else None
            ),
            recreated=any(m.recovery == mpps_scu.RECREATED for m in instance),
        )
        answer, recovery = mpps_scu.deliver(assoc, delivery)
        return answer.outcome, answer.status, answer.error_comment or None, recovery

    def _send_commitment(self, assoc: Association, message: Message) -> SendResult:
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
        self.wait_for(lambda: self._closed(message.sop_instance_uid), self.commitment_wait_s)
        return Outcome.DONE, status, None, None

    def _references(self, transaction_uid: str) -> list[Dataset]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT sop_class_uid, sop_instance_uid FROM outbox_messages "
                "WHERE kind = 'c_store' AND state = 'sent' AND transaction_uid = ? ORDER BY id",
                (transaction_uid,),
            ).fetchall()
        references = []
        for row in rows:
            item = Dataset()
            item.ReferencedSOPClassUID = row["sop_class_uid"]
            item.ReferencedSOPInstanceUID = row["sop_instance_uid"]
            references.append(item)
        return references

    def _closed(self, transaction_uid: str) -> bool:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT state FROM outbox_messages WHERE kind = 'commitment' "
                "AND sop_instance_uid = ?",
                (transaction_uid,),
            ).fetchone()
        return row is not None and row["state"] == State.COMMITTED

    def _form_transaction(self, conn: sqlite3.Connection, now_s: float) -> None:
        """Group sent, uncommitted objects into a new commitment transaction (PS3.4 J.3.2)."""
        rows = conn.execute(
            "SELECT id FROM outbox_messages WHERE kind = 'c_store' AND state = 'sent' "
            "AND transaction_uid IS NULL ORDER BY id LIMIT 1000"
        ).fetchall()
        if not rows:
            return
        transaction_uid = generate_uid()
        with database.atomic(conn):
            conn.executemany(
                "UPDATE outbox_messages SET transaction_uid = ? WHERE id = ?",
                [(transaction_uid, row["id"]) for row in rows],
            )
            conn.execute(
                "INSERT INTO outbox_messages (kind, destination, sop_class_uid, "
                "sop_instance_uid, state, next_attempt_at_s, created_at_s) "
                "VALUES ('commitment', ?, ?, ?, 'pending', ?, ?)",
                (PACS, StorageCommitmentPushModel, transaction_uid, now_s, now_s),
            )

    def _expire_commitments(self, conn: sqlite3.Connection, now_s: float) -> None:
        """A transaction without an event report in time is asked again, in a new one."""
        expired = conn.execute(
            "SELECT sop_instance_uid FROM outbox_messages WHERE kind = 'commitment' "
            "AND state = 'sent' AND sent_at_s <= ?",
            (now_s - self.commitment_timeout_s,),
        ).fetchall()
        for row in expired:
            with database.atomic(conn):
                conn.execute(
                    "UPDATE outbox_messages SET transaction_uid = NULL "
                    "WHERE kind = 'c_store' AND state = 'sent' AND transaction_uid = ?",
                    (row["sop_instance_uid"],),
                )
                conn.execute(
                    "UPDATE outbox_messages SET state = 'failed', "
                    "last_error = 'no N-EVENT-REPORT in time; asked again' "
                    "WHERE kind = 'commitment' AND sop_instance_uid = ?",
                    (row["sop_instance_uid"],),
                )
            log.warning("storage commitment: no result in time, asking again")

    # -- plumbing ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = database.connect(self.db_path, busy_timeout_s=self.busy_timeout_s)
        try:
            yield conn
        finally:
            conn.close()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _committed(self) -> None:
        """A commitment result was recorded: what waited for it may leave now."""
        self._notify()
        self.wake()


def _sendable(storage_commitment: bool) -> str:
    """A pending message that may leave now (one ``?``: the time now, in seconds): no earlier
    message of the same MPPS instance is still pending (PS3.4 F.7.2: N-CREATE before N-SET;
    N-SETs in the order they were made), and what it waits for is stored at the PACS
    (committed, with storage commitment) or its hold has ended."""
    stored = _stored_states(storage_commitment)
    return f"""
    state = 'pending' AND NOT EXISTS (
        SELECT 1 FROM outbox_messages AS e
        WHERE e.sop_instance_uid = m.sop_instance_uid AND e.id < m.id
          AND e.state = 'pending' AND e.kind IN ('mpps_create', 'mpps_set'))
    AND (m.awaits_json IS NULL OR m.hold_until_s <= ? OR NOT EXISTS (
        SELECT 1 FROM json_each(m.awaits_json) AS w WHERE NOT EXISTS (
            SELECT 1 FROM outbox_messages AS s WHERE s.kind = 'c_store'
              AND s.sop_instance_uid = w.value AND s.state IN {stored})))
    """


def _stored_states(storage_commitment: bool) -> str:
    """The C-STORE states in which the PACS holds the object, as an SQL list."""
    return "('committed')" if storage_commitment else "('sent', 'committed')"


_SENDERS: dict[str, Callable[[Outbox, Association, Message], SendResult]] = {
    Kind.C_STORE: Outbox._send_store,
    Kind.MPPS_CREATE: Outbox._send_mpps,
    Kind.MPPS_SET: Outbox._send_mpps,
    Kind.COMMITMENT: Outbox._send_commitment,
}


def _contexts_for(batch: Sequence[Message]) -> list[PresentationContext]:
    """The presentation contexts the batch needs (PS3.8 9.3.2.2), at most 128.

    Files are sent as they are (chunked, no re-encoding) when the PACS accepts their own
    syntax, with lossless alternatives beside it
    (:func:`dicom_nodes.hospital.store_scu.store_contexts`);
    MPPS and commitment use the default syntaxes.
    """
    stores = dict.fromkeys(
        (m.sop_class_uid, m.transfer_syntax_uid) for m in batch if m.kind == Kind.C_STORE
    )
    others = dict.fromkeys(m.sop_class_uid for m in batch if m.kind != Kind.C_STORE)
    contexts = [build_context(sop_class) for sop_class in others]
    if stores:
        contexts += store_scu.store_contexts(list(stores))
    return contexts[:128]


def _hex(status: int | None) -> str:
    return "no response" if status is None else f"status 0x{status:04X}"


def describe_counts(counts: Mapping[str, int]) -> str:
    """``"3 pending, 10 sent"`` for logs and the console."""
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"


__all__ = [
    "CommitmentReceiver",
    "Message",
    "Outbox",
    "OutboxError",
    "RetryPolicy",
    "describe_counts",
    "store_outcome",
]
