"""The pure simulated pump (simulators/injector_pump.py): its state table, every pair tried, and
its clock, without a pty: frames in, frames out, time advanced by the test."""

from __future__ import annotations

import itertools

import pytest

from device_drivers.codec import (
    Decoder,
    Prompt,
    Reply,
    ReplyError,
    Role,
    encode_basic_request,
    encode_safe,
    parse_reply,
)
from device_drivers.events import InjectorEvent
from simulators.injector_faults import InjectorSimError
from simulators.injector_pump import EventKind, InjectorPump

NA = ReplyError.NOT_APPLICABLE
#: The pump's modes, each reached from power-up by these commands (Basic mode, no alarm).
MODES: dict[str, tuple[bytes, ...]] = {
    "idle": (),
    "armed": (b"XAR",),
    "infusing": (b"XAR", b"RUN"),
    "held": (b"XAR", b"RUN", b"XHD"),
    "purging": (b"PUR",),
}
#: The prompt each mode answers with.
PROMPTS = {
    "idle": Prompt.STOPPED,
    "armed": Prompt.STOPPED,
    "infusing": Prompt.INFUSING,
    "held": Prompt.PAUSED,
    "purging": Prompt.PURGING,
}
COMMANDS = (
    b"",
    b"RUN",
    b"STP",
    b"XAR",
    b"XDA",
    b"XHD",
    b"XRS",
    b"PUR",
    b"DIA4.699",
    b"VOL0.5",
    b"DIRINF",
    b"RAT0.3MM",
    b"XPL70 100 170",
)
CONFIGURATION = (b"DIA4.699", b"VOL0.5", b"DIRINF", b"XPL70 100 170")

# (mode, command) -> (error, mode after). Unlisted pairs: accepted, mode unchanged.
TABLE: dict[tuple[str, bytes], tuple[ReplyError | None, str]] = {
    ("idle", b"RUN"): (NA, "idle"),  # not armed
    ("idle", b"XAR"): (None, "armed"),
    ("idle", b"XHD"): (NA, "idle"),
    ("idle", b"XRS"): (NA, "idle"),
    ("idle", b"PUR"): (None, "purging"),  # priming needs no arming
    ("armed", b"RUN"): (None, "infusing"),  # RUN consumes the arming
    ("armed", b"STP"): (None, "idle"),
    ("armed", b"XDA"): (None, "idle"),
    ("armed", b"XHD"): (NA, "armed"),
    ("armed", b"XRS"): (NA, "armed"),
    ("armed", b"PUR"): (None, "purging"),
    ("armed", b"RAT0.3MM"): (None, "idle"),  # any configuration change disarms
    **{("armed", c): (None, "idle") for c in CONFIGURATION},
    ("infusing", b"RUN"): (NA, "infusing"),
    ("infusing", b"STP"): (None, "idle"),
    ("infusing", b"XAR"): (NA, "infusing"),
    ("infusing", b"XHD"): (None, "held"),
    ("infusing", b"XRS"): (NA, "infusing"),
    ("infusing", b"PUR"): (NA, "infusing"),
    **{("infusing", c): (NA, "infusing") for c in CONFIGURATION},  # RAT may change
    ("held", b"RUN"): (NA, "held"),
    ("held", b"STP"): (None, "idle"),
    ("held", b"XAR"): (NA, "held"),
    ("held", b"XHD"): (NA, "held"),
    ("held", b"XRS"): (None, "infusing"),
    ("held", b"PUR"): (NA, "held"),
    **{("held", c): (NA, "held") for c in CONFIGURATION},
    ("purging", b"RUN"): (NA, "purging"),
    ("purging", b"STP"): (None, "idle"),
    ("purging", b"XAR"): (NA, "purging"),
    ("purging", b"XHD"): (NA, "purging"),
    ("purging", b"XRS"): (NA, "purging"),
    ("purging", b"PUR"): (NA, "purging"),
    **{("purging", c): (NA, "purging") for c in CONFIGURATION},
}


def ask(pump: InjectorPump, command: bytes) -> Reply:
    """One Basic-mode exchange through the pump's wire-level interface."""
    raw = pump.handle(encode_basic_request(b"0" + command))
    assert raw is not None
    (frame,) = Decoder(Role.HOST, safe=pump.safe_mode).feed(raw)
    return parse_reply(frame.data)


