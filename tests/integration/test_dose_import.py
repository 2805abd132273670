"""`galacto dose import`: vendor-like files and a demo's objects/, as a physicist runs it.

Real files on disk, the real command in a subprocess (and the importer in-process where the
rows are asserted): the right rows, one per irradiation event whatever the number of objects
that report it, nothing added by a second run, every bad file named with its reason.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from acquisition.dose_audit.importer import PARALLEL_FROM_FILES, import_paths
from acquisition.dose_log import MATCHED_BY_TECHNIQUE, DoseLog
from tests.dose_factories import (
    MG_FOR_PROCESSING,
    Exposure,
    mg_image,
    rdsr,
)

STUDY = "1.2.826.0.1.3680043.8.498.1010"


def galacto(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acquisition", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def rows(db: Path) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM exposure ORDER BY id")]


def image_uids(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT sop_instance_uid, exposure_id FROM exposure_image"))


def ge_image(exposure: Exposure) -> Dataset:
    """GE: Organ Dose in dGy (×100 → mGy), Rh/Rh."""
    ds = mg_image(exposure, study_uid=STUDY)
    ds.Manufacturer, ds.ManufacturerModelName = "GE MEDICAL SYSTEMS", "Senographe Pristina"
    ds.AnodeTargetMaterial = "RHODIUM"
    ds.OrganDose = "0.0147"  # dGy
    return ds


def hologic_rdsr(exposures: list[Exposure]) -> Dataset:
    """Hologic Selenia Dimensions: the Exposure (113736) unit written ``uAs``."""
    ds = rdsr(exposures, study_uid=STUDY)
    ds.Manufacturer, ds.ManufacturerModelName = "HOLOGIC, Inc.", "Selenia Dimensions"
    for event in ds.ContentSequence:
        for item in event.ContentSequence:
            if item.ConceptNameCodeSequence[0].CodeValue == "113736":
                item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue = "uAs"
    return ds


@pytest.fixture
def vendor_files(tmp_path: Path) -> tuple[Path, list[Exposure]]:
    folder = tmp_path / "historic"
    cc = Exposure(laterality="R", view="CC", agd_mgy=1.47)
    mlo = Exposure(laterality="R", view="MLO", agd_mgy=1.61, exposure_uas=95000.0)
    save(ge_image(cc), folder / "unit1" / "cc.dcm")
    legacy = mg_image(mlo, study_uid=STUDY, legacy_codes=True)  # SRT view codes
    save(legacy, folder / "unit1" / "nested" / "mlo.dcm")
    save(hologic_rdsr([cc, mlo]), folder / "unit1" / "rdsr.dcm")
    return folder, [cc, mlo]


def test_images_and_the_units_rdsr_become_one_row_per_event(
    tmp_path: Path, vendor_files: tuple[Path, list[Exposure]]
) -> None:
    folder, (cc, mlo) = vendor_files
    db = tmp_path / "galacto.db"
    with DoseLog(db) as log:
        first = import_paths(log, [folder], recursive=True)
    assert (first.files, first.records, first.rows_added, first.merged) == (3, 4, 2, 2)
    assert not first.bad and not first.skipped
    by_event = {row["irradiation_event_uid"]: row for row in rows(db)}
    assert set(by_event) == {cc.irradiation_event_uid, mlo.irradiation_event_uid}
    ge, legacy = by_event[cc.irradiation_event_uid], by_event[mlo.irradiation_event_uid]
    assert ge["sources"] == legacy["sources"] == "image_header,rdsr"
    assert ge["agd_reported_mgy"] == pytest.approx(1.47)  # 0.0147 dGy, not 0.0147 mGy
    assert legacy["view_name"] == "MLO"  # R-10226 (SRT) read as SNOMED CT 399368009
    assert legacy["exposure_uas"] == pytest.approx(95000.0)  # Hologic's uAs: read, not lost
    assert "unit 'uAs' read as UCUM 'uA.s'" in legacy["review_reasons"]

    with DoseLog(db) as log:  # idempotent
        second = import_paths(log, [folder], recursive=True)
    assert (second.rows_added, second.merged) == (0, 4)
    assert [r["id"] for r in rows(db)] == [ge["id"], legacy["id"]]


def test_without_recursive_only_the_folders_own_files(
    tmp_path: Path, vendor_files: tuple[Path, list[Exposure]]
) -> None:
    folder, _ = vendor_files
    with DoseLog(tmp_path / "galacto.db") as log:
        summary = import_paths(log, [folder / "unit1"])
    assert summary.files == 2  # cc.dcm and rdsr.dcm, not nested/mlo.dcm
    assert summary.rows_added == 2  # the RDSR names both exposures


def older_unit_pair(exposure: Exposure, *, with_source: bool) -> tuple[Dataset, Dataset]:
    """For Processing and For Presentation images of one exposure, no Irradiation Event UID."""
    processing = mg_image(exposure, study_uid=STUDY, sop_class=MG_FOR_PROCESSING)
    presentation = mg_image(exposure, study_uid=STUDY)
    presentation.SOPInstanceUID = generate_uid()
    presentation.file_meta.MediaStorageSOPInstanceUID = presentation.SOPInstanceUID
    for ds in (processing, presentation):
        del ds.IrradiationEventUID
        ds.Manufacturer, ds.DeviceSerialNumber = "Older Unit Co", "OLD-7"
    if with_source:
        source = Dataset()
        source.ReferencedSOPClassUID = MG_FOR_PROCESSING
        source.ReferencedSOPInstanceUID = processing.SOPInstanceUID
        presentation.SourceImageSequence = Sequence([source])
    return processing, presentation


@pytest.mark.parametrize("presentation_first", [False, True], ids=["processing first", "after"])
def test_for_processing_and_for_presentation_are_one_exposure(
    tmp_path: Path, presentation_first: bool
) -> None:
    folder = tmp_path / "older"
    linked = Exposure(laterality="L", view="CC", kvp=28.0)
    unlinked = Exposure(laterality="L", view="MLO", kvp=30.0)
    files = []
    for name, exposure, with_source in (("a", linked, True), ("b", unlinked, False)):
        processing, presentation = older_unit_pair(exposure, with_source=with_source)
        pair = [(presentation, "2-pres"), (processing, "1-proc")]
        if not presentation_first:
            pair.reverse()
        files += [save(ds, folder / f"{name}-{order}.dcm") for ds, order in pair]
    tomo = mg_image(Exposure(laterality="L", view="CC"), study_uid=STUDY)
    tomo.ImageType = ["DERIVED", "PRIMARY", "", "", "GENERATED_2D"]
    files.append(save(tomo, folder / "c-synthesised.dcm"))

    db = tmp_path / "galacto.db"
    with DoseLog(db) as log:
        summary = import_paths(log, files)
    assert summary.rows_added == 2, "one exposure per pair; the synthesised 2D image none"
    ((skipped, reason),) = summary.skipped
    assert skipped == str(files[-1]) and "GENERATED_2D" in reason
    found = rows(db)
    assert sorted(r["kvp"] for r in found) == [28.0, 30.0]
    images = image_uids(db)
    assert len(images) == 4 and len(set(images.values())) == 2
    by_kv = {r["kvp"]: r for r in found}
    assert MATCHED_BY_TECHNIQUE in by_kv[30.0]["review_reasons"]  # no shared UID: by technique
    assert MATCHED_BY_TECHNIQUE not in by_kv[28.0]["review_reasons"]  # the Source Image Seq.

    with DoseLog(db) as log:
        assert import_paths(log, files).rows_added == 0


def test_a_dt_offset_and_the_timezone_offset_are_kept(tmp_path: Path) -> None:
    with_dt_offset = mg_image(Exposure(), study_uid=STUDY)
    with_dt_offset.AcquisitionDateTime = "20261125101500.250+0100"
    with_element = mg_image(Exposure(), study_uid=STUDY)
    with_element.TimezoneOffsetFromUTC = "-0500"
    bad_offset = mg_image(Exposure(), study_uid=STUDY)
    bad_offset.TimezoneOffsetFromUTC = "+2500"
    paths = [
        save(ds, tmp_path / f"{n}.dcm")
        for n, ds in enumerate((with_dt_offset, with_element, bad_offset))
    ]
    db = tmp_path / "galacto.db"
    with DoseLog(db) as log:
        import_paths(log, paths)
    found = {r["sop_instance_uid"]: r for r in rows(db)}
    first = found[with_dt_offset.SOPInstanceUID]
    assert first["acquisition_datetime"] == "2026-11-25T10:15:00.250"  # the unit's local time
    assert first["timezone_offset_from_utc"] == "+0100"
    assert found[with_element.SOPInstanceUID]["timezone_offset_from_utc"] == "-0500"
    third = found[bad_offset.SOPInstanceUID]
    assert third["timezone_offset_from_utc"] is None
    assert "unreadable timezone_offset_from_utc" in third["review_reasons"]


def test_bad_files_are_named_and_the_exit_codes(
    tmp_path: Path, vendor_files: tuple[Path, list[Exposure]]
) -> None:
    folder, _ = vendor_files
    bad = folder / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not DICOM\n")
    whole = save(mg_image(Exposure(), study_uid=STUDY), bad / "whole.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(whole[:700])  # cut inside the header
    ct = mg_image(Exposure(), study_uid=STUDY)
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    save(ct, bad / "ct.dcm")
    db = tmp_path / "galacto.db"
    missing = tmp_path / "nowhere"

    result = galacto(
        "dose", "import", str(folder), str(missing), "--recursive", "--database", str(db)
    )
    assert result.returncode == 0, result.stderr
    assert f"{bad / 'notes.txt'}: not a DICOM file" in result.stderr
    assert f"{bad / 'truncated.dcm'}: unreadable DICOM" in result.stderr
    assert f"{bad / 'ct.dcm'}: not a dose object" in result.stderr
    assert f"{missing}: no such file or folder" in result.stderr
    summary = result.stderr.strip().splitlines()[-1]  # one line: not a terminal
    assert "4 bad" in summary and "row(s) added" in summary
    assert "\r" not in result.stderr
    assert len(rows(db)) == 3  # whole.dcm, and the two exposures of the vendor files

    strict = galacto(
        "dose", "import", str(folder), "--recursive", "--strict", "--database", str(db)
    )
    assert strict.returncode == 1
    assert "0 row(s) added" in strict.stderr
    good = galacto("dose", "import", str(folder / "unit1"), "--strict", "--database", str(db))
    assert good.returncode == 0, good.stderr

    not_a_database = tmp_path / "not.db"
    not_a_database.write_text("plain text, not SQLite")
    broken = galacto("dose", "import", str(folder), "--database", str(not_a_database))
    assert broken.returncode == 2
    assert str(not_a_database) in broken.stderr
    assert galacto("dose", "import", "--database", str(db)).returncode == 2  # no PATH


def test_reading_processes_give_what_one_process_gives(tmp_path: Path) -> None:
    """Many files are read by worker processes (one per CPU) while this process writes: the
    rows, their order, the counts and the bad files named are those of one process reading
    them all; and the counts are the table's (no row counted twice, none missed)."""
    folder = tmp_path / "objects"
    exams = PARALLEL_FROM_FILES // 5 + 2
    for exam in range(exams):
        study = f"{STUDY}.{exam}"
        exposures = [
            Exposure(laterality="L", view=view, acquired=f"202603{exam % 28 + 1:02d}1000{i}0")
            for i, view in enumerate(("CC", "ML", "CC", "ML"))
        ]
        for i, exposure in enumerate(exposures):
            save(mg_image(exposure, study_uid=study), folder / f"{exam:03d}-{i}.dcm")
        save(rdsr(exposures, study_uid=study), folder / f"{exam:03d}-r.dcm")
    (folder / "050-notes.dcm").write_text("not DICOM\n")
    assert len(list(folder.iterdir())) >= PARALLEL_FROM_FILES
    imported = {}
    for processes in (1, 2):
        db = tmp_path / f"{processes}.db"
        with DoseLog(db) as log:
            summary = import_paths(log, [folder], processes=processes)
        assert (summary.rows_added, summary.merged) == (
            len(rows(db)),
            summary.records - len(rows(db)),
        )
        imported[processes] = (summary.bad, summary.rows_added, summary.merged, rows(db))
    by_one, by_two = imported[1], imported[2]
    assert (
        by_two[:3]
        == by_one[:3]
        == (
            [(str(folder / "050-notes.dcm"), "not a DICOM file (no DICM prefix)")],
            exams * 4,
            exams * 4,
        )
    )
    stamps = ("created_at", "updated_at")
    assert [{k: v for k, v in r.items() if k not in stamps} for r in by_two[3]] == [
        {k: v for k, v in r.items() if k not in stamps} for r in by_one[3]
    ]


