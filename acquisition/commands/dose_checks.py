"""`galacto dose mgd|alerts|ack`: the physicist's calculator and the dose alerts (issue 9).

``mgd`` computes a mean glandular dose by hand with the Dance model galacto uses to check every
exposure: ``MGD = K · g · c · s`` from an incident air kerma at the breast surface (no
inverse-square correction), an HVL, a thickness and a target/filter; c from the physicist's c
tables (``dose.c_tables``) by ``--glandularity``, or by ``--age`` through Dance 2000's typical
breast; c = 1 otherwise, and the basis says so. An input outside the tables or ranges exits 2
with one line, ``input=value outside [lo, hi] of <table>``.

``alerts`` lists the alerts the dose checks raised (an exposure above a reference level, or
implausible); ``ack`` acknowledges one with a reason, journaled with who acknowledged it: the
OS user, or with ``--user NAME`` a console account (``galacto users``) holding the physicist
role, its password read from stdin (:func:`acknowledger`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from acquisition.accounts import PHYSICIST, Accounts
from acquisition.cli import (
    EXIT_OK,
    EXIT_USAGE,
    add_database_option,
    database_config,
    load_config,
    os_user,
)
from acquisition.dose_alerts import AcknowledgementError, acknowledge, clean_reason
from acquisition.dose_log import ALERT_OPEN, DoseLog
from acquisition.dose_policy import dance_tables
from acquisition.journal import Journal, JournalError
from dose.check import FILTERS, TARGETS, InputOutsideError, calculate


def register(sub: Any) -> None:
    """Add ``mgd``, ``alerts`` and ``ack`` to ``galacto dose``."""
    mgd = sub.add_parser(
        "mgd",
        help="mean glandular dose by hand: MGD = K·g·c·s (Dance)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mgd.add_argument(
        "--kerma",
        metavar="MGY",
        required=True,
        help="incident air kerma at the breast surface, mGy (no backscatter)",
    )
    mgd.add_argument("--hvl", metavar="MM_AL", required=True, help="half value layer, mm Al")
    mgd.add_argument(
        "--thickness", metavar="MM", required=True, help="compressed breast thickness, mm"
    )
    mgd.add_argument("--target", metavar="{" + ",".join(TARGETS) + "}", required=True)
    mgd.add_argument("--filter", metavar="{" + ",".join(FILTERS) + "}", required=True)
    how = mgd.add_mutually_exclusive_group()
    how.add_argument("--glandularity", metavar="PCT", help="glandularity of the breast, %%")
    how.add_argument(
        "--age",
        metavar="YEARS",
        help="age: Dance 2000's typical glandularity for that age and thickness",
    )
    mgd.add_argument("--json", action="store_true", help="one JSON object")
    mgd.set_defaults(func=run_mgd)

    alerts = sub.add_parser("alerts", help="the dose alerts: level exceeded or implausible")
    add_database_option(alerts)
    alerts.add_argument("--open", action="store_true", help="only those not acknowledged")
    alerts.add_argument("--json", action="store_true", help="one JSON document")
    alerts.set_defaults(func=run_alerts)

    ack = sub.add_parser("ack", help="acknowledge a dose alert, with a reason (journaled)")
    ack.add_argument("alert_id", metavar="ID", type=int, help="the alert's id (dose alerts)")
    ack.add_argument("--reason", metavar="TEXT", required=True, help="why it is acceptable")
    add_database_option(ack)
    ack.add_argument(
        "--user",
        metavar="NAME",
        help="acknowledge as this console account (galacto users), its password on stdin, the "
        "physicist role required; without --user: the OS user",
    )
    ack.set_defaults(func=run_ack)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------------------- mgd


class NotANumber(ValueError):
    """A calculator argument that is not a number."""


def _float(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise NotANumber(f"{name}={text} is not a number") from None


def run_mgd(args: argparse.Namespace) -> int:
    try:
        kerma, hvl, thickness = (
            _float("kerma", args.kerma),
            _float("hvl", args.hvl),
            _float("thickness", args.thickness),
        )
        glandularity, age = _float("glandularity", args.glandularity), _float("age", args.age)
        assert kerma is not None and hvl is not None and thickness is not None
        c_tables = dance_tables(load_config(args)).c
        result = calculate(
            kerma_mgy=kerma,
            hvl_mm_al=hvl,
            thickness_mm=thickness,
            target=args.target,
            filter_material=args.filter,
            glandularity_pct=glandularity,
            age_years=age,
            c_tables=c_tables,
        )
    except (InputOutsideError, NotANumber) as exc:
        return _fail(str(exc))
    if args.json:
        doc = asdict(result)
        print(json.dumps({k: doc[k] for k in (
            "mgd_mgy", "g", "c", "s", "glandularity_pct", "basis",
            "kerma_mgy", "hvl_mm_al", "thickness_mm", "target", "filter",
        )}))  # fmt: skip
        return EXIT_OK
    print(
        f"MGD {result.mgd_mgy:.4g} mGy = K {result.kerma_mgy:g} mGy × g {result.g:.4g} × "
        f"c {result.c:.4g} × s {result.s:.4g}"
    )
    glandularity_text = (
        "unknown" if result.glandularity_pct is None else f"{result.glandularity_pct:.3g} %"
    )
    print(f"glandularity: {glandularity_text}")
    print(f"basis: {result.basis}")
    return EXIT_OK


# ---------------------------------------------------------------------------------- alerts


def _open_log(args: argparse.Namespace) -> tuple[DoseLog, Any] | None:
    config = database_config(args)
    path = Path(config.database.path)
    if not path.exists():
        return None
    return DoseLog(path), config


ALERT_FIELDS = (
    "id",
    "state",
    "scope",
    "sop_instance_uid",
    "study_instance_uid",
    "laterality",
    "level_id",
    "level_name",
    "value_mgy",
    "limit_mgy",
    "detail",
    "raised_at",
    "acknowledged_at",
    "acknowledged_by",
    "acknowledgement_reason",
)


def alert_json(alert: Mapping[str, Any]) -> dict[str, Any]:
    """One alert as ``dose alerts --json`` prints it."""
    return {key: alert[key] for key in ALERT_FIELDS}


def run_alerts(args: argparse.Namespace) -> int:
    opened = _open_log(args)
    if opened is None:
        return _fail("galacto dose: no database (database.path)")
    log, _ = opened
    with log:
        alerts = log.alerts(open_only=args.open)
    if args.json:
        print(json.dumps({"alerts": [alert_json(a) for a in alerts]}, indent=1))
        return EXIT_OK
    header = ("id", "state", "raised (UTC)", "SOP Instance UID", "level", "value mGy",
              "limit mGy", "side", "acknowledged")  # fmt: skip
    table = [header]
    for a in alerts:
        acknowledged = ""
        if a["state"] != ALERT_OPEN:
            acknowledged = f"{a['acknowledged_by']}: {a['acknowledgement_reason']}"
        table.append(
            (
                str(a["id"]),
                a["state"],
                str(a["raised_at"])[:19],
                a["sop_instance_uid"] or "—",
                a["level_name"],
                "—" if a["value_mgy"] is None else f"{a['value_mgy']:.3f}",
                "—" if a["limit_mgy"] is None else f"{a['limit_mgy']:.3f}",
                a["laterality"] or "—",
                acknowledged,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    opened_count = sum(1 for a in alerts if a["state"] == ALERT_OPEN)
    print(f"{len(alerts)} alert(s), {opened_count} open", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------- ack


class IdentityError(Exception):
    """Who acknowledges cannot be established (the message says why)."""


@dataclass(frozen=True)
class Acknowledger:
    """Who acknowledges, as the journal records it."""

    user: str
    how: str  # "OS user" or "console account"


def acknowledger(
    user: str | None, password_input: TextIO, accounts: Accounts | None
) -> Acknowledger:
    """The OS user without ``--user``; with it, the console account, its password read from
    ``password_input`` (one line) and the physicist role required. A wrong name and a wrong
    password are the same refusal."""
    if user is None:
        return Acknowledger(os_user(), "OS user")
    if accounts is None:
        raise IdentityError("--user needs the console accounts: no database (database.path)")
    password = password_input.readline().rstrip("\r\n")
    account = accounts.authenticate(user.strip().lower(), password)
    if account is None:
        raise IdentityError(f"{user}: wrong user name or password (or the account is disabled)")
    if account.role != PHYSICIST:
        raise IdentityError(f"{user} does not hold the {PHYSICIST} role (but {account.role})")
    return Acknowledger(account.username, "console account")


def run_ack(args: argparse.Namespace) -> int:
    config = database_config(args)
    path = Path(config.database.path)
    if not path.exists():
        return _fail("galacto dose ack: no database (database.path)")
    try:
        clean_reason(args.reason)
        if args.user is None:
            who = acknowledger(None, sys.stdin, None)
        else:
            with Accounts(path) as accounts:
                who = acknowledger(args.user, sys.stdin, accounts)
    except (IdentityError, AcknowledgementError) as exc:
        return _fail(f"galacto dose ack: {exc}")
    key = config.site.journal_key.encode() or None
    with DoseLog(path) as log, Journal(path, key=key) as journal:
        try:
            alert = acknowledge(
                log,
                journal,
                args.alert_id,
                user=who.user,
                reason=args.reason,
                identified_as=who.how,
            )
        except AcknowledgementError as exc:
            return _fail(f"galacto dose ack: {exc}")
        except JournalError as exc:
            return _fail(f"galacto dose ack: the journal cannot be written ({exc})")
    value = (
        "—"
        if alert["value_mgy"] is None or math.isnan(alert["value_mgy"])
        else (f"{alert['value_mgy']:.3f} mGy")
    )
    print(f"alert {args.alert_id} ({alert['level_name']}, {value}) acknowledged by {who.user}")
    return EXIT_OK
