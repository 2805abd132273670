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
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

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
from device_drivers.codec import Alarm, Prompt, Reply, ReplyError, format_number, parse_number
from device_drivers.errors import (
    CapabilityError,
    DeviceRefusedError,
    DriverError,
    DriverTimeoutError,
    LimitError,
    LinkLostError,
    NotStartedError,
    StateError,
)
from device_drivers.events import InjectorEvent
from device_drivers.link import Link, LinkEventKind, LinkTiming, Shape
from device_drivers.quantities import (
    RATE_UNIT,
    VOLUME_UNIT,
    duration_refusal,
    range_refusal,
    same_number,
    wire_quantity,
)
from device_drivers.supervision import OVER_DELIVERY, OVERTIME, DeliverySupervisor

log = logging.getLogger(__name__)

S = InjectorState
E = InjectorEvent

#: Inner diameter of the syringes the injector may carry (injector-protocol.md §9).
SYRINGE_DIAMETERS_MM: dict[str, float] = {"1ml": 4.699, "3ml": 8.585}
#: The pump's volume display resolution: differences below it are not corrections.
VOLUME_RESOLUTION_ML = 0.001

#: Hard limits (procedure.md, injector-protocol.md §9): settings may lower them, never raise.
HARD_MAX_RATE_ML_MIN = 1.0
HARD_MAX_VOLUME_PER_INJECTION_ML = 3.0
HARD_MAX_VOLUME_PER_SESSION_ML = 5.0
HARD_PRESSURE_CEILING_KPA = 350.0
HARD_MAX_INJECTION_S = 3600.0
#: Hard floors: settings may raise them, never lower. A wire number carries 3 decimals (of mL,
#: of mL/min): at 0.05 its rounding is at most 1 % (the most a wire value may be off), and the
#: over-delivery tolerance (0.02 mL) is already 40 % of the smallest injection.
HARD_MIN_VOLUME_ML = 0.05
HARD_MIN_RATE_ML_MIN = 0.05


@dataclass(frozen=True)
class InjectorLimits:
    """Safety limits and timings of the driver (``InjectorSettings`` maps onto it)."""

    max_rate_ml_min: float = HARD_MAX_RATE_ML_MIN
    min_rate_ml_min: float = HARD_MIN_RATE_ML_MIN
    min_volume_ml: float = HARD_MIN_VOLUME_ML
    #: The longest injection (volume / rate), inclusive: 0.5 mL at the slowest rate.
    max_injection_s: float = 600.0
    max_volume_per_injection_ml: float = HARD_MAX_VOLUME_PER_INJECTION_ML
    #: The driver tracks the total it delivered since connect() (the exam owns per-exam limits).
    max_volume_per_session_ml: float = HARD_MAX_VOLUME_PER_SESSION_ML
    pressure_warning_kpa: float = 70.0  # above the baseline
    pressure_adjustment_kpa: float = 100.0  # above the baseline: the device reduces its rate
    pressure_termination_kpa: float = 170.0  # above the baseline: stop
    pressure_ceiling_kpa: float = HARD_PRESSURE_CEILING_KPA  # absolute
    baseline_window_s: float = 2.0
    arm_timeout_s: float = 120.0
    max_hold_s: float = 120.0
    #: Safe-mode watchdog programmed with ``SAF n``.
    safe_timeout_s: int = 2
    #: Poll period while armed, injecting or held; capped at safe_timeout_s / 2.
    poll_interval_s: float = 0.2
    #: A pressure fall this far below the peak of the run while infusing at the set rate
    #: suggests extravasation (the duct's resistance drops): the injection is stopped.
    extravasation_drop_kpa: float = 5.0
    #: Delivered volume may fall short of the target by this much and still be "completed".
    volume_tolerance_ml: float = 0.005

    def __post_init__(self) -> None:
        hard = (
            ("max_rate_ml_min", self.max_rate_ml_min, HARD_MAX_RATE_ML_MIN),
            (
                "max_volume_per_injection_ml",
                self.max_volume_per_injection_ml,
                HARD_MAX_VOLUME_PER_INJECTION_ML,
            ),
            (
                "max_volume_per_session_ml",
                self.max_volume_per_session_ml,
                HARD_MAX_VOLUME_PER_SESSION_ML,
            ),
            ("pressure_ceiling_kpa", self.pressure_ceiling_kpa, HARD_PRESSURE_CEILING_KPA),
            ("max_injection_s", self.max_injection_s, HARD_MAX_INJECTION_S),
        )
        for name, value, ceiling in hard:
            if not 0 < value <= ceiling:
                raise LimitError(f"{name} must be in (0, {ceiling}], got {value}")
        floors = (
            (
                "min_volume_ml",
                self.min_volume_ml,
                HARD_MIN_VOLUME_ML,
                self.max_volume_per_injection_ml,
            ),
            ("min_rate_ml_min", self.min_rate_ml_min, HARD_MIN_RATE_ML_MIN, self.max_rate_ml_min),
        )
        for name, value, floor, maximum in floors:
            if not floor <= value <= maximum:
                raise LimitError(f"{name} must be in [{floor}, {maximum}], got {value}")
        if not (
            0
            < self.pressure_warning_kpa
            < self.pressure_adjustment_kpa
            < self.pressure_termination_kpa
        ):
            raise LimitError("pressure limits must satisfy 0 < warning < adjustment < termination")
        if not 1 <= self.safe_timeout_s <= 255:
            raise LimitError(f"safe_timeout_s must be 1..255, got {self.safe_timeout_s}")

    @property
    def heartbeat_s(self) -> float:
        """Rule 1: at least every SAF/2 seconds."""
        return min(self.poll_interval_s, self.safe_timeout_s / 2)


# ------------------------------------------------------------------------------------------
# The state machine (injector-protocol.md §6), as a table.