@pytest.mark.timeout(150)
def test_a_demos_objects_import_into_the_rows_the_demo_logged(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    ran = galacto("demo", "--auto", "--json", "--time-scale", "60", "--data-dir", str(demo))
    assert ran.returncode == 0, ran.stderr
    final = json.loads(ran.stdout.splitlines()[-1])
    db = tmp_path / "imported.db"
    result = galacto(
        "dose", "import", str(demo / "objects"), "--recursive", "--strict", "--database", str(db)
    )
    assert result.returncode == 0, result.stderr
    fields = ("irradiation_event_uid", "laterality", "view_name", "kvp", "is_magnified")
    live = {tuple(r[f] for f in fields): r for r in rows(demo / "galacto.db")}
    imported = {tuple(r[f] for f in fields): r for r in rows(db)}
    assert imported.keys() == live.keys()
    for key, row in imported.items():  # the image's and the RDSR's digits differ a little
        assert row["agd_reported_mgy"] == pytest.approx(live[key]["agd_reported_mgy"], rel=1e-4)
    assert len(imported) == len(final["exposures"]) == 5
    assert all("rdsr" in r["sources"] and "image_header" in r["sources"] for r in rows(db))
    again = galacto("dose", "import", str(demo / "objects"), "--recursive", "--database", str(db))
    assert again.returncode == 0 and "0 row(s) added" in again.stderr
    assert len(rows(db)) == 5
