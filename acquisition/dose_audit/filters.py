"""The physicist's filters of the dose log, shared by ``dose list``, ``export`` and ``report``.

``--from DATE --to DATE --station AE --device-serial SERIAL --manufacturer TEXT --view NAME
--magnified {yes,no,any} --thickness MIN-MAX --laterality {L,R} --phase NAME --flagged
--include-qa --exam ACCESSION`` become one :class:`ExposureFilter`, and that one SQL ``WHERE``
clause (:meth:`ExposureFilter.where`) over the ``exposure`` table, every condition of which an
index of migration ``m004_audit`` serves (``tests`` check the query plans).

- Dates are the unit's local dates (``acquisition_datetime`` is the unit's local time; its
  offset from UTC is kept beside it), both ends inclusive.
- ``--view CC`` matches contact and magnified CC unless ``--magnified`` narrows it.
- ``--manufacturer`` matches a part of the name, whatever the case ("hologic" finds
  "HOLOGIC, Inc."): the few manufacturers in the log are looked up first, then matched exactly.
- Physics/QA exposures are left out unless ``--include-qa``.
- ``--flagged``: implausible, the Dance check disagrees or suspects a unit, or an alert was
  raised (the row's ``is_flagged``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import sqlite3
from dataclasses import dataclass, field, replace
from typing import Any

from dose.levels import VIEW_NAMES

#: The views ``--view`` accepts: the short names of CID 4014 (``exposure.view_name``).
VIEW_CHOICES: tuple[str, ...] = tuple(VIEW_NAMES.values())
MAGNIFIED_CHOICES = ("yes", "no", "any")
LATERALITY_CHOICES = ("L", "R")


class FilterError(ValueError):
    """A filter value that cannot be used (the message names the flag)."""


@dataclass(frozen=True)
class ExposureFilter:
    """Which exposures a listing, an export or a report covers (module docstring)."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    station_ae: str | None = None
    device_serial: str | None = None
    manufacturer: str | None = None
    views: tuple[str, ...] = ()
    magnified: str = "any"
    thickness_mm: tuple[float | None, float | None] = (None, None)
    laterality: str | None = None
    phase: str | None = None
    flagged: bool = False
    include_qa: bool = False
    accession: str | None = None
    #: filled by :meth:`resolve`: the manufacturers of the log that ``manufacturer`` matches
    manufacturers: tuple[str, ...] | None = field(default=None, compare=False)

    def resolve(self, conn: sqlite3.Connection) -> ExposureFilter:
        """Look up the manufacturers ``--manufacturer`` matches (a few distinct values,
        read from their index), so that the filter is an indexed ``IN``."""
        if self.manufacturer is None:
            return self
        wanted = self.manufacturer.casefold()
        names: list[str] = []
        while True:  # a loose index scan: one seek per manufacturer, not one per row
            (name,) = conn.execute(
                "SELECT min(manufacturer) FROM exposure WHERE manufacturer > ?",
                (names[-1] if names else "",),
            ).fetchone()
            if name is None:
                break
            names.append(name)
        matched = tuple(sorted(name for name in names if wanted in str(name).casefold()))
        return replace(self, manufacturers=matched)

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        """The SQL condition and its parameters (``1`` when nothing is filtered)."""
        c = f"{alias}." if alias else ""
        terms: list[str] = []
        params: list[Any] = []
        if self.date_from is not None:
            terms.append(f"{c}acquisition_datetime >= ?")
            params.append(self.date_from.isoformat())
        if self.date_to is not None:  # inclusive: everything before the next day
            terms.append(f"{c}acquisition_datetime < ?")
            params.append((self.date_to + dt.timedelta(days=1)).isoformat())
        for column, value in (
            ("station_ae", self.station_ae),
            ("device_serial", self.device_serial),
            ("laterality", self.laterality),
            ("phase", self.phase),
            ("accession", self.accession),
        ):
            if value is not None:
                terms.append(f"{c}{column} = ?")
                params.append(value)
        if self.manufacturer is not None:
            if self.manufacturers is None:
                raise RuntimeError("ExposureFilter.resolve() first: --manufacturer is a lookup")
            terms.append(f"{c}manufacturer IN ({', '.join('?' * len(self.manufacturers))})")
            params.extend(self.manufacturers)
        if self.views or self.magnified != "any":
            # is_magnified leads the view index: "IN (0, 1)" lets --view alone use it
            flags = {"yes": (1,), "no": (0,), "any": (0, 1)}[self.magnified]
            terms.append(f"{c}is_magnified IN ({', '.join(map(str, flags))})")
            if self.views:
                terms.append(f"{c}view_name IN ({', '.join('?' * len(self.views))})")
                params.extend(self.views)
        low, high = self.thickness_mm
        if low is not None:
            terms.append(f"{c}compressed_thickness_mm >= ?")
            params.append(low)
        if high is not None:
            terms.append(f"{c}compressed_thickness_mm <= ?")
            params.append(high)
        if self.flagged:
            terms.append(f"{c}is_flagged = 1")
        if not self.include_qa:
            terms.append(f"{c}is_qa = 0")
        return (" AND ".join(terms) or "1"), params

    def describe(self) -> str:
        """The filter in words, for a report's heading and a summary line."""
        parts = []
        if self.date_from or self.date_to:
            parts.append(f"{self.date_from or '…'} to {self.date_to or '…'} (unit's local dates)")
        for label, value in (
            ("station", self.station_ae),
            ("serial", self.device_serial),
            ("manufacturer ~", self.manufacturer),
            ("side", self.laterality),
            ("phase", self.phase),
            ("exam", self.accession),
        ):
            if value is not None:
                parts.append(f"{label} {value}")
        if self.views:
            parts.append("view " + "/".join(self.views))
        if self.magnified != "any":
            parts.append("magnified" if self.magnified == "yes" else "contact")
        low, high = self.thickness_mm
        if low is not None or high is not None:
            parts.append(f"thickness {_mm(low)}–{_mm(high)} mm")
        if self.flagged:
            parts.append("flagged only")
        parts.append("physics/QA included" if self.include_qa else "physics/QA left out")
        return "; ".join(parts)


