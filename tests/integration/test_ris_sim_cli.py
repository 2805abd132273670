"""``galacto sim ris`` and ``galacto sim pacs`` as subprocesses: JSON endpoint line, SIGTERM."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityWorklistInformationFind,
    Verification,
)

from dicom_nodes.network import NODELAY_HANDLERS, Timeouts, make_ae
from tests.signals import needs_tgkill, signal_a_worker_thread

TIMEOUT_S = 20.0
FAST = Timeouts(connection_s=2.0, acse_s=5.0, dimse_s=5.0, network_s=10.0)


def launch(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "acquisition", "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT_S)
    assert ready, "the simulator printed no endpoint line in time"
    line = proc.stdout.readline()
    assert line, f"the simulator exited: {proc.stderr.read() if proc.stderr else ''}"
    endpoint: dict[str, Any] = json.loads(line)
    return endpoint


def terminate(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT_S)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_sim_ris_prints_its_endpoint_serves_orders_and_exits_on_sigterm(
    processes: list[subprocess.Popen[str]],
) -> None:
    proc = launch("ris", "--orders", "5", "--ae-title", "DEMORIS", "--port", "0")
    processes.append(proc)
    endpoint = first_line(proc)
    assert endpoint["host"] == "127.0.0.1"
    assert endpoint["ae_title"] == "DEMORIS"
    assert endpoint["port"] > 0

    ae = make_ae("GALACTO", FAST)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(
        endpoint["host"], endpoint["port"], ae_title="DEMORIS", evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    try:
        query = Dataset()
        query.PatientName = ""
        query.ScheduledProcedureStepSequence = [Dataset()]
        query.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = "GALACTO"
        statuses = [
            int(s.Status) for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)
        ]
    finally:
        assoc.release()
    assert statuses == [0xFF00] * 5 + [0x0000]
    assert terminate(proc) == 0


def test_sim_pacs_prints_its_endpoint_answers_echo_and_exits_on_sigterm(
    processes: list[subprocess.Popen[str]], tmp_path: Any
) -> None:
    proc = launch("pacs", "--storage-dir", str(tmp_path), "--commitment-delay-s", "0.5", "--refuse")
    processes.append(proc)
    endpoint = first_line(proc)
    assert endpoint["ae_title"] == "PACS"
    ae = make_ae("GALACTO", FAST)
    ae.add_requested_context(Verification)
    assoc = ae.associate(
        endpoint["host"], endpoint["port"], ae_title="PACS", evt_handlers=NODELAY_HANDLERS
    )
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert terminate(proc) == 0


@pytest.mark.parametrize("simulator", ["ris", "pacs"])
def test_a_port_in_use_exits_2(processes: list[subprocess.Popen[str]], simulator: str) -> None:
    first = launch(simulator)
    processes.append(first)
    port = first_line(first)["port"]
    second = launch(simulator, "--port", str(port))
    processes.append(second)
    assert second.wait(timeout=TIMEOUT_S) == 2
    assert terminate(first) == 0


def test_bad_commitment_target_is_a_usage_error(processes: list[subprocess.Popen[str]]) -> None:
    proc = launch("pacs", "--commitment-target", "localhost:104")
    processes.append(proc)
    assert proc.wait(timeout=TIMEOUT_S) == 2


@needs_tgkill
def test_a_sigterm_on_a_worker_thread_stops_the_simulator(
    processes: list[subprocess.Popen[str]],
) -> None:
    """As `galacto serve` (tests/integration/test_serve_cli.py): the signal handler must run
    even when the kernel gives the signal to a thread other than the main one."""
    proc = launch("ris")
    processes.append(proc)
    first_line(proc)
    signal_a_worker_thread(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT_S) == 0
