"""The simulated unit against the real controller side: UnitFacingServer + SQLite stores.

Worklist published in the WorklistStore, MPPS kept by SqliteMppsStore, exposures written to
the DoseLog by the MPPS and Storage SCPs; all on one SQLite file under tmp_path.
"""

from __future__ import annotations

import copy
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acquisition.dose_log import DoseLog
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.network import Timeouts, client_tls_context
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore
from simulators.unit import NO_RESPONSE, SUCCESS, Fault, SimulatedUnit, UnitError, WorklistStep
from tests.integration.test_unit_sim import _orphans
from tests.waiting import eventually

TODAY = "20260115"


@dataclass
class Stack:
    port: int
    worklist: WorklistStore
    mpps: SqliteMppsStore
    dose_log: DoseLog


def step(sps_id: str, description: str) -> ScheduledStep:
    return ScheduledStep(
        sps_id=sps_id,
        sps_start_date=TODAY,
        sps_start_time="090000",
        station_ae="MG_SIM",
        sps_description=description,
        protocol_codes=(Code("399162004", "SCT", "cranio-caudal"),),
        requested_procedure_id="RP0001",
        requested_procedure_description="Galactography left",
        study_instance_uid="1.2.826.0.1.3680043.10.1466.7.2",
        accession_number="ACC0002",
        patient=Patient(name="Ødegård^Åse", id="P0002", birth_date="19680505", sex="F"),
    )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    db_path = tmp_path / "galacto.sqlite"
    worklist = WorklistStore(db_path)
    mpps = SqliteMppsStore(db_path)
    dose_log = DoseLog(db_path)
    server = UnitFacingServer(
        worklist, mpps, dose_log, port=0, storage_dir=tmp_path / "objects", fsync_objects=False
    )
    try:
        worklist.publish(step("SPS-PRE", "Pre-contrast"))
        _, port = server.start()
        yield Stack(port, worklist, mpps, dose_log)
    finally:
        server.stop()
        dose_log.close()
        mpps.close()
        close: Any = getattr(worklist, "close", None)
        if close is not None:
            close()


def unit(stack: Stack, **kwargs: Any) -> SimulatedUnit:
    return SimulatedUnit("127.0.0.1", stack.port, "GALACTO", seed=11, **kwargs)


def test_a_step_end_to_end_is_logged_once_per_exposure(stack: Stack) -> None:
    sim = unit(stack)
    (found,) = sim.poll_worklist(TODAY)
    assert found.sps_id == "SPS-PRE"
    assert str(found.dataset.PatientName) == "Ødegård^Åse"
    performed = sim.perform_step(found, ["L-CC", "L-ML-MAG"], thickness_mm=55)
    assert performed.status == "COMPLETED"
    assert [status for _, status in performed.responses] == [SUCCESS] * 3

    rows = stack.dose_log.list_exposures()
    # image header, MPPS item and RDSR event reconciled: one row per exposure
    assert len(rows) == 2, rows
    by_event = {r.get("irradiation_event_uid"): r for r in rows if r.get("irradiation_event_uid")}
    for image in performed.images:
        row = by_event[image.irradiation_event_uid]
        assert set(row["sources"].split(",")) == {"image_header", "mpps", "rdsr"}
        assert row["agd_reported_mgy"] == pytest.approx(image.exposure.agd_mgy, rel=1e-4)
        assert row["esak_mgy"] == pytest.approx(image.exposure.esak_mgy, rel=1e-3)


def test_nset_after_completed_is_refused_with_a710(stack: Stack) -> None:
    sim = unit(stack, send_rdsr=False)
    (found,) = sim.poll_worklist(TODAY)
    sim.arm_fault(Fault.NSET_AFTER_COMPLETED)
    performed = sim.perform_step(found, ["L-CC"])
    assert performed.responses[-1] == ("N-SET", 0x0110)


def test_exposure_outside_any_step_is_kept(stack: Stack) -> None:
    sim = unit(stack)
    (image,) = sim.acquire(None, ["R-CC"])
    assert sim.send_images([image]) == [SUCCESS]
    rows = stack.dose_log.list_exposures()
    assert [r["sop_instance_uid"] for r in rows] == [image.sop_instance_uid]


def test_dropped_store_then_resend_logs_each_exposure_once(stack: Stack) -> None:
    sim = unit(stack)
    images = sim.acquire(None, ["L-CC", "L-ML"])
    sim.arm_fault(Fault.DROP_MID_STORE)
    assert sim.send_images(images) == [NO_RESPONSE, NO_RESPONSE]
    assert stack.dose_log.list_exposures() == []
    assert sim.send_images(images) == [SUCCESS, SUCCESS]
    assert sorted(r["sop_instance_uid"] for r in stack.dose_log.list_exposures()) == sorted(
        i.sop_instance_uid for i in images
    )
    # The cut-off temporary files are closed and removed by the server (storage_scp.py).
    eventually(lambda: not _orphans(images[0].sop_instance_uid), 5.0)
    assert _orphans(images[0].sop_instance_uid) == []


