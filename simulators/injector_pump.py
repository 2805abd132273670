"""The simulated New Era NE-1000 pump itself: pure, with its time injected.

:class:`InjectorPump` is the device behind the wire (docs/simulators.md): the commands and their
replies, the alarms, the event queue, the physics of plunger, line and duct, and the device
faults. It reads no clock and touches no descriptor:

* :meth:`InjectorPump.handle` takes one request frame as it is on the wire and returns the
  reply frame (None: no reply, the command was for another address);
* :meth:`InjectorPump.advance` moves its simulated clock forward (physics, arm and hold timeouts,
  fault triggers);
* :meth:`InjectorPump.events` drains what it did on its own: an Auto-Alarm to send unsolicited,
  a power-up (partial input lost), a fault that acts on the wire or the port.

Everything about bytes in transit (framing a stream, a bad CRC answered ``?COM``, the 0.5 s
inter-byte discard, the link faults) is :mod:`simulators.injector_wire`'s; the pty and the socket
are :mod:`simulators.serial_port`'s; :class:`simulators.injector.InjectorSimulator` puts them
together with a clock. The module docstring of :mod:`simulators.injector` says what the pump
models and what it does not.
"""

from __future__ import annotations

import binascii
import enum
import logging
import random
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import NamedTuple

from device_drivers.codec import (
    ETX,
    SIMULATOR_IDENTITY,
    STX,
    Alarm,
    Command,
    Decoder,
    Frame,
    Prompt,
    ProtocolError,
    ReplyError,
    Role,
    encode_basic_reply,
    encode_safe,
    format_number,
    format_reply,
    parse_command,
    parse_number,
)
from device_drivers.events import InjectorEvent
from simulators.injector_faults import (
    LAYER_OFF_FAULTS,
    FaultSchedule,
    FaultSpec,
    InjectorSimError,
    Trigger,
    parse_fault,
    random_schedule,
)
from simulators.injector_mechanics import PumpMechanics
from simulators.injector_physics import SimParams
from simulators.injector_state import (
    MOVING,
    RATE_UNITS,
    VOLUME_UNITS,
    Direction,
    SimState,
    wire_value,
)

log = logging.getLogger(__name__)

_RATE_ARGS = re.compile(r"(?P<value>[\d.]+)\s*(?P<units>UM|MM|UH|MH)?")
_IDLE_STEP_S = 1.0
_MAX_STEPS_PER_TICK = 5000
#: Commands that act without arguments (the others without arguments are queries).
_ACTIONS = frozenset({"RUN", "STP", "PUR", "XAR", "XDA", "XHD", "XRS"})
#: Faults that act once on the pump's next matching exchange (the others are the wire's).
PUMP_ONE_SHOTS = frozenset({"stx_etx_in_crc", "auto_alarm_interleaved"})


class EventKind(enum.Enum):
    """What the pump did on its own, for the wire and the port to act on."""

    AUTO_ALARM = "auto-alarm"  #: ``data``: the unsolicited reply, to send Safe-framed at once
    POWER_UP = "power-up"  #: the pump rebooted: a partial packet in transit is lost
    LINK_FAULT = "link-fault"  #: ``name``: a fault of the wire or the port fired


class Event(NamedTuple):
    kind: EventKind
    t_s: float  #: simulated time
    data: bytes = b""
    name: str = ""


class PumpReply(NamedTuple):
    """A reply's data and whether it goes Safe-framed (the mode in force when it was made)."""

    data: bytes
    safe: bool

    def frame(self) -> bytes:
        return encode_safe(self.data) if self.safe else encode_basic_reply(self.data)


def _crc_has_stx_etx(data: bytes) -> bool:
    crc = binascii.crc_hqx(data, 0)
    return bool({crc >> 8, crc & 0xFF} & {STX, ETX})


