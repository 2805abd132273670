"""Our Storage SCU (the outbox) against DCMTK's storescp, a peer nobody here wrote.

storescp cannot bind port 0: we pick a free port by binding one, closing it, and retrying on
the rare bind race. It runs with ``TCP_NODELAY=1`` (dicom.md §2).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.outbox import State
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts
from tests.peers import dcmtk_server

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK not installed"),
]

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=10.0, network_s=10.0)
MG = "1.2.840.10008.5.1.4.1.1.1.2"
RDSR = "1.2.840.10008.5.1.4.1.1.88.67"


@dataclass
class Storescp:
    port: int
    directory: Path


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[Storescp]:
    received = tmp_path / "received"
    received.mkdir()
    with dcmtk_server(
        lambda port: ["storescp", "-aet", "STORESCP", "-od", str(received), "-uf", str(port)]
    ) as port:
        yield Storescp(port, received)


def write_object(directory: Path, sop_class: str, syntax: str, rows: int = 64) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Müller^Anna"
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "MG" if sop_class == MG else "SR"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if sop_class == MG:
        ds.Rows = ds.Columns = rows
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * (rows * rows * 2 // 256)
    path = directory / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_objects_arrive_byte_for_byte_in_their_own_transfer_syntax(
    storescp: Storescp, tmp_path: Path
) -> None:
    sources = [
        write_object(tmp_path, MG, ExplicitVRLittleEndian, rows=512),
        write_object(tmp_path, MG, ImplicitVRLittleEndian),
        write_object(tmp_path, RDSR, ExplicitVRLittleEndian),
    ]
    peer = Peer("127.0.0.1", storescp.port, "STORESCP", timeouts=FAST)
    with Outbox(tmp_path / "galacto.db", {"pacs": peer}) as outbox:
        uids = [outbox.enqueue_store(path) for path in sources]
        outbox.run_once()
        assert [m.state for m in outbox.messages()] == [State.SENT] * 3
    for uid, source in zip(uids, sources, strict=True):
        (stored,) = storescp.directory.glob(f"*{uid}*")
        original, received = dcmread(source), dcmread(stored)
        assert received.SOPInstanceUID == uid
        assert received.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert received.get("PixelData") == original.get("PixelData")
        assert str(received.PatientName) == "Müller^Anna"
