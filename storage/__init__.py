"""Storage: the controller's database and files, opened and written one way everywhere.

Every store writes through the one :class:`Database` of its file (:func:`shared`): a single
writer thread, read connections per thread (:mod:`storage.writer`).

A leaf package: it imports nothing of ours, so every store, SCP and command line can use it.
"""

import logging

from storage.database import (
    DatabaseOpenError,
    ReadOnlyDatabase,
    StorageError,
    atomic,
    connect,
    migrate,
    open_database,
    open_read_only,
)
from storage.space import FreeSpace, LowSpace, WriteFailures, is_disk_full
from storage.writer import Database, DatabaseClosed, WriteTimeout, shared

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Database",
    "DatabaseClosed",
    "DatabaseOpenError",
    "FreeSpace",
    "LowSpace",
    "ReadOnlyDatabase",
    "StorageError",
    "WriteFailures",
    "WriteTimeout",
    "atomic",
    "connect",
    "is_disk_full",
    "migrate",
    "open_database",
    "open_read_only",
    "shared",
]
