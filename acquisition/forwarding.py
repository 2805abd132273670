"""Store-and-forward toward the PACS, completing what the unit cannot know.

Every object the unit stores with the controller is queued for the PACS once it is durable
(:meth:`Forwarder.forward`, called from the storage SCP's after-store hook) and again at start-up
for whatever the outbox does not hold yet (:meth:`Forwarder.forward_kept`): a crash between a
store and its queueing loses nothing, and the outbox is idempotent by SOP Instance UID.

A post-contrast image (its SPS ID names a post-injection phase of the open exam) that arrives
without a Contrast/Bolus module gets one from the controller's contrast records before it is
forwarded (dicom.md §5): the unit knows the agent from the worklist at best, never the volume,
the times or the flow of the injections. The controller, toward the hospital the acquisition
modality, completes the forwarded copy (``<storage_dir>/forward/<study>/<sop>.dcm``; same SOP
Instance UID: no other copy ever left the modality side) and keeps the unit's original as
received. An image that carries its own module is forwarded as the unit wrote it.
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
from dicom_nodes.contrast import ContrastAdministration, Injection, set_contrast_bolus
from dicom_nodes.outbox import Kind, Outbox, OutboxError, State
from dicom_nodes.storage_scp import QUARANTINE_DIR, TMP_DIR
from storage.files import write_dataset_durably

log = logging.getLogger(__name__)

#: Sub-directory of ``dicom.storage_dir`` holding the completed copies that are forwarded.
FORWARD_DIR = "forward"
MG_IMAGE_CLASSES = frozenset(
    {"1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1"}  # For Presentation, Processing
)

#: The contrast given before an image, from its header (None: not a post-contrast image).
ContrastFor = Callable[[Dataset], ContrastAdministration | None]


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

    def __init__(self, outbox: Outbox, storage_dir: Path, contrast_for: ContrastFor) -> None:
        self.outbox = outbox
        self.storage_dir = storage_dir
        self.contrast_for = contrast_for

    def forward(self, path: Path, header: Dataset) -> Path:
        """Queue one received object (completed first when it needs to be); the queued file."""
        queued = self._completed(path, header) or path
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
            queued_before = [m for m in self.outbox.messages(path.stem) if m.kind == Kind.C_STORE]
            if any(m.state != State.FAILED for m in queued_before):
                continue  # pending, sent or committed; a failed one is queued again
            try:
                self.forward(path, dcmread(path, stop_before_pixels=True))
            except (OSError, ValueError, InvalidDicomError, OutboxError) as exc:
                log.error("kept object %s not queued for the PACS: %s", path.name, exc)
                continue
            queued += 1
        return queued

    def _completed(self, path: Path, header: Dataset) -> Path | None:
        """The forwarded copy with the Contrast/Bolus module, when the image lacks it."""
        if str(header.get("SOPClassUID", "")) not in MG_IMAGE_CLASSES:
            return None
        if "ContrastBolusAgent" in header:
            return None
        contrast = self.contrast_for(header)
        if contrast is None:
            return None
        study, sop = str(header.StudyInstanceUID), str(header.SOPInstanceUID)
        target = self.storage_dir / FORWARD_DIR / study / f"{sop}.dcm"
        if not target.exists():
            ds = dcmread(path)
            set_contrast_bolus(ds, contrast)
            write_dataset_durably(ds, target)
            log.info("post-contrast image completed with its Contrast/Bolus module")
        return target
