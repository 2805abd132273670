"""Storage SCP for the unit's images and dose reports (PS3.4 Annex B; dicom.md §2, §5).

Accepted SOP classes are listed in :data:`STORAGE_SOP_CLASSES`; any other is refused at
association negotiation (no presentation context accepted). Incoming datasets are received
straight to a file (``_config.STORE_RECV_CHUNKED_DATASET``) in the storage folder's own
temporary folder (``<storage_dir>/tmp``, 0700, emptied at start-up: one rename moves a file into
place, and nothing received is left behind by a refusal or a crash). The handler reads the header
only (``stop_before_pixels``: pixel data is never decoded), checks it against the request, checks
the value lengths and, for an image, that the Pixel Data is whole; it then looks the SOP Instance
UID up (:mod:`dicom_nodes.unit_facing.received_objects`): an identical resend is acknowledged and
changes
nothing, a different object under a known UID is refused and held in quarantine. A new object is
moved into ``storage_dir/<Study Instance UID>/<SOP Instance UID>.dcm`` (0600, fsync'ed), its
exposure(s) handed to the sink, which commits them before the C-STORE response is sent.

Statuses (PS3.4 Table B.2-1): 0000H stored and recorded (or an identical resend); A900H the
dataset does not match the SOP class (SOP Class/Instance UIDs differ from the request, SR
without content, unusable UIDs); C000H cannot understand (header unreadable); C010H another
object is stored under this SOP Instance UID (held in quarantine); C011H missing, short or
malformed Pixel Data; C012H a value longer than its VR allows; B007H stored and recorded, but a
dose value could not be read (left empty and flagged for review: the exposure happened and is
never dropped); A700H out of resources (file or database write failed) — nothing is
acknowledged that was not committed. Every refusal carries an Error Comment (0000,0902) naming
the reason (never a patient value). ``on_stored`` runs once the object and its exposures are
durable; ``on_quarantined`` once an object is held.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.dimse_primitives import C_STORE

from dicom_nodes import compat
from dicom_nodes.datasets.dose_extract import (
    MG_IMAGE_CLASSES,
    UNREADABLE,
    DoseDataError,
    exposures_in,
    is_dose_report,
)
from dicom_nodes.datasets.rdsr import XRAY_RADIATION_DOSE_SR
from dicom_nodes.status import StoreStatus, status_dataset
from dicom_nodes.unit_facing.pixel_data import PixelDataError, check_pixel_data, read_header
from dicom_nodes.unit_facing.received_objects import QuarantineItem, ReceivedObjects, fingerprint
from dicom_nodes.unit_facing.value_lengths import overlong_elements
from dose.plausibility import QaPatterns
from dose.record import ExposureRecord, ExposureSink
from storage.files import PARTIAL_SUFFIX, empty_folder, fsync_path, make_private, private_dir

log = logging.getLogger(__name__)

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PERFORMED_IMAGING_AGENT_ADMINISTRATION_SR = "1.2.840.10008.5.1.4.1.1.88.75"

IMAGE_CLASSES = MG_IMAGE_CLASSES
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

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_HEADER_DEFER_SIZE = "64 KB"
#: Folders of ``storage_dir`` that hold no received object of a study (never forwarded).
TMP_DIR = "tmp"
QUARANTINE_DIR = "quarantine"
NOT_STUDY_DIRS = frozenset({TMP_DIR, QUARANTINE_DIR, "forward", "created"})

StepResolver = Callable[[ExposureRecord], bool]


def _default_resolver(record: ExposureRecord) -> bool:
    return bool(record.sps_id)


def _valid_uid(uid: Any) -> bool:
    return isinstance(uid, str) and len(uid) <= 64 and bool(_UID.match(uid))


class StorageRefusal(Exception):
    """A C-STORE refused with a status (inside the handler only); ``why`` becomes the Error
    Comment, so it never carries a patient value."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status

    def response(self) -> Dataset:
        return status_dataset(self.status, error_comment=str(self))


