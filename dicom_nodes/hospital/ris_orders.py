"""The local copy of the RIS worklist, refreshed periodically (IHE RAD-5, pulled on a timer).

The controller keeps the RIS's galactography orders in its own database so that the console can
list them while the RIS is slow or down. Table ``ris_orders`` (migration set ``ris_orders``)
holds one row per Scheduled Procedure Step, keyed by (Accession Number, SPS ID), with the whole
:class:`~dicom_nodes.hospital.mwl_scu.WorklistItem` as JSON beside the columns the console sorts on.

A refresh **upserts** every item the query returned and **marks** (never deletes) the orders
that the RIS no longer lists — only within the scope of the query (same station, SPS start
date inside the queried range) and only when the answer was complete: a capped answer
(C-CANCEL sent) proves nothing about the orders it did not return. An order that comes back
is unmarked.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from dicom_nodes.hospital.mwl_scu import WorklistItem, WorklistQuery, WorklistResult, find_worklist
from dicom_nodes.hospital.scu import Peer, ScuError
from dicom_nodes.hospital.worker import Worker
from storage.writer import Store

log = logging.getLogger(__name__)

MIGRATIONS = sqlite_utils.Migrations("ris_orders")


@MIGRATIONS()
def m001_ris_orders(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE ris_orders (
            accession_number TEXT NOT NULL,
            sps_id TEXT NOT NULL,
            patient_id TEXT NOT NULL,
            patient_name TEXT NOT NULL,
            study_instance_uid TEXT NOT NULL,
            requested_procedure_description TEXT NOT NULL,
            sps_description TEXT NOT NULL,
            sps_start_date TEXT NOT NULL,
            sps_start_time TEXT NOT NULL,
            station_ae TEXT NOT NULL,
            modality TEXT NOT NULL,
            item_json TEXT NOT NULL,
            first_seen_at_s REAL NOT NULL,
            last_seen_at_s REAL NOT NULL,
            disappeared_at_s REAL,
            PRIMARY KEY (accession_number, sps_id)
        ) STRICT
        """
    )
    db.execute("CREATE INDEX ris_orders_start ON ris_orders(sps_start_date, sps_start_time)")


@dataclass(frozen=True)
class StoredOrder:
    """One order as the local store knows it."""

    item: WorklistItem
    first_seen_at_s: float
    last_seen_at_s: float
    disappeared_at_s: float | None

    @property
    def disappeared(self) -> bool:
        return self.disappeared_at_s is not None


@dataclass(frozen=True)
class RefreshSummary:
    """What one refresh changed (counts only: no patient data in logs)."""

    received: int
    added: int
    disappeared: int
    reappeared: int
    truncated: bool


def _date_bounds(text: str) -> tuple[str, str]:
    """Inclusive (low, high) of a DA matching value; universal is ("", "99999999")."""
    if not text:
        return "", "99999999"
    low, sep, high = text.partition("-")
    if not sep:
        return low, low
    return low, high or "99999999"


