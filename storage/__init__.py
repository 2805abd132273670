"""Storage: the controller's database and files, opened and written one way everywhere.

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

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DatabaseOpenError",
    "FreeSpace",
    "LowSpace",
    "ReadOnlyDatabase",
    "StorageError",
    "WriteFailures",
    "atomic",
    "connect",
    "is_disk_full",
    "migrate",
    "open_database",
    "open_read_only",
]
