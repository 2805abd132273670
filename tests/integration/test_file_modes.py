"""Patient data at rest is private whatever the umask (issue 12 §4).

A whole exam under umask 000 — the worst an installation can set: every folder the controller
creates for its data is 0700, and every file it writes is 0600: the database and its ``-wal`` /
``-shm``, the received objects, the completed copies, the exam's dose report, the temporary
folder, the journal witness and a dose export. Nothing is group- or world-accessible.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from acquisition.exam_machine import ExamState
from tests.exam_room import OPERATOR, exam_room
from tests.serve_process import JOURNAL_KEY

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_every_folder_0700_and_every_file_0600_under_umask_000(
    tmp_path: Path, umask_000: None
) -> None:
    data = tmp_path / "new" / "data"  # created by the controller
    witness = tmp_path / "witness-folder" / "heads.log"
    with exam_room(data, overrides={"site.journal_witness": str(witness)}) as room:
        room.to_cannulation()
        room.inject(0.3, ExamState.POST_INJECTION_1)
        room.image(ExamState.POST_INJECTION_1)
        room.exam.complete(OPERATOR)
        room.wait_for_final_mpps()
        assert room.outbox.wait_for(lambda: not room.outbox.counts().get("pending"), 30.0)
        room.exam.close_exam(OPERATOR)
        live_sidecars = [Path(f"{room.database}{s}") for s in ("-wal", "-shm")]
        assert all(p.exists() for p in live_sidecars)
        sidecar_modes = {p.name: mode(p) for p in live_sidecars}
    export = tmp_path / "export.csv"
    command = [sys.executable, "-m", "acquisition", "--set", f"site.journal_key={JOURNAL_KEY}"]
    command += ["dose", "export", "--database", str(data / "galacto.db")]
    done = subprocess.run(
        [*command, "--format", "csv", "--output", str(export)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    objects = data / "objects"
    kinds = {
        "received": [p for p in objects.glob("*/*.dcm") if p.parent.name not in ("tmp",)],
        "forwarded copies": list((objects / "forward").rglob("*.dcm")),
        "dose reports": list((objects / "created").rglob("*.dcm")),
    }
    assert all(kinds.values()), {k: len(v) for k, v in kinds.items()}
    assert sidecar_modes == {"galacto.db-wal": "0o600", "galacto.db-shm": "0o600"}
    files = [data / "galacto.db", witness, export, *(p for v in kinds.values() for p in v)]
    assert {str(p.relative_to(tmp_path)): mode(p) for p in files if mode(p) != "0o600"} == {}
    folders = [tmp_path / "new", data, objects, objects / "tmp", witness.parent]
    folders += [p for p in objects.rglob("*") if p.is_dir()]
    assert {str(p.relative_to(tmp_path)): mode(p) for p in folders if mode(p) != "0o700"} == {}
    assert witness.read_text().strip(), "the exam's close was witnessed"
