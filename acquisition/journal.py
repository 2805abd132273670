"""The exam journal: an append-only, hash-chained record in SQLite.

Every operator command, transition, refusal, injector event, exposure and DICOM message is one
entry. Each entry's ``hash`` covers its own content and the previous entry's hash, so altering,
deleting or reordering any row breaks the chain at that row; ``verify()`` names the first bad
entry. With a site key (``journal_key``, kept outside the database) the chain is an HMAC-SHA256:
whoever can write the database file but does not hold the key cannot forge a consistent chain.
A head row (entry count and last hash, written in the same transaction) makes a cut-off tail
visible too; with the key the head is sealed by an HMAC, so a forger who cuts the tail and
rewrites the head to match needs the key as well (without a key, a forger who recomputes the
head is not detected: keep the key set). Triggers refuse UPDATE and DELETE, so an honest program
cannot rewrite history by mistake.

Two things the database cannot show by itself (issue 12 §11):

- **A rollback**: a copy restored from last week is a consistent, sealed journal. The head
  (entry count and hash) is therefore *witnessed* outside the database (:class:`Witness`: an
  append-only file in another folder, and the system log), and ``galacto journal verify
  --witness FILE`` checks that every witnessed head is still in the journal.
- **A key change**: a journal sealed with one of ``previous_keys`` is rotated to ``key`` when it
  is opened: a ``key-rotated`` entry naming the new key's ID (an HMAC of the key, never the key)
  is appended *under the old key*, and every later entry under the new one. Verification walks
  the chain segment by segment, each under its key, and the head must be sealed with the current
  key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from storage.database import StorageError
from storage.files import append_line_durably, private_dir
from storage.writer import Database, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

GENESIS = "0" * 64
#: The entry kind that hands the chain from one key to the next.
KEY_ROTATED = "key-rotated"

MIGRATIONS = sqlite_utils.Migrations("acquisition.journal")


@MIGRATIONS()
def create_journal(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE journal (
            seq INTEGER PRIMARY KEY,
            recorded_utc TEXT NOT NULL,
            kind TEXT NOT NULL,
            exam_id TEXT,
            operator TEXT,
            payload_json TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        ) STRICT
        """
    )
    db.execute("CREATE INDEX journal_exam ON journal (exam_id, seq)")
    db.execute(
        "CREATE TABLE journal_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "entries INTEGER NOT NULL, head_hash TEXT NOT NULL) STRICT"
    )
    db.execute(f"INSERT INTO journal_head VALUES (1, 0, '{GENESIS}')")
    db.execute(
        "CREATE TRIGGER journal_no_update BEFORE UPDATE ON journal "
        "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER journal_no_delete BEFORE DELETE ON journal "
        "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END"
    )


@MIGRATIONS()
def index_kind(db: sqlite_utils.Database) -> None:
    """Start-up looks up the last entry of a kind (the last exam opened) without a scan."""
    db.execute("CREATE INDEX journal_kind ON journal (kind, seq)")


@MIGRATIONS()
def seal_head(db: sqlite_utils.Database) -> None:
    """With a site key the head carries an HMAC of (entries, last hash): cutting entries off the
    end and rewriting the head to match needs the key too."""
    db.execute("ALTER TABLE journal_head ADD COLUMN head_mac TEXT")


class JournalError(RuntimeError):
    """The journal could not be written: the exam must stop, never carry on unrecorded."""


@dataclass(frozen=True)
class Entry:
    seq: int
    recorded_utc: str
    kind: str
    exam_id: str | None
    operator: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    reason: str = ""


def key_id(key: bytes | None) -> str | None:
    """A key's public name: 16 hex digits of an HMAC under it (None: no key)."""
    if not key:
        return None
    return hmac.new(key, b"galacto journal key id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class Head:
    """The journal's head as witnessed: the last entry's number and hash, and when it was read."""

    seq: int
    hash: str
    time: str

    def line(self) -> str:
        """``seq hash time``: one line of a witness file."""
        return f"{self.seq} {self.hash} {self.time}"

    @classmethod
    def parse(cls, line: str) -> Head:
        seq, digest, time = line.split()
        if not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"not a witnessed head: {line!r}")
        return cls(int(seq), digest, time)


