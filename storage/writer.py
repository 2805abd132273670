"""The one way to write the database: one :class:`Database` per file, one writer thread.

Every store (journal, dose log, worklist, MPPS, RIS orders, outbox, received objects, and any
new one) holds a :class:`Database` and never a write connection of its own — datasette's
``execute_write_fn`` pattern (style.md §5):

- :meth:`Database.write` hands a function ``fn(conn)`` to the writer thread and returns a
  :class:`~concurrent.futures.Future` of its result. The writer runs it inside ``BEGIN
  IMMEDIATE`` … ``COMMIT`` (:func:`storage.database.atomic`) on the one write connection (WAL,
  ``synchronous=FULL``), so the future is resolved only once the change is durable. Work queued
  while a COMMIT is in progress shares the next transaction (group commit: one fsync for all);
  when a shared transaction fails, each function is run again alone, so one failure (a unique
  key, a full disk) reaches its own caller and no other. :meth:`Database.run` is ``write(fn)``
  waited for: what a store calls before it acknowledges anything ("durable before
  acknowledged": the commit is done before the DIMSE response).
- :meth:`Database.read` lends the calling thread its own read connection (one per thread, made
  on first use, closed with the database or once its thread has ended). In WAL mode readers
  never wait for the writer.
- :func:`shared` gives every store of a process opened on the same file the same
  :class:`Database` (counted: the last :meth:`~Database.close` closes it), so the controller's
  stores have one writer between them and never contend for SQLite's write lock.

A ``fn`` runs on the writer thread: it must only touch ``conn`` and its own values, and may be
run twice (after a shared transaction failed) — no side effect outside the database. Call
``write`` from ``fn`` and the nested function runs at once, in the same transaction.

Errors are the original ones (``sqlite3.Error``, a full disk included — :func:`storage.space
.is_disk_full` sees them — or whatever ``fn`` raised); :class:`WriteTimeout` when no commit came
in time; :class:`DatabaseClosed` after :meth:`~Database.close`.

Adopting it in a store: subclass :class:`Store`, name its migrations, write and read::

    class UserStore(Store):
        migrations = sqlite_utils.Migrations("users")   # the store's own, applied at opening

        def add(self, name: str) -> None:
            self.db.run(lambda conn: conn.execute("INSERT INTO users VALUES (?)", (name,)))

        def names(self) -> list[str]:
            with self.db.read() as conn:
                return [row[0] for row in conn.execute("SELECT name FROM users")]

    users = UserStore(path_or_database)   # the process's Database of that file
    ...
    users.close()                          # the file closes with its last store
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import sqlite_utils

from storage.database import DATABASE_SETTING, StorageError, atomic, connect, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long :meth:`Database.run` waits for a commit by default.
WRITE_TIMEOUT_S = 30.0
#: After this long without a read or a write, the writer thread and the connections are let
#: go (reopened at the next use: a connection costs about half a millisecond). Short by default,
#: so that a store nobody closed (a command line's, a test's) holds nothing for long; a
#: long-running owner that closes its stores (the controller) passes a longer ``idle_s``.
IDLE_S = 0.01


class DatabaseClosed(StorageError):
    """The database was closed: nothing more can be written through it."""


class WriteTimeout(StorageError, TimeoutError):
    """No commit came within the time the caller allowed (the write may still happen)."""


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any] = field(default_factory=Future)
    transaction: bool = True  #: False: run alone, outside BEGIN … COMMIT (migrations)
    alone: bool = False  #: True: its own transaction, never shared, never run twice


_STOP = None


@dataclass
class _Reader:
    thread: threading.Thread
    conn: sqlite3.Connection
    in_use: int = 0


class _State:
    """What the writer thread shares with its :class:`Database` (never the Database itself, so
    that a Database nobody closed is still collected, and its thread and connections end)."""

    def __init__(self, path: Path, busy_timeout_s: float, setting: str, idle_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.setting = setting
        self.idle_s = idle_s
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.readers: dict[int, _Reader] = {}
        self.last_used = time.monotonic()
        self.stopped = False

    def connect(self) -> sqlite3.Connection:
        return connect(
            self.path,
            busy_timeout_s=self.busy_timeout_s,
            check_same_thread=False,  # a reader's connection is closed by the writer thread
            setting=self.setting,
        )

    def ensure_writer(self, ready: Future[None] | None = None) -> threading.Thread:
        """The writer thread, started when none runs (the caller holds :attr:`lock`)."""
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=_writer_loop,
                args=(self, ready),
                name=f"db-writer:{self.path.name}",
                daemon=True,
            )
            self.thread.start()
        return self.thread

    def close_readers(self, *, all_of_them: bool) -> bool:
        """Close the read connections not in use (the caller holds :attr:`lock`); whether
        none is left."""
        for ident, reader in list(self.readers.items()):
            if all_of_them or reader.in_use == 0:
                reader.conn.close()
                del self.readers[ident]
        return not self.readers

    def stop(self) -> None:
        self.stopped = True
        self.jobs.put(_STOP)


class Database:
    """One SQLite file: a writer thread owning the write connection, and read connections per
    thread (see the module docstring). Prefer :func:`shared` to constructing one.

    The writer thread and the connections live while the database is used: after ``idle_s``
    without a read or a write they are let go, and the next use opens them again (a store that
    is never closed holds no thread and no file).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        setting: str = DATABASE_SETTING,
        write_timeout_s: float = WRITE_TIMEOUT_S,
        idle_s: float = IDLE_S,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.setting = setting
        self.write_timeout_s = write_timeout_s
        self._state = _State(self.path, busy_timeout_s, setting, idle_s)
        self._users = 1
        self._users_lock = threading.Lock()
        self._closed = False
        ready: Future[None] = Future()
        with self._state.lock:
            self._state.ensure_writer(ready)
        self._finalizer = weakref.finalize(self, self._state.stop)
        ready.result()  # the file opens now: an unusable database fails here, at start-up

    # -- writing ---------------------------------------------------------------------------

    def write(self, fn: Callable[[sqlite3.Connection], T], *, alone: bool = False) -> Future[T]:
        """Run ``fn(conn)`` on the writer thread in a transaction; the future of its result,
        resolved after COMMIT. ``alone``: in a transaction of its own, run once whatever
        happens (for a function with an effect outside the database, e.g. moving a file)."""
        return self._submit(_Job(fn, alone=alone))

    def run(
        self,
        fn: Callable[[sqlite3.Connection], T],
        timeout_s: float | None = None,
        *,
        alone: bool = False,
    ) -> T:
        """``write(fn)`` and wait for it: durable on return (:class:`WriteTimeout` if no commit
        came within ``timeout_s``, default :attr:`write_timeout_s`)."""
        future = self.write(fn, alone=alone)
        try:
            return future.result(self.write_timeout_s if timeout_s is None else timeout_s)
        except TimeoutError as exc:
            if future.done():
                raise  # fn itself raised a TimeoutError
            raise WriteTimeout(f"no commit to {self.path.name} in time") from exc

    def migrate(self, migrations: sqlite_utils.Migrations) -> None:
        """Apply a store's pending migrations on the writer (idempotent)."""
        setting = self.setting
        job = _Job(lambda conn: migrate(conn, migrations, setting=setting), transaction=False)
        self._submit(job).result(self.write_timeout_s)

    def _submit(self, job: _Job) -> Future[Any]:
        state = self._state
        if getattr(_writer, "state", None) is state:
            try:  # called from a write function: part of the transaction in progress
                job.future.set_result(job.fn(_writer.conn))
            except BaseException as exc:
                job.future.set_exception(exc)
            return job.future
        with state.lock:
            if self._closed or state.stopped:
                raise DatabaseClosed(f"{self.path} is closed")
            state.last_used = time.monotonic()
            state.jobs.put(job)
            state.ensure_writer()
        return job.future

    # -- reading ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The calling thread's read connection (autocommit: every statement sees the last
        commit)."""
        state = self._state
        me = threading.current_thread()
        with state.lock:
            if self._closed or state.stopped:
                raise DatabaseClosed(f"{self.path} is closed")
            reader = state.readers.get(me.ident or 0)
            if reader is None or reader.thread is not me:
                for ident, other in list(state.readers.items()):  # threads that have ended
                    if not other.thread.is_alive() or other.thread is me:
                        other.conn.close()
                        del state.readers[ident]
                reader = _Reader(me, state.connect())
                state.readers[me.ident or 0] = reader
            reader.in_use += 1
            state.last_used = time.monotonic()
            state.ensure_writer()  # it also lets go of idle read connections
        try:
            yield reader.conn
        finally:
            with state.lock:
                reader.in_use -= 1
                state.last_used = time.monotonic()

    # -- life cycle ------------------------------------------------------------------------

    def acquire(self) -> Database:
        """One more user of this database (each calls :meth:`close` once)."""
        with self._users_lock:
            if self._closed:
                raise DatabaseClosed(f"{self.path} is closed")
            self._users += 1
        return self

    def close(self, timeout_s: float = 10.0) -> None:
        """One user is done; the last one closes: what is queued is written, then the writer
        and every read connection close (idempotent per user)."""
        with self._users_lock:
            if self._closed:
                return
            self._users -= 1
            if self._users > 0:
                return
            self._closed = True
        _forget(self)
        state = self._state
        with state.lock:
            thread = state.thread
        self._finalizer()  # puts the stop mark: queued work is written first
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("the writer of %s did not stop within %.0f s", self.path, timeout_s)
        with state.lock:
            state.close_readers(all_of_them=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _WriterThread(threading.local):
    state: _State
    conn: sqlite3.Connection


_writer = _WriterThread()


def _writer_loop(state: _State, ready: Future[None] | None) -> None:
    try:
        conn = state.connect()
    except BaseException as exc:
        if ready is not None:
            ready.set_exception(exc)
        _fail_queued(state, exc)
        return
    _writer.state, _writer.conn = state, conn
    if ready is not None:
        ready.set_result(None)
    try:
        while True:
            wait_s = state.last_used + state.idle_s - time.monotonic()
            if wait_s <= 0:
                if _let_go_when_idle(state):
                    return
                wait_s = state.idle_s  # a reader is still reading: look again later
            try:
                first = state.jobs.get(timeout=wait_s)
            except queue.Empty:
                continue
            if first is _STOP:
                return
            group, stop = [first], False
            while True:  # group commit: everything queued meanwhile
                try:
                    job = state.jobs.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                group.append(job)
            _run_group(conn, group)
            if stop:
                return
    finally:
        conn.close()
        if state.stopped:
            _fail_queued(state, DatabaseClosed(f"{state.path} is closed"))
            with state.lock:
                state.close_readers(all_of_them=True)


def _let_go_when_idle(state: _State) -> bool:
    """After ``idle_s`` without use: close the idle read connections and end the thread
    (True), unless something came meanwhile or a reader is still reading."""
    with state.lock:
        if not state.jobs.empty() or time.monotonic() - state.last_used < state.idle_s:
            return False
        if not state.close_readers(all_of_them=False):
            return False
        state.thread = None
        return True


def _fail_queued(state: _State, exc: BaseException) -> None:
    """Jobs nobody will run: tell their callers now."""
    while True:
        try:
            job = state.jobs.get_nowait()
        except queue.Empty:
            return
        if job is not None:
            job.future.set_exception(exc)


def _run_group(conn: sqlite3.Connection, group: list[_Job]) -> None:
    """Run ``group`` in as few transactions as it allows, resolving every future after its
    COMMIT; a failure is retried job by job so that it reaches only its own caller."""
    batch: list[_Job] = []
    for job in group:
        if job.transaction and not job.alone:
            batch.append(job)
            continue
        _commit(conn, batch)
        batch = []
        if job.transaction:
            _commit(conn, [job])
        else:
            _settle(job, lambda job=job: job.fn(conn))  # type: ignore[misc]
    _commit(conn, batch)


def _commit(conn: sqlite3.Connection, batch: list[_Job]) -> None:
    if not batch:
        return
    if len(batch) == 1:
        job = batch[0]

        def alone() -> Any:
            with atomic(conn):
                return job.fn(conn)

        _settle(job, alone)
        return
    try:
        with atomic(conn):
            results = [job.fn(conn) for job in batch]
    except BaseException:
        for job in batch:  # which one failed: each in a transaction of its own
            _commit(conn, [job])
        return
    for job, result in zip(batch, results, strict=True):
        job.future.set_result(result)


def _settle(job: _Job, call: Callable[[], Any]) -> None:
    try:
        result = call()
    except BaseException as exc:
        job.future.set_exception(exc)
    else:
        job.future.set_result(result)


class Store:
    """Base of a store kept in one database file: it holds the file's :class:`Database` (one
    writer for every store of the process), applies its own :attr:`migrations` at opening,
    and lets go of the database once on :meth:`close`."""

    #: The store's own sqlite-utils migration set (named after the store), or None.
    migrations: sqlite_utils.Migrations | None = None

    def __init__(self, path: str | Path | Database, *, busy_timeout_s: float = 5.0) -> None:
        self.db = shared(path, busy_timeout_s=busy_timeout_s)
        self._store_closed = False
        if self.migrations is not None:
            try:
                self.db.migrate(self.migrations)
            except BaseException:
                self.db.close()
                raise

    @property
    def closed(self) -> bool:
        return self._store_closed

    def close(self) -> None:
        """Close the store (idempotent); the database closes with its last store."""
        if not self._store_closed:
            self._store_closed = True
            self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- one Database per file and process ---------------------------------------------------------

_shared: weakref.WeakValueDictionary[Path, Database] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared(
    path: str | Path | Database,
    *,
    busy_timeout_s: float = 5.0,
    setting: str = DATABASE_SETTING,
    idle_s: float = IDLE_S,
) -> Database:
    """The process's :class:`Database` of ``path`` (made on first use, with these options),
    with one more user: call its :meth:`~Database.close` once when done. Given a
    :class:`Database`, that one."""
    if isinstance(path, Database):
        return path.acquire()
    key = Path(path).resolve() if str(path) != ":memory:" else Path(":memory:")
    with _shared_lock:
        existing = _shared.get(key)
        if existing is not None:
            with contextlib.suppress(DatabaseClosed):
                return existing.acquire()
        database = Database(path, busy_timeout_s=busy_timeout_s, setting=setting, idle_s=idle_s)
        if key != Path(":memory:"):
            _shared[key] = database
        return database


def _forget(database: Database) -> None:
    with _shared_lock:
        for key, value in list(_shared.items()):
            if value is database:
                del _shared[key]
