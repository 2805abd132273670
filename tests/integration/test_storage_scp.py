"""Storage SCP over loopback: dose rows in mGy, statuses for bad data, durable before the RSP."""

from __future__ import annotations

import contextlib
import copy
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, generate_uid
from pynetdicom import _config, evt

from acquisition.dose_log import DoseLog
from dicom_nodes.network import NODELAY_HANDLERS
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.received_objects import ReceivedObjects
from dicom_nodes.unit_facing.server import UnitFacingServer
from dose.totals import per_breast_totals
from tests.dose_factories import (
    MG_FOR_PRESENTATION,
    MG_FOR_PROCESSING,
    XRAY_RDSR,
    Exposure,
    mg_image,
    rdsr,
    scu_ae,
)
from tests.waiting import eventually

STUDY = "1.2.826.0.1.3680043.8.498.2"


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Peer:
    host: str
    port: int
    db_path: Path
    objects: Path
    dose_log: DoseLog


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    db_path = tmp_path / "galacto.sqlite"
    store = SqliteMppsStore(db_path)
    dose_log = DoseLog(db_path)
    server = UnitFacingServer(None, store, dose_log, port=0, storage_dir=tmp_path / "objects")
    host, port = server.start()
    try:
        yield Peer(host, port, db_path, tmp_path / "objects", dose_log)
    finally:
        server.stop()
        dose_log.close()
        store.close()


class Sender:
    def __init__(self, peer: Peer, *contexts: str) -> None:
        self.ae: Any = scu_ae(*(contexts or (MG_FOR_PRESENTATION, MG_FOR_PROCESSING, XRAY_RDSR)))
        self.assoc = self.ae.associate(
            peer.host, peer.port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS
        )

    def store(self, dataset: Dataset | Path) -> int:
        status = self.assoc.send_c_store(dataset)
        assert "Status" in status, "no C-STORE response"
        return int(status.Status)

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()
        self.ae.shutdown()


@pytest.fixture
def sender(peer: Peer) -> Iterator[Sender]:
    s = Sender(peer)
    assert s.assoc.is_established
    yield s
    s.close()


# Reference values in record units (mGy, µAs, mA, ms, mm, N): what the table must show.
REFERENCE = [
    Exposure(laterality="R", view="CC", agd_mgy=1.23, esak_mgy=5.67, kvp=29),
    Exposure(laterality="R", view="MLO", agd_mgy=1.48, esak_mgy=6.9, kvp=30),
    Exposure(laterality="L", view="ML", agd_mgy=2.75, esak_mgy=11.2, magnified=True, kvp=31),
]


def test_images_then_rdsr_give_mgy_rows(peer: Peer, sender: Sender) -> None:
    for exposure in REFERENCE:
        assert sender.store(mg_image(exposure, study_uid=STUDY)) == 0x0000
    assert sender.store(rdsr(REFERENCE, study_uid=STUDY)) == 0x0000
    rows = peer.dose_log.list_exposures(accession="ACC1")
    assert len(rows) == len(REFERENCE)
    for row, exposure in zip(rows, REFERENCE, strict=True):
        assert row["agd_reported_mgy"] == pytest.approx(exposure.agd_mgy)
        assert row["esak_mgy"] == pytest.approx(exposure.esak_mgy)
        assert row["kvp"] == pytest.approx(exposure.kvp)
        assert row["exposure_uas"] == pytest.approx(exposure.exposure_uas)
        assert row["laterality"] == exposure.laterality
        assert row["sources"] == "image_header,rdsr"
        assert row["station_ae"] == "MAMMO"
        kept = peer.objects / STUDY / f"{exposure.sop_instance_uid}.dcm"
        assert dcmread(kept, stop_before_pixels=True).SOPInstanceUID == exposure.sop_instance_uid
    assert rows[2]["view_modifier_codes"] == "399163009"
    assert rows[2]["magnification_factor"] == pytest.approx(1.8)
    assert per_breast_totals(peer.dose_log.list_exposures("ACC1")).agd_mgy == {
        "L": pytest.approx(2.75),
        "R": pytest.approx(2.71),
    }


def test_row_committed_when_response_arrives(peer: Peer, sender: Sender) -> None:
    exposure = Exposure()
    other = sqlite3.connect(peer.db_path)
    try:
        assert sender.store(mg_image(exposure, study_uid=STUDY)) == 0x0000
        row = other.execute(
            "SELECT agd_reported_mgy FROM exposure WHERE irradiation_event_uid = ?",
            (exposure.irradiation_event_uid,),
        ).fetchone()
    finally:
        other.close()
    assert row is not None and row[0] == pytest.approx(exposure.agd_mgy)


