"""The injector driver: the New Era protocol with the galacto extensions behind ``InjectorABC``.

Implements injector-protocol.md §5 (driver rules) and §6 (the controller-side state machine):

1. a heartbeat (status query) at least every ``SAF/2`` s while connected, so that the device's
   own watchdog stops it if the controller dies;
2. queries retried at most twice, a set re-sent only after its value was read back, ``RUN`` never
   re-sent without a status check (``Link.query``/``set``/``execute``);
3. after an alarm reply the command was not executed: the driver re-decides;
4. every path out of INJECTING that is not "completed" sends ``STP`` first, then reports;
5. every event is recorded with its DICOM CID 71 code and a timestamp.

The limits of procedure.md (rate 0.05–1.0 mL/min, 0.05–3.0 mL per injection, at most 600 s,
≤ 5.0 mL per session, 1 mL/3 mL syringes, pressure ceiling 350 kPa) are checked before anything
is sent (:class:`LimitError`), and so is the wire form of the rate and the volume: a value the
pump cannot honour is refused, never rounded (:mod:`device_drivers.quantities`); every value set
is read back as the very value sent. Before every ``RUN`` the delivered counter is cleared and
the direction set to infuse, and both are read back.

Besides programming its limits into the device (``XPL``), the driver watches each injection
itself: the line pressure against the limits relative to the baseline measured at its start,
holds against ``max_hold_s``, and the delivered volume and infusing time against the bounds of
:mod:`device_drivers.supervision` (over-delivery, overtime), sending ``STP`` the moment a bound
is crossed, ahead of the rest of that poll.

The driver's rooms: :mod:`device_drivers.limits` (the limits and syringes),
:mod:`device_drivers.states` (the state table and what alarms mean), :mod:`device_drivers.core`
(the shared state, the event record, the abort), :mod:`device_drivers.monitor` (the heartbeat
thread and the injection watch), :mod:`device_drivers.codec` (the wire grammar, reply parsers
included) and this module, the commands.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from device_drivers.base import (
    SYRINGE_CAPACITY_ML,
    DeviceInfo,
    InjectionResult,
    InjectionStatus,
    InjectorABC,
    InjectorFault,
    InjectorState,
    Progress,
    RecordedEvent,
)
from device_drivers.codec import (
    SIMULATOR_IDENTITY,
    Prompt,
    Reply,
    ReplyError,
    format_number,
    parse_infused_ml,
)
from device_drivers.core import DriverCore, Injection
from device_drivers.errors import (
    CapabilityError,
    DeviceRefusedError,
    DriverError,
    LimitError,
    NotStartedError,
    StateError,
)
from device_drivers.events import InjectorEvent
from device_drivers.limits import SYRINGE_DIAMETERS_MM, VOLUME_RESOLUTION_ML, InjectorLimits
from device_drivers.link import Link, LinkTiming, Shape
from device_drivers.monitor import InjectionMonitor
from device_drivers.quantities import (
    RATE_UNIT,
    VOLUME_UNIT,
    duration_refusal,
    range_refusal,
    same_number,
    wire_quantity,
)
from device_drivers.states import Trigger, next_state
from device_drivers.supervision import DeliverySupervisor

log = logging.getLogger(__name__)

S = InjectorState
E = InjectorEvent
T = Trigger


@dataclass(frozen=True)
class _Configuration:
    syringe: str
    rate_ml_min: float
    volume_ml: float


#: Prompts of a pump whose motor is at rest.
_AT_REST = frozenset({Prompt.STOPPED, Prompt.USER_WAIT})


class NewEraInjector(InjectorABC):
    """The real driver; the URL decides what is at the other end (style.md §2).

    ``NewEraInjector(url, limits=..., timing=...)`` does no I/O until :meth:`connect`.
    """

    def __init__(
        self,
        url: str,
        *,
        baud: int = 19200,
        address: int = 0,
        limits: InjectorLimits | None = None,
        timing: LinkTiming | None = None,
    ) -> None:
        self.url = url
        self.baud = baud
        self.address = address
        self.timing = timing or LinkTiming()
        self._core = DriverCore(limits or InjectorLimits())
        self._monitor = InjectionMonitor(self._core)
        self._config: _Configuration | None = None

    # ---------------------------------------------------------------- introspection

    @property
    def limits(self) -> InjectorLimits:
        return self._core.limits

    @limits.setter
    def limits(self, limits: InjectorLimits) -> None:
        self._core.limits = limits

    @property
    def info(self) -> DeviceInfo | None:
        """What :meth:`connect` found (None before)."""
        return self._core.info

    @property
    def simulated(self) -> bool:
        info = self._core.info
        return self.url.lower().startswith("injsim://") or (info is not None and info.simulated)

    @property
    def link(self) -> Link:
        return self._core.link

    @property
    def state(self) -> InjectorState:
        return self._core.state

    @property
    def reason(self) -> str:
        """Why the injector is in ERROR (empty otherwise)."""
        return self._core.reason

    @property
    def fault(self) -> InjectorFault | None:
        """Why the injector is in ERROR, with the CID 71 event and the last figures."""
        return self._core.fault_report

    @property
    def link_up(self) -> bool:
        link = self._core.current_link
        return link is not None and not link.lost

    @property
    def session_delivered_ml(self) -> float:
        return self._core.session_delivered_ml

    @property
    def last_result(self) -> InjectionResult | None:
        return self._core.last_result

    def new_session(self, given_ml: float = 0.0) -> None:
        """A new exam: the per-exam cap counts from ``given_ml`` again. Refused while an
        injection is armed or running (it belongs to the exam in progress)."""
        if given_ml < 0:
            raise LimitError("the volume already given cannot be negative")
        with self._core.lock:
            if self._core.state in (S.ARMED, S.INJECTING, S.HOLD):
                raise StateError(f"an injection is {self._core.state.value}: the exam is not over")
            self._core.session_delivered_ml = given_ml

    @property
    def events(self) -> list[RecordedEvent]:
        return list(self._core.events)  # a copy; appends happen under the lock

    def subscribe(self, callback: Callable[[RecordedEvent], None]) -> Callable[[], None]:
        with self._core.lock:
            self._core.subscribers.append(callback)

        def unsubscribe() -> None:
            with self._core.lock:
                if callback in self._core.subscribers:
                    self._core.subscribers.remove(callback)

        return unsubscribe

    def subscribe_progress(self, callback: Callable[[Progress], None]) -> Callable[[], None]:
        with self._core.lock:
            self._core.progress_subscribers.append(callback)

        def unsubscribe() -> None:
            with self._core.lock:
                if callback in self._core.progress_subscribers:
                    self._core.progress_subscribers.remove(callback)

        return unsubscribe

    def describe(self) -> str:
        info = self.info
        device = "not connected" if info is None else info.version
        extra = ""
        if info is not None and info.is_plain_pump:
            extra = " — plain New Era pump: no " + ", no ".join(info.missing)
        return f"injector at {self.url} (address {self.address}): {device}{extra}"

    def progress(self) -> Progress:
        """Lock-free: the monitor may hold the lock for a whole poll on a faulty line."""
        inj, config, state = self._core.injection, self._config, self._core.state
        if inj is None:
            rate = config.rate_ml_min if config else 0.0
            target = config.volume_ml if config else 0.0
            return Progress(state, 0.0, target, None, None, rate, 0.0)
        return inj.progress(state)

    # ---------------------------------------------------------------- connect / close

    def connect(self) -> DeviceInfo:
        """Open the link, acknowledge the power-up reset alarm, switch to Safe mode (``SAF n``),
        read ``VER`` and detect the extension commands (injector-protocol.md §4)."""
        with self._core.lock:
            if self._core.current_link is not None:
                raise StateError("already connected")
            if self._core.closed:
                raise StateError("the driver is closed")
            self._core.current_link = Link(
                self.url,
                baud=self.baud,
                address=self.address,
                timing=self.timing,
                on_event=self._core.wakeup.set,
            )
            try:
                self._handshake()
                info = self._core.info = self._detect()
            except BaseException:
                self._core.current_link.close()
                self._core.current_link = None
                raise
            self._monitor.start()
            if info.is_plain_pump:
                log.warning(
                    "%s: injection will be refused (no %s)",
                    info.version,
                    ", no ".join(info.missing),
                )
            log.info("%s", self.describe())
            return info

    def _handshake(self) -> None:
        """``SAF n`` until accepted: the first command after an alarm (the power-up ``R``) is
        answered ``A?x`` and not executed; a Safe-framed SAF is accepted in Basic mode."""
        link = self.link
        self._core.handshaking = True
        try:
            args = str(self.limits.safe_timeout_s)
            for _ in range(4):
                reply = link.query("SAF", Shape.STATUS, args)
                if reply.alarm is None:
                    break
                log.info("injector alarm A?%s acknowledged at connect", reply.alarm.value)
            else:
                raise DeviceRefusedError("the injector keeps answering with an alarm to SAF")
            if reply.error is not None:
                raise DeviceRefusedError(f"the injector refused SAF {args}: {reply.error.value}")
            link.safe = True
            status = link.status()
            if status.alarm is not None:
                raise DeviceRefusedError(f"the injector reports alarm A?{status.alarm.value}")
            if status.prompt is not None and status.prompt not in _AT_REST:
                # Moving while no injection of ours is known (a controller that died during
                # one, someone at the keypad): the motor stops before anything else.
                log.error("injector found moving at connect (%s): stopping it", status.prompt.name)
                self._core.send_stop()
            self._core.drain_link_events()
        finally:
            self._core.handshaking = False
            self._core.announced.clear()

    def _check_same_device(self) -> None:
        """After a reconnection, the device must still be the one ``connect()`` found."""
        reply = self.link.query("VER", Shape.VERSION)
        if self.info is not None and reply.data != self.info.version:
            raise DeviceRefusedError(
                f"a different device answers at {self.url}: {reply.data!r}, "
                f"expected {self.info.version!r}"
            )

    def _detect(self) -> DeviceInfo:
        link = self.link
        version = link.query("VER", Shape.VERSION)
        if version.error is not None or version.alarm is not None:
            raise DeviceRefusedError("the injector did not report its version (VER)")

        def known(name: str, shape: Shape) -> bool:
            reply = link.query(name, shape)
            return reply.alarm is None and reply.error is not ReplyError.UNKNOWN_COMMAND

        # XPR and XEV have no side effect; XDA (disarm) is harmless while idle; XRS (resume)
        # while stopped is refused with ?NA by a device that knows it.
        info = DeviceInfo(
            version=version.data,
            address=self.address,
            has_pressure=known("XPR", Shape.NUMBER),
            has_arming=known("XDA", Shape.STATUS),
            has_hold=known("XRS", Shape.STATUS),
            has_event_queue=known("XEV", Shape.EVENT),
        )
        # Only a device with the extensions is asked who it is (a New Era pump is never sent
        # an X command it does not know).
        identity = link.query("XID", Shape.IDENTITY) if info.has_arming else None
        simulator = identity is not None and identity.data == SIMULATOR_IDENTITY
        return replace(info, simulated=simulator or self.url.lower().startswith("injsim://"))

    def close(self) -> None:
        """Stop the motor if an injection runs, then release the monitor and the port."""
        with self._core.lock:
            if self._core.closed:
                return
            self._core.closed = True
            if self._core.state in (S.INJECTING, S.HOLD) and self._core.current_link is not None:
                self._core.abort(T.OPERATOR_STOP, E.TERMINATED_OPERATOR, "driver closed")
        self._monitor.stop(timeout_s=5 * self.timing.reply_timeout_s)
        if self._core.current_link is not None:
            self._core.current_link.close()

    # ---------------------------------------------------------------- configure / arm

    def check_limits(self, syringe: str, rate_ml_min: float, volume_ml: float) -> None:
        """:class:`LimitError` unless the request is within the limits (nothing is sent)."""
        lim = self.limits
        if syringe not in SYRINGE_DIAMETERS_MM:
            raise LimitError(f"syringe must be one of {', '.join(SYRINGE_DIAMETERS_MM)}")
        refusal = (
            range_refusal("rate", rate_ml_min, lim.min_rate_ml_min, lim.max_rate_ml_min, "mL/min")
            or range_refusal(
                "volume", volume_ml, lim.min_volume_ml, lim.max_volume_per_injection_ml, "mL"
            )
            or duration_refusal(volume_ml, rate_ml_min, lim.max_injection_s)
        )
        if refusal is not None:
            raise LimitError(refusal)
        wire_quantity(rate_ml_min, RATE_UNIT, "rate")  # LimitError when it cannot be sent
        wire_quantity(volume_ml, VOLUME_UNIT, "volume")
        if volume_ml > SYRINGE_CAPACITY_ML[syringe]:
            raise LimitError(f"volume {volume_ml} mL is more than a {syringe} syringe holds")
        remaining = lim.max_volume_per_session_ml - self._core.session_delivered_ml
        if volume_ml > remaining + 1e-9:
            raise LimitError(
                f"volume {volume_ml} mL exceeds the {remaining:.3f} mL left of the "
                f"{lim.max_volume_per_session_ml} mL allowed per exam"
            )

    def configure(self, syringe: str, rate_ml_min: float, volume_ml: float) -> None:
        """Syringe diameter, direction, rate and volume, each set and read back."""
        self.check_limits(syringe, rate_ml_min, volume_ml)
        with self._core.lock:
            target = next_state(T.CONFIGURE, self._core.state)
            config = _Configuration(syringe, rate_ml_min, volume_ml)
            self._apply(config)
            self._config = config
            self._core.go(T.CONFIGURE, target)
            log.info(
                "injector configured: %s syringe, %.3f mL/min, %.3f mL",
                syringe,
                rate_ml_min,
                volume_ml,
            )

    def _apply(self, config: _Configuration) -> None:
        """Syringe diameter, rate (``RAT x MM``) and volume (``VOL ML``, ``VOL x``), each read
        back as the very value sent (the direction is set at each ``arm()``)."""
        diameter = format_number(SYRINGE_DIAMETERS_MM[config.syringe])
        rate = wire_quantity(config.rate_ml_min, RATE_UNIT, "rate")
        volume = wire_quantity(config.volume_ml, VOLUME_UNIT, "volume")
        self._core.set(
            "DIA", diameter, "DIA", Shape.NUMBER, lambda r: same_number(diameter, r.data)
        )
        self._core.set(
            "RAT", rate.number + rate.unit, "RAT", Shape.NUMBER_UNIT, lambda r: rate.matches(r.data)
        )
        unit = volume.unit
        self._core.set("VOL", unit, "VOL", Shape.NUMBER_UNIT, lambda r: r.data.endswith(unit))
        self._core.set(
            "VOL", volume.number, "VOL", Shape.NUMBER_UNIT, lambda r: volume.matches(r.data)
        )

    def arm(self) -> None:
        """Check the device is idle with no alarm, clear its delivered counter and set the
        direction to infuse (both read back), program the pressure limits and arm (``XAR``).
        The next ``RUN`` checks the counter and the direction again."""
        with self._core.lock:
            target = next_state(T.ARM, self._core.state)
            self._require_injector_capabilities()
            if self._config is None:  # pragma: no cover - READY implies configured
                raise StateError("configure the injector first")
            self.check_limits(
                self._config.syringe, self._config.rate_ml_min, self._config.volume_ml
            )
            self._core.expect_idle()
            self._core.set("CLD", "INF", "DIS", Shape.DIS, lambda r: parse_infused_ml(r.data) == 0)
            self._core.set("DIR", "INF", "DIR", Shape.WORD, lambda r: r.data == "INF")
            self._program_pressure_limits()
            reply = self.link.execute("XAR", done=lambda: False)
            if reply is not None:
                self._core.checked(reply, "XAR")
            self._core.armed_until_s = time.monotonic() + self.limits.arm_timeout_s
            self._core.go(T.ARM, target)

    def disarm(self) -> None:
        with self._core.lock:
            target = next_state(T.DISARM, self._core.state)
            reply = self.link.execute("XDA", done=lambda: False)
            if reply is not None:
                self._core.checked(reply, "XDA")
            self._core.go(T.DISARM, target)

    def _require_injector_capabilities(self) -> DeviceInfo:
        info = self.info
        if info is None:
            raise StateError("the injector is not connected")
        if not (info.has_arming and info.has_pressure):
            raise CapabilityError(
                f"{info.version} is a plain New Era pump without {', '.join(info.missing)}: "
                "arming and injecting are refused on it"
            )
        return info

    def _program_pressure_limits(self) -> None:
        """``XPL w a t``: warning, adjustment and termination limits in kPa above the baseline
        the device measures at the start of the run (set while stopped: it lapses arming)."""
        lim = self.limits
        values = (
            lim.pressure_warning_kpa,
            lim.pressure_adjustment_kpa,
            lim.pressure_termination_kpa,
        )
        args = " ".join(format_number(v) for v in values)

        def holds(reply: Reply) -> bool:
            read = re.split(r"[ ,]", reply.data)
            sent = args.split(" ")
            return len(read) == len(sent) and all(map(same_number, sent, read))

        self._core.set("XPL", args, "XPL", Shape.LIMITS, holds)

    # ---------------------------------------------------------------- start / hold / stop

    def start(self) -> InjectionStatus:
        """``RUN`` the armed injection. ``RUN`` is never re-sent without a status check."""
        with self._core.lock:
            target = next_state(T.START, self._core.state)
            assert self._config is not None
            cfg = self._config
            try:  # everything before RUN: a failure here means nothing began
                self._require_injector_capabilities()
                self.check_limits(cfg.syringe, cfg.rate_ml_min, cfg.volume_ml)
                if time.monotonic() > self._core.armed_until_s:
                    self._core.go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._core.state))
                    raise NotStartedError("arming lapsed before start; arm again")
                self._check_ready_to_run()
            except NotStartedError:
                raise
            except DriverError as exc:
                raise NotStartedError(f"not started (RUN never sent): {exc}") from exc
            self._core.stop_requested = False
            try:
                reply = self.link.execute("RUN", done=self._run_happened)
            except DriverError as exc:
                # Whether RUN was executed is unknown: stop it in case, then report.
                self._core.stop_requested = True
                with contextlib.suppress(DriverError):
                    self._core.send_stop()
                reason = f"RUN unconfirmed: {exc}"
                self._core.fault(E.TERMINATED_COMM_LOSS, reason, E.TERMINATED_COMM_LOSS)
                raise
            if reply is not None and reply.error is ReplyError.NOT_APPLICABLE:
                self._core.go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._core.state))
                raise NotStartedError("the injector refused RUN (?NA): it is not armed any more")
            if reply is not None:
                self._core.checked(reply, "RUN")
            status = InjectionStatus()
            now = time.monotonic()
            supervisor = DeliverySupervisor(
                cfg.volume_ml, cfg.rate_ml_min, grace_s=self.limits.baseline_window_s
            )
            self._core.injection = Injection(
                cfg.volume_ml,
                cfg.rate_ml_min,
                now,
                status,
                supervisor,
                polled_s=now,
                baseline_samples=[],
            )
            self._core.go(T.START, target)
            self._core.wakeup.set()
            return status

    def _check_ready_to_run(self) -> None:
        """Right before ``RUN``: the counter reads 0 infused and the direction is infuse (both
        set at ``arm()``). A stale counter would blind the over-delivery and overtime bounds;
        a withdraw left from a purge would aspirate from the duct."""
        infused = self._core.read_infused()
        if infused != 0:
            raise NotStartedError(f"the delivered counter reads {infused:.3f} mL, not 0")
        reply = self._core.checked(self.link.query("DIR", Shape.WORD), "DIR")
        if reply.data != "INF":
            raise NotStartedError(f"the direction is {reply.data}, not INF")

    def _run_happened(self) -> bool:
        """The status check before any second RUN: moving, held, or something delivered."""
        reply = self.link.status()
        if reply.alarm is not None:
            return True  # an alarm is pending: never RUN again; the monitor reports it
        if reply.prompt in (Prompt.INFUSING, Prompt.PAUSED, Prompt.TIMED_PAUSE):
            return True
        return self._core.read_infused() > 0

    def hold(self) -> None:
        """Manual hold (``XHD``): the plunger stops, the injection can resume."""
        with self._core.lock:
            target = next_state(T.HOLD, self._core.state)
            if self.info is None or not self.info.has_hold:
                raise CapabilityError("this injector has no hold/resume (XHD/XRS)")
            reply = self.link.execute("XHD", done=lambda: self._core.prompt_is(Prompt.PAUSED))
            if reply is not None:
                self._core.checked(reply, "XHD")
            assert self._core.injection is not None
            self._core.injection.hold_started_s = time.monotonic()
            self._core.go(T.HOLD, target)
            self._core.record(E.MANUAL_HOLD, "driver", "operator hold")

    def resume(self) -> None:
        with self._core.lock:
            target = next_state(T.RESUME, self._core.state)
            reply = self.link.execute("XRS", done=lambda: self._core.prompt_is(Prompt.INFUSING))
            if reply is not None:
                self._core.checked(reply, "XRS")
            assert self._core.injection is not None
            self._core.injection.hold_started_s = None
            self._core.go(T.RESUME, target)
            self._core.record(E.MANUAL_RESUME, "driver", "operator resume")

    def stop(self, reason: str = "operator stop") -> None:
        """Send ``STP`` at once (whatever the state), then report the injection aborted."""
        self._core.stop_requested = True
        stop_error: DriverError | None = None
        try:
            self._core.send_stop()
        except DriverError as exc:
            stop_error = exc
        with self._core.lock:
            if self._core.aborting:
                pass  # called back from inside an abort (an event subscriber): it is ending
            elif self._core.state in (S.INJECTING, S.HOLD) and stop_error is not None:
                # A STOP that could not be sent is not a stop: unconfirmed, a fault; the pump's
                # watchdog stops it, and its counter is read back when the link returns.
                self._core.abort(
                    T.FAULT,
                    E.TERMINATED_COMM_LOSS,
                    f"{reason} not confirmed: {stop_error}",
                    stop_error=stop_error,
                )
            elif self._core.state in (S.INJECTING, S.HOLD):
                self._core.abort(T.OPERATOR_STOP, E.TERMINATED_OPERATOR, reason, stopped=True)
            elif self._core.state is S.ARMED:
                self._core.go(T.DISARM, next_state(T.DISARM, self._core.state))
        if stop_error is not None:
            raise stop_error

    def acknowledge(self, url: str | None = None) -> None:
        """Leave ERROR: reopen the link if it was lost, redo the Safe-mode handshake (which
        acknowledges any pending alarm) and re-apply the last configuration."""
        with self._core.lock:
            next_state(T.ACKNOWLEDGE, self._core.state)
            link = self.link
            if link.lost or url is not None:
                link.reconnect(url)
                self.url = link.url
            link.safe = False
            self._handshake()
            self._check_same_device()
            self._read_back_unconfirmed()
            if self._config is not None:
                self._apply(self._config)  # the device may have lost it (reset, new port)
                self._core.go(T.ACKNOWLEDGE, next_state(T.ACKNOWLEDGE, self._core.state))
            else:
                trigger = T.ACKNOWLEDGE_UNCONFIGURED
                self._core.go(trigger, next_state(trigger, self._core.state))
            self._core.reason = ""
            self._core.fault_report = None

    def _read_back_unconfirmed(self) -> None:
        """An injection aborted while the link was dead reported the last polled volume; the
        pump ran on until its watchdog stopped it. Now that the link is back, its counter
        (``DIS``, cleared before the run and kept across the watchdog stop) says what was really
        given: the result (now confirmed) and the per-exam total are corrected upward, never
        down."""
        inj, result = self._core.unconfirmed, self._core.last_result
        if inj is None or result is None:
            return
        try:
            given = self._core.read_infused()
        except DriverError as exc:  # kept for the next acknowledgement
            log.error("delivered volume after the link loss not read back: %s", exc)
            return
        self._core.unconfirmed = None
        extra = given - result.delivered_ml
        if extra <= VOLUME_RESOLUTION_ML:
            self._core.last_result = replace(result, confirmed=True)
            return
        self._core.session_delivered_ml += extra
        self._core.last_result = replace(result, delivered_ml=given, confirmed=True)
        log.warning(
            "injector: %.3f mL were given, not the %.3f mL last polled before the link was lost",
            given,
            result.delivered_ml,
        )
