"""The physicist's filters, exports and report over a synthetic fleet's dose log.

Every answer of galacto's SQL is checked against the same question answered the slow way, in
Python, over every row of the log (read with a plain sqlite3 connection).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import re
import sqlite3
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from acquisition.dose_audit import AuditLog, ExposureFilter, Pseudonyms, queries, write_export
from acquisition.dose_audit.exports import IDENTIFYING_COLUMNS, NHSBSP_HEADER, OPENREM_HEADER
from acquisition.dose_audit.filters import parse_thickness
from acquisition.dose_audit.queries import ReportQueries
from acquisition.dose_log import DoseLog
from dose.plausibility import is_implausible, is_qa
from dose.record import ExposureRecord, Source, magnified
from dose.totals import per_breast_totals
from tests.dose_fleet import write_fleet

ROOT = Path(__file__).resolve().parents[2]
VIEW_OF = {"399162004": "CC", "399368009": "MLO", "399260004": "ML"}


def galacto(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acquisition", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("fleet") / "galacto.db"
    write_fleet(db, 3000, units=4, years=2, seed=7)
    return db


@pytest.fixture(scope="module")
def all_rows(fleet: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(fleet)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM exposure ORDER BY id")]


def flagged(row: dict[str, Any]) -> bool:
    return (
        is_implausible(row)
        or row["dance_check"] in ("disagrees", "unit suspected")
        or bool(row["alert_flags"])
    )


# Each filter, and the same question asked of every row in Python.
FILTERS: list[tuple[str, ExposureFilter, Callable[[dict[str, Any]], bool]]] = [
    (
        "dates",
        ExposureFilter(date_from=dt.date(2016, 3, 1), date_to=dt.date(2016, 5, 31)),
        lambda r: "2016-03-01" <= r["acquisition_datetime"][:10] <= "2016-05-31",
    ),
    ("station", ExposureFilter(station_ae="MAMMO02"), lambda r: r["station_ae"] == "MAMMO02"),
    ("serial", ExposureFilter(device_serial="SN1003"), lambda r: r["device_serial"] == "SN1003"),
    (
        "manufacturer",
        ExposureFilter(manufacturer="ge medical"),
        lambda r: "ge medical" in r["manufacturer"].casefold(),
    ),
    ("view", ExposureFilter(views=("CC",)), lambda r: VIEW_OF.get(r["view_code"]) == "CC"),
    (
        "view contact",
        ExposureFilter(views=("CC",), magnified="no"),
        lambda r: VIEW_OF.get(r["view_code"]) == "CC" and not magnified(r),
    ),
    ("magnified", ExposureFilter(magnified="yes"), magnified),
    (
        "thickness",
        ExposureFilter(thickness_mm=(40.0, 60.0)),
        lambda r: 40 <= r["compressed_thickness_mm"] <= 60,
    ),
    ("laterality", ExposureFilter(laterality="L"), lambda r: r["laterality"] == "L"),
    ("phase", ExposureFilter(phase="post-injection-2"), lambda r: r["phase"] == "post-injection-2"),
    ("flagged", ExposureFilter(flagged=True), flagged),
    ("exam", ExposureFilter(accession="A000000042"), lambda r: r["accession"] == "A000000042"),
]


@pytest.mark.parametrize(("name", "flt", "wanted"), FILTERS, ids=[f[0] for f in FILTERS])
def test_every_filter_selects_what_it_says(
    fleet: Path, all_rows: list[dict[str, Any]], name: str, flt: ExposureFilter, wanted: Any
) -> None:
    in_time_order = sorted(all_rows, key=lambda r: (r["acquisition_datetime"], r["id"]))
    expected = [r["id"] for r in in_time_order if wanted(r) and not is_qa(r)]
    assert expected, f"the fleet has no row for {name}"
    with AuditLog(fleet) as log:
        got = [row[0] for page in log.pages(flt, ["id"], page_rows=97) for row in page]
    assert got == expected
    assert len(expected) < len(all_rows)


def test_qa_exposures_are_left_out_unless_asked(fleet: Path, all_rows: list) -> None:
    qa = [r["id"] for r in all_rows if is_qa(r)]
    assert qa
    with AuditLog(fleet) as log:
        default = {row[0] for page in log.pages(ExposureFilter(), ["id"]) for row in page}
        included = {
            row[0] for page in log.pages(ExposureFilter(include_qa=True), ["id"]) for row in page
        }
    assert not default & set(qa)
    assert included == {r["id"] for r in all_rows}


@pytest.mark.parametrize(("name", "flt", "_"), FILTERS, ids=[f[0] for f in FILTERS])
def test_an_index_serves_every_filter(fleet: Path, name: str, flt: ExposureFilter, _: Any) -> None:
    with AuditLog(fleet) as log:
        where, params = flt.resolve(log.conn).where()
        plan = " ".join(
            str(step[3])
            for step in log.conn.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM exposure WHERE {where}", params
            )
        )
    assert re.search(r"SEARCH exposure USING (COVERING )?INDEX", plan), plan


def test_dates_are_the_units_local_dates_inclusive(tmp_path: Path) -> None:
    db = tmp_path / "galacto.db"
    times = ("2026-03-31T23:59:59", "2026-04-01T00:00:00", "2026-04-30T23:59:59.5", "2026-05-01")
    with DoseLog(db) as log:
        log.record(
            [
                ExposureRecord(
                    Source.RDSR, irradiation_event_uid=f"2.25.{i}", acquisition_datetime=t
                )
                for i, t in enumerate(times)
            ]
        )
    april = ExposureFilter(date_from=dt.date(2026, 4, 1), date_to=dt.date(2026, 4, 30))
    with AuditLog(db) as log:
        got = [r[0] for page in log.pages(april, ["acquisition_datetime"]) for r in page]
    assert got == list(times[1:3])


def test_bad_filter_values_exit_2(fleet: Path) -> None:
    for args in (
        ("--from", "2026-13-01"),
        ("--from", "2026-05-02", "--to", "2026-05-01"),
        ("--thickness", "60-40"),
        ("--thickness", "thick"),
        ("--view", "AP"),
        ("--magnified", "maybe"),
    ):
        result = galacto("dose", "list", "--database", str(fleet), *args)
        assert result.returncode == 2, args
        assert result.stderr.strip()
    assert parse_thickness("40-") == (40.0, None)
    assert parse_thickness("-60") == (None, 60.0)


def test_list_and_export_filters_from_the_command_line(fleet: Path, all_rows: list) -> None:
    expected = [
        r
        for r in all_rows
        if r["station_ae"] == "MAMMO01" and r["laterality"] == "R" and not is_qa(r)
    ]
    listed = galacto(
        "dose", "list", "--database", str(fleet), "--station", "MAMMO01", "--laterality", "R"
    )
    assert listed.returncode == 0, listed.stderr
    assert f"{len(expected)} exposure(s)" in listed.stderr
    assert len(listed.stdout.splitlines()) == 1 + len(expected)
    exported = galacto(
        "dose", "export", "--database", str(fleet), "--format", "json", "--station", "MAMMO01",
        "--laterality", "R", "--identified",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    rows = json.loads(exported.stdout)
    assert [r["irradiation_event_uid"] for r in rows] == [
        r["irradiation_event_uid"] for r in expected
    ]


# ---------------------------------------------------------------------------------- exports


def documented_header(section: str) -> list[str]:
    """The column names of a layout's table in docs/dose.md (its first column)."""
    text = (ROOT / "docs" / "dose.md").read_text(encoding="utf-8")
    lines = text[text.index(section) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append(line.split("|")[1].strip().strip("`"))
    return table


def export_text(fleet: Path, fmt: str, flt: ExposureFilter, names: Pseudonyms) -> str:
    stream = io.StringIO()
    with AuditLog(fleet) as log:
        write_export(log, flt, fmt, stream, names)
    return stream.getvalue()


def test_openrem_layout_and_a_row(fleet: Path, all_rows: list) -> None:
    assert list(OPENREM_HEADER) == documented_header("### OpenREM mammography CSV")
    exam = next(
        r
        for r in all_rows
        if r["view_code"] == "399162004" and not r["view_modifier_codes"] and not is_qa(r)
    )
    text = export_text(
        fleet, "openrem", ExposureFilter(accession=exam["accession"]), Pseudonyms("")
    )
    assert text.startswith("\ufeff")  # as OpenREM writes it, for spreadsheets
    lines = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert lines[0] == list(OPENREM_HEADER)
    row = dict(zip(lines[0], lines[1], strict=True))
    assert row["View"] == "cranio-caudal"
    assert row["Laterality"] == {"R": "Right", "L": "Left"}[exam["laterality"]]
    assert (row["Target"], row["Filter"]) in {("W", "Rh"), ("Rh", "Rh"), ("Mo", "Rh")}
    assert float(row["kVp"]) == exam["kvp"]
    assert float(row["uAs"]) == pytest.approx(exam["exposure_uas"])
    assert float(row["AGD"]) == pytest.approx(exam["agd_reported_mgy"])
    assert float(row["Thickness"]) == pytest.approx(exam["compressed_thickness_mm"])
    assert row["Study date"] == exam["acquisition_datetime"][:10]
    exam_rows = [r for r in all_rows if r["study_instance_uid"] == exam["study_instance_uid"]]
    assert int(row["No. events"]) == len(exam_rows)
    assert row["Accession number"] != exam["accession"]  # no secret: the export's exam key
    assert len({line[5] for line in lines[1:]}) == 1


def test_nhsbsp_layout_and_a_row(fleet: Path, all_rows: list) -> None:
    assert list(NHSBSP_HEADER) == documented_header("### NHSBSP dose survey CSV")
    accessions = sorted({r["accession"] for r in all_rows if not is_qa(r)})[:3]
    lines = []
    for accession in accessions:  # one exam each: patient number 1
        text = export_text(fleet, "nhsbsp", ExposureFilter(accession=accession), Pseudonyms(""))
        lines.append(list(csv.reader(io.StringIO(text.lstrip("\ufeff")))))
    assert lines[0][0] == list(NHSBSP_HEADER)
    first = [r for r in all_rows if r["accession"] == accessions[0]]
    rows = [dict(zip(NHSBSP_HEADER, line, strict=True)) for line in lines[0][1:]]
    assert len(rows) == len(first)
    side = first[0]["laterality"]
    assert rows[0]["View code"] == f"{side}CC"
    assert rows[1]["View code"] == f"{side}ML"
    assert rows[2]["View code"] == f"{side}CC2"  # a repeat of the view in the exam
    assert float(rows[0]["mAs"]) == pytest.approx(first[0]["exposure_uas"] / 1000)
    assert float(rows[0]["kV"]) == first[0]["kvp"]
    assert rows[0]["Anode"] in ("W", "Rh", "Mo") and rows[0]["Filter"] == "Rh"
    assert rows[0]["auto/man"] == "AUTO" and int(rows[0]["Age"]) == first[0]["patient_age_years"]
    assert {r["Patient number"] for r in rows} == {"1"}
    whole = export_text(fleet, "nhsbsp", ExposureFilter(), Pseudonyms(""))
    numbers = [line[1] for line in csv.reader(io.StringIO(whole.lstrip("\ufeff")))][1:]
    studies = {r["study_instance_uid"] for r in all_rows if not is_qa(r)}
    assert max(map(int, numbers)) == len(studies)  # exam by exam


def test_csv_exam_key_groups_exams_without_the_secret(fleet: Path, all_rows: list) -> None:
    flt = ExposureFilter(station_ae="MAMMO03", date_to=dt.date(2016, 6, 30))
    first, second = (
        list(csv.DictReader(io.StringIO(export_text(fleet, "csv", flt, Pseudonyms("")))))
        for _ in range(2)
    )
    by_event = {r["irradiation_event_uid"]: r for r in all_rows}
    assert all(r["irradiation_event_uid"] == "" and r["accession"] == "" for r in first)
    ids = [int(r["id"]) for r in first]
    keys: dict[str, set[str]] = defaultdict(set)
    for row_id, row in zip(ids, first, strict=True):
        study = next(r["study_instance_uid"] for r in all_rows if r["id"] == row_id)
        keys[study].add(row["exam_key"])
    assert all(len(k) == 1 for k in keys.values())  # one key per exam
    assert len({next(iter(k)) for k in keys.values()}) == len(keys)  # a key per exam
    assert {r["exam_key"] for r in first}.isdisjoint({r["exam_key"] for r in second})
    secret = [
        list(csv.DictReader(io.StringIO(export_text(fleet, "csv", flt, Pseudonyms("s3cret")))))
        for _ in range(2)
    ]
    assert [r["exam_key"] for r in secret[0]] == [r["exam_key"] for r in secret[1]]
    assert secret[0][0]["accession"] and secret[0][0]["accession"] not in {
        r["accession"] for r in by_event.values()
    }


def test_pseudonyms_are_the_hmac_of_each_identifier(fleet: Path, all_rows: list) -> None:
    """With the site's secret, CSV and JSON write each identifier as the HMAC-SHA256 of its
    value (made per exam for the values an exam shares, per row for the row's own UIDs), and
    every other column as the identified export does."""
    flt = ExposureFilter(station_ae="MAMMO01", date_to=dt.date(2016, 9, 30), include_qa=True)
    secret = Pseudonyms("s3cret")
    csv_rows = list(csv.DictReader(io.StringIO(export_text(fleet, "csv", flt, secret))))
    json_rows = json.loads(export_text(fleet, "json", flt, secret))
    plain = list(
        csv.DictReader(io.StringIO(export_text(fleet, "csv", flt, Pseudonyms("", identified=True))))
    )
    stored = {r["id"]: r for r in all_rows}
    assert len(csv_rows) == len(json_rows) == len(plain) > 100

    def hmac_of(value: str | None) -> str | None:
        if value is None:
            return None
        return hmac.new(b"s3cret", value.encode(), hashlib.sha256).hexdigest()[:32]

    for row, obj, identified in zip(csv_rows, json_rows, plain, strict=True):
        original = stored[int(row["id"])]
        for column in IDENTIFYING_COLUMNS:
            assert obj[column] == hmac_of(original[column]), column
            assert row[column] == (obj[column] or ""), column
        assert row["exam_key"] == obj["exam_key"] == hmac_of(original["study_instance_uid"])
        assert {k: v for k, v in row.items() if k not in IDENTIFYING_COLUMNS} == {
            k: v for k, v in identified.items() if k not in (*IDENTIFYING_COLUMNS, "exam_key")
        } | {"exam_key": row["exam_key"]}


# ---------------------------------------------------------------------------------- report


def test_report_questions_agree_with_every_row(fleet: Path, all_rows: list) -> None:
    flt = ExposureFilter(date_from=dt.date(2016, 1, 1), date_to=dt.date(2017, 6, 30))
    rows = [
        r for r in all_rows
        if not is_qa(r) and "2016-01-01" <= r["acquisition_datetime"][:10] <= "2017-06-30"
    ]  # fmt: skip
    with AuditLog(fleet) as log:
        data = ReportQueries(log, flt).run()
    plausible = [r for r in rows if not is_implausible(r)]
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in plausible:
        key = (magnified(r), VIEW_OF[r["view_code"]], int(r["compressed_thickness_mm"] // 10 * 10))
        groups[key].append(r["agd_reported_mgy"])
    assert {(b.magnified, b.view, b.band_mm): b.count for b in data.survey} == {
        k: len(v) for k, v in groups.items()
    }
    for band in data.survey:
        values = groups[(band.magnified, band.view, band.band_mm)]
        assert band.median_agd_mgy == pytest.approx(statistics.median(values))
        assert band.mean_agd_mgy == pytest.approx(statistics.fmean(values))
    months: dict[tuple, list[float]] = defaultdict(list)
    for r in plausible:
        months[(r["station_ae"], r["acquisition_datetime"][:7])].append(r["agd_reported_mgy"])
    assert len(data.unit_months) == len(months)
    for point in data.unit_months:
        values = months[(point.station_ae, point.month)]
        assert point.median_agd_mgy == pytest.approx(statistics.median(values))
    exams: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        exams[(r["study_instance_uid"], r["laterality"])].append(r)
    totals = [per_breast_totals(v).breasts[side] for (_, side), v in exams.items()]
    counted = [t for t in totals if t.events]
    assert data.exam_totals.breasts == len(counted)
    assert data.exam_totals.max_mgy == pytest.approx(max(t.agd_mgy for t in counted))
    assert data.flagged_count == sum(flagged(r) for r in rows)
    assert data.overview.exposures == len(rows)
    for outlier in data.outliers:
        assert outlier["times_median"] > 2


def matches(flt: ExposureFilter, r: dict[str, Any]) -> bool:
    """The filter asked of one row, in Python (the oracle of the report's SQL)."""
    day = (r["acquisition_datetime"] or "")[:10]
    low, high = flt.thickness_mm
    thickness = r["compressed_thickness_mm"]
    return (
        (flt.date_from is None or (bool(day) and day >= flt.date_from.isoformat()))
        and (flt.date_to is None or (bool(day) and day <= flt.date_to.isoformat()))
        and (flt.station_ae is None or r["station_ae"] == flt.station_ae)
        and (flt.device_serial is None or r["device_serial"] == flt.device_serial)
        and (
            flt.manufacturer is None
            or flt.manufacturer.casefold() in (r["manufacturer"] or "").casefold()
        )
        and (not flt.views or VIEW_OF.get(r["view_code"]) in flt.views)
        and (flt.magnified == "any" or magnified(r) == (flt.magnified == "yes"))
        and (low is None or (thickness is not None and thickness >= low))
        and (high is None or (thickness is not None and thickness <= high))
        and (flt.laterality is None or r["laterality"] == flt.laterality)
        and (flt.phase is None or r["phase"] == flt.phase)
        and (not flt.flagged or flagged(r))
        and (flt.include_qa or not is_qa(r))
        and (flt.accession is None or r["accession"] == flt.accession)
    )


REPORT_FILTERS = {
    "whole log": ExposureFilter(),
    "dates cutting months": ExposureFilter(
        date_from=dt.date(2016, 3, 10), date_to=dt.date(2017, 2, 20)
    ),
    "days of one month": ExposureFilter(
        date_from=dt.date(2016, 5, 3), date_to=dt.date(2016, 5, 20)
    ),
    "from a mid-month day": ExposureFilter(date_from=dt.date(2017, 1, 15)),
    "to a mid-month day": ExposureFilter(date_to=dt.date(2016, 7, 9)),
    "two part-months": ExposureFilter(date_from=dt.date(2016, 8, 20), date_to=dt.date(2016, 9, 5)),
    "unit and side": ExposureFilter(station_ae="MAMMO02", laterality="L"),
    "maker, magnified, from a day": ExposureFilter(
        manufacturer="ge medical", magnified="yes", date_from=dt.date(2016, 2, 2)
    ),
    "a view in whole months": ExposureFilter(
        views=("CC",), date_from=dt.date(2016, 4, 1), date_to=dt.date(2016, 12, 31)
    ),
    "physics included": ExposureFilter(include_qa=True, device_serial="SN1001"),
    "thickness (from the rows)": ExposureFilter(thickness_mm=(40.0, 60.0)),
    "flagged (from the rows)": ExposureFilter(flagged=True, date_from=dt.date(2016, 6, 15)),
}


@pytest.mark.parametrize("flt", REPORT_FILTERS.values(), ids=REPORT_FILTERS.keys())
def test_every_report_answer_is_the_rows_answer(
    fleet: Path, all_rows: list, flt: ExposureFilter
) -> None:
    """Whether the summaries answer (whole months, and the days at the ends from the rows) or
    the rows do (a filter the summaries do not keep), each answer is the one Python gives
    from every row."""
    rows = [r for r in all_rows if matches(flt, r)]
    assert rows
    with closing(sqlite3.connect(fleet)) as conn:
        open_alerts = [
            e for (e,) in conn.execute("SELECT exposure_id FROM dose_alert WHERE state = 'open'")
        ]
    with AuditLog(fleet) as log:
        data = ReportQueries(log, flt).run()
    ids = {r["id"] for r in rows}
    assert data.overview.exposures == len(rows)
    assert data.flagged_count == sum(flagged(r) for r in rows)
    assert data.disagreement_counts == {
        verdict: sum(r["dance_check"] == verdict for r in rows)
        for verdict in ("disagrees", "unit suspected")
    }
    assert data.alert_count == sum(e in ids for e in open_alerts)
    plausible = [r for r in rows if not is_implausible(r) and r["agd_reported_mgy"] is not None]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in plausible:
        if r["compressed_thickness_mm"] is not None:
            band = int(r["compressed_thickness_mm"] // 10 * 10)
            groups[(magnified(r), VIEW_OF.get(r["view_code"]), band)].append(r)
    assert {(b.magnified, b.view, b.band_mm): b.count for b in data.survey} == {
        k: len(v) for k, v in groups.items()
    }
    for band in data.survey:
        members = groups[(band.magnified, band.view, band.band_mm)]
        agd = [r["agd_reported_mgy"] for r in members]
        assert band.median_agd_mgy == pytest.approx(statistics.median(agd))
        assert band.mean_agd_mgy == pytest.approx(statistics.fmean(agd))
        assert band.mean_thickness_mm == pytest.approx(
            statistics.fmean(r["compressed_thickness_mm"] for r in members)
        )
        assert band.mean_kvp == pytest.approx(statistics.fmean(r["kvp"] for r in members))
        assert band.mean_mas == pytest.approx(
            statistics.fmean(r["exposure_uas"] for r in members) / 1000
        )
    months: dict[tuple, list[float]] = defaultdict(list)
    for r in plausible:
        months[(r["station_ae"], r["device_serial"], r["acquisition_datetime"][:7])].append(
            r["agd_reported_mgy"]
        )
    assert {(m.station_ae, m.device_serial, m.month): m.count for m in data.unit_months} == {
        k: len(v) for k, v in months.items()
    }
    for point in data.unit_months:
        values = months[(point.station_ae, point.device_serial, point.month)]
        assert point.median_agd_mgy == pytest.approx(statistics.median(values))
    exams: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        exams[(r["study_instance_uid"], r["laterality"])].append(r)
    totals = [per_breast_totals(v).breasts[side] for (_, side), v in exams.items()]
    counted = [t.agd_mgy for t in totals if t.events]
    assert data.exam_totals.breasts == len(counted)
    assert data.exam_totals.max_mgy == pytest.approx(max(counted))
    bins: dict[int, int] = defaultdict(int)
    for total in counted:
        bins[int(total / 0.25)] += 1
    assert [(edge, n) for edge, n in data.exam_totals.bins] == [
        (b * 0.25, n) for b, n in sorted(bins.items())
    ]
    sampled = [
        r for r in plausible
        if r["compressed_thickness_mm"] is not None and r["id"] % data.sample.every == 0
    ]  # fmt: skip
    assert sorted(p[3] for p in data.sample.points) == sorted(
        r["agd_reported_mgy"] for r in sampled
    )


def test_a_sample_of_many_rows_is_read_from_the_sample_index(
    fleet: Path, all_rows: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many rows (here: a few points asked of a few thousand rows) the scatter sample is
    one row in a multiple of 64, read from the index of every 64th row."""
    monkeypatch.setattr(queries, "SCATTER_POINTS", 12)
    flt = ExposureFilter(date_from=dt.date(2016, 2, 1))
    rows = [r for r in all_rows if matches(flt, r)]
    with AuditLog(fleet) as log:
        report = ReportQueries(log, flt)
        sample = report.sample(len(rows))
        plans = []
        log.conn.set_trace_callback(plans.append)
        report.sample(len(rows))
        log.conn.set_trace_callback(None)
        (sql,) = plans
        assert "INDEXED BY exposure_sample" in sql
    assert sample.every % 64 == 0 and sample.every >= 64
    wanted = [
        r["agd_reported_mgy"] for r in rows
        if r["id"] % sample.every == 0 and not is_implausible(r)
        and r["compressed_thickness_mm"] is not None
    ]  # fmt: skip
    assert wanted and sorted(p[3] for p in sample.points) == sorted(wanted)


def test_the_exam_breast_view_is_the_one_total(fleet: Path, all_rows: list) -> None:
    exams: dict[tuple, list[dict]] = defaultdict(list)
    for r in all_rows:
        exams[(r["study_instance_uid"], r["laterality"])].append(r)
    with closing(sqlite3.connect(fleet)) as conn:
        view = {
            (s, side): (total, events)
            for s, side, total, events in conn.execute(
                'SELECT study, side, "AGD total mGy", events FROM exam_breast_total'
            )
        }
    assert len(view) == len(exams)
    for (study, side), rows in exams.items():
        total = per_breast_totals(rows).breasts[side]
        assert view[(study, side)][0] == pytest.approx(total.agd_mgy)
        assert view[(study, side)][1] == total.events


def test_the_report_page_holds_its_plots_and_tables(fleet: Path, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    folder.mkdir()
    result = galacto(
        "dose", "report", "--database", str(fleet), "--output", str(folder), "--from", "2016-01-01"
    )
    assert result.returncode == 0, result.stderr
    page = (folder / "report.html").read_text(encoding="utf-8")
    figures = ("agd-thickness", "technique-thickness", "monthly-median", "exam-totals")
    for name in figures:
        block = page[page.index(f'<figure id="{name}">') :]
        assert block.index("<svg") < block.index("</figure>")
        assert (folder / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert (folder / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    for section in ("survey", "outliers", "flagged", "dance", "alerts"):
        assert f'id="{section}"' in page
    assert "EUREF acceptable" in page  # the reference-level curve's legend
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # openable offline
    assert "<script" not in page
    single = tmp_path / "one.html"
    again = galacto("dose", "report", "--database", str(fleet), "--output", str(single))
    assert again.returncode == 0, again.stderr
    assert single.read_text(encoding="utf-8").count("<svg") == len(figures)
    assert single.stat().st_mode & 0o077 == 0  # patient-related: private
    missing = galacto("dose", "report", "--database", str(tmp_path / "no.db"), "--output", "x")
    assert missing.returncode == 2


def test_a_long_read_never_holds_back_the_controllers_checkpoints(tmp_path: Path) -> None:
    """Between two pages no read transaction is open: a full WAL checkpoint of the live
    writer (TRUNCATE) succeeds while the export is half-way."""
    db = tmp_path / "galacto.db"
    write_fleet(db, 600, units=2, years=1, seed=3)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        with AuditLog(db) as log:
            pages = log.pages(ExposureFilter(include_qa=True), ["id"], page_rows=100)
            seen = list(next(pages))
            writer.execute(
                "INSERT INTO dose_alert (scope, exposure_id, level_id, level_name, "
                "detail, raised_at) VALUES ('exposure', 1, 'x', 'x', 'x', 'now')"
            )
            busy, _, _ = writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "a read transaction stayed open between pages"
            seen += [row for page in pages for row in page]
    finally:
        writer.close()
    assert [r[0] for r in seen] == list(range(1, 601))


def test_csv_and_json_give_back_what_the_log_holds(tmp_path: Path) -> None:
    """The lines SQLite builds: quotes where a text needs them, every value read back."""
    db = tmp_path / "galacto.db"
    awkward = ExposureRecord(
        Source.IMAGE_HEADER,
        sop_instance_uid="1.2.3.4",
        manufacturer="HOLOGIC, Inc.",
        comments='said "30 % glandular",\nthen\r\nmore',
        acquisition_protocol="",
        kvp=29.0,
        exposure_uas=80123.5,
        agd_reported_mgy=1.2345678901234,
        acquisition_datetime="2026-11-25T10:15:00",
    )
    with DoseLog(db) as log:
        log.record([awkward, ExposureRecord(Source.RDSR, irradiation_event_uid="2.25.9")])
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        stored = {str(r["id"]): dict(r) for r in conn.execute("SELECT * FROM exposure")}
    text = export_text(db, "csv", ExposureFilter(), Pseudonyms("", identified=True))
    as_json = json.loads(export_text(db, "json", ExposureFilter(), Pseudonyms("", identified=True)))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(as_json) == 2
    for row, obj in zip(rows, as_json, strict=True):
        original = stored[row["id"]]
        assert obj["id"] == int(row["id"])
        for column, value in row.items():
            if column == "exam_key":
                continue
            expected = original[column]
            if isinstance(expected, float):
                assert float(value) == pytest.approx(expected, rel=1e-14)
                assert obj[column] == pytest.approx(expected, rel=1e-14)
            else:
                assert value == ("" if expected is None else str(expected)), column
                assert obj[column] == expected, column
