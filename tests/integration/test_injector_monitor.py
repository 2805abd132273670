"""The driver's monitor (device_drivers/monitor.py) against the simulated pump in process, the
test owning the pump's clock: the heartbeat, and the driver's own limits behind the pump's."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterator

import pytest

from device_drivers.base import InjectorState
from device_drivers.driver import NewEraInjector
from device_drivers.events import InjectorEvent
from simulators import injsim
from simulators.injector import InjectorSimulator
from tests.integration.test_injector_driver import FAST_LIMITS, FAST_TIMING
from tests.waiting import wait_until

WAIT_S = 10.0
S = InjectorState
_names = itertools.count()


@pytest.fixture
def pump() -> Iterator[tuple[InjectorSimulator, NewEraInjector]]:
    injsim.register()
    name = f"monitor-{next(_names)}"
    with InjectorSimulator(seed=0, manual_clock=True) as sim:
        url = injsim.add(name, sim)
        try:
            with contextlib.closing(
                NewEraInjector(url, limits=FAST_LIMITS, timing=FAST_TIMING)
            ) as driver:
                driver.connect()
                yield sim, driver
        finally:
            injsim.remove(name)


def test_the_heartbeat_runs_while_idle(pump: tuple[InjectorSimulator, NewEraInjector]) -> None:
    sim, _ = pump
    start = sim.snapshot().commands_received
    wait_until(lambda: sim.snapshot().commands_received >= start + 3, WAIT_S, what="heartbeats")


def test_the_driver_stops_on_pressure_when_the_pump_would_not(
    pump: tuple[InjectorSimulator, NewEraInjector],
) -> None:
    sim, driver = pump
    sim.add_fault("pressure_limits_off")  # the pump's own layer is off: the driver's acts
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    status = driver.start()
    sim.add_fault("pressure_ramp")
    for _ in range(60):  # a second of pump time per step, each seen by a poll
        if status.done:
            break
        polls = sim.snapshot().commands_received
        sim.advance(1.0)
        wait_until(
            lambda p=polls: status.done or sim.snapshot().commands_received >= p + 4,  # type: ignore[misc]
            WAIT_S,
            what="a poll",
        )
    result = status.wait(WAIT_S)
    assert not result.completed and result.event is InjectorEvent.TERMINATED_PRESSURE
    assert driver.state is S.ERROR and sim.snapshot().prompt.name == "STOPPED"


def test_the_arm_timeout_lapses_on_the_driver_clock(
    pump: tuple[InjectorSimulator, NewEraInjector],
) -> None:
    _, driver = pump
    driver.limits = dataclasses.replace(FAST_LIMITS, arm_timeout_s=0.2)
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    wait_until(lambda: driver.state is S.READY, WAIT_S, what="the arming to lapse")