def test_malformed_dose_header_is_not_silently_accepted(stack: Stack) -> None:
    sim = unit(stack)
    sim.arm_fault(Fault.MALFORMED_DATASET)
    (bad,) = sim.acquire(None, ["L-CC"])
    (status,) = sim.send_images([bad])
    rows = stack.dose_log.list_exposures()
    # either refused, or kept and flagged for review: never logged as a clean exposure
    assert status != SUCCESS or all(r.get("review_reasons") for r in rows), (status, rows)


def test_no_controller_listening_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sim = SimulatedUnit("127.0.0.1", port, "GALACTO", timeouts=Timeouts(connection_s=2))
    with pytest.raises(UnitError, match="no association"):
        sim.poll_worklist(TODAY)


def test_rejected_calling_ae_is_a_clear_error(tmp_path: Path) -> None:
    db_path = tmp_path / "galacto.sqlite"
    with SqliteMppsStore(db_path) as mpps, DoseLog(db_path) as dose_log:
        server = UnitFacingServer(
            None, mpps, dose_log, port=0, storage_dir=tmp_path / "o", allowed_calling_aes=["MAMMO"]
        )
        _, port = server.start()
        try:
            sim = SimulatedUnit("127.0.0.1", port, "GALACTO")
            with pytest.raises(UnitError, match="rejected"):
                sim.send_images(sim.acquire(None, ["L-CC"]))
        finally:
            server.stop()


def test_over_tls(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    db_path = tmp_path / "galacto.sqlite"
    with SqliteMppsStore(db_path) as mpps, DoseLog(db_path) as dose_log:
        server = UnitFacingServer(
            None,
            mpps,
            dose_log,
            port=0,
            storage_dir=tmp_path / "o",
            tls_certificate=str(cert),
            tls_private_key=str(key),
        )
        _, port = server.start()
        try:
            tls = client_tls_context(ca=str(cert))
            sim = SimulatedUnit("127.0.0.1", port, "GALACTO", tls=tls)
            assert sim.send_images(sim.acquire(None, ["L-CC"])) == [SUCCESS]
            assert len(dose_log.list_exposures()) == 1
        finally:
            server.stop()


def test_legacy_srt_codes_are_understood(stack: Stack) -> None:
    sim = unit(stack, quirks=["legacy-codes"])
    (found,) = sim.poll_worklist(TODAY)
    performed = sim.perform_step(found, ["R-ML-MAG"])
    assert performed.images[0].dataset.ViewCodeSequence[0].CodeValue == "R-10224"
    assert performed.rdsr is not None
    (row,) = stack.dose_log.list_exposures()
    assert set(row["sources"].split(",")) == {"image_header", "mpps", "rdsr"}
    assert row["view_code"] == "399260004"
    assert row["laterality"] == "R"


def test_pre_exposure_quirk_logs_the_main_exposure(stack: Stack) -> None:
    sim = unit(stack, quirks=["pre-exposure"])
    (found,) = sim.poll_worklist(TODAY)
    performed = sim.perform_step(found, ["L-CC"])
    (row,) = stack.dose_log.list_exposures()
    assert row["kvp"] == performed.images[0].exposure.kvp


def test_unknown_step_flag_follows_what_was_published(stack: Stack) -> None:
    sim = unit(stack, send_rdsr=False)
    (found,) = sim.poll_worklist(TODAY)
    performed = sim.perform_step(found, ["L-CC"])
    assert performed.status == "COMPLETED"
    # The phase ends: its step leaves the worklist; a late image for it is still a known step.
    assert stack.worklist.withdraw("SPS-PRE")
    (late,) = sim.acquire(performed, ["L-ML"])
    (stray,) = sim.acquire(None, ["R-CC"])
    # A step this controller never offered (the unit's own, or another system's).
    ghost = WorklistStep(copy.deepcopy(found.dataset))
    ghost.dataset.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = "SPS-GHOST"
    (foreign,) = sim.acquire(sim.start_step(ghost), ["R-ML"])
    assert sim.send_images([late, stray, foreign]) == [SUCCESS] * 3
    flags = {r["sop_instance_uid"]: r["unknown_step"] for r in stack.dose_log.list_exposures()}
    assert flags[late.sop_instance_uid] == 0
    assert flags[stray.sop_instance_uid] == 1
    assert flags[foreign.sop_instance_uid] == 1
    assert flags[performed.images[0].sop_instance_uid] == 0
