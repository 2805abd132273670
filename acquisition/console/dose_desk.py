"""The physicist's page behind the console: the dose table with filters, the open alerts to
acknowledge, the report (docs/console.md, "The physicist's page").

It reads through the physicist's own tools (:mod:`acquisition.dose_audit`): the same filters as
``galacto dose list`` (:func:`~acquisition.dose_audit.filter_from_args`), the read-only,
low-priority reading of the log, the export's pseudonyms and the report. A physicist sees
**no patient identity**: the accession, the SPS ID and every UID are pseudonyms under
``site.pseudonym_secret`` (left out without one), each row carries its exam's key, and the
filter by accession is not offered. Patient names are never in the dose log.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from acquisition.dose_alerts import AcknowledgementError, acknowledge
from acquisition.dose_audit import AuditLog, FilterError, Pseudonyms, filter_from_args
from acquisition.dose_audit.filters import (
    LATERALITY_CHOICES,
    MAGNIFIED_CHOICES,
    VIEW_CHOICES,
)
from acquisition.dose_log import ALERT_OPEN, DoseLog
from acquisition.journal import Journal

#: Rows one page of the table shows at most (narrow the filter for the others).
PAGE_ROWS = 500
#: The columns of the table, as the dose log names them.
COLUMNS = (
    "id",
    "acquisition_datetime",
    "station_ae",
    "accession",
    "phase",
    "laterality",
    "view_name",
    "is_magnified",
    "kvp",
    "exposure_uas",
    "anode",
    "filter_material",
    "compressed_thickness_mm",
    "agd_reported_mgy",
    "agd_computed_mgy",
    "dance_check",
    "plausibility",
    "alert_flags",
    "level_comparison",
    "study_instance_uid",
)
_FLAGS = ("flagged", "include_qa")
_YES = ("1", "true", "yes")
#: The longest a report may take (millions of rows: tens of seconds).
REPORT_TIMEOUT_S = 300.0
_TEXT = ("from", "to", "station", "manufacturer", "magnified", "thickness", "laterality", "phase")


class DeskError(ValueError):
    """A filter or an acknowledgement that cannot be used (400, with the reason)."""


class DoseDesk:
    """The physicist's queries over the dose log of ``database`` (see the module docstring)."""

    def __init__(
        self,
        database: str | Path,
        dose_log: DoseLog,
        journal: Journal,
        *,
        pseudonym_secret: str,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.database = Path(database)
        self.dose_log = dose_log
        self.journal = journal
        #: what the report's process needs of the configuration (``--set`` each)
        self.settings = dict(settings or {})
        # one instance: the exam keys of a page stay the same while the controller runs
        self.names = Pseudonyms(pseudonym_secret)

    # ------------------------------------------------------------------ the table

    def exposures(self, query: Mapping[str, str]) -> dict[str, Any]:
        flt = self._filter(query)
        with AuditLog(self.database) as log:
            where, params = flt.resolve(log.conn).where("exposure")
            (total,) = log.query(f"SELECT count(*) FROM exposure WHERE {where}", params)[0]
            rows: list[dict[str, Any]] = []
            for page in log.pages(flt, COLUMNS):
                rows += [self._row(dict(zip(COLUMNS, values, strict=True))) for values in page]
                if len(rows) >= PAGE_ROWS:
                    break
        return {
            "filter": flt.describe(),
            "total": int(total),
            "shown": min(len(rows), PAGE_ROWS),
            "rows": rows[:PAGE_ROWS],
            "pseudonyms": self.names.has_secret,
        }

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        uas = row.pop("exposure_uas")
        study = row.pop("study_instance_uid")
        accession = row.pop("accession")
        return {
            **{
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in row.items()
            },
            "mas": None if uas is None else round(uas / 1000.0, 2),
            "exam_key": self.names.exam_key(study, accession),
        }

    def _filter(self, query: Mapping[str, str]) -> Any:
        unknown = sorted(set(query) - {*_FLAGS, *_TEXT, "view"})
        if unknown:
            raise DeskError(f"unknown filter(s): {', '.join(unknown)}")
        for key, choices in (
            ("magnified", MAGNIFIED_CHOICES),
            ("laterality", LATERALITY_CHOICES),
            ("view", VIEW_CHOICES),
        ):
            if query.get(key) and query[key] not in choices:
                raise DeskError(f"{key} must be one of {', '.join(choices)}")
        args = argparse.Namespace(
            date_from=query.get("from") or None,
            date_to=query.get("to") or None,
            station=query.get("station") or None,
            device_serial=None,
            manufacturer=query.get("manufacturer") or None,
            views=[query["view"]] if query.get("view") else None,
            magnified=query.get("magnified") or "any",
            thickness=query.get("thickness") or None,
            laterality=query.get("laterality") or None,
            phase=query.get("phase") or None,
            flagged=query.get("flagged") in _YES,
            include_qa=query.get("include_qa") in _YES,
            exam=None,  # an accession identifies the patient: not offered here
        )
        try:
            return filter_from_args(args)
        except FilterError as exc:
            raise DeskError(str(exc).replace("--", "")) from exc

    # ------------------------------------------------------------------ alerts

    def alerts(self, query: Mapping[str, str]) -> dict[str, Any]:
        open_only = query.get("state", "open") == "open"
        alerts = self.dose_log.alerts(open_only=open_only)
        return {"alerts": [self._alert(a) for a in reversed(alerts)]}

    def _alert(self, alert: Mapping[str, Any]) -> dict[str, Any]:
        value = alert["value_mgy"]
        return {
            "id": alert["id"],
            "state": alert["state"],
            "open": alert["state"] == ALERT_OPEN,
            "raised_at": alert["raised_at"],
            "scope": alert["scope"],
            "level": alert["level_name"],
            "value_mgy": value if value is None or math.isfinite(value) else None,
            "limit_mgy": alert["limit_mgy"],
            "laterality": alert["laterality"],
            "detail": alert["detail"],
            "exposure_id": alert["exposure_id"],
            "exam_key": self.names.exam_key(alert["study_instance_uid"], None),
            "sop_instance_uid": self.names.identifier(alert["sop_instance_uid"]),
            "acknowledged_by": alert["acknowledged_by"],
            "acknowledged_at": alert["acknowledged_at"],
            "reason": alert["acknowledgement_reason"],
        }

    def acknowledge(self, alert_id: int, reason: object, operator: str) -> dict[str, Any]:
        try:
            acknowledge(
                self.dose_log,
                self.journal,
                alert_id,
                user=operator,
                reason=reason if isinstance(reason, str) else "",
                identified_as="console account",
            )
        except AcknowledgementError as exc:
            raise DeskError(str(exc)) from exc
        alert = self.dose_log.alert(alert_id)
        assert alert is not None
        return self._alert(alert)

    # ------------------------------------------------------------------ the report

    def report(self, query: Mapping[str, str]) -> bytes:
        """``galacto dose report`` of the filter, as one page. It runs as its own process, at
        its lowered priority: a report of millions of rows draws its plots for seconds, and
        the controller's process (STOP, the injector's watch) must not wait for it."""
        self._filter(query)  # refused here, with the reason, before anything runs
        flags: list[str] = []
        for key in _TEXT:
            if query.get(key):
                flags += [f"--{'from' if key == 'from' else key}", query[key]]
        if query.get("view"):
            flags += ["--view", query["view"]]
        flags += [f"--{key.replace('_', '-')}" for key in _FLAGS if query.get(key) in _YES]
        settings = [
            arg for key, value in self.settings.items() for arg in ("--set", f"{key}={value}")
        ]
        with tempfile.TemporaryDirectory(prefix="galacto-report-") as folder:
            target = Path(folder) / "report.html"
            done = subprocess.run(
                [sys.executable, "-m", "acquisition", *settings, "dose", "report",
                 "--database", str(self.database), "--output", str(target), *flags],
                capture_output=True, text=True, timeout=REPORT_TIMEOUT_S, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise DeskError(f"the report failed: {done.stderr.strip()[-300:]}")
            return target.read_bytes()
