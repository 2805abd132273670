"""`galacto serve --config FILE`: the contract others rely on (issue 4 §4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_process import JOURNAL_KEY, ServeProcess, write_config

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("serve-process")]


def test_a_bad_setting_is_named_and_the_exit_code_is_2(tmp_path: Path) -> None:
    config = tmp_path / "galacto.toml"
    config.write_text('[dicom]\nport = "eleven"\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "acquisition", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "dicom.port" in done.stderr
    assert str(config) in done.stderr or config.name in done.stderr  # where it came from


def test_serves_without_ris_pacs_or_injector_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """The smallest installation: the unit-facing SCPs, the journal and the console only
    (unscheduled exams, no forwarding, injections refused until an injector is configured)."""
    config = write_config(
        tmp_path / "galacto.toml",
        {
            "database.path": str(tmp_path / "galacto.db"),
            "dicom.storage_dir": str(tmp_path / "objects"),
            "dicom.port": 0,
            "console.port": 0,
            "site.journal_key": JOURNAL_KEY,
        },
    )
    with ServeProcess(config, tmp_path / "serve.log") as serve:
        endpoints = serve.start()
        assert endpoints["mwl_scp"]["port"] > 0
        assert endpoints["injector_url"] == ""
        state = serve.console.state()
        assert state["exam"]["state"] == "idle"
        assert state["orders_available"] is False
        assert state["injector"]["present"] is False
        assert serve.stop() == 0
    assert (tmp_path / "galacto.db").exists()
    verify = subprocess.run(
        [sys.executable, "-m", "acquisition", "--config", str(config), "journal", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_console_on_every_interface_without_an_allow_list_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "galacto.toml",
        {
            "database.path": str(tmp_path / "galacto.db"),
            "dicom.storage_dir": str(tmp_path / "objects"),
            "dicom.port": 0,
            "console.host": "0.0.0.0",
            "console.port": 0,
            "site.journal_key": JOURNAL_KEY,
        },
    )
    done = subprocess.run(
        [sys.executable, "-m", "acquisition", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "console.host" in done.stderr


def _serve(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "acquisition", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


REFUSALS = {
    "no journal key": ({"site.journal_key": ""}, "site.journal_key: not set"),
    "any calling AE on the network": (
        {"dicom.host": "0.0.0.0"},
        "dicom.allowed_calling_aes: empty while dicom.host is '0.0.0.0'",
    ),
    "a database that cannot be opened": (
        {"database.path": "{tmp}/not-a-folder/galacto.db"},
        "cannot open the database {tmp}/not-a-folder/galacto.db (database.path)",
    ),
    "a database that is not one": (
        {"database.path": "{tmp}/garbage.db"},
        "cannot open the database {tmp}/garbage.db (database.path)",
    ),
}


@pytest.mark.parametrize(("changes", "named"), REFUSALS.values(), ids=REFUSALS.keys())
def test_serve_refuses_to_start_naming_the_setting_without_a_traceback(
    tmp_path: Path, changes: dict[str, str], named: str
) -> None:
    (tmp_path / "not-a-folder").write_text("a file where a folder should be")
    (tmp_path / "garbage.db").write_bytes(b"this is not an SQLite database" * 100)
    settings = {
        "database.path": str(tmp_path / "galacto.db"),
        "dicom.storage_dir": str(tmp_path / "objects"),
        "dicom.port": 0,
        "console.port": 0,
        "console.allow_no_users": True,  # the refusal tested is another
        "site.journal_key": JOURNAL_KEY,
        **{k: v.format(tmp=tmp_path) for k, v in changes.items()},
    }
    done = _serve(write_config(tmp_path / "galacto.toml", settings))
    assert done.returncode == 2, done.stderr
    assert named.format(tmp=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr


def test_only_the_explicit_setting_lets_serve_run_without_a_journal_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "galacto.toml",
        {
            "database.path": str(tmp_path / "galacto.db"),
            "dicom.storage_dir": str(tmp_path / "objects"),
            "dicom.port": 0,
            "console.port": 0,
            "site.allow_unkeyed_journal": True,
        },
    )
    with ServeProcess(config, tmp_path / "serve.log") as serve:
        serve.start()
        assert serve.stop() == 0
