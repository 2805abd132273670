"""The real driver against the real simulator, over a pty and over socket:// (same tests).

Also the home of the fixtures the fault, soak and CLI tests share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device_drivers.base import InjectorState
from device_drivers.codec import Decoder, Prompt, Role
from device_drivers.driver import NewEraInjector
from device_drivers.errors import (
    CapabilityError,
    LimitError,
    NotStartedError,
    StateError,
)
from device_drivers.events import InjectorEvent
from device_drivers.limits import InjectorLimits
from device_drivers.link import LinkTiming
from simulators.injector import InjectorSimulator, SimState
from tests.waiting import eventually, wait_until

pytestmark = pytest.mark.timeout(60)

#: Simulated seconds per real second: 0.5 mL at 0.3 mL/min (100 s) takes ~0.8 s.
TIME_SCALE = 120.0
FAST_LIMITS = InjectorLimits(baseline_window_s=0.1, poll_interval_s=0.05)
FAST_TIMING = LinkTiming(reply_timeout_s=0.5, drain_quiet_s=0.1)
TRANSPORTS = ("pty", "socket")

S = InjectorState
E = InjectorEvent


def serve(sim: InjectorSimulator, transport: str) -> str:
    return sim.serve_pty() if transport == "pty" else sim.serve_socket()


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sim() -> Iterator[InjectorSimulator]:
    with InjectorSimulator(seed=0, time_scale=TIME_SCALE) as simulator:
        yield simulator


@pytest.fixture
def make_driver() -> Iterator[Callable[..., NewEraInjector]]:
    drivers: list[NewEraInjector] = []

    def make(url: str, **kwargs: object) -> NewEraInjector:
        kwargs.setdefault("limits", FAST_LIMITS)
        kwargs.setdefault("timing", FAST_TIMING)
        driver = NewEraInjector(url, **kwargs)  # type: ignore[arg-type]
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def driver(
    sim: InjectorSimulator, transport: str, make_driver: Callable[..., NewEraInjector]
) -> NewEraInjector:
    injector = make_driver(serve(sim, transport))
    injector.connect()
    return injector


#: Poll a condition with a deadline (the driver has no condition variable to offer).
wait_for = eventually


def motor_stopped(state: SimState) -> bool:
    return state.prompt is Prompt.STOPPED and not state.held


def codes(driver: NewEraInjector) -> list[str]:
    return [e.code for e in driver.events]


# ------------------------------------------------------------------------------------------


def test_connect_acknowledges_the_reset_alarm_and_enters_safe_mode(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    state = sim.snapshot()
    assert state.safe_mode and state.safe_timeout_s == FAST_LIMITS.safe_timeout_s
    assert state.alarm is None
    assert b"00A?R" in sim.wire_bytes("TX")  # the first command was answered with the alarm
    assert driver.info is not None and driver.info.version.startswith("NE1000")
    assert not driver.info.missing
    assert driver.state is S.NOT_READY


def test_complete_injection(sim: InjectorSimulator, driver: NewEraInjector) -> None:
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    assert sim.snapshot().armed
    result = driver.start().wait(timeout_s=20)
    assert result.completed, result
    assert result.delivered_ml == pytest.approx(0.5, abs=0.006)
    assert sim.snapshot().infused_ml == pytest.approx(0.5, abs=0.006)
    assert sim.run_count == 1
    assert driver.state is S.COMPLETED
    assert codes(driver)[-1] == E.COMPLETE.code
    assert driver.progress().pressure_kpa is not None
    assert driver.session_delivered_ml == pytest.approx(0.5, abs=0.006)


def test_second_injection_needs_rearming_and_counts_against_the_session(
    sim: InjectorSimulator, transport: str, make_driver: Callable[..., NewEraInjector]
) -> None:
    limits = InjectorLimits(
        baseline_window_s=0.1, poll_interval_s=0.05, max_volume_per_session_ml=0.5
    )
    driver = make_driver(serve(sim, transport), limits=limits)
    driver.connect()
    driver.configure("1ml", 0.6, 0.3)
    driver.arm()
    assert driver.start().wait(20).completed
    with pytest.raises(StateError):
        driver.start()  # re-arm needed
    with pytest.raises(LimitError, match="per exam"):
        driver.configure("1ml", 0.6, 0.3)  # 0.3 + 0.3 > 0.5
    driver.configure("1ml", 0.6, 0.2)
    driver.arm()
    assert driver.start().wait(20).completed
    assert sim.run_count == 2


def test_hold_and_resume(sim: InjectorSimulator, driver: NewEraInjector) -> None:
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.05, timeout_s=10)
    driver.hold()
    assert driver.state is S.HOLD
    assert sim.wait_until(lambda s: s.held, timeout_s=2)
    held_at = sim.snapshot().infused_ml
    driver.resume()
    assert driver.state is S.INJECTING
    result = status.wait(20)
    assert result.completed
    assert held_at < 0.5
    assert E.MANUAL_HOLD.code in codes(driver) and E.MANUAL_RESUME.code in codes(driver)


def test_operator_stop_stops_first_then_reports(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.05, timeout_s=10)
    driver.stop()
    assert motor_stopped(sim.snapshot())
    result = status.wait(5)
    assert not result.completed and result.event is E.TERMINATED_OPERATOR
    assert 0.04 < result.delivered_ml < 0.5
    assert driver.state is S.ERROR
    with pytest.raises(StateError):
        driver.arm()
    driver.acknowledge()
    assert driver.state is S.READY


def test_limits_are_refused_before_anything_is_sent(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    def requests() -> list[bytes]:
        # Whole frames only: a heartbeat may be half-written when we look.
        return [f.data for f in Decoder(Role.PUMP, safe=False).feed(sim.wire_bytes("RX"))]

    sent = len(requests())
    for syringe, rate, volume in [("1ml", 1.5, 0.5), ("1ml", 0.3, 3.5), ("5ml", 0.3, 0.5)]:
        with pytest.raises(LimitError):
            driver.configure(syringe, rate, volume)
    with pytest.raises(ValueError):  # LimitError is a ValueError
        driver.configure("1ml", 0.0, 0.5)
    with pytest.raises(LimitError, match="syringe holds"):  # within the limits, not the syringe
        driver.configure("1ml", 0.3, 2.0)
    assert driver.state is S.NOT_READY
    # only heartbeats (status queries) went out meanwhile
    assert set(requests()[sent:]) <= {b"0"}


def test_device_range_refusal_is_a_limit_error(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    with pytest.raises(LimitError, match="OOR"):
        driver.configure("1ml", 0.95, 0.5)  # above the NE-1000 plunger speed on 1 mL
    assert driver.state is S.NOT_READY


def test_illegal_calls_leave_the_state_unchanged(driver: NewEraInjector) -> None:
    for call in (driver.arm, driver.start, driver.hold, driver.resume, driver.disarm):
        with pytest.raises(StateError):
            call()
        assert driver.state is S.NOT_READY
    driver.configure("1ml", 0.3, 0.5)
    with pytest.raises(StateError):
        driver.start()
    assert driver.state is S.READY


def test_plain_pump_is_reported_and_injection_refused(
    transport: str, make_driver: Callable[..., NewEraInjector]
) -> None:
    with InjectorSimulator(seed=0, time_scale=TIME_SCALE, plain=True) as plain:
        driver = make_driver(serve(plain, transport))
        info = driver.connect()
        assert info.is_plain_pump
        assert any("pressure" in m for m in info.missing)
        assert "plain New Era pump" in driver.describe()
        driver.configure("1ml", 0.3, 0.5)
        with pytest.raises(CapabilityError, match="refused"):
            driver.arm()
        assert plain.run_count == 0
        driver.close()


def test_arming_lapses_after_the_arm_timeout(
    sim: InjectorSimulator, transport: str, make_driver: Callable[..., NewEraInjector]
) -> None:
    limits = InjectorLimits(baseline_window_s=0.1, poll_interval_s=0.05, arm_timeout_s=1.0)
    driver = make_driver(serve(sim, transport), limits=limits)
    driver.connect()
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    assert wait_for(lambda: driver.state is S.READY, timeout_s=5)
    assert not sim.snapshot().armed
    with pytest.raises(StateError):
        driver.start()
    assert sim.run_count == 0


def test_heartbeat_keeps_the_watchdog_quiet(
    sim: InjectorSimulator, transport: str, make_driver: Callable[..., NewEraInjector]
) -> None:
    limits = InjectorLimits(baseline_window_s=0.1, poll_interval_s=5.0, safe_timeout_s=1)
    driver = make_driver(serve(sim, transport), limits=limits)
    driver.connect()
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    start = sim.snapshot().commands_received
    # the heartbeat period is capped at SAF/2 = 0.5 s whatever poll_interval_s says
    assert sim.wait_until(lambda s: s.commands_received >= start + 5, timeout_s=5)
    assert "T" not in sim.snapshot().alarms_raised
    assert driver.state is S.ARMED


def test_close_stops_a_running_injection(sim: InjectorSimulator, driver: NewEraInjector) -> None:
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.02, timeout_s=10)
    driver.close()
    driver.close()  # idempotent
    assert motor_stopped(sim.snapshot())
    assert status.done and status.result is not None and not status.result.completed


def test_events_reach_subscribers_with_codes(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    seen: list[str] = []
    unsubscribe = driver.subscribe(lambda e: seen.append(e.code))
    driver.configure("1ml", 0.3, 0.2)
    driver.arm()
    driver.start().wait(20)
    unsubscribe()
    assert seen == codes(driver) and seen[-1] == E.COMPLETE.code
    assert all(e.at.tzinfo is not None for e in driver.events)


def test_spy_url_passes_through(
    sim: InjectorSimulator,
    make_driver: Callable[..., NewEraInjector],
    capsys: pytest.CaptureFixture[str],
) -> None:
    # pyserial 3.5 never closes a spy ``file=``: let it write its dump to stderr instead
    driver = make_driver(f"spy://{sim.serve_pty()}")
    driver.connect()
    driver.configure("1ml", 0.3, 0.1)
    driver.close()
    assert "VER" in capsys.readouterr().err


def test_a_pump_found_moving_at_connect_is_stopped_first(
    sim: InjectorSimulator, make_driver: Callable[..., NewEraInjector]
) -> None:
    """A controller that died during an injection (SIGKILL: no STP) leaves the pump running
    until its watchdog; the next controller's connect must stop it before anything else, not
    keep the watchdog fed while the motor runs on."""
    url = sim.serve_pty()
    child = subprocess.Popen(
        [sys.executable, "-m", "acquisition", "inject", "--url", url, "--volume-ml", "1.0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: sim.snapshot().infused_ml >= 0.02, 30, "the injection never started")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert sim.snapshot().prompt is Prompt.INFUSING
    driver = make_driver(url)
    driver.connect()
    assert sim.snapshot().prompt is Prompt.STOPPED
    assert sim.snapshot().infused_ml < 1.0


def test_after_a_link_lost_mid_injection_the_volume_given_is_read_back(
    sim: InjectorSimulator, make_driver: Callable[..., NewEraInjector], tmp_path: Path
) -> None:
    """The port vanishes during an injection: STP cannot be sent, the pump runs on until its
    watchdog, and the driver reports the last polled volume. When the link is back, the
    acknowledgement reads the pump's counter and corrects the result upward."""
    url = sim.serve_pty(link=str(tmp_path / "injector"))  # a stable path across the loss
    driver = make_driver(url)
    driver.connect()
    driver.configure("1ml", 0.6, 0.9)  # 90 s of pump time: the link goes long before
    driver.arm()
    status = driver.start()
    wait_until(lambda: sim.snapshot().infused_ml >= 0.05, 30, "the injection never started")
    sim.add_fault("port_vanish")
    result = status.wait(timeout_s=30)
    assert not result.completed
    # the Safe-mode watchdog stops it
    wait_until(
        lambda: sim.snapshot().prompt is not Prompt.INFUSING, 30, "the pump was never stopped"
    )
    given = sim.snapshot().infused_ml
    # at least SAF (2 simulated) seconds after the last valid packet, which came after the
    # last poll of the counter
    assert given > result.delivered_ml + 0.015, "the pump ran on after the last poll"
    # The port comes back after port_vanish_s under the same link; not before (the old
    # /dev/pts/N may belong to another simulator on this machine by then).
    assert sim.wait_until(lambda s: s.connected, timeout_s=30), "the link never came back"
    driver.acknowledge()
    assert driver.last_result is not None
    assert driver.last_result.delivered_ml == pytest.approx(given, abs=0.002)
    assert driver.session_delivered_ml == pytest.approx(given, abs=0.002)


