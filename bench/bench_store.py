"""Storage SCP and MPPS SCP figures (issue 3 §5): throughput, memory, record latency, MPPS.

- C-STORE receive throughput of 27 MB MG images (3328×4096, 16-bit) sent by DCMTK ``storescu``
  (``TCP_NODELAY=1``) to: our server (dose extracted, file kept, fsync'ed — the default — and
  without fsync, like storescp), DCMTK ``storescp`` with ``TCP_NODELAY=1`` (tuned) and as
  shipped. Ratio against tuned storescp.
- Peak memory (VmHWM) of our server process, which runs in a subprocess, against one image.
- Exposure-to-durable-record latency (C-STORE handler entered → row committed, with the dose
  checks of a default controller: plausibility, the Dance check, the published levels) over
  small images, median and p99, beside the SQLite commit floor (one INSERT + COMMIT, WAL,
  synchronous=FULL) measured alone on the same disk; and ``DoseLog.record()`` alone, from one
  and four threads, and with three other stores (journal, MPPS, received objects) writing to
  the same file at the same time (issue 13 §8: the four writers).
- MPPS N-CREATE + N-SET round trip: in one association, and one association per pair.

``python -m bench store`` runs it; ``python -m bench.bench_store serve DIR FSYNC`` is the
server subprocess it starts.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGES = 8
SMALL_IMAGES = 300
MPPS_PAIRS = 100
FULL_ROWS, FULL_COLUMNS = 4096, 3328
REPEATS = 3  # best of: each run also pays storescu start-up and association set-up
STORESCP_MAX_PDU = 131072  # DCMTK's largest; ours advertises 256 KiB (dicom.md §2)


# --------------------------------------------------------------------------- server process


def serve(directory: str, fsync: str) -> None:
    """Run our unit-facing server; print the port; on stdin EOF print latencies and exit."""
    from acquisition.dose_log import DoseLog
    from dicom_nodes.unit_facing.mpps_store import SqliteMppsStore
    from dicom_nodes.unit_facing.server import UnitFacingServer
    from dose.record import ExposureRecord

    entered = threading.local()
    latencies_ms: list[float] = []

    class TimedSink:
        def __init__(self, inner: DoseLog) -> None:
            self.inner = inner

        def record(self, exposures: Sequence[ExposureRecord]) -> None:
            self.inner.record(exposures)
            start = getattr(entered, "t", None)
            if start is not None:
                latencies_ms.append((time.perf_counter() - start) * 1000)
                entered.t = None

    root = Path(directory)
    policy = controller_policy()
    with (
        SqliteMppsStore(root / "galacto.sqlite") as store,
        DoseLog(root / "galacto.sqlite", policy=policy) as log,
    ):
        server = UnitFacingServer(
            None,
            store,
            TimedSink(log),
            port=0,
            storage_dir=root / "objects",
            fsync_objects=fsync == "1",
        )
        handle = server.storage_scp.handle_store

        def timed_handle(event: Any) -> int:
            entered.t = time.perf_counter()
            return handle(event)

        server.storage_scp.handle_store = timed_handle  # type: ignore[method-assign]
        _host, port = server.start()
        print(json.dumps({"port": port, "rss_kb": _status_kb(os.getpid(), "VmRSS")}), flush=True)
        sys.stdin.read()
        server.stop()
    print(json.dumps({"latencies_ms": latencies_ms}), flush=True)


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class ServerProcess:
    def __init__(self, directory: Path, *, fsync: bool) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_store",
                "serve",
                str(directory),
                "1" if fsync else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.port: int = ready["port"]
        self.idle_rss_kb: int = ready["rss_kb"]

    def peak_kb(self) -> int:
        return _status_kb(self.proc.pid, "VmHWM")

    def finish(self) -> dict[str, Any]:
        out, _ = self.proc.communicate("", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def _storescu(port: int, files: list[Path], called: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            "storescu",
            "-aet",
            "MAMMO",
            "-aec",
            called,
            "-to",
            "30",
            "-ta",
            "30",
            "-td",
            "60",
            "127.0.0.1",
            str(port),
            *map(str, files),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
        check=True,
        capture_output=True,
        timeout=600,
    )
    return time.perf_counter() - started


def _write_images(directory: Path, count: int, *, full: bool) -> list[Path]:
    from tests.dose_factories import Exposure, mg_image

    study = "1.2.826.0.1.3680043.8.498.99"
    rows, columns = (FULL_ROWS, FULL_COLUMNS) if full else (8, 8)
    paths = []
    for index in range(count):
        path = directory / f"img{index:04d}.dcm"
        mg_image(Exposure(), study_uid=study, rows=rows, columns=columns).save_as(
            path, enforce_file_format=True
        )
        paths.append(path)
    return paths


def _ours(work: Path, files: list[Path], *, fsync: bool) -> tuple[float, int, int, list[float]]:
    target = work / ("ours-fsync" if fsync else "ours")
    target.mkdir()
    server = ServerProcess(target, fsync=fsync)
    try:
        elapsed = _storescu(server.port, files, "GALACTO")
        peak = server.peak_kb()
    finally:
        result = server.finish()
    shutil.rmtree(target)
    return elapsed, peak, server.idle_rss_kb, result["latencies_ms"]


def _storescp(work: Path, files: list[Path], *, nodelay: bool) -> float:
    target = work / ("storescp-nodelay" if nodelay else "storescp")
    target.mkdir()
    port = _free_port()
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    proc = subprocess.Popen(
        [
            "storescp",
            "-aet",
            "STORESCP",
            "-pdu",
            str(STORESCP_MAX_PDU),
            "-od",
            str(target),
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        return _storescu(port, files, "STORESCP")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(target)


def commit_floor_ms(directory: Path, count: int = 300) -> list[float]:
    """One INSERT + COMMIT on a WAL, synchronous=FULL database: the durable-row floor."""
    conn = sqlite3.connect(directory / "floor.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v REAL) STRICT")
    timings = []
    for index in range(count):
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (index * 0.1,))
        conn.execute("COMMIT")
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()
    return timings


def controller_policy() -> Any:
    """The dose checks a controller with the default configuration applies to every record
    (the published reference levels; no physicist's tables)."""
    from acquisition.dose_policy import dose_policy
    from acquisition.settings import load

    return dose_policy(load(None, environ={}))


def sink_latencies_ms(directory: Path, *, writers: int) -> list[float]:
    """DoseLog.record() of one image-header record, from ``writers`` threads at once."""
    from acquisition.dose_log import DoseLog
    from dicom_nodes.datasets.dose_extract import from_image_header
    from tests.dose_factories import Exposure, mg_image

    study = "1.2.826.0.1.3680043.8.498.97"
    per_writer = 150 // writers
    records = [
        [from_image_header(mg_image(Exposure(), study_uid=study)) for _ in range(per_writer)]
        for _ in range(writers)
    ]
    timings: list[float] = []
    path = directory / f"sink-{writers}.sqlite"
    with DoseLog(path, policy=controller_policy()) as dose_log:

        def run(batch: list[Any]) -> None:
            for record in batch:
                started = time.perf_counter()
                dose_log.record([record])
                timings.append((time.perf_counter() - started) * 1000)

        threads = [threading.Thread(target=run, args=(batch,)) for batch in records]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return timings


def four_writer_latencies_ms(directory: Path) -> list[float]:
    """DoseLog.record() of one record per call while three other stores write to the same
    file as fast as they can (the journal, the unit's MPPS messages, the received-objects
    index): the controller's four writers at once. Each store opened as the controller does."""
    from pydicom.dataset import Dataset

    from acquisition.dose_log import DoseLog
    from acquisition.journal import Journal
    from dicom_nodes.datasets.dose_extract import from_image_header
    from dicom_nodes.unit_facing.mpps_store import ReceivedMessage, SqliteMppsStore
    from dicom_nodes.unit_facing.received_objects import ReceivedObjects
    from tests.dose_factories import Exposure, mg_image

    study = "1.2.826.0.1.3680043.8.498.98"
    records = [from_image_header(mg_image(Exposure(), study_uid=study)) for _ in range(150)]
    path = directory / "four-writers.sqlite"
    timings: list[float] = []
    done = threading.Event()
    journal = Journal(path)
    mpps = SqliteMppsStore(path)
    received = ReceivedObjects(path)
    message = Dataset()
    message.PerformedProcedureStepStatus = "IN PROGRESS"
    others = [
        lambda n: journal.append("bench", {"n": n}),
        lambda n: mpps.log_message(ReceivedMessage(f"1.2.3.{n}", "N-SET", "UNIT", 0, message)),
        lambda n: received.register(f"1.2.4.{n}", "1.2.840.10008.5.1.4.1.1.1.2", path),
    ]
    with DoseLog(path, policy=controller_policy()) as dose_log:

        def other(write: Any) -> None:
            n = 0
            while not done.is_set():
                n += 1
                write(n)

        def dose() -> None:
            for record in records:
                started = time.perf_counter()
                dose_log.record([record])
                timings.append((time.perf_counter() - started) * 1000)
            done.set()

        threads = [threading.Thread(target=other, args=(w,)) for w in others]
        threads.append(threading.Thread(target=dose))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for store in (journal, mpps, received):
        close = getattr(store, "close", None)
        if close is not None:
            close()
    return timings


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def mpps_round_trips(port: int, pairs: int) -> tuple[list[float], list[float]]:
    """N-CREATE + N-SET wall time (ms): one association for all pairs; one per pair."""
    from pydicom.uid import generate_uid

    from dicom_nodes.network import NODELAY_HANDLERS
    from tests.dose_factories import MPPS_SOP_CLASS, Exposure, mpps_create, mpps_set, scu_ae

    study = "1.2.826.0.1.3680043.8.498.98"
    ae: Any = scu_ae(MPPS_SOP_CLASS)
    same, separate = [], []
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS)
        for _ in range(pairs):
            uid, exposures = generate_uid(), [Exposure(), Exposure()]
            create, modify = mpps_create(study_uid=study), mpps_set(exposures)
            started = time.perf_counter()
            assoc.send_n_create(create, MPPS_SOP_CLASS, uid)
            assoc.send_n_set(modify, MPPS_SOP_CLASS, uid)
            same.append((time.perf_counter() - started) * 1000)
        assoc.release()
        for _ in range(pairs):
            uid, exposures = generate_uid(), [Exposure(), Exposure()]
            create, modify = mpps_create(study_uid=study), mpps_set(exposures)
            started = time.perf_counter()
            assoc = ae.associate(
                "127.0.0.1", port, ae_title="GALACTO", evt_handlers=NODELAY_HANDLERS
            )
            assoc.send_n_create(create, MPPS_SOP_CLASS, uid)
            assoc.send_n_set(modify, MPPS_SOP_CLASS, uid)
            assoc.release()
            separate.append((time.perf_counter() - started) * 1000)
    finally:
        ae.shutdown()
    return same, separate


