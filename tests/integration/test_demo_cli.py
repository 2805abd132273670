"""`galacto demo --auto`: the injector demo end to end, as `make demo AUTO=1` runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(120)
def test_auto_demo_injects_and_summarises() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acquisition", "demo", "--auto", "--json", "--time-scale", "60"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[0]["injector_url"].startswith("/dev/pts/")
    progress = [line for line in lines if "delivered_ml" in line and "t_s" in line]
    assert progress, "live progress lines"
    delivered = [p["delivered_ml"] for p in progress]
    assert delivered == sorted(delivered)
    assert {"result": "completed"}.items() <= lines[-2].items()
    summary = lines[-1]["summary"]
    assert summary["delivered_ml"] == pytest.approx(0.5, abs=0.01)
    assert 30 < summary["peak_pressure_kpa"] < 170
    assert summary["exit_code"] == 0


def test_demo_rejects_a_bad_time_scale() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acquisition", "demo", "--auto", "--time-scale", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
