"""The injector simulator driven with raw bytes over a real pty and over socket://.

The host side here is deliberately naive (pyserial + the pure codec), never the driver: these tests
pin the simulator's wire behaviour to domain/injector-protocol.md, byte for byte.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from device_drivers.codec import (
    Decoder,
    Frame,
    Prompt,
    Role,
    encode_basic_reply,
    encode_safe,
    parse_reply,
)
from simulators.injector import InjectorSimulator, SimParams, SimState

#: Real time frozen: the simulated clock moves only with advance() (deterministic physics).
FROZEN = 1e-9
QUIET_S = 0.25


class RawHost:
    """A minimal host: writes frames, collects reply frames with deadlines. Not the driver."""

    def __init__(self, url: str, *, safe: bool = False) -> None:
        self.port = serial.serial_for_url(url, timeout=0.02)
        self.decoder = Decoder(Role.HOST, safe=safe)
        self.frames: deque[Frame] = deque()
        self.sent = bytearray()
        self.received = bytearray()

    @property
    def safe(self) -> bool:
        return self.decoder.safe

    def close(self) -> None:
        self.port.close()

    def write(self, raw: bytes) -> None:
        self.sent += raw
        self.port.write(raw)

    def send(self, data: bytes, *, safe: bool | None = None) -> bytes:
        raw = encode_safe(data) if (self.safe if safe is None else safe) else data + b"\r"
        self.write(raw)
        return raw

    def _pump(self) -> None:
        chunk = self.port.read(512)
        if chunk:
            self.received += chunk
            self.frames.extend(self.decoder.feed(chunk))

    def frame(self, timeout_s: float = 2.0) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while not self.frames and time.monotonic() < deadline:
            self._pump()
        return self.frames.popleft() if self.frames else None

    def raw(self, quiet_s: float = QUIET_S, timeout_s: float = 3.0) -> bytes:
        """Every byte that arrives until the line is quiet for ``quiet_s``."""
        start = len(self.received)
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            before = len(self.received)
            chunk = self.port.read(512)
            if chunk:
                self.received += chunk
                self.decoder.feed(chunk)
            if len(self.received) != before:
                last = time.monotonic()
            elif time.monotonic() - last >= quiet_s:
                break
        return bytes(self.received[start:])

    def exactly(self, count: int, timeout_s: float = 2.0) -> bytes:
        """Read exactly ``count`` bytes (fewer on timeout)."""
        start = len(self.received)
        deadline = time.monotonic() + timeout_s
        while len(self.received) - start < count and time.monotonic() < deadline:
            chunk = self.port.read(count - (len(self.received) - start))
            self.received += chunk
            self.decoder.feed(chunk)
        return bytes(self.received[start:])

    def reply_bytes(self, sim: InjectorSimulator, timeout_s: float = 3.0) -> bytes:
        """Exactly the bytes the simulator wrote since the last read, once it has read all that
        was sent and written every reply to it (no quiet-gap guessing)."""
        assert sim.wait_written(len(self.sent), timeout_s), "the simulator did not catch up"
        return self.exactly(sim.snapshot().tx_bytes - len(self.received), timeout_s)

    def ask(self, data: bytes, timeout_s: float = 2.0) -> bytes:
        """Send one command in the current mode; return the data of the reply frame."""
        self.send(data)
        frame = self.frame(timeout_s)
        assert frame is not None, f"no reply to {data!r}"
        return frame.data

    def ack_power_up(self) -> None:
        assert self.ask(b"0") == b"00A?R"

    def configure_safe(self, seconds: int = 255) -> None:
        """Acknowledge power-up and switch to Safe mode (reply comes Safe-framed)."""
        self.ack_power_up()
        self.decoder.safe = True
        assert self.ask(f"0SAF{seconds}".encode(), timeout_s=2.0) == b"00S"


@pytest.fixture(params=["pty", "socket"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def serve(sim: InjectorSimulator, transport: str) -> str:
    return sim.serve_pty() if transport == "pty" else sim.serve_socket("127.0.0.1", 0)


@contextmanager
def served(transport: str) -> Iterator[tuple[InjectorSimulator, RawHost]]:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        host = RawHost(serve(simulator, transport))
        try:
            yield simulator, host
        finally:
            host.close()


@pytest.fixture
def sim_any(transport: str) -> Iterator[tuple[InjectorSimulator, RawHost]]:
    """The simulator on both transports (for the wire-level tests)."""
    with served(transport) as pair:
        yield pair


@pytest.fixture
def sim() -> Iterator[tuple[InjectorSimulator, RawHost]]:
    """The simulator on a pty (behaviour tests: the transport does not matter)."""
    with served("pty") as pair:
        yield pair


def assert_next(host: RawHost, expected: bytes) -> None:
    assert host.exactly(len(expected)) == expected


# ----------------------------------------------------------------------------------------------
# Power-up, modes, worked frames


def test_power_up_alarm_swallows_first_command(sim_any: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim_any
    host.write(b"0RAT0.5MM\r")
    assert host.reply_bytes(simulator) == bytes.fromhex("02 30 30 41 3f 52 03")  # STX 00A?R ETX
    assert simulator.snapshot().rate_ml_min == pytest.approx(0.3)  # not executed
    host.write(b"0\r")
    assert host.reply_bytes(simulator) == bytes.fromhex("02 30 30 53 03")  # STX 00S ETX


def test_no_power_up_alarm_when_disabled(transport: str) -> None:
    with InjectorSimulator(power_up_alarm=False, time_scale=FROZEN) as simulator:
        host = RawHost(serve(simulator, transport))
        try:
            assert host.ask(b"0") == b"00S"
        finally:
            host.close()


def test_worked_frames_byte_for_byte(sim_any: tuple[InjectorSimulator, RawHost]) -> None:
    """domain/injector-protocol.md §2: the spec's literal frames, in and out."""
    simulator, host = sim_any
    host.ack_power_up()
    # A Safe-framed SAF0 is accepted in Basic mode; the reply comes in (still) Basic mode.
    host.write(bytes.fromhex("02 08 53 41 46 30 55 43 03"))
    assert_next(host, encode_basic_reply(b"00S"))
    # 0SAF0 with an address, then switch to Safe mode with SAF255: reply in the new mode.
    host.write(bytes.fromhex("02 09 30 53 41 46 30 59 ad 03"))
    assert_next(host, bytes.fromhex("02 30 30 53 03"))
    host.write(encode_safe(b"0SAF255"))
    assert_next(host, encode_safe(b"00S"))
    # Status query.
    host.write(bytes.fromhex("02 05 30 36 53 03"))
    assert_next(host, bytes.fromhex("02 07 30 30 53 aa a6 03"))
    # 0DIA: STX inside the request's CRC.
    host.write(bytes.fromhex("02 08 30 44 49 41 02 35 03"))
    assert_next(host, encode_safe(b"00S4.699"))
    # 0RAT300UM, then read it back.
    host.write(bytes.fromhex("02 0d 30 52 41 54 33 30 30 55 4d c0 2b 03"))
    assert_next(host, encode_safe(b"00S"))
    host.write(encode_safe(b"0RAT"))
    assert_next(host, encode_safe(b"00S300.0UM"))
    assert host.reply_bytes(simulator) == b""
    state = simulator.snapshot()
    assert state.safe_mode and state.safe_timeout_s == 255
    # The transcript holds exactly the bytes on the wire, in both directions.
    assert simulator.wire_bytes("RX") == bytes(host.sent)
    assert simulator.wire_bytes("TX") == bytes(host.received)