def _file(ds: Dataset, path: Path) -> Path:
    """Write exactly what we built: pydicom's dcmwrite would repair the file meta."""
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, ds.file_meta, enforce_standard=False)
        body = DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = True, False
        write_dataset(body, ds)
        out.write(body.getvalue())
    return path


def _mismatched_instance(tmp_path: Path) -> Path:
    ds = mg_image(Exposure(), study_uid=STUDY)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the request will carry this one
    return _file(ds, tmp_path / "mismatch.dcm")


def _garbage_body(tmp_path: Path) -> Path:
    ds = mg_image(Exposure(), study_uid=STUDY)
    path = tmp_path / "garbage.dcm"
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, ds.file_meta)
        out.write(b"\x08\x00\x16\x00ZZ\x04\x00abcd")  # SOP Class UID with no such VR "ZZ"
    return path


def _unparseable_dose(tmp_path: Path) -> Path:
    ds = mg_image(Exposure(), study_uid=STUDY)
    tag = Tag("OrganDose")
    ds._dict[tag] = RawDataElement(tag, "DS", 4, b"abc ", 0, False, True)
    return _file(ds, tmp_path / "bad-dose.dcm")


def _sr_without_content(tmp_path: Path) -> Path:
    ds = rdsr([Exposure()], study_uid=STUDY)
    del ds.ContentSequence
    return _file(ds, tmp_path / "empty-sr.dcm")


MALFORMED = {
    "instance UID differs from request": (_mismatched_instance, 0xA900),
    "SR without content": (_sr_without_content, 0xA900),
    "unreadable dataset": (_garbage_body, 0xC000),
}


