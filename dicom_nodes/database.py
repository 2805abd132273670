"""Opening the controller's SQLite database the one way every store of ours does.

One file holds the worklist, the MPPS instances, the dose log, the outbox and (later) the
journal; each store owns its tables and its own ``sqlite_utils.Migrations`` set (named after
the store, ordered, recorded; never edit an applied migration). Every connection runs in WAL
mode with ``synchronous=FULL``: a committed row survives a power cut, which is what "durable
before acknowledged" relies on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils


def connect(
    path: str | Path, *, busy_timeout_s: float = 5.0, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A connection with the house pragmas, in autocommit mode (explicit BEGIN … COMMIT).

    By default only the opening thread may use it; pass ``check_same_thread=False`` when one
    owner serialises its use across threads with a lock.
    """
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path),
        timeout=busy_timeout_s,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn


def open_database(path: str | Path, *, busy_timeout_s: float = 5.0) -> sqlite_utils.Database:
    """The same connection wrapped for sqlite-utils (migrations, table helpers)."""
    return sqlite_utils.Database(connect(path, busy_timeout_s=busy_timeout_s))


def migrate(db: sqlite_utils.Database, migrations: sqlite_utils.Migrations) -> None:
    """Apply a store's pending migrations (idempotent; safe at every start-up)."""
    migrations.apply(db)
