"""The injection supervisor: the exam's side of a running injection and its threads.

:class:`InjectionSupervisor` holds the injector the exam uses, the status of the injection
running, the watcher thread that waits for its outcome, the peak line pressure and the CID 71
codes seen during it. When the outcome is known (on the watcher, or in any later command) it is
journaled through the exam's :class:`~acquisition.exam.ledger.ExamLedger` and fed to the machine
(:meth:`InjectionSupervisor.settle`); every injector event is journaled with its code. The
service starts injections and decides what the operator may do; what the supervisor guarantees
is the order of a stop: ``STP`` goes out first, without the service's lock and before the
journal (:meth:`InjectionSupervisor.stop_now`).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from acquisition.exam.ledger import ExamLedger
from acquisition.exam.model import INTERRUPTED_BY_RESTART, ContrastRecord, JournalUnavailable
from acquisition.exam_machine import ExamEvent
from device_drivers.base import (
    InjectionResult,
    InjectionStatus,
    InjectorABC,
    InjectorState,
    RecordedEvent,
)
from device_drivers.errors import DriverError, DriverTimeoutError

log = logging.getLogger(__name__)

E = ExamEvent

#: A read-back volume must exceed the recorded one by more than this to be a correction.
VOLUME_CORRECTION_MIN_ML = 0.001
#: How often a finished injection's outcome is journaled again while the journal fails.
JOURNAL_RETRY_S = 1.0
#: How long a stop may take to be reported before the exam goes to FAULT.
STOP_CONFIRM_TIMEOUT_S = 5.0
#: How often the watcher samples the line pressure while it waits for the outcome.
PRESSURE_SAMPLE_S = 0.05

#: Injector states in which a new injection may be configured (not busy, no fault pending).
INJECTOR_IDLE = frozenset({InjectorState.NOT_READY, InjectorState.READY, InjectorState.COMPLETED})
#: Injector states of an injection delivering (or held in the middle of one).
INJECTOR_DELIVERING = frozenset({InjectorState.INJECTING, InjectorState.HOLD})


def correction(
    result: InjectionResult | None, given: Sequence[ContrastRecord], running: bool
) -> dict[str, Any] | None:
    """The ``injection-corrected`` payload when the pump's read-back (``result``, after a link
    that was lost during the last injection came back) says more was given than the exam
    recorded; None otherwise. The record follows the pump upward, never down."""
    if result is None or not given or running:
        return None
    last = given[-1]
    if result.delivered_ml <= last.delivered_ml + VOLUME_CORRECTION_MIN_ML:
        return None
    return {
        "number": last.number,
        "delivered_ml": result.delivered_ml,
        "previous_ml": last.delivered_ml,
        "reason": "read back from the pump after the link came back",
    }


def interrupted_entry(running: Mapping[str, Any]) -> dict[str, Any]:
    """The ``injection-ended`` payload of an injection that did not survive a restart: never
    restarted, its programmed volume counted as given."""
    return {
        "delivered_ml": float(running["volume_ml"]),
        "completed": False,
        "reason": INTERRUPTED_BY_RESTART + " (programmed volume counted as given)",
        "event_code": None,
        "stopped_by_operator": False,
    }


class InjectionSupervisor:
    """The injector of the exam and the injection running on it (see the module docstring).

    ``lock`` is the service's: the watcher takes it to settle the outcome. While the outcome
    cannot be journaled (:class:`JournalUnavailable`, or anything else) it stays pending and the
    watcher tries again every :data:`JOURNAL_RETRY_S`.
    """

    def __init__(
        self, ledger: ExamLedger, lock: threading.RLock, clock: Callable[[], dt.datetime]
    ) -> None:
        self._ledger = ledger
        self._lock = lock
        self._clock = clock
        self._injector: InjectorABC | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._status: InjectionStatus | None = None
        self._closing = threading.Event()
        self._watchers: list[threading.Thread] = []
        #: The operator (or a discontinuation) asked for the stop: an abort is "stopped".
        self.stop_requested = False
        self.peak_pressure_kpa: float | None = None  #: of the injection running
        self.event_codes: list[str] = []  #: CID 71 codes seen during it

    # ------------------------------------------------------------------ the injector

    @property
    def injector(self) -> InjectorABC | None:
        return self._injector

    def attach(self, injector: InjectorABC | None) -> None:
        """Use ``injector`` (connected by its owner); each of its events is journaled."""
        self.detach()
        self._injector = injector
        if injector is not None:
            self._unsubscribe = injector.subscribe(self._on_event)

    def _on_event(self, event: RecordedEvent) -> None:
        """Journal an injector event with its CID 71 code (called on the driver's thread)."""
        if self._ledger.record.injection_running is not None:
            self.event_codes.append(event.code)
        payload = {"code": event.code, "meaning": event.meaning, "detail": event.detail}
        try:
            self._ledger.append_unfolded(
                "injector-event", payload, attached=True, on_driver_thread=True
            )
        except JournalUnavailable:
            pass  # a logging fault, already reported (and the injection stopped)
        except Exception:
            log.exception("injector event not journaled")

    def detach(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def healthy(self) -> bool:
        """An injector is attached, its link is up, and it could take a new injection."""
        injector = self._injector
        return injector is not None and injector.link_up and injector.state in INJECTOR_IDLE

    def in_error(self) -> bool:
        injector = self._injector
        return injector is not None and injector.state is InjectorState.ERROR

    def new_session(self, given_ml: float) -> None:
        """The driver's own per-exam cap follows the exam (a second line of defence behind the
        exam's interlock, which counts the exam's volume from the journal)."""
        self._best_effort(
            lambda injector: injector.new_session(given_ml),
            "the injector's per-exam volume was not reset",
        )

    def disarm_quietly(self) -> None:
        """Disarm an armed injector (nothing may start unrecorded); its arming times out by
        itself when even that fails."""
        self._best_effort(
            lambda injector: injector.disarm(),
            "injector not disarmed (its arming times out by itself)",
            only_in=InjectorState.ARMED,
        )

    def reset_after_stop(self) -> None:
        """An operator stop leaves the driver in ERROR (aborted, reported): clear it."""
        self._best_effort(
            lambda injector: injector.acknowledge(),
            "injector not reset after the stop",
            only_in=InjectorState.ERROR,
        )

    def _best_effort(
        self,
        action: Callable[[InjectorABC], object],
        failure: str,
        *,
        only_in: InjectorState | None = None,
    ) -> None:
        """Do ``action`` on the attached injector (when it is in ``only_in``, if given); a
        driver error is logged as ``failure``, never raised."""
        injector = self._injector
        if injector is None or (only_in is not None and injector.state is not only_in):
            return
        try:
            action(injector)
        except DriverError as exc:
            log.error("%s: %s", failure, exc)

    # ------------------------------------------------------------------ the injection running

    def prepare(self) -> None:
        """A new injection is about to start: its stop request, peak and events start afresh."""
        self.stop_requested = False
        self.peak_pressure_kpa = None
        self.event_codes = []

    def watch(self, status: InjectionStatus, number: int) -> None:
        """Wait for the outcome of the injection just started on a thread of its own."""
        self._status = status
        watcher = threading.Thread(
            target=self._watch, args=(status,), name=f"exam-injection-{number}", daemon=True
        )
        self._watchers.append(watcher)
        watcher.start()

    @property
    def running(self) -> bool:
        """An injection was started and its outcome is not recorded yet."""
        return self._status is not None

    def outcome(self) -> InjectionResult | None:
        """The result of the injection watched, once it is over (until it is settled)."""
        status = self._status
        if status is None or not status.done:
            return None
        assert status.result is not None
        return status.result

    def settle(self, operator: str | None = None) -> None:
        """Feed the outcome of a finished injection to the machine (once). Under the lock.
        Kept pending until journaled: a journal failure here is retried, never lost."""
        result = self.outcome()
        if result is None:
            return
        self.end(
            result.delivered_ml,
            result.completed,
            result.reason,
            result.event.code,
            operator,
            confirmed=result.confirmed,
        )
        self._status = None

    def end(
        self,
        delivered_ml: float,
        completed: bool,
        reason: str,
        code: str | None,
        operator: str | None,
        *,
        confirmed: bool = True,
    ) -> None:
        """Journal how the injection ended and feed the outcome to the machine. ``confirmed``
        False: the pump could not confirm the stop (a STOP on a dead link is not a stop): a
        fault, whoever asked for the stop; the volume is corrected when the link is back."""
        ledger = self._ledger
        stopped = not completed and self.stop_requested and confirmed
        self.sample_pressure()
        if ledger.record.injection_running is not None:  # not yet journaled (or a retry)
            ended = {
                "delivered_ml": delivered_ml,
                "completed": completed,
                "reason": reason,
                "event_code": code,
                "stopped_by_operator": stopped,
                "ended_at": self._clock().isoformat(),
                "peak_pressure_kpa": self.peak_pressure_kpa,
                "event_codes": list(self.event_codes),
                "unconfirmed": not confirmed,
            }
            ledger.append("injection-ended", ended, operator)
        if not ledger.record.state.is_injecting:
            return  # already in FAULT (stop unconfirmed, or a restart): the record is enough
        if completed:
            ledger.transition_checked(E.INJECTION_COMPLETED, operator)
        elif stopped:
            ledger.transition_checked(E.INJECTION_STOPPED, operator)
            self.reset_after_stop()
        else:
            ledger.transition_checked(E.FAULT, operator, reason=reason)

    def sample_pressure(self) -> None:
        """Track the peak line pressure of the running injection (for its record)."""
        injector = self._injector
        if injector is None:
            return
        try:
            pressure = injector.progress().pressure_kpa
        except DriverError:
            return
        if pressure is not None:
            self.peak_pressure_kpa = max(pressure, self.peak_pressure_kpa or 0.0)

    def stop_now(self, reason: str, *, by_operator: bool = False) -> bool:
        """Send STP at once, without the service's lock, when an injection is running or the
        injector says it is delivering (whatever the exam believes). ``by_operator``: the
        injection ends as stopped by the operator; otherwise (a logging fault) as a fault.
        Whether STP was sent."""
        injector, status = self._injector, self._status
        if injector is None:
            return False
        running = status is not None and not status.done
        if not running and injector.state not in INJECTOR_DELIVERING:
            return False
        if running and by_operator:
            self.stop_requested = True
        try:
            injector.stop(reason)
        except DriverError as exc:
            log.error("injector stop not confirmed: %s", exc)
        return True

    def stop_for_journal_fault(self, on_driver_thread: bool) -> None:
        """A logging fault stops a running injection first. On the driver's own thread (an
        event being journaled, maybe in the middle of the driver's abort) the stop is handed
        to a thread of its own: never re-entered there."""
        if on_driver_thread:
            threading.Thread(
                target=self.stop_now, args=("journal write failed",), daemon=True
            ).start()
        else:
            self.stop_now("journal write failed")

    def stop_and_settle(self, operator: str, *, already_sent: bool = False) -> None:
        """Stop the injection running (``STP`` unless ``already_sent``), wait up to
        :data:`STOP_CONFIRM_TIMEOUT_S` for the driver to report it and settle its outcome.
        Under the lock. A stop the driver could not confirm (its watchdog stops the motor
        anyway) stops the exam in FAULT; the outcome is journaled whenever it is reported."""
        injector, status = self._injector, self._status
        assert injector is not None and status is not None
        self.stop_requested = True
        if not already_sent:
            try:
                injector.stop("operator stop")
            except DriverError as exc:
                log.error("injector stop not confirmed: %s", exc)
        try:
            status.wait(STOP_CONFIRM_TIMEOUT_S)
        except DriverTimeoutError:
            reason = "the injector did not confirm the stop"
            log.error("%s within %s s", reason, STOP_CONFIRM_TIMEOUT_S)
            self._ledger.transition_checked(E.FAULT, operator, reason=reason)
            return
        self.settle(operator)

    def _watch(self, status: InjectionStatus) -> None:
        while not self._closing.is_set():
            try:
                status.wait(PRESSURE_SAMPLE_S)
            except DriverTimeoutError:
                self.sample_pressure()
                continue
            try:
                with self._lock:
                    self.settle()
            except JournalUnavailable:  # reported once; the outcome stays pending: retried
                self._closing.wait(JOURNAL_RETRY_S)
                continue
            except Exception:  # e.g. a worklist write after the transition: retried too
                log.exception("injection outcome not fully recorded yet; retrying")
                self._closing.wait(JOURNAL_RETRY_S)
                continue
            return

    def close(self) -> None:
        """Stop the watcher threads (idempotent); the owner detaches the injector."""
        self._closing.set()
        for watcher in self._watchers:
            if watcher is not threading.current_thread():
                watcher.join(timeout=5.0)
