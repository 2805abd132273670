"""The outbox toward the hospital with its three DICOM senders registered.

:class:`DicomOutbox` is the generic :class:`~dicom_nodes.hospital.outbox.Outbox` (the durable
queue, the retries, the holds, the stuck alerts) with:

- :class:`~dicom_nodes.hospital.store_scu.StoreSender`: C-STORE of kept files to the PACS;
- :class:`~dicom_nodes.hospital.mpps_scu.MppsSender`: MPPS N-CREATE / N-SET to the RIS;
- :class:`~dicom_nodes.hospital.commitment.CommitmentSender`: Storage Commitment N-ACTION to
  the PACS, and the receiver of its N-EVENT-REPORT.

It is the one place that names the three; the queue names none of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_nodes.hospital.commitment import COMMITMENT, CommitmentReceiver, CommitmentSender
from dicom_nodes.hospital.mpps_scu import N_CREATE, N_SET, MppsSender
from dicom_nodes.hospital.outbox import Outbox
from dicom_nodes.hospital.store_scu import C_STORE, StoreSender
from storage.writer import Database


class Kind:
    """The message kinds of the DICOM senders, as stored in ``outbox_messages.kind``."""

    C_STORE = C_STORE
    MPPS_CREATE = N_CREATE
    MPPS_SET = N_SET
    COMMITMENT = COMMITMENT


class DicomOutbox(Outbox):
    """The outbox with the C-STORE, MPPS and Storage Commitment senders (see the module
    docstring). ``storage_commitment``: whether sent objects are committed (PS3.4 J.3);
    ``uid_root``: the site's root, for the commitment Transaction UIDs. The other arguments
    are the queue's (:class:`~dicom_nodes.hospital.outbox.Outbox`)."""

    def __init__(
        self,
        db_path: str | Path | Database,
        destinations: Any,
        *,
        storage_commitment: bool = False,
        commitment_wait_s: float = 2.0,
        commitment_timeout_s: float = 3600.0,
        uid_root: str | None = None,
        **queue: Any,
    ) -> None:
        super().__init__(db_path, destinations, **queue)
        self.storage_commitment = storage_commitment
        self.store = StoreSender(self)
        self.mpps = MppsSender(self)
        self.commitment = CommitmentSender(
            self,
            enabled=storage_commitment,
            uid_root=uid_root,
            wait_s=commitment_wait_s,
            timeout_s=commitment_timeout_s,
        )
        #: The senders' own enqueueing, under the names callers know.
        self.enqueue_store = self.store.enqueue
        self.enqueue_mpps_create = self.mpps.create
        self.enqueue_mpps_set = self.mpps.set
        #: The dedicated listener of ``pacs.commitment_port`` (stopped by :meth:`stop`).
        self.listen_for_commitment = self.commitment.listen

    @property
    def receiver(self) -> CommitmentReceiver:
        """The handlers of the archive's Storage Commitment N-EVENT-REPORT."""
        return self.commitment.receiver

    def stop(self, timeout_s: float = 30.0, *, release_grace_s: float = 2.0) -> None:
        """Stop the sender, then the commitment listener once the archive's associations on
        it have ended (at most ``release_grace_s``; then aborted)."""
        super().stop(timeout_s)
        self.commitment.stop(release_grace_s)


__all__ = ["DicomOutbox", "Kind"]
