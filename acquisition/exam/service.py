"""The exam service: commands, transitions and refusals around the pure exam machine
(procedure.md; style.md §4; issue 4 §1).

:class:`ExamService` runs one galactography exam at a time. Every operator command is first
journaled (kind ``command``, with the operator); the machine (:func:`~acquisition.exam_machine.
next_state`) decides; a refusal is journaled (kind ``refusal``, with the reason) and raised as
:class:`~acquisition.exam_machine.Refused`; an allowed step does its I/O (worklist, injector),
then journals the ``transition``. The exam's state and the facts the interlocks read are never
kept anywhere else: every entry the service writes is also applied to an in-memory
:class:`~acquisition.exam.record.ExamRecord`, and construction replays the journal through the
same fold (:func:`~acquisition.exam.record.replay`), so a restart resumes in the same state with
the same facts. An exam that was injecting when the process died resumes as FAULT ("injection
interrupted by a restart"); the injection is never restarted and its programmed volume is
counted as given.

The service is the hub of the exam's rooms, each of which it drives:

* :mod:`acquisition.exam.model`: the values and tables (what other packages import);
* :mod:`acquisition.exam.record`: the journal fold;
* :mod:`acquisition.exam.injection`: the injector, the injection running and its watcher;
* :mod:`acquisition.exam.exposures`: the exposures read back from the dose log, counted per
  phase by their SPS ID;
* :mod:`acquisition.exam.worklist`: the worklist step of the imaging phase being acquired,
  published when the phase is entered and withdrawn when it is left (PS3.4 Annex K).

Outward reporting (MPPS toward the RIS, the dose report and forwarding toward the PACS) is the
:class:`~acquisition.exam.model.ExamReporter`'s job (:mod:`acquisition.exam_reporting`): the
service hands it an :class:`~acquisition.exam.model.ExamSnapshot` after every transition and new
exposure, and at start-up; the reporter enqueues into the durable outbox whatever is missing.
Each injection's contrast administration is folded from its ``injection-started`` /
``injection-ended`` entries into a :class:`~acquisition.exam.model.ContrastRecord`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from acquisition.dose_log import DoseLog
from acquisition.exam.exposures import ExposureNoter
from acquisition.exam.injection import InjectionSupervisor, correction, interrupted_entry
from acquisition.exam.ledger import ExamLedger
from acquisition.exam.model import (
    CHECKLIST,
    CONTRAST_AGENT,
    INTERRUPTED_BY_RESTART,
    SIDES,
    ChecklistError,
    ContrastRecord,
    ExamError,
    ExamOrder,
    ExamReporter,
    ExamSnapshot,
    JournalUnavailable,
    Patient,
    PhysicianOverride,
    checklist_entry,
    phase_sps_id,
    service_refusal,
    syringe_refusal,
)
from acquisition.exam.opening import (
    SideMismatch,
    laterality_decision,
    order_from_worklist,
    unscheduled_order,
    unused_exam_id,
)
from acquisition.exam.record import ExamRecord, replay
from acquisition.exam.worklist import PhaseWorklist
from acquisition.exam_machine import (
    TRANSITIONS,
    ExamEvent,
    ExamFacts,
    ExamState,
    Limits,
)
from acquisition.journal import Journal
from acquisition.laterality import DEFAULT_TERMS, OrderSide, order_side, parse_terms
from acquisition.unit_steps import UNIT_STEP_IN_PROGRESS, busy_refusal
from device_drivers.base import SYRINGE_CAPACITY_ML, InjectorABC
from device_drivers.errors import DriverError, StateError
from dicom_nodes.datasets.codes import DISCONTINUATION_REASONS
from dicom_nodes.datasets.uids import new_uid
from dicom_nodes.hospital.mwl_scu import WorklistItem
from dicom_nodes.unit_facing.worklist_store import ScheduledStep, WorklistStore

log = logging.getLogger(__name__)

S, E = ExamState, ExamEvent


def _now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ExamService:
    """Runs the exam: operator commands in, journal, worklist and injector out.

    Thread-safe: one lock around every command. ``injector`` may be None until the first
    injection; it must be connected by its owner. The service owns none of the stores or the
    injector: :meth:`close` only stops its own watcher thread and event subscription.
    """

    def __init__(
        self,
        journal: Journal,
        worklist: WorklistStore,
        *,
        station_ae: str,
        limits: Limits | None = None,
        dose_log: DoseLog | None = None,
        injector: InjectorABC | None = None,
        syringe: str = "1ml",
        reporter: ExamReporter | None = None,
        uid_root: str | None = None,
        clock: Callable[[], dt.datetime] = _now_utc,
        laterality_terms: Iterable[str] = DEFAULT_TERMS,
        space_check: Callable[[], str | None] | None = None,
        unit_steps_in_progress: Callable[[ExamOrder | None], list[str]] | None = None,
    ) -> None:
        self._journal = journal
        self._unit_steps_in_progress = unit_steps_in_progress
        #: Why the disks cannot take an exam's writes now (None: they can): checked when an
        #: exam opens and before each injection (storage.FreeSpace).
        self._space_check = space_check
        self._steps = PhaseWorklist(worklist, station_ae, clock, self._journal_worklist)
        self._exposures = None
        if dose_log is not None:
            self._exposures = ExposureNoter(
                dose_log, journal=self._journal_exposure, journal_stray=self._journal_stray
            )
        self.station_ae = station_ae
        self.limits = limits or Limits()
        self.syringe = syringe
        self.laterality_terms = parse_terms(laterality_terms)
        self._uid_root = uid_root  # every instance UID under the site's root
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every transition
        self._ledger = ExamLedger(
            journal,
            replay(journal) or ExamRecord(),
            clock=clock,
            steps=self._steps,
            reporter=reporter,
            changed=self._changed,
            facts=lambda record, healthy: record.facts(self.limits, healthy, self.syringe_ml),
            injector_healthy=lambda: self._injection.healthy(),  # noqa: PLW0108 - built below
            on_failure=lambda exc, on_driver_thread: self._injection.stop_for_journal_fault(
                on_driver_thread
            ),
        )
        self._injection = InjectionSupervisor(self._ledger, self._lock, clock)
        if self._record.state is not S.IDLE:
            log.info("exam resumed in %s", self._record.state.value)
        self.attach_injector(injector)
        self._recover()

    # ------------------------------------------------------------------ introspection

    @property
    def _record(self) -> ExamRecord:
        return self._ledger.record

    @property
    def state(self) -> ExamState:
        with self._lock:
            return self._settled_state()

    @property
    def order(self) -> ExamOrder | None:
        return self._record.order

    @property
    def exam_id(self) -> str | None:
        return None if self._record.order is None else self._record.order.exam_id

    @property
    def syringe_ml(self) -> float:
        """The nominal size of the syringe loaded in the injector (``injector.syringe``)."""
        return SYRINGE_CAPACITY_ML[self.syringe]

    def order_side(self, order: WorklistItem) -> OrderSide:
        """The side an order's words name (``ris.laterality_terms``)."""
        return order_side(order, self.laterality_terms)

    def snapshot(self) -> ExamSnapshot:
        """The exam as last journaled, without taking the service's lock (a stop may hold it
        for seconds; the console must not freeze meanwhile). Injector health is read live."""
        published = self._ledger.published
        facts = dataclasses.replace(published.facts, injector_healthy=self._injection.healthy())
        return dataclasses.replace(published, facts=facts, journal_fault=self._ledger.journal_fault)

    def view(self) -> ExamSnapshot | None:
        """The open exam, settled (None when no exam is open)."""
        with self._lock:
            self._settle()
            return self._ledger.view()

    def contrast_administrations(self) -> tuple[ContrastRecord, ...]:
        """The injections given so far in the open exam, oldest first."""
        with self._lock:
            self._settle()
            return tuple(self._record.contrast)

    def facts(self) -> ExamFacts:
        with self._lock:
            self._settle()
            return self._ledger.facts()

    @property
    def journal_fault(self) -> str | None:
        """Why the journal cannot be written (None when it can): commands are refused."""
        return self._ledger.journal_fault

    def wait_for_state(self, wanted: ExamState, timeout_s: float) -> bool:
        """Wait (with a deadline) until the exam reaches ``wanted``; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._settled_state() is wanted, timeout_s)

    def _settled_state(self) -> ExamState:
        self._settle()
        return self._record.state

    # ------------------------------------------------------------------ life cycle

    def attach_injector(self, injector: InjectorABC | None) -> None:
        """Use ``injector`` (connected by its owner) from now on; its events are journaled."""
        with self._lock:
            self._injection.attach(injector)
            if injector is None:
                return
            if self._record.order is not None and self._record.injection_running is None:
                self._injection.new_session(self._record.volume_given_ml)

    def close(self) -> None:
        """Stop watching the injector (idempotent). Stores and injector stay open."""
        self._injection.close()
        with self._lock:
            self._injection.detach()

    def __enter__(self) -> ExamService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ opening an exam

    def select_order(
        self, order: WorklistItem, side: str, operator: str, side_override_reason: str = ""
    ) -> ExamOrder:
        """Open the exam of a RIS worklist order, on the breast ``side`` (L or R).

        The order's own side (:func:`~acquisition.laterality.order_side`) must agree, unless
        ``side_override_reason`` says why not (journaled); a side the order does not name is
        taken as chosen explicitly (journaled too). A disagreement is refused with the details
        ``{"code": "laterality-mismatch", "order_side": …, "chosen_side": …}``.
        """
        exam = order_from_worklist(order, side, self._uid_root)
        found = self.order_side(order)
        return self._open(E.SELECT_ORDER, exam, operator, (found, side_override_reason.strip()))

    def register_unscheduled(self, patient: Patient, side: str, operator: str) -> ExamOrder:
        """Open an exam for a patient registered at the console (no RIS order).

        The exam ID is made up locally from the clock: ``U`` + UTC date and time. The exam has
        no accession number (IHE's unscheduled case: none is invented for the images); its
        worklist steps, images and dose rows are tied to it by its own Study Instance UID.
        """
        exam_id = "U" + self._clock().strftime("%Y%m%d%H%M%S")
        exam = unscheduled_order(patient, side, exam_id, self._uid_root)
        return self._open(E.REGISTER_UNSCHEDULED, exam, operator)

    def _open(
        self,
        event: ExamEvent,
        exam: ExamOrder,
        operator: str,
        laterality: tuple[OrderSide, str] | None = None,
    ) -> ExamOrder:
        """Open ``exam``; ``laterality``: for an order, what its words say and the operator's
        reason to override them (empty when none)."""
        with self._lock:
            self._settle()
            exam = dataclasses.replace(exam, exam_id=unused_exam_id(self._journal, exam.exam_id))
            args = {"exam_id": exam.exam_id, "side": exam.side}
            if laterality is not None and laterality[1]:
                args["side_override_reason"] = laterality[1]
            self._command(event.value, args, operator)
            if exam.side not in SIDES:
                self._ledger.refuse(event, f"the side must be one of {', '.join(SIDES)}", operator)
            self._refuse_if_disk_low(event, operator)
            target = self._ledger.check(event, self._ledger.facts(), operator)
            decision: dict[str, Any] | None = None
            if laterality is not None:
                found = laterality_decision(exam.side, *laterality)
                if isinstance(found, SideMismatch):
                    self._ledger.refuse(event, found.reason, operator, found.details)
                decision = found
            exam = dataclasses.replace(
                exam,
                mpps_instance_uid=new_uid(self._uid_root),
                opened_at=self._clock().isoformat(),
            )
            self._ledger.append("exam-opened", {"order": exam.to_json()}, operator, exam.exam_id)
            if decision is not None:
                self._ledger.append("laterality", decision, operator)
            self._ledger.transition(event, target, operator)
            self._injection.new_session(0.0)
            # The exam ID is an accession number: identifying, so never above DEBUG.
            log.debug("exam %s opened", exam.exam_id)
            log.info("exam opened (%s breast)", exam.side)
            return exam

    # ------------------------------------------------------------------ checklist, confirmations

    def answer_checklist(
        self,
        answers: Mapping[str, bool],
        operator: str,
        override: PhysicianOverride | None = None,
    ) -> bool:
        """Record the pre-exam checklist answers (True = the condition is present).

        Returns whether the checklist passes: no blocking item present (or unanswered), or a
        physician override with a reason for those that are.
        """
        unknown = sorted(set(answers) - set(CHECKLIST))
        if unknown:
            raise ChecklistError(f"unknown checklist items: {', '.join(unknown)}")
        with self._lock:
            self._settle()
            self._command("answer-checklist", {}, operator)
            reason = service_refusal("answer-checklist", self._record.state)
            if reason is not None:
                self._ledger.refuse(E.PASS_CHECKLIST, reason, operator)
            payload = checklist_entry(answers, override)
            self._ledger.append("checklist", payload, operator)
            return bool(payload["passed"])

    def pass_checklist(self, operator: str) -> None:
        self._simple(E.PASS_CHECKLIST, operator)

    def finish_pre_contrast(self, operator: str) -> None:
        self._simple(E.FINISH_PRE_CONTRAST, operator)

    def confirm_cannulation(self, operator: str) -> None:
        self._confirm("cannulation", operator)

    def confirm_air_purge(self, operator: str, loaded_ml: float | None = None) -> None:
        """The line is purged of air; the syringe holds ``loaded_ml`` now (default: full, the
        nominal size of ``injector.syringe``). Every injection then subtracts what it delivered,
        and only a new purge raises the figure again; it survives a restart (journaled)."""
        capacity = self.syringe_ml
        loaded = capacity if loaded_ml is None else loaded_ml
        refusal = syringe_refusal(loaded, capacity, self.syringe)
        args = {} if loaded_ml is None else {"loaded_ml": loaded_ml}
        self._confirm("air-purge", operator, args, {"loaded_ml": loaded}, refusal)

    def _confirm(
        self,
        what: str,
        operator: str,
        args: Mapping[str, Any] | None = None,
        detail: Mapping[str, Any] | None = None,
        refusal: str | None = None,
    ) -> None:
        with self._lock:
            self._settle()
            self._command(f"confirm-{what}", args or {}, operator)
            reason = service_refusal(f"confirm-{what}", self._record.state) or refusal
            if reason is not None:
                # Part of the start-injection interlock: refused as that event would be.
                self._ledger.refuse(E.START_INJECTION, reason, operator)
            self._ledger.append("confirmation", {"what": what, **(detail or {})}, operator)

    # ------------------------------------------------------------------ injection

    def start_injection(self, volume_ml: float, rate_ml_min: float, operator: str) -> None:
        """The operator's explicit start: interlocks, then configure, arm and start.

        The ``injection-started`` entry is durable before ``RUN`` is sent, so a restart can
        never start the same injection again. The outcome is fed to the machine when the
        injector reports it (a watcher thread, or any later call on the service).
        """
        with self._lock:
            self._settle()
            args = {"volume_ml": volume_ml, "rate_ml_min": rate_ml_min}
            self._command(E.START_INJECTION.value, args, operator)
            facts = dataclasses.replace(
                self._ledger.facts(),
                requested_volume_ml=volume_ml,
                requested_rate_ml_min=rate_ml_min,
            )
            target = self._ledger.check(E.START_INJECTION, facts, operator)
            self._refuse_if_disk_low(E.START_INJECTION, operator)
            injector = self._injection.injector
            assert injector is not None  # injector_healthy was checked
            try:
                injector.configure(self.syringe, rate_ml_min, volume_ml)
                injector.arm()
            except DriverError as exc:  # nothing was delivered
                self._ledger.refuse(E.START_INJECTION, f"the injector did not arm: {exc}", operator)
            number = self._record.injections_started + 1
            started = {"number": number, **args, "agent": CONTRAST_AGENT}
            started["started_at"] = self._clock().isoformat()
            try:
                self._ledger.append("injection-started", started, operator)
            except JournalUnavailable:
                self._injection.disarm_quietly()  # nothing may start unrecorded
                raise
            self._injection.prepare()
            try:
                status = injector.start()
            except StateError as exc:  # RUN not executed (arming lapsed, ?NA, a check before it)
                self._injection.disarm_quietly()
                ended = {"delivered_ml": 0.0, "completed": False, "reason": str(exc)}
                self._ledger.append("injection-ended", {**ended, "not_started": True}, operator)
                self._ledger.refuse(
                    E.START_INJECTION, f"the injector did not start: {exc}", operator
                )
            except DriverError as exc:
                # Whether RUN was executed is unknown; the driver sent STP. Count it as given.
                self._ledger.transition(E.START_INJECTION, target, operator)
                self._injection.end(volume_ml, False, f"start unconfirmed: {exc}", None, operator)
                return
            # Watched before anything else is journaled: a journal failure from here on finds
            # the injection running and stops it first (_journal_failed).
            self._injection.watch(status, number)
            self._ledger.transition(E.START_INJECTION, target, operator)

    def stop_injection(self, operator: str) -> None:
        """Operator stop (fullness, pain, resistance, reflux): STP, then INJECTION_STOPPED.

        ``STP`` goes out first, before the service's lock and the journal: a command in
        progress or a slow journal never delays it. The command is journaled after.
        """
        sent = self._injection.stop_now("operator stop", by_operator=True)
        with self._lock:
            self._settle()
            self._command("stop-injection", {}, operator)
            if sent and not self._injection.running:
                return  # stopped; its end was already recorded (by the watcher, or just now)
            reason = service_refusal("stop-injection", self._record.state)
            if reason is None and not self._injection.running:
                reason = "no injection is running"
            if reason is not None:
                self._ledger.refuse(E.INJECTION_STOPPED, reason, operator)
            self._injection.stop_and_settle(operator, already_sent=True)

    def _settle(self, operator: str | None = None) -> None:
        """Feed the outcome of a finished injection to the machine (once). Under the lock."""
        self._injection.settle(operator)

    # ------------------------------------------------------------------ faults, ending

    def check_injector(self) -> None:
        """An injector that went to ERROR between injections (link lost, a device alarm)
        stops the exam in FAULT, so that the operator sees it and acknowledges it (which resets
        the injector). Called by the controller's tick, never from the driver's own thread."""
        with self._lock:
            self._settle()
            injector, state = self._injection.injector, self._record.state
            if injector is None or not self._injection.in_error():
                return
            if state.is_injecting or (E.FAULT, state) not in TRANSITIONS:
                return  # an injection's outcome is settled by its watcher; no exam: reset
            reason = f"injector fault: {injector.reason or 'error'}"
            self._ledger.transition_checked(E.FAULT, None, reason=reason)

    def _correct_last_injection(self, injector: InjectorABC, operator: str) -> None:
        """A link lost during the last injection is back: the pump's counter may say more was
        given than was last polled. The record follows it upward (never down)."""
        running = self._record.injection_running is not None
        payload = correction(injector.last_result, self._record.contrast, running)
        if payload is None:
            return
        self._ledger.append("injection-corrected", payload, operator)
        log.warning(
            "injection %d: %.3f mL given (%.3f mL recorded before the link loss)",
            payload["number"],
            payload["delivered_ml"],
            payload["previous_ml"],
        )

    def reset_injector(self, operator: str) -> None:
        """With no exam in progress (idle, completed, discontinued): clear the injector's error
        (reopening a lost link). During an exam the fault is acknowledged instead."""
        with self._lock:
            self._settle()
            self._command("reset-injector", {}, operator)
            reason = service_refusal("reset-injector", self._record.state)
            injector = self._injection.injector
            if reason is None and not self._injection.in_error():
                reason = "the injector is not in error"
            if reason is not None:
                self._ledger.refuse(E.ACKNOWLEDGE_FAULT, reason, operator)
            assert injector is not None
            try:
                injector.acknowledge()
            except DriverError as exc:
                self._ledger.refuse(
                    E.ACKNOWLEDGE_FAULT, f"the injector could not be reset: {exc}", operator
                )
            self._ledger.append("injector-reset", {"state": injector.state.value}, operator)

    def acknowledge_fault(self, operator: str, reason: str = "") -> None:
        """The fault seen (``reason``: what was found and done): clear its error, leave FAULT."""
        with self._lock:
            self._settle()
            args = {"reason": reason.strip()} if reason.strip() else {}
            self._command(E.ACKNOWLEDGE_FAULT.value, args, operator)
            target = self._ledger.check(E.ACKNOWLEDGE_FAULT, self._ledger.facts(), operator)
            injector = self._injection.injector
            if injector is not None and self._injection.in_error():
                try:
                    injector.acknowledge()
                except DriverError as exc:
                    self._ledger.refuse(
                        E.ACKNOWLEDGE_FAULT, f"the injector could not be reset: {exc}", operator
                    )
                self._correct_last_injection(injector, operator)
            self._ledger.transition(E.ACKNOWLEDGE_FAULT, target, operator)

    def complete(self, operator: str, override_reason: str = "") -> None:
        """Complete the exam; every exposure already stored is read in first (its final MPPS
        and dose report are built from them). Refused while a unit step of the exam is still
        in progress (:mod:`acquisition.unit_steps`) unless ``override_reason`` says why."""
        reason = override_reason.strip()
        with self._lock:
            self._settle()
            self._command(E.COMPLETE.value, {"override_reason": reason} if reason else {}, operator)
            self._note_exposures()
            target = self._ledger.check(E.COMPLETE, self._ledger.facts(), operator)
            check = self._unit_steps_in_progress
            busy = check(self._ledger.record.order) if check is not None else []
            if busy and not reason:
                details = {"code": UNIT_STEP_IN_PROGRESS, "steps": ", ".join(busy)}
                self._ledger.refuse(E.COMPLETE, busy_refusal(busy), operator, details)
            if busy:
                override = {"what": UNIT_STEP_IN_PROGRESS, "steps": busy, "reason": reason}
                self._ledger.append("override", override, operator)
            self._ledger.transition(E.COMPLETE, target, operator)

    def discontinue(self, reason_code: str, operator: str) -> None:
        """Discontinue with a CID 9301 reason; a running injection is stopped first (STP before
        the lock and the journal, as for an operator stop)."""
        self._injection.stop_now(f"exam discontinued ({reason_code})", by_operator=True)
        with self._lock:
            self._settle()
            self._command(E.DISCONTINUE.value, {"reason_code": reason_code}, operator)
            known = {code.value for code in DISCONTINUATION_REASONS}
            if reason_code not in known:
                self._ledger.refuse(
                    E.DISCONTINUE, f"{reason_code!r} is not a CID 9301 code", operator
                )
            if self._record.state.is_injecting and self._injection.running:
                self._injection.stop_and_settle(operator, already_sent=True)
            self._note_exposures()  # the final report holds every exposure already stored
            facts = dataclasses.replace(self._ledger.facts(), discontinuation_reason=reason_code)
            target = self._ledger.check(E.DISCONTINUE, facts, operator)
            self._ledger.transition(E.DISCONTINUE, target, operator, reason_code=reason_code)

    def close_exam(self, operator: str) -> None:
        """Leave the finished exam (COMPLETED or DISCONTINUED): the room is free.

        Refused while the exam's final report (MPPS, dose report) is not in the outbox: once
        closed, the exam is no longer the open one and nothing would queue it any more.
        """
        with self._lock:
            self._settle()
            self._command(E.CLOSE.value, {}, operator)
            target = self._ledger.check(E.CLOSE, self._ledger.facts(), operator)
            try:
                self._ledger.sync_reporter()
            except Exception as exc:
                log.exception("the exam's report could not be queued")
                reason = f"the exam's report could not be queued ({exc}); try again"
                self._ledger.refuse(E.CLOSE, reason, operator)
            self._ledger.transition(E.CLOSE, target, operator)
            self._journal.witness_head()  # a rollback past this exam shows (issue 12 §11)

    def _refuse_if_disk_low(self, event: ExamEvent, operator: str) -> None:
        shortfall = self._space_check() if self._space_check is not None else None
        if shortfall is not None:
            self._ledger.refuse(event, f"not enough disk space: {shortfall}", operator)

    def _simple(self, event: ExamEvent, operator: str) -> None:
        with self._lock:
            self._settle()
            self._command(event.value, {}, operator)
            self._ledger.transition_checked(event, operator)

    # ------------------------------------------------------------------ exposures

    def note_exposures(self) -> int:
        """Read the exam's exposures from the dose log; annotate and journal the new ones.

        Each new row (of the exam's study, not yet annotated: a row an earlier exam of the
        same order annotated is that exam's) gets the phase its SPS ID names; a row whose SPS ID
        is not one of this exam's steps, or which belongs to a phase the exam is not in, is
        annotated ``phase="unexpected"`` (kept, flagged for review, not counted). Returns how
        many rows were new. The journal entry comes first and the annotation after it, so a
        crash in between leaves a row the journal knows: it is annotated on the next call.
        """
        with self._lock:
            self._settle()
            return self._note_exposures()

    def _note_exposures(self) -> int:
        """:meth:`note_exposures` under the lock (also run before the exam ends, so that its
        final report holds every exposure already stored)."""
        if self._exposures is None:
            return 0
        new = self._exposures.note(self._record)
        if new and self._record.order is not None:
            self._ledger.report()
        return new

    def _journal_exposure(self, payload: Mapping[str, Any]) -> None:
        self._ledger.append("exposure", payload, None)

    def _journal_stray(self, payload: Mapping[str, Any]) -> None:
        self._ledger.append_unfolded("exposure", payload, attached=False)

    def sps_id(self, phase: ExamState) -> str:
        """The SPS ID of an imaging phase of the open exam, e.g. ``ACC123-POST1``."""
        exam_id = self.exam_id
        if exam_id is None:
            raise ExamError("no exam is open")
        return phase_sps_id(exam_id, phase)

    # ------------------------------------------------------------------ worklist

    def phase_step(self, phase: ExamState) -> ScheduledStep:
        """The Scheduled Procedure Step of one phase (PS3.4 Table K.6-1)."""
        order = self._record.order
        assert order is not None
        return self._steps.step(order, phase)

    def _journal_worklist(self, payload: Mapping[str, Any]) -> None:
        self._ledger.append("worklist", payload, None)

    # ------------------------------------------------------------------ journal plumbing

    def _command(self, command: str, args: Mapping[str, Any], operator: str) -> None:
        self._resume_after_journal_fault(operator)
        self._ledger.append("command", {"command": command, **args}, operator)

    def _resume_after_journal_fault(self, operator: str) -> None:
        """The journal failed earlier: once it can be written, the fault is recorded and the
        exam stops in FAULT (acknowledged like any other) before the command is considered."""
        fault = self._ledger.journal_fault
        if fault is None:
            return
        self._ledger.journal_fault = None
        try:
            self._settle(operator)
            payload = {"what": "journal write failed", "detail": fault}
            self._ledger.append("logging-fault", payload, operator)
            if (E.FAULT, self._record.state) in TRANSITIONS:
                self._ledger.transition_checked(
                    E.FAULT, operator, reason=f"journal write failed: {fault}"
                )
        except JournalUnavailable:
            raise

    # ------------------------------------------------------------------ restart

    def _recover(self) -> None:
        """An injection the journal shows running did not survive the restart: never restart
        it; count its programmed volume as given and stop the exam in FAULT."""
        if self._record.order is not None:
            self._ledger.restore_worklist()
            self._ledger.report()  # a crash may have come between a transition and its messages
        running = self._record.injection_running
        if running is None:
            return
        with self._lock:
            self._ledger.append("injection-ended", interrupted_entry(running), None)
            if self._record.state is not S.FAULT:
                self._ledger.transition_checked(E.FAULT, None, reason=INTERRUPTED_BY_RESTART)
            self._injection.new_session(self._record.volume_given_ml)

    def report(self) -> None:
        """Bring the worklist and the outward reporting up to date (idempotent; the
        controller's tick repairs what a failed write left behind)."""
        with self._lock:
            self._settle()
            if self._record.order is not None:
                self._ledger.restore_worklist()
            self._ledger.report()
