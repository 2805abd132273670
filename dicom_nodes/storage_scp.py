"""Storage SCP for the unit's images and dose reports (PS3.4 Annex B; dicom.md §2, §5).

Accepted SOP classes are listed in :data:`STORAGE_SOP_CLASSES`; any other is refused at
association negotiation (no presentation context accepted). Incoming datasets are received
straight to a file (``_config.STORE_RECV_CHUNKED_DATASET``); the handler reads the header only
(``stop_before_pixels``: pixel data is never decoded), checks it against the request, moves the
file into ``storage_dir/<Study Instance UID>/<SOP Instance UID>.dcm`` (fsync'ed), extracts the
exposure(s) and hands them to the sink, which commits them before the C-STORE response is sent.

Statuses (PS3.4 Table B.2-1): 0000H stored and recorded; A900H the dataset does not match the
SOP class (SOP Class/Instance UIDs differ from the request, SR without content, unusable UIDs);
C000H cannot understand (header unreadable); B007H stored and recorded, but a dose value could
not be read (left empty and flagged for review: the exposure happened and is never dropped);
A700H out of resources (file or database write failed) — nothing is acknowledged that was not
committed. ``on_stored`` runs once the object and its exposures are durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.dimse_primitives import C_STORE

from storage.files import fsync_path

from .dose_extract import UNREADABLE, from_image_header, from_rdsr
from .exposures import DoseDataError, ExposureRecord, ExposureSink
from .status import StoreStatus

log = logging.getLogger(__name__)

DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
DIGITAL_MAMMOGRAPHY_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PERFORMED_IMAGING_AGENT_ADMINISTRATION_SR = "1.2.840.10008.5.1.4.1.1.88.75"

IMAGE_CLASSES = frozenset(
    {DIGITAL_MAMMOGRAPHY_FOR_PRESENTATION, DIGITAL_MAMMOGRAPHY_FOR_PROCESSING}
)
SR_CLASSES = frozenset(
    {
        XRAY_RADIATION_DOSE_SR,
        BASIC_TEXT_SR,
        ENHANCED_SR,
        COMPREHENSIVE_SR,
        COMPREHENSIVE_3D_SR,
        PERFORMED_IMAGING_AGENT_ADMINISTRATION_SR,
    }
)
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(sorted(IMAGE_CLASSES | SR_CLASSES))

#: X-Ray Radiation Dose Report document title (TID 10001).
RDSR_TITLE = "113701"

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HEADER_DEFER_SIZE = "64 KB"

StepResolver = Callable[[ExposureRecord], bool]


def _default_resolver(record: ExposureRecord) -> bool:
    return bool(record.sps_id)


def _valid_uid(uid: Any) -> bool:
    return isinstance(uid, str) and len(uid) <= 64 and bool(_UID.match(uid))


class StorageRefusal(Exception):
    """A C-STORE refused with a status (inside the handler only)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def discard_partial_dataset(event: evt.Event) -> None:
    """Close and remove the temporary file of a C-STORE cut off mid-dataset.

    With ``STORE_RECV_CHUNKED_DATASET`` pynetdicom 3.0.4 writes the incoming dataset to a
    ``NamedTemporaryFile(delete=False)`` and, when the association drops before the message is
    complete, neither closes nor removes it: one open descriptor and one stray file per dropped
    association. Nothing was acknowledged for that object, so nothing is lost by removing it.
    """
    message = getattr(event.assoc.dimse, "message", None)
    partial = getattr(message, "_data_set_file", None)
    if partial is None:
        return
    with contextlib.suppress(OSError):
        partial.close()
    with contextlib.suppress(OSError):
        os.unlink(partial.name)
    message._data_set_file = None  # type: ignore[union-attr]


