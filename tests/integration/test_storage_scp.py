"""Storage SCP over loopback: dose rows in mGy, statuses for bad data, durable before the RSP."""

from __future__ import annotations

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
from pydicom.uid import generate_uid
from pynetdicom import _config

from acquisition.dose_log import DoseLog
from dicom_nodes.mpps_store import SqliteMppsStore
from dicom_nodes.network import NODELAY_HANDLERS
from dicom_nodes.server import UnitFacingServer
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


def test_resent_image_is_one_row(peer: Peer, sender: Sender) -> None:
    exposure = Exposure()
    for _ in range(2):
        assert sender.store(mg_image(exposure, study_uid=STUDY)) == 0
    assert len(peer.dose_log.list_exposures()) == 1


def test_works_when_chunked_receive_was_switched_off(
    peer: Peer, sender: Sender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    exposure = Exposure()
    assert sender.store(mg_image(exposure, study_uid=STUDY)) == 0
    assert (peer.objects / STUDY / f"{exposure.sop_instance_uid}.dcm").exists()
    assert [p.name for p in peer.objects.iterdir()] == [STUDY]  # no temporary file left
    (row,) = peer.dose_log.list_exposures()
    assert row["agd_reported_mgy"] == pytest.approx(exposure.agd_mgy)
