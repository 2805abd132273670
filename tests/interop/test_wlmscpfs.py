"""Our MWL SCU (and `galacto worklist query`) against DCMTK's wlmscpfs, a peer nobody here wrote.

wlmscpfs serves ``<dir>/<called AE>/*.wl`` (a ``lockfile`` beside them) and cannot bind port 0:
we pick a free port by binding one, closing it, and retrying on the rare bind race. It runs
with ``TCP_NODELAY=1`` (Debian's DCMTK leaves Nagle on otherwise, dicom.md §2).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_nodes.hospital.mwl_scu import WorklistQuery, find_worklist
from dicom_nodes.hospital.scu import Peer
from dicom_nodes.network import Timeouts
from tests.peers import dcmtk_server

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("wlmscpfs") is None, reason="DCMTK not installed"),
]

AE = "WLMSCP"
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)

#: (accession, name as stored, Specific Character Set, SPS date, station)
ORDERS = [
    ("ACC1", "Müller^Anna", "ISO_IR 100", "20261125", "GALACTO"),
    ("ACC2", "Øvergård^Åse", "ISO_IR 192", "20261125", "GALACTO"),
    ("ACC3", "Smith^Jane", "", "20261126", "GALACTO"),
    ("ACC4", "Other^Olga", "", "20261125", "OTHERSTATION"),
]


def worklist_file(
    directory: Path, n: int, accession: str, name: str, charset: str, date: str, station: str
) -> None:
    """One worklist file as a RIS export would write it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"  # DCMTK's worklist file class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if charset:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = f"PID{n}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.Allergies = "IODINE"
    ds.MedicalAlerts = "ASTHMA"
    ds.PregnancyStatus = 1
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.RequestedProcedureID = f"RP{n}"
    ds.RequestedProcedureDescription = "Galactography right"
    ds.RequestedProcedurePriority = "ROUTINE"
    ds.StudyInstanceUID = generate_uid()
    code = Dataset()
    code.CodeValue = "18102001"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "Mammary ductogram"
    ds.RequestedProcedureCodeSequence = Sequence([code])
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = f"{8 + n:02d}0000"
    sps.Modality = "MG"
    sps.ScheduledPerformingPhysicianName = "Radiologist^Rob"
    sps.ScheduledProcedureStepDescription = "Galactography"
    sps.ScheduledProcedureStepID = f"SPS{n}"
    sps.RequestedContrastAgent = "Iohexol 300"
    sps.PreMedication = ""
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    protocol = Dataset()
    protocol.CodeValue = "399162004"
    protocol.CodingSchemeDesignator = "SCT"
    protocol.CodeMeaning = "cranio-caudal"
    sps.ScheduledProtocolCodeSequence = Sequence([protocol])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    ds.save_as(directory / f"order{n}.wl", enforce_file_format=True)


@dataclass
class Wlmscpfs:
    port: int


@pytest.fixture
def wlmscpfs(tmp_path: Path) -> Iterator[Wlmscpfs]:
    root = tmp_path / "worklists"
    (root / AE).mkdir(parents=True)
    (root / AE / "lockfile").touch()
    for n, order in enumerate(ORDERS, start=1):
        worklist_file(root / AE, n, *order)
    with dcmtk_server(
        lambda port: ["wlmscpfs", "--single-process", "-csk", "-dfp", str(root), str(port)]
    ) as port:
        yield Wlmscpfs(port)


def peer(server: Wlmscpfs) -> Peer:
    return Peer("127.0.0.1", server.port, AE, calling_ae="GALACTO", timeouts=FAST)


def test_broad_query_matches_station_date_and_modality(wlmscpfs: Wlmscpfs) -> None:
    query = WorklistQuery(station_ae="GALACTO", modality="MG", sps_date="20261125")
    result = find_worklist(peer(wlmscpfs), query)
    assert sorted(i.accession_number for i in result.items) == ["ACC1", "ACC2"]


def test_names_come_back_decoded_per_character_set(wlmscpfs: Wlmscpfs) -> None:
    result = find_worklist(peer(wlmscpfs), WorklistQuery(modality="MG"))
    names = {i.accession_number: i.patient.name for i in result.items}
    assert names["ACC1"] == "Müller^Anna"
    assert names["ACC2"] == "Øvergård^Åse"
    assert names["ACC3"] == "Smith^Jane"


