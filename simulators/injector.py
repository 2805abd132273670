"""The other end of the injector wire: a simulated New Era NE-1000 pump with galacto extensions.

It speaks domain/injector-protocol.md byte for byte through :mod:`device_drivers.codec`, on a real
pseudo-terminal (:meth:`InjectorSimulator.serve_pty`) or on ``socket://127.0.0.1:PORT``
(:meth:`InjectorSimulator.serve_socket`, one client at a time, reconnects accepted).

What it models (spec paragraph in brackets):

* Power-up with a pending reset alarm ``A?R`` (§3): the first valid command is answered
  ``00A?R`` and not executed; so is the first command after any alarm.
* Basic mode by default; ``SAF n`` (n > 0) switches to Safe mode, the reply comes in the new mode
  (so does an alarm reply to ``SAF n``, which is not executed: nesp-lib relies on it), and a
  Safe-framed command is accepted in Basic mode (§2, §4). In Safe mode Basic (CR) input is
  ignored. A complete Safe packet with a bad CRC is answered ``00<prompt>?COM`` and not executed.
* The Safe-mode watchdog (§4): no valid packet for ``SAF`` seconds of *real* time stops the motor,
  disarms and raises ``A?T``. By default it also runs while stopped, as on a real pump
  (``SimParams.watchdog_when_idle``). While no host can reach the pump (the port vanished, the
  socket dropped) it also counts *simulated* seconds, at every physics step: under
  ``time_scale`` a cut cable stops the pump ``SAF`` simulated seconds after the last packet.
* Auto-Alarm (§4): in Safe mode every alarm is also sent at once as an unsolicited ``00A?x``
  Safe packet; it does not clear the alarm.
* Core commands (§4): status, VER, SAF, DIA (only while stopped), RAT (may change while infusing;
  ``?OOR`` above the plunger speed limit), VOL and its units, DIR, RUN, STP, DIS, CLD, PUR.
  Deviation from a real NE-1000: ``STP`` always stops (never pauses); ``RUN`` while moving or
  held is ``?NA``; ``VOL``/``DIR``/``XPL`` are ``?NA`` while moving; a ``RAT`` query while the
  motor runs answers the rate in force (adaptive flow included).
* Extensions: ``XPR`` (line pressure, kPa), ``XPL w a t`` (warning / adjustment / termination
  limits in kPa **relative to the baseline**, separated by spaces or commas; the query answers
  ``w a t``; the absolute ceiling ``SimParams.pressure_ceiling_kpa`` always applies), ``XAR`` /
  ``XDA`` (arm / disarm), ``XHD`` / ``XRS`` (hold / resume, prompt ``P``), ``XEV`` (oldest event
  ``<code>,<ms since power-up>`` or empty). ``VER`` answers ``NE1000X1V3.928``: ``X1`` marks the
  galacto extension set 1 (nesp-lib reads it as a firmware upgrade number).
* Arming: ``RUN`` while not armed is ``?NA``. ``RUN`` consumes the arming. Arming lapses after the
  arm timeout, on any alarm, on a socket disconnect, on ``STP``, ``XDA``, ``PUR`` and on any
  configuration change (DIA, RAT/VOL/DIR while stopped, SAF, XPL). ``PUR`` (priming) needs no
  arming. ``require_arm=False`` (and ``plain=True``) run without arming: that is how nesp-lib,
  which cannot arm, drives the simulator.
* ``plain=True``: a plain New Era pump: every ``X`` command is ``?``, ``VER`` has no ``X1``, no
  arming, and nothing watches the pressure (no limits, no events).
* Physics (§9, :mod:`simulators.injector_physics`): plunger travel, flow, infused volume, the
  syringe running out (stall ``A?S``), Hagen–Poiseuille cannula pressure (following the flow
  with the first-order lag ``line_tau_s`` of syringe and tubing) plus duct compliance,
  the baseline measured over the first ``baseline_window_s`` of a run, warning (130150) and
  adjustment (130151) events, adaptive flow above the adjustment limit, termination (motor
  stopped, ``A?P``, 130156) above the termination limit or the absolute ceiling.
* Time: physics, arm timeout and hold timeout run on a simulated clock = real elapsed time ×
  ``time_scale`` + :meth:`advance`; the watchdog and the 0.5 s inter-byte discard run on
  ``time.monotonic()``. No artificial delay: a reply is written as soon as its command is decoded.

Faults (``FAULT_NAMES``; each ``NAME``, ``NAME@t=S``, ``NAME@after=N``, ``NAME@volume=ML``,
``NAME@on=CMD`` — fired once the pump has executed ``CMD``, before its reply — or a seeded random
schedule). Device and physics:

* ``reset``: power interruption: motor stops, arming/hold/event queue lost, pending ``A?R`` (no
  Auto-Alarm: the pump was rebooting), the first command is swallowed. Settings and the
  communication mode survive (non-volatile memory), the volume counters too.
* ``stall``: ``A?S``, motor stopped (+130160 if it was injecting).
* ``pressure_ramp``: an extra pressure that rises ``ramp_kpa_per_s`` while infusing, through
  warning → adjustment → termination whatever the adaptive flow does. It ends when the motor
  stops (so does ``occlusion``); ``extravasation`` and ``under_delivery`` last for the session.
* ``occlusion``: while infusing the volume stays flat and the pressure (working pressure at the
  set rate) rises ``occlusion_ramp_kpa_per_s``; after ``occlusion_detect_s`` of it: ``A?C``,
  motor stopped.
* ``air``: ``A?B``, motor stopped, 130175 (+130176 if it was injecting).
* ``syringe_detached``: ``A?D``, motor stopped, 130164 (+130179 if it was injecting).
* ``extravasation``: the duct stiffness falls to ``extravasation_factor`` and the duct drains
  fast: pressure drops (read it with ``XPR``).
* ``syringe_empty``: the syringe holds only ``empty_fraction`` of what the run still needs; the
  plunger bottoms out before the target: ``A?S``.
* ``under_delivery``: from now on the counter (``DIS``) rises ``under_delivery_factor`` × the
  motor progress; a run still completes (prompt ``S``) with delivered < commanded.
* ``oor`` / ``na``: the next set command (one with arguments) / the next set or action command
  (RUN, STP, PUR, XAR, XDA, XHD, XRS; queries, XEV included, pass) is answered ``?OOR`` /
  ``?NA`` and not executed.
* ``hold_timeout`` / ``arm_timeout``: the maximum hold / arm timeout becomes
  ``shortened_timeout_s`` (a hold then aborts: motor stopped, prompt ``S``, 130269).
* ``watchdog``: as if heartbeats had stopped: ``A?T`` now (+130159 if it was injecting).

The pump's own safety layers, switched off one at a time for the rest of the session (so that
the controller's layer behind each one is what acts; never in a random schedule unless named):

* ``ignore_volume``: ``VOL`` is accepted and read back, but a run never stops at it: the pump
  infuses until the syringe is empty (stall).
* ``dis_under_report``: ``DIS`` counts only ``dis_under_report_factor`` (½) of what leaves the
  syringe, and the pump stops when that counter shows the target: it gives twice the volume.
* ``pressure_limits_off``: no baseline, warning, adaptive flow or termination, not even at the
  absolute ceiling; ``XPR`` still reports the pressure.
* ``self_hold``: the pump pauses the running injection by itself (prompt ``P``, 130266).
* ``hold_timeout_off``: a hold is never aborted by the pump (no 130269).
* ``end_stop_off``: no stall at the end of the syringe: an empty syringe gives nothing while
  the motor runs on and ``DIS`` counts its travel.
* ``arm_timeout_off``: arming never lapses with time.

Link faults act on the next reply (once), except ``no_reply_forever``:

* ``no_reply``: the next reply is not sent (the command is executed).
* ``no_reply_forever``: nothing is ever written again, replies and Auto-Alarms alike (a dead TX
  line: commands are still executed).
* ``late_reply``: the next reply is written ``late_reply_s`` (1.5 s) after its command.
* ``partial_frame``: only the first half of the next reply is written.
* ``trickle``: the next reply is written one byte every 100–400 ms (seeded).
* ``garbage``: 1–8 seeded random bytes are written before the next reply.
* ``bitflip_reply``: one bit of the next reply's data or CRC is flipped.
* ``bitflip_request``: the next request is treated as corrupted: ``?COM``, not executed.
* ``wrong_length``: the next Safe reply's LEN byte is one too large (waits for a Safe reply).
* ``missing_etx``: the next reply lacks its final ETX.
* ``stx_etx_in_crc``: the next ``XPR`` reply in Safe mode carries a reading (within
  ``stx_etx_search_kpa`` of the true one, sensor noise) whose CRC contains 0x02 or 0x03.
* ``duplicate_reply``: the next reply is written twice.
* ``wrong_address``: the next reply carries address + 1 instead of ours (it replaces the reply).
* ``wrong_shape``: the next reply has another command's shape: data is dropped from a reply that
  carries some, and ``DIS``-style data is added to a status-only reply.
* ``auto_alarm_interleaved`` (Safe mode): while the next request is executed a stall occurs; the
  Auto-Alarm ``00A?S`` is written just before the reply, and the alarm stays pending.
* ``echo``: the next request's bytes are echoed before its reply.
* ``port_vanish``: the port disappears (pty closed: the host sees EIO; socket: connection and
  listener closed) and comes back after ``port_vanish_s`` with a pending reset alarm.

What it does NOT model: multi-pump networks (other addresses are ignored), pumping programs and
phases (``A?E``/``A?O`` never occur), baud rates (a pty has none), the keypad and display,
line compliance beyond a first-order lag, temperature, flow-rate limits (130152/130153/130157),
KVO, a real purge detector (``PUR`` just runs at the maximum rate and does not fill the duct),
withdrawal physics beyond the counter.
"""

