"""Every fault of domain/injector-protocol.md §8, observed on the wire with raw bytes."""

from __future__ import annotations

import binascii
import itertools
from collections.abc import Callable, Iterator

import pytest
import serial

from device_drivers.codec import ETX, STX, Decoder, Prompt, Role, encode_safe, parse_reply
from simulators.injector import FAULT_NAMES, InjectorSimulator, parse_fault
from simulators.injector_faults import DEVICE_FAULTS, LINK_FAULTS, Trigger
from tests.integration.test_injector_sim import FROZEN, RawHost, serve, start_injection

Setup = tuple[InjectorSimulator, RawHost]


@pytest.fixture(params=["pty", "socket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def safe(transport: str) -> Iterator[Setup]:
    """A simulator in Safe mode (SAF 255: the watchdog stays out of the way)."""
    with InjectorSimulator(time_scale=FROZEN, seed=7) as simulator:
        host = RawHost(serve(simulator, transport))
        try:
            host.configure_safe()
            yield simulator, host
        finally:
            host.close()


@pytest.fixture
def safe_pty() -> Iterator[Setup]:
    with InjectorSimulator(time_scale=FROZEN, seed=7) as simulator:
        host = RawHost(simulator.serve_pty())
        try:
            host.configure_safe()
            yield simulator, host
        finally:
            host.close()


def next_codes(host: RawHost, count: int) -> list[str]:
    return [parse_reply(host.ask(b"0XEV")).data.split(",")[0] for _ in range(count)]


def auto_alarm(host: RawHost) -> bytes:
    frame = host.frame()
    assert frame is not None, "no Auto-Alarm"
    return frame.data


# ----------------------------------------------------------------------------------------------
# Link faults: the reply to the next request, byte for byte.

STATUS_REPLY = encode_safe(b"00S")


def flipped_bits(a: bytes, b: bytes) -> int:
    return sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))


def check_no_reply(raw: bytes, host: RawHost) -> None:
    assert raw == b""
    assert host.ask(b"0") == b"00S"  # once only


def check_late_reply(raw: bytes, host: RawHost) -> None:
    assert raw == b""  # nothing within the host's 1 s deadline (checked with a 0.25 s quiet gap)
    assert host.exactly(len(STATUS_REPLY), timeout_s=3.0) == STATUS_REPLY


