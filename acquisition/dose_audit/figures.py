"""The report's figures, drawn with matplotlib from the aggregates of :mod:`.queries`.

Each figure is drawn once and saved as SVG (embedded in the page) and, for a report written to
a folder, as PNG and SVG files beside it. The SVG is deterministic (no date, a fixed hash salt)
so that the same log gives the same page.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from dose.levels import VIEW_NAMES, LevelSet
from dose.record import MAGNIFICATION_CODE
from dose.survey import BAND_MM

from .queries import EXAM_TOTAL_BIN_MGY, ReportData

plt.rcParams.update(
    {
        "svg.hashsalt": "galacto",
        "font.size": 9,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
    }
)
#: Panels of the AGD-thickness figure: the most frequent views.
MAX_PANELS = 4
THICKNESS_RANGE_MM = (15.0, 115.0)
_CODE_OF_VIEW = {name: code for code, name in VIEW_NAMES.items()}


@dataclass(frozen=True)
class Drawn:
    """One figure: its file name (without extension), its caption, the figure."""

    name: str
    caption: str
    figure: Figure

    def svg_file(self) -> str:
        """A standalone SVG document."""
        buffer = io.StringIO()
        self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue()

    def svg(self) -> str:
        """The SVG element, to embed in a page (no XML prolog nor DOCTYPE)."""
        text = self.svg_file()
        return text[text.index("<svg") :]

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
        return buffer.getvalue()

    def close(self) -> None:
        plt.close(self.figure)


def _label(view: str | None, magnified: bool) -> str:
    return f"{view or 'no view'} {'magnified' if magnified else 'contact'}"


def level_curves(
    levels: LevelSet, view: str | None, magnified: bool
) -> dict[str, list[tuple[float, float]]]:
    """The reference levels that apply to a view, as (breast thickness, limit) points: a
    PMMA-equivalent level is a curve, a thickness-band level a segment, a fixed one a line."""
    row: dict[str, Any] = {
        "view_code": _CODE_OF_VIEW.get(view or ""),
        "view_modifier_codes": MAGNIFICATION_CODE if magnified else "",
    }
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    low, high = THICKNESS_RANGE_MM
    for step in range(int(low), int(high) + 1):
        row["compressed_thickness_mm"] = float(step)
        for comparison in levels.compare_exposure(row, 0.0):
            if comparison.limit_mgy is not None:
                curves[comparison.level.name].append((float(step), comparison.limit_mgy))
    return dict(curves)


def agd_thickness(data: ReportData, levels: LevelSet) -> Drawn:
    counts: dict[tuple[str | None, bool], int] = defaultdict(int)
    for band in data.survey:
        counts[(band.view, band.magnified)] += band.count
    panels = sorted(counts, key=lambda key: -counts[key])[:MAX_PANELS] or [("CC", False)]
    columns = min(2, len(panels))
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False, sharex=True
    )
    for ax, (view, magnified) in zip(axes.flat, panels, strict=False):
        points = [p for p in data.sample.points if p[0] == view and p[1] == magnified]
        ax.scatter(
            [p[2] for p in points], [p[3] for p in points], s=4, alpha=0.35, color="#4a7ab5",
            label=f"exposures (1 in {data.sample.every})", rasterized=len(points) > 2000,
        )  # fmt: skip
        bands = sorted(
            (b for b in data.survey if b.view == view and b.magnified == magnified),
            key=lambda b: b.band_mm,
        )
        ax.plot(
            [b.band_mm + BAND_MM / 2 for b in bands],
            [b.median_agd_mgy for b in bands],
            "o-", color="#c0392b", label=f"median per {BAND_MM} mm band",
        )  # fmt: skip
        for (name, curve), style in zip(
            level_curves(levels, view, magnified).items(), ("--", ":", "-.", "--"), strict=False
        ):
            ax.plot([x for x, _ in curve], [y for _, y in curve], style, color="#333", label=name)
        ax.set_title(_label(view, magnified))
        ax.set_xlabel("compressed breast thickness (mm)")
        ax.set_ylabel("AGD reported (mGy)")
        ax.set_xlim(*THICKNESS_RANGE_MM)
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.tight_layout()
    return Drawn(
        "agd-thickness",
        "AGD against compressed thickness per view: sampled exposures, the median per band "
        "and the reference levels (EUREF levels at the breast's PMMA-equivalent thickness).",
        figure,
    )


def technique_thickness(data: ReportData) -> Drawn:
    figure, (kv_ax, mas_ax) = plt.subplots(1, 2, figsize=(10.4, 3.6))
    for magnified, color in ((False, "#4a7ab5"), (True, "#e67e22")):
        points = [p for p in data.sample.points if p[1] == magnified]
        label = "magnified" if magnified else "contact"
        for ax, index in ((kv_ax, 4), (mas_ax, 5)):
            ax.scatter(
                [p[2] for p in points if p[index] is not None],
                [p[index] for p in points if p[index] is not None],
                s=4, alpha=0.35, color=color, label=label, rasterized=len(points) > 2000,
            )  # fmt: skip
    contact = [b for b in data.survey if not b.magnified]
    xs = sorted({b.band_mm for b in contact})
    for ax, attribute, name in ((kv_ax, "mean_kvp", "kV"), (mas_ax, "mean_mas", "mAs")):
        means = [
            _weighted_mean([(b.count, getattr(b, attribute)) for b in contact if b.band_mm == x])
            for x in xs
        ]
        ax.plot(
            [x + BAND_MM / 2 for x in xs], means, "o-", color="#c0392b",
            label=f"contact: mean per {BAND_MM} mm band",
        )  # fmt: skip
        ax.set_xlabel("compressed breast thickness (mm)")
        ax.set_ylabel(name)
        ax.set_xlim(*THICKNESS_RANGE_MM)
        ax.legend(fontsize=7, loc="upper left")
    kv_ax.set_title("tube voltage")
    mas_ax.set_title("tube current–time product")
    figure.tight_layout()
    return Drawn("technique-thickness", "kV and mAs against compressed thickness.", figure)


def _weighted_mean(pairs: Sequence[tuple[int, float | None]]) -> float | None:
    """The mean of per-band means, each weighted by its count."""
    known = [(n, v) for n, v in pairs if v is not None]
    total = sum(n for n, _ in known)
    return sum(n * v for n, v in known) / total if total else None


def monthly_medians(data: ReportData) -> Drawn:
    figure, ax = plt.subplots(figsize=(10.4, 3.8))
    series: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for point in data.unit_months:
        unit = " ".join(x for x in (point.station_ae, point.device_serial) if x) or "unknown unit"
        series[unit].append((point.month, point.median_agd_mgy))
    months = sorted({p.month for p in data.unit_months})
    position = {month: i for i, month in enumerate(months)}
    for unit, values in sorted(series.items()):
        ax.plot([position[m] for m, _ in values], [v for _, v in values], "-", lw=1, label=unit)
    step = max(1, len(months) // 12)
    ax.set_xticks(range(0, len(months), step), months[::step], rotation=45, ha="right")
    ax.set_ylabel("median AGD reported (mGy)")
    ax.set_title("monthly median AGD per unit")
    if len(series) <= 24:
        ax.legend(fontsize=6, ncol=4, loc="upper left")
    figure.tight_layout()
    return Drawn("monthly-median", "Monthly median AGD per unit (AE title and serial).", figure)


def exam_totals(data: ReportData, levels: LevelSet) -> Drawn:
    figure, ax = plt.subplots(figsize=(10.4, 3.4))
    totals = data.exam_totals
    ax.bar(
        [edge for edge, _ in totals.bins],
        [count for _, count in totals.bins],
        width=EXAM_TOTAL_BIN_MGY,
        align="edge",
        color="#4a7ab5",
    )
    for value, name in ((totals.median_mgy, "median"), (totals.p95_mgy, "95th percentile")):
        if value is not None:
            ax.axvline(value, color="#c0392b", ls="--", lw=1)
            ax.annotate(name, (value, 0.95), xycoords=("data", "axes fraction"), fontsize=7)
    for comparison in levels.compare_exam_breast(0.0):
        if comparison.limit_mgy is not None:
            ax.axvline(comparison.limit_mgy, color="#333", ls=":", lw=1)
            ax.annotate(
                comparison.level.name, (comparison.limit_mgy, 0.85),
                xycoords=("data", "axes fraction"), fontsize=7,
            )  # fmt: skip
    ax.set_xlabel("accumulated AGD of one breast in one exam (mGy)")
    ax.set_ylabel("breasts")
    ax.set_title("distribution of per-exam totals (per breast)")
    figure.tight_layout()
    return Drawn(
        "exam-totals",
        "Per-exam accumulated AGD per breast: the one total (implausible and physics/QA "
        "exposures left out), in bins of 0.25 mGy.",
        figure,
    )


def all_figures(data: ReportData, levels: LevelSet) -> Sequence[Drawn]:
    return (
        agd_thickness(data, levels),
        technique_thickness(data),
        monthly_medians(data),
        exam_totals(data, levels),
    )
