"""The report's summaries stay equal to the rows they summarise, whatever writes the rows.

``exposure_summary`` and ``exam_breast_summary`` (migration m005) are kept by triggers. After
every kind of write — the controller's records, merges of several sources and of several rows
into one, the checks' updates, alerts raised and acknowledged, annotations, a bulk load, a
repair by hand, a delete — they must equal what is computed here, in Python, from the rows
and alerts themselves.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from pydicom.uid import generate_uid

from acquisition.dose_log import DoseLog, migrations
from acquisition.dose_policy import DEFAULT_LEVELS
from dicom_nodes.datasets.dose_extract import from_image_header, from_rdsr
from dose.levels import load_levels
from dose.policy import DosePolicy
from dose.record import ExposureRecord, Source
from dose.totals import per_breast_totals
from storage.database import connect
from tests.dose_factories import Exposure, mg_image, rdsr
from tests.dose_fleet import COLUMNS, write_fleet

KEYS = (
    "acquisition_month", "station_ae", "device_serial", "manufacturer", "laterality", "is_qa",
    "is_magnified", "view_name", "thickness_band_mm",
)  # fmt: skip
EXAM_KEYS = (
    "study_instance_uid", "laterality", "acquisition_date", "station_ae", "device_serial",
    "manufacturer",
)  # fmt: skip


def _rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(sql)]


def expected_summaries(db: Path) -> tuple[dict, dict]:
    """Both summaries computed from the rows (and the open alerts) in Python."""
    with closing(sqlite3.connect(db)) as conn:
        rows = _rows(conn, f"SELECT *, {', '.join(KEYS)} FROM exposure")
        alerts = _rows(conn, "SELECT exposure_id FROM dose_alert WHERE state = 'open'")
    open_alerts: dict[int, int] = defaultdict(int)
    for alert in alerts:
        open_alerts[alert["exposure_id"]] += 1
    summary: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        into = summary[tuple(row[k] for k in KEYS)]
        plausible = row["agd_plausible_mgy"] is not None
        into["n_exposures"] += 1
        into["n_flagged"] += row["is_flagged"]
        into["n_dance_disagrees"] += row["dance_check"] == "disagrees"
        into["n_dance_unit_suspected"] += row["dance_check"] == "unit suspected"
        into["n_open_alerts"] += open_alerts[row["id"]]
        if plausible:
            into["n_agd"] += 1
            into["sum_agd_mgy"] += row["agd_plausible_mgy"]
            into["sum_thickness_mm"] += row["compressed_thickness_mm"] or 0.0
            for column, count, total in (
                ("kvp", "n_kvp", "sum_kvp"),
                ("exposure_uas", "n_uas", "sum_uas"),
            ):
                if row[column] is not None:
                    into[count] += 1
                    into[total] += row[column]
    exams: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["study_instance_uid"] is not None and row["laterality"] in ("L", "R"):
            key = (
                row["study_instance_uid"],
                row["laterality"],
                (row["acquisition_datetime"] or "")[:10],
                *(row[k] or "" for k in ("station_ae", "device_serial", "manufacturer")),
            )
            exams[key].append(row)
    totals = {}
    for key, members in exams.items():
        total = per_breast_totals(members).breasts[key[1]]
        if total.events:
            totals[key] = {"events": total.events, "total_mgy": total.agd_mgy}
    return {k: dict(v) for k, v in summary.items()}, totals


def assert_summaries_hold(db: Path) -> None:
    expected, expected_exams = expected_summaries(db)
    with closing(sqlite3.connect(db)) as conn:
        stored = {
            tuple(r[k] for k in KEYS): r for r in _rows(conn, "SELECT * FROM exposure_summary")
        }
        exams = {
            tuple(r[k] for k in EXAM_KEYS): r
            for r in _rows(conn, "SELECT * FROM exam_breast_summary")
        }
    assert stored.keys() == expected.keys()
    for key, measures in expected.items():
        for name in stored[key]:
            if name in KEYS:
                continue
            want = measures.get(name, 0)
            if name.startswith("n_"):
                assert stored[key][name] == want, (key, name)
            else:
                assert stored[key][name] == pytest.approx(want, rel=1e-9, abs=1e-9), (key, name)
    assert exams.keys() == expected_exams.keys()
    for key, want in expected_exams.items():
        assert exams[key]["events"] == want["events"], key
        assert exams[key]["total_mgy"] == pytest.approx(want["total_mgy"], rel=1e-9), key


def policy() -> DosePolicy:
    return DosePolicy(levels=load_levels([DEFAULT_LEVELS]))


def test_the_summaries_follow_every_write(tmp_path: Path) -> None:
    db = tmp_path / "galacto.sqlite"
    study = "1.2.826.0.1.3680043.8.498.5001"
    exposures = [
        Exposure(laterality="L", view="CC", agd_mgy=1.2, thickness_mm=44.0),
        Exposure(laterality="L", view="ML", agd_mgy=9.0, thickness_mm=51.0),  # above a level
        Exposure(laterality="R", view="CC", magnified=True, agd_mgy=2.4, acquired="20261201080000"),
    ]
    with DoseLog(db, policy=policy()) as log:
        log.record([from_image_header(mg_image(e, study_uid=study)) for e in exposures])
        assert_summaries_hold(db)  # inserts, and the checks' updates of the same rows
        log.record(from_rdsr(rdsr(exposures, study_uid=study)))
        assert_summaries_hold(db)  # another source merged into each row
        assert log.alerts(open_only=True), "the test needs an open alert"

        # an MPPS item recorded alone (implausible: alerted), then named with its image:
        # the two rows become one, the item's alert moves to the image's row
        # (beside another row of the image's key, so that its summary row stays)
        image, beside = (Exposure(laterality="R", view="MLO", agd_mgy=a) for a in (1.5, 1.6))
        log.record([from_image_header(mg_image(e, study_uid=study)) for e in (image, beside)])
        mpps = generate_uid()
        item = ExposureRecord(
            Source.MPPS, mpps_instance_uid=mpps, mpps_item_index=0, study_instance_uid=study,
            accession="ACC1", kvp=-3.0,
        )  # fmt: skip
        log.record([item])
        assert_summaries_hold(db)
        before = log.exposure_count()
        assert log.record_counted([item.with_values(sop_instance_uid=image.sop_instance_uid)]) == -1
        assert log.exposure_count() == before - 1
        assert_summaries_hold(db)

        row = log.list_exposures()[0]
        log.annotate(row["id"], phase="pre-contrast", operator="RT")
        assert_summaries_hold(db)
        first = log.alerts(open_only=True)[0]
        log.acknowledge_alert(first["id"], user="physicist", reason="checked the phantom")
        assert_summaries_hold(db)

    with closing(connect(db)) as conn:  # repairs by hand
        conn.execute(
            "UPDATE exposure SET qa_reason = 'phantom', station_ae = 'MAMMO9' WHERE id = 1"
        )
        conn.execute("UPDATE exposure SET compressed_thickness_mm = NULL WHERE id = 2")
        conn.execute("DELETE FROM dose_alert WHERE id = (SELECT max(id) FROM dose_alert)")
        conn.execute("DELETE FROM exposure WHERE id = 3")
        conn.commit()
    assert_summaries_hold(db)


def test_a_bulk_load_is_summarised_and_what_is_left_of_it(tmp_path: Path) -> None:
    db = tmp_path / "galacto.sqlite"
    write_fleet(db, 2000, units=3, years=2, seed=11)
    assert_summaries_hold(db)
    with closing(connect(db)) as conn:
        conn.execute("DELETE FROM exposure WHERE id % 3 = 0")
        conn.execute("UPDATE dose_alert SET state = 'acknowledged' WHERE id % 2 = 0")
        conn.commit()
    assert_summaries_hold(db)


def test_the_migration_summarises_a_log_written_before_it(tmp_path: Path) -> None:
    """A log written by an earlier version (migrations up to m004) gets its summaries, from
    the rows and alerts it holds, when this version opens it."""
    fleet = tmp_path / "fleet.sqlite"
    write_fleet(fleet, 600, units=2, years=1, seed=5)
    db = tmp_path / "old.sqlite"
    with closing(connect(db)) as conn:
        migrations.apply(sqlite_utils.Database(conn), stop_before="m005_report_summaries")
        conn.execute("ATTACH DATABASE ? AS fleet", (str(fleet),))
        columns = ", ".join(COLUMNS)
        conn.execute(
            f"INSERT INTO exposure (id, {columns}) SELECT id, {columns} FROM fleet.exposure"
        )
        conn.execute("INSERT INTO dose_alert SELECT * FROM fleet.dose_alert")
        conn.commit()
        assert not conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'exposure_summary'"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM dose_alert WHERE state = 'open'").fetchone()[0]
    DoseLog(db).close()
    assert_summaries_hold(db)
