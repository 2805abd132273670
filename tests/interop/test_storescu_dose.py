"""DCMTK storescu (a peer we did not write) sends MG images and an RDSR to our Storage SCP."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from acquisition.dose_log import DoseLog
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from tests.dose_factories import Exposure, mg_image, rdsr

pytestmark = pytest.mark.interop

STUDY = "1.2.826.0.1.3680043.8.498.3"

# Reference values (mGy) the dose table must show after the transfer.
REFERENCE = [
    Exposure(laterality="R", view="CC", agd_mgy=1.05, esak_mgy=4.8),
    Exposure(laterality="R", view="MLO", agd_mgy=1.31, esak_mgy=6.1),
    Exposure(laterality="L", view="ML", agd_mgy=2.62, esak_mgy=10.4, magnified=True),
]


def test_storescu_images_and_rdsr_reach_the_dose_table(tmp_path: Path) -> None:
    storescu = shutil.which("storescu")
    if storescu is None:
        pytest.skip("DCMTK storescu not installed")
    files = []
    for index, exposure in enumerate(REFERENCE):
        path = tmp_path / f"image{index}.dcm"
        mg_image(exposure, study_uid=STUDY).save_as(path, enforce_file_format=True)
        files.append(path)
    report = tmp_path / "rdsr.dcm"
    rdsr(REFERENCE, study_uid=STUDY).save_as(report, enforce_file_format=True)
    files.append(report)

    db_path = tmp_path / "galacto.sqlite"
    with SqliteMppsStore(db_path) as store, DoseLog(db_path) as dose_log:
        server = UnitFacingServer(
            None,
            store,
            dose_log,
            port=0,
            storage_dir=tmp_path / "objects",
            allowed_calling_aes=("MAMMO",),
        )
        host, port = server.start()
        try:
            result = subprocess.run(
                [
                    storescu,
                    "-aet",
                    "MAMMO",
                    "-aec",
                    "GALACTO",
                    "-to",
                    "10",
                    "-ta",
                    "10",
                    "-td",
                    "10",
                    host,
                    str(port),
                    *map(str, files),
                ],
                env={**os.environ, "TCP_NODELAY": "1"},
                check=False,  # the return code is asserted below, with storescu's stderr
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.stop()
        assert result.returncode == 0, result.stderr
        rows = dose_log.list_exposures(accession="ACC1")

    assert len(rows) == len(REFERENCE)
    for row, exposure in zip(rows, REFERENCE, strict=True):
        assert row["agd_reported_mgy"] == pytest.approx(exposure.agd_mgy)
        assert row["esak_mgy"] == pytest.approx(exposure.esak_mgy)
        assert row["laterality"] == exposure.laterality
        assert row["sources"] == "image_header,rdsr"
        assert row["station_ae"] == "MAMMO"
    assert sorted(p.name for p in (tmp_path / "objects" / STUDY).iterdir()) == sorted(
        [*(f"{e.sop_instance_uid}.dcm" for e in REFERENCE), f"{rdsr_uid(report)}.dcm"]
    )


def rdsr_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