def mode_of(pump: InjectorPump) -> str:
    s = pump.state
    if s.held:
        return "held"
    if s.prompt is Prompt.INFUSING:
        return "infusing"
    if s.prompt is Prompt.PURGING:
        return "purging"
    return "armed" if s.armed else "idle"


def pump_in(mode: str) -> InjectorPump:
    pump = InjectorPump(power_up_alarm=False)
    for command in MODES[mode]:
        reply = ask(pump, command)
        assert reply.error is None and reply.alarm is None, (command, reply)
    assert mode_of(pump) == mode
    return pump


@pytest.mark.parametrize(("mode", "command"), list(itertools.product(MODES, COMMANDS)), ids=str)
def test_every_pair(mode: str, command: bytes) -> None:
    pump = pump_in(mode)
    error, after = TABLE.get((mode, command), (None, mode))
    reply = ask(pump, command)
    assert reply.error is error
    assert mode_of(pump) == after
    assert reply.prompt is PROMPTS[after]  # the reply carries the prompt after the command


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_pending_alarm_answers_the_first_command_and_executes_nothing(command: bytes) -> None:
    pump = InjectorPump()  # powers up with A?R pending
    assert ask(pump, command).alarm is not None
    assert mode_of(pump) == "idle" and pump.state.run_count == 0
    assert ask(pump, b"").alarm is None  # acknowledged


def test_the_worked_safe_frames_byte_for_byte() -> None:
    pump = InjectorPump(power_up_alarm=False)
    # 0SAF2 in Safe framing is accepted in Basic mode; the reply comes in the new mode.
    assert pump.handle(encode_safe(b"0SAF2")) == encode_safe(b"00S")
    assert pump.handle(bytes.fromhex("02 05 30 36 53 03")) == encode_safe(b"00S")  # "0"
    assert pump.handle(bytes.fromhex("02 0d 30 52 41 54 33 30 30 55 4d c0 2b 03")) == encode_safe(
        b"00S"
    )  # 0RAT300UM
    assert pump.state.rate_ml_min == pytest.approx(0.3)
    assert pump.handle(bytes.fromhex("02 05 30 36 54 03")) == encode_safe(b"00S?COM")  # bad CRC
    assert pump.handle(encode_safe(b"1")) is None  # another pump's address: no reply


def test_time_is_what_the_owner_advances() -> None:
    pump = pump_in("infusing")  # 0.5 mL at 0.3 mL/min: 100 s
    pump.advance(50.0)
    assert pump.state.infused_ml == pytest.approx(0.25, abs=1e-6)
    assert mode_of(pump) == "infusing"
    pump.advance(60.0)
    assert mode_of(pump) == "idle" and pump.state.infused_ml == pytest.approx(0.5)
    assert InjectorEvent.COMPLETE.code in pump.state.events_raised
    with pytest.raises(InjectorSimError, match="backwards"):
        pump.advance(-1.0)


def test_events_tell_the_owner_what_the_pump_did_on_its_own() -> None:
    pump = pump_in("infusing")
    pump.host_attached = True  # the owner times the watchdog while a host is there
    ask(pump, b"SAF2")  # Safe mode: alarms are also sent unsolicited
    pump.add_fault("stall@volume=0.1")
    pump.add_fault("late_reply")  # the wire's: handed on
    pump.advance(30.0)
    events = pump.events()
    assert [e.kind for e in events] == [EventKind.LINK_FAULT, EventKind.AUTO_ALARM]
    assert events[0].name == "late_reply"
    assert events[1].data == b"00A?S" and events[1].t_s == pytest.approx(20.0, abs=0.1)
    assert pump.events() == []  # drained
    pump.add_fault("reset")
    assert [e.kind for e in pump.events()] == [EventKind.POWER_UP]


def test_with_no_host_the_watchdog_runs_on_the_simulated_clock() -> None:
    pump = pump_in("infusing")
    ask(pump, b"SAF2")
    pump.advance(1.9)
    assert mode_of(pump) == "infusing"
    pump.advance(0.2)  # SAF seconds since the last valid packet, and nobody can reach the pump
    assert mode_of(pump) == "idle" and pump.state.alarms_raised[-1] == "T"
    assert InjectorEvent.TERMINATED_COMM_LOSS.code in pump.state.events_raised
