"""The injector driver's monitor: the heartbeat thread and the watch over a running injection.

:class:`InjectionMonitor` owns one thread. At least every ``SAF/2`` seconds (rule 1) it sends a
status query, whatever the state, so that the device's own watchdog stops it if the controller
dies; it reads the events the link routed (Auto-Alarms, a lost link) and, while armed, lapses
the arming after its timeout. While an injection runs it polls ``DIS``, ``RAT`` (under adaptive
flow), ``XPR`` and ``XEV`` and checks, each as soon as its figure is known, the delivery bounds
of :mod:`device_drivers.supervision` (overtime, over-delivery), the line pressure against the
limits relative to the baseline it measured, a suspected extravasation, the hold time, and a
device that stopped by itself (completed, or stopped early). Whatever it decides it does through
the :class:`~device_drivers.core.DriverCore` it shares with the driver, under its lock.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time

from device_drivers.base import InjectionResult, InjectorState
from device_drivers.codec import Prompt, Reply, parse_infused_ml, parse_number, parse_rate_ml_min
from device_drivers.core import DriverCore, Injection
from device_drivers.errors import DriverError, DriverTimeoutError, LinkLostError
from device_drivers.events import InjectorEvent
from device_drivers.link import Shape
from device_drivers.states import TERMINATING_EVENTS, Trigger, next_state
from device_drivers.supervision import OVER_DELIVERY, OVERTIME

log = logging.getLogger(__name__)

S = InjectorState
E = InjectorEvent
T = Trigger


class InjectionMonitor:
    """The heartbeat and the injection watch of one driver (see the module docstring)."""

    def __init__(self, core: DriverCore) -> None:
        self._core = core
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="injector-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float) -> None:
        """End the thread (and wait for it, unless called from it)."""
        self._closing.set()
        self._core.wakeup.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_s)

    def _run(self) -> None:
        next_poll = time.monotonic()
        while not self._closing.is_set():
            self._core.wakeup.wait(max(0.0, next_poll - time.monotonic()))
            self._core.wakeup.clear()
            if self._closing.is_set():
                return
            try:
                with self._core.lock:
                    if self._core.closed:
                        return
                    self._core.drain_link_events()
                    now = time.monotonic()
                    if now >= next_poll:
                        self._poll()
                        # At a fixed rate (the poll's own time does not stretch the period):
                        # the console's trace gets one sample per period. Behind by more than
                        # a period (a slow line), the next poll waits a whole period.
                        period = self._core.limits.heartbeat_s
                        after = time.monotonic()
                        next_poll = (
                            next_poll + period if next_poll + period > after else after + period
                        )
            except Exception:
                log.exception("injector monitor cycle failed")
                next_poll = time.monotonic() + self._core.limits.heartbeat_s

    def _poll(self) -> None:
        """One heartbeat: status (all states), and while delivering DIS, XPR and XEV."""
        link = self._core.current_link
        if link is None or link.lost:
            return
        try:
            reply = link.status()
            if reply.alarm is not None:
                self._core.drain_link_events()
                return
            self._core.drain_link_events()
            if self._core.state is S.ARMED and time.monotonic() > self._core.armed_until_s:
                self._disarm_on_timeout()
            if self._core.state in (S.INJECTING, S.HOLD) and not self._core.stop_requested:
                inj = self._core.injection
                assert inj is not None
                self._poll_injection(reply)
                self._core.publish_progress(inj)
            elif self._core.info is not None and self._core.info.has_event_queue:
                self._core.pop_device_events()
        except LinkLostError:
            self._core.drain_link_events()
        except DriverTimeoutError as exc:
            self._core.fault(
                E.TERMINATED_COMM_LOSS,
                f"injector not answering: {exc}",
                idle_event=E.EQUIPMENT_FAILURE,
            )

    def _disarm_on_timeout(self) -> None:
        try:
            self._core.link.execute("XDA", done=lambda: False)
        except DriverError as exc:
            log.warning("XDA after the arm timeout: %s", exc)
        self._core.go(T.ARM_TIMEOUT, next_state(T.ARM_TIMEOUT, self._core.state))
        log.info("arming lapsed after %s s", self._core.limits.arm_timeout_s)

    def _poll_injection(self, status: Reply) -> None:
        """One poll of a running injection. The delivery bounds come first, each checked as
        soon as its figure is known (the time after the status, the volume after ``DIS``): a
        crossing puts ``STP`` on the wire ahead of the rest of the poll."""
        inj = self._core.injection
        assert inj is not None
        link = self._core.link
        if self._supervise_time(inj, infusing=status.prompt is Prompt.INFUSING):
            return
        dis = link.query("DIS", Shape.DIS)
        if dis.alarm is not None:
            self._core.drain_link_events()
            return
        if dis.error is None:
            inj.delivered_ml = parse_infused_ml(dis.data)
            if inj.supervisor.over_delivered(inj.delivered_ml):
                self._core.abort(T.FAULT, E.TERMINATED_INJECTOR_FAILURE, OVER_DELIVERY)
                return
        if inj.adjusted or E.PRESSURE_ADJUSTMENT in inj.recorded:
            # Adaptive flow: the pump lowered its rate; the overtime bound counts with the
            # rate in force.
            rate = link.query("RAT", Shape.NUMBER_UNIT)
            if rate.alarm is not None:
                self._core.drain_link_events()
                return
            if rate.error is None:
                inj.rate_ml_min = inj.supervisor.rate_ml_min = parse_rate_ml_min(rate.data)
        pressure = link.query("XPR", Shape.NUMBER)
        if pressure.alarm is not None:
            self._core.drain_link_events()
            return
        if pressure.error is None and pressure.data:
            inj.pressure_kpa = parse_number(pressure.data)
        events = (
            self._core.pop_device_events()
            if self._core.info and self._core.info.has_event_queue
            else []
        )
        if self._core.state not in (S.INJECTING, S.HOLD) or self._core.stop_requested:
            return  # an alarm has ended the injection, or stop() is ending it
        for event in events:
            if event in TERMINATING_EVENTS:
                self._core.abort(T.FAULT, TERMINATING_EVENTS[event], f"injector: {event.meaning}")
                return
        if self._check_pressure(inj, infusing=status.prompt is Prompt.INFUSING):
            return
        if self._core.state is S.HOLD:
            assert inj.hold_started_s is not None
            if time.monotonic() - inj.hold_started_s > self._core.limits.max_hold_s:
                self._core.abort(
                    T.HOLD_TIMEOUT,
                    E.TERMINATED_HOLD_TIMEOUT,
                    f"hold longer than {self._core.limits.max_hold_s} s",
                )
            return
        prompt = status.prompt
        if prompt in (Prompt.PAUSED, Prompt.TIMED_PAUSE):
            inj.hold_started_s = time.monotonic()
            self._core.go(T.HOLD, next_state(T.HOLD, self._core.state))
            self._core.record(E.PROGRAMMED_HOLD, "driver", "the injector paused")
            return
        if prompt is Prompt.STOPPED:
            self._finish_stopped(inj)

    def _supervise_time(self, inj: Injection, *, infusing: bool) -> bool:
        """Count the time since the last poll as infusing time when it was (not held); stop an
        injection past its overtime bound. True if it was aborted. The pump's counter is not
        trusted then: the volume recorded is at least what the motor was commanded to give."""
        now = time.monotonic()
        elapsed_s, inj.polled_s = now - inj.polled_s, now
        if self._core.state is not S.INJECTING or not infusing:
            return False
        inj.supervisor.infused_for(elapsed_s)
        if not inj.supervisor.overtime:
            return False
        floor = inj.supervisor.expected_ml
        self._core.abort(T.FAULT, E.TERMINATED_INJECTOR_FAILURE, OVERTIME, at_least_ml=floor)
        return True

    def _finish_stopped(self, inj: Injection) -> None:
        """The device stopped by itself: completed if the volume is in, else a failure."""
        if inj.delivered_ml + self._core.limits.volume_tolerance_ml >= inj.target_ml:
            self._core.session_delivered_ml += inj.delivered_ml
            result = InjectionResult(True, inj.delivered_ml, "volume reached", E.COMPLETE)
            self._core.last_result = result
            if E.COMPLETE not in inj.recorded:
                self._core.record(E.COMPLETE, "driver", f"{inj.delivered_ml:.3f} mL delivered")
            self._core.go(T.VOLUME_REACHED, next_state(T.VOLUME_REACHED, self._core.state))
            inj.status.set_finished(result)
            return
        self._core.abort(
            T.FAULT,
            E.TERMINATED_INJECTOR_FAILURE,
            f"the injector stopped early: {inj.delivered_ml:.3f} of {inj.target_ml:.3f} mL",
        )

    def _check_pressure(self, inj: Injection, *, infusing: bool) -> bool:
        """Watch the pressure ourselves too; True if the injection was aborted.

        Above the ceiling or the termination limit: stop. A fall of ``extravasation_drop_kpa``
        below the run's peak while infusing at the set rate (no hold, no adaptive flow since
        the peak): suspected extravasation, stop."""
        pressure = inj.pressure_kpa
        if pressure is None:
            return False
        lim = self._core.limits
        if pressure >= lim.pressure_ceiling_kpa:
            self._core.abort(
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
        if not infusing or inj.adjusted or self._core.state is S.HOLD:
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
            self._core.abort(
                T.FAULT,
                E.TERMINATED_INJECTOR_FAILURE,
                f"suspected extravasation: pressure fell from {inj.peak_kpa:.0f} to "
                f"{pressure:.0f} kPa while infusing",
            )
            return True
        inj.peak_kpa = max(inj.peak_kpa, pressure)
        if rise >= lim.pressure_termination_kpa:
            self._core.abort(
                T.FAULT,
                E.TERMINATED_PRESSURE,
                f"pressure {pressure:.0f} kPa, {rise:.0f} kPa above the baseline",
            )
            return True
        if rise >= lim.pressure_adjustment_kpa and not inj.adjusted:
            inj.adjusted = True
            self._core.record(E.PRESSURE_ADJUSTMENT, "driver", f"{pressure:.0f} kPa")
        elif rise >= lim.pressure_warning_kpa and not inj.warned:
            inj.warned = True
            self._core.record(E.PRESSURE_WARNING, "driver", f"{pressure:.0f} kPa")
        return False
