"""``galacto dose import PATH... [--recursive]``: MG images and dose reports into the dose log.

Historic data, other units, a controller's own ``objects/``: every file is read (headers only,
``stop_before_pixels``), its exposures extracted exactly as the Storage SCP extracts them
(:func:`dicom_nodes.datasets.dose_extract.exposures_in`: the vendor quirks of dose.md §1, legacy
codes,
Hologic's ``uAs``, GE's dGy Organ Dose) and written through the dose log's own write
(:meth:`acquisition.dose_log.DoseLog.record`), which reconciles and checks them:

- the image, the unit's RDSR and the exam's RDSR of one irradiation event become one row (by
  SOP Instance UID and Irradiation Event UID): a new source for a known event merges into its
  row and adds to its ``sources``, it never adds a row;
- a For Presentation image and its For Processing image without an Irradiation Event UID are
  one exposure (the Source Image Sequence, else unit, time, side, view, kV and mAs);
- a tomosynthesis unit's synthesised 2D image (``GENERATED_2D``) is not an exposure;
- a second run adds nothing (every record matches the row it made the first time).

One bad file never stops the import: each unreadable or non-dose file is named with its reason
in the summary. Files are written in batches (one transaction per :data:`BATCH_FILES` files
or :data:`BATCH_SECONDS`), so the live controller's own writes wait at most one short batch;
a crash mid-import loses at most the batch in flight, and running the import again repairs it
(it is idempotent). With many files, worker processes read them while this one writes
(:func:`read_files`): parsing, an RDSR's content tree above all, is most of an import's work.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from acquisition.dose_log import DoseLog
from dicom_nodes.datasets.dose_extract import (
    MG_IMAGE_CLASSES,
    DoseDataError,
    NotADoseObject,
    exposures_in,
    not_an_exposure,
)
from dose.plausibility import QaPatterns
from dose.record import ExposureRecord

log = logging.getLogger(__name__)

#: A batch is written when it holds this many files, or is this old.
BATCH_FILES = 200
BATCH_SECONDS = 0.5


class ImportDatabaseError(Exception):
    """The dose log could not be written at all (not one file's fault): the import stops."""


@dataclass
class ImportSummary:
    """What one import did; ``bad`` and ``skipped`` name each file with its reason."""

    files: int = 0
    objects: int = 0
    records: int = 0
    rows_added: int = 0
    merged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0

    def line(self) -> str:
        rate = self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"galacto dose import: {self.files} file(s), {self.records} exposure record(s) from "
            f"{self.objects} dose object(s): {self.rows_added} row(s) added, {self.merged} "
            f"merged into known rows; {len(self.skipped)} skipped, {len(self.bad)} bad; "
            f"{self.elapsed_s:.1f} s ({rate:.0f} records/s)"
        )


#: One file's exposures, waiting to be written.
Batch = tuple[Path, list[ExposureRecord]]

#: progress(files done, files in all, records per second)
Progress = Callable[[int, int, float], None]


def find_files(paths: Iterable[str | Path], *, recursive: bool) -> tuple[list[Path], list[str]]:
    """The files to read, in path order, and the paths that do not exist. A folder gives the
    files in it, and with ``recursive`` those of every folder below."""
    found: list[Path] = []
    missing: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            if recursive:
                for folder, dirs, files in os.walk(path):
                    dirs.sort()
                    found.extend(Path(folder) / name for name in sorted(files))
            else:
                found.extend(sorted(p for p in path.iterdir() if p.is_file()))
        else:
            missing.append(str(path))
    return found, missing


def read_exposures(
    path: Path, *, station_ae: str | None, qa: QaPatterns | None
) -> tuple[list[ExposureRecord], str | None, bool]:
    """The exposures of one file, and why it gives none: ``(records, reason, bad)``; ``bad``
    is False for an object that by its kind shows no exposure of its own (GENERATED_2D)."""
    try:
        with path.open("rb") as fh:
            ds = dcmread(fh, stop_before_pixels=True)
            # pydicom reads a truncated file as far as it goes: an image must reach its pixels
            ended = fh.tell() >= os.fstat(fh.fileno()).st_size
    except InvalidDicomError:
        return [], "not a DICOM file (no DICM prefix)", True
    except Exception as exc:  # pydicom raises many kinds on a corrupt file
        return [], f"unreadable DICOM ({type(exc).__name__}: {exc})", True
    try:
        if str(ds.get("SOPClassUID", "")) in MG_IMAGE_CLASSES:
            if ended:
                return [], "unreadable DICOM (truncated: it ends before its Pixel Data)", True
            reason = not_an_exposure(ds)
            if reason is not None:
                return [], reason, False
        records = exposures_in(ds, station_ae=station_ae, qa=qa)
    except NotADoseObject as exc:
        return [], f"not a dose object: {exc}", True
    except DoseDataError as exc:
        return [], f"dose content not understood: {exc}", True
    except Exception as exc:  # a corrupt element met while extracting
        return [], f"unreadable DICOM ({type(exc).__name__}: {exc})", True
    if not records:
        return [], "a dose report without irradiation events", False
    return records, None, False


