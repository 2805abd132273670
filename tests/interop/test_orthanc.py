"""A whole exam through `galacto serve` against Orthanc, a RIS and PACS nobody here wrote.

Orthanc (Debian's package) plays both hospital systems: its worklists plugin is the RIS's
worklist provider (files ``*.wl``, one with a UTF-8 name and one with a Latin-1 name), and it is
the PACS, with Storage Commitment (it sends its N-EVENT-REPORT to the port galacto listens on
for it, ``pacs.commitment_port``). A small pynetdicom MPPS SCP (:class:`MppsManager`) is the
RIS's MPPS manager, on its own port (``ris.mpps_host``/``ris.mpps_port``). The unit and the
injector are galacto's simulators. Orthanc is stopped in the middle of the exam and started
again on the same files and ports.

What is asserted goes through Orthanc's REST API and dicom3tools: every object arrived once and
was committed, each carries the RIS's identity (Request Attributes → the RIS's SPS ID,
Referenced PPS → galacto's MPPS, one Study ID across the study: ``dcentvfy`` clean; the Study
Instance UID inside the forwarded unit RDSR), and the final MPPS references every object and
reached the MPPS manager only once Orthanc held them all.

Without Orthanc the test skips saying so (and fails with ``GALACTO_REQUIRE_PEERS=1``, as in CI).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from acquisition.commands.demo import ALL_CLEAR
from acquisition.exam.model import phase_sps_id
from acquisition.exam_machine import ExamState
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from simulators.injector import InjectorSimulator
from simulators.room import UNIT_HVL_TABLE, offered_step
from simulators.unit import SimulatedUnit
from simulators.unit_physics import View
from tests.peers import free_port, wait_listening
from tests.serve_process import JOURNAL_KEY, ServeProcess, write_config
from tests.waiting import wait_until

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
WORKLISTS_PLUGIN = Path("/usr/share/orthanc/plugins/libModalityWorklists.so")
DCENTVFY = shutil.which("dcentvfy")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(60),
    pytest.mark.xdist_group("serve-process"),
    pytest.mark.skipif(
        ORTHANC is None or not WORKLISTS_PLUGIN.exists(),
        reason="Orthanc (with its worklists plugin) not installed",
    ),
    pytest.mark.skipif(DCENTVFY is None, reason="dicom3tools (dcentvfy) not installed"),
]

S = ExamState
OPERATOR = "O. Rthanc"
ORTHANC_AE = "ORTHANC"
MPPS_AE = "MPPSMGR"
GALACTO_AE = "GALACTO"
UNIT_AE = "MG_SIM"
WAIT_S = 20.0
MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
#: (accession, patient name, Specific Character Set, RIS SPS ID, requested procedure ID)
ORDERS = [
    ("ACCUTF8", "Łukasiewicz^Zofia", "ISO_IR 192", "RISSPS1", "RISRP1"),
    ("ACCLAT1", "Müller^Anna", "ISO_IR 100", "RISSPS2", "RISRP2"),
]


def until(predicate: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> None:
    """:func:`tests.waiting.wait_until` with this module's default deadline."""
    wait_until(predicate, timeout_s, what)


# ---------------------------------------------------------------------- the peers


def worklist_file(folder: Path, n: int, order: tuple[str, str, str, str, str]) -> None:
    """One RIS order as a worklist file for Orthanc's worklists plugin, scheduled today."""
    accession, name, charset, sps_id, rp_id = order
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.PatientID = f"OPID{n}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Referrer^Rita"
    ds.RequestingPhysician = "Requester^Rhea"
    ds.RequestedProcedureID = rp_id
    ds.RequestedProcedureDescription = "Galactography left breast"
    ds.StudyInstanceUID = generate_uid()
    code = Dataset()
    code.CodeValue = "18102001"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "Mammary ductogram"
    ds.RequestedProcedureCodeSequence = [code]
    sps = Dataset()
    sps.ScheduledStationAETitle = GALACTO_AE
    sps.ScheduledProcedureStepStartDate = dt.date.today().strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = "080000"
    sps.Modality = "MG"
    sps.ScheduledPerformingPhysicianName = "Radiologist^Rob"
    sps.ScheduledProcedureStepDescription = "Galactography left"
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledProcedureStepLocation = "MAMMO ROOM 1"
    protocol = Dataset()
    protocol.CodeValue = "18102001"
    protocol.CodingSchemeDesignator = "SCT"
    protocol.CodeMeaning = "Mammary ductogram"
    sps.ScheduledProtocolCodeSequence = [protocol]
    ds.ScheduledProcedureStepSequence = [sps]
    ds.save_as(folder / f"order{n}.wl", enforce_file_format=True)