class Witness:
    """Writes the journal's head where a copy of the database does not go: an append-only
    file (0600, in its own folder, fsync'ed) and the system log."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)

    def record(self, head: Head) -> None:
        append_line_durably(self.path, head.line())
        message = f"galacto journal head {head.line()}"
        log.info("journal head witnessed: entry %d", head.seq)
        with contextlib.suppress(Exception):  # no system log (a container): the file suffices
            import syslog

            syslog.openlog("galacto", syslog.LOG_PID, syslog.LOG_USER)
            syslog.syslog(syslog.LOG_NOTICE, message)


def _head_mac(key: bytes | None, entries: int, head_hash: str) -> str | None:
    if not key:
        return None
    return hmac.new(key, f"head\x1f{entries}\x1f{head_hash}".encode(), hashlib.sha256).hexdigest()


def _canonical(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _chain_hash(key: bytes | None, prev_hash: str, fields: tuple[Any, ...]) -> str:
    """SHA-256 (or HMAC-SHA256 with the site key) of the previous hash and the entry's fields.

    ``fields`` is ``(seq, recorded_utc, kind, exam_id, operator, payload_json)``.
    """
    parts = [prev_hash, *("" if f is None else str(f) for f in fields)]
    material = "\x1f".join(parts).encode("utf-8")
    if key:
        return hmac.new(key, material, hashlib.sha256).hexdigest()
    return hashlib.sha256(material).hexdigest()


class Journal(Store):
    """Append and read the journal. Thread-safe: appends go to the database's one writer
    (:class:`storage.writer.Database`), reads to the calling thread's read connection.

    ``key`` seals the chain. Opening changes nothing (an audit may open any journal);
    :meth:`adopt_key` — called by the service at start-up — rotates a journal still sealed with
    a previous key (or with none) to ``key``. ``witness`` receives the head at
    :meth:`witness_head`.
    """

    migrations = MIGRATIONS

    def __init__(
        self,
        path: str | Path | Database,
        *,
        key: bytes | None = None,
        busy_timeout_s: float = 5.0,
        witness: Witness | None = None,
    ) -> None:
        self._key = key or None
        self._witness = witness
        super().__init__(path, busy_timeout_s=busy_timeout_s)

    def adopt_key(self, previous_keys: Sequence[bytes] = ()) -> Entry | None:
        """Make the journal sealed with this journal's key, before anything is appended.

        Sealed with it already (or empty): nothing to do. Sealed with one of ``previous_keys``,
        or with no key at all: a ``key-rotated`` entry naming the new key's ID is appended under
        the old key (or none), and returned. Sealed with another key: :class:`JournalError`
        (appending under the wrong key would break the chain).
        """
        new_key = self._key
        if not new_key:
            return None

        def rotate(conn: sqlite3.Connection) -> Entry | None:
            entries, head, seal = conn.execute(
                "SELECT entries, head_hash, head_mac FROM journal_head WHERE id = 1"
            ).fetchone()
            if not entries or seal == _head_mac(new_key, entries, head):
                return None
            old: bytes | None = None  # seal NULL: an unkeyed journal gets its first key
            if seal is not None:
                matching = [k for k in previous_keys if k and seal == _head_mac(k, entries, head)]
                if not matching:
                    raise JournalError(
                        "the journal is sealed with another key than site.journal_key and none "
                        "of site.journal_previous_keys: set the key it was written with"
                    )
                old = matching[0]
            payload = {"new_key_id": key_id(new_key), "old_key_id": key_id(old)}
            return _append(
                conn, KEY_ROTATED, payload, exam_id=None, operator=None, now=None, key=old
            )

        entry = self._write(rotate)
        if entry is None:
            return None
        log.warning("journal key rotated at entry %d (new key %s)", entry.seq, key_id(self._key))
        return entry

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        exam_id: str | None = None,
        operator: str | None = None,
        now: dt.datetime | None = None,
    ) -> Entry:
        """Append one entry durably (committed before returning) and return it."""
        key = self._key
        return self._write(
            lambda conn: _append(
                conn, kind, payload, exam_id=exam_id, operator=operator, now=now, key=key
            )
        )

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the database's writer; committed on return (any failure to write:
        :class:`JournalError`, the cause chained)."""
        if self.closed:
            raise JournalError("journal append failed: the journal is closed")
        try:
            return self.db.run(fn)
        except (sqlite3.Error, StorageError) as exc:
            raise JournalError(f"journal append failed: {exc}") from exc

    def entries(self, *, exam_id: str | None = None, after_seq: int = 0) -> Iterator[Entry]:
        sql = "SELECT * FROM journal WHERE seq > ?"
        params: list[Any] = [after_seq]
        if exam_id is not None:
            sql += " AND exam_id = ?"
            params.append(exam_id)
        with self.db.read() as conn:
            rows = conn.execute(sql + " ORDER BY seq", params).fetchall()
        for row in rows:
            yield _entry(row)

    def last(self, kind: str) -> Entry | None:
        """The most recent entry of ``kind``, or None (indexed)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM journal WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
            ).fetchone()
        return None if row is None else _entry(row)

    def key_matches(self) -> bool:
        """Whether appending now continues the chain: the head is sealed with this journal's
        key (or, without a key, not sealed), or the journal is empty."""
        with self.db.read() as conn:
            entries, head, seal = conn.execute(
                "SELECT entries, head_hash, head_mac FROM journal_head WHERE id = 1"
            ).fetchone()
        return not entries or seal == _head_mac(self._key, entries, head)

    def head(self) -> Head:
        """The last entry's number and hash (0 and the genesis hash when empty)."""
        with self.db.read() as conn:
            entries, digest = conn.execute(
                "SELECT entries, head_hash FROM journal_head WHERE id = 1"
            ).fetchone()
        return Head(
            int(entries), str(digest), dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        )

    def witness_head(self) -> Head | None:
        """Write the head to the witness (None without one). A failure is logged, not raised:
        the exam it closes is already journaled."""
        if self._witness is None:
            return None
        head = self.head()
        try:
            self._witness.record(head)
        except OSError as exc:
            log.error("journal head not witnessed in %s: %s", self._witness.path, exc)
            return None
        return head

    def verify(self, previous_keys: Sequence[bytes] = ()) -> VerifyResult:
        with self.db.read() as conn:
            return verify_connection(conn, self._key, previous_keys)


