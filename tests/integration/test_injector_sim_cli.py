"""``galacto sim injector``: the JSON line contract, serving, signals and exit codes."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.test_injector_sim import RawHost

STARTUP_S = 20.0


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "acquisition", "sim", "injector", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_S)
        assert ready, "no JSON line within the start-up deadline"
        line = proc.stdout.readline()
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=10)


def test_listen_prints_url_serves_and_exits_0_on_sigterm() -> None:
    with sim_process("--listen", "socket://127.0.0.1:0", "--seed", "3") as (proc, endpoint):
        assert set(endpoint) == {"url"}
        assert endpoint["url"].startswith("socket://127.0.0.1:")
        host = RawHost(endpoint["url"])
        try:
            assert host.ask(b"0") == b"00A?R"
            assert host.ask(b"0VER") == b"00SNE1000X1V3.928"
        finally:
            host.close()
        assert stop(proc, signal.SIGTERM) == 0
        assert proc.stdout is not None
        assert proc.stdout.read() == ""  # exactly one line on stdout


def test_pty_is_the_default_and_sigint_exits_0() -> None:
    with sim_process("--plain", "--syringe", "3ml", "--time-scale", "60") as (proc, endpoint):
        assert endpoint["url"].startswith("/dev/")
        host = RawHost(endpoint["url"])
        try:
            host.ack_power_up()
            assert host.ask(b"0VER") == b"00SNE1000V3.928"
            assert host.ask(b"0DIA") == b"00S8.585"
        finally:
            host.close()
        assert stop(proc, signal.SIGINT) == 0


def test_pty_link(tmp_path: Path) -> None:
    link = str(tmp_path / "injector")
    with sim_process("--pty-link", link) as (proc, endpoint):
        assert endpoint == {"url": link}
        host = RawHost(link)
        try:
            assert host.ask(b"0") == b"00A?R"
        finally:
            host.close()
        assert stop(proc, signal.SIGTERM) == 0
    assert not (tmp_path / "injector").exists()  # removed on exit


def test_faults_from_the_command_line() -> None:
    args = (
        *("--listen", "socket://127.0.0.1:0", "--fault", "na@after=1"),
        *("--fault", "random:2", "--random-within-s", "3600"),  # scheduled well after the test
    )
    with sim_process(*args) as (proc, endpoint):
        host = RawHost(endpoint["url"])
        try:
            host.ack_power_up()
            assert host.ask(b"0VER") == b"00SNE1000X1V3.928"  # a query passes
            assert host.ask(b"0XAR") == b"00S?NA"
        finally:
            host.close()
        assert stop(proc, signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "meltdown"], "unknown fault 'meltdown'"),
        (["--fault", "stall@when=3"], "bad fault trigger"),
        (["--listen", "tcp://x"], "expected socket://HOST:PORT"),
        (["--time-scale", "0"], "must be > 0"),
        (["--pty", "--listen", "socket://127.0.0.1:0"], "not allowed with"),
        (["--listen", "socket://127.0.0.1:0", "--pty-link", "/tmp/x"], "--pty-link needs --pty"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "acquisition", "sim", "injector", *args],
        capture_output=True,
        text=True,
        timeout=STARTUP_S,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert time.monotonic() - started < STARTUP_S
