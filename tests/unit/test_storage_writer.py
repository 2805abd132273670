"""The one way to write the database (storage/writer.py): one writer, reads per thread."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from storage import is_disk_full
from storage.writer import Database, DatabaseClosed, shared
from tests.waiting import eventually


def make(path: Path) -> Database:
    db = shared(path)
    db.run(lambda conn: conn.execute("CREATE TABLE IF NOT EXISTS t (v TEXT UNIQUE)"))
    return db


def values(path: Path) -> list[str]:
    with sqlite3.connect(path) as other:
        rows = other.execute("SELECT v FROM t ORDER BY rowid").fetchall()
    other.close()
    return [row[0] for row in rows]


def test_a_write_is_committed_before_its_future_resolves(tmp_path: Path) -> None:
    with make(tmp_path / "db.sqlite") as db:
        future = db.write(lambda conn: conn.execute("INSERT INTO t VALUES ('a')").rowcount)
        assert future.result(5.0) == 1
        assert values(tmp_path / "db.sqlite") == ["a"]  # another connection sees it at once
        with db.read() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_the_file_is_private(tmp_path: Path) -> None:
    with make(tmp_path / "db.sqlite"):
        assert stat.S_IMODE(os.stat(tmp_path / "db.sqlite").st_mode) == 0o600


def test_a_failing_write_in_a_shared_transaction_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    db = make(path)
    blocker = sqlite3.connect(path, isolation_level=None, timeout=10.0)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer waits on its first transaction
        first = db.write(lambda conn: conn.execute("INSERT INTO t VALUES ('first')"))
        assert eventually(lambda: db._state.jobs.qsize() == 0, 5.0)
        futures = [
            db.write(lambda conn: conn.execute("INSERT INTO t VALUES ('second')")),
            db.write(lambda conn: conn.execute("INSERT INTO t VALUES ('first')")),  # duplicate
            db.write(lambda conn: conn.execute("INSERT INTO t VALUES ('third')")),
        ]
        blocker.execute("COMMIT")
        first.result(10.0)
        futures[0].result(10.0)
        with pytest.raises(sqlite3.IntegrityError):
            futures[1].result(10.0)
        futures[2].result(10.0)
    finally:
        blocker.close()
        db.close()
    assert values(path) == ["first", "second", "third"]


def test_an_effect_outside_the_database_runs_once(tmp_path: Path) -> None:
    calls: list[int] = []

    def moved_then_fails(conn: sqlite3.Connection) -> None:
        calls.append(1)
        conn.execute("INSERT INTO t VALUES ('x')")
        raise OSError(28, "No space left on device")

    with make(tmp_path / "db.sqlite") as db, pytest.raises(OSError) as raised:
        db.run(moved_then_fails, alone=True)
    assert is_disk_full(raised.value)  # the original error, as the caller's handling expects
    assert calls == [1]
    assert values(tmp_path / "db.sqlite") == []  # rolled back


def test_a_write_inside_a_write_joins_its_transaction(tmp_path: Path) -> None:
    with make(tmp_path / "db.sqlite") as db:

        def outer(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t VALUES ('outer')")
            return db.run(lambda c: c.execute("INSERT INTO t VALUES ('inner')").rowcount)

        assert db.run(outer) == 1
    assert values(tmp_path / "db.sqlite") == ["outer", "inner"]


def test_each_thread_reads_on_its_own_connection(tmp_path: Path) -> None:
    with make(tmp_path / "db.sqlite") as db:
        seen: list[sqlite3.Connection] = []

        def read() -> None:
            with db.read() as conn:
                seen.append(conn)

        read()
        read()
        thread = threading.Thread(target=read)
        thread.start()
        thread.join(5.0)
        assert seen[0] is seen[1]
        assert seen[2] is not seen[0]


def test_one_database_per_file_and_the_last_user_closes_it(tmp_path: Path) -> None:
    first = make(tmp_path / "db.sqlite")
    second = shared(tmp_path / "." / "db.sqlite")
    assert second is first
    first.close()
    second.run(lambda conn: conn.execute("INSERT INTO t VALUES ('still open')"))
    second.close()
    assert first.closed
    with pytest.raises(DatabaseClosed):
        first.write(lambda conn: None)
    with pytest.raises(DatabaseClosed), first.read():
        pass
    assert shared(tmp_path / "db.sqlite") is not first  # a new one after the last close
    shared(tmp_path / "db.sqlite").close()


def test_an_idle_database_holds_no_thread_and_no_file(tmp_path: Path) -> None:
    db = make(tmp_path / "db.sqlite")
    with db.read() as conn:
        conn.execute("SELECT 1").fetchone()
    assert eventually(lambda: db._state.thread is None and not db._state.readers, 5.0)
    assert db.run(lambda conn: conn.execute("INSERT INTO t VALUES ('again')").rowcount) == 1
    db.close()


def test_an_unusable_file_fails_at_opening(tmp_path: Path) -> None:
    (tmp_path / "folder.sqlite").mkdir()
    with pytest.raises(sqlite3.Error):
        Database(tmp_path / "folder.sqlite")
