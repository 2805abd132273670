"""DCMTK ``findscu -W`` (a worklist client nobody here wrote) against the simulated RIS."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_nodes.network import Timeouts
from simulators.ris import SimulatedRis
from simulators.ris_orders import CURATED_PATIENTS

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("findscu") is None, reason="DCMTK findscu not installed"),
]

TODAY = dt.date(2026, 3, 2)
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def findscu(port: int, out_dir: Path, *keys: str) -> subprocess.CompletedProcess[str]:
    command = ["findscu", "-W", "-X", "-od", str(out_dir)]
    command += ["-aet", "GALACTO", "-aec", "RIS", "-to", "5", "-ta", "5", "-td", "10"]
    for key in keys:
        command += ["-k", key]
    command += ["127.0.0.1", str(port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=30, env=env)


def test_findscu_gets_todays_orders_with_their_character_sets(tmp_path: Path) -> None:
    with SimulatedRis(orders=len(CURATED_PATIENTS), day=TODAY, timeouts=FAST) as ris:
        result = findscu(
            ris.address[1],
            tmp_path,
            "SpecificCharacterSet=ISO_IR 192",
            "PatientName",
            "PatientID",
            "Allergies",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=GALACTO",
            "ScheduledProcedureStepSequence[0].Modality=MG",
            f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={TODAY:%Y%m%d}",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
        )
    assert result.returncode == 0, result.stderr
    answers = [dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
    by_id = {str(ds.PatientID): ds for ds in answers}
    assert set(by_id) == {p.patient_id for p in CURATED_PATIENTS}
    for patient in CURATED_PATIENTS:
        assert str(by_id[patient.patient_id].PatientName) == patient.name
    assert "ISO_IR 192" in str(by_id["GAL-0002"].SpecificCharacterSet)
    assert "Iodinated" in by_id["GAL-0002"].Allergies


def test_findscu_query_for_another_station_gets_nothing(tmp_path: Path) -> None:
    with SimulatedRis(orders=3, day=TODAY, timeouts=FAST) as ris:
        result = findscu(
            ris.address[1],
            tmp_path,
            "PatientName",
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=ELSEWHERE",
        )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.glob("rsp*.dcm")) == []
