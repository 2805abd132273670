"""``galacto dose report``: one self-contained HTML page of plots and tables, openable offline.

The page holds (docs/dose.md, "The report"):

1. AGD against compressed thickness per view: a sample of the exposures, the median per 10 mm
   band and the reference-level curves;
2. kV and mAs against thickness;
3. the monthly median AGD per unit;
4. the distribution of the per-exam totals per breast;
5. a summary table in the layout of a national dose survey: count, mean and median AGD per
   view (contact / magnified) and thickness band;
6. the outliers, the flagged rows, the Dance-check disagreements and the open alerts.

Every number is aggregated in SQL (:mod:`.queries`); the plots are matplotlib SVG embedded in
the page (:mod:`.figures`). With a folder as output, ``report.html`` is written there and every
figure beside it as PNG and SVG. Files are private (0600), as they describe patients' exams.
"""

from __future__ import annotations

import datetime as dt
import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose.levels import LevelSet
from dose.survey import band_label
from storage.files import open_private, private_dir

from .figures import Drawn, all_figures
from .filters import ExposureFilter
from .queries import OUTLIER_FACTOR, ReportData, ReportQueries
from .reader import AuditLog

REPORT_FILE = "report.html"
ALERT_HEADERS = (
    "alert", "raised (UTC)", "level", "value mGy", "limit mGy", "scope", "side", "acquired",
    "unit", "view", "detail",
)  # fmt: skip

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
.note { color: #555; font-size: 0.85em; }
svg { max-width: 100%; height: auto; }
"""


@dataclass(frozen=True)
class WrittenReport:
    """What was written, and how long the questions and the whole took."""

    page: Path
    figure_files: tuple[Path, ...]
    data: ReportData
    elapsed_s: float


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], text_columns: int = 0) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="text">{_cell(v)}</td>' if i < text_columns else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return '<p class="note">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _exposure_rows(rows: Sequence[dict[str, Any]], *extra: str) -> str:
    headers = (
        "id", "acquired", "unit", "side", "view", "thick mm", "kV", "AGD mGy", "Dance mGy",
        *extra, "flags",
    )  # fmt: skip
    table = []
    for r in rows:
        view = f"{r['view_name'] or '—'}{' MAG' if r['is_magnified'] else ''}"
        flags = "; ".join(x for x in (r["plausibility"], r["dance_check"], r["alert_flags"]) if x)
        table.append(
            (
                r["id"], r["acquisition_datetime"], r["station_ae"] or r["device_serial"],
                r["laterality"], view, r["compressed_thickness_mm"], r["kvp"],
                r["agd_reported_mgy"], r["agd_computed_mgy"], *(r[e] for e in extra), flags,
            )
        )  # fmt: skip
    return _table(headers, table, text_columns=5)


def _survey_table(data: ReportData) -> str:
    rows = [
        (
            f"{b.view or '—'} {'magnified' if b.magnified else 'contact'}",
            band_label(b.band_mm),
            b.count,
            b.mean_agd_mgy,
            b.median_agd_mgy,
            b.mean_thickness_mm,
            b.mean_kvp,
            b.mean_mas,
        )
        for b in sorted(data.survey, key=lambda b: (b.magnified, b.view or "", b.band_mm))
    ]
    return _table(
        ("view", "thickness band", "exposures", "mean AGD mGy", "median AGD mGy",
         "mean thickness mm", "mean kV", "mean mAs"),
        rows,
        text_columns=2,
    )  # fmt: skip


def render_html(
    data: ReportData, figures: Sequence[Drawn], flt: ExposureFilter, source: str
) -> str:
    o = data.overview
    totals = data.exam_totals
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>galacto dose report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Dose report</h1>",
        f"<p>{html.escape(source)} · generated "
        f"{dt.datetime.now().astimezone().isoformat(timespec='seconds')}</p>",
        f"<p><b>Filter:</b> {html.escape(flt.describe())}</p>",
        f"<p><b>{o.exposures}</b> exposures, {_cell(o.first)} to {_cell(o.last)} "
        f"(the units' local times); {totals.breasts} exam breasts with a total.</p>",
    ]
    for figure in figures:
        parts.append(
            f'<figure id="{figure.name}">{figure.svg()}'
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
        )
        if figure.name == "exam-totals":
            parts.append(
                f"<p>Per-exam totals per breast: median {_cell(totals.median_mgy, 2)} mGy, "
                f"95th percentile {_cell(totals.p95_mgy, 2)} mGy (to the 0.25 mGy bin), "
                f"highest {_cell(totals.max_mgy, 2)} mGy.</p>"
            )
    parts += [
        '<h2 id="survey">Summary by view and thickness band</h2>',
        '<p class="note">The layout of a national dose survey: the unit\'s reported AGD of '
        "plausible exposures.</p>",
        _survey_table(data),
        '<h2 id="outliers">Outliers</h2>',
        f'<p class="note">Exposures above {OUTLIER_FACTOR:g} × the median AGD of their view '
        "and thickness band.</p>",
        _exposure_rows(data.outliers, "times_median"),
        f'<h2 id="flagged">Flagged exposures ({data.flagged_count})</h2>',
        '<p class="note">Implausible, disagreeing with the Dance check, or above a level '
        "that alerts; the latest first.</p>",
        _exposure_rows(data.flagged),
        '<h2 id="dance">Dance-check disagreements</h2>',
        "<p>"
        + ", ".join(f"{html.escape(k)}: {v}" for k, v in data.disagreement_counts.items())
        + "</p>",
        _exposure_rows(data.disagreements),
        f'<h2 id="alerts">Open alerts ({data.alert_count})</h2>',
        _table(ALERT_HEADERS, [tuple(a.values()) for a in data.alerts], text_columns=3),
        '<p class="note">Queries: '
        + ", ".join(f"{html.escape(k)} {v:.3f} s" for k, v in data.timings.items())
        + "</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(
    log: AuditLog, flt: ExposureFilter, output: str | Path, levels: LevelSet
) -> WrittenReport:
    """Write the report to ``output``: a file, or a folder (``report.html`` and the figures
    as PNG and SVG)."""
    started = time.perf_counter()
    data = ReportQueries(log, flt).run()
    figures = all_figures(data, levels)
    target = Path(output)
    folder = target if target.is_dir() or str(output).endswith(("/", "\\")) else None
    written: list[Path] = []
    try:
        page = render_html(data, figures, flt, f"{log.path.name}")
        if folder is not None:
            private_dir(folder)
            for figure in figures:
                for extension, content in (("svg", figure.svg_file()), ("png", figure.png())):
                    path = folder / f"{figure.name}.{extension}"
                    mode = "w" if isinstance(content, str) else "wb"
                    with open_private(path, mode) as out:
                        out.write(content)  # type: ignore[arg-type]
                    written.append(path)
            target = folder / REPORT_FILE
        with open_private(target, "w", encoding="utf-8") as out:
            out.write(page)
    finally:
        for figure in figures:
            figure.close()
    return WrittenReport(target, tuple(written), data, time.perf_counter() - started)