class RisOrderStore(Store):
    """Read and update the ``ris_orders`` table: writes through the database's one writer
    (:class:`storage.writer.Database`), reads on the calling thread's read connection."""

    migrations = MIGRATIONS

    def apply(self, result: WorklistResult, query: WorklistQuery, now_s: float) -> RefreshSummary:
        """Upsert ``result`` and mark what vanished within ``query``'s scope, atomically."""
        seen = {(i.accession_number, i.sps_id) for i in result.items}

        def upsert(conn: sqlite3.Connection) -> tuple[dict[tuple[str, str], float | None], int]:
            known = {
                (row["accession_number"], row["sps_id"]): row["disappeared_at_s"]
                for row in conn.execute(
                    "SELECT accession_number, sps_id, disappeared_at_s FROM ris_orders"
                )
            }
            for item in result.items:
                self._upsert(conn, item, now_s)
            disappeared = 0
            if not result.truncated:
                disappeared = self._mark_vanished(conn, query, seen, now_s)
            return known, disappeared

        known, disappeared = self.db.run(upsert)
        return RefreshSummary(
            received=len(result.items),
            added=len(seen - known.keys()),
            disappeared=disappeared,
            reappeared=sum(1 for key in seen if known.get(key) is not None),
            truncated=result.truncated,
        )

    @staticmethod
    def _upsert(conn: sqlite3.Connection, item: WorklistItem, now_s: float) -> None:
        conn.execute(
            """
            INSERT INTO ris_orders (accession_number, sps_id, patient_id, patient_name,
                study_instance_uid, requested_procedure_description, sps_description,
                sps_start_date, sps_start_time, station_ae, modality, item_json,
                first_seen_at_s, last_seen_at_s, disappeared_at_s)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
            ON CONFLICT (accession_number, sps_id) DO UPDATE SET
                patient_id = excluded.patient_id, patient_name = excluded.patient_name,
                study_instance_uid = excluded.study_instance_uid,
                requested_procedure_description = excluded.requested_procedure_description,
                sps_description = excluded.sps_description,
                sps_start_date = excluded.sps_start_date,
                sps_start_time = excluded.sps_start_time, station_ae = excluded.station_ae,
                modality = excluded.modality, item_json = excluded.item_json,
                last_seen_at_s = excluded.last_seen_at_s, disappeared_at_s = NULL
            """,
            (
                item.accession_number,
                item.sps_id,
                item.patient.id,
                item.patient.name,
                item.study_instance_uid,
                item.requested_procedure_description,
                item.sps_description,
                item.sps_start_date,
                item.sps_start_time,
                item.station_ae,
                item.modality,
                json.dumps(item.as_dict(), ensure_ascii=False),
                now_s,
                now_s,
            ),
        )

    @staticmethod
    def _mark_vanished(
        conn: sqlite3.Connection,
        query: WorklistQuery,
        seen: set[tuple[str, str]],
        now_s: float,
    ) -> int:
        low, high = _date_bounds(query.sps_date)
        scope = conn.execute(
            "SELECT accession_number, sps_id FROM ris_orders WHERE disappeared_at_s IS NULL "
            "AND sps_start_date BETWEEN ? AND ? AND (? = '' OR station_ae = ?) "
            "AND (? = '' OR modality = ?)",
            (low, high, query.station_ae, query.station_ae, query.modality, query.modality),
        ).fetchall()
        gone = [
            (row["accession_number"], row["sps_id"])
            for row in scope
            if (row["accession_number"], row["sps_id"]) not in seen
        ]
        conn.executemany(
            "UPDATE ris_orders SET disappeared_at_s = ? WHERE accession_number = ? AND sps_id = ?",
            [(now_s, accession, sps_id) for accession, sps_id in gone],
        )
        return len(gone)

    def find(self, accession_number: str, sps_id: str) -> StoredOrder | None:
        """One order as the store last knew it (also after the RIS stopped listing it)."""
        with self.db.read() as conn:
            row = conn.execute(
                "SELECT * FROM ris_orders WHERE accession_number = ? AND sps_id = ?",
                (accession_number, sps_id),
            ).fetchone()
        return None if row is None else _stored(row)

    def orders(self, *, include_disappeared: bool = False) -> list[StoredOrder]:
        """Orders by scheduled start; those the RIS withdrew only when asked."""
        where = "" if include_disappeared else "WHERE disappeared_at_s IS NULL"
        with self.db.read() as conn:
            rows = conn.execute(
                f"SELECT * FROM ris_orders {where} "
                "ORDER BY sps_start_date, sps_start_time, accession_number, sps_id"
            ).fetchall()
        return [_stored(row) for row in rows]


def _stored(row: sqlite3.Row) -> StoredOrder:
    return StoredOrder(
        WorklistItem.from_dict(json.loads(row["item_json"])),
        row["first_seen_at_s"],
        row["last_seen_at_s"],
        row["disappeared_at_s"],
    )


def todays_query(station_ae: str, *, days_ahead: int = 0, modality: str = "MG") -> WorklistQuery:
    """The IHE RAD-5 broad query for this station, today (and ``days_ahead`` more days)."""
    today = dt.date.today()
    return WorklistQuery.broad(station_ae, today, today + dt.timedelta(days=days_ahead), modality)


class WorklistRefresher(Worker):
    """A thread that queries the RIS every ``interval_s`` and applies the answer to the store.

    A failed refresh (RIS down, rejected, timeout) is logged without patient data and tried
    again at the next interval; the local orders stay as they were.
    """

    thread_name = "ris-worklist"

    def __init__(
        self,
        store: RisOrderStore,
        peer: Peer,
        query: Callable[[], WorklistQuery],
        *,
        interval_s: float = 60.0,
        max_results: int = 5000,
        fallback_character_set: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.fallback_character_set = fallback_character_set
        self.peer = peer
        self.query = query
        self.interval_s = interval_s
        self.max_results = max_results
        self.clock = clock
        self.last_summary: RefreshSummary | None = None
        self.last_error: str | None = None
        self.refreshes = 0
        self._done = threading.Condition()
        super().__init__()

    def refresh_once(self) -> RefreshSummary:
        """Query the RIS now and apply the answer; raises on failure."""
        query = self.query()
        result = find_worklist(
            self.peer,
            query,
            max_results=self.max_results,
            fallback_character_set=self.fallback_character_set,
        )
        summary = self.store.apply(result, query, self.clock())
        log.info(
            "RIS worklist refreshed: %d item(s), %d new, %d withdrawn%s",
            summary.received,
            summary.added,
            summary.disappeared,
            " (capped)" if summary.truncated else "",
        )
        return summary

    def wait_for_refreshes(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` refreshes (successful or not) have run; False on timeout."""
        with self._done:
            return self._done.wait_for(lambda: self.refreshes >= count, timeout_s)

    def work(self) -> float:
        """One refresh (its failure logged and kept in :attr:`last_error`); then the interval."""
        try:
            self.last_summary = self.refresh_once()
            self.last_error = None
        except (ScuError, OSError, sqlite3.Error) as exc:
            self.last_error = str(exc)
            log.warning("RIS worklist refresh failed: %s", exc)
        with self._done:
            self.refreshes += 1
            self._done.notify_all()
        return self.interval_s
