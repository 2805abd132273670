"""The composition root builds the unit-facing server from the settings, and it answers."""

from __future__ import annotations

from pathlib import Path

from pynetdicom import AE

from acquisition import wiring
from acquisition.dose_log import DoseLog
from acquisition.settings import load
from dicom_nodes.network import NODELAY_HANDLERS
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.worklist_store import WorklistStore

VERIFICATION = "1.2.840.10008.1.1"


def echo(port: int, calling_ae: str) -> int | None:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    ae.connection_timeout = 5
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
        if not assoc.is_established:
            return None
        status = assoc.send_c_echo()
        assoc.release()
        return int(status.Status)
    finally:
        ae.shutdown()


def test_server_follows_the_dicom_settings(tmp_path: Path) -> None:
    db = tmp_path / "galacto.db"
    config = load(
        environ={
            "GALACTO_DICOM_PORT": "0",
            "GALACTO_DICOM_ALLOWED_CALLING_AES": "MAMMO1",
            "GALACTO_DICOM_STORAGE_DIR": str(tmp_path / "objects"),
        }
    )
    worklist, mpps, dose_log = WorklistStore(db), SqliteMppsStore(db), DoseLog(db)
    server = wiring.unit_facing_server(config, worklist, mpps, dose_log)
    try:
        _, port = server.start()
        assert echo(port, "MAMMO1") == 0
        assert echo(port, "INTRUDER") is None
    finally:
        server.stop()
        dose_log.close()
        mpps.close()
