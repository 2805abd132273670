"""Simulated mammography unit: object building and its DICOM traffic into the real server.

Figures (median of several runs, 2-core machine):
- building an MG image (64×80 and 3328×4096) and a 3-event RDSR;
- one whole step (MWL query, N-CREATE, 2 C-STOREs, N-SET, RDSR, final N-SET) into the
  UnitFacingServer with its SQLite stores;
- C-STORE of a full-size 27 MB image by the unit vs DCMTK storescu (TCP_NODELAY=1) sending the
  same file to the same server, as a ratio.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from acquisition.dose_log import DoseLog
from dicom_nodes.datasets.codes import Code
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
from dicom_nodes.unit_facing.server import UnitFacingServer
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore
from simulators.unit import SimulatedUnit
from simulators.unit_images import sample_mg_image, sample_rdsr

RUNS = 7


def median_ms(action: Callable[[], object], runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(times)


def _step(n: int, today: str) -> ScheduledStep:
    return ScheduledStep(
        sps_id=f"SPS{n}",
        sps_start_date=today,
        sps_start_time="080000",
        station_ae="MG_SIM",
        sps_description="Pre-contrast",
        protocol_codes=(Code("399162004", "SCT", "cranio-caudal"),),
        study_instance_uid=f"1.2.826.0.1.3680043.10.1466.99.1.{n}",
        accession_number=f"ACC{n}",
        patient=Patient(id=f"P{n}", name="BENCH^UNIT"),
    )


def main() -> None:
    print(f"{'figure':58s} {'value':>10s}")
    print(f"{'MG image 64x80, build (ms)':58s} {median_ms(sample_mg_image):10.2f}")
    full_ms = median_ms(lambda: sample_mg_image(full_size=True), runs=3)
    print(f"{'MG image 3328x4096 16-bit, build (ms)':58s} {full_ms:10.2f}")
    print(f"{'RDSR with 3 events, build (ms)':58s} {median_ms(sample_rdsr):10.2f}")

    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "galacto.sqlite"
        worklist, mpps, dose_log = (
            WorklistStore(db_path),
            SqliteMppsStore(db_path),
            DoseLog(db_path),
        )
        server = UnitFacingServer(worklist, mpps, dose_log, port=0, storage_dir=Path(tmp) / "o")
        host, port = server.start()
        try:
            unit = SimulatedUnit(host, port, "GALACTO", seed=1)
            today = unit.clock().strftime("%Y%m%d")
            counter = iter(range(1000))

            def one_step() -> None:
                n = next(counter)
                worklist.publish(_step(n, today))
                step = next(s for s in unit.poll_worklist() if s.sps_id == f"SPS{n}")
                unit.perform_step(step, ["L-CC", "L-ML-MAG"])

            step_ms = median_ms(one_step)
            print(f"{'whole step: MWL, MPPS x3, 2 images + RDSR (ms)':58s} {step_ms:10.1f}")
            _store_throughput(host, port, Path(tmp))
        finally:
            server.stop()
            dose_log.close()
            mpps.close()


def _store_throughput(host: str, port: int, tmp: Path) -> None:
    full = SimulatedUnit(host, port, "GALACTO", seed=2, full_size=True)
    images = full.acquire(None, ["L-CC"])
    size_mb = len(images[0].dataset.PixelData) / 1e6
    ours_ms = median_ms(lambda: full.send_images(images), runs=5)
    ours = size_mb / (ours_ms / 1000.0)
    print(f"{'full-size C-STORE by the unit (MB/s)':58s} {ours:10.0f}")
    storescu = shutil.which("storescu")
    if storescu is None:
        print("storescu not installed: no DCMTK reference")
        return
    path = tmp / "full.dcm"
    images[0].dataset.save_as(path, enforce_file_format=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    command = [storescu, "-aet", "MG_SIM", "-aec", "GALACTO", host, str(port), str(path)]

    def dcmtk() -> None:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)

    theirs = size_mb / (median_ms(dcmtk, runs=5) / 1000.0)
    print(f"{'same file by storescu, TCP_NODELAY=1 (MB/s)':58s} {theirs:10.0f}")
    print(f"{'unit / storescu':58s} {ours / theirs:10.2f}")
