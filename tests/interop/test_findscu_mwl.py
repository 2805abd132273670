"""DCMTK ``findscu -W`` queries our MWL SCP the way a mammography unit would (issue 3 §4)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from dicom_nodes.unit_facing.mwl_scp import WorklistSCP
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("findscu") is None, reason="DCMTK findscu not installed"),
]

SUBPROCESS_TIMEOUT_S = 60

NAMES = {
    "SPS-LATIN1": "Müller^Anna",
    "SPS-SPANISH": "Ñúñez^María",
    "SPS-GREEK": "Παπαδοπούλου^Ελένη",
    "SPS-JAPANESE": "山田^花子",
}


def _step(sps_id: str, name: str, n: int, station: str = "MAMMO1") -> ScheduledStep:
    return ScheduledStep(
        sps_id=sps_id,
        sps_start_date="20261125",
        sps_start_time=f"{9 + n:02d}0000",
        station_ae=station,
        sps_description="Galactography pre-contrast",
        protocol_codes=(codes.VIEW_CC, codes.VIEW_ML, codes.MODIFIER_MAGNIFICATION),
        requested_procedure_id=f"RP{n}",
        requested_procedure_description="Galactography right",
        requested_procedure_codes=(codes.DUCTOGRAPHY,),
        study_instance_uid=f"1.2.826.0.1.3680043.10.3.{n}",
        accession_number=f"ACC{n}",
        patient=Patient(name=name, id=f"PID{n}", sex="F"),
        allergies=("Iodinated contrast",) if n == 0 else (),
    )


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    store = WorklistStore(tmp_path / "galacto.db")
    store.publish_many(
        [_step(sps_id, name, n) for n, (sps_id, name) in enumerate(NAMES.items())]
        + [_step("SPS-OTHER", "Doe^Jane", 9, station="MAMMO2")]
    )
    scp = WorklistSCP(store)
    ae = make_ae("GALACTO", Timeouts())
    for context in scp.contexts:
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=scp.handlers() + NODELAY_HANDLERS
    )
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def findscu(port: int, out_dir: Path, *keys: str | bytes) -> list[pydicom.Dataset]:
    """Run ``findscu -W -X`` and read back every response it extracted.

    A key given as bytes reaches findscu unchanged (e.g. a Latin-1 encoded value).
    """
    out_dir.mkdir()
    args: list[str | bytes] = ["findscu", "-W", "-X", "-od", str(out_dir)]
    args += ["-aet", "MAMMO1", "-aec", "GALACTO", "-to", "5", "-ta", "5", "-td", "10"]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(port)]
    result = subprocess.run(
        args,
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        errors="replace",
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [pydicom.dcmread(path) for path in sorted(out_dir.glob("rsp*.dcm"))]


UNIT_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "Allergies",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepSequence[0].Modality=MG",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MAMMO1",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261124-20261125",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodingSchemeDesignator",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeMeaning",
)


def test_unit_query_in_utf8(port: int, tmp_path: Path) -> None:
    items = findscu(port, tmp_path / "utf8", "SpecificCharacterSet=ISO_IR 192", *UNIT_KEYS)
    by_sps = {ds.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID: ds for ds in items}
    assert set(by_sps) == set(NAMES)  # the other station's step is not offered
    for sps_id, name in NAMES.items():
        ds = by_sps[sps_id]
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == name
        sps = ds.ScheduledProcedureStepSequence[0]
        assert sps.Modality == "MG"
        views = [codes.Code.from_item(item) for item in sps.ScheduledProtocolCodeSequence]
        assert views == [codes.VIEW_CC, codes.VIEW_ML, codes.MODIFIER_MAGNIFICATION]
    assert by_sps["SPS-LATIN1"].Allergies == "Iodinated contrast"
    assert by_sps["SPS-SPANISH"]["Allergies"].is_empty  # requested, none: zero-length
    assert "ReferringPhysicianName" not in by_sps["SPS-LATIN1"]  # not requested


def test_unit_query_in_latin1(port: int, tmp_path: Path) -> None:
    items = findscu(port, tmp_path / "latin1", "SpecificCharacterSet=ISO_IR 100", *UNIT_KEYS)
    charsets = {str(ds.PatientName): ds.SpecificCharacterSet for ds in items}
    assert charsets == {
        "Müller^Anna": "ISO_IR 100",
        "Ñúñez^María": "ISO_IR 100",
        "Παπαδοπούλου^Ελένη": "ISO_IR 192",  # cannot be said in Latin-1
        "山田^花子": "ISO_IR 192",
    }


def test_latin1_encoded_name_in_the_query(port: int, tmp_path: Path) -> None:
    name_key = "PatientName=Müller*".encode("latin-1")  # as a Latin-1 unit would send it
    items = findscu(port, tmp_path / "name", "SpecificCharacterSet=ISO_IR 100", name_key)
    assert [(ds.SpecificCharacterSet, str(ds.PatientName)) for ds in items] == [
        ("ISO_IR 100", "Müller^Anna")
    ]


def test_query_by_patient_id_and_accession(port: int, tmp_path: Path) -> None:
    items = findscu(port, tmp_path / "pid", "PatientName", "PatientID=PID1", "AccessionNumber=ACC*")
    assert [(str(ds.PatientName), ds.PatientID) for ds in items] == [("Ñúñez^María", "PID1")]


def test_findscu_cancel_stops_the_answer(tmp_path: Path) -> None:
    store = WorklistStore(tmp_path / "many.db")
    steps = [_step(f"SPS{n:04d}", "Doe^Jane", n % 10) for n in range(600)]
    store.publish_many(steps)
    scp = WorklistSCP(store)
    ae = make_ae("GALACTO", Timeouts())
    for context in scp.contexts:
        ae.add_supported_context(context.abstract_syntax, context.transfer_syntax)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=scp.handlers() + NODELAY_HANDLERS
    )
    out_dir = tmp_path / "cancel"
    out_dir.mkdir()
    args = ["findscu", "-W", "-v", "-X", "-od", str(out_dir), "--cancel", "3"]
    args += ["-aet", "MAMMO1", "-aec", "GALACTO", "-to", "5", "-ta", "5", "-td", "10"]
    args += ["-k", "PatientName", "-k", "ScheduledProcedureStepSequence[0].Modality=MG"]
    args += ["127.0.0.1", str(server.server_address[1])]
    try:
        result = subprocess.run(
            args,
            env={**os.environ, "TCP_NODELAY": "1"},
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            check=False,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "Final Find Response (Cancel" in result.stdout + result.stderr
    assert 3 <= len(list(out_dir.glob("rsp*.dcm"))) < len(steps)
