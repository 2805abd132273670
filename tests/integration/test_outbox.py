"""The durable outbox against the simulated PACS (a real Storage + Commitment SCP on loopback)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import DigitalMammographyXRayImageStorageForPresentation

from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.outbox import OutboxError, RetryPolicy, State
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts
from simulators.pacs import PacsFaults, Refusal, SimulatedPacs

PIXELS = bytes(range(128))
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


class Clock:
    """A clock the test advances by hand (the outbox schedules retries on it)."""

    def __init__(self) -> None:
        self.now_s = 1_000_000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def write_image(directory: Path, n: int) -> Path:
    """A small, valid MG For Presentation file (the outbox never decodes it)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = f"P{n}"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = PIXELS
    path = directory / f"img{n}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def pacs() -> Iterator[SimulatedPacs]:
    with SimulatedPacs(timeouts=FAST, faults=PacsFaults()) as sim:
        yield sim


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_outbox(tmp_path: Path, pacs: SimulatedPacs, clock: Clock, **kwargs: object) -> Outbox:
    host, port = pacs.address
    peer = Peer(host, port, "PACS", calling_ae="GALACTO", timeouts=FAST)
    return Outbox(
        tmp_path / "galacto.db",
        {"pacs": peer},
        retry=RetryPolicy(initial_s=2.0, max_s=60.0),
        rng=__import__("random").Random(7),
        clock=clock,
        **kwargs,  # type: ignore[arg-type]
    )


def states(outbox: Outbox, kind: str = "c_store") -> list[str]:
    return [m.state for m in outbox.messages() if m.kind == kind]


def test_objects_are_sent_once_each(tmp_path: Path, pacs: SimulatedPacs, clock: Clock) -> None:
    files = [write_image(tmp_path, n) for n in range(3)]
    with make_outbox(tmp_path, pacs, clock) as outbox:
        uids = [outbox.enqueue_store(f) for f in files]
        assert outbox.run_once() == 3
        assert states(outbox) == [State.SENT] * 3
    assert {o.sop_instance_uid for o in pacs.received()} == set(uids)
    assert pacs.received()[0].read().PixelData == PIXELS


