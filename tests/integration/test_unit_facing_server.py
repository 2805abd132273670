"""The composed unit-facing server: one port for MWL, MPPS, Storage and Verification;
calling-AE allow-list; TLS with a self-signed certificate made for the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from acquisition.dose_log import DoseLog
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.network import NODELAY_HANDLERS, client_tls_context, read_exactly
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore
from tests.dose_factories import MG_FOR_PRESENTATION, MPPS_SOP_CLASS, Exposure, mg_image, scu_ae

MWL_FIND = "1.2.840.10008.5.1.4.31"
VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[WorklistStore, SqliteMppsStore, DoseLog]]:
    db_path = tmp_path / "galacto.sqlite"
    worklist = WorklistStore(db_path)
    mpps = SqliteMppsStore(db_path)
    dose_log = DoseLog(db_path)
    yield worklist, mpps, dose_log
    dose_log.close()
    mpps.close()
    close = getattr(worklist, "close", None)
    if close is not None:
        close()


def _server(stores: Any, tmp_path: Path, **options: Any) -> UnitFacingServer:
    worklist, mpps, dose_log = stores
    return UnitFacingServer(
        worklist, mpps, dose_log, port=0, storage_dir=tmp_path / "objects", **options
    )


def test_all_services_on_one_port(stores: Any, tmp_path: Path) -> None:
    with _server(stores, tmp_path, allowed_calling_aes=("MAMMO",)) as server:
        host, port = server.address
        ae: Any = scu_ae(VERIFICATION, MWL_FIND, MPPS_SOP_CLASS, MG_FOR_PRESENTATION)
        assoc = ae.associate(host, port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
        try:
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            query = Dataset()
            query.PatientName = ""
            query.ScheduledProcedureStepSequence = [Dataset()]
            statuses = [status.Status for status, _ in assoc.send_c_find(query, MWL_FIND)]
            assert statuses[-1] == 0x0000
            assert assoc.send_c_store(mg_image(Exposure(), study_uid="1.2.3")).Status == 0
        finally:
            assoc.release()
            ae.shutdown()
    assert len(stores[2].list_exposures()) == 1


def test_calling_ae_not_allowed_is_rejected(stores: Any, tmp_path: Path) -> None:
    with _server(stores, tmp_path, allowed_calling_aes=("MAMMO",)) as server:
        host, port = server.address
        ae: Any = scu_ae(VERIFICATION, ae_title="INTRUDER")
        try:
            assoc = ae.associate(host, port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
            assert assoc.is_rejected
        finally:
            ae.shutdown()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


def test_tls_association(stores: Any, tmp_path: Path, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    with _server(stores, tmp_path, tls_certificate=cert, tls_private_key=key) as server:
        host, port = server.address
        ae: Any = scu_ae(MPPS_SOP_CLASS, VERIFICATION)
        try:
            plain = ae.associate(host, port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
            assert not plain.is_established
            # pynetdicom 3.0.4 leaves the requestor's socket open when the peer drops the
            # connection during association request: close it here (not our code's leak).
            if plain.dul.socket is not None:
                plain.dul.socket.close()
            tls = ae.associate(
                host,
                port,
                ae_title="GALACTO",
                evt_handlers=NODELAY_HANDLERS,
                tls_args=(client_tls_context(ca=cert), "localhost"),
            )
            assert tls.is_established
            assert tls.send_c_echo().Status == 0
            tls.release()
        finally:
            ae.shutdown()


def test_unknown_instance_over_composed_server(stores: Any, tmp_path: Path) -> None:
    with _server(stores, tmp_path) as server:
        host, port = server.address
        ae: Any = scu_ae(MPPS_SOP_CLASS)
        assoc = ae.associate(host, port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
        try:
            modification = Dataset()
            modification.PerformedProcedureStepStatus = "COMPLETED"
            status, _ = assoc.send_n_set(modification, MPPS_SOP_CLASS, generate_uid())
            assert status.Status == 0x0112
        finally:
            assoc.release()
            ae.shutdown()


def test_read_exactly_collects_partial_reads_and_stops_at_close() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(5)
        sender = threading.Thread(
            target=lambda: [right.sendall(bytes([i]) * 3000) for i in range(5)]
        )
        sender.start()
        data = read_exactly(left, 12000)
        sender.join(timeout=5)
        assert data == b"".join(bytes([i]) * 3000 for i in range(4))
        right.sendall(b"tail")
        right.shutdown(socket.SHUT_WR)
        assert read_exactly(left, 3000 + 100) == bytes([4]) * 3000 + b"tail"


@pytest.mark.parametrize("vendor", ["w-rh", "mo-rh"])
def test_simulated_unit_whole_step_gives_one_row_per_exposure(
    stores: Any, tmp_path: Path, vendor: str
) -> None:
    """The simulated unit (MWL → MPPS → C-STORE → RDSR → final N-SET) against our server."""
    from simulators.unit import SimulatedUnit

    worklist, _, dose_log = stores
    study_uid = generate_uid()
    worklist.publish(
        ScheduledStep(
            sps_id="SPS-PRE",
            sps_start_date="20261125",
            sps_start_time="090000",
            station_ae="MAMMO",
            sps_description="Galactography pre-contrast",
            requested_procedure_id="RP1",
            requested_procedure_description="Galactography right",
            study_instance_uid=study_uid,
            accession_number="ACC-SIM",
            patient=Patient(name="Doe^Jane", id="P1"),
        )
    )
    with _server(stores, tmp_path, allowed_calling_aes=("MAMMO",)) as server:
        host, port = server.address
        unit = SimulatedUnit(host, port, "GALACTO", ae_title="MAMMO", seed=7, vendor=vendor)
        (step,) = unit.poll_worklist("20261125")
        performed = unit.perform_step(step, ["R-CC", "R-ML-MAG"])
    assert [status for _, status in performed.responses] == [0] * len(performed.responses)
    rows = dose_log.list_exposures(accession="ACC-SIM")
    assert len(rows) == len(performed.images) == 2
    by_sop = {row["sop_instance_uid"]: row for row in rows}
    for image in performed.images:
        row = by_sop[image.sop_instance_uid]
        assert row["sources"] == "image_header,mpps,rdsr", row["review_reasons"]
        assert row["agd_reported_mgy"] == pytest.approx(image.exposure.agd_mgy, rel=1e-3)
        assert row["esak_mgy"] == pytest.approx(image.exposure.esak_mgy, rel=1e-3)
        assert row["unknown_step"] == 0
        assert row["mpps_instance_uid"] == performed.sop_instance_uid
