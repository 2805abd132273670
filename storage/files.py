"""Files that hold patient data: private whatever the umask, durable before acknowledged.

Every folder the controller makes for patient data is created 0700 and every file 0600, by
the mode given to ``mkdir``/``open`` and then fixed with ``chmod``: the process umask can
only remove bits, and an umask of 0 would otherwise leave files group- and world-writable.
What is acknowledged or journaled must survive a power cut: a file is written, fsync'ed,
renamed into place and its folder fsync'ed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydicom.dataset import Dataset

#: Modes of what the controller creates for patient data (issue 12 §4).
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
#: Suffix of a file being written before it is renamed into place.
PARTIAL_SUFFIX = ".partial"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory: so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: str | Path) -> Path:
    """``path`` as a folder, created 0700 with any missing parents (those 0700 too).

    A folder that already exists is left as it is: its mode is the administrator's choice
    (the files in it are 0600 anyway).
    """
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another thread
            folder.mkdir(mode=PRIVATE_DIR_MODE)
            os.chmod(folder, PRIVATE_DIR_MODE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


def make_private(path: str | Path) -> None:
    """Make an existing file 0600 (a file this process owns)."""
    os.chmod(path, PRIVATE_FILE_MODE)


def create_private_file(path: str | Path) -> bool:
    """Create ``path`` empty and 0600 if it does not exist; True if it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def open_private(path: str | Path, mode: str = "w", **kwargs: object) -> Iterator[IO[str]]:
    """``open(path, mode)`` for writing a new file (or truncating / appending), 0600."""
    if not any(flag in mode for flag in "wax"):
        raise ValueError("open_private is for writing")
    flags = os.O_WRONLY | os.O_CREAT
    flags |= os.O_APPEND if "a" in mode else os.O_TRUNC
    if "x" in mode:
        flags |= os.O_EXCL
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    with os.fdopen(fd, mode.replace("x", "w"), **kwargs) as handle:  # type: ignore[call-overload]
        yield handle


def append_line_durably(path: str | Path, line: str) -> None:
    """Append one line to a private (0600) file and fsync it before returning."""
    with open_private(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_dataset_durably(ds: Dataset, path: Path) -> None:
    """Write ``ds`` as a DICOM file at ``path`` (0600): temporary file, fsync, rename, fsync
    the folder. A reader sees the whole file or none; a failed write leaves nothing behind."""
    private_dir(path.parent)
    partial = path.with_suffix(PARTIAL_SUFFIX)
    try:
        with open_private(partial, "wb") as handle:
            ds.save_as(handle, enforce_file_format=True)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    fsync_path(path.parent)


def empty_folder(path: Path) -> int:
    """Remove everything inside ``path`` (kept, private); how many entries were removed."""
    private_dir(path)
    removed = 0
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed += 1
    return removed
