"""The paths that keep data when a write fails, run for real (issue 12, Tests).

No mock: the failures come from the database itself — a trigger that refuses the outbox's insert
or update, a write lock held by another connection — as a full disk or a locked database would.

- an image acknowledged to the unit whose forward could not be queued: retried by the
  controller's tick (``Controller._retry_forwards``) and, across a restart, queued again at
  start-up (``Forwarder.forward_kept``), an unreadable kept file skipped without stopping it;
- a failing write inside a group of dose-log writes: only that write fails, the others of the
  group are committed (``storage.writer``'s group commit);
- the outbox's sender thread survives a failed round and delivers once the database heals.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from acquisition.dose_log import DoseLog
from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
from dicom_nodes.hospital.outbox import RetryPolicy, State
from dicom_nodes.hospital.scu import Peer
from dose.record import ExposureRecord, Source
from simulators.pacs import SimulatedPacs
from tests.dose_factories import Exposure, mg_image, scu_ae
from tests.exam_room import exam_room
from tests.integration.test_outbox import FAST, write_image
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(120)

MG = "1.2.840.10008.5.1.4.1.1.1.2"
REFUSE_OUTBOX_INSERT = (
    "CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox_messages "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END"
)
REFUSE_OUTBOX_UPDATE = (
    "CREATE TRIGGER refuse_outbox BEFORE UPDATE ON outbox_messages "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END"
)


def sql(database: Path, statement: str) -> None:
    with closing(sqlite3.connect(database, isolation_level=None)) as conn:
        conn.execute(statement)


def store_image(host: str, port: int, study: str) -> str:
    """One MG image from the unit's AE title; its SOP Instance UID (asserted acknowledged)."""
    exposure = Exposure()
    ae: Any = scu_ae(MG, ae_title="MG_SIM")
    assoc = ae.associate(host, port, ae_title="GALACTO")
    try:
        status = assoc.send_c_store(mg_image(exposure, study_uid=study, sps_id=None))
    finally:
        assoc.release()
        ae.shutdown()
    assert int(status.Status) == 0, "the unit's image was not acknowledged"
    return exposure.sop_instance_uid


def test_an_acknowledged_image_whose_forward_failed_is_queued_by_the_tick(
    tmp_path: Path,
) -> None:
    study = str(generate_uid())
    with exam_room(tmp_path) as room:
        sql(room.database, REFUSE_OUTBOX_INSERT)
        host, port = room.controller.endpoints().host, room.controller.endpoints().port
        uid = store_image(host, port, study)
        assert room.outbox.messages(uid) == []  # acknowledged, kept, not queued
        assert (tmp_path / "objects" / study / f"{uid}.dcm").exists()
        sql(room.database, "DROP TRIGGER refuse_outbox")  # the disk heals
        assert room.pacs.wait_for(lambda: room.pacs.get(uid) is not None, 40.0), (
            "the tick did not queue the image again"
        )


def test_an_image_never_queued_is_queued_at_the_next_start_up(tmp_path: Path) -> None:
    study = str(generate_uid())
    with exam_room(tmp_path) as room:
        sql(room.database, REFUSE_OUTBOX_INSERT)
        endpoints = room.controller.endpoints()
        uid = store_image(endpoints.host, endpoints.port, study)
        assert room.outbox.messages(uid) == []
    # the controller stopped before its tick retried; an unreadable file was left beside it
    (tmp_path / "objects" / study / "1.2.3.4.dcm").write_bytes(b"not DICOM")
    sql(tmp_path / "galacto.db", "DROP TRIGGER refuse_outbox")
    with exam_room(tmp_path) as room:
        assert room.pacs.wait_for(lambda: room.pacs.get(uid) is not None, 30.0), (
            "the kept image was not queued at start-up"
        )


def record(n: int) -> ExposureRecord:
    return ExposureRecord(
        Source.IMAGE_HEADER, sop_instance_uid=f"1.2.9.{n}", irradiation_event_uid=f"1.2.8.{n}"
    )


def test_a_failing_write_inside_a_group_fails_alone(tmp_path: Path) -> None:
    database = tmp_path / "galacto.db"
    dose_log = DoseLog(database)
    blocker = sqlite3.connect(database, isolation_level=None)
    outcomes: dict[str, BaseException | None] = {}

    def run(name: str, write: Callable[[], None]) -> threading.Thread:
        def target() -> None:
            try:
                write()
                outcomes[name] = None
            except BaseException as exc:
                outcomes[name] = exc

        thread = threading.Thread(target=target, name=f"writer-{name}")
        thread.start()
        return thread

    writer_queue = dose_log.db._state.jobs  # type: ignore[union-attr]  # the writer queue
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the writer waits for the lock on the first batch
        threads = [run("first", lambda: dose_log.record([record(1)]))]
        assert eventually(lambda: writer_queue.qsize() == 0, 5.0)  # taken, waiting for the lock
        threads += [
            run("bad", lambda: dose_log.annotate(999_999, phase="pre-contrast")),
            run("second", lambda: dose_log.record([record(2)])),
            run("third", lambda: dose_log.record([record(3)])),
        ]
        assert eventually(lambda: writer_queue.qsize() == 3, 5.0)  # one group of three
        blocker.execute("COMMIT")
        for thread in threads:
            thread.join(timeout=30)
    finally:
        blocker.close()
    try:
        assert isinstance(outcomes["bad"], KeyError)
        assert outcomes["first"] is None and outcomes["second"] is None
        assert outcomes["third"] is None
        uids = [row["sop_instance_uid"] for row in dose_log.list_exposures()]
        assert uids == ["1.2.9.1", "1.2.9.2", "1.2.9.3"]
    finally:
        dose_log.close()


def test_the_outbox_sender_survives_a_failed_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SimulatedPacs(timeouts=FAST) as pacs:
        host, port = pacs.address
        outbox = Outbox(
            tmp_path / "galacto.db",
            {"pacs": Peer(host, port, "PACS", calling_ae="GALACTO", timeouts=FAST)},
            retry=RetryPolicy(initial_s=0.05, max_s=0.2),
            poll_s=0.05,
        )
        try:
            uid = outbox.enqueue_store(write_image(tmp_path, 1))
            sql(tmp_path / "galacto.db", REFUSE_OUTBOX_UPDATE)  # outcomes cannot be recorded
            outbox.start()
            assert eventually(lambda: "outbox round failed" in caplog.text, 20.0)
            sql(tmp_path / "galacto.db", "DROP TRIGGER refuse_outbox")
            assert outbox.wait_for(lambda: outbox.messages(uid)[0].state == State.SENT, 20.0), (
                "the sender thread did not go on after the failed round"
            )
        finally:
            outbox.stop()
        assert pacs.get(uid) is not None
