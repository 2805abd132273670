"""``injsim://``: the real driver against the simulated pump in process, the test owning the
clock (simulators/injsim.py, simulators/protocol_injsim.py)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import pytest
import serial

from device_drivers.base import InjectorState
from device_drivers.driver import NewEraInjector
from simulators import injsim
from simulators.injector import InjectorSimulator
from tests.integration.test_injector_driver import FAST_LIMITS, FAST_TIMING
from tests.waiting import wait_until

WAIT_S = 10.0
S = InjectorState
_names = itertools.count()


@pytest.fixture
def manual() -> Iterator[tuple[InjectorSimulator, str]]:
    """A simulator whose clock moves only when the test advances it, under a fresh name."""
    injsim.register()
    name = f"manual-{next(_names)}"
    with InjectorSimulator(seed=0, manual_clock=True) as sim:
        url = injsim.add(name, sim)
        try:
            yield sim, url
        finally:
            injsim.remove(name)


def test_an_injection_moves_only_with_the_test_clock(manual: tuple[InjectorSimulator, str]) -> None:
    sim, url = manual
    with contextlib.closing(NewEraInjector(url, limits=FAST_LIMITS, timing=FAST_TIMING)) as driver:
        driver.connect()
        driver.configure("1ml", 0.3, 0.1)  # 20 s of pump time
        driver.arm()
        status = driver.start()
        sim.advance(10.0)
        wait_until(lambda: driver.progress().delivered_ml > 0.04, WAIT_S, what="half the volume")
        assert sim.snapshot().infused_ml == pytest.approx(0.05, abs=1e-6)  # no more: no time
        assert driver.state is S.INJECTING
        sim.advance(10.5)
        result = status.wait(WAIT_S)
        assert result.completed and result.delivered_ml == pytest.approx(0.1, abs=0.001)
    assert sim.transcript[0].direction == "RX"  # the wire is the real wire, byte for byte


def test_the_handler_makes_a_simulator_from_its_url() -> None:
    injsim.register()
    name = f"from-url-{next(_names)}"
    url = f"injsim://{name}?clock=manual&seed=3&fault=na@after=2"
    with contextlib.closing(serial.serial_for_url(url, timeout=1.0)) as port:
        port.write(b"0VER\r")
        assert port.read(3) == b"\x0200"  # the power-up alarm first
    sim = injsim.simulator(url)  # the same one: a device left powered
    injsim.remove(name)
    with sim:
        assert sim.manual_clock and sim.url == f"injsim://{name}"
    with pytest.raises(serial.SerialException, match="unknown injsim:// option"):
        serial.serial_for_url(f"injsim://other-{name}?colour=red")


def test_a_vanished_in_process_port_is_a_lost_link(manual: tuple[InjectorSimulator, str]) -> None:
    sim, url = manual
    with contextlib.closing(NewEraInjector(url, limits=FAST_LIMITS, timing=FAST_TIMING)) as driver:
        driver.connect()
        sim.vanish_port()
        wait_until(lambda: not driver.link_up, WAIT_S, what="the link loss")
        assert driver.state is S.ERROR
        sim.restore_port()
        driver.acknowledge()
        assert driver.state is S.NOT_READY and driver.link_up