class Trigger(enum.Enum):
    CONFIGURE = "configure"
    ARM = "arm"
    DISARM = "disarm"
    ARM_TIMEOUT = "arm timeout"
    START = "start"
    VOLUME_REACHED = "volume reached"
    HOLD = "hold"
    RESUME = "resume"
    HOLD_TIMEOUT = "hold timeout"
    OPERATOR_STOP = "operator stop"
    FAULT = "fault"
    REPORTED = "reported"
    ACKNOWLEDGE = "acknowledge"
    ACKNOWLEDGE_UNCONFIGURED = "acknowledge (never configured)"


T = Trigger

TRANSITIONS: dict[tuple[Trigger, InjectorState], InjectorState] = {
    # Syringe, rate and volume set and read back.
    (T.CONFIGURE, S.NOT_READY): S.READY,
    (T.CONFIGURE, S.READY): S.READY,
    (T.CONFIGURE, S.COMPLETED): S.READY,
    # Arming needs a healthy link, no pending alarm and the pressure limits programmed.
    (T.ARM, S.READY): S.ARMED,
    # After a completed injection the same settings may be re-armed (second injection).
    (T.ARM, S.COMPLETED): S.ARMED,
    (T.DISARM, S.ARMED): S.READY,
    # Arming lapses when not started in time (device and driver both time it).
    (T.ARM_TIMEOUT, S.ARMED): S.READY,
    (T.START, S.ARMED): S.INJECTING,
    # The device stopped by itself with the programmed volume delivered.
    (T.VOLUME_REACHED, S.INJECTING): S.COMPLETED,
    (T.HOLD, S.INJECTING): S.HOLD,
    (T.RESUME, S.HOLD): S.INJECTING,
    # A hold longer than the maximum aborts the injection.
    (T.HOLD_TIMEOUT, S.HOLD): S.ABORTED,
    # Operator stop and every fault while delivering: STP first, then ABORTED(reason).
    (T.OPERATOR_STOP, S.INJECTING): S.ABORTED,
    (T.OPERATOR_STOP, S.HOLD): S.ABORTED,
    (T.FAULT, S.INJECTING): S.ABORTED,
    (T.FAULT, S.HOLD): S.ABORTED,
    # A fault outside an injection (alarm, link loss) needs the operator's acknowledgement.
    (T.FAULT, S.NOT_READY): S.ERROR,
    (T.FAULT, S.READY): S.ERROR,
    (T.FAULT, S.ARMED): S.ERROR,
    (T.FAULT, S.COMPLETED): S.ERROR,
    (T.FAULT, S.ERROR): S.ERROR,
    # ABORTED is reported, then held as ERROR until acknowledged.
    (T.REPORTED, S.ABORTED): S.ERROR,
    (T.ACKNOWLEDGE, S.ERROR): S.READY,
    (T.ACKNOWLEDGE_UNCONFIGURED, S.ERROR): S.NOT_READY,
}


def next_state(trigger: Trigger, state: InjectorState) -> InjectorState:
    """The state after ``trigger`` in ``state``; :class:`StateError` if not allowed."""
    try:
        return TRANSITIONS[(trigger, state)]
    except KeyError:
        raise StateError(
            f"cannot {trigger.value} while the injector is {state.value.replace('_', ' ')}"
        ) from None


# ------------------------------------------------------------------------------------------
# What alarms and device events mean.


@dataclass(frozen=True)
class AlarmMeaning:
    event: InjectorEvent  # recorded when the alarm is seen
    termination: InjectorEvent  # the reason an injection it interrupts is aborted
    text: str


ALARMS: dict[Alarm, AlarmMeaning] = {
    Alarm.RESET: AlarmMeaning(E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "power reset"),
    Alarm.STALLED: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "motor stalled"
    ),
    Alarm.COMMS_TIMEOUT: AlarmMeaning(
        E.TERMINATED_COMM_LOSS, E.TERMINATED_COMM_LOSS, "safe-mode watchdog expired"
    ),
    Alarm.PROGRAM_ERROR: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "program error"
    ),
    Alarm.OUT_OF_RANGE: AlarmMeaning(
        E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "phase out of range"
    ),
    Alarm.OVER_PRESSURE: AlarmMeaning(
        E.TERMINATED_PRESSURE, E.TERMINATED_PRESSURE, "pressure above termination limit"
    ),
    Alarm.AIR: AlarmMeaning(E.AIR_DETECTED, E.TERMINATED_AIR, "air detected"),
    Alarm.OCCLUSION: AlarmMeaning(E.EQUIPMENT_FAILURE, E.TERMINATED_INJECTOR_FAILURE, "occlusion"),
    Alarm.SYRINGE_DETACHED: AlarmMeaning(
        E.SYRINGE_DETACHED, E.TERMINATED_CONSUMABLE_REMOVAL, "syringe detached"
    ),
}

#: Device events (XEV) that end an injection, with the termination reported.
TERMINATING_EVENTS: dict[InjectorEvent, InjectorEvent] = {
    E.TERMINATED_OPERATOR: E.TERMINATED_OPERATOR,
    E.TERMINATED_PRESSURE: E.TERMINATED_PRESSURE,
    E.TERMINATED_FLOW: E.TERMINATED_FLOW,
    E.TERMINATED_EXCESSIVE_PAUSE: E.TERMINATED_EXCESSIVE_PAUSE,
    E.TERMINATED_COMM_LOSS: E.TERMINATED_COMM_LOSS,
    E.TERMINATED_INJECTOR_FAILURE: E.TERMINATED_INJECTOR_FAILURE,
    E.TERMINATED_AIR: E.TERMINATED_AIR,
    E.AIR_DETECTED: E.TERMINATED_AIR,
    E.TERMINATED_BY_SCANNER: E.TERMINATED_BY_SCANNER,
    E.TERMINATED_CONSUMABLE_REMOVAL: E.TERMINATED_CONSUMABLE_REMOVAL,
    E.SYRINGE_DETACHED: E.TERMINATED_CONSUMABLE_REMOVAL,
    E.TERMINATED_HOLD_TIMEOUT: E.TERMINATED_HOLD_TIMEOUT,
    E.EQUIPMENT_FAILURE: E.TERMINATED_INJECTOR_FAILURE,
}

