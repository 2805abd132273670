"""The durable outbox: every message toward the RIS and PACS, retried until acknowledged.

The outbox knows no message kind. It owns one SQLite table (``outbox_messages``, migration set
``outbox``) and a registry ``{kind: sender}``: each sender (:class:`Sender`) registers the kinds
it sends and says how — the MPPS N-CREATE/N-SET (:class:`dicom_nodes.hospital.mpps_scu.MppsSender`,
PS3.4 Annex F), the C-STORE of a kept file (:class:`dicom_nodes.hospital.store_scu.StoreSender`,
PS3.4 Annex B) and the Storage Commitment N-ACTION
(:class:`dicom_nodes.hospital.commitment.CommitmentSender`, PS3.4 Annex J);
:class:`dicom_nodes.hospital.dicom_outbox.DicomOutbox` is the outbox with those three registered.
A worker thread sends what is due, one association per destination and round, and records the
outcome row by row, durably, right after each response:

``pending`` ─success─▶ ``sent`` ─(commitment: event report, instance committed)─▶ ``committed``
``pending`` ─terminal failure─▶ ``failed``  ·  any other failure: stays ``pending``, retried with
exponential backoff (``retry_initial_s`` × 2ⁿ up to ``retry_max_s``, with jitter drawn from an
injectable ``random.Random``).

Delivery is **at least once, deduplicated by SOP Instance UID at the receiver**: a row is
marked sent only after a success status, so a crash between the response and the commit
resends the message. Enqueueing is idempotent by SOP Instance UID for the kinds the schema's
unique index names (C-STOREs, N-CREATEs, commitment transactions). The messages of one instance
whose sender asks for order (``Sender.ordered``: N-CREATE before its N-SETs) leave in the order
they were enqueued: a message waits while an earlier one for the same instance is still pending.
A message may also wait for other messages to be settled at the receiver (``awaits``, for at
most ``hold_s``): the final MPPS waits for the images it names.

The outbox never deletes the files it sends.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import sqlite_utils
from pydicom.dataset import Dataset
from pynetdicom import _config, build_context
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from dicom_nodes.hospital.scu import AssociationError, DimseError, Peer, ScuError, associate
from dicom_nodes.hospital.worker import Worker
from storage import WriteFailures
from storage.writer import Database, Store

log = logging.getLogger(__name__)

#: The destinations: the PACS (objects, commitment) and the RIS (MPPS).
PACS = "pacs"
RIS = "ris"


class OutboxError(ScuError):
    """A message cannot be enqueued (unreadable file, unknown destination)."""


class State:
    """Message states, as stored in ``outbox_messages.state``."""

    PENDING = "pending"
    SENT = "sent"
    COMMITTED = "committed"
    FAILED = "failed"


class Outcome:
    """What a response means for the message that caused it."""

    DONE = "done"
    RETRY = "retry"
    TERMINAL = "terminal"


#: What one sender reports: (outcome, status, error, recovery done to deliver it).
SendResult = tuple[str, int | None, str | None, str | None]


class Sender(Protocol):
    """What the outbox asks of the sender of a message kind (registered with
    :meth:`Outbox.register`). The outbox calls it on its sender thread only."""

    #: The destination its messages go to (``"pacs"``, ``"ris"``).
    destination: str
    #: Whether the messages of one instance must leave in the order they were enqueued.
    ordered: bool
    #: Whether a message that failed for good is the operator's concern (an internal one,
    #: asked again by the sender itself, is not alerted).
    alerted: bool

    def send(self, assoc: Association, message: Message) -> SendResult:
        """Send ``message`` on the established ``assoc``; the outcome for its row. May raise
        :class:`~dicom_nodes.hospital.scu.DimseError`, ``RuntimeError`` or ``ValueError``
        (retried) and ``FileNotFoundError`` (failed for good)."""
        ...

    def contexts(self, messages: Sequence[Message]) -> list[PresentationContext]:
        """The presentation contexts its ``messages`` need (PS3.8 9.3.2.2)."""
        ...

    def before_round(self, now_s: float) -> None:
        """Work of its own at the start of each round (e.g. forming a commitment transaction),
        written through the outbox's database (:attr:`Outbox.db`)."""
        ...

    def handlers(self) -> list[tuple[Any, ...]]:
        """Event handlers to bind on every association the outbox opens."""
        ...


#: The kinds the schema's unique index (``outbox_once``) names: enqueued at most once per SOP
#: Instance UID. A new kind of that sort needs a migration of the index, and its name here.
ONCE_KINDS_SQL = "kind IN ('c_store', 'mpps_create', 'commitment')"


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
        f"CREATE UNIQUE INDEX outbox_once ON outbox_messages(kind, sop_instance_uid) "
        f"WHERE {ONCE_KINDS_SQL}"
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