class StorageSCP:
    """C-STORE SCP writing objects to ``storage_dir`` and exposures to ``sink``.

    ``contexts`` are the SOP classes to add as supported contexts (every transfer syntax: the
    pixel data is never decoded); ``handlers()`` gives the event handlers. ``fsync_objects``
    makes each stored file durable before the response (on by default; the unit may delete its
    copy once we acknowledge). ``on_stored(path, header)`` is called once an object and its
    exposures are durable, before the response (store-and-forward, the journal); its failure is
    logged and does not change the answer: the object is kept, and the controller re-forwards
    what it holds at start-up.
    """

    contexts: tuple[str, ...] = STORAGE_SOP_CLASSES
    #: pynetdicom accepts the first of *our* list the unit proposes: Explicit VR first.
    transfer_syntaxes: tuple[str, ...] = (
        ExplicitVRLittleEndian,
        *(uid for uid in ALL_TRANSFER_SYNTAXES if uid != ExplicitVRLittleEndian),
    )

    def __init__(
        self,
        sink: ExposureSink,
        storage_dir: str | Path,
        *,
        step_resolver: StepResolver = _default_resolver,
        fsync_objects: bool = True,
        on_stored: Callable[[Path, Dataset], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_stored = on_stored
        self._dir = Path(storage_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._resolve_step = step_resolver
        self._fsync = fsync_objects
        # Process-wide pynetdicom switch: incoming C-STORE datasets go straight to a file.
        _config.STORE_RECV_CHUNKED_DATASET = True

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ABORTED, discard_partial_dataset),
            (evt.EVT_CONN_CLOSE, discard_partial_dataset),
        ]

    def path_for(self, study_instance_uid: str, sop_instance_uid: str) -> Path:
        """Where an object is kept for forwarding."""
        return self._dir / study_instance_uid / f"{sop_instance_uid}.dcm"

    # ------------------------------------------------------------------ C-STORE
    def handle_store(self, event: evt.Event) -> int:
        """EVT_C_STORE (PS3.4 B.2.2): store, extract, commit, then answer."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        received: Path | None = None
        try:
            received = self._received_file(event)
            header = self._read_header(received)
            self._check_header(header, sop_class, sop_instance)
            records = self._extract(header, sop_class, calling_ae)
            kept = self.path_for(str(header.StudyInstanceUID), sop_instance)
            self._keep(received, kept)
            self._sink.record(records)
        except StorageRefusal as refusal:
            log.warning("C-STORE from %s refused (0x%04X): %s", calling_ae, refusal.status, refusal)
            self._discard(received)
            return refusal.status
        except Exception:
            log.exception("C-STORE from %s: write failed", calling_ae)
            self._discard(received)
            return StoreStatus.OUT_OF_RESOURCES
        log.debug("stored one object of class %s from %s", sop_class, calling_ae)
        if self._on_stored is not None:
            try:
                self._on_stored(kept, header)
            except Exception:
                log.exception("after-store hook failed (the object is kept)")
        if any(r.startswith(UNREADABLE) for record in records for r in record.review_reasons):
            # Kept and logged, flagged for the physicist; the unit is told its data was bad.
            return StoreStatus.WARNING_DATASET_DOES_NOT_MATCH
        return StoreStatus.SUCCESS

    def _received_file(self, event: evt.Event) -> Path:
        try:
            path = event.dataset_path  # None when chunked receive was switched off
        except AttributeError:
            path = None
        if path is not None:
            return Path(path)
        # Someone switched chunked receive off: write the encoded dataset ourselves.
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._dir)
        with os.fdopen(fd, "wb") as out:
            out.write(event.encoded_dataset(include_meta=True))
        return Path(name)

    def _discard(self, received: Path | None) -> None:
        """Remove a refused file we wrote ourselves (pynetdicom removes its own)."""
        if received is not None and received.parent == self._dir and received.exists():
            received.unlink()

    @staticmethod
    def _read_header(path: Path) -> Dataset:
        try:
            header = dcmread(path, stop_before_pixels=True, defer_size=_HEADER_DEFER_SIZE)
        except Exception as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, "unreadable header") from exc
        return header

    @staticmethod
    def _check_header(header: Dataset, sop_class: str, sop_instance: str) -> None:
        try:
            in_class = str(header.get("SOPClassUID", ""))
            in_instance = str(header.get("SOPInstanceUID", ""))
            study = str(header.get("StudyInstanceUID", ""))
        except Exception as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, "unreadable identifiers") from exc
        if in_class != sop_class or in_instance != sop_instance:
            raise StorageRefusal(
                StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "identifiers differ from request"
            )
        if not (_valid_uid(study) and _valid_uid(in_instance)):
            raise StorageRefusal(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "unusable UIDs")
        if sop_class in SR_CLASSES and "ContentSequence" not in header:
            raise StorageRefusal(StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS, "SR without content")

    def _extract(self, header: Dataset, sop_class: str, calling_ae: str) -> list[ExposureRecord]:
        try:
            records: Sequence[ExposureRecord]
            if sop_class in IMAGE_CLASSES:
                records = [from_image_header(header, station_ae=calling_ae)]
            elif sop_class == XRAY_RADIATION_DOSE_SR and _is_dose_report(header):
                records = from_rdsr(header, station_ae=calling_ae)
            else:
                records = []
        except DoseDataError as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, str(exc)) from exc
        return [record.with_values(known_step=self._resolve_step(record)) for record in records]

    def _keep(self, received: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(received, destination)
        except OSError:  # another file system: copy (pynetdicom removes its temporary file)
            partial = destination.with_suffix(".partial")
            shutil.copyfile(received, partial)
            os.replace(partial, destination)
        if self._fsync:
            fsync_path(destination)
            fsync_path(destination.parent)


def _is_dose_report(header: Dataset) -> bool:
    title = header.get("ConceptNameCodeSequence")
    return bool(title) and str(title[0].get("CodeValue", "")) == RDSR_TITLE
