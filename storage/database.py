"""Opening the controller's SQLite database: the one writable way, and the one read-only way.

One file holds the worklist, the MPPS instances, the dose log, the outbox and the journal;
each store owns its tables and its own ``sqlite_utils.Migrations`` set (named after the store,
ordered, recorded; never edit an applied migration).

**Writable** (:func:`connect`, :func:`open_database`): WAL mode with ``synchronous=FULL``, so a
committed row survives a power cut ("durable before acknowledged"). The file is created 0600
before SQLite opens it (SQLite gives its ``-wal`` and ``-shm`` the database file's mode) and an
existing one is made 0600; its folder is created 0700. :func:`atomic` is the one transaction
shape (``BEGIN IMMEDIATE`` … ``COMMIT``; a failed transaction is rolled back only while one is
still open, so the original error — a full disk, say — is what the caller sees, never SQLite's
"cannot rollback - no transaction is active").

**Read-only** (:func:`open_read_only`), for audits that must not change what they audit (journal
verification, dose listings, exports, reports): ``mode=ro`` on a live database. On read-only
media SQLite cannot create the ``-shm`` it needs to read a WAL database, and ``immutable=1``
would silently ignore a ``-wal`` (losing the newest rows), so there: without a ``-wal`` the file
is opened ``immutable=1``; with one, the database and its ``-wal`` are copied into a private
(0700) temporary folder and the copy is opened, then removed on close.

Every open error is a :class:`DatabaseOpenError` naming the file and the setting it came from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from storage.files import PRIVATE_FILE_MODE, create_private_file, private_dir

#: The setting that names the database, for error messages (callers may name another).
DATABASE_SETTING = "database.path"
WAL_SUFFIX = "-wal"
SHM_SUFFIX = "-shm"


class StorageError(Exception):
    """Base of the errors of the ``storage`` package."""


class DatabaseOpenError(StorageError, sqlite3.OperationalError):
    """The database cannot be opened (or prepared): names the file and the setting."""

    def __init__(self, path: str | Path, reason: str, *, setting: str = DATABASE_SETTING) -> None:
        self.path = str(path)
        self.setting = setting
        self.reason = reason
        super().__init__(f"cannot open the database {self.path} ({setting}): {reason}")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _prepare_private_file(path: Path, setting: str) -> None:
    try:
        private_dir(path.parent)
        if not create_private_file(path) and os.stat(path).st_mode & 0o077:
            os.chmod(path, PRIVATE_FILE_MODE)
        for suffix in (WAL_SUFFIX, SHM_SUFFIX):  # from an older version, or another umask
            sidecar = Path(f"{path}{suffix}")
            # gone meanwhile: the last connection of another thread or process closed
            with contextlib.suppress(FileNotFoundError):
                if os.stat(sidecar).st_mode & 0o077:
                    os.chmod(sidecar, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise DatabaseOpenError(path, _reason(exc), setting=setting) from exc


def connect(
    path: str | Path,
    *,
    busy_timeout_s: float = 5.0,
    check_same_thread: bool = True,
    setting: str = DATABASE_SETTING,
) -> sqlite3.Connection:
    """A writable connection with the house pragmas, in autocommit mode (use :func:`atomic`).

    By default only the opening thread may use it; pass ``check_same_thread=False`` when one
    owner serialises its use across threads with a lock.
    """
    memory = str(path) == ":memory:"
    if not memory:
        _prepare_private_file(Path(path), setting)
    try:
        conn = sqlite3.connect(
            str(path),
            timeout=busy_timeout_s,
            isolation_level=None,
            check_same_thread=check_same_thread,
        )
    except sqlite3.Error as exc:
        raise DatabaseOpenError(path, _reason(exc), setting=setting) from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    except sqlite3.Error as exc:
        conn.close()
        raise DatabaseOpenError(path, _reason(exc), setting=setting) from exc
    return conn


def open_database(
    path: str | Path, *, busy_timeout_s: float = 5.0, setting: str = DATABASE_SETTING
) -> sqlite_utils.Database:
    """The same connection wrapped for sqlite-utils (migrations, table helpers)."""
    return sqlite_utils.Database(connect(path, busy_timeout_s=busy_timeout_s, setting=setting))


def migrate(
    db: sqlite_utils.Database | sqlite3.Connection,
    migrations: sqlite_utils.Migrations,
    *,
    setting: str = DATABASE_SETTING,
) -> None:
    """Apply a store's pending migrations (idempotent; safe at every start-up)."""
    if isinstance(db, sqlite3.Connection):
        db = sqlite_utils.Database(db)
    try:
        migrations.apply(db)
    except sqlite3.Error as exc:
        name = _database_file(db.conn)
        raise DatabaseOpenError(name, _reason(exc), setting=setting) from exc