class Orthanc:
    """One Orthanc process on free ports with a temporary configuration; restartable."""

    def __init__(self, root: Path, commitment_port: int) -> None:
        self.root = root
        self.worklists = root / "worklists"
        self.worklists.mkdir(parents=True)
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.config = root / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": "galacto-interop",
                    "StorageDirectory": str(root / "storage"),
                    "IndexDirectory": str(root / "storage"),
                    "Plugins": [str(WORKLISTS_PLUGIN)],
                    "Worklists": {"Enable": True, "Database": str(self.worklists)},
                    "HttpPort": self.http_port,
                    "DicomPort": self.dicom_port,
                    "DicomAet": ORTHANC_AE,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": False,
                    "StorageCompression": False,
                    # Orthanc answers worklists in its default encoding; as shipped (Latin1) it
                    # drops what Latin-1 cannot hold (the Ł of Łukasiewicz): a site with such
                    # names sets UTF-8.
                    "DefaultEncoding": "Utf8",
                    "DicomModalities": {
                        "galacto": {
                            "AET": GALACTO_AE,
                            "Host": "127.0.0.1",
                            "Port": commitment_port,
                            "AllowStorageCommitment": True,
                        }
                    },
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "orthanc.log"

    def start(self) -> None:
        assert ORTHANC is not None and self.process is None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [ORTHANC, str(self.config)],
                stdout=log,
                stderr=log,
                env={**os.environ, "TCP_NODELAY": "1"},
            )
        if not (
            wait_listening(self.dicom_port, self.process, 15)
            and wait_listening(self.http_port, self.process, 15)
        ):
            self.stop()
            raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.process = None

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return body if path.endswith("/file") else json.loads(body)

    def has_instance(self, sop_instance_uid: str) -> bool:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/tools/lookup",
            data=sop_instance_uid.encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            found = json.loads(response.read())
        return any(item.get("Type") == "Instance" for item in found)


class MppsManager:
    """The RIS's MPPS manager: a small pynetdicom MPPS SCP that keeps what it is sent, and
    notes, for the final N-SET, which of the objects it lists Orthanc did not hold then."""

    def __init__(self, orthanc: Orthanc) -> None:
        self.orthanc = orthanc
        self.created: dict[str, Dataset] = {}
        self.sets: dict[str, list[Dataset]] = {}
        self.missing_at_final: list[str] | None = None
        self.lock = threading.Lock()
        self.ae = make_ae(MPPS_AE, Timeouts())
        self.ae.add_supported_context(ModalityPerformedProcedureStep)
        handlers = [(evt.EVT_N_CREATE, self._create), (evt.EVT_N_SET, self._set)]
        self.server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[*handlers, *NODELAY_HANDLERS]
        )
        self.port = int(self.server.server_address[1])

    def _create(self, event: evt.Event) -> tuple[int, Dataset]:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            if uid in self.created:
                return 0x0111, Dataset()
            self.created[uid] = event.attribute_list
        return 0x0000, event.attribute_list

    def _set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        uid = str(event.request.RequestedSOPInstanceUID)
        modification = event.modification_list
        if modification.get("PerformedProcedureStepStatus") in ("COMPLETED", "DISCONTINUED"):
            listed = referenced(modification)
            missing = [u for u in listed if not self.orthanc.has_instance(u)]
            with self.lock:
                self.missing_at_final = missing
        with self.lock:
            if uid not in self.created:
                return 0x0112, None
            self.sets.setdefault(uid, []).append(modification)
        return 0x0000, modification

    def final(self, uid: str) -> Dataset | None:
        with self.lock:
            for modification in self.sets.get(uid, []):
                if modification.get("PerformedProcedureStepStatus") == "COMPLETED":
                    return modification
        return None

    def close(self) -> None:
        self.ae.shutdown()


def referenced(mpps: Dataset) -> set[str]:
    return {
        str(ref.ReferencedSOPInstanceUID)
        for series in mpps.get("PerformedSeriesSequence", [])
        for keyword in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")
        for ref in series.get(keyword, [])
    }