@pytest.mark.parametrize(("build", "expected"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_dataset_status_and_nothing_lost(
    peer: Peer,
    sender: Sender,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: Any,
    expected: int,
) -> None:
    good_before, good_after = Exposure(), Exposure(laterality="L")
    assert sender.store(mg_image(good_before, study_uid=STUDY)) == 0
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file as is
    assert sender.store(build(tmp_path)) == expected
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", False)
    assert sender.store(mg_image(good_after, study_uid=STUDY)) == 0
    rows = peer.dose_log.list_exposures()
    assert [row["sop_instance_uid"] for row in rows] == [
        good_before.sop_instance_uid,
        good_after.sop_instance_uid,
    ]
    assert sorted(p.name for p in (peer.objects / STUDY).iterdir()) == sorted(
        f"{e.sop_instance_uid}.dcm" for e in (good_before, good_after)
    )


def test_unreadable_dose_value_keeps_the_exposure_flagged(
    peer: Peer, sender: Sender, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exposure happened: it is stored and logged, flagged, and the unit gets a warning."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file as is
    path = _unparseable_dose(tmp_path)
    sop_instance_uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    assert sender.store(path) == 0xB007
    (row,) = [
        r for r in peer.dose_log.list_exposures() if r["sop_instance_uid"] == sop_instance_uid
    ]
    assert row["agd_reported_mgy"] is None
    assert "unreadable agd_reported_mgy" in row["review_reasons"]
    assert (peer.objects / STUDY / f"{sop_instance_uid}.dcm").exists()


def test_database_failure_is_out_of_resources(peer: Peer, sender: Sender) -> None:
    peer.dose_log.close()  # every commit now fails
    assert sender.store(mg_image(Exposure(), study_uid=STUDY)) == 0xA700


def test_unknown_sop_class_refused_at_negotiation(peer: Peer) -> None:
    s = Sender(peer, CT_IMAGE_STORAGE, MG_FOR_PRESENTATION)
    try:
        accepted = {cx.abstract_syntax for cx in s.assoc.accepted_contexts}
    finally:
        s.close()
    assert accepted == {MG_FOR_PRESENTATION}


def test_an_identical_resend_is_acknowledged_and_changes_nothing(
    peer: Peer, sender: Sender
) -> None:
    image = mg_image(Exposure(), study_uid=STUDY)
    assert sender.store(image) == 0
    kept = peer.objects / STUDY / f"{image.SOPInstanceUID}.dcm"
    (before,) = peer.dose_log.list_exposures()
    stat_before = kept.stat()
    # Another transfer syntax, a group length and a private tag: still the same object.
    resend = copy.deepcopy(image)
    resend.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    resend.add_new(0x00290010, "LO", "ACME PRIVATE")
    resend.add_new(0x00291001, "LO", "resent")
    resend.add_new(0x00100000, "UL", 0)
    s = Sender(peer)
    try:
        assert s.store(resend) == 0
    finally:
        s.close()
    (after,) = peer.dose_log.list_exposures()
    assert after == before
    assert kept.stat().st_mtime_ns == stat_before.st_mtime_ns  # not even rewritten
    assert not list((peer.objects / "tmp").iterdir())


def _store_with_comment(sender: Sender, dataset: Dataset | Path) -> tuple[int, str]:
    status = sender.assoc.send_c_store(dataset)
    assert "Status" in status, "no C-STORE response"
    return int(status.Status), str(status.get("ErrorComment", ""))


REUSES = {
    "another patient": (lambda ds: setattr(ds, "PatientName", "Other^Patient"), "patient"),
    "other dose values": (lambda ds: setattr(ds, "KVP", 35), "dose"),
    "other pixels": (lambda ds: setattr(ds, "PixelData", b"\x01" * len(ds.PixelData)), "pixel"),
    "another series": (lambda ds: setattr(ds, "SeriesInstanceUID", generate_uid()), "series"),
}


@pytest.mark.parametrize(("change", "named"), REUSES.values(), ids=REUSES.keys())
def test_another_object_under_a_known_uid_is_refused_held_and_replaces_nothing(
    peer: Peer, sender: Sender, change: Any, named: str
) -> None:
    first = mg_image(Exposure(kvp=29), study_uid=STUDY)
    assert sender.store(first) == 0
    kept = peer.objects / STUDY / f"{first.SOPInstanceUID}.dcm"
    kept_bytes = kept.read_bytes()
    (row_before,) = peer.dose_log.list_exposures()

    second = copy.deepcopy(first)
    change(second)
    status, comment = _store_with_comment(sender, second)
    assert status == 0xC010 and "SOP Instance UID reused" in comment and named in comment
    assert "Other^Patient" not in comment

    assert kept.read_bytes() == kept_bytes  # the first version stays
    (row_after,) = peer.dose_log.list_exposures()
    assert row_after == row_before and row_after["kvp"] == 29
    objects = ReceivedObjects(peer.objects / "received.db")  # the default index
    (held,) = objects.items()
    assert held.state == "held" and held.sop_instance_uid == str(first.SOPInstanceUID)
    assert held.calling_ae == "MAMMO" and named in held.reason
    assert Path(held.file).parent == peer.objects / "quarantine"
    assert Path(held.file).stat().st_mode & 0o777 == 0o600
    assert dcmread(held.file, stop_before_pixels=True).SOPInstanceUID == first.SOPInstanceUID
    assert not list((peer.objects / "tmp").iterdir())


def _pixels(change: Any) -> Any:
    def build(tmp_path: Path) -> Path:
        ds = mg_image(Exposure(), study_uid=STUDY)
        change(ds)
        return _file(ds, tmp_path / "pixels.dcm")

    return build


def _cut_inside_pixel_data(tmp_path: Path) -> Path:
    path = _file(mg_image(Exposure(), study_uid=STUDY), tmp_path / "cut.dcm")
    path.write_bytes(path.read_bytes()[:-40])  # the transfer ends inside the pixels
    return path


def _encapsulated(value: bytes) -> Any:
    """An image whose Pixel Data element (undefined length) holds exactly ``value``."""

    def build(tmp_path: Path) -> Path:
        ds = mg_image(Exposure(), study_uid=STUDY)
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        del ds.PixelData
        path = _file(ds, tmp_path / "encapsulated.dcm")
        with path.open("ab") as out:
            out.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff" + value)
        return path

    return build


_ITEM = b"\xfe\xff\x00\xe0"
_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"

PIXEL_REFUSALS = {
    "no Pixel Data": (_pixels(lambda ds: delattr(ds, "PixelData")), "without Pixel Data"),
    "Pixel Data shorter than Rows x Columns": (
        _pixels(lambda ds: setattr(ds, "PixelData", ds.PixelData[:-2])),
        "the header describes",
    ),
    "dataset cut inside its Pixel Data": (_cut_inside_pixel_data, "cut off"),
    "fragments without a delimiter": (
        _encapsulated(_ITEM + b"\0\0\0\0" + _ITEM + b"\x04\0\0\0abcd"),
        "cut off",
    ),
    "a fragment longer than the data": (
        _encapsulated(_ITEM + b"\0\0\0\0" + _ITEM + b"\xff\0\0\0abcd" + _END),
        "cut off",
    ),
    "no fragment after the offset table": (_encapsulated(_ITEM + b"\0\0\0\0" + _END), "0 frag"),
    "not an item": (_encapsulated(b"\x08\x00\x10\x00\0\0\0\0" + _END), "malformed"),
}


@pytest.mark.parametrize(("build", "named"), PIXEL_REFUSALS.values(), ids=PIXEL_REFUSALS.keys())
def test_an_image_without_whole_pixel_data_is_refused_and_nothing_kept(
    peer: Peer,
    sender: Sender,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build: Any,
    named: str,
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the file as is
    path = build(tmp_path)
    ae: Any = scu_ae()
    ae.add_requested_context(MG_FOR_PRESENTATION, ExplicitVRLittleEndian)
    ae.add_requested_context(MG_FOR_PRESENTATION, JPEGLSLossless)
    assoc = ae.associate(peer.host, peer.port, ae_title="GALACTO")
    try:
        status = assoc.send_c_store(path)
    finally:
        assoc.release()
        ae.shutdown()
    assert int(status.Status) == 0xC011
    assert named in str(status.ErrorComment)
    assert not peer.dose_log.list_exposures()
    assert not (peer.objects / STUDY).exists()
    assert not list((peer.objects / "tmp").iterdir())
    assert not list(peer.objects.rglob("*.partial"))


@pytest.mark.parametrize(
    ("syntax", "length"), [(ExplicitVRLittleEndian, 65), (ImplicitVRLittleEndian, 70_000)]
)
def test_a_value_longer_than_its_vr_is_refused(
    peer: Peer, sender: Sender, syntax: str, length: int
) -> None:
    image = mg_image(Exposure(), study_uid=STUDY)
    image.file_meta.TransferSyntaxUID = syntax
    image.StudyDescription = "x" * length  # LO: 64 characters at most
    status, comment = _store_with_comment(sender, image)
    assert status == 0xC012 and comment == "value too long: (0008,1030) StudyDescription"
    assert not peer.dose_log.list_exposures()
    image.StudyDescription = "x" * 64
    assert sender.store(image) == 0


def test_received_data_is_written_inside_the_storage_folder(peer: Peer) -> None:
    """pynetdicom's chunked receive file is in ``<storage_dir>/tmp``, and a transfer cut off
    leaves nothing behind."""
    seen: list[list[str]] = []
    big = mg_image(Exposure(), study_uid=STUDY, rows=3000, columns=3000)  # 18 MB

    data_pdus: list[int] = []

    def after_pdu(event: Any) -> None:
        if type(event.pdu).__name__ != "P_DATA_TF" or seen:
            return
        data_pdus.append(1)
        if len(data_pdus) == 3:  # mid-transfer: the SCP has begun writing the dataset
            eventually(lambda: any((peer.objects / "tmp").iterdir()), 10.0)
            seen.append([p.name for p in (peer.objects / "tmp").iterdir()])
            sock = event.assoc.dul.socket.socket  # the link drops mid-transfer
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    ae: Any = scu_ae(MG_FOR_PRESENTATION)
    ae.maximum_pdu_size = 16384
    assoc = ae.associate(
        peer.host, peer.port, ae_title="GALACTO", evt_handlers=[(evt.EVT_PDU_SENT, after_pdu)]
    )
    try:
        status = assoc.send_c_store(big)
    finally:
        if assoc.is_established:
            assoc.abort()
        ae.shutdown()
    assert "Status" not in status  # no response: nothing was acknowledged
    assert seen and seen[0][0].endswith(".dcm")
    assert eventually(lambda: not list((peer.objects / "tmp").iterdir()), 10.0)
    assert not peer.dose_log.list_exposures()


def test_what_a_crash_left_is_cleaned_at_start_up(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    (objects / "tmp").mkdir(parents=True)
    (objects / "tmp" / "tmpabc.dcm").write_bytes(b"patient data, never answered")
    (objects / STUDY).mkdir()
    (objects / STUDY / "1.2.3.partial").write_bytes(b"")
    with DoseLog(tmp_path / "g.db") as dose_log, SqliteMppsStore(tmp_path / "g.db") as store:
        UnitFacingServer(None, store, dose_log, port=0, storage_dir=objects).stop()
    assert not list((objects / "tmp").iterdir())
    assert not list(objects.rglob("*.partial"))


def test_works_when_chunked_receive_was_switched_off(
    peer: Peer, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    exposure = Exposure()
    assert sender.store(mg_image(exposure, study_uid=STUDY)) == 0
    assert (peer.objects / STUDY / f"{exposure.sop_instance_uid}.dcm").exists()
    assert not list((peer.objects / "tmp").iterdir())  # no temporary file left
    (row,) = peer.dose_log.list_exposures()
    assert row["agd_reported_mgy"] == pytest.approx(exposure.agd_mgy)
