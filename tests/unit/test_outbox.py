"""Outbox rules that need no peer: backoff, status tables, enqueue, commitment bookkeeping."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.mpps_scu import mpps_outcome
from dicom_nodes.hospital.outbox import OutboxError, RetryPolicy, State, describe_counts
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.hospital.store_scu import store_outcome

MG = "1.2.840.10008.5.1.4.1.1.1.2"
NOWHERE = Peer("127.0.0.1", 9, "PACS")


@pytest.mark.parametrize("attempts", range(1, 12))
def test_backoff_doubles_up_to_the_cap_with_jitter(attempts: int) -> None:
    policy = RetryPolicy(initial_s=2.0, max_s=300.0)
    base = min(300.0, 2.0 * 2 ** (attempts - 1))
    delays = [policy.delay_s(attempts, random.Random(seed)) for seed in range(50)]
    assert all(base / 2 <= d <= base for d in delays)
    assert len(set(delays)) > 1  # jittered


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.delay_s(n, rng) for rng in [random.Random(42)] for n in range(1, 6)]
    again = [policy.delay_s(n, rng) for rng in [random.Random(42)] for n in range(1, 6)]
    assert first == again


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (0x0000, "done"),
        (0xB000, "done"),  # warning: coercion of data elements
        (0xB007, "done"),
        (0xA700, "retry"),  # out of resources
        (0xA7FF, "retry"),
        (0x0213, "retry"),
        (0xA900, "terminal"),  # data set does not match SOP class
        (0xA9FF, "terminal"),
        (0xC000, "terminal"),  # cannot understand
        (0xCFFF, "terminal"),
    ],
)
def test_store_status_table(status: int, outcome: str) -> None:
    assert store_outcome(status) == outcome


@pytest.mark.parametrize(
    ("operation", "status", "error_id", "outcome"),
    [
        ("mpps_create", 0x0000, None, "done"),
        ("mpps_set", 0x0000, None, "done"),
        ("mpps_create", 0x0111, None, "done"),  # our earlier N-CREATE got through
        ("mpps_set", 0x0111, None, "retry"),
        ("mpps_set", 0x0110, 0xA710, "terminal"),  # final state is final
        ("mpps_set", 0x0110, None, "retry"),  # plain processing failure
        ("mpps_create", 0x0106, None, "terminal"),
        ("mpps_create", 0x0120, None, "terminal"),
        ("mpps_create", 0x0121, None, "terminal"),
        ("mpps_set", 0x0105, None, "terminal"),
        ("mpps_set", 0x0112, None, "terminal"),
        ("mpps_create", 0x0213, None, "retry"),
        ("mpps_create", 0xA700, None, "retry"),
    ],
)
def test_mpps_status_table(operation: str, status: int, error_id: int | None, outcome: str) -> None:
    assert mpps_outcome(operation, status, error_id) == outcome


def image(directory: Path, name: str = "a.dcm") -> tuple[Path, str]:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    path = directory / name
    ds.save_as(path, enforce_file_format=True)
    return path, str(meta.MediaStorageSOPInstanceUID)


def test_enqueue_refuses_an_unconfigured_destination(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "db.sqlite", {"pacs": NOWHERE})
    with pytest.raises(OutboxError, match="no RIS configured"):
        outbox.enqueue_mpps_create("1.2.3", Dataset())


def test_store_and_create_are_queued_once_sets_every_time(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "db.sqlite", {"pacs": NOWHERE, "ris": NOWHERE})
    path, _uid = image(tmp_path)
    outbox.enqueue_store(path)
    outbox.enqueue_store(path)
    outbox.enqueue_mpps_create("1.2.3", Dataset())
    outbox.enqueue_mpps_create("1.2.3", Dataset())
    outbox.enqueue_mpps_set("1.2.3", Dataset())
    outbox.enqueue_mpps_set("1.2.3", Dataset())
    kinds = [m.kind for m in outbox.messages()]
    assert kinds == ["c_store", "mpps_create", "mpps_set", "mpps_set"]
    assert outbox.counts() == {"pending": 4}
    assert describe_counts(outbox.counts()) == "4 pending"


def test_a_failed_store_can_be_queued_again(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = Outbox(db, {"pacs": NOWHERE})
    path, uid = image(tmp_path)
    outbox.enqueue_store(path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE outbox_messages SET state = 'failed', attempts = 3")
    conn.close()
    outbox.enqueue_store(path)
    (message,) = outbox.messages(uid)
    assert (message.state, message.attempts) == (State.PENDING, 0)


def sent_store(db: Path, uid: str, transaction_uid: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE outbox_messages SET state = 'sent', transaction_uid = ? "
            "WHERE sop_instance_uid = ?",
            (transaction_uid, uid),
        )
    conn.close()


def test_commitment_results_commit_or_resend(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = Outbox(db, {"pacs": NOWHERE}, clock=lambda: 500.0)
    (path_a, a), (path_b, b) = image(tmp_path, "a.dcm"), image(tmp_path, "b.dcm")
    outbox.enqueue_store(path_a)
    outbox.enqueue_store(path_b)
    sent_store(db, a, "9.9.1")
    sent_store(db, b, "9.9.1")
    outbox.receiver.record("9.9.1", committed=[a], failed=[(b, 0x0213)])
    (ma,), (mb,) = outbox.messages(a), outbox.messages(b)
    assert ma.state == State.COMMITTED
    assert (mb.state, mb.transaction_uid, mb.last_status) == (State.PENDING, None, 0x0213)
    assert mb.next_attempt_at_s == 500.0


def test_a_late_failure_of_an_old_transaction_does_not_undo_a_newer_one(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    outbox = Outbox(db, {"pacs": NOWHERE})
    path, uid = image(tmp_path)
    outbox.enqueue_store(path)
    sent_store(db, uid, "9.9.2")  # asked again in a newer transaction
    outbox.receiver.record("9.9.1", committed=[], failed=[(uid, 0x0110)])
    (message,) = outbox.messages(uid)
    assert (message.state, message.transaction_uid) == (State.SENT, "9.9.2")
    outbox.receiver.record("9.9.1", committed=[uid], failed=[])  # a late success is a fact
    assert outbox.messages(uid)[0].state == State.COMMITTED


def test_a_set_blocked_behind_a_backed_off_create_does_not_make_the_sender_spin(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    outbox = Outbox(
        tmp_path / "db.sqlite",
        {"ris": NOWHERE},
        retry=RetryPolicy(initial_s=60.0, max_s=60.0),
        clock=lambda: now[0],
        poll_s=5.0,
    )
    outbox.enqueue_mpps_create("1.2.3", Dataset())
    assert outbox.seconds_until_due() == 0.0
    assert outbox.run_once() == 1  # connection refused: backed off 30-60 s
    outbox.enqueue_mpps_set("1.2.3", Dataset())  # due now, but must wait for the create
    assert outbox.run_once() == 0
    assert outbox.seconds_until_due() == 5.0  # the poll interval, not zero


def test_messages_for_an_unconfigured_destination_wait_quietly(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    Outbox(db, {"ris": NOWHERE}).enqueue_mpps_create("1.2.3", Dataset())
    later = Outbox(db, {"pacs": NOWHERE}, poll_s=5.0)  # restarted without a RIS
    assert later.run_once() == 0
    assert later.seconds_until_due() == 5.0
    assert later.counts() == {"pending": 1}