# ---------------------------------------------------------------------- the room


class Room:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.commitment_port = free_port()
        self.orthanc = Orthanc(root / "orthanc", self.commitment_port)
        for n, order in enumerate(ORDERS, start=1):
            worklist_file(self.orthanc.worklists, n, order)
        self.orthanc.start()
        self.mpps = MppsManager(self.orthanc)
        self.injector = InjectorSimulator(seed=0, time_scale=120.0)
        settings = {
            "database.path": str(root / "galacto.db"),
            "dicom.storage_dir": str(root / "objects"),
            "dicom.port": 0,
            "dicom.ae_title": GALACTO_AE,
            "dicom.unit_ae_title": UNIT_AE,
            "dicom.allowed_calling_aes": [UNIT_AE],
            "console.port": 0,
            "injector.url": self.injector.serve_pty(),
            "injector.baseline_window_s": 0.1,
            "injector.poll_interval_s": 0.05,
            "injector.reply_timeout_s": 0.5,
            "ris.host": "127.0.0.1",
            "ris.port": self.orthanc.dicom_port,
            "ris.ae_title": ORTHANC_AE,
            "ris.mpps_host": "127.0.0.1",
            "ris.mpps_port": self.mpps.port,
            "ris.mpps_ae_title": MPPS_AE,
            "ris.station_ae_title": GALACTO_AE,
            "ris.refresh_interval_s": 1.0,
            "pacs.host": "127.0.0.1",
            "pacs.port": self.orthanc.dicom_port,
            "pacs.ae_title": ORTHANC_AE,
            "pacs.storage_commitment": True,
            "pacs.commitment_port": self.commitment_port,
            "pacs.retry_initial_s": 0.1,
            "pacs.retry_max_s": 0.5,
            "site.journal_key": JOURNAL_KEY,
            "dose.hvl_tables": [str(UNIT_HVL_TABLE)],
        }
        self.serve = ServeProcess(write_config(root / "galacto.toml", settings), root / "serve.log")
        endpoints = self.serve.start()
        scp = endpoints["storage_scp"]
        self.unit = SimulatedUnit(
            scp["host"],
            scp["port"],
            scp["ae_title"],
            ae_title=UNIT_AE,
            timeouts=Timeouts(connection_s=3, acse_s=5, dimse_s=15, network_s=30),
        )

    def close(self) -> None:
        self.serve.stop()
        self.mpps.close()
        self.orthanc.stop()
        self.injector.close()

    def state(self) -> dict[str, Any]:
        return self.serve.console.state()

    def command(self, name: str, **args: Any) -> None:
        self.serve.console.command(name, **args)

    def image(self, phase: ExamState, views: list[str]) -> None:
        exam_id = self.state()["exam"]["order"]["exam_id"]
        sps_id = phase_sps_id(exam_id, phase)
        found: list[Any] = []
        until(
            lambda: bool(found.append(offered_step(self.unit, sps_id)) or found[-1]),
            f"the {phase.value} step on the unit's worklist",
        )
        self.unit.perform_step(found[-1], [View.parse(v) for v in views])

    def counted(self, key: str, wanted: int) -> None:
        until(lambda: self.state()["facts"][key] >= wanted, f"{wanted} {key}")

    def wait_state(self, wanted: ExamState) -> None:
        until(lambda: self.state()["exam"]["state"] == wanted.value, f"the exam in {wanted.value}")

    def outbox(self) -> list[sqlite3.Row]:
        with closing(sqlite3.connect(self.root / "galacto.db")) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute("SELECT * FROM outbox_messages ORDER BY id").fetchall()


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    room = Room(tmp_path)
    try:
        yield room
    finally:
        room.close()


# ---------------------------------------------------------------------- the exam