def test_a_new_syringe_is_full(sim: InjectorSimulator, driver: NewEraInjector) -> None:
    """The simulated technologist loads a new syringe for each exam (interactive demo)."""
    full = sim.snapshot().syringe_remaining_ml
    driver.configure("1ml", 0.8, 0.2)
    driver.arm()
    assert driver.start().wait(timeout_s=30).completed
    assert sim.snapshot().syringe_remaining_ml == pytest.approx(full - 0.2, abs=0.005)
    sim.load_new_syringe()
    assert sim.snapshot().syringe_remaining_ml == full


def test_a_failure_before_run_says_the_injection_never_began(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    """Whatever fails between arming and RUN (here a limit lowered meanwhile) is a
    NotStartedError: the exam then records no injection and gives no volume."""
    driver.configure("1ml", 0.3, 0.5)
    driver.arm()
    driver.limits = dataclasses.replace(FAST_LIMITS, max_volume_per_injection_ml=0.1)
    with pytest.raises(NotStartedError, match="RUN never sent"):
        driver.start()
    assert sim.run_count == 0
    assert sim.snapshot().infused_ml == 0.0


def test_our_simulator_is_known_for_what_it_is(
    sim: InjectorSimulator, driver: NewEraInjector
) -> None:
    assert driver.info is not None and driver.info.simulated and driver.simulated
    assert b"XID" in sim.wire_bytes("RX")  # asked once its extensions were found


def test_a_plain_pump_is_never_asked_who_it_is() -> None:
    with (
        InjectorSimulator(plain=True) as plain,
        contextlib.closing(
            NewEraInjector(plain.serve_pty(), limits=FAST_LIMITS, timing=FAST_TIMING)
        ) as driver,
    ):
        info = driver.connect()
        assert not info.simulated and not driver.simulated
        assert b"XID" not in plain.wire_bytes("RX")
