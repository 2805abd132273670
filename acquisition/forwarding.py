"""Store-and-forward toward the PACS, completing what the unit cannot know.

Every object the unit stores with the controller is queued for the PACS once it is durable
(:meth:`Forwarder.forward`, called from the storage SCP's after-store hook) and again at start-up
for whatever the outbox does not hold yet (:meth:`Forwarder.forward_kept`): a crash between a
store and its queueing loses nothing, and the outbox is idempotent by SOP Instance UID.

The objects of the open exam (its Study Instance UID) are **held** until the exam ends
(completed or discontinued): they are forwarded then (:meth:`Forwarder.forward_study`, called
by the exam's reporting), coerced to the identity of the order as it stands at the exam's
close (:mod:`acquisition.hospital_identity`, :func:`dicom_nodes.datasets.coercion.coerce`). An
object of
that exam arriving later is coerced the same way; an object of no exam is forwarded as received.

A post-contrast image (its SPS ID names a post-injection phase of the open exam) that arrives
without a Contrast/Bolus module gets one from the controller's contrast records before it is
forwarded (dicom.md §5): the unit knows the agent from the worklist at best, never the volume,
the times or the flow of the injections. The controller, toward the hospital the acquisition
modality, completes the forwarded copy (``<storage_dir>/forward/<study>/<sop>.dcm``; same SOP
Instance UID: no other copy ever left the modality side) and keeps the unit's original as
received. An image that carries its own module keeps it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from acquisition.exam.model import ContrastRecord
from dicom_nodes.datasets.coercion import StudyIdentity, coerce
from dicom_nodes.datasets.contrast import ContrastAdministration, Injection, set_contrast_bolus
from dicom_nodes.hospital.dicom_outbox import DicomOutbox, Kind
from dicom_nodes.hospital.outbox import OutboxError, State
from dicom_nodes.implementation import stamp_file_meta
from dicom_nodes.unit_facing.storage_scp import QUARANTINE_DIR, TMP_DIR
from storage.files import write_dataset_durably

log = logging.getLogger(__name__)

#: Sub-directory of ``dicom.storage_dir`` holding the completed copies that are forwarded.
FORWARD_DIR = "forward"
MG_IMAGE_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1"}  # For Presentation, Processing
)

#: The contrast given before an image, from its header (None: not a post-contrast image).
ContrastFor = Callable[[Dataset], ContrastAdministration | None]
#: Whether an object waits for its exam's end (True: an object of the open exam).
HeldFor = Callable[[Dataset], bool]
#: The identity an object is coerced to, from its header (None: forwarded as received).
IdentityFor = Callable[[Dataset], StudyIdentity | None]


def contrast_administration(records: Sequence[ContrastRecord]) -> ContrastAdministration | None:
    """The Contrast/Bolus content for the injections in ``records`` (None when none gave
    contrast). Times are local (DICOM TM); the flow rate in mL/s, the duration in s."""
    injections = []
    for record in records:
        if record.delivered_ml <= 0 or not record.started_at:
            continue
        start = dt.datetime.fromisoformat(record.started_at).astimezone()
        stop = dt.datetime.fromisoformat(record.stopped_at).astimezone()
        injections.append(
            Injection(
                volume_ml=round(record.delivered_ml, 3),
                start=start.time(),
                stop=stop.time(),
                flow_rate_ml_s=round(record.rate_ml_min / 60.0, 4),
                flow_duration_s=round(max((stop - start).total_seconds(), 0.0), 1),
            )
        )
    return ContrastAdministration(tuple(injections)) if injections else None


class Forwarder:
    """Queues the unit's objects for the PACS (see the module docstring)."""

    def __init__(
        self,
        outbox: DicomOutbox,
        storage_dir: Path,
        contrast_for: ContrastFor,
        *,
        held_for: HeldFor = lambda _header: False,
        identity_for: IdentityFor = lambda _header: None,
    ) -> None:
        self.outbox = outbox
        self.storage_dir = storage_dir
        self.contrast_for = contrast_for
        self.held_for = held_for
        self.identity_for = identity_for

    def forward(self, path: Path, header: Dataset) -> Path | None:
        """Queue one received object (completed and coerced first when it needs to be); the
        queued file, or None while its exam runs (held: :meth:`forward_study` at its end)."""
        if self.held_for(header):
            return None
        queued = self._prepared(path, header) or path
        self.outbox.enqueue_store(queued)
        return queued

    def forward_kept(self) -> int:
        """Queue every received object the outbox does not hold yet (start-up); how many."""
        queued = 0
        for path in sorted(self.storage_dir.rglob("*.dcm")):
            top = path.relative_to(self.storage_dir).parts[0]
            if top in (FORWARD_DIR, TMP_DIR, QUARANTINE_DIR):
                # completed copies are queued with (or instead of) their originals; received
                # data not (yet) answered and refused objects are never forwarded
                continue
            queued += self._forward_if_new(path)
        return queued

    def forward_study(self, study_instance_uid: str) -> int:
        """Queue every received object of one study the outbox does not hold yet (the exam's
        end releases its held objects; idempotent); how many."""
        folder = self.storage_dir / study_instance_uid
        if study_instance_uid in ("", FORWARD_DIR, TMP_DIR, QUARANTINE_DIR) or not folder.is_dir():
            return 0
        return sum(self._forward_if_new(path) for path in sorted(folder.glob("*.dcm")))

    def _forward_if_new(self, path: Path) -> int:
        queued_before = [m for m in self.outbox.messages(path.stem) if m.kind == Kind.C_STORE]
        if any(m.state != State.FAILED for m in queued_before):
            return 0  # pending, sent or committed; a failed one is queued again
        try:
            queued = self.forward(path, dcmread(path, stop_before_pixels=True))
        except (OSError, ValueError, InvalidDicomError, OutboxError) as exc:
            log.error("kept object %s not queued for the PACS: %s", path.name, exc)
            return 0
        return 0 if queued is None else 1

    def _prepared(self, path: Path, header: Dataset) -> Path | None:
        """The forwarded copy, when the object needs one: the Contrast/Bolus module an image
        lacks, the coerced identity (``<storage_dir>/forward/<study>/<sop>.dcm``, written once)."""
        contrast = self._contrast_missing(header)
        identity = self.identity_for(header)
        if contrast is None and identity is None:
            return None
        study, sop = str(header.StudyInstanceUID), str(header.SOPInstanceUID)
        target = self.storage_dir / FORWARD_DIR / study / f"{sop}.dcm"
        if not target.exists():
            ds = dcmread(path)
            if contrast is not None:
                set_contrast_bolus(ds, contrast)
                log.info("post-contrast image completed with its Contrast/Bolus module")
            if identity is not None:
                changed = coerce(ds, identity)
                log.info("forwarded copy coerced (%s)", ", ".join(changed) or "nothing changed")
            stamp_file_meta(ds)
            write_dataset_durably(ds, target)
        return target

    def _contrast_missing(self, header: Dataset) -> ContrastAdministration | None:
        """The contrast given before a post-contrast image that lacks its module."""
        if str(header.get("SOPClassUID", "")) not in MG_IMAGE_CLASSES:
            return None
        if "ContrastBolusAgent" in header:
            return None
        return self.contrast_for(header)
