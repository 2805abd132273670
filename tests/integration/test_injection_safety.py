"""Injection safety in the driver, each layer with the pump's own layer switched off (issue 8).

The real driver against the injector simulator on a real pty. With the pump's identical layer on,
the pump always acts first and the controller's layer never runs: every test here switches the
pump's layer off (a fault mode of the simulator) so that the controller's layer acts alone, and
checks what reached the pump byte for byte (the simulator's transcript) and what it really gave
(``actual_infused_ml``, whatever its counter says).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from device_drivers.base import InjectorState
from device_drivers.codec import Decoder, Prompt, Role, parse_reply
from device_drivers.driver import NewEraInjector
from device_drivers.errors import DriverError, LimitError
from device_drivers.events import InjectorEvent
from simulators.injector import InjectorSimulator
from tests.integration.test_injector_driver import FAST_LIMITS, FAST_TIMING, motor_stopped
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

S = InjectorState
E = InjectorEvent
#: Slow enough that one poll (50 ms) is 1 simulated second: 5 µL at 0.3 mL/min.
TIME_SCALE = 20.0
WAIT_S = 30.0


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., tuple[InjectorSimulator, NewEraInjector]]]:
    """``make_rig(*faults, time_scale=…, require_arm=…, **limits)``: a simulator on a pty (behind
    a stable symlink: a vanished port comes back under the same name) with the faults in force,
    and a connected driver on it."""
    opened: list[tuple[InjectorSimulator, NewEraInjector]] = []

    def make(
        *faults: str,
        time_scale: float = TIME_SCALE,
        require_arm: bool = True,
        **limits: float,
    ) -> tuple[InjectorSimulator, NewEraInjector]:
        sim = InjectorSimulator(seed=3, time_scale=time_scale, require_arm=require_arm)
        driver = NewEraInjector(
            sim.serve_pty(link=str(tmp_path / f"injector-{len(opened)}")),
            limits=dataclasses.replace(FAST_LIMITS, **limits),
            timing=FAST_TIMING,
        )
        opened.append((sim, driver))
        driver.connect()
        for fault in faults:
            sim.add_fault(fault)
        return sim, driver

    yield make
    for sim, driver in reversed(opened):
        driver.close()
        sim.close()


def requests(sim: InjectorSimulator) -> list[bytes]:
    """The host's commands as the pump decoded them, in order."""
    return [f.data for f in Decoder(Role.PUMP, safe=True).feed(sim.wire_bytes("RX"))]


def exchanges(sim: InjectorSimulator) -> list[tuple[str, bytes]]:
    """Every frame on the wire in the order the transcript saw them: ("RX", command) from the
    host and ("TX", reply) from the pump."""
    host, pump = Decoder(Role.PUMP, safe=True), Decoder(Role.HOST, safe=True)
    frames: list[tuple[str, bytes]] = []
    for line in sim.transcript:
        decoder = host if line.direction == "RX" else pump
        frames += [(line.direction, f.data) for f in decoder.feed(bytes.fromhex(line.hex))]
    return frames


def start(driver: NewEraInjector, volume_ml: float, rate_ml_min: float = 0.3) -> None:
    driver.configure("1ml", rate_ml_min, volume_ml)
    driver.arm()


# ----------------------------------------------------------------------------------------------
# Layer 1: values the pump cannot honour are refused, never rounded


@pytest.mark.parametrize(
    ("volume_ml", "rate_ml_min", "reason"),
    [
        (0.0004, 0.3, "volume 0.0004 mL is below the minimum of 0.05 mL"),
        (0.5, 0.0001, "rate 0.0001 mL/min is below the minimum of 0.05 mL/min"),
        (0.9, 0.08, "more than the 600 s allowed"),  # 675 s
    ],
)
def test_a_value_the_pump_cannot_honour_is_refused_before_anything_is_sent(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
    volume_ml: float,
    rate_ml_min: float,
    reason: str,
) -> None:
    sim, driver = make_rig()
    sent = len(requests(sim))
    with pytest.raises(LimitError, match=reason):
        driver.configure("1ml", rate_ml_min, volume_ml)
    assert driver.state is S.NOT_READY
    assert set(requests(sim)[sent:]) <= {b"0"}  # heartbeats only: no VOL 0, no RAT 0