class StorageSCP:
    """C-STORE SCP writing objects to ``storage_dir`` and exposures to ``sink``.

    ``contexts`` are the SOP classes to add as supported contexts (every transfer syntax: the
    pixel data is never decoded); ``handlers()`` gives the event handlers. ``fsync_objects``
    makes each stored file durable before the response (on by default; the unit may delete its
    copy once we acknowledge). ``objects`` indexes what was stored by SOP Instance UID and holds
    the quarantine (default: an index file in ``storage_dir``; the controller passes its
    database). ``on_stored(path, header)`` is called once an object and its exposures are
    durable, before the response (store-and-forward, the journal); its failure is logged and
    does not change the answer: the object is kept, and the controller re-forwards what it holds
    at start-up. ``on_quarantined(item)`` is called once a refused object is held.
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
        objects: ReceivedObjects | None = None,
        on_stored: Callable[[Path, Dataset], None] | None = None,
        qa_patterns: QaPatterns | None = None,
        on_quarantined: Callable[[QuarantineItem], None] | None = None,
    ) -> None:
        self._sink = sink
        self._qa = qa_patterns  # marks physics/QA exposures (dose.plausibility)
        self._on_stored = on_stored
        self._on_quarantined = on_quarantined
        self._dir = private_dir(storage_dir)
        self._tmp = self._dir / TMP_DIR
        self._quarantine = self._dir / QUARANTINE_DIR
        self._resolve_step = step_resolver
        self._fsync = fsync_objects
        self._clean_up_after_a_crash()
        self.objects = objects or ReceivedObjects(self._dir / "received.db")
        if self.objects.is_empty():
            self._index_kept_objects()
        # Process-wide pynetdicom switch: incoming C-STORE datasets go straight to a file.
        _config.STORE_RECV_CHUNKED_DATASET = True

    def _clean_up_after_a_crash(self) -> None:
        """What a crash left: received datasets never answered, files never renamed."""
        removed = empty_folder(self._tmp)
        for partial in self._dir.rglob(f"*{PARTIAL_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
                removed += 1
        if removed:
            log.info("removed %d unfinished file(s) left by an earlier run", removed)

    def _index_kept_objects(self) -> None:
        """Objects kept before the SOP Instance UID index existed (an upgrade): indexed once."""
        found = []
        for path in self.kept_objects():
            try:
                meta = read_file_meta_info(path)
                found.append((path.stem, str(meta.MediaStorageSOPClassUID), path))
            except Exception as exc:
                log.warning("kept object %s not indexed: %s", path.name, exc)
        if found:
            self.objects.register_existing(found)
            log.info("indexed %d object(s) kept by an earlier version", len(found))

    def kept_objects(self) -> list[Path]:
        """Every received object kept in ``<storage_dir>/<study>/``, in path order."""
        return sorted(
            path for path in self._dir.glob("*/*.dcm") if path.parent.name not in NOT_STUDY_DIRS
        )

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, self._receive_here),
            (evt.EVT_C_STORE, self.handle_store),
            (evt.EVT_ABORTED, compat.discard_partial_dataset),
            (evt.EVT_CONN_CLOSE, compat.discard_partial_dataset),
        ]

    def _receive_here(self, event: evt.Event) -> None:
        """This association's datasets are received into ``<storage_dir>/tmp``."""
        if event.assoc.is_acceptor:
            compat.receive_into(event.assoc, self._tmp)

    def path_for(self, study_instance_uid: str, sop_instance_uid: str) -> Path:
        """Where an object is kept for forwarding."""
        return self._dir / study_instance_uid / f"{sop_instance_uid}.dcm"

    # ------------------------------------------------------------------ C-STORE
    def handle_store(self, event: evt.Event) -> int | Dataset:
        """EVT_C_STORE (PS3.4 B.2.2): store, extract, commit, then answer."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        request = cast(C_STORE, event.request)
        sop_class = str(request.AffectedSOPClassUID)
        sop_instance = str(request.AffectedSOPInstanceUID)
        received: Path | None = None
        try:
            received = self._received_file(event)
            header, pixel_start = self._read_header(received)
            self._check_header(header, sop_class, sop_instance)
            self._check_lengths(header)
            if sop_class in IMAGE_CLASSES:
                self._check_pixels(received, header, pixel_start)
            records = self._extract(header, sop_class, calling_ae)
            if self._known_and_identical(received, header, records, calling_ae):
                self._discard(received)
                log.info("C-STORE from %s: identical resend of a stored object", calling_ae)
                return self._answer(records)
            kept = self.path_for(str(header.StudyInstanceUID), sop_instance)
            self._keep(received, kept)
            self._sink.record(records)
            self.objects.register(sop_instance, sop_class, kept)
        except StorageRefusal as refusal:
            log.warning("C-STORE from %s refused (0x%04X): %s", calling_ae, refusal.status, refusal)
            self._discard(received)
            return refusal.response()
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
        return self._answer(records)

    @staticmethod
    def _answer(records: Sequence[ExposureRecord]) -> int:
        if any(r.startswith(UNREADABLE) for record in records for r in record.review_reasons):
            # Kept and logged, flagged for the physicist; the unit is told its data was bad.
            return StoreStatus.WARNING_DATASET_DOES_NOT_MATCH
        return StoreStatus.SUCCESS

    def _known_and_identical(
        self, received: Path, header: Dataset, records: list[ExposureRecord], calling_ae: str
    ) -> bool:
        """False for a new SOP Instance UID; True for an identical resend; a different object
        under a known UID is held in quarantine and refused (:class:`StorageRefusal`)."""
        sop_instance, sop_class = str(header.SOPInstanceUID), str(header.SOPClassUID)
        stored = self.objects.file_of(sop_instance)
        if stored is None or not stored.exists():
            return False
        stored_header, _ = read_header(stored, _HEADER_DEFER_SIZE)
        stored_class = str(stored_header.get("SOPClassUID", ""))
        before = fingerprint(
            stored,
            self._extract(stored_header, stored_class, calling_ae),
            is_image=stored_class in IMAGE_CLASSES,
        )
        now = fingerprint(received, records, is_image=sop_class in IMAGE_CLASSES)
        difference = before.difference(now)
        if difference is None:
            return True

        def place(item_id: int) -> Path:
            target = private_dir(self._quarantine) / f"{item_id}-{sop_instance}.dcm"
            os.replace(received, target)
            make_private(target)
            if self._fsync:
                fsync_path(target)
                fsync_path(target.parent)
            return target

        item = self.objects.hold(
            sop_instance_uid=sop_instance,
            sop_class_uid=sop_class,
            calling_ae=calling_ae,
            reason=difference,
            records=records,
            place=place,
        )
        log.error(
            "C-STORE from %s: another object under a stored SOP Instance UID (%s): refused, "
            "held in quarantine as item %d",
            calling_ae,
            difference,
            item.id,
        )
        if self._on_quarantined is not None:
            try:
                self._on_quarantined(item)
            except Exception:
                log.exception("quarantine hook failed (the object is held)")
        raise StorageRefusal(
            StoreStatus.SOP_INSTANCE_REUSED, f"SOP Instance UID reused: {difference}"
        )

    def _received_file(self, event: evt.Event) -> Path:
        try:
            path = event.dataset_path  # None when chunked receive was switched off
        except AttributeError:
            path = None
        if path is not None:
            return Path(path)
        # Someone switched chunked receive off: write the encoded dataset ourselves.
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=private_dir(self._tmp))  # 0600
        with os.fdopen(fd, "wb") as out:
            out.write(event.encoded_dataset(include_meta=True))
        return Path(name)

    @staticmethod
    def _discard(received: Path | None) -> None:
        """Remove a received file that is not kept (refused, or an identical resend)."""
        if received is not None:
            with contextlib.suppress(FileNotFoundError):
                received.unlink()

    @staticmethod
    def _read_header(path: Path) -> tuple[Dataset, int]:
        try:
            return read_header(path, _HEADER_DEFER_SIZE)
        except Exception as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, "unreadable header") from exc

    @staticmethod
    def _check_lengths(header: Dataset) -> None:
        try:
            overlong = overlong_elements(header)
        except Exception as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, "unreadable values") from exc
        if overlong:
            raise StorageRefusal(StoreStatus.VALUE_TOO_LONG, f"value too long: {overlong[0]}")

    @staticmethod
    def _check_pixels(path: Path, header: Dataset, start: int) -> None:
        try:
            check_pixel_data(path, header, start)
        except PixelDataError as exc:
            raise StorageRefusal(StoreStatus.PIXEL_DATA_INCOMPLETE, f"Pixel Data: {exc}") from exc
        except Exception as exc:
            raise StorageRefusal(
                StoreStatus.PIXEL_DATA_INCOMPLETE, "Pixel Data unreadable"
            ) from exc

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
            if sop_class in IMAGE_CLASSES or (
                sop_class == XRAY_RADIATION_DOSE_SR and is_dose_report(header)
            ):
                records = exposures_in(header, station_ae=calling_ae, qa=self._qa)
            else:
                records = []
        except DoseDataError as exc:
            raise StorageRefusal(StoreStatus.CANNOT_UNDERSTAND, str(exc)) from exc
        return [record.with_values(known_step=self._resolve_step(record)) for record in records]

    def _keep(self, received: Path, destination: Path) -> None:
        """One rename: the temporary folder is in the storage folder (same file system)."""
        private_dir(destination.parent)
        make_private(received)
        os.replace(received, destination)
        if self._fsync:
            fsync_path(destination)
            fsync_path(destination.parent)
