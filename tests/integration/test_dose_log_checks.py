"""The dose log checks every exposure as it writes it: plausibility, the Dance check, levels,
alerts (issue 9 §2, §3, §5). Real SQLite files, the real extraction from DICOM datasets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from acquisition.dose_log import ALERT_ACKNOWLEDGED, AlertStateError, DoseLog
from acquisition.dose_policy import DEFAULT_LEVELS
from dicom_nodes.datasets.dose_extract import from_image_header, from_rdsr
from dose.levels import load_levels
from dose.policy import DosePolicy
from dose.totals import per_breast_totals
from tests.dose_factories import Exposure, mg_image, rdsr

STUDY = "1.2.3.4"


@pytest.fixture
def policy() -> DosePolicy:
    return DosePolicy(levels=load_levels([DEFAULT_LEVELS]))


@pytest.fixture
def dose_log(tmp_path: Path, policy: DosePolicy) -> Iterator[DoseLog]:
    log = DoseLog(tmp_path / "galacto.sqlite", policy=policy)
    yield log
    log.close()


def raw(ds: Any, keyword: str, value: bytes) -> None:
    """Put a value into a dataset as the network delivers it (not validated by pydicom)."""
    tag = Tag(keyword)
    ds._dict[tag] = RawDataElement(tag, "DS", len(value), value, 0, False, True)


def header(exposure: Exposure, **raw_values: bytes) -> Any:
    ds = mg_image(exposure, study_uid=STUDY)
    for keyword, value in raw_values.items():
        raw(ds, keyword, value)
    return from_image_header(ds, station_ae="MAMMO")


def only_row(dose_log: DoseLog) -> dict[str, Any]:
    (row,) = dose_log.list_exposures(study=STUDY)
    return row


def test_absurd_values_are_kept_flagged_left_out_of_the_total_and_alerted(
    dose_log: DoseLog,
) -> None:
    sane = Exposure(laterality="L", agd_mgy=1.3)
    absurd = Exposure(laterality="L")
    dose_log.record([from_image_header(mg_image(sane, study_uid=STUDY))])
    dose_log.record(
        [
            header(
                absurd,
                OrganDose=b"1000000 ",  # dGy: 10⁸ mGy
                EntranceDoseInmGy=b"-5",
                HalfValueLayer=b"5 ",
                CompressionForce=b"-20 ",
            )
        ]
    )
    rows = {r["irradiation_event_uid"]: r for r in dose_log.list_exposures(study=STUDY)}
    row = rows[absurd.irradiation_event_uid]
    assert row["agd_reported_mgy"] == 1e8 and row["esak_mgy"] == -5.0  # kept as received
    assert row["compression_force_n"] == -20.0 and row["hvl_mm_al"] == 5.0
    for reason in (
        "agd_reported_mgy 1e+08 mGy outside [0.01, 50] mGy",
        "esak_mgy -5 mGy outside [0.01, 100] mGy",
        "hvl_mm_al 5 mm Al outside [0.2, 1.5] mm Al",
        "compression_force_n -20 N outside [0, 300] N",
    ):
        assert reason in row["plausibility"]
    assert row["agd_computed_mgy"] is None and row["agd_computed_basis"].startswith("not computed")
    left = per_breast_totals(rows.values()).breasts["L"]
    assert left.agd_mgy == pytest.approx(1.3)
    assert left.describe() == "1.300 mGy (1 event; 1 event left out: 1 implausible)"
    (alert,) = dose_log.alerts(exposure_ids=[row["id"]])
    assert (alert["level_id"], alert["state"], alert["sop_instance_uid"]) == (
        "implausible",
        "open",
        absurd.sop_instance_uid,
    )
    assert alert["value_mgy"] == 1e8 and "hvl_mm_al 5 mm Al" in alert["detail"]
    assert row["alert_flags"] == "plausibility"
    assert rows[sane.irradiation_event_uid]["plausibility"] == ""


@pytest.mark.parametrize(("text", "reason"), [(b"NaN ", "NaN"), (b"inf ", "+inf (infinite)")])
def test_nan_and_infinity_are_flagged_never_dropped_silently(
    dose_log: DoseLog, tmp_path: Path, text: bytes, reason: str
) -> None:
    dose_log.record([header(Exposure(), EntranceDoseInmGy=text)])
    row = only_row(dose_log)
    assert row["esak_mgy"] is None  # SQLite keeps no NaN: the finding keeps what came
    assert f"esak_mgy {reason}" in row["plausibility"]
    assert dose_log.alerts(open_only=True)[0]["level_id"] == "implausible"


def test_a_negative_agd_is_implausible_not_zero(dose_log: DoseLog) -> None:
    dose_log.record([header(Exposure(), OrganDose=b"-0.012 ")])
    row = only_row(dose_log)
    assert row["agd_reported_mgy"] == pytest.approx(-1.2)
    assert "agd_reported_mgy -1.2 mGy outside [0.01, 50] mGy" in row["plausibility"]
    assert "zero" not in row["plausibility"]


def test_the_rdsr_kerma_with_its_reference_point_replaces_the_headers(dose_log: DoseLog) -> None:
    exposure = Exposure(esak_mgy=5.67, hvl_mm_al=0.5, thickness_mm=45, agd_mgy=1.5)
    ds = mg_image(exposure, study_uid=STUDY)
    ds.EntranceDoseInmGy = 6.1  # at the surface, as PS3.3 defines (0040,8302)
    dose_log.record([from_image_header(ds)])
    first = only_row(dose_log)
    assert (first["esak_mgy"], first["esak_reference_point"]) == (6.1, None)
    assert "Entrance Dose in mGy (0040,8302)" in first["agd_computed_basis"]
    dose_log.record(from_rdsr(rdsr([exposure], study_uid=STUDY)))  # 5.67 at 4.2 cm (113865)
    row = only_row(dose_log)
    assert (row["esak_mgy"], row["esak_reference_point"]) == (5.67, "113865")
    assert "esak_mgy" not in row["review_reasons"]  # two points, not a disagreement
    # K = 5.67 × ((700 − 42) / 655)² (SID 700, the header's distance to the entrance 655 mm)
    assert row["dance_k_mgy"] == pytest.approx(5.67 * (658 / 655) ** 2)
    assert row["agd_computed_mgy"] == pytest.approx(row["dance_k_mgy"] * 0.285 * 1.042)
    assert row["dance_check"] == "agrees"


def test_an_exposure_above_a_level_raises_one_alert_until_acknowledged(
    dose_log: DoseLog, tmp_path: Path
) -> None:
    # W/Rh, HVL 0.50, 45 mm: g 0.285, s 1.042 (dose.md); the unit says 2.6 mGy: above EUREF
    # acceptable at 40 mm PMMA (2.0 mGy)
    exposure = Exposure(agd_mgy=2.6, hvl_mm_al=0.5, thickness_mm=45)
    dose_log.record([from_image_header(mg_image(exposure, study_uid=STUDY))])
    dose_log.record([from_image_header(mg_image(exposure, study_uid=STUDY))])  # again: one alert
    (alert,) = dose_log.alerts()
    assert (alert["level_id"], alert["limit_mgy"], alert["value_mgy"]) == (
        "euref-acceptable",
        2.0,
        2.6,
    )
    row = only_row(dose_log)
    assert (
        "EUREF acceptable: 2.600 > 2.000 mGy (45 mm breast ≙ 40 mm PMMA)" in row["level_comparison"]
    )
    assert [a["id"] for a in dose_log.unjournaled_alerts()] == [alert["id"]]
    dose_log.mark_alerts_journaled([alert["id"]])
    assert dose_log.unjournaled_alerts() == []
    dose_log.acknowledge_alert(alert["id"], user="physicist", reason="thick dense breast")
    acked = dose_log.alert(alert["id"])
    assert acked is not None and acked["state"] == ALERT_ACKNOWLEDGED
    assert (acked["acknowledged_by"], acked["acknowledgement_reason"]) == (
        "physicist",
        "thick dense breast",
    )
    with pytest.raises(AlertStateError):
        dose_log.acknowledge_alert(alert["id"], user="someone", reason="again")
    with pytest.raises(KeyError):
        dose_log.acknowledge_alert(alert["id"] + 99, user="x", reason="y")
    assert dose_log.alerts(open_only=True) == []


def test_the_exam_total_of_a_breast_against_its_level(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[[level]]\nid = "local-exam-breast"\nmgy = 3.0\n')
    policy = DosePolicy(levels=load_levels([DEFAULT_LEVELS, site]))
    with DoseLog(tmp_path / "g.sqlite", policy=policy) as dose_log:
        shots = [Exposure(laterality="L", agd_mgy=1.2) for _ in range(3)]
        for shot in shots:
            dose_log.record([from_image_header(mg_image(shot, study_uid=STUDY))])
        dose_log.record(
            [from_image_header(mg_image(Exposure(laterality="R", agd_mgy=1.2), study_uid=STUDY))]
        )
        (alert,) = dose_log.alerts()
    assert alert["scope"] == "exam-breast" and alert["laterality"] == "L"
    assert alert["sop_instance_uid"] == shots[2].sop_instance_uid  # the one that crossed it
    assert alert["value_mgy"] == pytest.approx(3.6) and alert["limit_mgy"] == 3.0


class BrokenPolicy(DosePolicy):
    def assess(self, row: Any, findings: tuple[str, ...] = ()) -> Any:
        raise ZeroDivisionError("a bug in the checks")


def test_a_failure_of_the_checks_never_loses_the_exposure(tmp_path: Path) -> None:
    with DoseLog(tmp_path / "g.sqlite", policy=BrokenPolicy()) as dose_log:
        dose_log.record([from_image_header(mg_image(Exposure(), study_uid=STUDY))])
        row = only_row(dose_log)
        (alert,) = dose_log.alerts()
    assert row["agd_reported_mgy"] == pytest.approx(1.23)
    assert "dose checks failed (ZeroDivisionError: a bug in the checks)" in row["plausibility"]
    assert alert["level_id"] == "implausible"


def test_migrations_add_the_check_columns_to_an_existing_log(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    DoseLog(path).close()
    conn = sqlite3.connect(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")}
        columns = {r[1] for r in conn.execute("PRAGMA table_info(exposure)")}
    finally:
        conn.close()
    assert {"m001_exposure", "m002_unannotated", "m003_dose_checks"} <= names
    assert {"plausibility", "dance_check", "patient_age_years", "qa_reason"} <= columns
    assert "patient_birth_date" not in columns
