"""dciodvfy and dsrdump validate the objects the *controller* writes during an exam.

The scripted demo exam runs once (a real subprocess, as `make demo AUTO=1`); then every object
the controller created — the exam's X-Ray Radiation Dose SR under ``objects/created`` and the
copies it forwards under ``objects/forward`` — is
checked, and so is every copy it forwards (coerced to the RIS's identity): no ``Error`` from
dciodvfy, no ``E:`` from DCMTK's dsrdump for an SR content tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.interop.test_dciodvfy import dciodvfy, dsrdump_errors

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed"),
    pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK not installed"),
]


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("demo")
    demo = [sys.executable, "-m", "acquisition", "demo", "--auto", "--json", "--time-scale", "60"]
    done = subprocess.run(
        [*demo, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return data_dir / "objects"


def created(objects: Path, folder: str) -> list[Path]:
    found = sorted((objects / folder).rglob("*.dcm"))
    assert found, f"the controller wrote nothing under {folder}/"
    return found


def test_the_exam_dose_report_is_valid(objects: Path) -> None:
    (report,) = created(objects, "created")
    assert dcmread(report, stop_before_pixels=True).Modality == "SR"
    errors, warnings = dciodvfy(report)
    for warning in sorted(set(warnings)):
        print(f"exam RDSR: {warning}")
    assert errors == []
    assert dsrdump_errors(report) == []


def test_the_forwarded_copies_are_valid(objects: Path) -> None:
    """Every copy forwarded to the PACS is coerced to the RIS's identity (and the post-contrast
    images completed with their Contrast/Bolus module): each still a valid object."""
    copies = created(objects, "forward")
    modalities = sorted(str(dcmread(c, stop_before_pixels=True).Modality) for c in copies)
    assert modalities == ["MG"] * 5 + ["SR"] * 3  # the five images, the unit's dose reports
    completed = [c for c in copies if "ContrastBolusAgent" in dcmread(c, stop_before_pixels=True)]
    assert len(completed) == 3  # CC and ML after injection 1, ML after injection 2
    for copy in copies:
        errors, warnings = dciodvfy(copy)
        for warning in sorted(set(warnings)):
            print(f"{copy.name}: {warning}")
        assert errors == [], copy.name
        if dcmread(copy, stop_before_pixels=True).Modality == "SR":
            assert dsrdump_errors(copy) == [], copy.name