from __future__ import annotations

import binascii
import contextlib
import copy
import enum
import errno
import logging
import math
import os
import random
import re
import select
import socket
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import NamedTuple

from device_drivers.codec import (
    ETX,
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
    FAULT_NAMES,
    LAYER_OFF_FAULTS,
    FaultSpec,
    FaultSyntaxError,
    InjectorSimError,
    Trigger,
    parse_fault,
    random_schedule,
)
from simulators.injector_physics import (
    SimParams,
    cannula_pressure_kpa,
    drained_ml,
    duct_pressure_kpa,
)

__all__ = [
    "FAULT_NAMES",
    "FaultSpec",
    "FaultSyntaxError",
    "InjectorSimError",
    "InjectorSimulator",
    "SimParams",
    "SimState",
    "TranscriptLine",
    "parse_fault",
]

log = logging.getLogger(__name__)

#: Rate units → mL/min per unit (NE ``RAT`` units).
RATE_UNITS: dict[str, float] = {"UM": 1e-3, "MM": 1.0, "UH": 1.0 / 60_000.0, "MH": 1.0 / 60.0}
#: Volume units → mL per unit (NE ``VOL`` units).
VOLUME_UNITS: dict[str, float] = {"UL": 1e-3, "ML": 1.0}

_RATE_ARGS = re.compile(r"(?P<value>[\d.]+)\s*(?P<units>UM|MM|UH|MH)?")
_READ_SIZE = 4096
_IDLE_POLL_S = 0.2
_BUSY_POLL_S = 0.02
_IDLE_STEP_S = 1.0
_MAX_STEPS_PER_TICK = 5000
_MOVING = (Prompt.INFUSING, Prompt.WITHDRAWING, Prompt.PURGING)
#: Commands that act without arguments (the others without arguments are queries).
_ACTIONS = frozenset({"RUN", "STP", "PUR", "XAR", "XDA", "XHD", "XRS"})


class Direction(enum.Enum):
    INFUSE = "INF"
    WITHDRAW = "WDR"


class TranscriptLine(NamedTuple):
    """One chunk on the wire: real seconds since serving started, ``RX``/``TX``, hex bytes."""

    t_s: float
    direction: str
    hex: str


