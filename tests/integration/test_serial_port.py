"""The serial simulators' transport (simulators/serial_port.py) with a device of its own: an
upper-casing echo, on a real pty and on a socket."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import serial

from simulators.serial_port import SerialPort
from tests.waiting import wait_until

WAIT_S = 5.0


class Echo:
    """The smallest serial device: each chunk comes back upper-cased, 0.1 s later."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.port = SerialPort(self, self.lock, self.changed)
        self.calls: list[str] = []

    def received(self, data: bytes) -> None:
        self.port.send(data.upper(), delay_s=0.1)

    def service(self) -> None:
        pass

    def poll_timeout_s(self) -> float:
        return 0.2

    def host_connected(self) -> None:
        self.calls.append("connected")

    def link_lost(self) -> None:
        self.calls.append("lost")

    def port_restored(self) -> None:
        self.calls.append("restored")


@pytest.fixture
def echo() -> Iterator[Echo]:
    device = Echo()
    yield device
    device.port.close()


def test_a_pty_carries_both_ways_and_keeps_the_transcript(echo: Echo) -> None:
    url = echo.port.serve_pty()
    with contextlib.closing(serial.serial_for_url(url, timeout=WAIT_S)) as host:
        host.write(b"abc")
        started = time.monotonic()
        assert host.read(3) == b"ABC"
        assert time.monotonic() - started >= 0.1 - 0.02  # the delay asked for
    # The port records a write once it returns: the host may read the bytes before that.
    wait_until(lambda: len(echo.port.transcript) == 2, WAIT_S, what="the TX line")
    directions = [line.direction for line in echo.port.transcript]
    assert directions == ["RX", "TX"] and echo.port.transcript[1].hex == "41 42 43"
    assert (echo.port.rx_bytes, echo.port.tx_bytes, echo.port.queued_bytes) == (3, 3, 0)


def test_a_vanished_pty_comes_back_under_its_link(echo: Echo, tmp_path: os.PathLike[str]) -> None:
    link = os.path.join(tmp_path, "echo")
    assert echo.port.serve_pty(link) == link
    echo.port.in_loop(lambda: echo.port.vanish(restore_after_s=0.1))
    assert not echo.port.attached and echo.calls == ["lost"]
    wait_until(lambda: echo.port.attached, WAIT_S, what="the port to come back")
    assert echo.calls == ["lost", "restored"]
    with contextlib.closing(serial.serial_for_url(link, timeout=WAIT_S)) as host:
        host.write(b"x")
        assert host.read(1) == b"X"


def test_a_socket_takes_one_client_at_a_time_and_hears_it_leave(echo: Echo) -> None:
    url = echo.port.serve_socket()
    host, port = url.removeprefix("socket://").split(":")
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as client:
        wait_until(lambda: echo.calls == ["connected"], WAIT_S, what="the connection")
        client.sendall(b"hi")
        assert client.recv(2) == b"HI"
    wait_until(lambda: echo.calls == ["connected", "lost"], WAIT_S, what="the disconnection")
