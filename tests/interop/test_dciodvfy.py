"""dciodvfy (dicom3tools) validates every kind of object the simulated unit creates.

An ``Error`` line fails the test; warnings are printed (``pytest -rA`` or ``-s`` shows them)
and listed in docs/_parts/unit-simulator.md. dciodvfy checks the IOD and its modules but not
the SR content tree: for the RDSR, DCMTK's ``dsrdump`` additionally checks the relationship
constraints of the X-Ray Radiation Dose SR IOD (PS3.3 A.35.8.3.1), and tests/unit/test_rdsr.py
checks the template rows one by one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from simulators.unit_images import (
    add_pre_exposure_rows,
    add_zero_for_other_breast,
    sample_mg_image,
    sample_rdsr,
    to_legacy_codes,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed"),
]
needs_dsrdump = pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK not installed")


def legacy(ds: Dataset) -> Dataset:
    assert to_legacy_codes(ds) > 0
    return ds


def with_quirks(ds: Dataset) -> Dataset:
    assert add_pre_exposure_rows(ds) > 0
    assert add_zero_for_other_breast(ds)
    return ds


OBJECTS: dict[str, Callable[[], Dataset]] = {
    "mg-pre-contrast-cc": lambda: sample_mg_image(laterality="L", view="CC"),
    "mg-pre-contrast-ml-mag": lambda: sample_mg_image(laterality="R", view="ML", magnified=True),
    "mg-post-contrast-cc-mag": lambda: sample_mg_image(
        view="CC", magnified=True, post_contrast=True
    ),
    "mg-post-contrast-mlo": lambda: sample_mg_image(laterality="R", view="MLO", post_contrast=True),
    "mg-mo-rh-vendor": lambda: sample_mg_image(vendor="mo-rh", view="XCCL", post_contrast=True),
    "mg-full-size": lambda: sample_mg_image(full_size=True),
    "mg-legacy-srt-codes": lambda: legacy(sample_mg_image(view="ML", magnified=True)),
    "rdsr-w-rh": sample_rdsr,
    "rdsr-mo-rh": lambda: sample_rdsr(vendor="mo-rh"),
    "rdsr-legacy-srt-codes": lambda: legacy(sample_rdsr()),
    "rdsr-pre-exposure-both-breasts": lambda: with_quirks(sample_rdsr()),
}


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) reported by dciodvfy for one file."""
    done = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    lines = (done.stdout + done.stderr).splitlines()
    errors = [line for line in lines if line.startswith("Error")]
    warnings = [line for line in lines if line.startswith("Warning")]
    return errors, warnings


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_no_errors(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.dcm"
    OBJECTS[name]().save_as(path, enforce_file_format=True)
    errors, warnings = dciodvfy(path)
    for warning in sorted(set(warnings)):
        print(f"{name}: {warning}")
    assert errors == []


@pytest.mark.parametrize(
    ("build", "attribute"),
    [(sample_mg_image, "ViewCodeSequence"), (sample_rdsr, "CompletionFlag")],
)
def test_the_check_can_fail(build: Callable[[], Dataset], attribute: str, tmp_path: Path) -> None:
    """A negative control: drop a Type 1 attribute and dciodvfy must report an Error."""
    ds = build()
    delattr(ds, attribute)
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    errors, _ = dciodvfy(path)
    assert any(attribute in e for e in errors), errors


def dsrdump_errors(path: Path) -> list[str]:
    """``E:`` lines of DCMTK's dsrdump: content tree violations of the SR IOD's constraints."""
    done = subprocess.run(
        ["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("E:")]


@needs_dsrdump
@pytest.mark.parametrize("name", sorted(n for n in OBJECTS if n.startswith("rdsr")))
def test_rdsr_content_tree_satisfies_dcmtk(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.dcm"
    OBJECTS[name]().save_as(path, enforce_file_format=True)
    assert dsrdump_errors(path) == []


@needs_dsrdump
def test_dsrdump_sees_a_forbidden_relationship(tmp_path: Path) -> None:
    ds = sample_rdsr()
    event = next(
        i
        for i in ds.ContentSequence
        if i.ValueType == "CONTAINER"
        and "ContentSequence" in i
        and i.ConceptNameCodeSequence[0].CodeValue == "113706"
    )
    num = next(i for i in event.ContentSequence if i.ValueType == "NUM")
    num.RelationshipType = "HAS PROPERTIES"  # CONTAINER may not have properties (A.35.8.3.1)
    path = tmp_path / "broken-sr.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert any("Invalid by-value Relationship" in e for e in dsrdump_errors(path))