def check_partial(raw: bytes, host: RawHost) -> None:
    assert raw == STATUS_REPLY[: len(STATUS_REPLY) // 2]


def check_garbage(raw: bytes, host: RawHost) -> None:
    assert len(raw) > len(STATUS_REPLY) and raw.endswith(STATUS_REPLY)


def check_bitflip_reply(raw: bytes, host: RawHost) -> None:
    assert len(raw) == len(STATUS_REPLY) and flipped_bits(raw, STATUS_REPLY) == 1
    assert Decoder(Role.HOST, safe=True).feed(raw) == []  # the host must reject it


def check_bitflip_request(raw: bytes, host: RawHost) -> None:
    assert raw == encode_safe(b"00S?COM")


def check_wrong_length(raw: bytes, host: RawHost) -> None:
    assert (
        raw[1] == STATUS_REPLY[1] + 1 and raw[:1] + raw[2:] == STATUS_REPLY[:1] + STATUS_REPLY[2:]
    )


def check_missing_etx(raw: bytes, host: RawHost) -> None:
    assert raw == STATUS_REPLY[:-1]


def check_duplicate(raw: bytes, host: RawHost) -> None:
    assert raw == STATUS_REPLY * 2


def check_wrong_address(raw: bytes, host: RawHost) -> None:
    assert raw == encode_safe(b"01S")


def check_wrong_shape(raw: bytes, host: RawHost) -> None:
    assert raw == encode_safe(b"00SI0.000W0.000ML")


def check_auto_alarm_interleaved(raw: bytes, host: RawHost) -> None:
    assert raw == encode_safe(b"00A?S") + STATUS_REPLY
    assert host.ask(b"0") == b"00A?S"  # the alarm stays pending


def check_echo(raw: bytes, host: RawHost) -> None:
    assert raw == encode_safe(b"0") + STATUS_REPLY


def check_trickle(raw: bytes, host: RawHost) -> None:
    # The quiet gap (0.25 s) may end the capture mid-trickle: read the rest, then the transcript.
    rest = host.exactly(len(STATUS_REPLY) - len(raw), timeout_s=5.0)
    assert raw + rest == STATUS_REPLY


def check_no_reply_forever(raw: bytes, host: RawHost) -> None:
    assert raw == b""
    host.send(b"0")
    host.send(b"0DIS")
    assert host.raw() == b""


LINK_CHECKS: dict[str, Callable[[bytes, RawHost], None]] = {
    "no_reply": check_no_reply,
    "no_reply_forever": check_no_reply_forever,
    "late_reply": check_late_reply,
    "partial_frame": check_partial,
    "trickle": check_trickle,
    "garbage": check_garbage,
    "bitflip_reply": check_bitflip_reply,
    "bitflip_request": check_bitflip_request,
    "wrong_length": check_wrong_length,
    "missing_etx": check_missing_etx,
    "duplicate_reply": check_duplicate,
    "wrong_address": check_wrong_address,
    "wrong_shape": check_wrong_shape,
    "auto_alarm_interleaved": check_auto_alarm_interleaved,
    "echo": check_echo,
}


def test_every_fault_has_a_wire_test() -> None:
    covered = (
        set(LINK_CHECKS)
        | {"stx_etx_in_crc", "port_vanish"}
        | {name for name in DEVICE_FAULTS if f"test_fault_{name}" in globals()}
    )
    assert covered == set(FAULT_NAMES)
    assert set(DEVICE_FAULTS) | set(LINK_FAULTS) == set(FAULT_NAMES)


@pytest.mark.parametrize("name", sorted(LINK_CHECKS))
def test_link_fault_on_the_wire(safe: Setup, name: str) -> None:
    simulator, host = safe
    simulator.add_fault(name)
    host.send(b"0")
    if name in {"late_reply", "trickle"}:
        raw = host.raw(quiet_s=0.9 if name == "late_reply" else 0.05, timeout_s=1.0)
    else:
        raw = host.reply_bytes(simulator)
    LINK_CHECKS[name](raw, host)
    assert name in simulator.snapshot().faults_fired


def test_trickle_is_one_byte_per_write(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("trickle")
    host.send(b"0")
    assert host.exactly(len(STATUS_REPLY), timeout_s=5.0) == STATUS_REPLY
    tx = [line for line in simulator.transcript if line.direction == "TX"][-len(STATUS_REPLY) :]
    assert all(len(bytes.fromhex(line.hex)) == 1 for line in tx)
    gaps = [b.t_s - a.t_s for a, b in itertools.pairwise(tx)]
    assert min(gaps) >= 0.09  # 100–400 ms per byte (seeded), a property of the fault itself


def test_stx_etx_inside_reply_crc(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.advance(0.5)
    true_kpa = simulator.snapshot().pressure_kpa
    simulator.add_fault("stx_etx_in_crc")
    host.send(b"0XPR")
    frame = host.frame()
    assert frame is not None  # the host's length-driven decoder recovers it
    crc = binascii.crc_hqx(frame.data, 0)
    assert {crc >> 8, crc & 0xFF} & {STX, ETX}
    assert float(parse_reply(frame.data).data) == pytest.approx(true_kpa, abs=2.0)


def test_port_vanish_fault_comes_back_with_reset_alarm() -> None:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        url = simulator.serve_socket()
        host = RawHost(url)
        try:
            host.configure_safe()
            simulator.add_fault("port_vanish")
            with pytest.raises(serial.SerialException):
                host.raw()
        finally:
            host.close()
        assert simulator.wait_until(lambda s: s.alarm is not None, 5.0)
        host = RawHost(url, safe=True)
        try:
            assert host.ask(b"0", timeout_s=3.0) == b"00A?R"
        finally:
            host.close()


def test_port_vanish_fault_on_pty() -> None:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        host = RawHost(simulator.serve_pty())
        try:
            host.configure_safe()
            simulator.add_fault("port_vanish")
            with pytest.raises(serial.SerialException):
                host.raw()
        finally:
            host.close()
        assert simulator.wait_until(lambda s: s.connected, 5.0)
        host = RawHost(simulator.url, safe=True)
        try:
            assert host.ask(b"0") == b"00A?R"
        finally:
            host.close()


# ----------------------------------------------------------------------------------------------
# Device and physics faults


def test_fault_reset(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.advance(6.0)
    simulator.add_fault("reset")
    assert host.reply_bytes(simulator) == b""  # no Auto-Alarm: the pump was rebooting
    assert host.ask(b"0DIS") == b"00A?R"  # swallowed
    assert host.ask(b"0DIS") == b"00SI0.050W0.000ML"  # stopped, counters kept, Safe mode kept
    assert host.ask(b"0RUN") == b"00S?NA"  # arming lost


def test_fault_stall(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("stall")
    assert auto_alarm(host) == b"00A?S"
    assert host.ask(b"0") == b"00A?S"
    assert next_codes(host, 1) == ["130160"]


def test_fault_pressure_ramp(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    simulator.advance(2.5)
    simulator.add_fault("pressure_ramp")
    simulator.advance(10.0)
    assert auto_alarm(host) == b"00A?P"
    assert host.ask(b"0") == b"00A?P"
    assert next_codes(host, 4) == ["130150", "130151", "130156", ""]


def test_fault_occlusion(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.advance(3.0)
    before = simulator.snapshot()
    simulator.add_fault("occlusion")
    simulator.advance(0.5)
    during = simulator.snapshot()
    assert during.infused_ml == pytest.approx(before.infused_ml)  # volume flat
    assert during.pressure_kpa > before.pressure_kpa  # pressure rises
    simulator.advance(1.0)
    assert auto_alarm(host) == b"00A?C"
    assert simulator.snapshot().prompt is Prompt.STOPPED


def test_fault_air(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("air")
    assert auto_alarm(host) == b"00A?B"
    assert host.ask(b"0") == b"00A?B"
    assert next_codes(host, 2) == ["130175", "130176"]


def test_fault_syringe_detached(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("syringe_detached")
    assert auto_alarm(host) == b"00A?D"
    assert host.ask(b"0") == b"00A?D"
    assert next_codes(host, 2) == ["130164", ""]  # not injecting: no termination event


def test_fault_extravasation(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host, rate=b"0.3MM", volume=b"1.0")
    simulator.advance(120.0)
    before = simulator.snapshot().pressure_kpa
    simulator.add_fault("extravasation")
    simulator.advance(5.0)
    after = float(parse_reply(host.ask(b"0XPR")).data)
    assert after < before - 10.0


def test_fault_syringe_empty(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("syringe_empty")
    simulator.advance(61.0)
    assert auto_alarm(host) == b"00A?S"
    assert host.ask(b"0") == b"00A?S"
    assert host.ask(b"0DIS") == b"00SI0.250W0.000ML"  # half of the 0.5 mL target


def test_fault_under_delivery(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("under_delivery")
    start_injection(host)
    simulator.advance(61.0)
    assert host.ask(b"0") == b"00S"  # the run "completes"
    assert host.ask(b"0DIS") == b"00SI0.425W0.000ML"  # < 0.500 commanded


def test_fault_oor(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("oor")
    assert host.ask(b"0RAT") == b"00S300.0UM"  # a query is not a set
    assert host.ask(b"0RAT0.2MM") == b"00S?OOR"
    assert host.ask(b"0RAT") == b"00S300.0UM"  # not executed
    assert host.ask(b"0RAT0.2MM") == b"00S"  # once


def test_fault_na(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("na")
    assert host.ask(b"0") == b"00S"  # queries pass
    assert host.ask(b"0RAT") == b"00S300.0UM"
    assert host.ask(b"0XAR") == b"00S?NA"
    assert not simulator.snapshot().armed
    assert host.ask(b"0XAR") == b"00S"


def test_fault_hold_timeout(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("hold_timeout")
    assert host.ask(b"0XHD") == b"00P"
    simulator.advance(0.1)
    assert host.ask(b"0") == b"00S"
    assert next_codes(host, 2) == ["130267", "130269"]


def test_fault_arm_timeout(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("arm_timeout")
    assert host.ask(b"0XAR") == b"00S"
    simulator.advance(0.1)
    assert host.ask(b"0RUN") == b"00S?NA"


def test_fault_watchdog(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("watchdog")
    assert auto_alarm(host) == b"00A?T"
    assert host.ask(b"0") == b"00A?T"
    assert next_codes(host, 1) == ["130159"]


# ----------------------------------------------------------------------------------------------
# The pump's own safety layers switched off


def test_fault_ignore_volume(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("ignore_volume")
    start_injection(host, rate=b"0.5MM", volume=b"0.2")
    simulator.advance(60.0)  # 0.5 mL at 0.5 mL/min
    assert host.ask(b"0VOL") == b"00I0.200ML"  # the volume is read back as set…
    assert host.ask(b"0DIS") == b"00II0.500W0.000ML"  # …and the pump runs past it
    simulator.advance(60.0)
    assert auto_alarm(host) == b"00A?S"  # until the syringe is empty
    assert simulator.snapshot().actual_infused_ml == pytest.approx(1.0)


def test_fault_dis_under_report(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("dis_under_report")
    start_injection(host, rate=b"0.5MM", volume=b"0.2")
    simulator.advance(30.0)  # 0.25 mL left the syringe
    assert host.ask(b"0DIS") == b"00II0.125W0.000ML"
    simulator.advance(30.0)
    assert host.ask(b"0DIS") == b"00SI0.200W0.000ML"  # "complete" by its own counter
    assert simulator.snapshot().actual_infused_ml == pytest.approx(0.4)


def test_fault_pressure_limits_off(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    simulator.add_fault("pressure_limits_off")
    simulator.add_fault("pressure_ramp")
    simulator.advance(15.0)  # 450 kPa of ramp: past termination and the ceiling
    assert host.ask(b"0") == b"00I"
    assert float(parse_reply(host.ask(b"0XPR")).data) > 350.0
    assert next_codes(host, 1) == [""]  # no warning, no adjustment, no termination


def test_fault_self_hold(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("self_hold")
    assert host.ask(b"0") == b"00P"
    simulator.advance(121.0)  # the pump's own maximum hold
    assert host.ask(b"0") == b"00S"
    assert next_codes(host, 2) == ["130266", "130269"]


def test_fault_hold_timeout_off(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    start_injection(host)
    simulator.add_fault("hold_timeout_off")
    assert host.ask(b"0XHD") == b"00P"
    simulator.advance(600.0)
    assert host.ask(b"0") == b"00P"  # held for good
    assert next_codes(host, 2) == ["130267", ""]


def test_fault_end_stop_off(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("end_stop_off")
    start_injection(host, rate=b"0.5MM", volume=b"1.5")  # more than the 1 mL syringe holds
    simulator.advance(181.0)
    assert host.ask(b"0") == b"00S"  # no stall: the run "completes"
    assert host.ask(b"0DIS") == b"00SI1.500W0.000ML"
    state = simulator.snapshot()
    assert state.actual_infused_ml == pytest.approx(1.0)
    assert state.alarms_raised == ["R"]


def test_fault_arm_timeout_off(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("arm_timeout_off")
    assert host.ask(b"0XAR") == b"00S"
    simulator.advance(1000.0)  # far past the 120 s arm timeout
    assert host.ask(b"0RUN") == b"00I"


# ----------------------------------------------------------------------------------------------
# Triggers and the random schedule


def test_trigger_on_a_command(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("no_reply@on=RUN")
    assert host.ask(b"0") == b"00S"  # other commands: no effect
    assert host.ask(b"0XAR") == b"00S"
    host.send(b"0RUN")
    assert host.reply_bytes(simulator) == b""  # executed, the reply lost
    assert host.ask(b"0") == b"00I"
    assert simulator.snapshot().faults_fired == ["no_reply@on=RUN"]


def test_trigger_after_n_commands(safe_pty: Setup) -> None:
    simulator, host = safe_pty  # 2 commands so far (ack, SAF)
    simulator.add_fault("no_reply@after=3")
    assert host.ask(b"0") == b"00S"  # command 3
    host.send(b"0")  # command 4: the fault has fired
    assert host.reply_bytes(simulator) == b""
    assert host.ask(b"0") == b"00S"


def test_trigger_at_volume(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("stall@volume=0.2")
    start_injection(host)
    simulator.advance(60.0)
    assert auto_alarm(host) == b"00A?S"
    assert simulator.snapshot().infused_ml == pytest.approx(0.2, abs=0.001)


def test_trigger_at_time(safe_pty: Setup) -> None:
    simulator, host = safe_pty
    simulator.add_fault("air@t=50")
    simulator.advance(40.0)
    assert host.reply_bytes(simulator) == b""
    simulator.advance(15.0)
    assert auto_alarm(host) == b"00A?B"


def test_random_schedule_is_seeded_and_bounded() -> None:
    def schedule(seed: int) -> list[str]:
        with InjectorSimulator(seed=seed, time_scale=FROZEN) as simulator:
            specs = simulator.add_random_faults(count=6, within_s=20.0)
            return [f"{s.name}@{s.value:.6f}" for s in specs]

    first = schedule(3)
    assert first == schedule(3)
    assert first != schedule(4)
    specs = [parse_fault(text.replace("@", "@t=")) for text in first]
    assert len(specs) == 6
    assert all(s.trigger is Trigger.TIME and 0 <= s.value < 20.0 for s in specs)
    assert "no_reply_forever" not in {s.name for s in specs}


def test_random_faults_fire_within_window(safe_pty: Setup) -> None:
    simulator, _ = safe_pty
    specs = simulator.add_random_faults(count=4, within_s=10.0, names=["garbage", "no_reply"])
    simulator.advance(10.0)
    assert simulator.snapshot().faults_fired[-4:] == [str(s) for s in specs]


def test_random_fault_storm_leaves_a_working_pump(safe_pty: Setup) -> None:
    """Seeded: 40 random faults while injecting; the pump keeps framing and answering."""
    simulator, host = safe_pty
    slow_or_final = {"late_reply", "trickle", "no_reply_forever", "port_vanish"}
    names = [n for n in FAULT_NAMES if n not in slow_or_final]
    specs = simulator.add_random_faults(count=40, within_s=40.0, names=names)
    assert len(specs) == 40
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    for _ in range(45):
        simulator.advance(1.0)
        host.send(b"0")
        host.reply_bytes(simulator)  # whatever came back, every queued byte was written
    assert len(simulator.snapshot().faults_fired) == 40
    # Drain what a one-shot fault may still wait for (a set, an action, an XPR) and any alarm.
    for command in (b"0", b"0STP", b"0RAT0.3MM", b"0STP", b"0XPR", b"0", b"0", b"0"):
        host.send(command)
        host.reply_bytes(simulator)
    host.decoder.reset()
    assert host.ask(b"0") == b"00S"
    assert host.ask(b"0DIA") == b"00S4.699"
    assert simulator.run_count == 1
