"""`galacto worklist query` as a technologist runs it: a real process against a real SCP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityWorklistInformationFind

from acquisition.commands.worklist import _width, display_name, render_table
from dicom_nodes.hospital.mwl_scu import item_from_dataset
from dicom_nodes.network import NODELAY_HANDLERS
from tests.integration.test_mwl_scu import WorklistScp, order


@pytest.fixture
def scp() -> Iterator[WorklistScp]:
    state = WorklistScp(orders=[order(1, name="Müller^Anna".encode("latin-1")), order(2)])
    ae = AE("RIS")
    ae.add_supported_context(ModalityWorklistInformationFind)
    handlers: list[Any] = [(evt.EVT_C_FIND, state.handle_find), *NODELAY_HANDLERS]
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    state.port = server.server_address[1]
    try:
        yield state
    finally:
        ae.shutdown()


def galacto(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "acquisition", "worklist", "query", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        env=env,
        check=False,
    )


def endpoint(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port), "--called-ae", "RIS", "--timeout", "5"]


def test_human_output_lists_each_item(scp: WorklistScp) -> None:
    done = galacto(*endpoint(scp.port), "--date", "20261125-20261126", "--station-ae", "GALACTO")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["Patient", "Patient"]
    assert "Müller, Anna" in lines[1] and "ACC0001" in lines[1] and "2026-11-25 09:30" in lines[1]
    assert "ACC0002" in lines[2]
    assert "2 item(s) from RIS@127.0.0.1" in done.stderr
    step = scp.queries[0].ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStartDate == "20261125-20261126"
    assert step.ScheduledStationAETitle == "GALACTO"


def test_json_is_one_object_per_line(scp: WorklistScp) -> None:
    done = galacto(*endpoint(scp.port), "--json", "--patient-id", "PID0001")
    assert done.returncode == 0, done.stderr
    items = [json.loads(line) for line in done.stdout.splitlines()]
    assert [i["accession_number"] for i in items] == ["ACC0001", "ACC0002"]
    assert items[0]["patient_name"] == "Müller^Anna"
    assert items[0]["protocol_codes"] == [
        {"value": "399162004", "scheme": "SCT", "meaning": "cranio-caudal"}
    ]
    assert scp.queries[0].PatientID == "PID0001"


def test_zero_items_is_success_said_on_stderr(scp: WorklistScp) -> None:
    scp.orders = []
    done = galacto(*endpoint(scp.port))
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no worklist items" in done.stderr


def test_no_association_exits_2_naming_the_peer() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = galacto(*endpoint(port))
    assert done.returncode == 2
    assert f"RIS@127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "bad",
    [["--date", "2026-11-25"], ["--port", "70000"], ["--called-ae", "A" * 17], ["--timeout", "0"]],
)
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    done = galacto(*endpoint(1), *bad)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr


@pytest.mark.parametrize(
    ("pn", "shown"),
    [
        ("Müller^Anna", "Müller, Anna"),
        ("Smith", "Smith"),
        ("Doe^Jane^Q^Dr", "Doe, Jane Q"),
        ("Yamada^Hanako=山田^花子=やまだ^はなこ", "Yamada, Hanako (山田, 花子)"),
        ("=山田^花子", "山田, 花子"),
        ("", ""),
    ],
)
def test_display_name(pn: str, shown: str) -> None:
    assert display_name(pn) == shown


def test_wide_characters_keep_the_columns_aligned() -> None:
    items = (
        item_from_dataset(order(1, "山田^花子".encode(), "ISO_IR 192")),
        item_from_dataset(order(2)),
    )
    lines = render_table(items).splitlines()
    assert len({_width(line[: line.index("PID")]) for line in lines[1:]}) == 1
