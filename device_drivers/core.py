"""The injector driver's state, its event record and its faults: what the API and the monitor share.

:class:`DriverCore` is one driver's mutable state (the state of the machine of
:mod:`device_drivers.states`, the running :class:`Injection`, the events recorded, the per-exam
total) and the operations both :class:`~device_drivers.driver.NewEraInjector` (the commands) and
:class:`~device_drivers.monitor.InjectionMonitor` (the heartbeat) perform on it: a transition,
an event recorded and told to the subscribers, a reply checked, a set read back, the ``STP``
that is worth every attempt, and the abort (rule 4: ``STP`` first, then ABORTED, then ERROR).
Every method runs under :attr:`DriverCore.lock`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from device_drivers.base import (
    DeviceInfo,
    InjectionResult,
    InjectionStatus,
    InjectorFault,
    InjectorState,
    Progress,
    RecordedEvent,
)
from device_drivers.codec import Alarm, Prompt, Reply, ReplyError, parse_infused_ml
from device_drivers.errors import (
    CapabilityError,
    DeviceRefusedError,
    DriverError,
    LimitError,
    LinkLostError,
    StateError,
)
from device_drivers.events import InjectorEvent
from device_drivers.limits import InjectorLimits
from device_drivers.link import Link, LinkEventKind, Shape
from device_drivers.states import ALARMS, TRANSITIONS, Trigger, next_state
from device_drivers.supervision import DeliverySupervisor

log = logging.getLogger(__name__)

S = InjectorState
E = InjectorEvent
T = Trigger


@dataclass
class Injection:
    """The injection running: what it was asked, what the polls saw, what was recorded."""

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

    def progress(self, state: InjectorState) -> Progress:
        """What the last poll read of this injection, the driver being in ``state``."""
        return Progress(
            state,
            self.delivered_ml,
            self.target_ml,
            self.pressure_kpa,
            self.baseline_kpa,
            self.rate_ml_min,
            time.monotonic() - self.started_s,
        )


class DriverCore:
    """One driver's shared state and the operations on it (see the module docstring)."""

    def __init__(self, limits: InjectorLimits) -> None:
        self.limits = limits
        self.lock = threading.RLock()
        self.current_link: Link | None = None
        self.info: DeviceInfo | None = None
        self.state = S.NOT_READY
        self.reason = ""  #: why the injector is in ERROR (empty otherwise)
        self.fault_report: InjectorFault | None = None
        self.events: list[RecordedEvent] = []
        self.subscribers: list[Callable[[RecordedEvent], None]] = []
        #: Told after every poll of a running injection (the console's live trace).
        self.progress_subscribers: list[Callable[[Progress], None]] = []
        self.injection: Injection | None = None
        self.last_result: InjectionResult | None = None
        self.unconfirmed: Injection | None = None  # aborted with the link dead
        self.session_delivered_ml = 0.0
        self.armed_until_s = 0.0
        self.announced: set[Alarm] = set()  # Auto-Alarms seen, not yet acknowledged
        self.handshaking = False
        self.aborting = False
        self.stop_requested = False
        self.closed = False
        #: Set to cut the monitor's wait short (a link event, an injection started).
        self.wakeup = threading.Event()

    @property
    def link(self) -> Link:
        if self.current_link is None:
            raise StateError("the injector is not connected")
        return self.current_link

    @property
    def delivering(self) -> bool:
        return self.state in (S.INJECTING, S.HOLD)

    def go(self, trigger: Trigger, target: InjectorState) -> None:
        before = self.state
        if TRANSITIONS.get((trigger, before)) is not target:
            raise StateError(f"internal: {trigger.value} from {before.value} to {target.value}")
        self.state = target
        log.info("injector %s -> %s (%s)", before.value, target.value, trigger.value)

    def record(self, event: InjectorEvent, source: str, detail: str = "") -> None:
        recorded = RecordedEvent(event, datetime.now(UTC), time.monotonic(), source, detail)
        self.events.append(recorded)
        if self.injection is not None and self.state in (S.INJECTING, S.HOLD):
            self.injection.recorded.add(event)
        log.info("injector event %s %s (%s)", event.code, event.meaning, detail or source)
        for callback in list(self.subscribers):
            try:
                callback(recorded)
            except Exception:
                log.exception("injector event subscriber failed")

    def publish_progress(self, inj: Injection) -> None:
        """Tell the progress subscribers what this poll of ``inj`` read (under the lock, on
        the monitor's thread: a subscriber only hands the figures on)."""
        progress = inj.progress(self.state)
        for callback in list(self.progress_subscribers):
            try:
                callback(progress)
            except Exception:
                log.exception("injector progress subscriber failed")

    def checked(self, reply: Reply, what: str) -> Reply:
        """Raise for a refusal; an alarm reply is handled (recorded, state) before raising."""
        if reply.alarm is not None:
            self.drain_link_events()
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

    def set(
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
            self.checked(reply, f"{name} {args}")
        if not readback():
            raise DeviceRefusedError(f"{name} {args}: the read-back does not match")

    def expect_idle(self) -> None:
        reply = self.link.status()
        self.checked(reply, "status")
        if reply.prompt is not Prompt.STOPPED:
            raise StateError(f"the injector is not stopped (prompt {reply.prompt})")

    def prompt_is(self, prompt: Prompt) -> bool:
        return self.link.status().prompt is prompt

    def read_infused(self) -> float:
        reply = self.link.query("DIS", Shape.DIS)
        self.checked(reply, "DIS")
        return parse_infused_ml(reply.data)

    def send_stop(self) -> None:
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

    def abort(
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
        self.aborting = True
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
            self.aborting = False

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
        self.stop_requested = True
        if not stopped and stop_error is None:
            try:
                self.send_stop()
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
        inj = self.injection
        delivered = inj.delivered_ml if inj is not None else 0.0
        confirmed = not link_dead
        if not link_dead and self.info is not None and self.info.has_event_queue:
            try:  # what the device recorded on its side (e.g. the limits it crossed)
                self.pop_device_events()
            except DriverError as exc:
                log.warning("device events after the stop not read: %s", exc)
        if inj is not None:
            if not link_dead:
                try:
                    delivered = max(delivered, self.read_infused())
                except DriverError as exc:
                    log.warning("delivered volume after the stop not read: %s", exc)
                    confirmed = False
            delivered = max(delivered, at_least_ml)
            inj.delivered_ml = delivered
            if not confirmed:
                self.unconfirmed = inj  # read back when the link returns (acknowledge)
            self.session_delivered_ml += delivered
        if inj is None or termination not in inj.recorded:
            self.record(termination, "driver", reason)
        self.go(trigger, next_state(trigger, self.state))
        self.reason = reason
        self.fault_report = InjectorFault(
            termination,
            reason,
            datetime.now(UTC),
            delivered_ml=delivered if inj is not None else None,
            pressure_kpa=inj.pressure_kpa if inj is not None else None,
        )
        result = InjectionResult(False, delivered, reason, termination, confirmed=confirmed)
        self.last_result = result
        self.go(T.REPORTED, next_state(T.REPORTED, self.state))
        if inj is not None:
            inj.status.set_finished(result)
        log.warning("injection aborted: %s (%.3f mL delivered)", reason, delivered)

    def fault(
        self, termination: InjectorEvent, reason: str, idle_event: InjectorEvent | None = None
    ) -> None:
        """A fault: abort a running injection (recording ``termination``), otherwise record
        ``idle_event`` (if any) and go to ERROR."""
        if self.aborting:
            log.warning("injector fault while stopping: %s", reason)
            return
        if self.state in (S.INJECTING, S.HOLD):
            self.abort(T.FAULT, termination, reason)
            return
        if idle_event is not None:
            self.record(idle_event, "driver", reason)
        if self.state is not S.ERROR or not self.reason:
            self.go(T.FAULT, next_state(T.FAULT, self.state))
            self.reason = reason
            # The event just recorded for it (the alarm's, or idle_event), else the termination.
            event = self.events[-1].event if self.events else termination
            self.fault_report = InjectorFault(event, reason, datetime.now(UTC))
            log.warning("injector fault: %s", reason)

    def drain_link_events(self) -> None:
        link = self.current_link
        if link is None:
            return
        while True:
            try:
                event = link.events.get_nowait()
            except queue.Empty:
                return
            if event.kind is LinkEventKind.LOST:
                self.fault(
                    E.TERMINATED_COMM_LOSS,
                    f"injector link lost: {event.detail}",
                    idle_event=E.EQUIPMENT_FAILURE,
                )
                continue
            assert event.reply is not None and event.reply.alarm is not None
            self.on_alarm(event.reply.alarm, solicited=event.solicited)

    def on_alarm(self, alarm: Alarm, *, solicited: bool) -> None:
        if self.handshaking:
            return
        if solicited and alarm in self.announced:
            self.announced.discard(alarm)  # the acknowledgement of an Auto-Alarm seen before
            return
        if not solicited:
            if alarm in self.announced:
                return  # the device repeats its Auto-Alarm
            self.announced.add(alarm)
        meaning = ALARMS[alarm]
        delivering = self.state in (S.INJECTING, S.HOLD)
        if not delivering or meaning.event is not meaning.termination:
            self.record(meaning.event, "alarm", f"A?{alarm.value} {meaning.text}")
        self.fault(meaning.termination, meaning.text)

    def pop_device_events(self, limit: int = 8) -> list[InjectorEvent]:
        popped: list[InjectorEvent] = []
        for _ in range(limit):
            reply = self.link.query("XEV", Shape.EVENT)
            if reply.alarm is not None:
                self.drain_link_events()
                break
            if reply.error is not None or not reply.data:
                break
            code, _, ms = reply.data.partition(",")
            try:
                event = InjectorEvent.from_code(code)
            except ValueError:
                log.warning("injector reported unknown event code %s", code)
                continue
            self.record(event, "device", f"device time {ms} ms")
            popped.append(event)
        return popped