# --------------------------------------------------------------------------- main


def main() -> None:
    if shutil.which("storescu") is None or shutil.which("storescp") is None:
        print("DCMTK storescu/storescp not installed: store benchmark skipped")
        return
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        work = Path(tmp)
        big = work / "big"
        big.mkdir()
        files = _write_images(big, IMAGES, full=True)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        image_kb = files[0].stat().st_size / 1024

        _storescp(work, files, nodelay=True)  # warm-up: page cache, binaries
        tuned = min(_storescp(work, files, nodelay=True) for _ in range(REPEATS))
        shipped = min(_storescp(work, files, nodelay=False) for _ in range(REPEATS))
        runs = [_ours(work, files, fsync=True) for _ in range(REPEATS)]
        ours_fsync = min(run[0] for run in runs)
        peak_kb, idle_kb = max(run[1] for run in runs), min(run[2] for run in runs)
        runs = [_ours(work, files, fsync=False) for _ in range(REPEATS)]
        ours_plain = min(run[0] for run in runs)
        peak_plain_kb, idle_plain_kb = max(run[1] for run in runs), min(run[2] for run in runs)

        print(
            f"C-STORE receive, {IMAGES} MG images of {image_kb / 1024:.1f} MB, sent by storescu "
            f"(TCP_NODELAY=1):"
        )
        for name, seconds in (
            ("storescp TCP_NODELAY=1 (reference)", tuned),
            ("storescp as shipped", shipped),
            ("galacto SCP, fsync objects (default)", ours_fsync),
            ("galacto SCP, no fsync (like storescp)", ours_plain),
        ):
            print(
                f"  {name:40s} {size_mb / seconds:8.0f} MB/s   {seconds / tuned:5.2f}x time "
                f"  {tuned / seconds:5.2f}x throughput"
            )
        print("Peak memory of our SCP process (VmHWM) while receiving:")
        for name, peak, idle in (
            ("fsync", peak_kb, idle_kb),
            ("no fsync", peak_plain_kb, idle_plain_kb),
        ):
            print(
                f"  {name:9s} peak {peak / 1024:6.1f} MB, idle after start-up {idle / 1024:6.1f}"
                f" MB, growth {(peak - idle) / 1024:6.1f} MB = {(peak - idle) / image_kb:4.2f}x "
                f"one image ({peak / image_kb:4.2f}x absolute)"
            )

        small = work / "small"
        small.mkdir()
        small_files = _write_images(small, SMALL_IMAGES, full=False)
        floor = commit_floor_ms(work)
        print(
            f"Exposure-to-durable-record latency, {SMALL_IMAGES} small images "
            f"(handler entered -> row committed):"
        )
        print(
            f"  SQLite commit floor alone        median {statistics.median(floor):6.2f} ms"
            f"  p99 {_pct(floor, 0.99):6.2f} ms"
        )
        print("  DoseLog.record() alone (one record per call):")
        for writers in (1, 4):
            lat = sink_latencies_ms(work, writers=writers)
            label = f"{writers} thread(s) recording"
            print(
                f"    {label:30s} median {statistics.median(lat):6.2f} ms"
                f"  p99 {_pct(lat, 0.99):6.2f} ms"
            )
        lat = four_writer_latencies_ms(work)
        print(
            f"    {'with 3 other stores writing':30s} median {statistics.median(lat):6.2f} ms"
            f"  p99 {_pct(lat, 0.99):6.2f} ms  (four writers: dose log, journal, MPPS, objects)"
        )
        for fsync in (True, False):
            _, _, _, lat = _ours(work, small_files, fsync=fsync)
            label = "galacto, fsync objects" if fsync else "galacto, no object fsync"
            print(
                f"  {label:32s} median {statistics.median(lat):6.2f} ms"
                f"  p99 {_pct(lat, 0.99):6.2f} ms  (p99 - floor p99: "
                f"{_pct(lat, 0.99) - _pct(floor, 0.99):+.2f} ms)"
            )

        target = work / "mpps"
        target.mkdir()
        server = ServerProcess(target, fsync=True)
        try:
            same, separate = mpps_round_trips(server.port, MPPS_PAIRS)
        finally:
            server.finish()
        print(
            f"MPPS N-CREATE + N-SET round trip ({MPPS_PAIRS} pairs, 2 exposures each; goal "
            f"<= 25 ms in an association):"
        )
        print(
            f"  one association      median {statistics.median(same):6.2f} ms"
            f"  p99 {_pct(same, 0.99):6.2f} ms"
        )
        print(
            f"  association per pair median {statistics.median(separate):6.2f} ms"
            f"  p99 {_pct(separate, 0.99):6.2f} ms"
        )


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        main()
