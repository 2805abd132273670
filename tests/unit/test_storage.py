"""storage/: a full disk named as such (once), never "cannot rollback"; the free-space check."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from storage import FreeSpace, WriteFailures, atomic, connect, is_disk_full


def full_database(path: Path) -> sqlite3.Connection:
    """A connection whose database cannot grow: SQLite answers SQLITE_FULL, as on a full disk."""
    conn = connect(path)
    conn.execute("CREATE TABLE t (x BLOB)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    return conn


def test_a_full_disk_inside_a_transaction_is_reported_as_such(tmp_path: Path) -> None:
    conn = full_database(tmp_path / "full.db")
    try:
        with pytest.raises(sqlite3.OperationalError) as info, atomic(conn):
            conn.execute("INSERT INTO t VALUES (?)", (b"x" * 1_000_000,))
        assert "full" in str(info.value)  # not "cannot rollback - no transaction is active"
        assert is_disk_full(info.value)
        assert not conn.in_transaction
    finally:
        conn.close()


def test_a_write_that_keeps_failing_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = full_database(tmp_path / "full.db")
    failures = WriteFailures(logging.getLogger("test.writes"), "the exam's records")
    caplog.set_level(logging.DEBUG, logger="test.writes")
    try:
        for _ in range(5):  # the tick retries
            try:
                with atomic(conn):
                    conn.execute("INSERT INTO t VALUES (?)", (b"x" * 1_000_000,))
            except sqlite3.Error as exc:
                failures.failed(exc)
    finally:
        conn.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "the disk is full" in errors[0].getMessage()
    assert failures.current is not None
    failures.recovered()
    assert failures.current is None
    assert "writing again" in caplog.records[-1].getMessage()


def test_the_free_space_check_names_the_setting_of_the_short_disk(tmp_path: Path) -> None:
    assert FreeSpace({"database.path": tmp_path}, 0)() is None
    low = FreeSpace({"database.path": tmp_path / "not" / "yet"}, 10**12)()
    assert low is not None and "database.path" in low and "MB are needed" in low
