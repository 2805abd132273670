"""Reading the dose log for audits: read-only, in bounded pages, at lowered priority.

An audit runs on the controller's own PC, beside the live controller, over logs of millions
of exposures. So it:

- opens the database through the one read-only open of :mod:`storage` (``mode=ro`` on a live
  database; ``immutable=1`` or a private copy on read-only media, an archived copy);
- reads in **pages** of :data:`PAGE_ROWS` rows, each page one short read transaction (one
  statement, run to its end), so that the controller's WAL checkpoints are never held back
  for longer than one page takes, and memory stays constant however long the export;
- goes in the order of the exposures' acquisition time, each page found by a seek along the
  filter's index (keyset pagination), so that a page never reads again what earlier pages read;
- stops at the highest row id present when it started: an export of a live log ends, and it
  is the log as it was then plus any change made meanwhile to rows not yet read;
- lowers its own CPU priority (:func:`lower_priority`, ``os.nice(10)``) before it starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from storage import DatabaseOpenError, ReadOnlyDatabase, open_read_only

from .filters import ExposureFilter

log = logging.getLogger(__name__)

#: Rows per page (one read transaction each): a few MB of memory, a few ms of reading.
PAGE_ROWS = 2000
#: Exams per page when rows are read exam by exam.
PAGE_EXAMS = 500
#: How much ``os.nice`` lowers an audit's priority below the live controller's.
NICENESS = 10
#: Connections an audit reads with at once (:meth:`AuditLog.query_all`).
READERS = 8


def lower_priority() -> None:
    """``os.nice(10)``: the audit yields the CPU to the live controller on the same PC."""
    with contextlib.suppress(OSError):  # a platform without nice: run as is
        os.nice(NICENESS)


class AuditLog:
    """The dose log of ``path``, opened read-only for an audit; close it when done."""

    def __init__(self, path: str | Path) -> None:
        self._db: ReadOnlyDatabase = open_read_only(path)
        self.path = Path(path)
        try:
            if not self._db.has_table("exposure"):
                raise DatabaseOpenError(path, "it holds no dose log")
            columns = {row[1] for row in self.conn.execute("PRAGMA table_xinfo(exposure)")}
            if "view_name" not in columns:
                raise DatabaseOpenError(
                    path,
                    "its dose log predates the audit indexes (migration m004_audit); open a "
                    "writable copy once with this version (e.g. galacto dose alerts "
                    "--database COPY) and audit the copy",
                )
        except BaseException:
            self._db.close()
            raise
        self.conn.row_factory = None  # tuples: an export reads millions of rows
        self._pool: ThreadPoolExecutor | None = None
        self._readers: list[ReadOnlyDatabase] = []
        self._reader = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        return self._db.connection

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        for reader in self._readers:
            reader.close()
        self._db.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------- reading
    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement, read to its end (one short read transaction)."""
        return self.conn.execute(sql, tuple(params)).fetchall()

    def query_all(
        self, statements: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[tuple[Any, ...]]]:
        """Each statement's rows, in order, the statements run :data:`READERS` at a time, each
        on a connection of its own (opened as this one; a private copy of read-only media is
        read by this connection alone). What they read from the disk overlaps: the report's
        median walks over a cold page cache."""
        if self._db.how == "copy" or len(statements) < 2:
            return [self.query(sql, params) for sql, params in statements]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READERS, thread_name_prefix="audit-reader")
        return list(self._pool.map(lambda statement: self._read(*statement), statements))

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One statement on this thread's own connection."""
        conn = getattr(self._reader, "conn", None)
        if conn is None:
            reader = open_read_only(self.path)
            self._readers.append(reader)
            conn = self._reader.conn = reader.connection
            conn.row_factory = None
        return conn.execute(sql, tuple(params)).fetchall()

    def has_table(self, name: str) -> bool:
        return self._db.has_table(name)

    def has_index(self, name: str) -> bool:
        found = self.query("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (name,))
        return bool(found)

    def high_water_mark(self) -> int:
        return int(self.query("SELECT coalesce(max(id), 0) FROM exposure")[0][0])

    def pages(
        self, flt: ExposureFilter, columns: Sequence[str], *, page_rows: int = PAGE_ROWS
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The filtered rows in pages, in the order of their acquisition time (the unit's local
        time; rows without one first, by id); ``columns`` are SQL expressions over
        ``exposure``. Each page is found by a seek along an index (the filter's, in time
        order), never by reading again what earlier pages read."""
        flt = flt.resolve(self.conn)
        where, params = flt.where("exposure")
        high = self.high_water_mark()
        listed = ", ".join(columns)
        yield from self._pages_where(
            f"SELECT exposure.id, {listed} FROM exposure",
            f"exposure.acquisition_datetime IS NULL AND {where}",
            params,
            high,
            page_rows,
        )
        sql = (
            f"SELECT exposure.id, exposure.acquisition_datetime, {listed} FROM exposure "
            "WHERE (exposure.acquisition_datetime, exposure.id) > (?, ?) AND exposure.id <= ? "
            f"AND {where} ORDER BY exposure.acquisition_datetime, exposure.id LIMIT ?"
        )
        last: tuple[str, int] = ("", 0)
        while True:
            rows = self.query(sql, (*last, high, *params, page_rows))
            if not rows:
                return
            last = (rows[-1][1], rows[-1][0])
            yield [row[2:] for row in rows]
            if len(rows) < page_rows:
                return

    def pages_by_exam(
        self, flt: ExposureFilter, columns: Sequence[str], *, page_exams: int = PAGE_EXAMS
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The filtered rows exam by exam (Study Instance UID order, then oldest first within
        an exam), in pages of whole exams; rows without a Study Instance UID come last, oldest
        first. ``columns`` as for :meth:`pages`."""
        flt = flt.resolve(self.conn)
        where, params = flt.where("exposure")
        high = self.high_water_mark()
        selected = f"SELECT exposure.id, {', '.join(columns)} FROM exposure"
        last = ""
        while True:
            studies = [
                row[0]
                for row in self.query(
                    "SELECT study_instance_uid FROM exposure WHERE study_instance_uid > ? "
                    f"AND exposure.id <= ? AND {where} "
                    "GROUP BY study_instance_uid ORDER BY study_instance_uid LIMIT ?",
                    (last, high, *params, page_exams),
                )
            ]
            if not studies:
                break
            last = studies[-1]
            marks = ", ".join("?" * len(studies))
            rows = self.query(
                f"{selected} WHERE study_instance_uid IN ({marks}) AND exposure.id <= ? "
                f"AND {where} ORDER BY study_instance_uid, exposure.id",
                (*studies, high, *params),
            )
            yield [row[1:] for row in rows]
        where_no_study = f"study_instance_uid IS NULL AND {where}"
        yield from self._pages_where(selected, where_no_study, params, high, PAGE_ROWS)

    def _pages_where(
        self, selected: str, where: str, params: Sequence[Any], high: int, page_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        last = 0
        while True:
            rows = self.query(
                f"{selected} WHERE exposure.id > ? AND exposure.id <= ? AND {where} "
                "ORDER BY exposure.id LIMIT ?",
                (last, high, *params, page_rows),
            )
            if not rows:
                return
            last = rows[-1][0]
            yield [row[1:] for row in rows]
            if len(rows) < page_rows:
                return