def test_600_s_is_allowed_and_rate_and_volume_are_read_back_exactly(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    sim, driver = make_rig()
    driver.configure("1ml", 0.05, 0.5)  # 600 s exactly: the limit is inclusive
    sets = [r for r in requests(sim) if r[1:4] in (b"RAT", b"VOL") and len(r) > 4]
    assert sets == [b"0RAT0.05MM", b"0VOLML", b"0VOL0.5"]
    state = sim.snapshot()
    assert (state.rate_ml_min, state.target_ml) == (0.05, 0.5)


def test_the_counter_is_cleared_and_the_direction_set_before_every_run(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    """A stale counter would blind the over-delivery and overtime bounds; a withdraw left from
    a purge would aspirate from the duct."""
    sim, driver = make_rig()
    for _ in range(2):
        start(driver, 0.1, 0.6)
        assert driver.start().wait(WAIT_S).completed
    frames = [(way, data) for way, data in exchanges(sim) if data not in (b"0", b"00S")]
    runs = [i for i, frame in enumerate(frames) if frame == ("RX", b"0RUN")]
    assert len(runs) == 2
    previous = 0
    for run in runs:
        commands = [data for way, data in frames[previous:run] if way == "RX"]
        arm = len(commands) - 1 - commands[::-1].index(b"0XAR")
        assert {b"0CLDINF", b"0DIRINF"} <= set(commands[:arm])  # set and read back
        assert {b"0DIS", b"0DIR"} <= set(commands[arm:])  # read back again just before RUN
        last_dis = max(i for i in range(previous, run) if frames[i] == ("RX", b"0DIS"))
        assert frames[last_dis + 1] == ("TX", b"00SI0.000W0.000ML")
        previous = run


# ----------------------------------------------------------------------------------------------
# Layer 2: the controller stops an over-delivery itself


def test_a_pump_that_ignores_its_volume_is_stopped_at_target_plus_tolerance(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    sim, driver = make_rig("ignore_volume")
    start(driver, 0.3)
    result = driver.start().wait(WAIT_S)

    assert not result.completed
    assert result.event is E.TERMINATED_INJECTOR_FAILURE
    assert result.reason == "controller stop: over-delivery"
    assert sim.wait_until(motor_stopped, 5)
    given = sim.snapshot().actual_infused_ml
    tolerance = max(0.02, 0.05 * 0.3)
    one_poll_ml = 0.3 / 60 * FAST_LIMITS.poll_interval_s * TIME_SCALE
    assert 0.3 + tolerance < given <= 0.3 + tolerance + 3 * one_poll_ml  # not the 1 mL syringe
    assert result.delivered_ml == pytest.approx(sim.snapshot().infused_ml, abs=0.001)
    (stop,) = [e for e in driver.events if e.event is E.TERMINATED_INJECTOR_FAILURE]
    assert (stop.source, stop.detail) == ("driver", "controller stop: over-delivery")
    # The STP jumps the poll queue: it follows the DIS reply that showed the crossing.
    frames = exchanges(sim)

    def infused(reply: bytes) -> float:
        m = re.fullmatch(r"I([\d.]+)W[\d.]+ML", parse_reply(reply).data)
        return float(m[1]) if m else 0.0

    crossing = next(
        i for i, (way, data) in enumerate(frames) if way == "TX" and infused(data) > 0.3 + tolerance
    )
    assert next(data for way, data in frames[crossing:] if way == "RX") == b"0STP"
    assert driver.state is S.ERROR


def test_a_counter_that_under_reports_is_stopped_by_the_overtime_bound(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    """The pump's counter shows half of what it gives and it stops by that counter: nothing
    on the wire looks wrong but the time. In real time (the controller's clock is the room's):
    0.05 mL at 0.8 mL/min needs 3.75 s; the bound is 1.5 × that plus the baseline window."""
    sim, driver = make_rig("dis_under_report", time_scale=1.0)
    start(driver, 0.05, 0.8)
    result = driver.start().wait(WAIT_S)

    assert not result.completed
    assert result.reason == "controller stop: overtime"
    assert result.event is E.TERMINATED_INJECTOR_FAILURE
    assert sim.wait_until(motor_stopped, 5)
    given = sim.snapshot().actual_infused_ml
    window_ml = 0.8 / 60 * FAST_LIMITS.baseline_window_s
    one_poll_ml = 0.8 / 60 * FAST_LIMITS.poll_interval_s
    assert given < 0.1  # the pump would have given 0.1 mL
    assert 1.5 * 0.05 <= given <= 1.5 * 0.05 + window_ml + 3 * one_poll_ml
    # What is recorded is not the counter's half: what the motor was commanded to give.
    assert result.delivered_ml == pytest.approx(given, abs=2 * one_poll_ml)
    assert sim.snapshot().infused_ml < 0.05


# ----------------------------------------------------------------------------------------------
# The driver's other layers, alone


def test_the_drivers_own_pressure_limits_stop_the_pump(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    sim, driver = make_rig("pressure_limits_off")
    start(driver, 0.9)
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.05, WAIT_S)
    sim.add_fault("pressure_ramp")
    result = status.wait(WAIT_S)

    assert result.event is E.TERMINATED_PRESSURE
    assert sim.wait_until(motor_stopped, 5)
    assert b"0STP" in requests(sim)
    assert "P" not in sim.snapshot().alarms_raised  # the pump did not act
    assert E.TERMINATED_PRESSURE.code not in sim.snapshot().events_raised
    (stop,) = [e for e in driver.events if e.event is E.TERMINATED_PRESSURE]
    assert stop.source == "driver"
    assert E.PRESSURE_WARNING in {e.event for e in driver.events if e.source == "driver"}


def test_a_pause_the_pump_makes_is_a_hold_and_the_maximum_hold_aborts_it(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    sim, driver = make_rig("hold_timeout_off", max_hold_s=0.5)
    start(driver, 0.9)
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.05, WAIT_S)
    sim.add_fault("self_hold")
    wait_until(lambda: driver.state is not S.INJECTING, WAIT_S, "the pause was never seen")
    held = sim.snapshot().actual_infused_ml
    result = status.wait(WAIT_S)

    assert result.event is E.TERMINATED_HOLD_TIMEOUT
    assert result.reason == "hold longer than 0.5 s"
    assert E.PROGRAMMED_HOLD in {e.event for e in driver.events}
    assert sim.wait_until(motor_stopped, 5)
    assert b"0STP" in requests(sim)
    assert E.TERMINATED_HOLD_TIMEOUT.code not in sim.snapshot().events_raised  # the driver's
    assert sim.snapshot().actual_infused_ml == pytest.approx(held)  # nothing given while held


def test_a_link_cut_exactly_at_run_starts_the_pump_once(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    """RUN is executed and the link is gone before its reply: the outcome is unknown. The pump
    here would RUN again without arming (its layer off): the driver never sends a second RUN,
    and the pump's watchdog stops it within SAF (simulated) seconds."""
    sim, driver = make_rig("port_vanish@on=RUN", require_arm=False)
    start(driver, 0.5)
    with pytest.raises(DriverError):
        driver.start()
    assert driver.state is S.ERROR
    assert sim.wait_until(motor_stopped, WAIT_S)
    assert sim.snapshot().alarms_raised[-1] == "T"
    assert sim.wait_until(lambda s: s.connected, WAIT_S)  # the port is back
    with pytest.raises(DriverError):
        driver.start()  # refused: the driver is in ERROR
    assert sim.run_count == 1


def test_a_lost_run_reply_is_checked_never_resent(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    sim, driver = make_rig("no_reply@on=RUN", require_arm=False)
    start(driver, 0.2, 0.6)
    assert driver.start().wait(WAIT_S).completed
    assert sim.run_count == 1
    assert requests(sim).count(b"0RUN") == 1


def test_a_stop_on_a_dead_link_is_unconfirmed_and_read_back_on_reconnection(
    make_rig: Callable[..., tuple[InjectorSimulator, NewEraInjector]],
) -> None:
    """The operator's STOP comes before the monitor has noticed the loss. STP cannot be sent:
    the stop is not a stop. The injection ends unconfirmed with the last polled volume, and
    when the link is back the pump's counter replaces it."""
    sim, driver = make_rig(time_scale=60.0, poll_interval_s=1.0)
    start(driver, 0.9, 0.6)
    status = driver.start()
    assert sim.wait_until(lambda s: s.infused_ml > 0.1, WAIT_S)
    sim.add_fault("port_vanish")  # back after 1 s
    with pytest.raises(DriverError):
        driver.stop()
    result = status.wait(WAIT_S)

    assert not result.completed and not result.confirmed
    assert result.event is E.TERMINATED_COMM_LOSS
    # (on a loaded machine the monitor may see the loss first: the same outcome, its words)
    assert "not confirmed" in result.reason or "link lost" in result.reason
    assert driver.state is S.ERROR
    assert sim.wait_until(motor_stopped, WAIT_S)  # the pump's watchdog
    given = sim.snapshot().infused_ml
    assert given > result.delivered_ml + 0.001
    # Back under the same link; not before (the old /dev/pts/N may be another simulator's).
    assert sim.wait_until(lambda s: s.connected, WAIT_S), "the port never came back"
    driver.acknowledge()
    assert driver.last_result is not None
    assert driver.last_result.delivered_ml == pytest.approx(given, abs=0.001)
    assert driver.last_result.confirmed
    assert driver.session_delivered_ml == pytest.approx(given, abs=0.001)
    assert sim.snapshot().prompt is Prompt.STOPPED