def _database_file(conn: sqlite3.Connection) -> str:
    row = conn.execute("PRAGMA database_list").fetchone()
    return str(row[2]) if row is not None and row[2] else ":memory:"


@contextlib.contextmanager
def atomic(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; on any error, ``ROLLBACK`` if a transaction is still
    open (SQLite ends it by itself on a full disk or an I/O error) and re-raise the original."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# -- read-only ---------------------------------------------------------------------------------


def medium_is_read_only(folder: Path) -> bool:
    """Whether files cannot be created in ``folder`` (a read-only mount, or no write right)."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return not os.access(folder, os.W_OK)


class ReadOnlyDatabase:
    """A read-only connection to a database (see the module docstring); close it when done.

    ``how`` says which way it was opened: ``"ro"`` (live, ``mode=ro``), ``"immutable"`` (read-only
    medium without a ``-wal``) or ``"copy"`` (read-only medium with a ``-wal``: a private copy).
    """

    def __init__(
        self, path: str | Path, *, setting: str = DATABASE_SETTING, busy_timeout_s: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.setting = setting
        self._copy_dir: Path | None = None
        if not self.path.is_file():
            raise DatabaseOpenError(self.path, "no such file", setting=setting)
        wal = Path(f"{self.path}{WAL_SUFFIX}")
        try:
            if not medium_is_read_only(self.path.resolve().parent):
                self.how, uri = "ro", f"{self.path.resolve().as_uri()}?mode=ro"
            elif not wal.exists():
                self.how, uri = "immutable", f"{self.path.resolve().as_uri()}?immutable=1"
            else:
                self.how, uri = "copy", self._private_copy(wal)
            self.connection = sqlite3.connect(
                uri, uri=True, timeout=busy_timeout_s, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            self._remove_copy()
            raise DatabaseOpenError(self.path, _reason(exc), setting=setting) from exc
        self.connection.row_factory = sqlite3.Row
        try:
            self.connection.execute("PRAGMA query_only=ON")
            self.connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            self.close()
            raise DatabaseOpenError(self.path, _reason(exc), setting=setting) from exc

    def _private_copy(self, wal: Path) -> str:
        """Copy the database and its ``-wal`` into a new 0700 folder; the copy's URI."""
        self._copy_dir = Path(tempfile.mkdtemp(prefix="galacto-ro-"))  # mkdtemp: 0700
        copy = self._copy_dir / self.path.name
        for source, target in ((self.path, copy), (wal, Path(f"{copy}{WAL_SUFFIX}"))):
            create_private_file(target)
            shutil.copyfile(source, target)
        return f"{copy.as_uri()}?mode=ro"

    def has_table(self, name: str) -> bool:
        row = self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def close(self) -> None:
        """Close the connection and remove a private copy (idempotent)."""
        connection = getattr(self, "connection", None)
        if connection is not None:
            connection.close()
            self.connection = None  # type: ignore[assignment]
        self._remove_copy()

    def _remove_copy(self) -> None:
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            self._copy_dir = None

    def __enter__(self) -> ReadOnlyDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_read_only(
    path: str | Path, *, setting: str = DATABASE_SETTING, busy_timeout_s: float = 5.0
) -> ReadOnlyDatabase:
    """The one read-only open of a database (see the module docstring)."""
    return ReadOnlyDatabase(path, setting=setting, busy_timeout_s=busy_timeout_s)