@dataclass
class SimState:
    """Everything the simulated pump knows. :meth:`InjectorSimulator.snapshot` returns a copy."""

    prompt: Prompt = Prompt.STOPPED
    alarm: Alarm | None = Alarm.RESET
    safe_mode: bool = False
    safe_timeout_s: int = 0
    armed: bool = False
    held: bool = False
    direction: Direction = Direction.INFUSE
    diameter_mm: float = 4.699
    rate_value: float = 300.0
    rate_units: str = "UM"
    volume_value: float = 0.5
    volume_units: str = "ML"
    infused_ml: float = 0.0  # the counter DIS reports (a fault may make it lie)
    withdrawn_ml: float = 0.0
    #: What really left the syringe forward (infusions and purges), whatever the counter says.
    actual_infused_ml: float = 0.0
    run_ml: float = 0.0  # progress of the current run, as the pump measures it
    syringe_remaining_ml: float = 1.0
    duct_ml: float = 0.0
    line_kpa: float = 0.0  # cannula pressure, lagging the flow by the line compliance
    pressure_kpa: float = 0.0
    baseline_kpa: float | None = None
    rate_multiplier: float = 1.0  # adaptive flow
    warning_kpa: float = 70.0
    adjustment_kpa: float = 100.0
    termination_kpa: float = 170.0
    arm_timeout_s: float = 120.0
    max_hold_s: float = 120.0
    sim_time_s: float = 0.0
    power_up_s: float = 0.0
    armed_at_s: float = 0.0
    hold_started_s: float = 0.0
    run_started_s: float = 0.0
    commands_received: int = 0
    rx_bytes: int = 0  # bytes read from the host
    tx_bytes: int = 0  # bytes written to the host
    tx_queued_bytes: int = 0  # bytes waiting to be written (late or trickled replies)
    rx_pending_bytes: int = 0  # a partial packet waiting for more bytes (or the 0.5 s gap)
    run_count: int = 0
    connected: bool = False
    url: str = ""
    events: list[tuple[str, int]] = field(default_factory=list)  # queued for XEV
    events_raised: list[str] = field(default_factory=list)  # every code ever queued
    alarms_raised: list[str] = field(default_factory=list)  # every alarm letter ever raised
    faults_fired: list[str] = field(default_factory=list)
    # Fault conditions in force.
    ramp_active: bool = False
    ramp_kpa: float = 0.0
    occluded: bool = False
    occlusion_kpa: float = 0.0
    occlusion_s: float = 0.0
    extravasated: bool = False
    under_delivery: bool = False
    #: The pump's own safety layers switched off (the ``LAYER_OFF_FAULTS`` fired so far).
    layers_off: set[str] = field(default_factory=set)
    warned: bool = False
    adjusted: bool = False

    @property
    def rate_ml_min(self) -> float:
        return self.rate_value * RATE_UNITS[self.rate_units]

    @property
    def target_ml(self) -> float:
        return self.volume_value * VOLUME_UNITS[self.volume_units]

    @property
    def moving(self) -> bool:
        return self.prompt in _MOVING and not self.held

    @property
    def injecting(self) -> bool:
        """Infusing or held in the middle of an injection."""
        return self.prompt is Prompt.INFUSING

    @property
    def status_prompt(self) -> Prompt:
        return Prompt.PAUSED if self.held else self.prompt


def wire_value(value: float) -> str:
    """A reply number with a decimal point and up to 4 digits (``0.500``, ``300.0``, ``1000.``).

    Real NE pumps answer fixed-point numbers; nesp-lib's ``(\\d+\\.\\d*)`` needs the point.
    """
    value = max(value, 0.0)
    for decimals in (3, 2, 1, 0):
        text = f"{value:.{decimals}f}"
        if len(text.replace(".", "")) <= 4:
            return text if "." in text else text + "."
    return format_number(value)  # raises ProtocolError: more than 4 integer digits


def _crc_has_stx_etx(data: bytes) -> bool:
    crc = binascii.crc_hqx(data, 0)
    return bool({crc >> 8, crc & 0xFF} & {STX, ETX})


def _requested_mode(command: Command) -> bool | None:
    """Safe (True) or Basic (False) when ``command`` is a valid ``SAF n`` set, else None."""
    if command.name == "SAF" and command.args.strip().isdigit():
        return int(command.args) > 0
    return None


class _Reply(NamedTuple):
    data: str = ""
    error: ReplyError | None = None


_OK = _Reply()


