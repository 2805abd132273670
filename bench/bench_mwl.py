"""MWL query latency: galacto's worklist SCP vs DCMTK ``wlmscpfs`` on the same worklist.

Issue 3 §5. For 1,000 / 10,000 / 100,000 scheduled steps, the same items are published into
our store and written as ``.wl`` files for ``wlmscpfs``; the same client (DCMTK ``findscu -W``,
with ``TCP_NODELAY=1``) sends the same two queries to both:

- *selective*: station AE + SPS start date + modality MG (about 30 matches);
- *everything*: modality MG only (every step matches).

Each figure is the median wall time of whole ``findscu`` runs (process start, association,
query, release). ``wlmscpfs`` runs with ``TCP_NODELAY=1`` (the fair anchor: Debian's DCMTK
leaves Nagle on otherwise) and as shipped (no variable); the ratio is ours / anchor.
The 100,000-step *everything* query is left out unless ``GALACTO_BENCH_MWL_FULL=1``
(``wlmscpfs`` alone needs tens of seconds for it). Run: ``python -m bench mwl``.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom.dsutils import encode_file_meta

from acquisition.controller import IDLE_S as CONTROLLER_IDLE_S
from dicom_nodes.datasets import codes
from dicom_nodes.datasets.identity import Patient
from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from dicom_nodes.unit_facing.mwl_matching import WorklistQuery
from dicom_nodes.unit_facing.mwl_scp import MWL_FIND_UID, TRANSFER_SYNTAXES, WorklistSCP
from dicom_nodes.unit_facing.worklist_store import SUPPORTED_KEYS, ScheduledStep, WorklistStore
from storage.writer import shared

SIZES = (1_000, 10_000, 100_000)
STATIONS = 10
MATCHES_PER_STATION_DAY = 30
FIRST_DAY = date(2026, 1, 5)
CALLED_AE = "GALACTO"
WLM_AE = "WLMSCPFS"
STARTUP_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 600.0

RETURN_KEYS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureID",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeValue",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodingSchemeDesignator",
    "ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence[0].CodeMeaning",
)


def _day(index: int) -> str:
    return (FIRST_DAY + timedelta(days=index)).strftime("%Y%m%d")


def make_steps(count: int) -> list[ScheduledStep]:
    """Deterministic steps: ``STATIONS`` stations, ~30 steps per station and day."""
    days = max(1, count // (STATIONS * MATCHES_PER_STATION_DAY))
    steps = []
    for k in range(count):
        steps.append(
            ScheduledStep(
                sps_id=f"SPS{k:07d}",
                sps_start_date=_day((k // STATIONS) % days),
                sps_start_time=f"{7 + k % 12:02d}{k % 60:02d}00",
                station_ae=f"MAMMO{k % STATIONS}",
                sps_description="Galactography pre-contrast",
                protocol_codes=(codes.VIEW_CC, codes.VIEW_ML),
                requested_procedure_id=f"RP{k:07d}",
                requested_procedure_description="Galactography",
                requested_procedure_codes=(codes.DUCTOGRAPHY,),
                study_instance_uid=f"1.2.826.0.1.3680043.10.9.{k}",
                accession_number=f"ACC{k:07d}",
                patient=Patient(
                    name=f"Doe^Jane{k}", id=f"PID{k:07d}", birth_date="19750101", sex="F"
                ),
            )
        )
    return steps


def write_wl_files(store: WorklistStore, root: Path) -> Path:
    """The same items as ``wlmscpfs`` data files: ``root/<AE>/*.wl`` plus its lockfile.

    Each file is the step's complete identifier exactly as our store encoded it (Explicit
    VR Little Endian, ISO_IR 192) behind a file meta header.
    """
    directory = root / WLM_AE
    directory.mkdir(parents=True)
    (directory / "lockfile").touch()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MWL_FIND_UID)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    header = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    everything = WorklistQuery((), SUPPORTED_KEYS)
    for n, identifier in enumerate(store.find(everything, explicit_vr=True)):
        (directory / f"item{n:07d}.wl").write_bytes(header + identifier)
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port}")


@contextmanager
def wlmscpfs(data_dir: Path, *, nodelay: bool) -> Iterator[int]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    process = subprocess.Popen(
        ["wlmscpfs", "-dfp", str(data_dir), "-csk", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=STARTUP_TIMEOUT_S)


@contextmanager
def galacto_scp(store: WorklistStore) -> Iterator[int]:
    scp = WorklistSCP(store, max_results=1_000_000)
    ae = make_ae(CALLED_AE, Timeouts())
    ae.add_supported_context(MWL_FIND_UID, list(TRANSFER_SYNTAXES))
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[*scp.handlers(), *NODELAY_HANDLERS]
    )
    assert server is not None
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def query_keys(kind: str) -> list[str]:
    keys = ["ScheduledProcedureStepSequence[0].Modality=MG"]
    if kind == "selective":
        keys += [
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=MAMMO3",
            f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={_day(0)}",
        ]
    else:
        keys += [
            "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
            "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
        ]
    return keys + list(RETURN_KEYS)


def findscu(port: int, called_ae: str, keys: Sequence[str], out_dir: Path | None = None) -> float:
    """One ``findscu -W`` run; its wall time in seconds."""
    args = ["findscu", "-W", "-q", "-aet", "BENCH", "-aec", called_ae]
    args += ["-to", "10", "-ta", "10", "-td", "120"]
    if out_dir is not None:
        out_dir.mkdir(parents=True)
        args += ["-X", "-od", str(out_dir)]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    started = time.perf_counter()
    subprocess.run(args, env=env, check=True, timeout=RUN_TIMEOUT_S)
    return time.perf_counter() - started


def count_matches(port: int, called_ae: str, keys: Sequence[str], scratch: Path) -> int:
    out_dir = Path(tempfile.mkdtemp(dir=scratch))
    shutil.rmtree(out_dir)
    findscu(port, called_ae, keys, out_dir)
    return len(list(out_dir.glob("rsp*.dcm")))


def median_time(port: int, called_ae: str, keys: Sequence[str], repeats: int) -> float:
    return statistics.median(findscu(port, called_ae, keys) for _ in range(repeats))


def bench_size(count: int, root: Path, *, include_everything: bool, floor_s: float) -> list[str]:
    steps = make_steps(count)
    # opened as the controller opens it: its database kept open while idle (a store of its own
    # would let its connections go after 10 ms, and the next query would open them again)
    database = shared(root / "galacto.db", idle_s=CONTROLLER_IDLE_S)
    store = WorklistStore(database)
    database.close()  # the store holds it now
    started = time.perf_counter()
    store.publish_many(steps)
    publish_s = time.perf_counter() - started
    started = time.perf_counter()
    data_dir = write_wl_files(store, root / "wlm")
    files_s = time.perf_counter() - started
    print(
        f"  {count:>7} steps: published in {publish_s:.1f} s"
        f" ({publish_s / count * 1000:.2f} ms/step), .wl files in {files_s:.1f} s",
        flush=True,
    )
    kinds = ["selective"] + (["everything"] if include_everything else [])
    rows = []
    for kind in kinds:
        keys = query_keys(kind)
        slow = count >= 100_000 or kind == "everything"
        repeats_ours, repeats_dcmtk = (3, 2) if slow else (7, 3)
        with galacto_scp(store) as port:
            cold = findscu(port, CALLED_AE, keys)  # first query: page cache, trimmed cache
            ours = median_time(port, CALLED_AE, keys, repeats_ours)
            matches_ours = count_matches(port, CALLED_AE, keys, root) if count < 100_000 else -1
        with wlmscpfs(data_dir, nodelay=True) as port:
            anchor = median_time(port, WLM_AE, keys, repeats_dcmtk)
            matches_wlm = count_matches(port, WLM_AE, keys, root) if count < 100_000 else -1
        with wlmscpfs(data_dir, nodelay=False) as port:
            shipped = median_time(port, WLM_AE, keys, 1)
        matches = f"{matches_ours}/{matches_wlm}" if matches_ours >= 0 else "n/c"
        net = (ours - floor_s) / max(anchor - floor_s, 1e-9)
        rows.append(
            f"{count:>7}  {kind:<10}  {cold:>7.3f}  {ours:>7.3f}  {anchor:>8.3f}"
            f"  {ours / anchor:>6.3f}  {net:>6.3f}  {shipped:>8.3f}  {matches:>11}"
        )
        print(rows[-1], flush=True)
    return rows


def measure_floor(root: Path) -> float:
    """findscu against ``wlmscpfs`` serving an empty worklist: the client + association cost
    that no server can go below on this machine."""
    (root / WLM_AE).mkdir(parents=True)
    (root / WLM_AE / "lockfile").touch()
    with wlmscpfs(root, nodelay=True) as port:
        return median_time(port, WLM_AE, query_keys("selective"), 7)


def main() -> None:
    if shutil.which("wlmscpfs") is None or shutil.which("findscu") is None:
        print("DCMTK (wlmscpfs, findscu) not installed: nothing measured")
        return
    full = os.environ.get("GALACTO_BENCH_MWL_FULL") == "1"
    print("MWL C-FIND: findscu -W wall time, seconds (median of runs; 'cold' = first query)")
    with tempfile.TemporaryDirectory(prefix="bench_mwl_") as tmp:
        floor_s = measure_floor(Path(tmp) / "empty")
        print(f"floor (wlmscpfs, empty worklist, TCP_NODELAY=1): {floor_s:.3f} s")
        print("ratio = galacto / wlmscpfs(ND=1); net = the same after subtracting the floor")
        print(
            "  steps  query          cold  galacto  wlmscpfs   ratio     net   shipped  matches o/w"
        )
        for count in SIZES:
            root = Path(tmp) / str(count)
            root.mkdir()
            bench_size(count, root, include_everything=count < 100_000 or full, floor_s=floor_s)
            shutil.rmtree(root)
    print("goals: selective ratio <= 0.10 at 10,000 and <= 0.02 at 100,000; everything <= 1.0")
    if not full:
        print("100,000 'everything' left out (set GALACTO_BENCH_MWL_FULL=1 to include it)")


if __name__ == "__main__":
    main()
