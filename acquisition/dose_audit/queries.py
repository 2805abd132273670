"""The report's questions, each one SQL aggregation over the filtered log.

Nothing here loads the log's rows. The counts and sums come from the summaries the dose log
keeps as it is written (migration ``m005_report_summaries``: per month, unit, side, view and
thickness band; per exam and breast), a few thousand rows however long the log: the whole
months a filter covers from the summary, the days at either end of its dates from the rows
(``exposure_summary_row``, one row's share of the summary). A filter the summary cannot
answer (thickness, phase, flagged, one exam), or a log written before the summaries, is
answered from the rows, along the covering indexes of migration ``m004_audit``.

Statistics count the unit's reported AGD of plausible rows (``agd_plausible_mgy``); the
per-exam totals are the one per-breast total of :mod:`dose.totals` (``in_totals``). Medians
are exact: the ``n``-th value of each group walked in AGD order along the index. The scatter
plots get a deterministic sample of a few thousand points (``id % k = 0``), read from the
index of every 64th row (``exposure_sample``) when the filter covers many rows.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from .filters import ExposureFilter
from .reader import AuditLog

#: Points of each scatter plot (sampled evenly over the row ids).
SCATTER_POINTS = 4000
#: Width of the bins of the per-exam totals' distribution, mGy.
EXAM_TOTAL_BIN_MGY = 0.25
#: An exposure is an outlier when its AGD is above this many times the median of its view and
#: thickness band (and the band has at least :data:`OUTLIER_MIN_GROUP` exposures).
OUTLIER_FACTOR = 2.0
OUTLIER_MIN_GROUP = 10
#: Rows listed in each of the report's tables of individual exposures.
LISTED_ROWS = 50
#: The rows of the sample index (migration m005: ``id % 64 = 0``).
SAMPLE_INDEX_EVERY = 64

T = TypeVar("T")


@dataclass(frozen=True)
class Overview:
    exposures: int
    first: str | None
    last: str | None


@dataclass(frozen=True)
class BandStats:
    """One row of the survey table: a view (contact or magnified) and a 10 mm band."""

    magnified: bool
    view: str | None
    band_mm: int
    count: int
    mean_agd_mgy: float
    median_agd_mgy: float
    mean_thickness_mm: float | None
    mean_kvp: float | None
    mean_mas: float | None


@dataclass(frozen=True)
class UnitMonth:
    station_ae: str | None
    device_serial: str | None
    month: str
    count: int
    median_agd_mgy: float


@dataclass(frozen=True)
class Sample:
    """Scatter points: view, magnified, thickness, AGD, kV, mAs."""

    points: list[tuple[str | None, bool, float, float, float | None, float | None]]
    every: int


@dataclass(frozen=True)
class ExamTotals:
    """Distribution of the per-exam totals per breast (the one total)."""

    breasts: int
    bins: list[tuple[float, int]]  # (lower edge mGy, count)
    median_mgy: float | None
    p95_mgy: float | None
    max_mgy: float | None


@dataclass
class ReportData:
    overview: Overview
    survey: list[BandStats]
    unit_months: list[UnitMonth]
    sample: Sample
    exam_totals: ExamTotals
    outliers: list[dict[str, Any]]
    flagged: list[dict[str, Any]]
    flagged_count: int
    disagreements: list[dict[str, Any]]
    disagreement_counts: dict[str, int]
    alerts: list[dict[str, Any]]
    alert_count: int
    #: how long each question took, s (the bench prints them)
    timings: dict[str, float] = field(default_factory=dict)


#: What the report's tables of individual exposures show.
ROW_COLUMNS = (
    "id",
    "acquisition_datetime",
    "station_ae",
    "device_serial",
    "laterality",
    "view_name",
    "is_magnified",
    "compressed_thickness_mm",
    "kvp",
    "agd_reported_mgy",
    "agd_computed_mgy",
    "dance_check",
    "plausibility",
    "alert_flags",
)


class ReportQueries:
    """The report's questions over one audit log and one filter."""

    def __init__(self, log: AuditLog, flt: ExposureFilter) -> None:
        self.log = log
        self.filter = flt.resolve(log.conn)
        self.where, self.params = self.filter.where("e")
        self.timings: dict[str, float] = {}
        summarised = log.has_table("exposure_summary")
        #: the summaries answer the counts (module docstring), or None: the rows do
        self.summary = summary_source(self.filter) if summarised else None
        self.exam_summary = exam_summary_where(self.filter) if summarised else None
        self.sampled = log.has_index("exposure_sample")

    def _timed(self, name: str, question: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return question()
        finally:
            self.timings[name] = time.perf_counter() - started

    def _rows(
        self, sql: str, before: Sequence[Any] = (), after: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        """``sql`` with ``before``, the filter's parameters, then ``after``."""
        return self.log.query(sql, (*before, *self.params, *after))

    def _all(self, sql: str, arguments: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """The one value ``sql`` gives for each ``(before, after)`` of ``arguments`` (the
        filter's parameters between), the statements run at once (:meth:`AuditLog.query_all`)."""
        statements = [(sql, (*before, *self.params, *after)) for before, after in arguments]
        return [rows[0][0] for rows in self.log.query_all(statements)]

    def _summed(self, select: str, source: Source, rest: str = "") -> list[tuple[Any, ...]]:
        """``SELECT {select} FROM`` the summary's filtered rows ``{rest}``."""
        sql, params = source
        return self.log.query(f"SELECT {select} FROM ({sql}) {rest}", params)

    def _medians(self, index: str, match: str, groups: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The exact median AGD of each group (three keys, then its count): its middle values
        walked in AGD order along ``index``, ``match`` picking its rows by the three keys."""
        sql = (
            "SELECT avg(agd) FROM (SELECT e.agd_plausible_mgy AS agd FROM exposure AS e "
            f"INDEXED BY {index} WHERE {match} AND e.agd_plausible_mgy IS NOT NULL "
            f"AND {self.where} ORDER BY e.agd_plausible_mgy LIMIT ? OFFSET ?)"
        )
        return self._all(sql, [(g[:3], _middle(g[3])) for g in groups])

    def _count(self, measure: str) -> int | None:
        """The sum of a summary's count over the filter, or None if the rows must say."""
        if self.summary is None:
            return None
        ((count,),) = self._summed(f"coalesce(sum({measure}), 0)", self.summary(measure))
        return int(count)

    # ---------------------------------------------------------------------------- questions
    def overview(self) -> Overview:
        count = self._count("n_exposures")
        if count is None:
            ((count,),) = self._rows(f"SELECT count(*) FROM exposure AS e WHERE {self.where}")
        ((first,),) = self._rows(
            "SELECT min(e.acquisition_datetime) FROM exposure AS e "
            f"WHERE e.acquisition_datetime IS NOT NULL AND {self.where}"
        )
        ((last,),) = self._rows(
            f"SELECT max(e.acquisition_datetime) FROM exposure AS e WHERE {self.where}"
        )
        return Overview(int(count), first, last)

    def survey(self) -> list[BandStats]:
        """Per view (contact, magnified) and 10 mm band: count, mean and median AGD, means of
        thickness, kV and mAs (the layout of a national dose survey's table)."""
        if self.summary is not None:
            groups = self._summed(
                "is_magnified, view_name, thickness_band_mm, sum(n_agd), "
                "sum(sum_agd_mgy) / sum(n_agd), sum(sum_thickness_mm) / sum(n_agd), "
                "sum(sum_kvp) / sum(n_kvp), sum(sum_uas) / sum(n_uas) / 1000.0",
                self.summary(
                    "is_magnified, view_name, thickness_band_mm, n_agd, sum_agd_mgy, "
                    "sum_thickness_mm, n_kvp, sum_kvp, n_uas, sum_uas"
                ),
                "WHERE thickness_band_mm IS NOT NULL GROUP BY 1, 2, 3 HAVING sum(n_agd) > 0",
            )
        else:
            groups = self._rows(
                "SELECT e.is_magnified, e.view_name, e.thickness_band_mm, count(*), "
                "avg(e.agd_plausible_mgy), avg(e.compressed_thickness_mm), avg(e.kvp), "
                "avg(e.exposure_uas) / 1000.0 "
                "FROM exposure AS e INDEXED BY exposure_view_band "
                f"WHERE e.agd_plausible_mgy IS NOT NULL AND e.thickness_band_mm IS NOT NULL "
                f"AND {self.where} "
                "GROUP BY e.is_magnified, e.view_name, e.thickness_band_mm"
            )
        medians = self._medians(
            "exposure_view_band",
            "e.is_magnified = ? AND e.view_name IS ? AND e.thickness_band_mm = ?",
            groups,
        )
        return [
            BandStats(
                bool(magnified), view, int(band), int(count), mean, median, thickness, kvp, mas
            )
            for (magnified, view, band, count, mean, thickness, kvp, mas), median in zip(
                groups, medians, strict=True
            )
        ]

    def unit_months(self) -> list[UnitMonth]:
        if self.summary is not None:
            groups = self._summed(
                "station_ae, device_serial, acquisition_month, sum(n_agd)",
                self.summary("station_ae, device_serial, acquisition_month, n_agd"),
                "WHERE acquisition_month IS NOT NULL GROUP BY 1, 2, 3 HAVING sum(n_agd) > 0",
            )
        else:
            groups = self._rows(
                "SELECT e.station_ae, e.device_serial, e.acquisition_month, count(*) "
                "FROM exposure AS e INDEXED BY exposure_unit_month "
                "WHERE e.agd_plausible_mgy IS NOT NULL AND e.acquisition_month IS NOT NULL "
                f"AND {self.where} GROUP BY e.station_ae, e.device_serial, e.acquisition_month"
            )
        medians = self._medians(
            "exposure_unit_month",
            "e.station_ae IS ? AND e.device_serial IS ? AND e.acquisition_month = ?",
            groups,
        )
        return [
            UnitMonth(station, serial, month, int(count), median)
            for (station, serial, month, count), median in zip(groups, medians, strict=True)
        ]

    def sample(self, total: int) -> Sample:
        """One row in ``every``, read from the sample index (every 64th row) when the filter
        covers enough rows for it, else along the filter's own index."""
        every = max(1, total // SCATTER_POINTS)
        source = "exposure AS e WHERE"
        if self.sampled and every >= SAMPLE_INDEX_EVERY:
            every -= every % SAMPLE_INDEX_EVERY  # a multiple: rows of the index
            source = (
                "exposure AS e INDEXED BY exposure_sample "
                f"WHERE e.id % {SAMPLE_INDEX_EVERY} = 0 AND"
            )
        rows = self._rows(
            "SELECT e.view_name, e.is_magnified, e.compressed_thickness_mm, "
            f"e.agd_plausible_mgy, e.kvp, e.exposure_uas / 1000.0 FROM {source} "
            "e.agd_plausible_mgy IS NOT NULL AND e.compressed_thickness_mm IS NOT NULL "
            f"AND e.id % ? = 0 AND {self.where}",
            (every,),
        )
        return Sample([(v, bool(m), t, a, k, s) for v, m, t, a, k, s in rows], every)

    def exam_totals(self) -> ExamTotals:
        binned = f"SELECT CAST(total / {EXAM_TOTAL_BIN_MGY} AS INTEGER), count(*), max(total)"
        if self.exam_summary is not None:
            where, params = self.exam_summary
            rows = self.log.query(
                f"{binned} FROM (SELECT sum(s.total_mgy) AS total FROM exam_breast_summary "
                f"AS s WHERE {where} GROUP BY s.study_instance_uid, s.laterality) "
                "GROUP BY 1 ORDER BY 1",
                params,
            )
        else:
            rows = self._rows(
                f"{binned} FROM (SELECT sum(e.agd_reported_mgy) AS total FROM exposure AS e "
                "INDEXED BY exposure_exam_breast WHERE e.study_instance_uid IS NOT NULL "
                f"AND e.laterality IN ('L', 'R') AND e.in_totals = 1 AND {self.where} "
                "GROUP BY e.study_instance_uid, e.laterality) GROUP BY 1 ORDER BY 1"
            )
        bins = [(int(b) * EXAM_TOTAL_BIN_MGY, int(n)) for b, n, _ in rows]
        breasts = sum(n for _, n in bins)
        return ExamTotals(
            breasts,
            bins,
            _binned_quantile(bins, breasts, 0.5),
            _binned_quantile(bins, breasts, 0.95),
            max((m for _, _, m in rows), default=None),
        )

    def outliers(self, survey: Sequence[BandStats]) -> list[dict[str, Any]]:
        """Exposures above :data:`OUTLIER_FACTOR` × their view and band's median AGD, the
        furthest first (a range seek per band along the survey's index)."""
        found: list[dict[str, Any]] = []
        sql = (
            f"SELECT {', '.join('e.' + c for c in ROW_COLUMNS)} FROM exposure AS e "
            "INDEXED BY exposure_view_band WHERE e.is_magnified = ? AND e.view_name IS ? "
            "AND e.thickness_band_mm = ? AND e.agd_plausible_mgy > ? "
            f"AND {self.where} ORDER BY e.agd_plausible_mgy DESC LIMIT ?"
        )
        for band in survey:
            if band.count < OUTLIER_MIN_GROUP:
                continue
            limit = OUTLIER_FACTOR * band.median_agd_mgy
            for row in self._rows(
                sql, (int(band.magnified), band.view, band.band_mm, limit), (LISTED_ROWS,)
            ):
                found.append(
                    {
                        **dict(zip(ROW_COLUMNS, row, strict=True)),
                        "band_median_mgy": band.median_agd_mgy,
                        "times_median": row[ROW_COLUMNS.index("agd_reported_mgy")]
                        / band.median_agd_mgy,
                    }
                )
        found.sort(key=lambda r: -r["times_median"])
        return found[:LISTED_ROWS]

    def flagged(self) -> tuple[list[dict[str, Any]], int]:
        columns = ", ".join("e." + c for c in ROW_COLUMNS)
        rows = self._rows(
            f"SELECT {columns} FROM exposure AS e WHERE e.is_flagged = 1 AND {self.where} "
            "ORDER BY e.acquisition_datetime DESC LIMIT ?",
            after=(LISTED_ROWS,),
        )
        count = self._count("n_flagged")
        if count is None:
            ((count,),) = self._rows(
                f"SELECT count(*) FROM exposure AS e WHERE e.is_flagged = 1 AND {self.where}"
            )
        return [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows], int(count)

    def disagreements(self) -> tuple[list[dict[str, Any]], dict[str, int]]:
        columns = ", ".join("e." + c for c in ROW_COLUMNS)
        counts = {}
        for verdict, measure in (
            ("disagrees", "n_dance_disagrees"),
            ("unit suspected", "n_dance_unit_suspected"),
        ):
            n = self._count(measure)
            if n is None:
                ((n,),) = self._rows(
                    f"SELECT count(*) FROM exposure AS e WHERE e.dance_check = ? AND {self.where}",
                    (verdict,),
                )
            counts[verdict] = int(n)
        rows = self._rows(
            f"SELECT {columns} FROM exposure AS e "
            f"WHERE e.dance_check IN ('disagrees', 'unit suspected') AND {self.where} "
            "ORDER BY e.acquisition_datetime DESC LIMIT ?",
            after=(LISTED_ROWS,),
        )
        return [dict(zip(ROW_COLUMNS, r, strict=True)) for r in rows], counts

    def alerts(self) -> tuple[list[dict[str, Any]], int]:
        columns = (
            "a.id", "a.raised_at", "a.level_name", "a.value_mgy", "a.limit_mgy", "a.scope",
            "a.laterality", "e.acquisition_datetime", "e.station_ae", "e.view_name", "a.detail",
        )  # fmt: skip
        joined = (
            "FROM dose_alert AS a JOIN exposure AS e ON e.id = a.exposure_id "
            f"WHERE a.state = 'open' AND {self.where}"
        )
        rows = self._rows(
            f"SELECT {', '.join(columns)} {joined} ORDER BY a.id DESC LIMIT ?",
            after=(LISTED_ROWS,),
        )
        count = self._count("n_open_alerts")
        if count is None:
            ((count,),) = self._rows(f"SELECT count(*) {joined}")
        names = [c.split(".")[1] for c in columns]
        return [dict(zip(names, r, strict=True)) for r in rows], int(count)

    # ---------------------------------------------------------------------------- all
    def run(self) -> ReportData:
        overview = self._timed("overview", self.overview)
        survey = self._timed("survey table and medians", self.survey)
        unit_months = self._timed("monthly median AGD per unit", self.unit_months)
        sample = self._timed("scatter sample", lambda: self.sample(overview.exposures))
        exam_totals = self._timed("per-exam totals", self.exam_totals)
        outliers = self._timed("outliers", lambda: self.outliers(survey))
        flagged, flagged_count = self._timed("flagged rows", self.flagged)
        disagreements, counts = self._timed("Dance disagreements", self.disagreements)
        alerts, alert_count = self._timed("open alerts", self.alerts)
        return ReportData(
            overview, survey, unit_months, sample, exam_totals, outliers, flagged,
            flagged_count, disagreements, counts, alerts, alert_count, self.timings,
        )  # fmt: skip


#: A summary's filtered rows: ``source(columns)`` is the SQL (and its parameters) of a
#: FROM-clause subquery giving those summary columns.
Source = tuple[str, list[Any]]


def summary_source(flt: ExposureFilter) -> Callable[[str], Source] | None:
    """How to read the summary ``exposure_summary`` under ``flt``: the whole months its dates
    cover from the summary, the days at either end from the rows' shares
    (``exposure_summary_row``); None for a filter on what the summary does not keep."""
    if flt.thickness_mm != (None, None) or flt.phase or flt.flagged or flt.accession:
        return None
    months, ends = whole_months(flt.date_from, flt.date_to)
    undated, params = replace(flt, date_from=None, date_to=None).where("s")
    parts: list[tuple[str, str, list[Any]]] = []
    if months is not None:
        first, last = months
        terms, values = [undated], list(params)
        for term, month in (
            ("s.acquisition_month >= ?", first),
            ("s.acquisition_month <= ?", last),
        ):
            if month is not None:
                terms.append(term)
                values.append(month)
        parts.append(("exposure_summary", " AND ".join(terms), values))
    for start, end in ends:
        where, values = replace(flt, date_from=start, date_to=end).where("s")
        parts.append(("exposure_summary_row", where, values))

    def source(columns: str) -> Source:
        if not parts:  # no day between the dates
            return f"SELECT {columns} FROM exposure_summary AS s WHERE 0", []
        return (
            " UNION ALL ".join(f"SELECT {columns} FROM {t} AS s WHERE {w}" for t, w, _ in parts),
            [value for _, _, values in parts for value in values],
        )

    return source


def whole_months(
    date_from: dt.date | None, date_to: dt.date | None
) -> tuple[tuple[str | None, str | None] | None, list[tuple[dt.date, dt.date]]]:
    """The whole months between two dates, both included (``YYYY-MM`` of the first and the
    last, None for an open end; None if there is none), and the days left at either end, as
    ``(first day, last day)`` ranges."""
    first = None if date_from is None else date_from.replace(day=1)
    ends: list[tuple[dt.date, dt.date]] = []
    if date_from is not None and date_from.day != 1:
        first = _next_month(date_from)
        ends.append((date_from, min(first - dt.timedelta(days=1), date_to or date_from.max)))
    last = None if date_to is None else date_to.replace(day=1)
    if date_to is not None and date_to != _next_month(date_to) - dt.timedelta(days=1):
        start = max(date_to.replace(day=1), date_from or date_to.min)
        if not ends or ends[0][1] < start:
            ends.append((start, date_to))
        last = _previous_month(date_to)
    if first is not None and last is not None and first > last:
        return None, ends
    return (_month(first), _month(last)), ends


def _month(day: dt.date | None) -> str | None:
    return None if day is None else day.strftime("%Y-%m")


def _next_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def _previous_month(day: dt.date) -> dt.date:
    return (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


def exam_summary_where(flt: ExposureFilter) -> Source | None:
    """The condition on ``exam_breast_summary`` (alias ``s``: per exam, breast, day and unit)
    of a filter, or None for one on what it does not keep (the views, thickness, phase,
    flagged, one exam). Its rows are the rows that count in a breast's total: never
    physics/QA."""
    if summary_source(flt) is None or flt.views or flt.magnified != "any":
        return None
    where, params = replace(flt, date_from=None, date_to=None, include_qa=True).where("s")
    terms = [where]
    if flt.date_from is not None:
        terms.append("s.acquisition_date >= ?")
        params.append(flt.date_from.isoformat())
    if flt.date_to is not None:
        terms.append("s.acquisition_date <= ?")
        params.append(flt.date_to.isoformat())
    return " AND ".join(terms), params


def _middle(count: int) -> tuple[int, int]:
    """LIMIT, OFFSET of the median's one or two middle values in ``count`` sorted values."""
    return (1 if count % 2 else 2), (count - 1) // 2


def _binned_quantile(bins: Sequence[tuple[float, int]], total: int, q: float) -> float | None:
    """The quantile ``q`` of binned values, to the bin (its upper edge)."""
    if not total:
        return None
    seen = 0
    for edge, count in bins:
        seen += count
        if seen >= q * total:
            return edge + EXAM_TOTAL_BIN_MGY
    return bins[-1][0] + EXAM_TOTAL_BIN_MGY
