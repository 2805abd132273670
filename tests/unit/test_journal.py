"""The journal's chain: every alteration, deletion, reordering or truncation is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from acquisition.journal import Head, Journal, JournalError, Witness, key_id, missing_heads


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


def test_a_rotated_key_is_journaled_under_the_old_one_and_verified_across(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db, key=b"old-key", n=3)
    with Journal(db, key=b"new-key") as journal:
        assert not journal.key_matches()
        rotated = journal.adopt_key([b"other", b"old-key"])
        assert rotated is not None and rotated.kind == "key-rotated"
        assert rotated.payload["new_key_id"] == key_id(b"new-key")
        assert "new-key" not in str(rotated.payload)  # the key itself never
        journal.append("transition", {"to": "S9"})
        assert journal.key_matches()
        assert journal.adopt_key([b"old-key"]) is None  # already sealed with it
    with Journal(db, key=b"new-key") as journal:
        assert journal.verify([b"old-key"]).ok
        without_old = journal.verify()
    assert not without_old.ok and "entry 1 was altered" in without_old.reason
    with Journal(db, key=b"old-key") as journal:  # the old key alone no longer seals the head
        assert not journal.verify().ok


def test_a_journal_sealed_with_an_unknown_key_is_not_rotated(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db, key=b"somebody-elses", n=2)
    with Journal(db, key=b"ours") as journal, pytest.raises(JournalError, match="another key"):
        journal.adopt_key([b"not-it-either"])
    with Journal(db, key=b"somebody-elses") as journal:
        assert journal.verify().ok  # nothing was appended


def test_an_unkeyed_journal_gets_its_first_key(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    filled(db, n=2)
    with Journal(db, key=b"first-key") as journal:
        rotated = journal.adopt_key()
        assert rotated is not None and rotated.payload["old_key_id"] is None
        journal.append("transition", {})
        assert journal.verify().ok


def test_the_witness_holds_the_head_and_a_rollback_misses_it(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    witness_file = tmp_path / "elsewhere" / "heads.log"
    with Journal(db, key=b"k", witness=Witness(witness_file)) as journal:
        journal.append("transition", {})
        backup = tmp_path / "backup.db"
        with sqlite3.connect(db) as source, sqlite3.connect(backup) as target:
            source.backup(target)
        journal.append("transition", {})
        head = journal.witness_head()
    assert head is not None and head.seq == 2
    (line,) = witness_file.read_text().splitlines()
    assert line == head.line() and len(line.split()) == 3
    assert oct(witness_file.stat().st_mode & 0o777) == "0o600"
    heads = [Head.parse(line)]
    with sqlite3.connect(db) as conn:
        assert missing_heads(conn, heads) is None
    with sqlite3.connect(backup) as conn:  # last week's copy: consistent, sealed, but behind
        assert missing_heads(conn, heads) == heads[0]
    with Journal(backup, key=b"k") as journal:
        assert journal.verify().ok  # the chain alone cannot tell
