"""Storage Commitment bookkeeping (dicom_nodes/hospital/commitment.py), no peer needed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_nodes.hospital.commitment import COMMITMENT, CommitmentReceiver
from dicom_nodes.hospital.dicom_outbox import DicomOutbox
from dicom_nodes.hospital.scu import Peer

MG = "1.2.840.10008.5.1.4.1.1.1.2"
NOWHERE = Peer("127.0.0.1", 9, "PACS")
SITE_ROOT = "1.2.826.0.1.3680043.10.9999"


def kept_file(directory: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def mark_sent(db: Path, sent_at_s: float = 0.0) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE outbox_messages SET state = 'sent', sent_at_s = ?", (sent_at_s,))
    conn.close()


def test_sent_objects_form_a_transaction_under_the_site_root(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = DicomOutbox(db, {"pacs": NOWHERE}, storage_commitment=True, uid_root=SITE_ROOT)
    uids = [outbox.enqueue_store(kept_file(tmp_path)) for _ in range(2)]
    mark_sent(db)
    outbox.commitment.before_round(10.0)
    (transaction,) = [m for m in outbox.messages() if m.kind == COMMITMENT]
    assert transaction.sop_instance_uid.startswith(SITE_ROOT + ".")
    assert {m.transaction_uid for m in outbox.messages() if m.sop_instance_uid in uids} == {
        transaction.sop_instance_uid
    }


def test_without_commitment_no_transaction_is_formed(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = DicomOutbox(db, {"pacs": NOWHERE}, uid_root=SITE_ROOT)
    outbox.enqueue_store(kept_file(tmp_path))
    mark_sent(db)
    outbox.commitment.before_round(10.0)
    assert [m.kind for m in outbox.messages()] == ["c_store"]


def test_a_transaction_without_a_report_in_time_is_asked_again(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = DicomOutbox(db, {"pacs": NOWHERE}, storage_commitment=True, commitment_timeout_s=60.0)
    uid = outbox.enqueue_store(kept_file(tmp_path))
    mark_sent(db)
    outbox.commitment.before_round(10.0)
    mark_sent(db, sent_at_s=10.0)  # the N-ACTION was accepted at 10 s
    outbox.commitment.before_round(100.0)  # no report by 70 s: a new transaction
    transactions = [m for m in outbox.messages() if m.kind == COMMITMENT]
    assert [t.state for t in transactions] == ["failed", "pending"]
    (store,) = outbox.messages(uid)
    assert store.transaction_uid == transactions[1].sop_instance_uid


def test_the_receiver_accepts_both_roles() -> None:
    (context,) = CommitmentReceiver.contexts()
    assert (context.scu_role, context.scp_role) == (True, True)
