"""Free disk space of the file systems holding the controller's data (issue 12 §8).

:class:`FreeSpace` checks, against one minimum, every file system that holds one of the named
paths (the database's folder, the objects' folder): an exam does not start, and an injection is
not given, when a write may fail for want of space during it.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
#: SQLite's result code for "database or disk is full".
SQLITE_FULL = 13


@dataclass(frozen=True)
class LowSpace:
    """One file system below the minimum: what holds it, how much is free, what is needed."""

    label: str
    path: str
    free_mb: float
    min_free_mb: float

    def __str__(self) -> str:
        return (
            f"only {self.free_mb:.0f} MB free on the disk of {self.label} ({self.path}); "
            f"at least {self.min_free_mb:.0f} MB are needed"
        )


def free_mb(path: str | Path) -> float:
    """Megabytes (MiB) available to this process on the file system holding ``path`` (or its
    nearest existing parent)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize / MIB


class FreeSpace:
    """The free-space check: ``paths`` maps a label (the setting) to a path on each disk."""

    def __init__(self, paths: Mapping[str, str | Path], min_free_mb: float) -> None:
        self.paths = {label: Path(path) for label, path in paths.items()}
        self.min_free_mb = min_free_mb

    def shortfall(self) -> LowSpace | None:
        """The first file system below the minimum (None when all have enough)."""
        for label, path in self.paths.items():
            try:
                available = free_mb(path)
            except OSError as exc:
                return LowSpace(label, f"{path}: {exc.strerror or exc}", 0.0, self.min_free_mb)
            if available < self.min_free_mb:
                return LowSpace(label, str(path), available, self.min_free_mb)
        return None

    def __call__(self) -> str | None:
        """Why writing is not safe now (None when it is): the check the exam calls."""
        low = self.shortfall()
        return None if low is None else str(low)


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk: ENOSPC/EDQUOT, or SQLite's
    SQLITE_FULL ("database or disk is full")."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
            return True
        text = str(exc).lower()
        if "disk is full" in text or "no space left" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class WriteFailures:
    """Reports a write that keeps failing once, not at every retry (issue 12 §8).

    The first failure is logged at ERROR — a full disk named as such, with the disk that is
    short when ``space`` can tell — and repeats of it at DEBUG; :meth:`recovered` logs the end
    of the episode once. :attr:`current` is the message while failures go on (for the console).
    """

    def __init__(self, logger: logging.Logger, what: str, space: FreeSpace | None = None):
        self._log = logger
        self._what = what
        self._space = space
        self._lock = threading.Lock()
        self.current: str | None = None

    def failed(self, exc: BaseException) -> None:
        if is_disk_full(exc):
            low = self._space.shortfall() if self._space is not None else None
            where = f": {low}" if low is not None else ""
            message = f"{self._what}: the disk is full{where} — retried until space is freed"
        else:
            message = f"{self._what}: {exc}"
        with self._lock:
            first = self.current is None
            self.current = message
        if first:
            self._log.error("%s", message, exc_info=not is_disk_full(exc))
        else:
            self._log.debug("%s (again)", message)

    def recovered(self) -> None:
        with self._lock:
            was, self.current = self.current, None
        if was is not None:
            self._log.info("%s: writing again", self._what)