def _pressure_with_stx_etx_crc(
    params: SimParams, prompt: Prompt, pressure_kpa: float
) -> str | None:
    """A reading within ``stx_etx_search_kpa`` whose reply CRC holds STX or ETX."""
    text = wire_value(pressure_kpa)
    decimals = len(text.partition(".")[2])
    step = 10.0**-decimals
    steps = int(params.stx_etx_search_kpa / step)
    for k in range(steps + 1):
        for sign in (1, -1):
            candidate = wire_value(pressure_kpa + sign * k * step)
            data = format_reply(params.address, prompt=prompt, data=candidate)
            if _crc_has_stx_etx(data):
                return candidate
    return None


def _number(text: str) -> float | None:
    try:
        return parse_number(text)
    except ProtocolError:
        return None


def _requested_mode(command: Command) -> bool | None:
    """Safe (True) or Basic (False) when ``command`` is a valid ``SAF n`` set, else None."""
    if command.name == "SAF" and command.args.strip().isdigit():
        return int(command.args) > 0
    return None


class _Reply(NamedTuple):
    data: str = ""
    error: ReplyError | None = None


_OK = _Reply()


class InjectorPump:
    """A simulated New Era pump with the galacto injector extensions (see the module docstring).

    Not thread-safe: its owner serialises the calls. ``rng`` is the seeded generator of every
    random choice (pressure noise, random fault schedules); its owner may share it.
    """

    def __init__(
        self,
        params: SimParams | None = None,
        *,
        rng: random.Random | None = None,
        plain: bool = False,
        power_up_alarm: bool = True,
        require_arm: bool | None = None,
    ) -> None:
        self.params = p = params or SimParams()
        self.plain = plain
        self.require_arm = (not plain) if require_arm is None else require_arm
        self.rng = rng or random.Random(0)
        self._state = SimState(
            alarm=Alarm.RESET if power_up_alarm else None,
            diameter_mm=p.syringe_spec.inner_diameter_mm,
            rate_value=p.rate_ml_min * 1000.0,
            volume_value=p.volume_ml,
            syringe_remaining_ml=p.syringe_spec.capacity_ml,
            warning_kpa=p.pressure_warning_kpa,
            adjustment_kpa=p.pressure_adjustment_kpa,
            termination_kpa=p.pressure_termination_kpa,
            arm_timeout_s=p.arm_timeout_s,
            max_hold_s=p.max_hold_s,
        )
        if power_up_alarm:
            self._state.alarms_raised.append(Alarm.RESET.value)
        self._events: list[Event] = []
        self._faults = FaultSchedule()
        self._one_shot: list[str] = []  # pump faults that act once, on the next exchange
        self._fault_origin_s = 0.0  # simulated time that ``NAME@t=S`` counts from
        self._last_valid_rx_sim_s = 0.0
        self._watchdog_tripped = False
        self._handler_table = self._handlers()
        self._mechanics = PumpMechanics(
            self.params,
            self._state,
            self.rng,
            raise_alarm=self._raise_alarm,
            queue_event=self._queue_event,
            watch_pressure=not plain,
        )
        #: A host can reach the pump (the owner's port says so): while none can, the Safe-mode
        #: watchdog also runs on the simulated clock.
        self.host_attached = False
        #: Valid packets for us so far (the owner times the watchdog on its own clock by it).
        self.valid_rx_count = 0

    # ----------------------------------------------------------------------------------------
    # The pump's interface

    @property
    def state(self) -> SimState:
        """The live state (a snapshot is the owner's copy of it)."""
        return self._state

    @property
    def safe_mode(self) -> bool:
        return self._state.safe_mode

    def handle(self, frame: bytes) -> bytes | None:
        """Answer one request frame as it is on the wire (Safe packet or Basic ``…CR``); a Safe
        packet that fails its check is answered ``?COM``. None: no reply."""
        decoded = Decoder(Role.PUMP, safe=self.safe_mode).feed(frame)
        if not decoded:
            if frame[:1] == bytes((STX,)):
                return self.error_reply(ReplyError.INVALID_PACKET).frame()
            return None
        reply = self.respond(decoded[0])
        return None if reply is None else reply.frame()

    def respond(self, frame: Frame) -> PumpReply | None:
        """Answer one decoded request (None: it was for another address)."""
        s = self._state
        try:
            command = parse_command(frame.data)
        except ProtocolError:
            return self._reply(_Reply(error=ReplyError.UNKNOWN_COMMAND))
        if command.address is not None and command.address != self.params.address:
            return None  # another pump on the network
        self._note_valid_rx()
        self._watchdog_tripped = False
        for spec in self._faults.due_after(s.commands_received):
            self._fire(spec)
        s.commands_received += 1
        if s.alarm is not None:
            alarm, s.alarm = s.alarm, None
            # The reply to SAF comes in the mode SAF asks for, even an alarm reply (nesp-lib
            # relies on it: its first command is SAF n sent with "ignore one alarm").
            safe = _requested_mode(command)
            data = format_reply(self.params.address, alarm=alarm)
            return PumpReply(data, s.safe_mode if safe is None else safe)
        reply = self._execute(command.name, command.args)
        for spec in self._faults.due_on(command.name):
            self._fire(spec)
        if self._take_one_shot("auto_alarm_interleaved", safe_only=True):
            data = format_reply(
                self.params.address, prompt=s.status_prompt, error=reply.error, data=reply.data
            )
            self._stall()  # its Auto-Alarm goes out just before this reply
            return PumpReply(data, s.safe_mode)
        return self._reply(reply)

    def error_reply(self, error: ReplyError) -> PumpReply:
        """The reply to a request that could not be taken (``?COM``: a corrupted packet)."""
        return self._reply(_Reply(error=error))

    def events(self) -> list[Event]:
        """What the pump did on its own since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def add_fault(self, fault: FaultSpec | str) -> FaultSpec:
        """Schedule a fault (``FaultSpec`` or its text); ``NAME`` alone fires at once."""
        spec = parse_fault(fault) if isinstance(fault, str) else fault
        if spec.trigger is Trigger.NOW:
            self._fire(spec)
        else:
            self._faults.add(spec)
            self._check_triggers()
        return spec

    def add_random_faults(
        self, count: int, within_s: float, names: Iterable[str] | None = None
    ) -> list[FaultSpec]:
        """Add ``count`` seeded faults at simulated times within ``within_s`` from now."""
        offset = self._state.sim_time_s - self._fault_origin_s
        specs = [
            FaultSpec(s.name, Trigger.TIME, s.value + offset)
            for s in random_schedule(self.rng, count, within_s, names)
        ]
        for spec in specs:
            self.add_fault(spec)
        return specs

    def start_fault_clock(self) -> None:
        """``NAME@t=S`` counts from now (the owner starts serving)."""
        self._fault_origin_s = self._state.sim_time_s

    def load_new_syringe(self) -> None:
        """A full syringe of the configured size is loaded; refused while the motor runs."""
        if self._state.moving:
            raise InjectorSimError("the syringe is not changed while the motor runs")
        self._state.syringe_remaining_ml = self.params.syringe_spec.capacity_ml

    def restart_watchdog(self) -> None:
        """The watchdog counts from now (the owner starts serving)."""
        self._note_valid_rx()

    def link_lost(self) -> None:
        """The host is gone (the port vanished, the socket dropped): arming lapses."""
        self._state.armed = False

    @property
    def busy(self) -> bool:
        """The motor runs, or an injection is held: the owner polls it more often."""
        return self._state.moving or self._state.held

    # ----------------------------------------------------------------------------------------
    # Replies

    def _reply(self, reply: _Reply) -> PumpReply:
        s = self._state
        data = format_reply(
            self.params.address, prompt=s.status_prompt, error=reply.error, data=reply.data
        )
        return PumpReply(data, s.safe_mode)

    def _emit(self, kind: EventKind, data: bytes = b"", *, name: str = "") -> None:
        self._events.append(Event(kind, self._state.sim_time_s, data, name))

    def _take_one_shot(self, name: str, *, safe_only: bool = False) -> bool:
        if name in self._one_shot and (self._state.safe_mode or not safe_only):
            self._one_shot.remove(name)
            return True
        return False

    def _note_valid_rx(self) -> None:
        """A valid packet (or a power-up): the watchdog counts from now."""
        self._last_valid_rx_sim_s = self._state.sim_time_s
        self.valid_rx_count += 1

    def _event_ms(self) -> int:
        return round((self._state.sim_time_s - self._state.power_up_s) * 1000.0)

    # ----------------------------------------------------------------------------------------
    # Commands (domain/injector-protocol.md §4)

    def _execute(self, name: str, args: str) -> _Reply:
        if (args or name in _ACTIONS) and self._take_one_shot("na"):
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        if args and self._take_one_shot("oor"):
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        if name.startswith("X") and self.plain:
            return _Reply(error=ReplyError.UNKNOWN_COMMAND)
        handler = self._handler_table.get(name)
        if handler is None:
            return _Reply(error=ReplyError.UNKNOWN_COMMAND)
        return handler(args.strip())

    def _handlers(self) -> dict[str, Callable[[str], _Reply]]:
        return {
            "": self._cmd_status,
            "VER": self._cmd_ver,
            "SAF": self._cmd_saf,
            "DIA": self._cmd_dia,
            "RAT": self._cmd_rat,
            "VOL": self._cmd_vol,
            "DIR": self._cmd_dir,
            "RUN": self._cmd_run,
            "STP": self._cmd_stp,
            "DIS": self._cmd_dis,
            "CLD": self._cmd_cld,
            "PUR": self._cmd_pur,
            "XPR": self._cmd_xpr,
            "XPL": self._cmd_xpl,
            "XAR": self._cmd_xar,
            "XDA": self._cmd_xda,
            "XHD": self._cmd_xhd,
            "XRS": self._cmd_xrs,
            "XEV": self._cmd_xev,
            "XID": self._cmd_xid,
        }

    def _busy(self) -> bool:
        return self._state.prompt in MOVING or self._state.held

    def _configured(self) -> None:
        """Any configuration change disarms."""
        if self._state.armed:
            log.info("injector simulator: configuration change disarms")
        self._state.armed = False

    def _cmd_status(self, args: str) -> _Reply:
        return _OK

    def _cmd_ver(self, args: str) -> _Reply:
        extension = "" if self.plain else "X1"
        return _Reply(f"NE{self.params.model}{extension}V{self.params.firmware}")

    def _cmd_saf(self, args: str) -> _Reply:
        s = self._state
        if not args:
            return _Reply(str(s.safe_timeout_s))
        if not args.isdigit() or int(args) > 255:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        s.safe_timeout_s = int(args)
        s.safe_mode = s.safe_timeout_s > 0
        self._note_valid_rx()
        self._watchdog_tripped = False
        self._configured()
        return _OK

    def _cmd_dia(self, args: str) -> _Reply:
        s = self._state
        if not args:
            return _Reply(wire_value(s.diameter_mm))
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        value = _number(args)
        if value is None or not 0.1 <= value <= 50.0:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        s.diameter_mm = value
        self._configured()
        return _OK

    def _cmd_rat(self, args: str) -> _Reply:
        s = self._state
        if not args:
            # While the motor runs: the rate in force, adaptive flow included.
            in_force = s.rate_value * (s.rate_multiplier if s.moving else 1.0)
            return _Reply(f"{wire_value(in_force)}{s.rate_units}")
        m = _RATE_ARGS.fullmatch(args)
        value = _number(m["value"]) if m else None
        if m is None or value is None:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        units = m["units"] or s.rate_units
        rate_ml_min = value * RATE_UNITS[units]
        max_rate = self.params.max_rate_ml_min(s.diameter_mm)
        if rate_ml_min <= 0 or rate_ml_min > max_rate * (1 + 1e-9):
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        s.rate_value, s.rate_units = value, units
        if not self._busy():
            self._configured()
        return _OK

    def _cmd_vol(self, args: str) -> _Reply:
        s = self._state
        if not args:
            return _Reply(f"{wire_value(s.volume_value)}{s.volume_units}")
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        if args in VOLUME_UNITS:
            target_ml = s.target_ml
            s.volume_units = args
            s.volume_value = target_ml / VOLUME_UNITS[args]
        else:
            value = _number(args)
            if value is None:
                return _Reply(error=ReplyError.OUT_OF_RANGE)
            s.volume_value = value
        self._configured()
        return _OK

    def _cmd_dir(self, args: str) -> _Reply:
        s = self._state
        if not args:
            return _Reply(s.direction.value)
        try:
            direction = Direction(args)
        except ValueError:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.direction = direction
        self._configured()
        return _OK

    def _cmd_run(self, args: str) -> _Reply:
        s = self._state
        if args:
            return _Reply(error=ReplyError.NOT_APPLICABLE)  # pumping programs are not modelled
        if self._busy() or (self.require_arm and not s.armed):
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.run_count += 1
        s.armed = False
        s.run_ml = 0.0
        s.run_started_s = s.sim_time_s
        s.baseline_kpa = None
        self._mechanics.start_run()
        s.rate_multiplier = 1.0
        s.warned = s.adjusted = False
        s.occlusion_s = s.occlusion_kpa = 0.0
        s.prompt = Prompt.INFUSING if s.direction is Direction.INFUSE else Prompt.WITHDRAWING
        log.info("injector simulator: RUN %.3f mL at %.3f mL/min", s.target_ml, s.rate_ml_min)
        return _OK

    def _cmd_stp(self, args: str) -> _Reply:
        s = self._state
        if s.injecting and not self.plain:
            self._queue_event(InjectorEvent.TERMINATED_OPERATOR)
        self._state.stop_motor()
        s.armed = False
        return _OK

    def _cmd_dis(self, args: str) -> _Reply:
        s = self._state
        scale = VOLUME_UNITS[s.volume_units]
        infused = wire_value(s.infused_ml / scale)
        withdrawn = wire_value(s.withdrawn_ml / scale)
        return _Reply(f"I{infused}W{withdrawn}{s.volume_units}")

    def _cmd_cld(self, args: str) -> _Reply:
        s = self._state
        if args == "INF":
            s.infused_ml = 0.0
        elif args == "WDR":
            s.withdrawn_ml = 0.0
        else:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        return _OK

    def _cmd_pur(self, args: str) -> _Reply:
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        self._state.prompt = Prompt.PURGING
        self._state.armed = False
        return _OK

    def _cmd_xpr(self, args: str) -> _Reply:
        if args:
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        pressure = self._state.pressure_kpa
        if "stx_etx_in_crc" in self._one_shot and self._state.safe_mode:
            found = _pressure_with_stx_etx_crc(self.params, self._state.status_prompt, pressure)
            if found is not None:
                self._one_shot.remove("stx_etx_in_crc")
                return _Reply(found)
        return _Reply(wire_value(pressure))

    def _cmd_xpl(self, args: str) -> _Reply:
        s = self._state
        if not args:
            limits = (s.warning_kpa, s.adjustment_kpa, s.termination_kpa)
            return _Reply(" ".join(format_number(v) for v in limits))
        parts = [p for p in re.split(r"[ ,]+", args) if p]
        values = [_number(p) for p in parts]
        if len(values) != 3 or any(v is None for v in values):
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        warning, adjustment, termination = (float(v or 0.0) for v in values)
        if not 0 < warning < adjustment < termination <= self.params.pressure_ceiling_kpa:
            return _Reply(error=ReplyError.OUT_OF_RANGE)
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.warning_kpa, s.adjustment_kpa, s.termination_kpa = warning, adjustment, termination
        self._configured()
        return _OK

    def _cmd_xar(self, args: str) -> _Reply:
        s = self._state
        if self._busy():
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.armed = True
        s.armed_at_s = s.sim_time_s
        return _OK

    def _cmd_xda(self, args: str) -> _Reply:
        self._state.armed = False
        return _OK

    def _cmd_xhd(self, args: str) -> _Reply:
        s = self._state
        if not s.injecting or s.held:
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.held = True
        s.hold_started_s = s.sim_time_s
        self._queue_event(InjectorEvent.MANUAL_HOLD)
        return _OK

    def _cmd_xrs(self, args: str) -> _Reply:
        s = self._state
        if not s.held:
            return _Reply(error=ReplyError.NOT_APPLICABLE)
        s.held = False
        self._queue_event(InjectorEvent.MANUAL_RESUME)
        return _OK

    def _cmd_xid(self, args: str) -> _Reply:
        """Who answers: a simulator never hides that it is one."""
        return _Reply(SIMULATOR_IDENTITY)

    def _cmd_xev(self, args: str) -> _Reply:
        s = self._state
        if not s.events:
            return _OK
        code, ms = s.events.pop(0)
        return _Reply(f"{code},{ms}")

    # ----------------------------------------------------------------------------------------
    # Alarms, events, motor

    def _queue_event(self, event: InjectorEvent) -> None:
        if self.plain:
            return
        self._state.events.append((event.code, self._event_ms()))
        self._state.events_raised.append(event.code)
        log.info("injector simulator: event %s %s", event.code, event.meaning)

    def _injecting_events(self, *events: InjectorEvent) -> tuple[InjectorEvent, ...]:
        return events if (self._state.injecting or self._state.held) else ()

    def _raise_alarm(self, alarm: Alarm, events: Iterable[InjectorEvent] = ()) -> None:
        """Stop, disarm, latch the alarm, queue its events, send the Auto-Alarm in Safe mode."""
        s = self._state
        self._state.stop_motor()
        s.armed = False
        s.alarm = alarm
        s.alarms_raised.append(alarm.value)
        for event in events:
            self._queue_event(event)
        log.info("injector simulator: alarm A?%s", alarm.value)
        if s.safe_mode:
            self._emit(EventKind.AUTO_ALARM, format_reply(self.params.address, alarm=alarm))

    def power_up(self) -> None:
        """Power returns: motor stopped, volatile state lost, pending reset alarm."""
        s = self._state
        self._state.stop_motor()
        s.armed = False
        s.alarm = Alarm.RESET
        s.alarms_raised.append(Alarm.RESET.value)
        s.events.clear()
        s.power_up_s = s.sim_time_s
        self._note_valid_rx()
        self._watchdog_tripped = False
        self._emit(EventKind.POWER_UP)

    def watchdog_armed(self) -> bool:
        """The Safe-mode watchdog runs: Safe mode with a timeout, not tripped since the last
        valid packet, and (unless it also runs idle) something to stop."""
        s = self._state
        if not (s.safe_mode and s.safe_timeout_s) or self._watchdog_tripped:
            return False
        return self.params.watchdog_when_idle or s.moving or s.held or s.armed

    def _watchdog_unreachable(self) -> None:
        """With no host attached (the port vanished, the socket dropped) the watchdog also runs
        on the simulated clock, checked at every physics step: under ``time_scale`` the pump
        stops ``SAF`` simulated seconds after the last valid packet, as it would in the room,
        not after ``SAF`` real seconds in which the physics ran ``time_scale`` times faster
        (a cut cable would otherwise deliver the whole programmed volume)."""
        if self.host_attached or not self.watchdog_armed():
            return
        if self._state.sim_time_s - self._last_valid_rx_sim_s >= self._state.safe_timeout_s:
            self.expire_watchdog()

    def expire_watchdog(self) -> None:
        """No valid packet for ``SAF`` seconds: stop, raise ``A?T`` (+130159 if injecting)."""
        self._watchdog_tripped = True
        log.info("injector simulator: Safe-mode watchdog expired")
        events = self._injecting_events(InjectorEvent.TERMINATED_COMM_LOSS)
        self._raise_alarm(Alarm.COMMS_TIMEOUT, events)

    # ----------------------------------------------------------------------------------------
    # Faults

    def _fire(self, spec: FaultSpec) -> None:
        s = self._state
        s.faults_fired.append(str(spec))
        log.info("injector simulator: fault %s fires", spec)
        name = spec.name
        device = self._device_faults().get(name)
        if device is not None:
            device()
        elif name in PUMP_ONE_SHOTS:
            self._one_shot.append(name)
        else:  # a fault of the wire or the port: theirs to act on
            self._emit(EventKind.LINK_FAULT, name=name)

    def _device_faults(self) -> dict[str, Callable[[], None]]:
        s = self._state
        p = self.params
        return {
            "reset": self.power_up,
            "stall": self._stall,
            "pressure_ramp": lambda: setattr(s, "ramp_active", True),
            "occlusion": lambda: setattr(s, "occluded", True),
            "air": lambda: self._raise_alarm(
                Alarm.AIR,
                (InjectorEvent.AIR_DETECTED, *self._injecting_events(InjectorEvent.TERMINATED_AIR)),
            ),
            "syringe_detached": lambda: self._raise_alarm(
                Alarm.SYRINGE_DETACHED,
                (
                    InjectorEvent.SYRINGE_DETACHED,
                    *self._injecting_events(InjectorEvent.TERMINATED_CONSUMABLE_REMOVAL),
                ),
            ),
            "extravasation": lambda: setattr(s, "extravasated", True),
            "syringe_empty": self._mechanics.empty_syringe,
            "under_delivery": lambda: setattr(s, "under_delivery", True),
            "oor": lambda: self._one_shot.append("oor"),
            "na": lambda: self._one_shot.append("na"),
            "hold_timeout": lambda: setattr(s, "max_hold_s", p.shortened_timeout_s),
            "arm_timeout": lambda: setattr(s, "arm_timeout_s", p.shortened_timeout_s),
            "watchdog": self.expire_watchdog,
            "self_hold": self._mechanics.self_hold,
            **{
                name: partial(s.layers_off.add, name)
                for name in LAYER_OFF_FAULTS
                if name != "self_hold"
            },
        }

    def _stall(self) -> None:
        events = self._injecting_events(InjectorEvent.TERMINATED_INJECTOR_FAILURE)
        self._raise_alarm(Alarm.STALLED, events)

    def _check_triggers(self) -> None:
        s = self._state
        elapsed = s.sim_time_s - self._fault_origin_s
        for spec in self._faults.due_in_time(elapsed, s.infused_ml):
            self._fire(spec)

    # ----------------------------------------------------------------------------------------
    # Physics (domain/injector-protocol.md §9)

    def advance(self, dt_s: float) -> None:
        """Move the simulated clock ``dt_s`` seconds forward, integrating the physics in steps
        of at most ``params.step_s`` (bounded work per call, even for a huge ``dt_s``)."""
        if dt_s < 0:
            raise InjectorSimError("the simulated clock does not run backwards")
        s = self._state
        now = s.sim_time_s + dt_s
        # Bounded work per call, even for a huge advance() or time_scale.
        floor_s = (now - s.sim_time_s) / _MAX_STEPS_PER_TICK
        while s.sim_time_s < now - 1e-12:
            # Idle, the state evolves in closed form (drainage, line relaxation): larger steps.
            step_s = self.params.step_s if (s.moving or s.held) else _IDLE_STEP_S
            dt = min(max(step_s, floor_s), now - s.sim_time_s)
            s.sim_time_s += dt
            self._mechanics.step(dt)
            self._watchdog_unreachable()
            self._check_triggers()
