"""The `galacto inject` contract (issue 2 §4): JSON lines and exit codes 0 / 3 / 2.

The injector is `galacto sim injector --pty` run as a subprocess, read from its JSON line;
the Ctrl-C test uses an in-process simulator so that it can look at the motor.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from device_drivers.events import InjectorEvent
from simulators.injector import InjectorSimulator
from tests.integration.test_injector_driver import motor_stopped

pytestmark = pytest.mark.timeout(60)

GALACTO = [sys.executable, "-m", "acquisition"]
TIME_SCALE = "120"


def read_line(stream: Any, timeout_s: float) -> str:
    """One line from a child's pipe, or fail after ``timeout_s``."""
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, f"no line within {timeout_s} s"
    return str(stream.readline())


@pytest.fixture
def sim_url(request: pytest.FixtureRequest) -> Iterator[str]:
    faults: list[str] = getattr(request, "param", [])
    args = [*GALACTO, "sim", "injector", "--pty", "--time-scale", TIME_SCALE]
    for fault in faults:
        args += ["--fault", fault]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
        try:
            yield json.loads(read_line(proc.stdout, 20))["url"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def inject(*args: str, timeout_s: float = 40) -> tuple[int, list[dict[str, Any]], str]:
    done = subprocess.run(
        [*GALACTO, "inject", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return done.returncode, lines, done.stderr


def test_completed_injection_exits_0(sim_url: str) -> None:
    code, lines, stderr = inject("--url", sim_url, "--volume-ml", "0.3", "--rate-ml-min", "0.6")
    assert code == 0, stderr
    assert lines[-1]["result"] == "completed"
    assert lines[-1]["delivered_ml"] == pytest.approx(0.3, abs=0.006)
    assert set(lines[-1]) >= {"result", "delivered_ml", "reason"}
    progress = [line for line in lines if "t_s" in line]
    assert progress and set(progress[0]) == {"t_s", "state", "delivered_ml", "pressure_kpa"}
    assert {line["state"] for line in progress} <= {"injecting", "hold", "completed"}
    events = [line for line in lines if "event" in line]
    assert {"event": InjectorEvent.COMPLETE.code, "meaning": "Complete"} in events


@pytest.mark.parametrize("sim_url", [["air@volume=0.1"]], indirect=True)
def test_fault_aborts_and_exits_3(sim_url: str) -> None:
    code, lines, stderr = inject("--url", sim_url, "--volume-ml", "0.3", "--rate-ml-min", "0.6")
    assert code == 3, stderr
    assert lines[-1]["result"] == "aborted"
    assert 0.05 < lines[-1]["delivered_ml"] < 0.3
    assert "air" in lines[-1]["reason"]
    codes = {line["event"] for line in lines if "event" in line}
    assert {InjectorEvent.AIR_DETECTED.code, InjectorEvent.TERMINATED_AIR.code} <= codes


@pytest.mark.parametrize(
    "args",
    [
        ["--volume-ml", "3.5", "--rate-ml-min", "0.3"],  # above 3.0 mL per injection
        ["--volume-ml", "0.5", "--rate-ml-min", "1.5"],  # above 1.0 mL/min
        ["--volume-ml", "-1", "--rate-ml-min", "0.3"],
        ["--volume-ml", "0.5", "--rate-ml-min", "0.3", "--syringe", "5ml"],
    ],
    ids=["volume", "rate", "negative", "syringe"],
)
def test_bad_arguments_exit_2(sim_url: str, args: list[str]) -> None:
    code, lines, _ = inject("--url", sim_url, *args)
    assert code == 2
    assert not [line for line in lines if "result" in line]


def test_no_link_exits_2() -> None:
    code, _, stderr = inject("--url", "socket://127.0.0.1:1", "--volume-ml", "0.3")
    assert code == 2
    assert "no link" in stderr


def test_plain_pump_exits_2() -> None:
    with InjectorSimulator(seed=0, plain=True) as plain:
        code, _, stderr = inject("--url", plain.serve_pty(), "--volume-ml", "0.3")
        assert code == 2
        assert "plain New Era pump" in stderr
        assert plain.run_count == 0


def test_interrupt_stops_the_injector_first() -> None:
    with InjectorSimulator(seed=0, time_scale=10) as sim:
        args = [*GALACTO, "inject", "--json", "--url", sim.serve_pty(), "--volume-ml", "0.5"]
        with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as proc:
            assert sim.wait_until(lambda s: s.infused_ml > 0.01, timeout_s=20)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 130
        assert motor_stopped(sim.snapshot())
        last = json.loads(out.splitlines()[-1])
        assert last["result"] == "aborted" and "interrupt" in last["reason"]
        assert InjectorEvent.TERMINATED_OPERATOR.code in out
