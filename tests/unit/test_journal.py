"""The journal's chain: every alteration, deletion, reordering or truncation is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from acquisition.journal import Journal, JournalError


def filled(path: Path, key: bytes | None = None, n: int = 6) -> None:
    with Journal(path, key=key) as journal:
        for i in range(n):
            journal.append("transition", {"to": f"S{i}", "why": "ü"}, exam_id="E1", operator="tech")


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("DROP TRIGGER journal_no_delete")
    return conn


def verify(path: Path, key: bytes | None = None) -> tuple[bool, int | None, str]:
    with Journal(path, key=key) as journal:
        result = journal.verify()
    return result.ok, result.first_bad_seq, result.reason


def test_intact_chain_verifies(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    assert verify(db) == (True, None, "")
    with Journal(db) as journal:
        entries = list(journal.entries(exam_id="E1"))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0].payload == {"to": "S0", "why": "ü"}
    assert entries[1].prev_hash == entries[0].hash


def test_append_only_triggers_refuse_rewrites(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    conn = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE journal SET kind = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM journal WHERE seq = 2")
    conn.close()


def test_altered_payload_is_named(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    with raw(db) as conn:
        conn.execute("""UPDATE journal SET payload_json = '{"to":"S9"}' WHERE seq = 3""")
    conn.close()
    ok, seq, reason = verify(db)
    assert (ok, seq) == (False, 3)
    assert "altered" in reason


def test_deleted_middle_row_is_named(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    conn = raw(db)
    conn.execute("DELETE FROM journal WHERE seq = 4")
    conn.close()
    assert verify(db)[:2] == (False, 5)


def test_truncated_tail_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    conn = raw(db)
    conn.execute("DELETE FROM journal WHERE seq = 6")
    conn.close()
    ok, seq, reason = verify(db)
    assert (ok, seq) == (False, 6)
    assert "removed from the end" in reason


def test_truncated_tail_with_a_rewritten_head_is_detected_with_the_key(tmp_path: Path) -> None:
    """Cut the tail and rewrite the head to agree: the chain that is left is consistent, but
    the head's seal needs the key."""
    db = tmp_path / "j.db"
    filled(db, key=b"site-key")
    conn = raw(db)
    last_kept = conn.execute("SELECT hash FROM journal WHERE seq = 4").fetchone()[0]
    conn.execute("DELETE FROM journal WHERE seq > 4")
    conn.execute("UPDATE journal_head SET entries = 4, head_hash = ?", (last_kept,))
    conn.close()
    ok, _, reason = verify(db, key=b"site-key")
    assert not ok
    assert "seal" in reason
    assert verify(db)[0] is False  # without the key the chain is not even readable as SHA-256


def test_reordered_rows_are_named(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db)
    conn = raw(db)
    rows = conn.execute("SELECT * FROM journal WHERE seq IN (2, 3) ORDER BY seq").fetchall()
    conn.execute("DELETE FROM journal WHERE seq IN (2, 3)")
    # entries 2 and 3 swap places: each keeps its own content, hashes included
    conn.execute("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)", (2, *rows[1][1:]))
    conn.execute("INSERT INTO journal VALUES (?,?,?,?,?,?,?,?)", (3, *rows[0][1:]))
    conn.close()
    ok, seq, reason = verify(db)
    assert (ok, seq) == (False, 2)
    assert "does not follow" in reason


def test_recomputed_chain_without_the_key_is_detected(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    key = b"site-secret"
    filled(db, key=key)
    assert verify(db, key)[0]
    # A forger without the key rewrites entry 2 and recomputes a plain SHA-256 chain.
    with Journal(tmp_path / "forged.db") as forged:
        for i in range(6):
            forged.append("transition", {"to": f"S{i}", "why": "ü"}, exam_id="E1", operator="x")
    assert verify(tmp_path / "forged.db")[0]
    assert verify(tmp_path / "forged.db", key)[:2] == (False, 1)


def test_write_failure_raises_journal_error(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    journal = Journal(db)
    journal.close()
    with pytest.raises((JournalError, sqlite3.ProgrammingError)):
        journal.append("transition", {})


def test_last_entry_of_a_kind(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db") as journal:
        assert journal.last("exam-opened") is None
        journal.append("exam-opened", {"n": 1}, exam_id="E1")
        journal.append("transition", {}, exam_id="E1")
        journal.append("exam-opened", {"n": 2}, exam_id="E2")
        journal.append("transition", {}, exam_id="E2")
        last = journal.last("exam-opened")
    assert last is not None
    assert (last.exam_id, last.payload, last.seq) == ("E2", {"n": 2}, 3)