def test_a_whole_exam_against_orthanc_carries_the_ris_identity(room: Room, tmp_path: Path) -> None:
    # The RIS's worklist, read through Orthanc: UTF-8 and Latin-1 names decoded right.
    until(lambda: len(room.state()["orders"]) == 2, "the two Orthanc worklist orders")
    names = {o["accession"]: o["patient_name"] for o in room.state()["orders"]}
    assert names == {"ACCUTF8": "Łukasiewicz^Zofia", "ACCLAT1": "Müller^Anna"}

    room.command("select-order", accession="ACCUTF8", side="L")
    order = room.state()["exam"]["order"]
    mpps_uid = order["mpps_instance_uid"]
    room.command("answer-checklist", answers=ALL_CLEAR, override=None)
    room.image(S.PRE_CONTRAST, ["L-CC", "L-ML"])
    room.counted("pre_contrast_exposures", 2)
    until(lambda: mpps_uid in room.mpps.created, "galacto's MPPS at the MPPS manager")

    room.orthanc.stop()  # the RIS's worklist and the PACS go down in the middle of the exam
    room.command("finish-pre-contrast")
    room.command("confirm-cannulation")
    room.command("confirm-air-purge")
    room.command("start-injection", volume_ml=0.1, rate_ml_min=0.3)
    room.wait_state(S.POST_INJECTION_1)
    room.image(S.POST_INJECTION_1, ["L-CC-MAG", "L-ML-MAG"])
    room.counted("post_injection_exposures", 2)
    room.command("complete")
    assert room.mpps.final(mpps_uid) is None  # held: the PACS holds none of it yet

    room.orthanc.start()  # the same files and ports
    until(lambda: room.mpps.final(mpps_uid) is not None, "the final MPPS", 30)
    room.command("close")

    # Every object arrived once and was committed.
    stores = [m for m in room.outbox() if m["kind"] == "c_store"]
    until(
        lambda: {m["state"] for m in room.outbox() if m["kind"] == "c_store"} == {"committed"},
        "every object committed by Orthanc",
    )
    sent = {m["sop_instance_uid"] for m in stores}
    assert len(stores) == len(sent) == 4 + 2 + 1  # images, the unit's RDSRs, the exam's RDSR
    instances = room.orthanc.get("/instances")
    assert len(instances) == len(sent)
    new_instances = [
        c
        for c in room.orthanc.get("/changes?limit=1000")["Changes"]
        if c["ChangeType"] == "NewInstance"
    ]
    assert len(new_instances) == len(sent)
    (study,) = room.orthanc.get("/studies")

    # The final MPPS lists every object, and reached the MPPS manager once Orthanc held them.
    final = room.mpps.final(mpps_uid)
    assert final is not None and referenced(final) == sent
    assert room.mpps.missing_at_final == []

    # The identity every object carries, through Orthanc's REST API.
    created = room.mpps.created[mpps_uid]
    (step,) = created.ScheduledStepAttributesSequence
    assert step.ScheduledProcedureStepID == "RISSPS1"
    files = tmp_path / "from-orthanc"
    files.mkdir()
    study_ids = set()
    for n, instance in enumerate(instances):
        path = files / f"{n}.dcm"
        path.write_bytes(room.orthanc.get(f"/instances/{instance}/file"))
        ds = dcmread(path)
        assert ds.SOPInstanceUID in sent
        assert ds.StudyInstanceUID == order["study_instance_uid"]
        assert ds.AccessionNumber == "ACCUTF8" and ds.PatientName == "Łukasiewicz^Zofia"
        assert ds.ReferringPhysicianName == "Referrer^Rita"
        (pps,) = ds.ReferencedPerformedProcedureStepSequence
        assert (pps.ReferencedSOPClassUID, pps.ReferencedSOPInstanceUID) == (MPPS_CLASS, mpps_uid)
        study_ids.add(ds.StudyID)
        if ds.Modality == "SR":
            (request,) = ds.ReferencedRequestSequence
            assert request.RequestedProcedureID == "RISRP1"
            uids = [
                str(item.UID)
                for element in ds.iterall()
                if element.keyword == "ContentSequence"
                for item in element.value
                if any(c.CodeValue == "110180" for c in item.get("ConceptNameCodeSequence", []))
            ]
            assert uids == [order["study_instance_uid"]]
        else:
            (request,) = ds.RequestAttributesSequence
            assert request.ScheduledProcedureStepID == "RISSPS1"  # the RIS's step, not galacto's
            assert request.RequestedProcedureID == "RISRP1"
    assert study_ids == {"RISRP1"}
    assert room.orthanc.get(f"/studies/{study}")["MainDicomTags"]["StudyID"] == "RISRP1"
    assert DCENTVFY is not None
    checked = subprocess.run(
        [DCENTVFY, *sorted(str(p) for p in files.glob("*.dcm"))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errors = [line for line in (checked.stdout + checked.stderr).splitlines() if "Error" in line]
    assert errors == []
