"""`galacto serve --config FILE`: the contract others rely on (issue 4 §4)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.serve_process import ServeProcess, write_config

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
    database = str(tmp_path / "galacto.db")
    verify = subprocess.run(
        [sys.executable, "-m", "acquisition", "journal", "verify", "--database", database],
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
