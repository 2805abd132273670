"""`galacto demo --auto`: the scripted exam end to end, as `make demo AUTO=1` runs it.

A real subprocess: the controller with the simulated unit, injector (pty), RIS and PACS on
loopback; the records it leaves under ``--data-dir`` are read back with the other commands.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from pydicom import dcmread

from acquisition.accounts import Accounts
from dicom_nodes.hospital.dicom_outbox import DicomOutbox as Outbox

pytestmark = pytest.mark.timeout(150)

GALACTO = [sys.executable, "-m", "acquisition"]
EXPECTED = [  # (phase, view, laterality) of the scripted exam, issue 4 §4
    ("pre-contrast", "CC", "L"),
    ("pre-contrast", "ML", "L"),
    ("post-injection-1", "CC MAG", "L"),
    ("post-injection-1", "ML MAG", "L"),
    ("post-injection-2", "ML MAG", "L"),
]


def galacto(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GALACTO, *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


def free_port() -> int:
    """A port the kernel has just handed out (and taken back)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CONSOLE_PORT = free_port()


@pytest.fixture(scope="module")
def auto_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    data_dir = tmp_path_factory.mktemp("demo")
    result = galacto(
        "demo", "--auto", "--json", "--time-scale", "60", "--data-dir", str(data_dir),
        "--set", f"console.port={CONSOLE_PORT}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return data_dir, [json.loads(line) for line in result.stdout.splitlines()]


def test_the_first_line_names_every_endpoint(auto_json: tuple[Path, list[dict]]) -> None:
    data_dir, lines = auto_json
    endpoints = lines[0]
    for scp in ("mwl_scp", "mpps_scp", "storage_scp"):
        assert set(endpoints[scp]) == {"host", "port", "ae_title"}
        assert endpoints[scp]["port"] > 0
    assert endpoints["injector_url"].startswith("/dev/pts/")
    assert Path(endpoints["database"]) == (data_dir / "galacto.db").resolve()
    assert endpoints["console"] == f"http://127.0.0.1:{CONSOLE_PORT}/"  # --set honoured


def test_the_demo_has_one_console_account_per_role(auto_json: tuple[Path, list[dict]]) -> None:
    data_dir, lines = auto_json
    users = lines[0]["console_users"]
    assert sorted(u["role"] for u in users) == ["admin", "physicist", "technologist"]
    assert all(set(u) == {"username", "password", "role"} for u in users)
    with Accounts(data_dir / "galacto.db") as accounts:
        for user in users:
            account = accounts.authenticate(user["username"], user["password"])
            assert account is not None and account.role == user["role"]
    kept = data_dir / "console-users.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert json.loads(kept.read_text()) == users  # the same accounts at the next run


def test_the_final_object_reports_the_scripted_exam(auto_json: tuple[Path, list[dict]]) -> None:
    _, lines = auto_json
    assert len(lines) == 2, "the endpoints line, then one final object"
    final = lines[1]
    assert final["exam"]["status"] == "completed"
    assert final["exam"]["accession"]
    seen = [(e["phase"], e["view"], e["laterality"]) for e in final["exposures"]]
    assert seen == EXPECTED
    for exposure in final["exposures"]:
        assert 22 <= exposure["kvp"] <= 40
        assert exposure["mas"] > 0
        assert exposure["target"] and exposure["filter"]
        assert exposure["thickness_mm"] > 0
        assert 0.1 < exposure["agd_mgy"] < 10
    total = sum(e["agd_mgy"] for e in final["exposures"])
    assert final["agd_total_mgy"]["L"] == pytest.approx(total, abs=0.002)
    assert final["agd_total_mgy"]["R"] == 0
    assert final["contrast_ml"] == pytest.approx(0.8, abs=0.02)
    # five images, the unit's three dose reports and the exam's own
    assert final["objects_at_pacs"] == 9


def test_the_records_left_behind_read_back(auto_json: tuple[Path, list[dict]]) -> None:
    data_dir, lines = auto_json
    database = str(data_dir / "galacto.db")
    key = (data_dir / "journal.key").read_text().strip()  # the demo made its own
    assert len(key) == 64 and oct((data_dir / "journal.key").stat().st_mode & 0o777) == "0o600"
    witness = str(data_dir / "witness" / "journal-heads.log")
    verify = galacto(
        "--set", f"site.journal_key={key}", "journal", "verify", "--database", database,
        "--witness", witness,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "witnessed head(s) present" in verify.stdout
    accession = lines[1]["exam"]["accession"]
    listed = galacto("dose", "list", "--database", database, "--exam", accession, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    rows = rows if isinstance(rows, list) else rows["exposures"]
    assert len(rows) == len(EXPECTED)


def test_the_text_output_is_a_table_and_the_totals(tmp_path: Path) -> None:
    """Over a --data-dir whose outbox holds an earlier exam's failed message: the demo waits for
    its own exam's messages only (it used to time out, leaving its exam unclosed)."""
    Outbox(tmp_path / "galacto.db", {}).stop()  # the outbox's tables, as an earlier run left them
    with closing(sqlite3.connect(tmp_path / "galacto.db")) as conn, conn:
        conn.execute(
            "INSERT INTO outbox_messages (kind, destination, sop_class_uid, sop_instance_uid, "
            "file_path, state, next_attempt_at_s, created_at_s, last_error) VALUES ('c_store', "
            "'pacs', '1.2.840.10008.5.1.4.1.1.1.2', '1.2.3.999', '/gone/1.2.3.999.dcm', 'failed', "
            "0, 0, 'file missing')"
        )
    result = galacto("demo", "--auto", "--time-scale", "60", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    json.loads(out[0])  # the endpoints line comes first in text mode too
    header = out[1].split()
    assert header[:4] == ["phase", "view", "lat", "kV"]
    body = [line for line in out[2:] if line.startswith(("pre-", "post-"))]
    assert len(body) == len(EXPECTED)
    assert any(line.startswith("AGD per breast: L ") and "completed" in line for line in out)


def test_demo_rejects_a_bad_time_scale() -> None:
    result = galacto("demo", "--auto", "--time-scale", "0", timeout_s=60)
    assert result.returncode == 2


def test_post_contrast_images_are_forwarded_with_the_contrast_given(
    auto_json: tuple[Path, list[dict]],
) -> None:
    """The unit does not know the injections: the controller completes the Contrast/Bolus
    module of the post-contrast images it forwards, from its own records."""
    data_dir, _ = auto_json
    copies = [
        dcmread(path, stop_before_pixels=True)
        for path in sorted((data_dir / "objects" / "forward").rglob("*.dcm"))
    ]  # every object of the exam is forwarded as a coerced copy; these are the completed ones
    forwarded = [ds for ds in copies if "ContrastBolusAgent" in ds]
    volumes = sorted(float(ds.ContrastBolusVolume) for ds in forwarded)
    # post-injection 1: CC and ML after 0.5 mL; post-injection 2: ML after 0.5 + 0.3 mL
    assert volumes == pytest.approx([0.5, 0.5, 0.8], abs=0.02)
    for ds in forwarded:
        assert ds.ContrastBolusRoute == "INTRADUCTAL"
        assert ds.ContrastBolusAgentSequence[0].CodeValue == "109218004"
        rates = ds["ContrastFlowRate"].value
        rates = list(rates) if ds["ContrastFlowRate"].VM > 1 else [rates]
        injections = 1 if float(ds.ContrastBolusVolume) < 0.6 else 2  # one value per injection
        assert len(rates) == injections == ds["ContrastFlowDuration"].VM
        assert float(rates[0]) == pytest.approx(0.3 / 60, abs=1e-4)
    received = [
        dcmread(path, stop_before_pixels=True)
        for path in (data_dir / "objects").glob("*/*.dcm")
        if path.parent.name not in ("forward", "created")
    ]
    originals = {str(ds.SOPInstanceUID): ds for ds in received}
    for ds in forwarded:  # the unit's originals are kept as they came
        assert "ContrastBolusAgent" not in originals[str(ds.SOPInstanceUID)]
