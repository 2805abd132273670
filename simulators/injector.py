"""The other end of the injector wire: a simulated New Era NE-1000 pump with galacto extensions.

It speaks domain/injector-protocol.md byte for byte through :mod:`device_drivers.codec`, on a real
pseudo-terminal (:meth:`InjectorSimulator.serve_pty`), on ``socket://127.0.0.1:PORT``
(:meth:`InjectorSimulator.serve_socket`, one client at a time, reconnects accepted), or in the
same process through the pyserial URL ``injsim://NAME`` (:mod:`simulators.injsim`).

:class:`InjectorSimulator` puts four rooms together under one lock and one clock: the pure pump
(:mod:`simulators.injector_pump`: commands, alarms, device faults, with its mechanics in
:mod:`simulators.injector_mechanics`), its end of the wire (:mod:`simulators.injector_wire`:
framing, ``?COM``, link faults), the transport (:mod:`simulators.serial_port`: the pty, the
socket, or the in-process port of ``injsim://``) and the clock: real elapsed time × ``time_scale``
+ :meth:`~InjectorSimulator.advance`, or only :meth:`~InjectorSimulator.advance` with
``manual_clock=True`` (the test owns the clock).

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
  ``time_scale`` + :meth:`advance` (only :meth:`advance` with ``manual_clock``, plus
  ``step_per_request_s`` for each chunk the host writes); the watchdog (while a host is attached)
  and the 0.5 s inter-byte discard run on ``time.monotonic()``. No artificial delay: a reply is
  written as soon as its command is decoded.

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

import copy
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable

from simulators.injector_faults import (
    FAULT_NAMES,
    FaultSpec,
    FaultSyntaxError,
    InjectorSimError,
    parse_fault,
)
from simulators.injector_physics import SimParams
from simulators.injector_pump import InjectorPump
from simulators.injector_state import SimState, wire_value
from simulators.injector_wire import PumpWire
from simulators.serial_port import InProcessPort, SerialPort, SerialPortError, TranscriptLine

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
    "wire_value",
]

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.2
_BUSY_POLL_S = 0.02


class InjectorSimulator:
    """A simulated New Era pump with the galacto injector extensions (see the module docstring).

    Thread model: the port's I/O thread (or the host's calls, in process) and the public methods
    all run under one lock; waiters are woken on its condition.
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
        manual_clock: bool = False,
        step_per_request_s: float = 0.0,
    ) -> None:
        if time_scale <= 0:
            raise InjectorSimError(f"time_scale must be > 0, got {time_scale}")
        if step_per_request_s < 0:
            raise InjectorSimError("the simulated clock does not run backwards")
        self.time_scale = time_scale
        self.manual_clock = manual_clock
        self.step_per_request_s = step_per_request_s
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._pump = InjectorPump(
            params,
            rng=self._rng,
            plain=plain,
            power_up_alarm=power_up_alarm,
            require_arm=require_arm,
        )
        self.params = self._pump.params
        self.plain = plain
        self.require_arm = self._pump.require_arm
        self._wire = PumpWire(self._pump, self, rng=self._rng, on_port_fault=self._port_fault)
        self._port: SerialPort | InProcessPort | None = None
        self._closed = False
        # Clocks.
        self._mono_origin = time.monotonic()
        self._advanced_s = 0.0
        self._last_valid_rx = time.monotonic()  # the watchdog's real clock
        self._valid_rx_seen = 0
        for fault in faults:
            self.add_fault(fault)

    # ----------------------------------------------------------------------------------------
    # Public API

    def serve_pty(self, link: str | None = None) -> str:
        """Serve on a new pseudo-terminal; return its slave path (or ``link``, a symlink to it)."""
        with self._lock:
            return self._serve(lambda port: port.serve_pty(link))

    def serve_socket(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``socket://HOST:PORT`` (port 0 picks a free one), one client at a time."""
        with self._lock:
            return self._serve(lambda serial_port: serial_port.serve_socket(host, port))

    def open_in_process(self, name: str) -> InProcessPort:
        """The port ``injsim://NAME`` opens: the host's end of an in-process line (one open)."""
        with self._lock:
            if self._closed:
                raise InjectorSimError("the simulator is closed")
            if isinstance(self._port, SerialPort):
                raise InjectorSimError("the simulator already serves a port")
            if isinstance(self._port, InProcessPort) and self._port.attached:
                raise InjectorSimError(f"injsim://{name} is already open")
            self._start_clocks()
            self._port = InProcessPort(self, self._lock, self._cond, f"injsim://{name}")
            self._sync_host()
            return self._port

    @property
    def url(self) -> str:
        with self._lock:
            return "" if self._port is None else self._port.url

    def add_fault(self, fault: FaultSpec | str) -> FaultSpec:
        """Schedule a fault (``FaultSpec`` or its text); ``NAME`` alone fires at once."""
        spec = parse_fault(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._pump.add_fault(spec)
            self._wire.dispatch_events()
            self._cond.notify_all()
        self._wake()
        return spec

    def add_random_faults(
        self, count: int = 5, within_s: float = 30.0, names: Iterable[str] | None = None
    ) -> list[FaultSpec]:
        """Add ``count`` seeded faults at simulated times within ``within_s`` from now."""
        with self._lock:
            self._tick()
            specs = self._pump.add_random_faults(count, within_s, names)
            self._wire.dispatch_events()
            self._cond.notify_all()
        self._wake()
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
            self._pump.load_new_syringe()
            self._cond.notify_all()

    def snapshot(self) -> SimState:
        """A copy of the current state (the clock is brought up to date first)."""
        with self._lock:
            self._tick()
            return self._copy_state()

    @property
    def transcript(self) -> list[TranscriptLine]:
        with self._lock:
            return [] if self._port is None else self._port.transcript

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

    def wait_written(self, rx_bytes: int, timeout_s: float) -> bool:
        """Wait until ``rx_bytes`` bytes have been read and every reply to them written."""
        return self.wait_until(
            lambda s: s.rx_bytes >= rx_bytes and s.tx_queued_bytes == 0, timeout_s
        )

    @property
    def run_count(self) -> int:
        with self._lock:
            return self._pump.state.run_count

    def vanish_port(self) -> None:
        """Close the port: a pty disappears (host reads EIO), a socket drops and stops listening."""
        port = self._port
        if port is None:
            with self._lock:
                self.link_lost()
            return
        port.in_loop(port.vanish)

    def restore_port(self) -> str:
        """Bring the port back (new pty path, same socket port) with a pending reset alarm."""
        port = self._port
        if port is None:
            return self.url
        result: list[str] = []
        port.in_loop(lambda: result.append(port.restore()))
        return result[0] if result else self.url

    def close(self) -> None:
        """Stop serving and release every descriptor; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            port = self._port
        if port is not None:
            port.close()
        with self._lock:
            self._sync_host()
            self._cond.notify_all()

    def __enter__(self) -> InjectorSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        kind = "plain NE-1000" if self.plain else "NE-1000 with galacto extensions"
        return f"simulated {kind} ({self.params.syringe} syringe) at {self.url or 'nowhere'}"

    # ----------------------------------------------------------------------------------------
    # The wire's transport and the port's device (called under the lock)

    def send(self, data: bytes, delay_s: float = 0.0, gap_s: float = 0.0) -> None:
        if self._port is not None:
            self._port.send(data, delay_s, gap_s)

    def received(self, data: bytes) -> None:
        if self.step_per_request_s:
            self._advanced_s += self.step_per_request_s
            self._tick()
        self._wire.receive(data, time.monotonic())
        self._after_pump()

    def service(self) -> None:
        self._wire.expire(time.monotonic())
        self._tick()
        self._watchdog()
        self._wire.dispatch_events()

    def poll_timeout_s(self) -> float:
        timeout = _BUSY_POLL_S if self._pump.busy else _IDLE_POLL_S
        if self._wire.pending:
            timeout = min(timeout, _BUSY_POLL_S)
        if self._pump.safe_mode and self._pump.state.safe_timeout_s:
            timeout = min(timeout, _BUSY_POLL_S * 2)
        return timeout

    def host_connected(self) -> None:
        self._sync_host()
        self._wire.reset()

    def link_lost(self) -> None:
        self._sync_host()
        self._pump.link_lost()
        self._wire.reset()

    def port_restored(self) -> None:
        self._sync_host()
        self._pump.power_up()
        self._after_pump()

    # ----------------------------------------------------------------------------------------
    # Clocks

    def _sim_now(self) -> float:
        if self.manual_clock:
            return self._advanced_s
        return (time.monotonic() - self._mono_origin) * self.time_scale + self._advanced_s

    def _tick(self) -> None:
        """Bring the pump's clock up to now."""
        self._pump.advance(max(0.0, self._sim_now() - self._pump.state.sim_time_s))
        self._after_pump()

    def _start_clocks(self) -> None:
        """Serving starts: fault times count from now; the watchdog counts from now."""
        self._tick()
        self._mono_origin = time.monotonic()
        self._advanced_s = self._pump.state.sim_time_s
        self._pump.start_fault_clock()
        self._pump.restart_watchdog()
        self._last_valid_rx = time.monotonic()
        self._valid_rx_seen = self._pump.valid_rx_count

    def _watchdog(self) -> None:
        """The Safe-mode watchdog on real time: the host's heartbeats come in real time."""
        if not self._pump.watchdog_armed():
            return
        if time.monotonic() - self._last_valid_rx >= self._pump.state.safe_timeout_s:
            self._pump.expire_watchdog()

    def _after_pump(self) -> None:
        """A valid packet restarts the watchdog's real clock; the pump's events are acted on."""
        if self._pump.valid_rx_count != self._valid_rx_seen:
            self._valid_rx_seen = self._pump.valid_rx_count
            self._last_valid_rx = time.monotonic()
        self._wire.dispatch_events()

    # ----------------------------------------------------------------------------------------
    # Ports

    def _serve(self, open_port: Callable[[SerialPort], str]) -> str:
        if self._closed:
            raise InjectorSimError("the simulator is closed")
        if self._port is not None:
            raise InjectorSimError("the simulator already serves a port")
        self._start_clocks()
        port = SerialPort(self, self._lock, self._cond)
        try:
            url = open_port(port)
        except SerialPortError as exc:
            raise InjectorSimError(str(exc)) from exc
        self._port = port
        self._sync_host()
        return url

    def _sync_host(self) -> None:
        """The pump's watchdog runs on its own clock while no host can reach it."""
        self._pump.host_attached = self._port is not None and self._port.attached

    def _port_fault(self, name: str) -> None:
        if name == "port_vanish" and self._port is not None and self._port.serving:
            self._port.vanish(restore_after_s=self.params.port_vanish_s)

    def _wake(self) -> None:
        if self._port is not None:
            self._port.wake()

    def _copy_state(self) -> SimState:
        state = self._pump.state
        port = self._port
        state.connected = port is not None and port.connected
        state.url = "" if port is None else port.url
        state.rx_bytes = 0 if port is None else port.rx_bytes
        state.tx_bytes = 0 if port is None else port.tx_bytes
        state.tx_queued_bytes = 0 if port is None else port.queued_bytes
        state.rx_pending_bytes = self._wire.pending
        return copy.deepcopy(state)
