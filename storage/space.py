"""Free disk space of the file systems holding the controller's data (issue 12 §8).

:class:`FreeSpace` checks, against one minimum, every file system that holds one of the named
paths (the database's folder, the objects' folder): an exam does not start, and an injection is
not given, when a write may fail for want of space during it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


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
