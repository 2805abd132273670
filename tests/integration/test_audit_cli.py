"""The audit commands read without writing, name what they cannot open, and see a rollback.

`galacto journal verify --witness FILE` (exit 0 / 1 with the first missing head / 2),
`galacto dose list` and `galacto journal verify` on a database on a read-only mount (with and
without a ``-wal`` whose rows exist nowhere else), and `galacto quarantine list|accept`.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from acquisition.dose_log import DoseLog
from acquisition.journal import Journal, Witness
from dicom_nodes.unit_facing.received_objects import ReceivedObjects
from dose.record import ExposureRecord, Source
from storage.database import ReadOnlyDatabase

KEY = "audit-journal-key"


def galacto(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "acquisition", "--set", f"site.journal_key={KEY}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def exposure(n: int) -> ExposureRecord:
    return ExposureRecord(
        Source.IMAGE_HEADER,
        sop_instance_uid=f"1.2.3.{n}",
        irradiation_event_uid=f"1.2.4.{n}",
        accession="ACC1",
        kvp=28.0 + n,
    )


def test_journal_verify_with_a_witness_sees_a_database_restored_from_a_copy(
    tmp_path: Path,
) -> None:
    db, witness = tmp_path / "data" / "galacto.db", tmp_path / "witness" / "heads.log"
    with Journal(db, key=KEY.encode(), witness=Witness(witness)) as journal:
        journal.append("transition", {"to": "checklist"})
        journal.witness_head()
        backup = tmp_path / "backup.db"
        with closing(sqlite3.connect(db)) as source, closing(sqlite3.connect(backup)) as target:
            source.backup(target)
        journal.append("transition", {"to": "idle"})
        last = journal.witness_head()
    assert last is not None
    ok = galacto("journal", "verify", "--database", str(db), "--witness", str(witness))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 witnessed head(s) present" in ok.stdout

    for suffix in ("", "-wal", "-shm"):  # last week's copy is put back
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, db)
    plain = galacto("journal", "verify", "--database", str(db))
    assert plain.returncode == 0  # consistent and sealed: the chain alone cannot tell
    rolled_back = galacto("journal", "verify", "--database", str(db), "--witness", str(witness))
    assert rolled_back.returncode == 1, rolled_back.stdout + rolled_back.stderr
    assert last.line() in rolled_back.stdout.splitlines()

    no_witness = galacto("journal", "verify", "--database", str(db), "--witness", "/nonexistent")
    assert no_witness.returncode == 2 and "/nonexistent" in no_witness.stderr
    no_db = galacto("journal", "verify", "--database", str(tmp_path / "none.db"))
    assert no_db.returncode == 2
    assert f"{tmp_path / 'none.db'} (database.path)" in no_db.stderr
    assert "Traceback" not in no_db.stderr


def _database_with_rows_only_in_its_wal(folder: Path) -> Path:
    """A database whose newest rows are only in its ``-wal`` (as a running service leaves it),
    copied into ``folder`` as it would be found on a read-only medium."""
    live = folder.parent / "live"
    with DoseLog(live / "galacto.db") as dose_log:
        dose_log.record([exposure(1)])
    with Journal(live / "galacto.db", key=KEY.encode()) as journal:
        journal.append("transition", {"to": "checklist"})
    writer = sqlite3.connect(live / "galacto.db", isolation_level=None)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("SELECT COUNT(*) FROM exposure").fetchone()  # open: the -wal stays
        with DoseLog(live / "galacto.db") as dose_log:
            dose_log.record([exposure(2)])  # only in the -wal: the writer keeps it open
        folder.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{live / 'galacto.db'}{suffix}", f"{folder / 'galacto.db'}{suffix}")
    finally:
        writer.close()
    assert (folder / "galacto.db-wal").stat().st_size > 0
    return folder / "galacto.db"


def _read_only_mount(folder: Path) -> tuple[str, ...]:
    """A prefix running a command with ``folder`` bind-mounted read-only, in a mount namespace
    of its own (root only; nothing outside the command sees the mount)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a read-only mount needs root and unshare: see the immutable test below")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30, check=False)
    if probe.returncode != 0:
        pytest.skip("no mount namespace here: see the immutable test below")
    script = (
        f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" && exec "$@"'
    )
    return ("unshare", "-m", "sh", "-c", script, "sh")