def _append(
    conn: sqlite3.Connection,
    kind: str,
    payload: Mapping[str, Any] | None,
    *,
    exam_id: str | None,
    operator: str | None,
    now: dt.datetime | None,
    key: bytes | None,
) -> Entry:
    """Append one entry under ``key`` (inside the writer's transaction): the chain's next link
    and the head that seals it."""
    payload_json = _canonical(payload or {})
    recorded = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
    entries, head = conn.execute(
        "SELECT entries, head_hash FROM journal_head WHERE id = 1"
    ).fetchone()
    seq = entries + 1
    digest = _chain_hash(key, head, (seq, recorded, kind, exam_id, operator, payload_json))
    conn.execute(
        "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, recorded, kind, exam_id, operator, payload_json, head, digest),
    )
    conn.execute(
        "UPDATE journal_head SET entries = ?, head_hash = ?, head_mac = ? WHERE id = 1",
        (seq, digest, _head_mac(key, seq, digest)),
    )
    return Entry(seq, recorded, kind, exam_id, operator, dict(payload or {}), head, digest)


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(
        row["seq"],
        row["recorded_utc"],
        row["kind"],
        row["exam_id"],
        row["operator"],
        json.loads(row["payload_json"]),
        row["prev_hash"],
        row["hash"],
    )