_UNIT_ML = {"UL": 0.001, "ML": 1.0}
_RATE_ML_MIN = {"UM": 0.001, "MM": 1.0, "UH": 0.001 / 60, "MH": 1.0 / 60}
_NUMBER_UNIT = re.compile(r"(?P<number>[\d.]+)(?P<unit>[A-Z]{2})")
_DIS = re.compile(r"I(?P<infused>[\d.]+)W(?P<withdrawn>[\d.]+)(?P<unit>UL|ML)")


def parse_rate_ml_min(data: str) -> float:
    """``"300.0UM"`` → 0.3."""
    m = _NUMBER_UNIT.fullmatch(data)
    if m is None or m["unit"] not in _RATE_ML_MIN:
        raise DeviceRefusedError(f"not a rate: {data!r}")
    return parse_number(m["number"]) * _RATE_ML_MIN[m["unit"]]


def parse_infused_ml(data: str) -> float:
    """``DIS`` reply ``"I0.020W0.000ML"`` → 0.02 (infused)."""
    m = _DIS.fullmatch(data)
    if m is None:
        raise DeviceRefusedError(f"not a DIS reply: {data!r}")
    return parse_number(m["infused"]) * _UNIT_ML[m["unit"]]


@dataclass
class _Injection:
    target_ml: float
    rate_ml_min: float
    started_s: float
    status: InjectionStatus
    supervisor: DeliverySupervisor
    polled_s: float  # when the infusing time was last counted
    delivered_ml: float = 0.0
    pressure_kpa: float | None = None
    baseline_kpa: float | None = None
    baseline_samples: list[float] | None = None
    peak_kpa: float = 0.0
    drop_polls: int = 0  # consecutive polls showing the extravasation drop
    warned: bool = False
    adjusted: bool = False
    hold_started_s: float | None = None
    #: Events recorded during this injection (the device may report what the driver also sees).
    recorded: set[InjectorEvent] = field(default_factory=set)


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
        self.limits = limits or InjectorLimits()
        self.timing = timing or LinkTiming()
        self.info: DeviceInfo | None = None
        self._link: Link | None = None
        self._lock = threading.RLock()
        self._state = S.NOT_READY
        self._reason = ""
        self._fault_report: InjectorFault | None = None
        self._events: list[RecordedEvent] = []
        self._subscribers: list[Callable[[RecordedEvent], None]] = []
        self._config: _Configuration | None = None
        self._injection: _Injection | None = None
        self._last_result: InjectionResult | None = None
        self._unconfirmed: _Injection | None = None  # aborted with the link dead
        self._session_delivered_ml = 0.0
        self._armed_until_s = 0.0
        self._announced: set[Alarm] = set()
        self._handshaking = False
        self._aborting = False
        self._stop_requested = False
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._monitor: threading.Thread | None = None
        self._closed = False

    # ---------------------------------------------------------------- introspection

    @property
    def link(self) -> Link:
        if self._link is None:
            raise StateError("the injector is not connected")
        return self._link

    @property
    def state(self) -> InjectorState:
        return self._state

    @property
    def reason(self) -> str:
        """Why the injector is in ERROR (empty otherwise)."""
        return self._reason

    @property
    def fault(self) -> InjectorFault | None:
        """Why the injector is in ERROR, with the CID 71 event and the last figures."""
        return self._fault_report

    @property
    def link_up(self) -> bool:
        link = self._link
        return link is not None and not link.lost

    @property
    def session_delivered_ml(self) -> float:
        return self._session_delivered_ml

    @property
    def last_result(self) -> InjectionResult | None:
        return self._last_result

    def new_session(self, given_ml: float = 0.0) -> None:
        """A new exam: the per-exam cap counts from ``given_ml`` again. Refused while an
        injection is armed or running (it belongs to the exam in progress)."""
        if given_ml < 0:
            raise LimitError("the volume already given cannot be negative")
        with self._lock:
            if self._state in (S.ARMED, S.INJECTING, S.HOLD):
                raise StateError(f"an injection is {self._state.value}: the exam is not over")
            self._session_delivered_ml = given_ml

    @property
    def events(self) -> list[RecordedEvent]:
        return list(self._events)  # a copy; appends happen under the lock

    def subscribe(self, callback: Callable[[RecordedEvent], None]) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

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
        inj, config, state = self._injection, self._config, self._state
        if inj is None:
            rate = config.rate_ml_min if config else 0.0
            target = config.volume_ml if config else 0.0
            return Progress(state, 0.0, target, None, None, rate, 0.0)
        return Progress(
            state,
            inj.delivered_ml,
            inj.target_ml,
            inj.pressure_kpa,
            inj.baseline_kpa,
            inj.rate_ml_min,
            time.monotonic() - inj.started_s,
        )

    # ---------------------------------------------------------------- connect / close

    def connect(self) -> DeviceInfo:
        """Open the link, acknowledge the power-up reset alarm, switch to Safe mode (``SAF n``),
        read ``VER`` and detect the extension commands (injector-protocol.md §4)."""
        with self._lock:
            if self._link is not None:
                raise StateError("already connected")
            if self._closed:
                raise StateError("the driver is closed")
            self._link = Link(
                self.url,
                baud=self.baud,
                address=self.address,
                timing=self.timing,
                on_event=self._wakeup.set,
            )
            try:
                self._handshake()
                self.info = self._detect()
            except BaseException:
                self._link.close()
                self._link = None
                raise
            self._monitor = threading.Thread(target=self._monitor_loop, name="injector-monitor")
            self._monitor.daemon = True
            self._monitor.start()
            if self.info.is_plain_pump:
                log.warning(
                    "%s: injection will be refused (no %s)",
                    self.info.version,
                    ", no ".join(self.info.missing),
                )
            log.info("%s", self.describe())
            return self.info

    def _handshake(self) -> None:
        """``SAF n`` until accepted: the first command after an alarm (the power-up ``R``) is
        answered ``A?x`` and not executed; a Safe-framed SAF is accepted in Basic mode."""
        link = self.link
        self._handshaking = True
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
                self._send_stop()
            self._drain_link_events()
        finally:
            self._handshaking = False
            self._announced.clear()

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
        return DeviceInfo(
            version=version.data,
            address=self.address,
            has_pressure=known("XPR", Shape.NUMBER),
            has_arming=known("XDA", Shape.STATUS),
            has_hold=known("XRS", Shape.STATUS),
            has_event_queue=known("XEV", Shape.EVENT),
        )

    def close(self) -> None:
        """Stop the motor if an injection runs, then release the monitor and the port."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._state in (S.INJECTING, S.HOLD) and self._link is not None:
                self._abort(T.OPERATOR_STOP, E.TERMINATED_OPERATOR, "driver closed")
        self._closing.set()
        self._wakeup.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5 * self.timing.reply_timeout_s)
        if self._link is not None:
            self._link.close()

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
        remaining = lim.max_volume_per_session_ml - self._session_delivered_ml
        if volume_ml > remaining + 1e-9:
            raise LimitError(
                f"volume {volume_ml} mL exceeds the {remaining:.3f} mL left of the "
                f"{lim.max_volume_per_session_ml} mL allowed per exam"
            )

    def configure(self, syringe: str, rate_ml_min: float, volume_ml: float) -> None:
        """Syringe diameter, direction, rate and volume, each set and read back."""
        self.check_limits(syringe, rate_ml_min, volume_ml)
        with self._lock:
            target = next_state(T.CONFIGURE, self._state)
            config = _Configuration(syringe, rate_ml_min, volume_ml)
            self._apply(config)
            self._config = config
            self._go(T.CONFIGURE, target)
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
        self._set("DIA", diameter, "DIA", Shape.NUMBER, lambda r: same_number(diameter, r.data))
        self._set(
            "RAT", rate.number + rate.unit, "RAT", Shape.NUMBER_UNIT, lambda r: rate.matches(r.data)
        )
        unit = volume.unit
        self._set("VOL", unit, "VOL", Shape.NUMBER_UNIT, lambda r: r.data.endswith(unit))
        self._set("VOL", volume.number, "VOL", Shape.NUMBER_UNIT, lambda r: volume.matches(r.data))

    def arm(self) -> None:
        """Check the device is idle with no alarm, clear its delivered counter and set the
        direction to infuse (both read back), program the pressure limits and arm (``XAR``).
        The next ``RUN`` checks the counter and the direction again."""
        with self._lock:
            target = next_state(T.ARM, self._state)
            self._require_injector_capabilities()
            if self._config is None:  # pragma: no cover - READY implies configured
                raise StateError("configure the injector first")
            self.check_limits(
                self._config.syringe, self._config.rate_ml_min, self._config.volume_ml
            )
            self._expect_idle()
            self._set("CLD", "INF", "DIS", Shape.DIS, lambda r: parse_infused_ml(r.data) == 0)
            self._set("DIR", "INF", "DIR", Shape.WORD, lambda r: r.data == "INF")
            self._program_pressure_limits()
            reply = self.link.execute("XAR", done=lambda: False)
            if reply is not None:
                self._checked(reply, "XAR")
            self._armed_until_s = time.monotonic() + self.limits.arm_timeout_s
            self._go(T.ARM, target)

    def disarm(self) -> None:
        with self._lock:
            target = next_state(T.DISARM, self._state)
            reply = self.link.execute("XDA", done=lambda: False)
            if reply is not None:
                self._checked(reply, "XDA")
            self._go(T.DISARM, target)

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

        self._set("XPL", args, "XPL", Shape.LIMITS, holds)

    # ---------------------------------------------------------------- start / hold / stop

    def start(self) -> InjectionStatus:
        """``RUN`` the armed injection. ``RUN`` is never re-sent without a status check."""
        with self._lock:
            target = next_state(T.START, self._state)
            assert self._config is not None
            cfg = self._config
            try:  # everything before RUN: a failure here means nothing began
                self._require_injector_capabilities()
                self.check_limits(cfg.syringe, cfg.rate_ml_min, cfg.volume_ml)
                if time.monotonic() > self._armed_until_s:
                    self._go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._state))
                    raise NotStartedError("arming lapsed before start; arm again")
                self._check_ready_to_run()
            except NotStartedError:
                raise
            except DriverError as exc:
                raise NotStartedError(f"not started (RUN never sent): {exc}") from exc
            self._stop_requested = False
            try:
                reply = self.link.execute("RUN", done=self._run_happened)
            except DriverError as exc:
                # Whether RUN was executed is unknown: stop it in case, then report.
                self._stop_requested = True
                with contextlib.suppress(DriverError):
                    self._send_stop()
                reason = f"RUN unconfirmed: {exc}"
                self._fault(E.TERMINATED_COMM_LOSS, reason, E.TERMINATED_COMM_LOSS)
                raise
            if reply is not None and reply.error is ReplyError.NOT_APPLICABLE:
                self._go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._state))
                raise NotStartedError("the injector refused RUN (?NA): it is not armed any more")
            if reply is not None:
                self._checked(reply, "RUN")
            status = InjectionStatus()
            now = time.monotonic()
            supervisor = DeliverySupervisor(
                cfg.volume_ml, cfg.rate_ml_min, grace_s=self.limits.baseline_window_s
            )
            self._injection = _Injection(
                cfg.volume_ml,
                cfg.rate_ml_min,
                now,
                status,
                supervisor,
                polled_s=now,
                baseline_samples=[],
            )
            self._go(T.START, target)
            self._wakeup.set()
            return status

    def _check_ready_to_run(self) -> None:
        """Right before ``RUN``: the counter reads 0 infused and the direction is infuse (both
        set at ``arm()``). A stale counter would blind the over-delivery and overtime bounds;
        a withdraw left from a purge would aspirate from the duct."""
        infused = self._read_infused()
        if infused != 0:
            raise NotStartedError(f"the delivered counter reads {infused:.3f} mL, not 0")
        reply = self._checked(self.link.query("DIR", Shape.WORD), "DIR")
        if reply.data != "INF":
            raise NotStartedError(f"the direction is {reply.data}, not INF")

    def _run_happened(self) -> bool:
        """The status check before any second RUN: moving, held, or something delivered."""
        reply = self.link.status()
        if reply.alarm is not None:
            return True  # an alarm is pending: never RUN again; the monitor reports it
        if reply.prompt in (Prompt.INFUSING, Prompt.PAUSED, Prompt.TIMED_PAUSE):
            return True
        return self._read_infused() > 0

    def hold(self) -> None:
        """Manual hold (``XHD``): the plunger stops, the injection can resume."""
        with self._lock:
            target = next_state(T.HOLD, self._state)
            if self.info is None or not self.info.has_hold:
                raise CapabilityError("this injector has no hold/resume (XHD/XRS)")
            reply = self.link.execute("XHD", done=lambda: self._prompt_is(Prompt.PAUSED))
            if reply is not None:
                self._checked(reply, "XHD")
            assert self._injection is not None
            self._injection.hold_started_s = time.monotonic()
            self._go(T.HOLD, target)
            self._record(E.MANUAL_HOLD, "driver", "operator hold")

    def resume(self) -> None:
        with self._lock:
            target = next_state(T.RESUME, self._state)
            reply = self.link.execute("XRS", done=lambda: self._prompt_is(Prompt.INFUSING))
            if reply is not None:
                self._checked(reply, "XRS")
            assert self._injection is not None
            self._injection.hold_started_s = None
            self._go(T.RESUME, target)
            self._record(E.MANUAL_RESUME, "driver", "operator resume")

    def stop(self, reason: str = "operator stop") -> None:
        """Send ``STP`` at once (whatever the state), then report the injection aborted."""
        self._stop_requested = True
        stop_error: DriverError | None = None
        try:
            self._send_stop()
        except DriverError as exc:
            stop_error = exc
        with self._lock:
            if self._aborting:
                pass  # called back from inside an abort (an event subscriber): it is ending
            elif self._state in (S.INJECTING, S.HOLD) and stop_error is not None:
                # A STOP that could not be sent is not a stop: unconfirmed, a fault; the pump's
                # watchdog stops it, and its counter is read back when the link returns.
                self._abort(
                    T.FAULT,
                    E.TERMINATED_COMM_LOSS,
                    f"{reason} not confirmed: {stop_error}",
                    stop_error=stop_error,
                )
            elif self._state in (S.INJECTING, S.HOLD):
                self._abort(T.OPERATOR_STOP, E.TERMINATED_OPERATOR, reason, stopped=True)
            elif self._state is S.ARMED:
                self._go(T.DISARM, next_state(T.DISARM, self._state))
        if stop_error is not None:
            raise stop_error

    def _send_stop(self) -> None:
        """``STP`` is idempotent: re-sent without a status check until the device confirms it.

        A stop is worth every attempt: they go on for as long as the device's own watchdog
        (``SAF``) would take to stop the motor anyway, then the last error is raised.
        """
        deadline = time.monotonic() + self.limits.safe_timeout_s
        while True:
            try:
                reply = self.link.execute("STP", done=lambda: False)
                if reply is not None and reply.alarm is not None:
                    # Not executed (an alarm was pending): it is now acknowledged, send again.
                    self.link.execute("STP", done=lambda: False)
                return
            except LinkLostError:
                raise
            except DriverError:
                if time.monotonic() >= deadline:
                    raise
                log.warning("injector: STP not confirmed yet, sending it again")

    def acknowledge(self, url: str | None = None) -> None:
        """Leave ERROR: reopen the link if it was lost, redo the Safe-mode handshake (which
        acknowledges any pending alarm) and re-apply the last configuration."""
        with self._lock:
            next_state(T.ACKNOWLEDGE, self._state)
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
                self._go(T.ACKNOWLEDGE, next_state(T.ACKNOWLEDGE, self._state))
            else:
                trigger = T.ACKNOWLEDGE_UNCONFIGURED
                self._go(trigger, next_state(trigger, self._state))
            self._reason = ""
            self._fault_report = None

    def _read_back_unconfirmed(self) -> None:
        """An injection aborted while the link was dead reported the last polled volume; the
        pump ran on until its watchdog stopped it. Now that the link is back, its counter
        (``DIS``, cleared before the run and kept across the watchdog stop) says what was really
        given: the result (now confirmed) and the per-exam total are corrected upward, never
        down."""
        inj, result = self._unconfirmed, self._last_result
        if inj is None or result is None:
            return
        try:
            given = self._read_infused()
        except DriverError as exc:  # kept for the next acknowledgement
            log.error("delivered volume after the link loss not read back: %s", exc)
            return
        self._unconfirmed = None
        extra = given - result.delivered_ml
        if extra <= VOLUME_RESOLUTION_ML:
            self._last_result = replace(result, confirmed=True)
            return
        self._session_delivered_ml += extra
        self._last_result = replace(result, delivered_ml=given, confirmed=True)
        log.warning(
            "injector: %.3f mL were given, not the %.3f mL last polled before the link was lost",
            given,
            result.delivered_ml,
        )

    # ---------------------------------------------------------------- helpers (under _lock)

    def _go(self, trigger: Trigger, target: InjectorState) -> None:
        before = self._state
        if TRANSITIONS.get((trigger, before)) is not target:
            raise StateError(f"internal: {trigger.value} from {before.value} to {target.value}")
        self._state = target
        log.info("injector %s -> %s (%s)", before.value, target.value, trigger.value)

    def _record(self, event: InjectorEvent, source: str, detail: str = "") -> None:
        recorded = RecordedEvent(event, datetime.now(UTC), time.monotonic(), source, detail)
        self._events.append(recorded)
        if self._injection is not None and self._state in (S.INJECTING, S.HOLD):
            self._injection.recorded.add(event)
        log.info("injector event %s %s (%s)", event.code, event.meaning, detail or source)
        for callback in list(self._subscribers):
            try:
                callback(recorded)
            except Exception:
                log.exception("injector event subscriber failed")

    def _checked(self, reply: Reply, what: str) -> Reply:
        """Raise for a refusal; an alarm reply is handled (recorded, state) before raising."""
        if reply.alarm is not None:
            self._drain_link_events()
            raise DeviceRefusedError(
                f"{what} not executed: the injector reports alarm A?{reply.alarm.value} "
                f"({ALARMS[reply.alarm].text})"
            )
        if reply.error is ReplyError.OUT_OF_RANGE:
            raise LimitError(f"the injector refused {what}: out of range (?OOR)")
        if reply.error is ReplyError.NOT_APPLICABLE:
            raise StateError(f"the injector refused {what} now (?NA)")
        if reply.error is ReplyError.UNKNOWN_COMMAND:
            raise CapabilityError(f"the injector does not know {what}")
        if reply.error is not None:
            raise DeviceRefusedError(f"the injector refused {what} ({reply.error.value})")
        return reply

    def _set(
        self,
        name: str,
        args: str,
        query: str,
        shape: Shape,
        holds: Callable[[Reply], bool],
    ) -> None:
        """A set command, read back afterwards; re-sent only if the read-back differs."""
        link = self.link

        def readback() -> bool:
            reply = link.query(query, shape)
            return reply.alarm is None and reply.error is None and holds(reply)

        reply = link.set(name, args, readback=readback)
        if reply is not None:
            self._checked(reply, f"{name} {args}")
        if not readback():
            raise DeviceRefusedError(f"{name} {args}: the read-back does not match")

    def _expect_idle(self) -> None:
        reply = self.link.status()
        self._checked(reply, "status")
        if reply.prompt is not Prompt.STOPPED:
            raise StateError(f"the injector is not stopped (prompt {reply.prompt})")

    def _prompt_is(self, prompt: Prompt) -> bool:
        return self.link.status().prompt is prompt

    def _read_infused(self) -> float:
        reply = self.link.query("DIS", Shape.DIS)
        self._checked(reply, "DIS")
        return parse_infused_ml(reply.data)

    # ---------------------------------------------------------------- faults

    def _abort(
        self,
        trigger: Trigger,
        termination: InjectorEvent,
        reason: str,
        *,
        stopped: bool = False,
        stop_error: DriverError | None = None,
        at_least_ml: float = 0.0,
    ) -> None:
        """Rule 4: STP first (unless already sent, or already failed: ``stop_error``), then
        ABORTED(reason), then ERROR. ``at_least_ml``: a floor for the volume recorded when the
        pump's counter is not to be trusted (overtime)."""
        self._aborting = True
        try:
            self._abort_stopping(
                trigger,
                termination,
                reason,
                stopped=stopped,
                stop_error=stop_error,
                at_least_ml=at_least_ml,
            )
        finally:
            self._aborting = False

    def _abort_stopping(
        self,
        trigger: Trigger,
        termination: InjectorEvent,
        reason: str,
        *,
        stopped: bool,
        stop_error: DriverError | None,
        at_least_ml: float,
    ) -> None:
        self._stop_requested = True
        if not stopped and stop_error is None:
            try:
                self._send_stop()
            except DriverError as exc:
                stop_error = exc
        link_dead = stop_error is not None
        if link_dead:
            log.error(
                "injector: STP could not be confirmed (%s); the device watchdog stops it within "
                "%s s",
                stop_error,
                self.limits.safe_timeout_s,
            )
        inj = self._injection
        delivered = inj.delivered_ml if inj is not None else 0.0
        confirmed = not link_dead
        if not link_dead and self.info is not None and self.info.has_event_queue:
            try:  # what the device recorded on its side (e.g. the limits it crossed)
                self._pop_device_events()
            except DriverError as exc:
                log.warning("device events after the stop not read: %s", exc)
        if inj is not None:
            if not link_dead:
                try:
                    delivered = max(delivered, self._read_infused())
                except DriverError as exc:
                    log.warning("delivered volume after the stop not read: %s", exc)
                    confirmed = False
            delivered = max(delivered, at_least_ml)
            inj.delivered_ml = delivered
            if not confirmed:
                self._unconfirmed = inj  # read back when the link returns (acknowledge)
            self._session_delivered_ml += delivered
        if inj is None or termination not in inj.recorded:
            self._record(termination, "driver", reason)
        self._go(trigger, next_state(trigger, self._state))
        self._reason = reason
        self._fault_report = InjectorFault(
            termination,
            reason,
            datetime.now(UTC),
            delivered_ml=delivered if inj is not None else None,
            pressure_kpa=inj.pressure_kpa if inj is not None else None,
        )
        result = InjectionResult(False, delivered, reason, termination, confirmed=confirmed)
        self._last_result = result
        self._go(T.REPORTED, next_state(T.REPORTED, self._state))
        if inj is not None:
            inj.status.set_finished(result)
        log.warning("injection aborted: %s (%.3f mL delivered)", reason, delivered)

    def _fault(
        self, termination: InjectorEvent, reason: str, idle_event: InjectorEvent | None = None
    ) -> None:
        """A fault: abort a running injection (recording ``termination``), otherwise record
        ``idle_event`` (if any) and go to ERROR."""
        if self._aborting:
            log.warning("injector fault while stopping: %s", reason)
            return
        if self._state in (S.INJECTING, S.HOLD):
            self._abort(T.FAULT, termination, reason)
            return
        if idle_event is not None:
            self._record(idle_event, "driver", reason)
        if self._state is not S.ERROR or not self._reason:
            self._go(T.FAULT, next_state(T.FAULT, self._state))
            self._reason = reason
            # The event just recorded for it (the alarm's, or idle_event), else the termination.
            event = self._events[-1].event if self._events else termination
            self._fault_report = InjectorFault(event, reason, datetime.now(UTC))
            log.warning("injector fault: %s", reason)

    def _drain_link_events(self) -> None:
        link = self._link
        if link is None:
            return
        while True:
            try:
                event = link.events.get_nowait()
            except queue.Empty:
                return
            if event.kind is LinkEventKind.LOST:
                self._fault(
                    E.TERMINATED_COMM_LOSS,
                    f"injector link lost: {event.detail}",
                    idle_event=E.EQUIPMENT_FAILURE,
                )
                continue
            assert event.reply is not None and event.reply.alarm is not None
            self._on_alarm(event.reply.alarm, solicited=event.solicited)

    def _on_alarm(self, alarm: Alarm, *, solicited: bool) -> None:
        if self._handshaking:
            return
        if solicited and alarm in self._announced:
            self._announced.discard(alarm)  # the acknowledgement of an Auto-Alarm seen before
            return
        if not solicited:
            if alarm in self._announced:
                return  # the device repeats its Auto-Alarm
            self._announced.add(alarm)
        meaning = ALARMS[alarm]
        delivering = self._state in (S.INJECTING, S.HOLD)
        if not delivering or meaning.event is not meaning.termination:
            self._record(meaning.event, "alarm", f"A?{alarm.value} {meaning.text}")
        self._fault(meaning.termination, meaning.text)

    # ---------------------------------------------------------------- the monitor thread

    def _monitor_loop(self) -> None:
        next_poll = time.monotonic()
        while not self._closing.is_set():
            self._wakeup.wait(max(0.0, next_poll - time.monotonic()))
            self._wakeup.clear()
            if self._closing.is_set():
                return
            try:
                with self._lock:
                    if self._closed:
                        return
                    self._drain_link_events()
                    now = time.monotonic()
                    if now >= next_poll:
                        self._poll()
                        next_poll = time.monotonic() + self.limits.heartbeat_s
            except Exception:
                log.exception("injector monitor cycle failed")
                next_poll = time.monotonic() + self.limits.heartbeat_s

    def _poll(self) -> None:
        """One heartbeat: status (all states), and while delivering DIS, XPR and XEV."""
        link = self._link
        if link is None or link.lost:
            return
        try:
            reply = link.status()
            if reply.alarm is not None:
                self._drain_link_events()
                return
            self._drain_link_events()
            if self._state is S.ARMED and time.monotonic() > self._armed_until_s:
                self._disarm_on_timeout()
            if self._state in (S.INJECTING, S.HOLD) and not self._stop_requested:
                self._poll_injection(reply)
            elif self.info is not None and self.info.has_event_queue:
                self._pop_device_events()
        except LinkLostError:
            self._drain_link_events()
        except DriverTimeoutError as exc:
            self._fault(
                E.TERMINATED_COMM_LOSS,
                f"injector not answering: {exc}",
                idle_event=E.EQUIPMENT_FAILURE,
            )

    def _disarm_on_timeout(self) -> None:
        try:
            self.link.execute("XDA", done=lambda: False)
        except DriverError as exc:
            log.warning("XDA after the arm timeout: %s", exc)
        self._go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._state))
        log.info("arming lapsed after %s s", self.limits.arm_timeout_s)

    def _pop_device_events(self, limit: int = 8) -> list[InjectorEvent]:
        popped: list[InjectorEvent] = []
        for _ in range(limit):
            reply = self.link.query("XEV", Shape.EVENT)
            if reply.alarm is not None:
                self._drain_link_events()
                break
            if reply.error is not None or not reply.data:
                break
            code, _, ms = reply.data.partition(",")
            try:
                event = InjectorEvent.from_code(code)
            except ValueError:
                log.warning("injector reported unknown event code %s", code)
                continue
            self._record(event, "device", f"device time {ms} ms")
            popped.append(event)
        return popped

    def _poll_injection(self, status: Reply) -> None:
        """One poll of a running injection. The delivery bounds come first, each checked as
        soon as its figure is known (the time after the status, the volume after ``DIS``): a
        crossing puts ``STP`` on the wire ahead of the rest of the poll."""
        inj = self._injection
        assert inj is not None
        link = self.link
        if self._supervise_time(inj, infusing=status.prompt is Prompt.INFUSING):
            return
        dis = link.query("DIS", Shape.DIS)
        if dis.alarm is not None:
            self._drain_link_events()
            return
        if dis.error is None:
            inj.delivered_ml = parse_infused_ml(dis.data)
            if inj.supervisor.over_delivered(inj.delivered_ml):
                self._abort(T.FAULT, E.TERMINATED_INJECTOR_FAILURE, OVER_DELIVERY)
                return
        if inj.adjusted or E.PRESSURE_ADJUSTMENT in inj.recorded:
            # Adaptive flow: the pump lowered its rate; the overtime bound counts with the
            # rate in force.
            rate = link.query("RAT", Shape.NUMBER_UNIT)
            if rate.alarm is not None:
                self._drain_link_events()
                return
            if rate.error is None:
                inj.rate_ml_min = inj.supervisor.rate_ml_min = parse_rate_ml_min(rate.data)
        pressure = link.query("XPR", Shape.NUMBER)
        if pressure.alarm is not None:
            self._drain_link_events()
            return
        if pressure.error is None and pressure.data:
            inj.pressure_kpa = parse_number(pressure.data)
        events = self._pop_device_events() if self.info and self.info.has_event_queue else []
        if self._state not in (S.INJECTING, S.HOLD) or self._stop_requested:
            return  # an alarm has ended the injection, or stop() is ending it
        for event in events:
            if event in TERMINATING_EVENTS:
                self._abort(T.FAULT, TERMINATING_EVENTS[event], f"injector: {event.meaning}")
                return
        if self._check_pressure(inj, infusing=status.prompt is Prompt.INFUSING):
            return
        if self._state is S.HOLD:
            assert inj.hold_started_s is not None
            if time.monotonic() - inj.hold_started_s > self.limits.max_hold_s:
                self._abort(
                    T.HOLD_TIMEOUT,
                    E.TERMINATED_HOLD_TIMEOUT,
                    f"hold longer than {self.limits.max_hold_s} s",
                )
            return
        prompt = status.prompt
        if prompt in (Prompt.PAUSED, Prompt.TIMED_PAUSE):
            inj.hold_started_s = time.monotonic()
            self._go(T.HOLD, next_state(T.HOLD, self._state))
            self._record(E.PROGRAMMED_HOLD, "driver", "the injector paused")
            return
        if prompt is Prompt.STOPPED:
            self._finish_stopped(inj)

    def _supervise_time(self, inj: _Injection, *, infusing: bool) -> bool:
        """Count the time since the last poll as infusing time when it was (not held); stop an
        injection past its overtime bound. True if it was aborted. The pump's counter is not
        trusted then: the volume recorded is at least what the motor was commanded to give."""
        now = time.monotonic()
        elapsed_s, inj.polled_s = now - inj.polled_s, now
        if self._state is not S.INJECTING or not infusing:
            return False
        inj.supervisor.infused_for(elapsed_s)
        if not inj.supervisor.overtime:
            return False
        floor = inj.supervisor.expected_ml
        self._abort(T.FAULT, E.TERMINATED_INJECTOR_FAILURE, OVERTIME, at_least_ml=floor)
        return True

    def _finish_stopped(self, inj: _Injection) -> None:
        """The device stopped by itself: completed if the volume is in, else a failure."""
        if inj.delivered_ml + self.limits.volume_tolerance_ml >= inj.target_ml:
            self._session_delivered_ml += inj.delivered_ml
            result = InjectionResult(True, inj.delivered_ml, "volume reached", E.COMPLETE)
            self._last_result = result
            if E.COMPLETE not in inj.recorded:
                self._record(E.COMPLETE, "driver", f"{inj.delivered_ml:.3f} mL delivered")
            self._go(T.VOLUME_REACHED, next_state(T.VOLUME_REACHED, self._state))
            inj.status.set_finished(result)
            return
        self._abort(
            T.FAULT,
            E.TERMINATED_INJECTOR_FAILURE,
            f"the injector stopped early: {inj.delivered_ml:.3f} of {inj.target_ml:.3f} mL",
        )

    def _check_pressure(self, inj: _Injection, *, infusing: bool) -> bool:
        """Watch the pressure ourselves too; True if the injection was aborted.

        Above the ceiling or the termination limit: stop. A fall of ``extravasation_drop_kpa``
        below the run's peak while infusing at the set rate (no hold, no adaptive flow since
        the peak): suspected extravasation, stop."""
        pressure = inj.pressure_kpa
        if pressure is None:
            return False
        lim = self.limits
        if pressure >= lim.pressure_ceiling_kpa:
            self._abort(
                T.FAULT,
                E.TERMINATED_PRESSURE,
                f"pressure {pressure:.0f} kPa at the {lim.pressure_ceiling_kpa:.0f} kPa ceiling",
            )
            return True
        if inj.baseline_kpa is None:
            assert inj.baseline_samples is not None
            inj.baseline_samples.append(pressure)
            if time.monotonic() - inj.started_s >= lim.baseline_window_s:
                inj.baseline_kpa = statistics.median(inj.baseline_samples)
            return False
        rise = pressure - inj.baseline_kpa
        if not infusing or inj.adjusted or self._state is S.HOLD:
            inj.peak_kpa = pressure  # flow changed: the peak is measured afresh
            inj.drop_polls = 0
        elif inj.peak_kpa - pressure < lim.extravasation_drop_kpa:
            inj.drop_polls = 0
        else:
            # Confirmed by the next poll, whose status query is sent after this reading:
            # a run that ended between the status and the XPR reading is not a drop.
            inj.drop_polls += 1
            if inj.drop_polls < 2:
                return False
            self._abort(
                T.FAULT,
                E.TERMINATED_INJECTOR_FAILURE,
                f"suspected extravasation: pressure fell from {inj.peak_kpa:.0f} to "
                f"{pressure:.0f} kPa while infusing",
            )
            return True
        inj.peak_kpa = max(inj.peak_kpa, pressure)
        if rise >= lim.pressure_termination_kpa:
            self._abort(
                T.FAULT,
                E.TERMINATED_PRESSURE,
                f"pressure {pressure:.0f} kPa, {rise:.0f} kPa above the baseline",
            )
            return True
        if rise >= lim.pressure_adjustment_kpa and not inj.adjusted:
            inj.adjusted = True
            self._record(E.PRESSURE_ADJUSTMENT, "driver", f"{pressure:.0f} kPa")
        elif rise >= lim.pressure_warning_kpa and not inj.warned:
            inj.warned = True
            self._record(E.PRESSURE_WARNING, "driver", f"{pressure:.0f} kPa")
        return False