def test_every_return_key_we_rely_on_is_filled(wlmscpfs: Wlmscpfs) -> None:
    result = find_worklist(peer(wlmscpfs), WorklistQuery.patient(patient_id="PID1"))
    (item,) = result.items
    assert (item.accession_number, item.sps_id, item.requested_procedure_id) == (
        "ACC1",
        "SPS1",
        "RP1",
    )
    assert item.study_instance_uid
    assert item.sps_start is not None and item.sps_start.hour == 9
    assert [c.value for c in item.protocol_codes] == ["399162004"]
    assert [c.value for c in item.requested_procedure_codes] == ["18102001"]
    assert item.requested_contrast_agent == "Iohexol 300"
    assert item.allergies == ("IODINE",)
    assert item.medical_alerts == ("ASTHMA",)
    assert item.pregnancy_status == 1


def test_date_range_query(wlmscpfs: Wlmscpfs) -> None:
    query = WorklistQuery(station_ae="GALACTO", sps_date="20261125-20261126")
    result = find_worklist(peer(wlmscpfs), query)
    assert sorted(i.accession_number for i in result.items) == ["ACC1", "ACC2", "ACC3"]


def test_the_cap_cancels_against_wlmscpfs(wlmscpfs: Wlmscpfs) -> None:
    result = find_worklist(peer(wlmscpfs), WorklistQuery(modality="MG"), max_results=1)
    assert result.truncated and len(result.items) == 1
    # The association ended cleanly: the next query works.
    assert len(find_worklist(peer(wlmscpfs), WorklistQuery(modality="MG")).items) == 4


def test_the_command_line_against_wlmscpfs(wlmscpfs: Wlmscpfs) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "acquisition",
            "worklist",
            "query",
            "--host",
            "127.0.0.1",
            "--port",
            str(wlmscpfs.port),
            "--called-ae",
            AE,
            "--station-ae",
            "GALACTO",
            "--date",
            "20261125",
            "--json",
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = sorted(json.loads(line)["patient_name"] for line in done.stdout.splitlines())
    assert names == ["Müller^Anna", "Øvergård^Åse"]


@pytest.fixture
def wlmscpfs_without_charset(tmp_path: Path) -> Iterator[Wlmscpfs]:
    """wlmscpfs as shipped, serving a RIS export whose files hold UTF-8 names but no Specific
    Character Set: its answers carry none either."""
    root = tmp_path / "worklists"
    (root / AE).mkdir(parents=True)
    (root / AE / "lockfile").touch()
    worklist_file(root / AE, 1, "ACC9", "", "", "20261125", "GALACTO")
    path = root / AE / "order1.wl"
    ds = dcmread(path)
    ds.PatientName = "Øvergård^Åse".encode()  # raw UTF-8 bytes, no (0008,0005)
    ds.save_as(path, enforce_file_format=True)
    with dcmtk_server(
        lambda port: ["wlmscpfs", "--single-process", "-csk", "-dfp", str(root), str(port)]
    ) as port:
        yield Wlmscpfs(port)


def test_the_fallback_character_set_decodes_a_response_without_one(
    wlmscpfs_without_charset: Wlmscpfs,
) -> None:
    server = peer(wlmscpfs_without_charset)
    (raw,) = find_worklist(server, WorklistQuery(modality="MG")).items
    assert raw.specific_character_set == ()
    assert raw.patient.name != "Øvergård^Åse"  # the default repertoire cannot read it
    (item,) = find_worklist(
        server, WorklistQuery(modality="MG"), fallback_character_set="ISO_IR 192"
    ).items
    assert item.patient.name == "Øvergård^Åse"
    assert item.assumed_character_set == "ISO_IR 192"


def test_the_fallback_character_set_does_not_override_a_named_one(wlmscpfs: Wlmscpfs) -> None:
    result = find_worklist(
        peer(wlmscpfs), WorklistQuery(modality="MG"), fallback_character_set="ISO_IR 192"
    )
    names = {i.accession_number: (i.patient.name, i.assumed_character_set) for i in result.items}
    assert names["ACC1"] == ("Müller^Anna", "")  # named ISO_IR 100: read as Latin-1


def test_the_command_line_fallback_charset_against_wlmscpfs(
    wlmscpfs_without_charset: Wlmscpfs,
) -> None:
    def query(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "acquisition",
                "worklist",
                "query",
                "--host",
                "127.0.0.1",
                "--port",
                str(wlmscpfs_without_charset.port),
                "--called-ae",
                AE,
                "--json",
                "--timeout",
                "5",
                *extra,
            ],
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=60,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
            check=False,
        )

    done = query("--fallback-charset", "ISO_IR 192")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert json.loads(line)["patient_name"] == "Øvergård^Åse"
    refused = query("--fallback-charset", "UTF-8")
    assert refused.returncode == 2 and "not a Specific Character Set term" in refused.stderr