@pytest.mark.parametrize("with_wal", [True, False], ids=["with a -wal", "without a -wal"])
def test_audit_commands_read_a_database_on_a_read_only_mount(
    tmp_path: Path, with_wal: bool
) -> None:
    medium = tmp_path / "medium"
    db = _database_with_rows_only_in_its_wal(medium)
    if not with_wal:
        with closing(sqlite3.connect(db)) as conn:  # checkpoint: everything in the main file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        Path(f"{db}-wal").unlink(missing_ok=True)
        Path(f"{db}-shm").unlink(missing_ok=True)
    prefix = _read_only_mount(medium)
    before = sorted(p.name for p in medium.iterdir())

    listed = galacto("dose", "list", "--database", str(db), "--json", prefix=prefix)
    assert listed.returncode == 0, listed.stderr
    uids = [row["sop_instance_uid"] for row in json.loads(listed.stdout)["exposures"]]
    assert uids == ["1.2.3.1", "1.2.3.2"]  # the row only the -wal held is there
    verified = galacto("journal", "verify", "--database", str(db), prefix=prefix)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert sorted(p.name for p in medium.iterdir()) == before  # nothing written there


def test_read_only_open_uses_immutable_without_a_wal_and_a_private_copy_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where mounting is not possible: the same choice, the medium declared read-only."""
    db = _database_with_rows_only_in_its_wal(tmp_path / "medium")
    monkeypatch.setattr("storage.database.medium_is_read_only", lambda folder: True)
    with ReadOnlyDatabase(db) as ro:
        assert ro.how == "copy"
        copy_dir = Path(ro.connection.execute("PRAGMA database_list").fetchone()[2]).parent
        assert oct(copy_dir.stat().st_mode & 0o777) == "0o700"
        assert ro.connection.execute("SELECT COUNT(*) FROM exposure").fetchone()[0] == 2
    assert not copy_dir.exists()
    Path(f"{db}-wal").unlink()
    with ReadOnlyDatabase(db) as ro:
        assert ro.how == "immutable"
        assert ro.connection.execute("SELECT COUNT(*) FROM exposure").fetchone()[0] == 1


def test_quarantine_list_and_accept(tmp_path: Path) -> None:
    db = tmp_path / "galacto.db"
    objects = ReceivedObjects(db)
    held_file = tmp_path / "quarantine" / "1-1.2.3.1.dcm"
    held_file.parent.mkdir()
    held_file.write_bytes(b"held")
    item = objects.hold(
        sop_instance_uid="1.2.3.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        calling_ae="MG_SIM",
        reason="other dose values",
        records=[exposure(1)],
        place=lambda _id: held_file,
    )
    with DoseLog(db) as dose_log:
        dose_log.record([exposure(1).with_values(kvp=29.0, irradiation_event_uid="1.2.4.0")])
    with Journal(db, key=KEY.encode()) as journal:
        journal.append("transition", {})

    listed = galacto("quarantine", "list", "--database", str(db), "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["items"]
    assert (row["id"], row["state"], row["reason"]) == (item.id, "held", "other dose values")

    missing_reason = galacto("quarantine", "accept", str(item.id), "--database", str(db))
    assert missing_reason.returncode == 2
    accepted = galacto(
        "quarantine",
        "accept",
        str(item.id),
        "--reason",
        "a second exposure the unit labelled with the first one's UID",
        "--operator",
        "A. Physicist",
        "--database",
        str(db),
    )
    assert accepted.returncode == 0, accepted.stderr
    again = galacto("quarantine", "accept", str(item.id), "--reason", "x", "--database", str(db))
    assert again.returncode == 2 and "already accepted" in again.stderr
    with DoseLog(db) as dose_log:
        rows = dose_log.list_exposures()
    assert [r["kvp"] for r in rows] == [29.0, 29.0]  # the first stays; the held one is its own
    assert rows[1]["sop_instance_uid"] is None
    assert f"quarantine item {item.id}" in rows[1]["review_reasons"]
    with Journal(db, key=KEY.encode()) as journal:
        entry = journal.last("quarantine-accepted")
        assert journal.verify().ok
    assert entry is not None and entry.operator == "A. Physicist"
    assert ReceivedObjects(db).held_count() == 0
