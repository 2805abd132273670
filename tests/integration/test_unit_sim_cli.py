"""``galacto sim unit``: the samples writer and the running unit with its control surface."""

from __future__ import annotations

import datetime as dt
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from acquisition.cli import main
from simulators.unit import SimulatedUnit
from simulators.unit_cli import auto_loop
from tests.integration.test_unit_sim import Controller, controller  # noqa: F401 (fixture)
from tests.waiting import eventually

DEADLINE_S = 20.0


def test_write_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "unit", "--write-samples", str(tmp_path / "out"), "--seed", "3"]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"]
    names = sorted(Path(p).name for p in written)
    assert names == [
        "mg-post-contrast-l-cc-mag.dcm",
        "mg-pre-contrast-l-cc.dcm",
        "mg-pre-contrast-l-ml-mag.dcm",
        "rdsr.dcm",
    ]
    post = dcmread(tmp_path / "out" / "mg-post-contrast-l-cc-mag.dcm")
    assert post.ContrastBolusIngredient == "IODINE"
    assert dcmread(tmp_path / "out" / "rdsr.dcm").Modality == "SR"


def test_controller_port_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "unit"]) == 2
    assert "--controller-port" in capsys.readouterr().err


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert proc.stdout is not None
    buffer = b""
    while not buffer.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            raise AssertionError(f"no endpoint line (rc={proc.poll()}): {buffer!r}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if ready:
            buffer += os.read(proc.stdout.fileno(), 1)
    return buffer


def _ask(conn: socket.socket, reader: Any, request: dict[str, Any]) -> dict[str, Any]:
    conn.sendall((json.dumps(request) + "\n").encode())
    reply: dict[str, Any] = json.loads(reader.readline())
    return reply


def test_running_unit_is_driven_through_its_control_surface(controller: Controller) -> None:  # noqa: F811
    command = [
        sys.executable, "-m", "acquisition", "sim", "unit",
        "--controller-port", str(controller.port),
        "--seed", "5", "--no-rdsr", "--fault", "wrong-patient",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        endpoint = json.loads(_read_line(proc, time.monotonic() + DEADLINE_S))
        assert endpoint["ae_title"] == "MG_SIM"
        assert endpoint["controller"]["port"] == controller.port
        with socket.create_connection(
            (endpoint["host"], endpoint["port"]), timeout=DEADLINE_S
        ) as conn:
            reader = conn.makefile("r", encoding="utf-8")
            try:
                status = _ask(conn, reader, {"cmd": "status"})
                assert status["armed_faults"] == ["wrong-patient"]
                polled = _ask(conn, reader, {"cmd": "poll", "date": "20260115"})
                assert polled["steps"] == [{"sps_id": "SPS-PRE", "description": "Pre-contrast"}]
                done = _ask(
                    conn,
                    reader,
                    {"cmd": "perform", "sps_id": "SPS-PRE", "views": ["L-CC", "L-ML-MAG"]},
                )
                assert done["ok"] and done["status"] == "COMPLETED"
                assert [i["sent_status"] for i in done["images"]] == [0, 0]
                first = done["images"][0]["sop_instance_uid"]
                assert controller.stored[first].PatientID == "WRONG-0001"
                assert _ask(conn, reader, {"cmd": "perform", "sps_id": "nope"})["ok"] is False
                assert _ask(conn, reader, {"cmd": "fault", "name": "bogus"})["ok"] is False
                assert _ask(conn, reader, {"cmd": "dance"})["error"] == "unknown command 'dance'"
            finally:
                reader.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=DEADLINE_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=DEADLINE_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_auto_mode_performs_each_new_step_once(controller: Controller) -> None:  # noqa: F811
    fixed = dt.datetime(2026, 1, 15, 9, 0, 0)
    unit = SimulatedUnit("127.0.0.1", controller.port, "GALACTO", seed=1, clock=lambda: fixed)
    stop = threading.Event()
    worker = threading.Thread(target=auto_loop, args=(unit, 0.05, stop))
    worker.start()
    try:
        eventually(lambda: len(controller.queries) >= 3, DEADLINE_S)
    finally:
        stop.set()
        worker.join(timeout=DEADLINE_S)
    assert not worker.is_alive()
    assert len(controller.queries) >= 3  # it kept polling
    (mpps,) = controller.mpps.values()  # but performed the one step once
    assert mpps.PerformedProcedureStepStatus == "COMPLETED"
    # the step's protocol codes plan one CC view: one image and the RDSR
    assert sorted(ds.Modality for ds in controller.stored.values()) == ["MG", "SR"]
