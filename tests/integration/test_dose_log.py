"""Dose log: durable rows, reconciliation across header / MPPS / RDSR, per-breast totals."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from acquisition.dose_log import ANNOTATION_COLUMNS, RECORD_COLUMNS, DoseLog
from dicom_nodes.datasets.dose_extract import from_image_header, from_mpps, from_rdsr
from dose.record import ExposureRecord, SinkWriteError, Source
from dose.totals import per_breast_totals
from tests.dose_factories import Exposure, mg_image, mpps_create, mpps_set, rdsr

STUDY = "1.2.3.4"


@pytest.fixture
def dose_log(tmp_path: Path) -> Iterator[DoseLog]:
    log = DoseLog(tmp_path / "galacto.sqlite")
    yield log
    log.close()


def _mpps_records(exposures: list[Exposure], uid: str) -> list[ExposureRecord]:
    merged = mpps_create(study_uid=STUDY)
    for elem in mpps_set(exposures):
        merged[elem.tag] = elem
    return from_mpps(merged, mpps_instance_uid=uid)


ORDERS = {
    "header, rdsr, mpps": ("header", "rdsr", "mpps"),
    "mpps, rdsr, header": ("mpps", "rdsr", "header"),
    "rdsr, mpps, header": ("rdsr", "mpps", "header"),
    "header, mpps, rdsr, header again": ("header", "mpps", "rdsr", "header"),
}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_three_sources_one_row_each(dose_log: DoseLog, order: tuple[str, ...]) -> None:
    exposures = [
        Exposure(laterality="R", agd_mgy=1.1),
        Exposure(laterality="R", view="MLO", agd_mgy=1.3),
        Exposure(laterality="L", agd_mgy=2.5, magnified=True),
    ]
    mpps_uid = generate_uid()
    batches = {
        "header": [from_image_header(mg_image(e, study_uid=STUDY)) for e in exposures],
        "rdsr": from_rdsr(rdsr(exposures, study_uid=STUDY)),
        "mpps": _mpps_records(exposures, mpps_uid),
    }
    for name in order:
        dose_log.record(batches[name])
    rows = dose_log.list_exposures(accession="ACC1")
    assert len(rows) == 3
    by_event = {row["irradiation_event_uid"]: row for row in rows}
    for exposure in exposures:
        row = by_event[exposure.irradiation_event_uid]
        assert row["sources"] == "image_header,mpps,rdsr"
        assert row["sop_instance_uid"] == exposure.sop_instance_uid
        assert row["agd_reported_mgy"] == pytest.approx(exposure.agd_mgy)
        assert row["esak_mgy"] == pytest.approx(exposure.esak_mgy)
        assert row["mpps_instance_uid"] == mpps_uid
        assert row["review_reasons"] == ""
    assert per_breast_totals(dose_log.list_exposures("ACC1")).agd_mgy == {
        "L": pytest.approx(2.5),
        "R": pytest.approx(2.4),
    }


def test_for_processing_and_presentation_images_are_one_exposure(dose_log: DoseLog) -> None:
    exposure = Exposure()
    presentation = mg_image(exposure, study_uid=STUDY)
    processing = mg_image(exposure, study_uid=STUDY, sop_class="1.2.840.10008.5.1.4.1.1.1.2.1")
    processing.SOPInstanceUID = generate_uid()
    dose_log.record([from_image_header(presentation)])
    dose_log.record([from_image_header(processing)])
    rows = dose_log.list_exposures()
    assert len(rows) == 1
    assert sorted(dose_log.image_uids(rows[0]["id"])) == sorted(
        [presentation.SOPInstanceUID, processing.SOPInstanceUID]
    )


def test_disagreeing_sources_are_flagged_and_first_value_kept(dose_log: DoseLog) -> None:
    exposure = Exposure(agd_mgy=1.0)
    dose_log.record([from_image_header(mg_image(exposure, study_uid=STUDY))])
    exposure.agd_mgy = 1.5
    dose_log.record(from_rdsr(rdsr([exposure], study_uid=STUDY)))
    (row,) = dose_log.list_exposures()
    assert row["agd_reported_mgy"] == pytest.approx(1.0)
    assert "sources disagree on agd_reported_mgy" in row["review_reasons"]


def test_exposure_without_step_is_kept_and_flagged(dose_log: DoseLog) -> None:
    record = from_image_header(mg_image(Exposure(), study_uid=STUDY, sps_id=None))
    dose_log.record([record.with_values(known_step=False)])
    (row,) = dose_log.list_exposures()
    assert row["unknown_step"] == 1
    assert row["agd_reported_mgy"] == pytest.approx(1.23)


def test_row_is_visible_to_another_connection_on_return(tmp_path: Path) -> None:
    path = tmp_path / "galacto.sqlite"
    with DoseLog(path) as dose_log:
        dose_log.record(
            [
                ExposureRecord(
                    source=Source.RDSR, irradiation_event_uid="1.2.3", agd_reported_mgy=0.9
                )
            ]
        )
        other = sqlite3.connect(path)
        try:
            (count,) = other.execute("SELECT COUNT(*) FROM exposure").fetchone()
            (mode,) = other.execute("PRAGMA journal_mode").fetchone()
        finally:
            other.close()
    assert count == 1
    assert mode == "wal"


def test_closed_log_refuses_writes(tmp_path: Path) -> None:
    dose_log = DoseLog(tmp_path / "galacto.sqlite")
    dose_log.close()
    with pytest.raises(SinkWriteError):
        dose_log.record([ExposureRecord(source=Source.RDSR, irradiation_event_uid="1.2")])


def test_schema_has_a_column_for_every_record_field(dose_log: DoseLog, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "galacto.sqlite")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(exposure)")}
        (strict,) = conn.execute(
            "SELECT strict FROM pragma_table_list WHERE name = 'exposure'"
        ).fetchone()
    finally:
        conn.close()
    assert set(RECORD_COLUMNS) | set(ANNOTATION_COLUMNS) <= columns
    assert strict == 1


def test_annotate_writes_only_annotation_columns(dose_log: DoseLog) -> None:
    dose_log.record([ExposureRecord(source=Source.RDSR, irradiation_event_uid="1.2.9")])
    (row,) = dose_log.list_exposures()
    dose_log.annotate(row["id"], phase="pre-contrast", operator="RT")
    (row,) = dose_log.list_exposures()
    assert (row["phase"], row["operator"]) == ("pre-contrast", "RT")
    for column in ("agd_reported_mgy", "agd_computed_mgy", "plausibility"):  # not the exam's
        with pytest.raises(ValueError):
            dose_log.annotate(row["id"], **{column: 9.9})
    with pytest.raises(KeyError):
        dose_log.annotate(row["id"] + 1, phase="x")


def test_concurrent_writers_never_double_count(dose_log: DoseLog) -> None:
    """Header, RDSR and MPPS of the same exposures written from three threads at once."""
    exposures = [Exposure(agd_mgy=1.0 + i / 10) for i in range(20)]
    batches = [
        [from_image_header(mg_image(e, study_uid=STUDY)) for e in exposures],
        from_rdsr(rdsr(exposures, study_uid=STUDY)),
        _mpps_records(exposures, generate_uid()),
    ]
    errors: list[BaseException] = []

    def write(batch: list[ExposureRecord]) -> None:
        try:
            for record in batch:
                dose_log.record([record])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    rows = dose_log.list_exposures()
    assert len(rows) == len(exposures)
    assert {row["sources"] for row in rows} == {"image_header,mpps,rdsr"}