def test_alarm_reply_to_saf_comes_in_the_requested_mode(
    sim_any: tuple[InjectorSimulator, RawHost],
) -> None:
    simulator, host = sim_any
    host.write(encode_safe(b"0SAF5"))  # pending power-up alarm: not executed
    assert_next(host, encode_safe(b"00A?R"))
    assert not simulator.snapshot().safe_mode
    host.write(encode_safe(b"0SAF5"))
    assert_next(host, encode_safe(b"00S"))
    assert simulator.snapshot().safe_timeout_s == 5


def test_transcript_text_lines(sim_any: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim_any
    host.write(bytes.fromhex("02 05 30 36 53 03"))
    assert host.reply_bytes(simulator) == encode_basic_reply(
        b"00A?R"
    )  # Safe-framed status, reply in Basic mode
    lines = simulator.transcript_text().splitlines()
    assert [line.split(" ", 2)[1:] for line in lines] == [
        ["RX", "02 05 30 36 53 03"],
        ["TX", "02 30 30 41 3f 52 03"],
    ]
    times = [float(line.split()[0]) for line in lines]
    assert times == sorted(times)


def test_core_queries(sim_any: tuple[InjectorSimulator, RawHost]) -> None:
    _, host = sim_any
    host.configure_safe()
    assert host.ask(b"0VER") == b"00SNE1000X1V3.928"
    assert host.ask(b"0SAF") == b"00S255"
    assert host.ask(b"0VOL") == b"00S0.500ML"
    assert host.ask(b"0DIR") == b"00SINF"
    assert host.ask(b"0DIS") == b"00SI0.000W0.000ML"
    assert host.ask(b"0VOLUL") == b"00S"
    assert host.ask(b"0VOL") == b"00S500.0UL"
    assert host.ask(b"0XYZ") == b"00S?"
    assert host.ask(b"0DIA99.9") == b"00S?OOR"
    assert host.ask(b"0DIR SIDEWAYS") == b"00S?OOR"
    assert host.ask(b"0XPL") == b"00S70 100 170"
    assert host.ask(b"0XPL60,90,150") == b"00S"
    assert host.ask(b"0XPL") == b"00S60 90 150"
    assert host.ask(b"0XPL90 60 150") == b"00S?OOR"
    assert host.ask(b"0XEV") == b"00S"


def test_other_address_is_ignored(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    host.send(b"7")
    assert host.reply_bytes(simulator) == b""
    assert host.ask(b"0") == b"00S"
    assert simulator.snapshot().commands_received == 3  # ack, SAF, status


def test_basic_input_ignored_in_safe_mode(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    host.write(b"0\r")
    assert host.reply_bytes(simulator) == b""
    assert host.ask(b"0") == b"00S"


def test_bad_crc_is_answered_com(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    frame = bytearray(encode_safe(b"0RAT0.1MM"))
    frame[-2] ^= 0x10
    host.write(bytes(frame))
    assert host.reply_bytes(simulator) == encode_safe(b"00S?COM")
    assert simulator.snapshot().rate_ml_min == pytest.approx(0.3)


def test_bad_packet_then_good_packet_in_one_write(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    bad = bytearray(encode_safe(b"0RAT0.1MM"))
    bad[4] ^= 0x01  # a bit flip in the data
    host.write(bytes(bad) + encode_safe(b"0RAT"))
    assert host.reply_bytes(simulator) == encode_safe(b"00S?COM") + encode_safe(b"00S300.0UM")


def test_garbage_before_a_request_is_skipped(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    host.write(bytes([0x00, 0x03, 0x02, 0x01, 0xFF, 0x02]) + encode_safe(b"0DIA"))
    assert host.reply_bytes(simulator) == encode_safe(b"00S4.699")


@pytest.mark.parametrize("safe", [False, True], ids=["basic", "safe"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_bytes_never_break_the_pump(
    sim: tuple[InjectorSimulator, RawHost], seed: int, safe: bool
) -> None:
    simulator, host = sim
    if safe:
        host.configure_safe()
    else:
        host.ack_power_up()
    rng = random.Random(seed)
    noise = bytes(rng.randrange(256) for _ in range(600))
    # Sprinkle STX/LEN-looking bytes and CRs so that every decoder path is exercised.
    for _ in range(40):
        i = rng.randrange(len(noise) - 2)
        noise = noise[:i] + rng.choice([b"\x02\x07", b"\x02\x30", b"\r", b"\x03"]) + noise[i:]
    host.write(noise)
    assert simulator.wait_until(
        lambda s: s.rx_bytes >= len(host.sent) and s.rx_pending_bytes == 0, 3.0
    )  # partial packets are dropped after the 0.5 s gap
    host.raw(quiet_s=0.05)  # whatever the noise provoked (?, ?COM…)
    frames = []
    host.send(b"0DIA", safe=safe)
    while (frame := host.frame(timeout_s=2.0)) is not None:
        frames.append(frame.data)
        if frame.data.endswith(b"4.699"):
            break
    assert frames and frames[-1] == b"00S4.699"
    assert simulator.snapshot().run_count == 0


def test_partial_packet_discarded_after_inter_byte_gap(
    sim: tuple[InjectorSimulator, RawHost],
) -> None:
    _, host = sim
    host.configure_safe()
    frame = encode_safe(b"0RAT0.1MM")
    host.write(frame[:5])
    assert host.raw(quiet_s=0.7) == b""  # > 0.5 s gap: the pump drops the fragment
    assert host.ask(b"0RAT") == b"00S300.0UM"


# ----------------------------------------------------------------------------------------------
# Watchdog and Auto-Alarm


def test_watchdog_stops_and_auto_alarms(sim_any: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim_any
    host.configure_safe(seconds=1)
    host.ask(b"0XAR")
    assert host.ask(b"0RUN") == b"00I"
    frame = host.frame(timeout_s=3.0)  # nothing sent: the watchdog fires after 1 s
    assert frame is not None and frame.data == b"00A?T"  # Auto-Alarm, unsolicited
    state = simulator.snapshot()
    assert state.prompt is Prompt.STOPPED and not state.armed
    assert "130159" in state.events_raised
    assert host.ask(b"0") == b"00A?T"  # the Auto-Alarm did not clear it
    assert host.ask(b"0") == b"00S"


def test_a_vanished_port_stops_the_pump_after_saf_simulated_seconds() -> None:
    """Under time_scale the physics run faster than the host's real-time heartbeats; once no
    host can reach the pump, the watchdog counts simulated seconds (a cut cable must not
    deliver the programmed volume)."""
    with InjectorSimulator(time_scale=120.0) as simulator:
        host = RawHost(simulator.serve_pty())
        try:
            host.configure_safe(seconds=2)
            start_injection(host, rate=b"0.5MM", volume=b"1.0")  # 120 s, 1 s of real time
            simulator.vanish_port()
            assert simulator.wait_until(lambda s: s.prompt is Prompt.STOPPED, timeout_s=5.0)
        finally:
            host.close()
        state = simulator.snapshot()
        assert state.alarms_raised[-1] == "T"
        # Stopped 2 simulated seconds after the RUN at the latest, or at the cut when that came
        # later: within milliseconds of real time, not after the 1.0 mL that the 2 real
        # seconds of the real-time watchdog would have let through.
        assert state.actual_infused_ml < 0.5
        assert "130159" in state.events_raised


def test_no_auto_alarm_in_basic_mode(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.ack_power_up()
    simulator.add_fault("stall")
    assert host.reply_bytes(simulator) == b""
    assert host.ask(b"0") == b"00A?S"


# ----------------------------------------------------------------------------------------------
# Arming


def test_run_needs_arming(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    assert host.ask(b"0RUN") == b"00S?NA"
    assert host.ask(b"0XAR") == b"00S"
    assert simulator.snapshot().armed
    assert host.ask(b"0RUN") == b"00I"
    assert host.ask(b"0RUN") == b"00I?NA"  # no double start
    assert simulator.run_count == 1
    assert not simulator.snapshot().armed  # RUN consumes the arming
    assert host.ask(b"0STP") == b"00S"
    assert host.ask(b"0RUN") == b"00S?NA"


@pytest.mark.parametrize(
    "change",
    [b"0DIA4.699", b"0RAT0.2MM", b"0VOL0.3", b"0DIRINF", b"0XPL60 90 150", b"0XDA", b"0SAF200"],
)
def test_configuration_change_disarms(
    sim: tuple[InjectorSimulator, RawHost], change: bytes
) -> None:
    simulator, host = sim
    host.configure_safe()
    host.ask(b"0XAR")
    assert host.ask(change) == b"00S"
    assert not simulator.snapshot().armed
    assert host.ask(b"0RUN") == b"00S?NA"


def test_arm_lapses_after_timeout(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    host.ask(b"0XAR")
    simulator.advance(119.0)
    assert simulator.snapshot().armed
    simulator.advance(1.5)
    assert not simulator.snapshot().armed
    assert host.ask(b"0RUN") == b"00S?NA"


def test_arm_lapses_on_alarm(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    host.ask(b"0XAR")
    simulator.add_fault("air")
    assert host.frame() is not None  # Auto-Alarm
    assert host.ask(b"0") == b"00A?B"
    assert host.ask(b"0RUN") == b"00S?NA"


def test_arm_lapses_on_socket_disconnect() -> None:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        url = simulator.serve_socket()
        host = RawHost(url)
        host.configure_safe()
        host.ask(b"0XAR")
        host.close()
        assert simulator.wait_until(lambda s: not s.connected, 3.0)
        assert not simulator.snapshot().armed
        # A new connection after the disconnect is accepted on the same port.
        host = RawHost(url, safe=True)
        try:
            assert host.ask(b"0") == b"00S"
        finally:
            host.close()


def test_socket_serves_one_client_at_a_time() -> None:
    with InjectorSimulator(time_scale=FROZEN, power_up_alarm=False) as simulator:
        url = simulator.serve_socket()
        first = RawHost(url)
        second = RawHost(url)  # connects (backlog) but waits for the first to leave
        try:
            second.send(b"0")
            assert first.ask(b"0") == b"00S"
            assert second.frame(timeout_s=0.3) is None
            first.close()
            frame = second.frame(timeout_s=3.0)
            assert frame is not None and frame.data == b"00S"
        finally:
            first.close()
            second.close()


# ----------------------------------------------------------------------------------------------
# Physics (§9)


def start_injection(host: RawHost, rate: bytes = b"0.5MM", volume: bytes = b"0.5") -> None:
    """On a host already in Safe mode: set rate and volume, arm, run."""
    assert host.ask(b"0RAT" + rate) == b"00S"
    assert host.ask(b"0VOL" + volume) == b"00S"
    assert host.ask(b"0XAR") == b"00S"
    assert host.ask(b"0RUN") == b"00I"


def pressure_kpa(host: RawHost) -> float:
    reply = parse_reply(host.ask(b"0XPR"))
    return float(reply.data)


def test_pressure_at_half_ml_per_min(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host)
    simulator.advance(2.0)  # the line settles (first-order lag, 0.3 s)
    assert pressure_kpa(host) == pytest.approx(80.0, abs=4.0)  # Hagen–Poiseuille, 30 G cannula
    assert host.ask(b"0RAT0.25MM") == b"00I"  # RAT may change while infusing
    simulator.advance(2.0)
    assert pressure_kpa(host) == pytest.approx(40.0, abs=3.0)  # linear in rate
    assert host.ask(b"0STP") == b"00S"
    simulator.advance(0.1)
    relaxing = pressure_kpa(host)
    simulator.advance(3.0)
    assert 5.0 < relaxing < 40.0  # the line relaxes, it does not drop at once
    assert pressure_kpa(host) < 3.0


def test_volume_after_time_at_rate(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host)
    simulator.advance(30.0)  # 0.5 mL/min for 30 s
    assert host.ask(b"0DIS") == b"00II0.250W0.000ML"
    assert host.ask(b"0DIA4.0") == b"00I?NA"  # DIA only while stopped
    simulator.advance(31.0)
    assert host.ask(b"0") == b"00S"
    assert host.ask(b"0DIS") == b"00SI0.500W0.000ML"
    event = parse_reply(host.ask(b"0XEV")).data
    assert event.split(",")[0] == "255594003"
    assert int(event.split(",")[1]) == pytest.approx(60_000, abs=100)


def test_rate_above_plunger_speed_is_out_of_range(sim: tuple[InjectorSimulator, RawHost]) -> None:
    _, host = sim
    host.configure_safe()
    assert host.ask(b"0RAT0.885MM") == b"00S"
    assert host.ask(b"0RAT0.9MM") == b"00S?OOR"
    assert host.ask(b"0RAT") == b"00S0.885MM"
    assert host.ask(b"0DIA8.585") == b"00S"  # 3 mL syringe: the same plunger speed allows more
    assert host.ask(b"0RAT2.9MM") == b"00S"


def test_duct_fills_and_pressure_rises(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host, rate=b"0.3MM", volume=b"2.0")
    simulator.advance(1.0)
    early = pressure_kpa(host)
    simulator.advance(150.0)  # 0.75 mL later
    late = pressure_kpa(host)
    assert late > early + 10.0


def test_purge_withdraw_and_clear(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    assert host.ask(b"0PUR") == b"00X"  # priming needs no arming
    simulator.advance(6.0)  # 0.885 mL/min for 6 s
    assert host.ask(b"0DIS") == b"00XI0.089W0.000ML"
    assert host.ask(b"0STP") == b"00S"
    assert host.ask(b"0CLDINF") == b"00S"
    assert host.ask(b"0DIRWDR") == b"00S"
    assert host.ask(b"0VOL0.05") == b"00S"
    assert host.ask(b"0XAR") == b"00S"
    assert host.ask(b"0RUN") == b"00W"
    simulator.advance(60.0)
    assert host.ask(b"0") == b"00S"
    assert host.ask(b"0DIS") == b"00SI0.000W0.050ML"
    assert host.ask(b"0CLDXYZ") == b"00S?OOR"


def test_pressure_ramp_waits_for_a_run_and_ends_with_it(
    sim: tuple[InjectorSimulator, RawHost],
) -> None:
    simulator, host = sim
    host.configure_safe()
    simulator.add_fault("pressure_ramp")
    simulator.advance(10.0)
    assert simulator.snapshot().pressure_kpa < 1.0  # nothing flows, nothing ramps
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    simulator.advance(10.0)
    assert host.frame() is not None  # A?P Auto-Alarm
    assert host.ask(b"0") == b"00A?P"
    start_injection(host, rate=b"0.3MM", volume=b"0.05")
    simulator.advance(11.0)
    assert host.ask(b"0") == b"00S"  # the second run completes: the ramp ended with the first
    assert simulator.snapshot().alarms_raised == ["R", "P"]


def test_hold_resume_and_hold_timeout(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host)
    simulator.advance(6.0)
    assert host.ask(b"0XHD") == b"00P"
    held_ml = simulator.snapshot().infused_ml
    simulator.advance(60.0)
    assert simulator.snapshot().infused_ml == pytest.approx(held_ml)
    assert host.ask(b"0XRS") == b"00I"
    assert host.ask(b"0XHD") == b"00P"
    simulator.advance(121.0)
    assert host.ask(b"0") == b"00S"
    codes = [parse_reply(host.ask(b"0XEV")).data.split(",")[0] for _ in range(4)]
    assert codes == ["130267", "130268", "130267", "130269"]


def test_pressure_limits_events_and_termination(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    simulator.advance(3.0)
    baseline = simulator.snapshot().baseline_kpa
    # Mean over the first 2 s while the line pressure rises to ≈ 48 kPa (lag 0.3 s): ≈ 40 kPa.
    assert baseline is not None and baseline == pytest.approx(40.5, abs=3.0)
    simulator.add_fault("pressure_ramp")
    rate_before = simulator.snapshot().rate_multiplier
    simulator.advance(4.0)  # +120 kPa: above warning and adjustment, below termination
    state = simulator.snapshot()
    assert state.prompt is Prompt.INFUSING
    assert state.rate_multiplier < rate_before  # adaptive flow
    simulator.advance(4.0)
    frame = host.frame()
    assert frame is not None and frame.data == b"00A?P"  # Auto-Alarm
    assert host.ask(b"0") == b"00A?P"
    codes = [parse_reply(host.ask(b"0XEV")).data.split(",")[0] for _ in range(3)]
    assert codes == ["130150", "130151", "130156"]


def test_rat_answers_the_rate_in_force_under_adaptive_flow(
    sim: tuple[InjectorSimulator, RawHost],
) -> None:
    simulator, host = sim
    host.configure_safe()
    start_injection(host, rate=b"0.3MM", volume=b"0.9")
    simulator.advance(2.5)
    simulator.add_fault("pressure_ramp")
    simulator.advance(4.0)  # past the adjustment limit: the pump lowers its rate
    in_force = parse_reply(host.ask(b"0RAT")).data
    assert in_force.endswith("MM") and float(in_force[:-2]) < 0.3
    host.ask(b"0STP")
    assert host.ask(b"0RAT") == b"00S0.300MM"  # stopped: the rate set


def test_wait_until_times_out_false(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, _ = sim
    assert simulator.wait_until(lambda s: s.run_count > 0, 0.05) is False
    assert simulator.wait_until(lambda s: s.run_count == 0, 0.05) is True


# ----------------------------------------------------------------------------------------------
# Plain mode, snapshot, close


def test_plain_pump_lacks_extensions(transport: str) -> None:
    with InjectorSimulator(plain=True, time_scale=FROZEN) as simulator:
        host = RawHost(serve(simulator, transport))
        try:
            host.configure_safe()
            assert host.ask(b"0VER") == b"00SNE1000V3.928"
            for command in (b"0XPR", b"0XAR", b"0XEV", b"0XHD", b"0XPL70 100 170"):
                assert host.ask(command) == b"00S?"
            assert host.ask(b"0RUN") == b"00I"  # a plain pump needs no arming
        finally:
            host.close()


def test_snapshot_is_a_copy(sim: tuple[InjectorSimulator, RawHost]) -> None:
    simulator, _ = sim
    state: SimState = simulator.snapshot()
    state.events.append(("1", 1))
    state.rate_value = 999.0
    again = simulator.snapshot()
    assert again.events == [] and again.rate_value == 300.0


def test_close_is_idempotent_and_pty_vanishes() -> None:
    simulator = InjectorSimulator()
    url = simulator.serve_pty()
    host = RawHost(url)
    try:
        simulator.close()
        simulator.close()
        with pytest.raises(serial.SerialException):
            host.port.write(b"0\r")
            host.port.read(10)
            host.port.read(10)
    finally:
        host.close()


def test_vanish_and_restore_pty() -> None:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        host = RawHost(simulator.serve_pty())
        try:
            host.configure_safe()
            simulator.vanish_port()
            with pytest.raises(serial.SerialException):
                host.port.read(10)
                host.port.read(10)
        finally:
            host.close()
        url = simulator.restore_port()
        host = RawHost(url, safe=True)
        try:
            assert host.ask(b"0") == b"00A?R"  # came back with a pending reset alarm
            assert host.ask(b"0") == b"00S"
        finally:
            host.close()


def test_vanish_and_restore_socket() -> None:
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        url = simulator.serve_socket()
        host = RawHost(url)
        try:
            host.configure_safe()
            simulator.vanish_port()
            with pytest.raises(serial.SerialException):
                host.raw()
        finally:
            host.close()
        assert simulator.restore_port() == url
        host = RawHost(url, safe=True)
        try:
            assert host.ask(b"0") == b"00A?R"
        finally:
            host.close()


def test_pty_symlink_follows_restore(tmp_path: Path) -> None:
    link = str(tmp_path / "injector")
    with InjectorSimulator(time_scale=FROZEN) as simulator:
        assert simulator.serve_pty(link=link) == link
        simulator.vanish_port()
        assert simulator.restore_port() == link
        host = RawHost(link)
        try:
            assert host.ask(b"0") == b"00A?R"
        finally:
            host.close()


def test_params_choose_the_syringe() -> None:
    simulator = InjectorSimulator(SimParams(syringe="3ml"))
    try:
        assert simulator.snapshot().diameter_mm == 8.585
    finally:
        simulator.close()