# -- the outbox --------------------------------------------------------------------------------


class Outbox(Store, Worker):
    """Durable outbound queue with a sender thread; see the module docstring.

    ``destinations`` maps a destination name (``"pacs"``, ``"ris"``) to its
    :class:`~dicom_nodes.hospital.scu.Peer`. Messages of a kind no sender registered, or for a
    destination that is not configured, are refused at enqueue time. ``clock`` (seconds,
    default ``time.time``) and ``rng`` are injectable so that tests drive time and jitter.
    """

    #: States in which an awaited message counts as settled at its receiver (a sender may
    #: narrow them: with storage commitment, an object is held only once committed).
    thread_name = "outbox-sender"
    migrations = MIGRATIONS
    settled_states: ClassVar[tuple[str, ...]] = ("sent", "committed")

    def __init__(
        self,
        db_path: str | Path | Database,
        destinations: Mapping[str, Peer],
        *,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        batch_size: int = 50,
        poll_s: float = 1.0,
        on_delivery: Callable[[Message, str, int | None], None] | None = None,
        on_event: Callable[[str, Message, dict[str, Any]], None] | None = None,
        busy_timeout_s: float = 5.0,
    ) -> None:
        #: Called with (message, "done" | "terminal", status) once a delivery outcome is durable;
        #: retries are not reported (an outage would report every attempt).
        self.on_delivery = on_delivery
        #: Called with (event, message, details) for what must reach the journal and the console:
        #: "hold-expired", "recreated", "converted", "stuck" (see the senders and stuck()).
        self.on_event = on_event
        self.destinations = dict(destinations)
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()
        self.clock = clock
        self.batch_size = batch_size
        self.poll_s = poll_s
        self._changed = threading.Condition()
        self._alerting = threading.Lock()
        Worker.__init__(self)
        self._round_failures = WriteFailures(log, "outbox round failed")  # a full disk: once
        #: The registry: message kind -> its sender.
        self.senders: dict[str, Sender] = {}
        _config.STORE_SEND_CHUNKED_DATASET = True  # send files as they are (dicom.md §2)
        super().__init__(db_path, busy_timeout_s=busy_timeout_s)

    # -- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop, and let go of the database (idempotent)."""
        self.stop()
        super().close()

    def register(self, kinds: Sequence[str], sender: Sender) -> None:
        """Send the messages of ``kinds`` with ``sender`` (one sender per kind)."""
        for kind in kinds:
            if kind in self.senders:
                raise ValueError(f"a sender of {kind!r} messages is already registered")
            self.senders[kind] = sender

    # -- enqueue -------------------------------------------------------------------------------

    def update_pending(
        self, message_id: int, dataset: Dataset, *, awaits: Sequence[str] = ()
    ) -> bool:
        """Replace the content (and what it waits for) of a message not sent yet; False when
        it has left meanwhile. Its place in the queue and its hold deadline stay."""
        values = (dataset.to_json(), json.dumps(list(awaits)), message_id)
        updated: int = self.db.run(
            lambda conn: (
                conn.execute(
                    "UPDATE outbox_messages SET payload_json = ?, "
                    "awaits_json = CASE WHEN awaits_json IS NULL THEN NULL ELSE ? END "
                    "WHERE id = ? AND state = 'pending'",
                    values,
                ).rowcount
            )
        )
        self._notify()
        return bool(updated)

    def enqueue(
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
        """Queue one message of a registered ``kind`` (idempotent for the kinds the unique
        index names; a failed one is queued again). ``awaits``: SOP Instance UIDs of messages
        that must be settled at their receiver (:attr:`settled_states`) before it leaves, for
        at most ``hold_s`` seconds from now."""
        if kind not in self.senders:
            raise OutboxError(f"no sender of {kind!r} messages is registered")
        if destination not in self.destinations:
            raise OutboxError(f"no {destination.upper()} configured: cannot queue {kind}")
        now_s = self.clock()
        awaits_json = json.dumps(list(awaits)) if awaits else None
        hold_until_s = now_s + hold_s if awaits else None
        self.db.run(
            lambda conn: conn.execute(
                f"""
                INSERT INTO outbox_messages (kind, destination, sop_class_uid, sop_instance_uid,
                    transfer_syntax_uid, file_path, payload_json, state, next_attempt_at_s,
                    created_at_s, awaits_json, hold_until_s)
                VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)
                ON CONFLICT (kind, sop_instance_uid) WHERE {ONCE_KINDS_SQL}
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
        )
        self._notify()
        self.wake()

    # -- inspection ------------------------------------------------------------------------------

    def messages(self, sop_instance_uid: str | None = None) -> list[Message]:
        """Every message (of one instance), oldest first."""
        with self.db.read() as conn:
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
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_messages WHERE state = 'pending' AND created_at_s <= ? "
                "ORDER BY created_at_s, id",
                (self.clock() - older_than_s,),
            ).fetchall()
        return [Message.from_row(row) for row in rows]

    def failed(self, since_s: float) -> list[Message]:
        """Messages that failed for good (never retried) and were queued after ``since_s``."""
        quiet = [kind for kind, sender in self.senders.items() if not sender.alerted]
        with self.db.read() as conn:
            rows = conn.execute(
                "SELECT * FROM outbox_messages WHERE state = 'failed' AND created_at_s >= ? "
                f"AND kind NOT IN ({_marks(quiet)}) ORDER BY id",
                (since_s, *quiet),
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
            marks = [(now_s, m.id) for m in new]
            self.db.run(
                lambda conn: conn.executemany(
                    "UPDATE outbox_messages SET stuck_alerted_at_s = ? WHERE id = ?", marks
                )
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
        with self.db.read() as conn:
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

    def work(self) -> float | None:
        """One round of the sender thread; at once again when it attempted something, else
        when the next message is due (a failed round is said once, and retried)."""
        try:
            worked = self.run_once()
        except Exception as exc:  # keep sending; the rows say what is pending
            self._round_failures.failed(exc)
            worked = 0
        else:
            self._round_failures.recovered()
        return None if worked else self.seconds_until_due()

    def seconds_until_due(self) -> float:
        """Seconds until the next sendable message is due (at most ``poll_s``)."""
        sendable, args = self._sendable(self.clock())
        with self.db.read() as conn:
            row = conn.execute(
                f"SELECT MIN(next_attempt_at_s) AS due FROM outbox_messages AS m "
                f"WHERE {sendable} AND destination IN ({_marks(self.destinations)})",
                (*args, *self.destinations),
            ).fetchone()
        if row["due"] is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, row["due"] - self.clock()))

    def run_once(self) -> int:
        """One round: each sender's own work (e.g. commitment transactions), then send what
        is due.

        Returns the number of messages attempted. The sender thread calls it in a loop; tests
        may call it directly (without :meth:`start`) to step the outbox deterministically.
        """
        now_s = self.clock()
        attempted = 0
        for sender in dict.fromkeys(self.senders.values()):
            sender.before_round(now_s)
        due = self._due(tuple(self.destinations), now_s)
        for destination in dict.fromkeys(m.destination for m in due):
            if self.stopping:
                break
            batch = [m for m in due if m.destination == destination]
            attempted += self._send_batch(destination, batch)
        self._notify()
        return attempted

    def _due(self, destinations: tuple[str, ...], now_s: float) -> list[Message]:
        sendable, args = self._sendable(now_s)
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM outbox_messages AS m WHERE {sendable} "
                f"AND next_attempt_at_s <= ? AND destination IN ({_marks(destinations)}) "
                "ORDER BY id LIMIT ?",
                (*args, now_s, *destinations, self.batch_size),
            ).fetchall()
        return [Message.from_row(row) for row in rows]

    def _send_batch(self, destination: str, batch: list[Message]) -> int:
        """Send ``batch`` on one association, then whatever became due for the same peer
        meanwhile (e.g. the N-SET behind its N-CREATE) and fits the negotiated contexts.

        Returns how many messages got an outcome.
        """
        contexts = self._contexts_for(batch)
        fits = {(m.sop_class_uid, m.transfer_syntax_uid) for m in batch}
        attempted = 0
        tried: set[int] = set()
        peer = self.destinations[destination]
        try:
            handlers = [h for s in dict.fromkeys(self.senders.values()) for h in s.handlers()]
            with associate(peer, contexts, evt_handlers=handlers) as assoc:
                while batch:
                    for message in batch:
                        if self.stopping or not assoc.is_established:
                            return attempted
                        tried.add(message.id)
                        self._send_one(assoc, message)
                        attempted += 1
                    batch = [
                        m
                        for m in self._due((destination,), self.clock())
                        if m.id not in tried and (m.sop_class_uid, m.transfer_syntax_uid) in fits
                    ]
        except AssociationError as exc:
            log.warning("outbox: %s", exc)
            for message in batch:
                self._record(message, Outcome.RETRY, None, str(exc))
            attempted = len(batch)
        return attempted

    def _send_one(self, assoc: Association, message: Message) -> None:
        if message.awaits and message.recovery is None:
            self._release_held(message)
        recovery = None
        try:
            outcome, status, error, recovery = self.senders[message.kind].send(assoc, message)
        except (DimseError, RuntimeError, ValueError) as exc:
            outcome, status, error = Outcome.RETRY, None, str(exc)
        except FileNotFoundError as exc:
            outcome, status, error = Outcome.TERMINAL, None, f"file missing: {exc.filename}"
        if recovery is not None:  # noted before the outcome, so that a crash keeps it
            self._note_recovery(message, recovery)
            self._event("recovered", message, {"recovery": recovery, "outcome": outcome})
        self._record(message, outcome, status, error)

    def _note_recovery(self, message: Message, note: str) -> None:
        self.db.run(
            lambda conn: conn.execute(
                "UPDATE outbox_messages SET recovery = ? WHERE id = ?", (note, message.id)
            )
        )

    def _record(
        self,
        message: Message,
        outcome: str,
        status: int | None,
        error: str | None,
    ) -> None:
        now_s = self.clock()
        attempts = message.attempts + 1
        if outcome == Outcome.DONE:
            self._update(
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
            self._update(
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
            self._update(
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

    def _release_held(self, message: Message) -> None:
        """A held message leaves: said once when its hold ended before the PACS stored all it
        waited for (journaled by the controller, pacs.mpps_hold_max_s)."""
        settled = self.settled_states
        with self.db.read() as conn:
            missing = [
                row[0]
                for row in conn.execute(
                    "SELECT w.value FROM json_each(?) AS w WHERE NOT EXISTS (SELECT 1 FROM "
                    "outbox_messages AS s WHERE s.sop_instance_uid = w.value "
                    f"AND s.state IN ({_marks(settled)}))",
                    (message.awaits_json, *settled),
                )
            ]
        if not missing:
            return
        note = f"sent before the PACS held {len(missing)} of the {len(message.awaits)} objects"
        self._note_recovery(message, note)
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

    # -- plumbing ----------------------------------------------------------------------------------

    def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        """One statement through the writer; committed on return."""
        self.db.run(lambda conn: conn.execute(sql, params))

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def changed(self) -> None:
        """Rows changed outside a round (e.g. a commitment result): what waited may leave now."""
        self._notify()
        self.wake()

    def event(self, event: str, message: Message, details: dict[str, Any]) -> None:
        """Report an event of a message through ``on_event`` (a failing hook is logged)."""
        self._event(event, message, details)

    def _sendable(self, now_s: float) -> tuple[str, tuple[Any, ...]]:
        """A pending message that may leave at ``now_s``, and its arguments: no earlier message
        of the same instance is still pending when its sender asks for order (PS3.4 F.7.2:
        N-CREATE before N-SET; N-SETs in the order they were made), and what it waits for is
        settled at its receiver or its hold has ended."""
        ordered = tuple(kind for kind, sender in self.senders.items() if sender.ordered)
        settled = self.settled_states
        sql = f"""
        state = 'pending' AND NOT EXISTS (
            SELECT 1 FROM outbox_messages AS e
            WHERE e.sop_instance_uid = m.sop_instance_uid AND e.id < m.id
              AND e.state = 'pending' AND e.kind IN ({_marks(ordered)}))
        AND (m.awaits_json IS NULL OR m.hold_until_s <= ? OR NOT EXISTS (
            SELECT 1 FROM json_each(m.awaits_json) AS w WHERE NOT EXISTS (
                SELECT 1 FROM outbox_messages AS s WHERE s.sop_instance_uid = w.value
                  AND s.state IN ({_marks(settled)}))))
        """
        return sql, (*ordered, now_s, *settled)

    def _contexts_for(self, batch: Sequence[Message]) -> list[PresentationContext]:
        """The presentation contexts the batch needs, each sender's for its messages (at most
        128, PS3.8 9.3.2.2)."""
        per_sender = [
            sender.contexts([m for m in batch if self.senders[m.kind] is sender])
            for sender in dict.fromkeys(self.senders[m.kind] for m in batch)
        ]
        # the shortest lists first: a sender with one context is never the one cut off
        return [cx for contexts in sorted(per_sender, key=len) for cx in contexts][:128]


def _marks(values: Sequence[Any] | Mapping[str, Any]) -> str:
    """SQL placeholders for ``values`` (``NULL`` for none: an empty ``IN ()`` matches nothing)."""
    return ", ".join("?" for _ in values) or "NULL"


def _hex(status: int | None) -> str:
    return "no response" if status is None else f"status 0x{status:04X}"


def describe_counts(counts: Mapping[str, int]) -> str:
    """``"3 pending, 10 sent"`` for logs and the console."""
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "empty"


def default_contexts(messages: Sequence[Message]) -> list[PresentationContext]:
    """One presentation context per SOP class of ``messages``, default transfer syntaxes."""
    return [
        build_context(sop_class) for sop_class in dict.fromkeys(m.sop_class_uid for m in messages)
    ]


__all__ = [
    "PACS",
    "RIS",
    "Message",
    "Outbox",
    "OutboxError",
    "RetryPolicy",
    "SendResult",
    "Sender",
    "State",
    "default_contexts",
    "describe_counts",
]
