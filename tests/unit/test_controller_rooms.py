"""What the controller takes from its rooms: the outbox's peers and the outbox's alerts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom import Dataset

from acquisition.alerts import outbox_alerts
from acquisition.settings import load
from acquisition.wiring import hospital_destinations
from dicom_nodes.hospital.dicom_outbox import DicomOutbox
from dicom_nodes.hospital.scu import Peer

NOWHERE = Peer("127.0.0.1", 9, "RIS")


def test_the_mpps_manager_may_be_another_host_than_the_worklist_provider() -> None:
    config = load(
        None,
        environ={},
        overrides={
            "ris.host": "10.0.0.5",
            "ris.port": 104,
            "ris.mpps_host": "10.0.0.6",
            "ris.mpps_port": 105,
            "pacs.host": "10.0.0.7",
        },
    )
    peers = hospital_destinations(config)
    assert (peers["ris"].host, peers["ris"].port) == ("10.0.0.6", 105)
    assert peers["pacs"].host == "10.0.0.7"
    assert hospital_destinations(load(None, environ={})) == {}


def test_stuck_and_failed_messages_are_one_line_per_destination(tmp_path: Path) -> None:
    now = [1000.0]
    with DicomOutbox(tmp_path / "db.sqlite", {"ris": NOWHERE}, clock=lambda: now[0]) as outbox:
        outbox.mpps.create("1.2.3", Dataset())
        outbox.mpps.create("1.2.4", Dataset())
        outbox.mpps.create("1.2.5", Dataset())
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            conn.execute(
                "UPDATE outbox_messages SET state = 'failed' WHERE sop_instance_uid = '1.2.5'"
            )
        conn.close()
        now[0] = 1000.0 + 1800.0
        alerts = outbox_alerts(outbox, 600.0, 3600.0, clock=lambda: now[0])
    assert len(alerts) == 2
    assert alerts[0].startswith("2 message(s) to the RIS not delivered for 30 min")
    assert alerts[1].startswith("1 message(s) to the RIS failed for good")