#: Files each reading process is handed at a time, and the fewest files worth starting
#: reading processes for (a few files are read faster than processes start).
READ_CHUNK_FILES = 16
PARALLEL_FROM_FILES = 64


def reading_processes() -> int:
    """How many processes read files: one per CPU this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: What reading one file gives: (records, reason, bad) as :func:`read_exposures` returns it.
Read = tuple[list[ExposureRecord], str | None, bool]


def read_files(
    files: Sequence[Path],
    *,
    station_ae: str | None,
    qa: QaPatterns | None,
    processes: int | None = None,
) -> Iterator[Read]:
    """What each file of ``files`` holds (:func:`read_exposures`), in their order.

    Parsing the files is most of an import's work (an RDSR's content tree above all), and it
    needs nothing from the dose log: with many files it runs in ``processes`` worker processes
    (default: :func:`reading_processes`) while this one writes what they read. They are
    forked from this process (all of them before the pool starts its own thread), with
    pydicom imported and the lowered priority; they never touch its database connection. Should
    they die (out of memory), the files not read yet are read here."""
    read = functools.partial(read_exposures, station_ae=station_ae, qa=qa)
    workers = reading_processes() if processes is None else processes
    done = 0
    if workers > 1 and len(files) >= PARALLEL_FROM_FILES:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        try:
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                for result in pool.map(read, files, chunksize=READ_CHUNK_FILES):
                    yield result
                    done += 1
        except BrokenProcessPool:
            log.warning("the import's reading processes died; reading the rest in one process")
    yield from map(read, files[done:])


class Importer:
    """Reads files and writes their exposures through one :class:`DoseLog`."""

    def __init__(
        self,
        dose_log: DoseLog,
        *,
        qa: QaPatterns | None = None,
        station_ae: str | None = None,
        progress: Progress | None = None,
        processes: int | None = None,
    ) -> None:
        self._log = dose_log
        self._qa = qa
        self._station_ae = station_ae
        self._progress = progress
        self._processes = processes

    def run(self, files: Sequence[Path]) -> ImportSummary:
        summary = ImportSummary(files=len(files))
        started = time.monotonic()
        batch: list[Batch] = []
        batch_started = started
        reads = read_files(
            files, station_ae=self._station_ae, qa=self._qa, processes=self._processes
        )
        for done, (path, (records, reason, bad)) in enumerate(zip(files, reads, strict=True), 1):
            if reason is not None:
                (summary.bad if bad else summary.skipped).append((str(path), reason))
            else:
                batch.append((path, records))
            now = time.monotonic()
            if batch and (len(batch) >= BATCH_FILES or now - batch_started >= BATCH_SECONDS):
                self._write(batch, summary)
                batch, batch_started = [], time.monotonic()
            if self._progress is not None:
                self._progress(done, len(files), summary.records / max(now - started, 1e-9))
        if batch:
            self._write(batch, summary)
        summary.elapsed_s = time.monotonic() - started
        return summary

    def _write(
        self, batch: list[tuple[Path, list[ExposureRecord]]], summary: ImportSummary
    ) -> None:
        """One transaction for the batch; if it fails, one per file, so that only the file
        at fault is named (a log that cannot be written at all stops the import)."""
        try:
            added = self._log.record_counted([record for _, records in batch for record in records])
            written = batch
        except Exception as exc:
            if len(batch) == 1:
                raise ImportDatabaseError(str(exc)) from exc
            written, added = [], 0
            failures: list[tuple[str, str]] = []
            for path, records in batch:
                try:
                    added += self._log.record_counted(records)
                    written.append((path, records))
                except Exception as file_exc:
                    failures.append((str(path), f"could not be logged: {file_exc}"))
            if not written:
                raise ImportDatabaseError(str(exc)) from exc
            summary.bad.extend(failures)
        count = sum(len(records) for _, records in written)
        summary.objects += len(written)
        summary.records += count
        summary.rows_added += added
        summary.merged += count - added


def import_paths(
    dose_log: DoseLog,
    paths: Iterable[str | Path],
    *,
    recursive: bool = False,
    qa: QaPatterns | None = None,
    station_ae: str | None = None,
    progress: Progress | None = None,
    processes: int | None = None,
) -> ImportSummary:
    """Import every file of ``paths`` (module docstring); a missing path is a bad entry.
    ``processes``: how many processes read the files (:func:`read_files`)."""
    files, missing = find_files(paths, recursive=recursive)
    importer = Importer(
        dose_log, qa=qa, station_ae=station_ae, progress=progress, processes=processes
    )
    summary = importer.run(files)
    summary.bad[:0] = [(path, "no such file or folder") for path in missing]
    return summary