def _mm(value: float | None) -> str:
    return "…" if value is None else f"{value:g}"


# ---------------------------------------------------------------------------------- parsing


def parse_date(text: str, flag: str) -> dt.date:
    """``YYYY-MM-DD`` (or ``YYYYMMDD``, DICOM's DA)."""
    value = text.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise FilterError(f"{flag} {text!r}: expected a date YYYY-MM-DD")


_RANGE = re.compile(r"^\s*([0-9.]*)\s*-\s*([0-9.]*)\s*$")


def parse_thickness(text: str) -> tuple[float | None, float | None]:
    """``MIN-MAX`` in mm, inclusive; either end may be left open (``40-``, ``-60``)."""
    match = _RANGE.match(text)
    if match is None or not (match.group(1) or match.group(2)):
        raise FilterError(f"--thickness {text!r}: expected MIN-MAX in mm, e.g. 40-60")
    bounds: list[float | None] = []
    for part in match.groups():
        if not part:
            bounds.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise FilterError(f"--thickness {text!r}: {part!r} is not a number") from None
        if not math.isfinite(value):
            raise FilterError(f"--thickness {text!r}: {part!r} is not a thickness")
        bounds.append(value)
    low, high = bounds
    if low is not None and high is not None and low > high:
        raise FilterError(f"--thickness {text!r}: MIN is above MAX")
    return low, high


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    """The filter flags (the contract of issue 10)."""
    group = parser.add_argument_group("filters (all must hold)")
    group.add_argument("--from", dest="date_from", metavar="DATE", help="from this local date")
    group.add_argument("--to", dest="date_to", metavar="DATE", help="to this local date, included")
    group.add_argument("--station", metavar="AE", help="the unit's AE title")
    group.add_argument("--device-serial", metavar="SERIAL", help="the unit's serial number")
    group.add_argument(
        "--manufacturer", metavar="TEXT", help="the manufacturer's name contains TEXT (any case)"
    )
    group.add_argument(
        "--view",
        dest="views",
        action="append",
        choices=VIEW_CHOICES,
        metavar="{" + ",".join(VIEW_CHOICES) + "}",
        help="this view, contact or magnified (repeatable)",
    )
    group.add_argument("--magnified", choices=MAGNIFIED_CHOICES, default="any")
    group.add_argument("--thickness", metavar="MIN-MAX", help="compressed thickness, mm")
    group.add_argument("--laterality", choices=LATERALITY_CHOICES)
    group.add_argument(
        "--phase", metavar="NAME", help="pre-contrast, post-injection-1, post-injection-2 …"
    )
    group.add_argument(
        "--flagged", action="store_true", help="implausible, Dance disagreement or alert only"
    )
    group.add_argument(
        "--include-qa", action="store_true", help="keep physics/QA (phantom) exposures"
    )
    group.add_argument("--exam", metavar="ACCESSION", help="one exam")


def filter_from_args(args: argparse.Namespace) -> ExposureFilter:
    """The :class:`ExposureFilter` of parsed arguments; :class:`FilterError` for a bad value."""
    date_from = parse_date(args.date_from, "--from") if args.date_from else None
    date_to = parse_date(args.date_to, "--to") if args.date_to else None
    if date_from and date_to and date_from > date_to:
        raise FilterError(f"--from {date_from} is after --to {date_to}")
    return ExposureFilter(
        date_from=date_from,
        date_to=date_to,
        station_ae=args.station,
        device_serial=args.device_serial,
        manufacturer=args.manufacturer,
        views=tuple(dict.fromkeys(args.views or ())),
        magnified=args.magnified,
        thickness_mm=parse_thickness(args.thickness) if args.thickness else (None, None),
        laterality=args.laterality,
        phase=args.phase,
        flagged=args.flagged,
        include_qa=args.include_qa,
        accession=args.exam,
    )