class InjectorSimulator:
    """A simulated New Era pump with the galacto injector extensions (see the module docstring).

    Thread model: one I/O thread per simulator owns the port; public methods take the state lock.
    """

    def __init__(
        self,
        params: SimParams | None = None,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        plain: bool = False,
        faults: Iterable[FaultSpec | str] = (),
        power_up_alarm: bool = True,
        require_arm: bool | None = None,
    ) -> None:
        if time_scale <= 0:
            raise InjectorSimError(f"time_scale must be > 0, got {time_scale}")
        self.params = params or SimParams()
        self.plain = plain
        self.require_arm = (not plain) if require_arm is None else require_arm
        self.time_scale = time_scale
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        p = self.params
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
        self._transcript: list[TranscriptLine] = []
        self._decoder = Decoder(Role.PUMP, safe=False)
        self._mirror = bytearray()  # raw input not yet consumed, for ?COM detection
        self._baseline_samples: list[float] = []
        self._pending_faults: list[FaultSpec] = []
        self._one_shot: list[str] = []  # faults that act once, on the next matching exchange
        self._silent_forever = False
        # Clocks.
        self._mono_origin = time.monotonic()
        self._advanced_s = 0.0
        self._serve_origin_s = 0.0  # simulated time when serving started
        self._last_valid_rx = time.monotonic()
        self._last_valid_rx_sim_s = 0.0  # the same moment on the simulated clock
        self._last_rx = 0.0
        self._watchdog_tripped = False
        # I/O.
        # Bytes to write: (not before this monotonic time, data, gap after the previous write).
        self._out: deque[tuple[float, bytes, float]] = deque()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._wake_r, self._wake_w = -1, -1
        self._requests: deque[Callable[[], None]] = deque()
        self._pty_master: int | None = None
        self._pty_slave: int | None = None
        self._pty_link: str | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._socket_addr: tuple[str, int] | None = None
        self._restore_at: float | None = None
        self._handler_table = self._handlers()
        for fault in faults:
            self.add_fault(fault)

    # ----------------------------------------------------------------------------------------
    # Public API

    def serve_pty(self, link: str | None = None) -> str:
        """Serve on a new pseudo-terminal; return its slave path (or ``link``, a symlink to it)."""
        with self._lock:
            self._start_serving()
            self._pty_link = link
            self._open_pty()
            return self._state.url

    def serve_socket(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``socket://HOST:PORT`` (port 0 picks a free one), one client at a time."""
        with self._lock:
            self._start_serving()
            self._open_listener(host, port)
            return self._state.url

    @property
    def url(self) -> str:
        with self._lock:
            return self._state.url

    def add_fault(self, fault: FaultSpec | str) -> FaultSpec:
        """Schedule a fault (``FaultSpec`` or its text); ``NAME`` alone fires at once."""
        spec = parse_fault(fault) if isinstance(fault, str) else fault
        with self._lock:
            if spec.trigger is Trigger.NOW:
                self._fire(spec)
            else:
                self._pending_faults.append(spec)
                self._check_triggers()
            self._cond.notify_all()
        self._wake()
        return spec

    def add_random_faults(
        self, count: int = 5, within_s: float = 30.0, names: Iterable[str] | None = None
    ) -> list[FaultSpec]:
        """Add ``count`` seeded faults at simulated times within ``within_s`` from now."""
        with self._lock:
            offset = self._sim_now() - self._serve_origin_s
            specs = [
                FaultSpec(s.name, Trigger.TIME, s.value + offset)
                for s in random_schedule(self._rng, count, within_s, names)
            ]
            for spec in specs:
                self.add_fault(spec)
        return specs

    def advance(self, seconds: float) -> None:
        """Move the simulated clock forward (physics, arm and hold timeouts follow)."""
        if seconds < 0:
            raise InjectorSimError("the simulated clock does not run backwards")
        with self._lock:
            self._advanced_s += seconds
            self._tick()
            self._cond.notify_all()
        self._wake()

    def load_new_syringe(self) -> None:
        """A full syringe of the configured size is loaded (the technologist prepares one for
        each exam); refused while the motor runs."""
        with self._lock:
            if self._state.moving:
                raise InjectorSimError("the syringe is not changed while the motor runs")
            self._state.syringe_remaining_ml = self.params.syringe_spec.capacity_ml
            self._cond.notify_all()

    def snapshot(self) -> SimState:
        """A copy of the current state (the clock is brought up to date first)."""
        with self._lock:
            self._tick()
            return self._copy_state()

    @property
    def transcript(self) -> list[TranscriptLine]:
        with self._lock:
            return list(self._transcript)

    def transcript_text(self) -> str:
        """``t RX 02 05 30 36 53 03`` lines."""
        return "\n".join(f"{t.t_s:.6f} {t.direction} {t.hex}" for t in self.transcript)

    def wire_bytes(self, direction: str) -> bytes:
        """All bytes seen in one direction (``RX`` or ``TX``), concatenated."""
        return b"".join(bytes.fromhex(t.hex) for t in self.transcript if t.direction == direction)

    def wait_until(self, predicate: Callable[[SimState], bool], timeout_s: float) -> bool:
        """Wait until ``predicate(state)`` holds; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._tick()
                if predicate(self._copy_state()):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, _BUSY_POLL_S))

    def _copy_state(self) -> SimState:
        self._state.tx_queued_bytes = sum(len(chunk) for _, chunk, _ in self._out)
        self._state.rx_pending_bytes = self._decoder.pending
        return copy.deepcopy(self._state)

    def wait_written(self, rx_bytes: int, timeout_s: float) -> bool:
        """Wait until ``rx_bytes`` bytes have been read and every reply to them written."""
        return self.wait_until(
            lambda s: s.rx_bytes >= rx_bytes and s.tx_queued_bytes == 0, timeout_s
        )

    @property
    def run_count(self) -> int:
        with self._lock:
            return self._state.run_count

    def vanish_port(self) -> None:
        """Close the port: a pty disappears (host reads EIO), a socket drops and stops listening."""
        self._in_loop(self._vanish)

    def restore_port(self) -> str:
        """Bring the port back (new pty path, same socket port) with a pending reset alarm."""
        result: list[str] = []
        self._in_loop(lambda: result.append(self._restore()))
        return result[0] if result else self.url

    def close(self) -> None:
        """Stop serving and release every descriptor; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        with self._lock:
            self._close_port()
            if self._pty_link is not None and os.path.islink(self._pty_link):
                os.unlink(self._pty_link)
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1
            self._cond.notify_all()

    def __enter__(self) -> InjectorSimulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def describe(self) -> str:
        kind = "plain NE-1000" if self.plain else "NE-1000 with galacto extensions"
        return f"simulated {kind} ({self.params.syringe} syringe) at {self.url or 'nowhere'}"

    # ----------------------------------------------------------------------------------------
    # Clocks

    def _sim_now(self) -> float:
        return (time.monotonic() - self._mono_origin) * self.time_scale + self._advanced_s

    def _real_since_serve(self) -> float:
        return time.monotonic() - self._mono_origin

    def _event_ms(self) -> int:
        return round((self._state.sim_time_s - self._state.power_up_s) * 1000.0)

    # ----------------------------------------------------------------------------------------
    # Serving: ports and the I/O thread

    def _start_serving(self) -> None:
        if self._closed:
            raise InjectorSimError("the simulator is closed")
        if self._thread is not None:
            raise InjectorSimError("the simulator already serves a port")
        self._tick()
        self._mono_origin = time.monotonic()
        self._advanced_s = self._state.sim_time_s
        self._serve_origin_s = self._state.sim_time_s
        self._note_valid_rx()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="injector-sim", daemon=True)
        self._thread.start()

    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty_master, self._pty_slave = master, slave
        path = os.ttyname(slave)
        if self._pty_link is not None:
            tmp = f"{self._pty_link}.tmp{os.getpid()}"
            os.symlink(path, tmp)
            os.replace(tmp, self._pty_link)
            path = self._pty_link
        self._state.url = path
        self._state.connected = True
        log.info("injector simulator on pty %s", path)

    def _open_listener(self, host: str, port: int) -> None:
        listener = socket.create_server((host, port), reuse_port=False)
        listener.setblocking(False)
        self._listener = listener
        bound_host, bound_port = listener.getsockname()[:2]
        self._socket_addr = (bound_host, bound_port)
        self._state.url = f"socket://{bound_host}:{bound_port}"
        log.info("injector simulator listening on %s", self._state.url)

    def _close_port(self) -> None:
        for fd in (self._pty_master, self._pty_slave):
            if fd is not None:
                os.close(fd)
        self._pty_master = self._pty_slave = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._state.connected = False
        self._out.clear()

    def _vanish(self) -> None:
        log.info("injector simulator: port %s vanishes", self._state.url)
        self._close_port()
        self._link_lost()

    def _restore(self) -> str:
        if self._pty_master is None and self._listener is None:
            if self._socket_addr is not None:
                self._open_listener(*self._socket_addr)
            else:
                self._open_pty()
        self._restore_at = None
        self._power_up()
        return self._state.url

    def _in_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the I/O thread (it owns the descriptors) and wait for it."""
        done = threading.Event()
        failures: list[BaseException] = []

        def wrapped() -> None:
            try:
                action()
            except Exception as exc:  # handed back to the caller below
                failures.append(exc)
            finally:
                done.set()

        with self._lock:
            if self._thread is None or self._stop:
                action()
                return
            self._requests.append(wrapped)
        self._wake()
        if not done.wait(5.0):
            raise InjectorSimError("the simulator I/O thread did not answer")
        if failures:
            raise InjectorSimError(f"port action failed: {failures[0]}") from failures[0]

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"w")

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stop:
                    return
                while self._requests:
                    self._requests.popleft()()
                rlist, wlist = self._select_sets()
                timeout = self._poll_timeout()
            try:
                readable, writable, _ = select.select(rlist, wlist, [], timeout)
            except (OSError, ValueError):
                continue  # a descriptor was closed under us; rebuild the sets
            with self._lock:
                if self._stop:
                    return
                try:
                    self._service(readable, writable)
                except Exception:
                    log.exception("injector simulator I/O loop failed")
                    raise
                self._cond.notify_all()

    def _select_sets(self) -> tuple[list[int], list[int]]:
        rlist = [self._wake_r]
        wlist: list[int] = []
        want_write = bool(self._out) and self._out[0][0] <= time.monotonic()
        if self._pty_master is not None:
            rlist.append(self._pty_master)
            if want_write:
                wlist.append(self._pty_master)
        if self._client is not None:
            rlist.append(self._client.fileno())
            if want_write:
                wlist.append(self._client.fileno())
        elif self._listener is not None:
            rlist.append(self._listener.fileno())
        return rlist, wlist

    def _poll_timeout(self) -> float:
        now = time.monotonic()
        timeout = _BUSY_POLL_S if (self._state.moving or self._state.held) else _IDLE_POLL_S
        if self._out:
            timeout = min(timeout, max(self._out[0][0] - now, 0.0))
        if self._decoder.pending:
            timeout = min(timeout, _BUSY_POLL_S)
        if self._state.safe_mode and self._state.safe_timeout_s:
            timeout = min(timeout, _BUSY_POLL_S * 2)
        if self._restore_at is not None:
            timeout = min(timeout, max(self._restore_at - now, 0.0))
        return timeout

    def _service(self, readable: list[int], writable: list[int]) -> None:
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        if self._pty_master is not None and self._pty_master in readable:
            try:
                data = os.read(self._pty_master, _READ_SIZE)
            except BlockingIOError:
                data = b""
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if data:
                self._receive(data)
        if self._listener is not None and self._listener.fileno() in readable:
            self._accept()
        if self._client is not None and self._client.fileno() in readable:
            self._recv_client()
        self._expire_partial()
        self._tick()
        self._watchdog()
        if self._restore_at is not None and time.monotonic() >= self._restore_at:
            self._restore()
        self._flush()

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = client
        self._state.connected = True
        self._decoder.reset()
        self._mirror.clear()
        log.info("injector simulator: host connected")

    def _recv_client(self) -> None:
        assert self._client is not None
        try:
            data = self._client.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            log.info("injector simulator: host disconnected")
            self._client.close()
            self._client = None
            self._out.clear()
            self._link_lost()
            return
        self._receive(data)

    def _link_lost(self) -> None:
        self._state.connected = False
        self._state.armed = False
        self._decoder.reset()
        self._mirror.clear()

    def _flush(self) -> None:
        now = time.monotonic()
        while self._out and self._out[0][0] <= now:
            due, chunk, _ = self._out[0]
            try:
                if self._pty_master is not None:
                    written = os.write(self._pty_master, chunk)
                elif self._client is not None:
                    written = self._client.send(chunk)
                else:
                    self._out.clear()
                    return
            except BlockingIOError:
                return
            except OSError as exc:
                log.info("injector simulator: write failed: %s", exc)
                self._out.clear()
                return
            self._record("TX", chunk[:written])
            if written < len(chunk):
                self._out[0] = (due, chunk[written:], 0.0)
                return
            self._out.popleft()
            if self._out and self._out[0][2]:
                # A trickled byte keeps its gap even when the previous write was late.
                next_due, next_chunk, next_gap_s = self._out[0]
                self._out[0] = (max(next_due, time.monotonic() + next_gap_s), next_chunk, 0.0)
            now = time.monotonic()

    def _queue(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        """Write ``data`` after ``delay_s`` and at least ``gap_s`` after the previous write."""
        if not data or self._silent_forever or not self._host_attached():
            return
        due = time.monotonic() + delay_s
        if self._out:
            due = max(due, self._out[-1][0] + gap_s)
        self._out.append((due, data, gap_s))
        self._wake()

    def _record(self, direction: str, data: bytes) -> None:
        if direction == "RX":
            self._state.rx_bytes += len(data)
        else:
            self._state.tx_bytes += len(data)
        if data:
            self._transcript.append(
                TranscriptLine(round(self._real_since_serve(), 6), direction, data.hex(" "))
            )

    # ----------------------------------------------------------------------------------------
    # Receiving

    def _receive(self, data: bytes) -> None:
        """Feed the decoder one byte at a time, so that a bad packet is answered where it ends."""
        self._record("RX", data)
        self._last_rx = time.monotonic()
        for i in range(len(data)):
            byte = data[i : i + 1]
            self._mirror += byte
            frames = self._decoder.feed(byte)
            if frames:
                pending = self._decoder.pending
                self._mirror = bytearray(self._mirror[-pending:]) if pending else bytearray()
                for frame in frames:
                    self._on_frame(frame)
            else:
                self._detect_bad_packet()

    def _detect_bad_packet(self) -> None:
        """A complete Safe packet (STX LEN … ETX where LEN says) whose CRC fails → ``?COM``.

        ``_mirror`` holds the input since the last frame; it is scanned like the decoder does
        (drop one byte, rescan for STX) and never grows past one maximal packet.
        """
        mirror = self._mirror
        while True:
            start = mirror.find(STX)
            if start < 0:
                mirror.clear()
                return
            del mirror[:start]
            if len(mirror) < 2:
                return
            length = mirror[1]
            if length >= 5 and len(mirror) < length + 1:
                return
            if length >= 5 and mirror[length] == ETX:
                data = bytes(mirror[2 : length - 2])
                crc = (mirror[length - 2] << 8) | mirror[length - 1]
                if binascii.crc_hqx(data, 0) != crc:
                    log.info("injector simulator: bad packet, answering ?COM")
                    mirror.clear()
                    self._decoder.reset()
                    self._send_reply(_Reply(error=ReplyError.INVALID_PACKET))
                    return
            del mirror[:1]

    def _expire_partial(self) -> None:
        if self._decoder.pending and time.monotonic() - self._last_rx >= (
            self.params.inter_byte_timeout_s
        ):
            frames = self._decoder.expire()
            self._mirror.clear()
            for frame in frames:
                self._on_frame(frame)

    def _on_frame(self, frame: Frame) -> None:
        s = self._state
        if self._take_one_shot("echo"):
            raw = encode_safe(frame.data) if frame.safe else frame.data + b"\r"
            self._queue(raw)
        if self._take_one_shot("bitflip_request"):
            self._send_reply(_Reply(error=ReplyError.INVALID_PACKET))
            return
        try:
            command = parse_command(frame.data)
        except ProtocolError:
            self._send_reply(_Reply(error=ReplyError.UNKNOWN_COMMAND))
            return
        if command.address is not None and command.address != self.params.address:
            return  # another pump on the network
        self._note_valid_rx()
        self._watchdog_tripped = False
        self._check_after_triggers()
        s.commands_received += 1
        if s.alarm is not None:
            alarm, s.alarm = s.alarm, None
            # The reply to SAF comes in the mode SAF asks for, even an alarm reply (nesp-lib
            # relies on it: its first command is SAF n sent with "ignore one alarm").
            self._send_frame(
                format_reply(self.params.address, alarm=alarm), safe=_requested_mode(command)
            )
            return
        reply = self._execute(command.name, command.args)
        self._check_command_triggers(command.name)
        if self._take_one_shot("auto_alarm_interleaved", safe_only=True):
            data = format_reply(
                self.params.address, prompt=s.status_prompt, error=reply.error, data=reply.data
            )
            self._stall()
            self._send_frame(data)
            return
        self._send_reply(reply)

    def _check_command_triggers(self, name: str) -> None:
        """``NAME@on=CMD``: the command was executed; the fault fires before its reply."""
        due = [
            f for f in self._pending_faults if f.trigger is Trigger.COMMAND and f.command == name
        ]
        for spec in due:
            self._pending_faults.remove(spec)
            self._fire(spec)

    def _check_after_triggers(self) -> None:
        received = self._state.commands_received
        due = [
            f for f in self._pending_faults if f.trigger is Trigger.AFTER and received >= f.value
        ]
        for spec in due:
            self._pending_faults.remove(spec)
            self._fire(spec)

    # ----------------------------------------------------------------------------------------
    # Sending

    def _frame(self, data: bytes, safe: bool | None = None) -> bytes:
        safe = self._state.safe_mode if safe is None else safe
        return encode_safe(data) if safe else encode_basic_reply(data)

    def _send_reply(self, reply: _Reply) -> None:
        s = self._state
        data = format_reply(
            self.params.address, prompt=s.status_prompt, error=reply.error, data=reply.data
        )
        self._send_frame(data)

    def _send_frame(self, data: bytes, safe: bool | None = None) -> None:
        """Write one reply, through whatever link faults are pending."""
        if self._silent_forever:
            return
        if self._take_one_shot("no_reply"):
            return
        if self._take_one_shot("wrong_address"):
            other = (self.params.address + 1) % 100
            data = f"{other:02d}".encode() + data[2:]
        if self._take_one_shot("wrong_shape"):
            head = data[:5] if data[2:4] == b"A?" else data[:3]
            data = head + b"I0.000W0.000ML" if data == head else head
        frame = self._frame(data, safe)
        if self._take_one_shot("bitflip_reply"):
            lo, hi = (2, len(frame) - 1) if self._state.safe_mode else (1, len(frame) - 1)
            index = self._rng.randrange(lo, hi)
            flipped = bytearray(frame)
            flipped[index] ^= 1 << self._rng.randrange(8)
            frame = bytes(flipped)
        if self._take_one_shot("wrong_length", safe_only=True):
            frame = frame[:1] + bytes(((frame[1] + 1) & 0xFF,)) + frame[2:]
        if self._take_one_shot("missing_etx"):
            frame = frame[:-1]
        if self._take_one_shot("partial_frame"):
            frame = frame[: len(frame) // 2]
        if self._take_one_shot("duplicate_reply"):
            frame = frame + frame
        if self._take_one_shot("garbage"):
            count = self._rng.randint(1, self.params.garbage_max_bytes)
            frame = bytes(self._rng.randrange(256) for _ in range(count)) + frame
        delay_s = self.params.late_reply_s if self._take_one_shot("late_reply") else 0.0
        if self._take_one_shot("trickle"):
            p = self.params
            self._queue(frame[:1], delay_s)
            for i in range(1, len(frame)):
                gap_s = self._rng.uniform(p.trickle_min_s, p.trickle_max_s)
                self._queue(frame[i : i + 1], gap_s=gap_s)
            return
        self._queue(frame, delay_s)

    def _take_one_shot(self, name: str, *, safe_only: bool = False) -> bool:
        if name in self._one_shot and (self._state.safe_mode or not safe_only):
            self._one_shot.remove(name)
            return True
        return False

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
        }

    def _busy(self) -> bool:
        return self._state.prompt in _MOVING or self._state.held

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
        self._decoder.safe = s.safe_mode
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
        value = self._number(args)
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
        value = self._number(m["value"]) if m else None
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
            value = self._number(args)
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
        self._baseline_samples = []
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
        self._stop_motor()
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
            found = self._pressure_with_stx_etx_crc(pressure)
            if found is not None:
                self._one_shot.remove("stx_etx_in_crc")
                return _Reply(found)
        return _Reply(wire_value(pressure))

    def _pressure_with_stx_etx_crc(self, pressure_kpa: float) -> str | None:
        """A reading within ``stx_etx_search_kpa`` whose reply CRC holds STX or ETX."""
        text = wire_value(pressure_kpa)
        decimals = len(text.partition(".")[2])
        step = 10.0**-decimals
        steps = int(self.params.stx_etx_search_kpa / step)
        prompt = self._state.status_prompt
        for k in range(steps + 1):
            for sign in (1, -1):
                candidate = wire_value(pressure_kpa + sign * k * step)
                data = format_reply(self.params.address, prompt=prompt, data=candidate)
                if _crc_has_stx_etx(data):
                    return candidate
        return None

    def _cmd_xpl(self, args: str) -> _Reply:
        s = self._state
        if not args:
            limits = (s.warning_kpa, s.adjustment_kpa, s.termination_kpa)
            return _Reply(" ".join(format_number(v) for v in limits))
        parts = [p for p in re.split(r"[ ,]+", args) if p]
        values = [self._number(p) for p in parts]
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

    def _cmd_xev(self, args: str) -> _Reply:
        s = self._state
        if not s.events:
            return _OK
        code, ms = s.events.pop(0)
        return _Reply(f"{code},{ms}")

    @staticmethod
    def _number(text: str) -> float | None:
        try:
            return parse_number(text)
        except ProtocolError:
            return None

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

    def _stop_motor(self) -> None:
        """Stop; the run-bound fault conditions (pressure ramp, occlusion) end with the run."""
        s = self._state
        s.prompt = Prompt.STOPPED
        s.held = False
        s.ramp_active = s.occluded = False
        s.ramp_kpa = s.occlusion_kpa = s.occlusion_s = 0.0

    def _raise_alarm(self, alarm: Alarm, events: Iterable[InjectorEvent] = ()) -> None:
        """Stop, disarm, latch the alarm, queue its events, send the Auto-Alarm in Safe mode."""
        s = self._state
        self._stop_motor()
        s.armed = False
        s.alarm = alarm
        s.alarms_raised.append(alarm.value)
        for event in events:
            self._queue_event(event)
        log.info("injector simulator: alarm A?%s", alarm.value)
        if s.safe_mode and not self._silent_forever:
            self._queue(encode_safe(format_reply(self.params.address, alarm=alarm)))

    def _power_up(self) -> None:
        """Power returns: motor stopped, volatile state lost, pending reset alarm."""
        s = self._state
        self._stop_motor()
        s.armed = False
        s.alarm = Alarm.RESET
        s.alarms_raised.append(Alarm.RESET.value)
        s.events.clear()
        s.power_up_s = s.sim_time_s
        self._decoder.reset()
        self._mirror.clear()
        self._note_valid_rx()
        self._watchdog_tripped = False

    def _note_valid_rx(self) -> None:
        """A valid packet (or a power-up): the watchdog counts from now, on both clocks."""
        self._last_valid_rx = time.monotonic()
        self._last_valid_rx_sim_s = self._sim_now()

    def _watchdog_armed(self) -> bool:
        s = self._state
        if not (s.safe_mode and s.safe_timeout_s) or self._watchdog_tripped:
            return False
        return self.params.watchdog_when_idle or s.moving or s.held or s.armed

    def _watchdog(self) -> None:
        """The Safe-mode watchdog on real time: the host's heartbeats come in real time."""
        if not self._watchdog_armed():
            return
        if time.monotonic() - self._last_valid_rx >= self._state.safe_timeout_s:
            self._watchdog_expired()

    def _watchdog_unreachable(self) -> None:
        """With no host attached (the port vanished, the socket dropped) the watchdog also runs
        on the simulated clock, checked at every physics step: under ``time_scale`` the pump
        stops ``SAF`` simulated seconds after the last valid packet, as it would in the room,
        not after ``SAF`` real seconds in which the physics ran ``time_scale`` times faster
        (a cut cable would otherwise deliver the whole programmed volume)."""
        if self._host_attached() or not self._watchdog_armed():
            return
        if self._state.sim_time_s - self._last_valid_rx_sim_s >= self._state.safe_timeout_s:
            self._watchdog_expired()

    def _host_attached(self) -> bool:
        """A port a host can reach the pump through: the pty, or a connected socket client."""
        return self._pty_master is not None or self._client is not None

    def _watchdog_expired(self) -> None:
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
        elif name == "no_reply_forever":
            self._silent_forever = True
        elif name == "port_vanish":
            if self._thread is not None:
                self._vanish()
                self._restore_at = time.monotonic() + self.params.port_vanish_s
        else:
            self._one_shot.append(name)

    def _device_faults(self) -> dict[str, Callable[[], None]]:
        s = self._state
        p = self.params
        return {
            "reset": self._power_up,
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
            "syringe_empty": self._fault_syringe_empty,
            "under_delivery": lambda: setattr(s, "under_delivery", True),
            "oor": lambda: self._one_shot.append("oor"),
            "na": lambda: self._one_shot.append("na"),
            "hold_timeout": lambda: setattr(s, "max_hold_s", p.shortened_timeout_s),
            "arm_timeout": lambda: setattr(s, "arm_timeout_s", p.shortened_timeout_s),
            "watchdog": self._watchdog_expired,
            "self_hold": self._self_hold,
            **{
                name: partial(s.layers_off.add, name)
                for name in LAYER_OFF_FAULTS
                if name != "self_hold"
            },
        }

    def _self_hold(self) -> None:
        """The pump pauses the running injection by itself (a programmed pause: prompt ``P``)."""
        s = self._state
        if s.injecting and not s.held:
            s.held = True
            s.hold_started_s = s.sim_time_s
            self._queue_event(InjectorEvent.PROGRAMMED_HOLD)

    def _stall(self) -> None:
        events = self._injecting_events(InjectorEvent.TERMINATED_INJECTOR_FAILURE)
        self._raise_alarm(Alarm.STALLED, events)

    def _fault_syringe_empty(self) -> None:
        s = self._state
        need_ml = s.target_ml - s.run_ml if s.prompt in _MOVING else s.target_ml
        if need_ml <= 0:
            need_ml = s.syringe_remaining_ml
        s.syringe_remaining_ml = min(s.syringe_remaining_ml, need_ml * self.params.empty_fraction)

    def _check_triggers(self) -> None:
        s = self._state
        elapsed = s.sim_time_s - self._serve_origin_s
        due = [
            f
            for f in self._pending_faults
            if (f.trigger is Trigger.TIME and elapsed >= f.value)
            or (f.trigger is Trigger.VOLUME and s.infused_ml >= f.value - 1e-12)
        ]
        for spec in due:
            self._pending_faults.remove(spec)
            self._fire(spec)

    # ----------------------------------------------------------------------------------------
    # Physics (domain/injector-protocol.md §9)

    def _tick(self) -> None:
        """Integrate the simulated clock up to now in steps of at most ``params.step_s``."""
        now = self._sim_now()
        s = self._state
        # Bounded work per call, even for a huge advance() or time_scale.
        floor_s = (now - s.sim_time_s) / _MAX_STEPS_PER_TICK
        while s.sim_time_s < now - 1e-12:
            # Idle, the state evolves in closed form (drainage, line relaxation): larger steps.
            step_s = self.params.step_s if (s.moving or s.held) else _IDLE_STEP_S
            dt = min(max(step_s, floor_s), now - s.sim_time_s)
            s.sim_time_s += dt
            self._step(dt)
            self._watchdog_unreachable()
            self._check_triggers()

    def _step(self, dt: float) -> None:
        s = self._state
        p = self.params
        if (
            s.armed
            and "arm_timeout_off" not in s.layers_off
            and s.sim_time_s - s.armed_at_s >= s.arm_timeout_s
        ):
            s.armed = False
            log.info("injector simulator: arm timeout")
        if (
            s.held
            and "hold_timeout_off" not in s.layers_off
            and s.sim_time_s - s.hold_started_s >= s.max_hold_s
        ):
            log.info("injector simulator: hold timeout")
            self._stop_motor()
            self._queue_event(InjectorEvent.TERMINATED_HOLD_TIMEOUT)
        flow_ml_min = 0.0
        if s.moving:
            flow_ml_min = self._move(dt)
        tau = p.extravasation_drain_tau_s if s.extravasated else p.duct_drain_tau_s
        s.duct_ml = drained_ml(s.duct_ml, dt, tau)
        if s.ramp_active and s.prompt is Prompt.INFUSING and not s.held:
            s.ramp_kpa += p.ramp_kpa_per_s * dt
        infusing = s.prompt is Prompt.INFUSING and not s.held
        stiffness = p.extravasation_factor if s.extravasated else 1.0
        target_kpa = cannula_pressure_kpa(p, flow_ml_min)
        s.line_kpa += (target_kpa - s.line_kpa) * -math.expm1(-dt / p.line_tau_s)
        pressure = s.line_kpa + duct_pressure_kpa(p, s.duct_ml, stiffness)
        if infusing:
            pressure += s.ramp_kpa + s.occlusion_kpa
        if p.pressure_noise_kpa:
            pressure += self._rng.gauss(0.0, p.pressure_noise_kpa)
        s.pressure_kpa = max(pressure, 0.0)
        if infusing and not self.plain and "pressure_limits_off" not in s.layers_off:
            self._check_pressure(dt)

    def _move(self, dt: float) -> float:
        """Advance the plunger; return the flow through the line in mL/min."""
        s = self._state
        p = self.params
        purging = s.prompt is Prompt.PURGING
        rate = p.max_rate_ml_min(s.diameter_mm) if purging else s.rate_ml_min * s.rate_multiplier
        if s.prompt is Prompt.WITHDRAWING:
            dv = rate / 60.0 * dt
            s.withdrawn_ml += dv
            s.syringe_remaining_ml += dv
            s.duct_ml = max(0.0, s.duct_ml - dv)
            s.run_ml += dv
            self._complete_if_done()
            return 0.0
        if s.occluded and not purging:
            s.occlusion_kpa += p.occlusion_ramp_kpa_per_s * dt
            s.occlusion_s += dt
            if s.occlusion_s >= p.occlusion_detect_s:
                self._raise_alarm(Alarm.OCCLUSION)
            return rate  # the sensor sits before the blockage: it keeps the working pressure
        # The pump measures its progress by its counter: under dis_under_report that counter
        # sees only part of the travel, and the pump runs on until it shows the target.
        measured = p.dis_under_report_factor if "dis_under_report" in s.layers_off else 1.0
        travel = rate / 60.0 * dt
        if not purging and s.target_ml > 0 and "ignore_volume" not in s.layers_off:
            travel = min(travel, (s.target_ml - s.run_ml) / measured)
        travel = max(travel, 0.0)
        dv = min(travel, s.syringe_remaining_ml)  # what really leaves the syringe
        if "end_stop_off" not in s.layers_off:
            travel = dv  # the plunger stops at the end of the syringe
        s.run_ml += travel * measured
        s.syringe_remaining_ml -= dv
        s.actual_infused_ml += dv
        s.infused_ml += travel * measured * (p.under_delivery_factor if s.under_delivery else 1.0)
        if not purging:
            s.duct_ml += dv
        flow_ml_min = dv / dt * 60.0 if dt > 0 else 0.0
        if not purging and self._complete_if_done():
            return flow_ml_min
        if s.syringe_remaining_ml <= 1e-12 and "end_stop_off" not in s.layers_off:
            log.info("injector simulator: plunger at the end of the syringe")
            self._raise_alarm(Alarm.STALLED)
        return flow_ml_min

    def _complete_if_done(self) -> bool:
        s = self._state
        ignored = "ignore_volume" in s.layers_off and s.direction is Direction.INFUSE
        if s.target_ml > 0 and not ignored and s.run_ml >= s.target_ml - 1e-9:
            self._stop_motor()
            if s.direction is Direction.INFUSE:
                self._queue_event(InjectorEvent.COMPLETE)
            log.info("injector simulator: run complete")
            return True
        return False

    def _check_pressure(self, dt: float) -> None:
        """Baseline, warning, adaptive flow and termination (§9 limits, relative to baseline)."""
        s = self._state
        p = self.params
        pressure = s.pressure_kpa
        if s.baseline_kpa is None:
            self._baseline_samples.append(pressure)
            if s.sim_time_s - s.run_started_s >= p.baseline_window_s:
                s.baseline_kpa = sum(self._baseline_samples) / len(self._baseline_samples)
        excess = pressure - s.baseline_kpa if s.baseline_kpa is not None else -math.inf
        if pressure >= p.pressure_ceiling_kpa or excess >= s.termination_kpa:
            log.info("injector simulator: pressure %.1f kPa: terminated", pressure)
            self._raise_alarm(Alarm.OVER_PRESSURE, (InjectorEvent.TERMINATED_PRESSURE,))
            return
        if excess >= s.warning_kpa and not s.warned:
            s.warned = True
            self._queue_event(InjectorEvent.PRESSURE_WARNING)
        if excess >= s.adjustment_kpa:
            if not s.adjusted:
                s.adjusted = True
                self._queue_event(InjectorEvent.PRESSURE_ADJUSTMENT)
            s.rate_multiplier = max(
                p.adaptive_floor, s.rate_multiplier * math.exp(-p.adaptive_decay_per_s * dt)
            )
