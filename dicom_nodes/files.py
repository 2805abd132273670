"""Durable files: what is acknowledged or journaled must survive a power cut."""

from __future__ import annotations

import os
from pathlib import Path

from pydicom.dataset import Dataset


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_dataset_durably(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file at ``path``: temporary file, fsync, rename, fsync the
    directory. A reader sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    ds.save_as(partial, enforce_file_format=True)
    fsync_path(partial)
    os.replace(partial, path)
    fsync_path(path.parent)
