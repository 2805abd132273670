"""DCMTK ``storescu`` (a Storage SCU nobody here wrote) against the simulated PACS."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_nodes.network import Timeouts
from simulators.pacs import SimulatedPacs
from tests.integration.test_pacs_sim import mg_image

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK storescu not installed"),
]

FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def test_storescu_objects_are_kept_unchanged(tmp_path: Path) -> None:
    image = mg_image()
    source = tmp_path / "image.dcm"
    image.save_as(source, enforce_file_format=True)
    with SimulatedPacs(storage_dir=tmp_path / "pacs", timeouts=FAST) as pacs:
        command = ["storescu", "-aet", "GALACTO", "-aec", "PACS", "-to", "5", "-ta", "5"]
        command += ["-td", "10", "127.0.0.1", str(pacs.address[1]), str(source)]
        env = {**os.environ, "TCP_NODELAY": "1"}
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=30, env=env
        )
        assert result.returncode == 0, result.stderr
        [kept] = pacs.received()
    assert kept.calling_ae == "GALACTO"
    assert kept.path is not None
    stored = dcmread(kept.path)
    assert stored.SOPInstanceUID == image.SOPInstanceUID
    assert stored.PatientName == "Müller^Anna"
    assert stored == dcmread(source)  # every data element as sent (file meta aside)