def test_enqueue_is_idempotent_by_sop_instance_uid(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    with make_outbox(tmp_path, pacs, clock) as outbox:
        outbox.enqueue_store(path)
        outbox.enqueue_store(path)
        assert len(outbox.messages()) == 1
        outbox.run_once()
        outbox.enqueue_store(path)  # already sent: nothing new
        assert outbox.run_once() == 0
    assert pacs.duplicates() == 0 and len(pacs.received()) == 1


def test_an_outage_is_retried_with_backoff_until_the_pacs_is_back(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    pacs.down()
    with make_outbox(tmp_path, pacs, clock) as outbox:
        outbox.enqueue_store(path)
        outbox.run_once()
        (message,) = outbox.messages()
        assert message.state == State.PENDING and message.attempts == 1
        delay_s = message.next_attempt_at_s - clock()
        assert 1.0 <= delay_s <= 2.0  # initial 2 s, jitter x[0.5, 1]
        assert outbox.run_once() == 0  # not due yet
        pacs.up()
        clock.advance(delay_s)
        assert outbox.run_once() == 1
        assert states(outbox) == [State.SENT]
    assert len(pacs.received()) == 1


def test_a_new_outbox_on_the_same_database_resumes_pending_work(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    pacs.down()
    with make_outbox(tmp_path, pacs, clock) as first:
        first.enqueue_store(path)
        first.run_once()
    pacs.up()
    clock.advance(3600)
    with make_outbox(tmp_path, pacs, clock) as second:
        assert second.run_once() == 1
        assert states(second) == [State.SENT]
    assert len(pacs.received()) == 1


def test_a_crash_between_send_and_mark_resends_and_the_pacs_keeps_one_copy(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    with make_outbox(tmp_path, pacs, clock) as outbox:
        uid = outbox.enqueue_store(path)
        outbox.run_once()
    # The database as a crash right after the C-STORE response would leave it:
    with sqlite3.connect(tmp_path / "galacto.db") as conn:
        conn.execute("UPDATE outbox_messages SET state = 'pending', sent_at_s = NULL")
    conn.close()
    with make_outbox(tmp_path, pacs, clock) as restarted:
        restarted.run_once()
        assert states(restarted) == [State.SENT]
    assert [o.sop_instance_uid for o in pacs.received()] == [uid]
    assert pacs.duplicates() == 1


def test_refused_storage_is_retried_not_dropped(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    pacs.faults.refuse = Refusal.STORAGE
    with make_outbox(tmp_path, pacs, clock) as outbox:
        outbox.enqueue_store(path)
        outbox.run_once()
        (message,) = outbox.messages()
        assert message.state == State.PENDING and message.last_status == 0xA700
        pacs.faults.refuse = Refusal.NONE
        clock.advance(10)
        outbox.run_once()
        assert states(outbox) == [State.SENT]


def test_an_association_dropped_mid_store_is_retried(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    files = [write_image(tmp_path, n) for n in range(2)]
    pacs.faults.drop_stores = 1
    with make_outbox(tmp_path, pacs, clock) as outbox:
        for f in files:
            outbox.enqueue_store(f)
        outbox.run_once()
        assert states(outbox)[0] == State.PENDING
        clock.advance(10)
        outbox.run_once()
        clock.advance(10)
        outbox.run_once()
        assert states(outbox) == [State.SENT, State.SENT]
    assert len(pacs.received()) == 2


def test_a_vanished_file_fails_terminally(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    path = write_image(tmp_path, 1)
    with make_outbox(tmp_path, pacs, clock) as outbox:
        outbox.enqueue_store(path)
        path.unlink()
        outbox.run_once()
        (message,) = outbox.messages()
        assert message.state == State.FAILED
        assert message.last_error is not None and "file missing" in message.last_error


def test_a_non_dicom_file_is_refused_at_enqueue(
    tmp_path: Path, pacs: SimulatedPacs, clock: Clock
) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    with make_outbox(tmp_path, pacs, clock) as outbox, pytest.raises(OutboxError):
        outbox.enqueue_store(junk)


# -- storage commitment ------------------------------------------------------------------------


def test_commitment_on_a_separate_association(tmp_path: Path, clock: Clock) -> None:
    files = [write_image(tmp_path, n) for n in range(3)]
    with SimulatedPacs(timeouts=FAST) as pacs:
        outbox = make_outbox(tmp_path, pacs, clock, storage_commitment=True, commitment_wait_s=0)
        with outbox:
            host, port = outbox.listen_for_commitment("GALACTO", timeouts=FAST)
            pacs.commitment_target = (host, port, "GALACTO")
            for f in files:
                outbox.enqueue_store(f)
            outbox.run_once()  # C-STOREs
            assert states(outbox) == [State.SENT] * 3
            outbox.run_once()  # N-ACTION
            assert outbox.wait_for(lambda: states(outbox) == [State.COMMITTED] * 3, 10)
            assert states(outbox, "commitment") == [State.COMMITTED]
        (report,) = pacs.commitment_reports()
        assert report.via == "separate" and report.delivered


def test_commitment_on_the_same_association(tmp_path: Path, clock: Clock) -> None:
    path = write_image(tmp_path, 1)
    with SimulatedPacs(timeouts=FAST, commitment_on_same_association=True) as pacs:
        with make_outbox(tmp_path, pacs, clock, storage_commitment=True) as outbox:
            outbox.enqueue_store(path)
            outbox.run_once()
            outbox.run_once()
            assert states(outbox) == [State.COMMITTED]
        (report,) = pacs.commitment_reports()
        assert report.via == "same"


def test_failed_commitment_resends_then_commits(tmp_path: Path, clock: Clock) -> None:
    path = write_image(tmp_path, 1)
    faults = PacsFaults(refuse=Refusal.COMMITMENT)
    with SimulatedPacs(timeouts=FAST, commitment_on_same_association=True, faults=faults) as pacs:
        with make_outbox(tmp_path, pacs, clock, storage_commitment=True) as outbox:
            outbox.enqueue_store(path)
            outbox.run_once()  # C-STORE
            outbox.run_once()  # N-ACTION -> event type 2
            (message,) = [m for m in outbox.messages() if m.kind == "c_store"]
            assert message.state == State.PENDING
            assert message.last_error == "commitment failed: 0x0213"
            faults.refuse = Refusal.NONE
            for _ in range(2):
                outbox.run_once()
            assert states(outbox) == [State.COMMITTED]
        assert pacs.duplicates() == 1
        assert [r.event_type_id for r in pacs.commitment_reports()] == [2, 1]


def test_a_transaction_without_result_is_asked_again(tmp_path: Path, clock: Clock) -> None:
    path = write_image(tmp_path, 1)
    late = PacsFaults(delay_commitment_s=0.5)  # the result comes after we released
    with SimulatedPacs(timeouts=FAST, faults=late) as pacs:
        outbox = make_outbox(
            tmp_path,
            pacs,
            clock,
            storage_commitment=True,
            commitment_wait_s=0,
            commitment_timeout_s=600,
        )
        with outbox:
            outbox.enqueue_store(path)
            outbox.run_once()
            outbox.run_once()
            assert states(outbox, "commitment") == [State.SENT]
            clock.advance(601)
            outbox.run_once()
            assert states(outbox, "commitment") == [State.FAILED, State.SENT]
            assert states(outbox) == [State.SENT]
        assert len(pacs.commitment_reports()) == 2
        assert not any(r.delivered for r in pacs.commitment_reports())


def test_the_sender_thread_delivers_and_stops(tmp_path: Path) -> None:
    files = [write_image(tmp_path, n) for n in range(2)]
    with SimulatedPacs(timeouts=FAST, commitment_on_same_association=True) as pacs:
        host, port = pacs.address
        outbox = Outbox(
            tmp_path / "galacto.db",
            {"pacs": Peer(host, port, "PACS", timeouts=FAST)},
            storage_commitment=True,
            retry=RetryPolicy(initial_s=0.05, max_s=0.2),
        )
        outbox.start()
        try:
            for f in files:
                outbox.enqueue_store(f)
            assert outbox.wait_for(lambda: states(outbox) == [State.COMMITTED] * 2, 20)
        finally:
            outbox.stop()