def verify_connection(
    conn: sqlite3.Connection, key: bytes | None = None, previous_keys: Sequence[bytes] = ()
) -> VerifyResult:
    """Walk the chain in row order; name the first entry that does not follow from the last.

    Each segment is checked under its key: the first under whichever of ``key``,
    ``previous_keys`` or no key it was written with, each after a ``key-rotated`` entry under
    the key that entry names. The head must be sealed with ``key``. The rows and the head are
    read in one read transaction: a writer appending meanwhile (the running service) is not
    mistaken for a cut-off tail.
    """
    started = not conn.in_transaction
    if started:
        conn.execute("BEGIN")
    try:
        return _verify(conn, key or None, [k for k in previous_keys if k])
    finally:
        if started:
            conn.execute("ROLLBACK")


def missing_heads(conn: sqlite3.Connection, heads: Iterable[Head]) -> Head | None:
    """The first witnessed head the journal does not hold (None: all present)."""
    for head in heads:
        row = conn.execute("SELECT hash FROM journal WHERE seq = ?", (head.seq,)).fetchone()
        if head.seq == 0 and head.hash == GENESIS:
            continue
        if row is None or not hmac.compare_digest(str(row[0]), head.hash):
            return head
    return None


def _verify(conn: sqlite3.Connection, key: bytes | None, previous: list[bytes]) -> VerifyResult:
    by_id = {key_id(k): k for k in (key, *previous) if k}
    candidates: list[bytes | None] = [key, *previous, None]
    segment_key: bytes | None = key
    segment_start = 1
    expected_prev = GENESIS
    expected_seq = 1
    count = 0
    cursor = conn.execute(
        "SELECT seq, recorded_utc, kind, exam_id, operator, payload_json, prev_hash, hash "
        "FROM journal ORDER BY rowid"
    )
    for seq, recorded, kind, exam_id, operator, payload_json, prev_hash, digest in cursor:
        count += 1
        if seq != expected_seq:
            return VerifyResult(
                False,
                count,
                seq,
                f"entry {seq} found where entry {expected_seq} was expected (deleted or reordered)",
            )
        if prev_hash != expected_prev:
            return VerifyResult(False, count, seq, f"entry {seq} does not follow its predecessor")
        fields = (seq, recorded, kind, exam_id, operator, payload_json)
        if count == 1:  # the first segment: under whichever key (or none) it was written
            segment_key = next(
                (k for k in candidates if _chain_hash(k, prev_hash, fields) == digest), key
            )
        recomputed = _chain_hash(segment_key, prev_hash, fields)
        if not hmac.compare_digest(recomputed, digest):
            return VerifyResult(False, count, seq, f"entry {seq} was altered")
        expected_prev = digest
        expected_seq += 1
        if kind == KEY_ROTATED:
            new_id = json.loads(payload_json).get("new_key_id")
            if new_id not in by_id:
                return VerifyResult(
                    False,
                    count,
                    seq + 1,
                    f"entries after {seq} are sealed with key {new_id}, which was not given "
                    "(site.journal_key or site.journal_previous_keys)",
                )
            segment_key = by_id[new_id]
            segment_start = seq + 1
    try:
        entries, head, seal = conn.execute(
            "SELECT entries, head_hash, head_mac FROM journal_head"
        ).fetchone()
    except sqlite3.OperationalError:  # a journal older than the seal (read-only: not migrated)
        entries, head = conn.execute("SELECT entries, head_hash FROM journal_head").fetchone()
        seal = None
        key = None  # nothing to check the seal against
    if key and count and segment_key != key:
        return VerifyResult(
            False,
            count,
            segment_start,
            f"entries from {segment_start} on are not sealed with the site key",
        )
    if key and count and not hmac.compare_digest(seal or "", _head_mac(key, entries, head) or ""):
        return VerifyResult(
            False,
            count,
            None,
            "the head's seal does not match the site key "
            "(entries removed from the end and the head rewritten)",
        )
    if entries != count or head != expected_prev:
        first_missing = count + 1 if entries > count else None
        return VerifyResult(
            False,
            count,
            first_missing,
            f"the head records {entries} entries, {count} found "
            "(entries removed from the end, or the head was altered)",
        )
    return VerifyResult(True, count)
