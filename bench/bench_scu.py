"""SCU figures toward the hospital: outbox C-STORE send, MPPS through the outbox, MWL query.

- C-STORE **send** throughput of 27 MB MG images (3328×4096, 16-bit) from our outbox (files
  sent as they are, chunked, one association per round) to DCMTK ``storescp`` (``TCP_NODELAY=1``),
  against DCMTK ``storescu`` (``TCP_NODELAY=1``) sending the same files to the same storescp.
- MPPS N-CREATE + N-SET through the durable outbox (enqueue → both rows marked sent, sender
  thread, one association per message), beside the bare exchange on one open association,
  against the simulated RIS (our MPPS SCP rules).
- MWL query of 1,000 items from DCMTK ``wlmscpfs``: our SCU (decode into WorklistItem) against
  DCMTK ``findscu`` (process start included, output discarded).

``python -m bench scu`` runs it. Figures only; nothing is asserted.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

IMAGES = 6
ROWS, COLUMNS = 4096, 3328
MPPS_PAIRS = 40
WORKLIST_ITEMS = 1000
MG = "1.2.840.10008.5.1.4.1.1.1.2"
NODELAY = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        argv, env=NODELAY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        time.sleep(0.02)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


def _image(directory: Path, n: int, pixels: bytes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MG
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    path = directory / f"img{n}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def bench_store_send(work: Path) -> None:
    from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
    from dicom_nodes.hospital.scu import Peer
    from dicom_nodes.network import Timeouts

    pixels = bytes(range(256)) * (ROWS * COLUMNS * 2 // 256)
    files = [_image(work, n, pixels) for n in range(IMAGES)]
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    received = work / "received"
    received.mkdir()
    port = _free_port()
    storescp = _start(["storescp", "-od", str(received), "--ignore", str(port)], port)
    try:
        started = time.perf_counter()
        subprocess.run(
            ["storescu", "127.0.0.1", str(port), *map(str, files)],
            env=NODELAY,
            check=True,
            capture_output=True,
            timeout=300,
        )
        dcmtk_s = time.perf_counter() - started
        timeouts = Timeouts(dimse_s=60.0)
        peer = Peer("127.0.0.1", port, "ANY-SCP", timeouts=timeouts)
        with Outbox(work / "bench.db", {"pacs": peer}) as outbox:
            for f in files:
                outbox.enqueue_store(f)
            started = time.perf_counter()
            outbox.run_once()
            ours_s = time.perf_counter() - started
            sent = outbox.counts().get("sent", 0)
    finally:
        _stop(storescp)
    print(f"C-STORE send, {IMAGES} × {megabytes / IMAGES:.1f} MB to storescp (TCP_NODELAY=1):")
    print(f"  storescu (TCP_NODELAY=1)  {megabytes / dcmtk_s:8.0f} MB/s")
    print(
        f"  our outbox               {megabytes / ours_s:8.0f} MB/s   "
        f"ratio {dcmtk_s / ours_s:.2f}× storescu   ({sent}/{IMAGES} sent)"
    )


def bench_mpps(work: Path) -> None:
    import datetime as dt

    from pynetdicom import build_context
    from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

    from dicom_nodes.datasets.identity import Patient
    from dicom_nodes.datasets.mpps_builders import (
        MppsExam,
        PerformedSeries,
        build_mpps_in_progress,
        build_mpps_update,
    )
    from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox
    from dicom_nodes.hospital.mpps_scu import exchange
    from dicom_nodes.hospital.outbox import RetryPolicy
    from dicom_nodes.hospital.scu import Peer, associate
    from dicom_nodes.network import Timeouts
    from simulators.ris import SimulatedRis

    def exam() -> MppsExam:
        return MppsExam(
            generate_uid(),
            "PPS1",
            "S1",
            "GALACTO",
            dt.datetime(2026, 11, 25, 9),
            Patient("Doe^Jane", "P1"),
            study_instance_uid=generate_uid(),
        )

    series = [PerformedSeries(generate_uid(), "Pre-contrast", images=((MG, generate_uid()),))]
    with SimulatedRis(timeouts=Timeouts()) as ris:
        host, port = ris.address
        peer = Peer(host, port, "RIS", timeouts=Timeouts())
        bare_ms = []
        with associate(peer, [build_context(ModalityPerformedProcedureStep)]) as assoc:
            for _ in range(MPPS_PAIRS):
                e = exam()
                started = time.perf_counter()
                exchange(assoc, "mpps_create", e.mpps_instance_uid, build_mpps_in_progress(e))
                exchange(assoc, "mpps_set", e.mpps_instance_uid, build_mpps_update(e, series))
                bare_ms.append((time.perf_counter() - started) * 1000)
        outbox_ms = []
        with Outbox(work / "mpps.db", {"ris": peer}, retry=RetryPolicy(0.05, 0.2)) as outbox:
            outbox.start()
            for _ in range(MPPS_PAIRS):
                e = exam()
                uid = e.mpps_instance_uid
                started = time.perf_counter()
                outbox.enqueue_mpps_create(uid, build_mpps_in_progress(e))
                outbox.enqueue_mpps_set(uid, build_mpps_update(e, series))
                outbox.wait_for(
                    lambda uid=uid: [m.state for m in outbox.messages(uid)] == ["sent", "sent"], 30
                )
                outbox_ms.append((time.perf_counter() - started) * 1000)
    print(f"MPPS N-CREATE + N-SET against the simulated RIS, {MPPS_PAIRS} pairs:")
    print(f"  bare, one association      median {statistics.median(bare_ms):6.1f} ms")
    print(
        f"  through the durable outbox median {statistics.median(outbox_ms):6.1f} ms  "
        f"(enqueue with fsync, sender thread, one association)"
    )


def _worklist_files(directory: Path, count: int) -> None:
    for n in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.276.0.7230010.3.1.0.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = f"Müller^Anna{n}"
        ds.PatientID = f"P{n}"
        ds.AccessionNumber = f"A{n}"
        ds.RequestedProcedureID = f"RP{n}"
        ds.StudyInstanceUID = generate_uid()
        sps = Dataset()
        sps.ScheduledStationAETitle = "GALACTO"
        sps.ScheduledProcedureStepStartDate = "20261125"
        sps.ScheduledProcedureStepStartTime = "090000"
        sps.Modality = "MG"
        sps.ScheduledProcedureStepID = f"SPS{n}"
        ds.ScheduledProcedureStepSequence = Sequence([sps])
        ds.save_as(directory / f"o{n}.wl", enforce_file_format=True)


def bench_mwl(work: Path) -> None:
    from dicom_nodes.hospital.mwl_scu import WorklistQuery, find_worklist
    from dicom_nodes.hospital.scu import Peer
    from dicom_nodes.network import Timeouts

    root = work / "wl"
    (root / "WLM").mkdir(parents=True)
    (root / "WLM" / "lockfile").touch()
    _worklist_files(root / "WLM", WORKLIST_ITEMS)
    port = _free_port()
    server = _start(
        ["wlmscpfs", "--single-process", "-csk", "-dfr", "-dfp", str(root), str(port)], port
    )
    try:
        started = time.perf_counter()
        subprocess.run(
            [
                "findscu",
                "-W",
                "-aec",
                "WLM",
                "-k",
                "PatientName",
                "-k",
                "AccessionNumber",
                "-k",
                "ScheduledProcedureStepSequence[0].Modality=MG",
                "127.0.0.1",
                str(port),
            ],
            env=NODELAY,
            check=True,
            capture_output=True,
            timeout=300,
        )
        findscu_s = time.perf_counter() - started
        peer = Peer("127.0.0.1", port, "WLM", timeouts=Timeouts(dimse_s=60.0))
        started = time.perf_counter()
        result = find_worklist(peer, WorklistQuery(modality="MG"), max_results=10 * WORKLIST_ITEMS)
        ours_s = time.perf_counter() - started
    finally:
        _stop(server)
    print(f"MWL query of {WORKLIST_ITEMS} items from wlmscpfs (TCP_NODELAY=1):")
    print(f"  findscu -W (3 keys, process start included) {findscu_s:6.2f} s")
    print(
        f"  our MWL SCU (all return keys, decoded)      {ours_s:6.2f} s   "
        f"ratio {ours_s / findscu_s:.2f}×  ({len(result.items)} items)"
    )


def main() -> None:
    missing = [
        tool
        for tool in ("storescp", "storescu", "wlmscpfs", "findscu")
        if shutil.which(tool) is None
    ]
    if missing:
        print(f"skipped: {', '.join(missing)} not installed")
        return
    with tempfile.TemporaryDirectory(prefix="bench-scu-") as tmp:
        work = Path(tmp)
        bench_store_send(work)
        bench_mpps(work)
        bench_mwl(work)


if __name__ == "__main__":
    main()
