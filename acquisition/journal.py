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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from storage.database import atomic, connect, migrate

GENESIS = "0" * 64

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


class Journal:
    """Append and read the journal. Thread-safe: one connection behind a lock."""

    def __init__(
        self, path: str | Path, *, key: bytes | None = None, busy_timeout_s: float = 5.0
    ) -> None:
        self._key = key or None
        self._lock = threading.Lock()
        # One connection, used only under the lock, from whichever thread holds it.
        self._conn = connect(path, busy_timeout_s=busy_timeout_s, check_same_thread=False)
        migrate(sqlite_utils.Database(self._conn), MIGRATIONS)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        payload_json = _canonical(payload or {})
        recorded = (now or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")
        with self._lock:
            try:
                with atomic(self._conn):
                    entries, head = self._conn.execute(
                        "SELECT entries, head_hash FROM journal_head WHERE id = 1"
                    ).fetchone()
                    seq = entries + 1
                    digest = _chain_hash(
                        self._key, head, (seq, recorded, kind, exam_id, operator, payload_json)
                    )
                    self._conn.execute(
                        "INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (seq, recorded, kind, exam_id, operator, payload_json, head, digest),
                    )
                    self._conn.execute(
                        "UPDATE journal_head SET entries = ?, head_hash = ?, head_mac = ? "
                        "WHERE id = 1",
                        (seq, digest, _head_mac(self._key, seq, digest)),
                    )
            except sqlite3.Error as exc:
                raise JournalError(f"journal append failed: {exc}") from exc
        return Entry(seq, recorded, kind, exam_id, operator, dict(payload or {}), head, digest)

    def entries(self, *, exam_id: str | None = None, after_seq: int = 0) -> Iterator[Entry]:
        sql = "SELECT * FROM journal WHERE seq > ?"
        params: list[Any] = [after_seq]
        if exam_id is not None:
            sql += " AND exam_id = ?"
            params.append(exam_id)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY seq", params).fetchall()
        for row in rows:
            yield _entry(row)

    def last(self, kind: str) -> Entry | None:
        """The most recent entry of ``kind``, or None (indexed)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT * FROM journal WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
            ).fetchone()
        return None if row is None else _entry(row)

    def verify(self) -> VerifyResult:
        with self._lock:
            return verify_connection(self._conn, self._key)


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


def verify_connection(conn: sqlite3.Connection, key: bytes | None = None) -> VerifyResult:
    """Walk the chain in row order; name the first entry that does not follow from the last.

    The rows and the head are read in one read transaction: a writer appending meanwhile (the
    running service) is not mistaken for a cut-off tail.
    """
    started = not conn.in_transaction
    if started:
        conn.execute("BEGIN")
    try:
        return _verify(conn, key)
    finally:
        if started:
            conn.execute("ROLLBACK")


def _verify(conn: sqlite3.Connection, key: bytes | None) -> VerifyResult:
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
        recomputed = _chain_hash(key, prev_hash, fields)
        if not hmac.compare_digest(recomputed, digest):
            return VerifyResult(False, count, seq, f"entry {seq} was altered")
        expected_prev = digest
        expected_seq += 1
    try:
        entries, head, seal = conn.execute(
            "SELECT entries, head_hash, head_mac FROM journal_head"
        ).fetchone()
    except sqlite3.OperationalError:  # a journal older than the seal (read-only: not migrated)
        entries, head = conn.execute("SELECT entries, head_hash FROM journal_head").fetchone()
        seal = None
        key = None  # nothing to check the seal against
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
