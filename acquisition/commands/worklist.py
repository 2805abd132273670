"""`galacto worklist query`: ask any worklist SCP for its items (IHE RAD-5) and print them.

The technologists' connectivity check, and our MWL SCU at work. Human output is a small
table, one line per Scheduled Procedure Step; ``--json`` prints one JSON object per item per
line (JSON Lines: easy to ``grep``/``jq`` and to stream). Exit 0 when the SCP answered (also
with zero items, said on stderr), 2 on bad arguments or when no association could be made.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import unicodedata
from collections.abc import Callable
from typing import Any, TypeVar

from pydicom.charset import python_encoding

from acquisition.cli import EXIT_OK, EXIT_USAGE
from dicom_nodes.hospital.mwl_scu import (
    WorklistItem,
    WorklistQuery,
    check_date_range,
    find_worklist,
)
from dicom_nodes.hospital.scu import Peer, ScuError
from dicom_nodes.network import Timeouts

_Number = TypeVar("_Number", int, float)

COLUMNS = (
    ("Patient", 30),
    ("Patient ID", 12),
    ("Accession", 12),
    ("SPS ID", 10),
    ("Start", 16),
    ("Step", 22),
    ("Procedure", 0),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("worklist", help="query a modality worklist SCP")
    actions = parser.add_subparsers(dest="worklist_action", metavar="ACTION", required=True)
    query = actions.add_parser(
        "query",
        help="query any worklist SCP and print its items",
        description="Query a Modality Worklist SCP (C-FIND, PS3.4 Annex K) and print the items.",
    )
    query.add_argument("--host", required=True, help="worklist SCP host")
    query.add_argument("--port", required=True, type=_port, help="worklist SCP port")
    query.add_argument("--called-ae", required=True, type=_ae_title, help="AE title of the SCP")
    query.add_argument(
        "--calling-ae", default="GALACTO", type=_ae_title, help="our AE title (default GALACTO)"
    )
    query.add_argument("--modality", default="MG", help="Modality matching key (default MG)")
    query.add_argument(
        "--date",
        default="",
        type=_date,
        help="SPS start date, YYYYMMDD or a range YYYYMMDD-YYYYMMDD (default: any)",
    )
    query.add_argument("--station-ae", default="", help="Scheduled Station AE Title matching key")
    query.add_argument("--patient-id", default="", help="Patient ID matching key")
    query.add_argument(
        "--max-results", default=5000, type=_positive_int, help="cap (C-CANCEL when reached)"
    )
    query.add_argument(
        "--timeout",
        default=10.0,
        type=_positive_float,
        help="seconds allowed for connecting and for each response (default 10)",
    )
    query.add_argument(
        "--fallback-charset",
        default="",
        metavar="TERM",
        type=_character_set,
        help='Specific Character Set assumed when a response carries none, e.g. "ISO_IR 192" '
        "(default: the standard's default repertoire)",
    )
    query.add_argument("--json", action="store_true", help="one JSON object per item per line")
    query.set_defaults(func=run)


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _parsed(text: str, parse: Callable[[str], _Number], expected: str) -> _Number:
    """``parse(text)``, or the argparse error ``expected <expected>, got '<text>'``."""
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _parsed(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _parsed(text, float, "seconds")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def _ae_title(text: str) -> str:
    if not 0 < len(text) <= 16 or "\\" in text or not text.isascii() or text.strip() == "":
        raise argparse.ArgumentTypeError(f"not an AE title (1–16 ASCII characters): {text!r}")
    return text


def _character_set(text: str) -> str:
    if text not in python_encoding:
        raise argparse.ArgumentTypeError(
            f'not a Specific Character Set term (e.g. "ISO_IR 192", "ISO_IR 100"): {text!r}'
        )
    return text


def _date(text: str) -> str:
    try:
        return check_date_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    if getattr(args, "log_level", None) is None:
        # Our own message names the peer; pynetdicom's ERROR lines would only repeat it.
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    timeouts = Timeouts(
        connection_s=args.timeout,
        acse_s=args.timeout,
        dimse_s=args.timeout,
        network_s=max(args.timeout, 60.0),
    )
    peer = Peer(args.host, args.port, args.called_ae, calling_ae=args.calling_ae, timeouts=timeouts)
    query = WorklistQuery(
        station_ae=args.station_ae,
        modality=args.modality,
        sps_date=args.date,
        patient_id=args.patient_id,
    )
    try:
        result = find_worklist(
            peer,
            query,
            max_results=args.max_results,
            fallback_character_set=args.fallback_charset,
        )
    except (ScuError, OSError) as exc:
        print(f"galacto worklist query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for item in result.items:
            print(json.dumps(item.as_dict(), ensure_ascii=False))
    elif result.items:
        print(render_table(result.items))
    count = len(result.items)
    note = f" (capped at {args.max_results}; the SCP has more)" if result.truncated else ""
    if count == 0:
        print(f"no worklist items from {peer.describe()} for this query", file=sys.stderr)
    else:
        print(f"{count} item(s) from {peer.describe()}{note}", file=sys.stderr)
    return EXIT_OK


def render_table(items: tuple[WorklistItem, ...]) -> str:
    """A fixed-width table, one line per Scheduled Procedure Step."""
    rows = [[title for title, _ in COLUMNS]]
    for item in items:
        start = item.sps_start
        rows.append(
            [
                display_name(item.patient.name),
                item.patient.id,
                item.accession_number,
                item.sps_id,
                start.strftime("%Y-%m-%d %H:%M") if start else item.sps_start_date,
                item.sps_description,
                item.requested_procedure_description or item.requested_procedure_id,
            ]
        )
    return "\n".join(_line(row) for row in rows)


def display_name(person_name: str) -> str:
    """``Family, Given Middle`` of a PN value, its ideographic group in parentheses."""

    def group(text: str) -> str:
        family, _, rest = text.partition("^")
        given = " ".join(part for part in rest.split("^")[:2] if part)
        return f"{family}, {given}" if family and given else family or given

    groups = [group(g) for g in person_name.split("=")[:2]] + ["", ""]
    main, ideographic = groups[0], groups[1]
    if main and ideographic:
        return f"{main} ({ideographic})"
    return main or ideographic


def _width(text: str) -> int:
    """Terminal columns: East Asian wide characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _fit(text: str, width: int) -> str:
    if not width:
        return text
    if _width(text) > width:
        while _width(text) > width - 1:
            text = text[:-1]
        text += "…"
    return text + " " * (width - _width(text))


def _line(row: list[str]) -> str:
    cells = [_fit(text, width) for (_, width), text in zip(COLUMNS, row, strict=True)]
    return "  ".join(cells).rstrip()
