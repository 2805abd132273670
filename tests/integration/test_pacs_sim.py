"""The simulated PACS against real pynetdicom peers on loopback (no mocks)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    DigitalMammographyXRayImageStorageForPresentation,
    StorageCommitmentPushModel,
    XRayRadiationDoseSRStorage,
)

from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from simulators.pacs import (
    EVENT_ALL_COMMITTED,
    EVENT_FAILURES_EXIST,
    STORAGE_COMMITMENT_INSTANCE_UID,
    FailureReason,
    PacsFaults,
    Refusal,
    SimulatedPacs,
)

TIMEOUT_S = 10.0
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def mg_image(sop_class_uid: str = DigitalMammographyXRayImageStorageForPresentation) -> Dataset:
    """A small object of the given class; the PACS stores it without validating it."""
    ds = Dataset()
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Müller^Anna"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientID = "P-1"
    ds.Modality = "MG"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


class Requester:
    """A modality-side SCU with a listener for N-EVENT-REPORTs on a separate association."""

    def __init__(self) -> None:
        self.reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()
        self.listener = make_ae("GALACTO", FAST)
        self.listener.add_supported_context(
            StorageCommitmentPushModel, scu_role=False, scp_role=True
        )
        handlers: list[Any] = [(evt.EVT_N_EVENT_REPORT, self._on_report), *NODELAY_HANDLERS]
        self.server = self.listener.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=handlers
        )
        self.port = int(self.server.server_address[1])

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        self.reports.put(
            (event.event_type, event.event_information, str(event.assoc.requestor.ae_title))
        )
        return 0x0000, None

    def close(self) -> None:
        self.listener.shutdown()


@pytest.fixture
def requester() -> Iterator[Requester]:
    peer = Requester()
    try:
        yield peer
    finally:
        peer.close()


def scu() -> AE:
    ae = make_ae("GALACTO", FAST)
    ae.add_requested_context(DigitalMammographyXRayImageStorageForPresentation)
    ae.add_requested_context(XRayRadiationDoseSRStorage)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def associate(pacs: SimulatedPacs, handlers: list[Any] | None = None) -> Any:
    host, port = pacs.address
    assoc = scu().associate(
        host, port, ae_title=pacs.ae_title, evt_handlers=[*(handlers or []), *NODELAY_HANDLERS]
    )
    assert assoc.is_established
    return assoc


def store(pacs: SimulatedPacs, *datasets: Dataset) -> list[int]:
    assoc = associate(pacs)
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def request_commitment(
    assoc: Any, refs: list[tuple[str, str]], transaction_uid: str = ""
) -> tuple[str, int]:
    info = Dataset()
    info.TransactionUID = transaction_uid or generate_uid()
    info.ReferencedSOPSequence = []
    for sop_class_uid, sop_instance_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class_uid
        item.ReferencedSOPInstanceUID = sop_instance_uid
        info.ReferencedSOPSequence.append(item)
    status, _reply = assoc.send_n_action(
        info, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE_UID
    )
    return info.TransactionUID, int(status.Status)


def test_stores_objects_and_counts_duplicates_without_storing_twice(tmp_path: Path) -> None:
    image, rdsr = mg_image(), mg_image(XRayRadiationDoseSRStorage)
    with SimulatedPacs(storage_dir=tmp_path, commitment_target=None) as pacs:
        assert store(pacs, image, rdsr, image) == [0x0000, 0x0000, 0x0000]
        received = {o.sop_instance_uid: o for o in pacs.received()}
        assert set(received) == {image.SOPInstanceUID, rdsr.SOPInstanceUID}
        assert pacs.duplicates() == 1
        assert received[image.SOPInstanceUID].times_received == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            f"{uid}.dcm" for uid in received
        )
        kept = received[image.SOPInstanceUID].read()
        assert kept.PatientName == "Müller^Anna"
        assert kept.file_meta.MediaStorageSOPInstanceUID == image.SOPInstanceUID
        assert received[rdsr.SOPInstanceUID].sop_class_uid == XRayRadiationDoseSRStorage


@pytest.mark.parametrize("in_memory", [True, False], ids=["memory", "storage-dir"])
def test_stores_the_same_bytes_when_chunked_receiving_is_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    # The controller's Storage SCP switches pynetdicom to receive C-STOREs into files,
    # process-wide; the PACS sharing that process must still keep every object.
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    image = mg_image()
    storage_dir = None if in_memory else tmp_path / "pacs"
    with SimulatedPacs(storage_dir=storage_dir) as pacs:
        assert store(pacs, image) == [0x0000]
        [kept] = pacs.received()
    assert (kept.data is not None) == in_memory
    assert kept.read().SOPInstanceUID == image.SOPInstanceUID
    assert kept.read().PatientName == "Müller^Anna"


def test_commitment_report_arrives_on_a_separate_association(requester: Requester) -> None:
    image, rdsr = mg_image(), mg_image(XRayRadiationDoseSRStorage)
    target = ("127.0.0.1", requester.port, "GALACTO")
    with SimulatedPacs(commitment_target=target, timeouts=FAST) as pacs:
        store(pacs, image, rdsr)
        assoc = associate(pacs)
        try:
            refs = [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in (image, rdsr)]
            transaction_uid, status = request_commitment(assoc, refs)
        finally:
            assoc.release()
        assert status == 0x0000
        event_type, info, calling_ae = requester.reports.get(timeout=TIMEOUT_S)
        assert (event_type, calling_ae) == (EVENT_ALL_COMMITTED, "PACS")
        assert info.TransactionUID == transaction_uid
        assert {i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence} == {
            image.SOPInstanceUID,
            rdsr.SOPInstanceUID,
        }
        assert "FailedSOPSequence" not in info
        assert pacs.wait_for(lambda: pacs.committed() == {uid for _c, uid in refs}, TIMEOUT_S)
        assert pacs.commitment_reports()[0].via == "separate"


def test_commitment_report_on_the_same_association_when_configured() -> None:
    image = mg_image()
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.put((event.event_type, event.event_information))
        return 0x0000, None

    with SimulatedPacs(commitment_on_same_association=True, timeouts=FAST) as pacs:
        store(pacs, image)
        assoc = associate(pacs, [(evt.EVT_N_EVENT_REPORT, on_report)])
        try:
            _uid, status = request_commitment(assoc, [(image.SOPClassUID, image.SOPInstanceUID)])
            assert status == 0x0000
            event_type, info = reports.get(timeout=TIMEOUT_S)
        finally:
            assoc.release()
        assert event_type == EVENT_ALL_COMMITTED
        assert info.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
        assert pacs.wait_for(lambda: image.SOPInstanceUID in pacs.committed(), TIMEOUT_S)


@pytest.mark.parametrize(
    ("refusal", "expected_reason"),
    [(Refusal.COMMITMENT, FailureReason.RESOURCE_LIMITATION), (Refusal.NONE, None)],
)
def test_commitment_failures_name_each_instance_and_reason(
    requester: Requester, refusal: Refusal, expected_reason: FailureReason | None
) -> None:
    stored, never_sent = mg_image(), mg_image()
    target = ("127.0.0.1", requester.port, "GALACTO")
    with SimulatedPacs(commitment_target=target, timeouts=FAST) as pacs:
        store(pacs, stored)
        pacs.faults.refuse = refusal
        assoc = associate(pacs)
        try:
            refs = [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in (stored, never_sent)]
            request_commitment(assoc, refs)
        finally:
            assoc.release()
        event_type, info, _ae = requester.reports.get(timeout=TIMEOUT_S)
    assert event_type == EVENT_FAILURES_EXIST
    failed = {i.ReferencedSOPInstanceUID: i.FailureReason for i in info.FailedSOPSequence}
    assert failed[never_sent.SOPInstanceUID] == FailureReason.NO_SUCH_OBJECT_INSTANCE
    if expected_reason is None:
        assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [
            stored.SOPInstanceUID
        ]
    else:
        assert failed[stored.SOPInstanceUID] == expected_reason
        assert "ReferencedSOPSequence" not in info


def test_some_commitment_failures_are_deterministic_with_the_seed(requester: Requester) -> None:
    def failures(seed: int) -> set[str]:
        images = [mg_image() for _ in range(12)]
        for n, ds in enumerate(images):
            ds.SOPInstanceUID = f"1.2.3.{n}"
        target = ("127.0.0.1", requester.port, "GALACTO")
        faults = PacsFaults(refuse=Refusal.COMMITMENT_SOME)
        with SimulatedPacs(seed=seed, commitment_target=target, faults=faults) as pacs:
            store(pacs, *images)
            assoc = associate(pacs)
            try:
                request_commitment(assoc, [(ds.SOPClassUID, ds.SOPInstanceUID) for ds in images])
            finally:
                assoc.release()
            _type, info, _ae = requester.reports.get(timeout=TIMEOUT_S)
        return {i.ReferencedSOPInstanceUID for i in info.FailedSOPSequence}

    first = failures(seed=7)
    assert 0 < len(first) < 12
    assert failures(seed=7) == first


def test_delayed_commitment_answers_the_action_first(requester: Requester) -> None:
    image = mg_image()
    target = ("127.0.0.1", requester.port, "GALACTO")
    faults = PacsFaults(delay_commitment_s=0.5)
    with SimulatedPacs(commitment_target=target, faults=faults, timeouts=FAST) as pacs:
        store(pacs, image)
        assoc = associate(pacs)
        try:
            _uid, status = request_commitment(assoc, [(image.SOPClassUID, image.SOPInstanceUID)])
            assert status == 0x0000
            # The action is accepted; the result has not been reported yet.
            assert requester.reports.empty()
            assert pacs.committed() == set()
        finally:
            assoc.release()
        event_type, _info, _ae = requester.reports.get(timeout=TIMEOUT_S)
        assert event_type == EVENT_ALL_COMMITTED


def test_refused_storage_answers_a700_and_keeps_nothing() -> None:
    with SimulatedPacs(faults=PacsFaults(refuse=Refusal.STORAGE)) as pacs:
        assert store(pacs, mg_image()) == [0xA700]
        assert pacs.received() == []
        assert pacs.stores_refused() == 1


def test_dropped_association_mid_store_stores_nothing_then_recovers() -> None:
    image = mg_image()
    with SimulatedPacs(faults=PacsFaults(drop_stores=1), timeouts=FAST) as pacs:
        assoc = associate(pacs)
        status = assoc.send_c_store(image)
        assert "Status" not in status  # no response: the association was aborted
        assert pacs.wait_for(lambda: not assoc.is_established, TIMEOUT_S)
        assert assoc.is_aborted
        assert pacs.received() == []
        assert store(pacs, image) == [0x0000]
        assert [o.sop_instance_uid for o in pacs.received()] == [image.SOPInstanceUID]
        assert pacs.stores_dropped() == 1


def test_down_refuses_connections_and_up_serves_again_on_the_same_port() -> None:
    image = mg_image()
    with SimulatedPacs(timeouts=FAST) as pacs:
        address = pacs.address
        pacs.down()
        host, port = address
        assoc = scu().associate(host, port, ae_title="PACS", evt_handlers=NODELAY_HANDLERS)
        assert not assoc.is_established
        pacs.up()
        assert pacs.address == address
        assert store(pacs, image) == [0x0000]


def test_undeliverable_commitment_report_is_recorded_as_such() -> None:
    image = mg_image()
    # A port nobody listens on: bind one, read it, close it.
    probe = AE()
    probe.add_supported_context("1.2.840.10008.1.1")
    server = probe.start_server(("127.0.0.1", 0), block=False)
    dead_port = int(server.server_address[1])
    probe.shutdown()
    target = ("127.0.0.1", dead_port, "GALACTO")
    with SimulatedPacs(
        commitment_target=target, timeouts=FAST, delivery_attempts=2, delivery_backoff_s=0.05
    ) as pacs:
        store(pacs, image)
        assoc = associate(pacs)
        try:
            request_commitment(assoc, [(image.SOPClassUID, image.SOPInstanceUID)])
        finally:
            assoc.release()
        assert pacs.wait_for(lambda: pacs.commitment_reports()[0].attempts == 2, TIMEOUT_S)
        report = pacs.commitment_reports()[0]
        assert not report.delivered
        assert pacs.committed() == set()


def test_failure_reasons_follow_the_standard_table(requester: Requester) -> None:
    stored = mg_image()
    target = ("127.0.0.1", requester.port, "GALACTO")
    with SimulatedPacs(commitment_target=target, timeouts=FAST) as pacs:
        store(pacs, stored)
        assoc = associate(pacs)
        try:
            transaction_uid, _ = request_commitment(
                assoc,
                [
                    (XRayRadiationDoseSRStorage, stored.SOPInstanceUID),  # wrong class
                    ("1.2.840.10008.5.1.4.1.1.2", generate_uid()),  # CT: not a class we store
                ],
            )
            request_commitment(
                assoc, [(stored.SOPClassUID, stored.SOPInstanceUID)], transaction_uid
            )
        finally:
            assoc.release()
        reasons = []
        for _ in range(2):
            _type, info, _ae = requester.reports.get(timeout=TIMEOUT_S)
            reasons.append([int(item.FailureReason) for item in info.FailedSOPSequence])
    assert reasons == [
        [FailureReason.CLASS_INSTANCE_CONFLICT, FailureReason.REFERENCED_SOP_CLASS_NOT_SUPPORTED],
        [FailureReason.DUPLICATE_TRANSACTION_UID],
    ]


def test_a_commitment_request_without_references_is_refused() -> None:
    with SimulatedPacs(timeouts=FAST) as pacs:
        assoc = associate(pacs)
        try:
            _uid, status = request_commitment(assoc, [])
            _uid, status_missing_uid = request_commitment(assoc, [(mg_image().SOPClassUID, "")])
        finally:
            assoc.release()
        assert (status, status_missing_uid) == (0x0120, 0x0120)
        assert pacs.commitment_reports() == []
