"""`galacto dose list|export` and `galacto journal verify`, as physicists run them."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from acquisition.dose_log import DoseLog
from acquisition.journal import Journal
from dicom_nodes.datasets.dose_extract import from_image_header
from simulators.unit_images import sample_mg_image


def galacto(
    *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acquisition", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


@pytest.fixture
def dose_db(tmp_path: Path) -> tuple[Path, list[float]]:
    db = tmp_path / "galacto.db"
    images = [
        sample_mg_image(seed=1, laterality="L", view="CC"),
        sample_mg_image(seed=2, laterality="L", view="ML", magnified=True),
        sample_mg_image(seed=3, laterality="R", view="CC"),
    ]
    records = [from_image_header(ds) for ds in images]
    with DoseLog(db) as log:
        log.record(records)
    # Organ Dose is in dGy in the header: the log holds mGy.
    agd_mgy = [float(ds.OrganDose) * 100 for ds in images]
    return db, agd_mgy


def test_dose_list_json_shows_mgy_and_per_breast_totals(dose_db: tuple[Path, list[float]]) -> None:
    db, agd = dose_db
    with DoseLog(db) as log:
        accession = log.list_exposures()[0]["accession"]
    result = galacto("dose", "list", "--database", str(db), "--exam", accession, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = doc["exposures"]
    assert {row["accession"] for row in rows} == {accession}
    assert len(rows) == 3  # the sample images share one study
    assert sorted(row["agd_reported_mgy"] for row in rows) == pytest.approx(sorted(agd))
    by_side = {"L": agd[0] + agd[1], "R": agd[2]}
    assert doc["agd_total_mgy"] == pytest.approx(by_side)


def test_dose_list_text(dose_db: tuple[Path, list[float]]) -> None:
    db, _ = dose_db
    result = galacto("dose", "list", "--database", str(db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["id", "acquired", "unit", "accession"]
    assert len(lines) == 1 + 3
    assert "3 exposure(s)" in result.stderr


def test_export_csv_is_pseudonymised_with_the_site_secret(
    dose_db: tuple[Path, list[float]],
) -> None:
    db, agd = dose_db
    with DoseLog(db) as log:
        accessions = {row["accession"] for row in log.list_exposures()}
    env = {"GALACTO_SITE_PSEUDONYM_SECRET": "s3cret", "PATH": "/usr/bin:/bin"}
    result = galacto("dose", "export", "--database", str(db), "--format", "csv", env=env)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3
    assert sorted(float(r["agd_reported_mgy"]) for r in rows) == pytest.approx(sorted(agd))
    assert not accessions & {r["accession"] for r in rows}
    assert all(len(r["accession"]) == 32 for r in rows)
    with DoseLog(db) as log:
        originals = log.list_exposures()
    identifying = ("sps_id", "study_instance_uid", "sop_instance_uid", "irradiation_event_uid")
    for column in identifying:  # the SPS ID carries the accession; a UID finds the images
        clear = {str(row[column]) for row in originals if row[column]}
        assert clear, column
        assert not clear & {r[column] for r in rows}, column


def test_export_json_identified_and_without_secret(dose_db: tuple[Path, list[float]]) -> None:
    db, _ = dose_db
    identified = galacto(
        "dose", "export", "--database", str(db), "--format", "json", "--identified"
    )
    anonymous = galacto("dose", "export", "--database", str(db), "--format", "json")
    assert identified.returncode == anonymous.returncode == 0
    assert all(row["accession"] for row in json.loads(identified.stdout))
    assert all(row["accession"] is None for row in json.loads(anonymous.stdout))
    assert "left out" in anonymous.stderr


def test_missing_database_is_exit_2(tmp_path: Path) -> None:
    assert galacto("dose", "list", "--database", str(tmp_path / "none.db")).returncode == 2
    assert galacto("journal", "verify", "--database", str(tmp_path / "none.db")).returncode == 2


def test_journal_verify_names_the_first_altered_entry(tmp_path: Path) -> None:
    db = tmp_path / "galacto.db"
    with Journal(db) as journal:
        for n in range(5):
            journal.append("transition", {"n": n}, exam_id="E1", operator="tech")
    ok = galacto("journal", "verify", "--database", str(db))
    assert ok.returncode == 0, ok.stderr
    assert "5 entries" in ok.stdout
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER journal_no_update")
    conn.execute("""UPDATE journal SET payload_json = '{"n":99}' WHERE seq = 3""")
    conn.commit()
    conn.close()
    bad = galacto("journal", "verify", "--database", str(db))
    assert bad.returncode == 1
    assert "first bad entry 3" in bad.stdout
