"""The exam service: I/O around the pure exam machine (procedure.md; style.md §4; issue 4 §1).

:class:`ExamService` runs one galactography exam at a time. Every operator command is first
journaled (kind ``command``, with the operator); the machine (:func:`~acquisition.exam_machine.
next_state`) decides; a refusal is journaled (kind ``refusal``, with the reason) and raised as
:class:`~acquisition.exam_machine.Refused`; an allowed step does its I/O (worklist, injector),
then journals the ``transition``. The exam's state and the facts the interlocks read are never
kept anywhere else: every entry the service writes is also applied to an in-memory
:class:`ExamRecord` by :meth:`ExamRecord.apply`, and construction replays the journal through
the same method, so a restart resumes in the same state with the same facts. An exam that was
injecting when the process died resumes as FAULT ("injection interrupted by a restart"); the
injection is never restarted and its programmed volume is counted as given.

The worklist step of each imaging phase (pre-contrast, post-injection 1 and 2) is published when
the phase is entered and withdrawn when it is left (PS3.4 Annex K: the unit's MWL query sees
only the phase being acquired). Exposures are read back from the dose log
(:meth:`ExamService.note_exposures`) and counted per phase by their SPS ID.

Outward reporting (MPPS toward the RIS, the dose report and forwarding toward the PACS) is the
:class:`ExamReporter`'s job (:mod:`acquisition.exam_reporting`): the service hands it an
:class:`ExamSnapshot` after every transition and new exposure, and at start-up; the reporter
enqueues into the durable outbox whatever is missing. Each injection's contrast administration
(agent, programmed and delivered volume, rate, start and stop, peak line pressure, CID 71
events) is folded from its ``injection-started`` / ``injection-ended`` entries into a
:class:`ContrastRecord`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from pydicom.uid import generate_uid

from acquisition.dose_log import DoseLog
from acquisition.exam_machine import (
    TRANSITIONS,
    ExamEvent,
    ExamFacts,
    ExamState,
    Limits,
    Refused,
    next_state,
)
from acquisition.journal import Entry, Journal, JournalError
from acquisition.laterality import DEFAULT_TERMS, SIDE_NAMES, OrderSide, order_side, parse_terms
from acquisition.ris_request import with_ris_request
from acquisition.unit_steps import UNIT_STEP_IN_PROGRESS, busy_refusal
from device_drivers.base import (
    SYRINGE_CAPACITY_ML,
    InjectionStatus,
    InjectorABC,
    InjectorState,
    RecordedEvent,
)
from device_drivers.errors import DriverError, DriverTimeoutError, StateError
from dicom_nodes.codes import (
    DISCONTINUATION_REASONS,
    MAMMARY_DUCTOGRAM,
    MODIFIER_MAGNIFICATION,
    VIEW_CC,
    VIEW_ML,
    Code,
)
from dicom_nodes.mwl_scu import WorklistItem
from dicom_nodes.worklist_store import ScheduledStep, WorklistStore

log = logging.getLogger(__name__)

S, E = ExamState, ExamEvent

#: The imaging phases and the suffix of their Scheduled Procedure Step ID.
PHASE_STEPS: dict[ExamState, str] = {
    S.PRE_CONTRAST: "PRE",
    S.POST_INJECTION_1: "POST1",
    S.POST_INJECTION_2: "POST2",
}

#: Scheduled Protocol Code Sequence of each phase (CID 4014 views, CID 4015 modifier):
#: CC and 90° ML of the affected side; post-contrast images usually magnified (procedure.md).
PHASE_PROTOCOLS: dict[ExamState, tuple[Code, ...]] = {
    S.PRE_CONTRAST: (VIEW_CC, VIEW_ML),
    S.POST_INJECTION_1: (VIEW_CC, VIEW_ML, MODIFIER_MAGNIFICATION),
    S.POST_INJECTION_2: (VIEW_CC, VIEW_ML, MODIFIER_MAGNIFICATION),
}

#: Pre-exam checklist (procedure.md): item -> blocking. A blocking item answered True (or left
#: unanswered) fails the checklist unless a physician override with a reason is recorded.
CHECKLIST: dict[str, bool] = {
    "pregnancy_possible": True,
    "contrast_allergy": True,  # not blocking when premedication is documented
    "active_mastitis": True,
    "no_discharge": True,  # the duct cannot be identified
    "premedication_documented": False,
    "nipple_squeezed_beforehand": False,
    "deodorant_powder_lotion": False,
    "jewelry_not_removed": False,
    "prior_breast_surgery": False,
    "hormone_use": False,
    "lactation": False,
    "nipple_retraction": False,
}

INTERRUPTED_BY_RESTART = "injection interrupted by a restart"
#: The phase annotation of an exposure kept but not expected (flagged for review).
UNEXPECTED = "unexpected"
#: The contrast agent the controller records (procedure.md: iohexol 300 mg I/mL).
CONTRAST_AGENT = "Iohexol 300"
#: A read-back volume must exceed the recorded one by more than this to be a correction.
VOLUME_CORRECTION_MIN_ML = 0.001
#: How often a finished injection's outcome is journaled again while the journal fails.
JOURNAL_RETRY_S = 1.0
#: How long a stop may take to be reported before the exam goes to FAULT.
STOP_CONFIRM_TIMEOUT_S = 5.0
SIDES = ("L", "R")

#: Injector states in which a new injection may be configured (not busy, no fault pending).
_INJECTOR_IDLE = frozenset({InjectorState.NOT_READY, InjectorState.READY, InjectorState.COMPLETED})


class ExamError(Exception):
    """Base of the exam service's errors (a refusal by the machine is :class:`Refused`)."""


class JournalUnavailable(ExamError):
    """The journal cannot be written: the injector was stopped and every command is refused
    until it can be written again; the exam then stops in FAULT (a logging fault)."""


class ChecklistError(ExamError, ValueError):
    """A checklist answer names an unknown item."""


@dataclass(frozen=True)
class Patient:
    """A patient registered at the console (no RIS order). Names are DICOM PN strings."""

    name: str
    patient_id: str
    birth_date: str = ""
    sex: str = "F"


@dataclass(frozen=True)
class PhysicianOverride:
    """A physician's override of blocking checklist answers, with the reason."""

    physician: str
    reason: str


@dataclass(frozen=True)
class ExamOrder:
    """What the exam needs of its order to publish its worklist steps (journaled once)."""

    exam_id: str
    accession: str
    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    side: str  # L or R: the breast with the discharge
    requested_procedure_id: str = ""
    requested_procedure_description: str = "Galactography"
    scheduled: bool = True
    #: The RIS's step being performed (reported back in the MPPS Scheduled Step Attributes).
    ris_sps_id: str = ""
    ris_sps_description: str = ""
    #: The RIS step's Scheduled Protocol Code Sequence, as (value, scheme, meaning).
    ris_protocol_codes: tuple[tuple[str, str, str], ...] = ()
    #: The exam's one MPPS toward the RIS, chosen when the exam is opened (never re-created).
    mpps_instance_uid: str = ""
    opened_at: str = ""  # UTC ISO 8601
    #: The RIS order as the RIS gave it (every attribute; None for an unscheduled exam).
    ris_item: WorklistItem | None = None

    @classmethod
    def from_json(cls, order: Mapping[str, Any]) -> ExamOrder:
        """The order of an ``exam-opened`` entry (JSON gave lists where the order has tuples)."""
        values = dict(order)
        values["ris_protocol_codes"] = tuple(map(tuple, values.get("ris_protocol_codes", ())))
        if values.get("ris_item") is not None:
            values["ris_item"] = WorklistItem.from_dict(values["ris_item"])
        return cls(**values)


@dataclass(frozen=True)
class ContrastRecord:
    """One contrast administration as given (the Contrast/Bolus module, the MPPS billing)."""

    number: int
    agent: str
    programmed_ml: float
    delivered_ml: float
    rate_ml_min: float
    started_at: str  # UTC ISO 8601
    stopped_at: str
    peak_pressure_kpa: float | None
    completed: bool
    reason: str
    event_codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExamSnapshot:
    """The exam as last journaled, published after every entry: what the console reads
    without waiting for a command in progress, and what the reporting works from."""

    state: ExamState
    order: ExamOrder | None
    facts: ExamFacts
    journal_fault: str | None
    contrast: tuple[ContrastRecord, ...] = ()
    exposure_ids: frozenset[int] = frozenset()  #: the dose-log rows this exam noted
    discontinuation_reason: str | None = None  #: a CID 9301 code value
    fault_reason: str | None = None  #: why the exam is in FAULT (None in any other state)


def exam_exposures(
    dose_log: DoseLog, study: str, exposure_ids: Collection[int]
) -> list[dict[str, Any]]:
    """The dose-log rows of one exam (its Study Instance UID): those it noted
    (``exposure_ids``). A repeat exam of the same order shares the study, not the rows."""
    return [row for row in dose_log.list_exposures(study=study) if int(row["id"]) in exposure_ids]


class ExamReporter(Protocol):
    """Reports the exam outward (MPPS, dose report, PACS). ``sync`` must be idempotent: it is
    called after every transition, after new exposures and at start-up, and enqueues only
    what the outbox does not hold yet."""

    def sync(self, exam: ExamSnapshot) -> None: ...


#: Scheduled Procedure Step ID is SH: at most 16 characters.
_SPS_ID_MAX = 16


def phase_sps_id(exam_id: str, phase: ExamState) -> str:
    """The SPS ID of one imaging phase of an exam: ``<exam>-<PRE|POST1|POST2>``.

    The exam part is the exam ID when it fits (at most 10 characters: SH is 16), else the first
    10 hexadecimal digits of its SHA-256, so that every exam keeps its own steps.
    """
    suffix = PHASE_STEPS[phase]
    room = _SPS_ID_MAX - len("-POST1")
    key = exam_id if len(exam_id) <= room else hashlib.sha256(exam_id.encode()).hexdigest()[:room]
    return f"{key}-{suffix}"


#: States in which cannulation and the air purge are confirmed (before an injection).
CONFIRMATION_STATES = frozenset({S.CANNULATION, S.POST_INJECTION_1})


def service_refusal(command: str, state: ExamState) -> str | None:
    """Why a command that is no event of the machine is refused in ``state`` (None: allowed).

    The checklist answers, the confirmations and the operator stop add no transition; their
    rules live here, read by the service and by the console alike.
    """
    if state is S.FAULT:
        return "acknowledge the fault first"
    if command == "answer-checklist" and state is not S.CHECKLIST:
        return f"the checklist is answered in checklist, not {state.value}"
    if command in ("confirm-cannulation", "confirm-air-purge") and state not in CONFIRMATION_STATES:
        what = command.removeprefix("confirm-")
        return f"{what} is confirmed before an injection, not in {state.value}"
    if command == "stop-injection" and not state.is_injecting:
        return "no injection is running"
    if command == "reset-injector" and (E.FAULT, state) in TRANSITIONS:
        return "during an exam an injector fault is acknowledged (acknowledge-fault)"
    return None


def checklist_blockers(answers: Mapping[str, bool]) -> list[str]:
    """The blocking items answered yes or not answered (procedure.md, pre-exam checklist)."""
    blockers = []
    for item, blocking in CHECKLIST.items():
        if not blocking:
            continue
        if item == "contrast_allergy" and answers.get("premedication_documented"):
            continue
        if answers.get(item, True):
            blockers.append(item)
    return blockers


@dataclass
class ExamRecord:
    """The exam as the journal tells it; :meth:`apply` is the only thing that changes it."""

    order: ExamOrder | None = None
    state: ExamState = S.IDLE
    checklist_passed: bool = False
    exposures_by_phase: dict[str, int] = field(default_factory=dict)
    noted_exposures: dict[int, str] = field(default_factory=dict)  # exposure id -> phase
    cannulation_confirmed: bool = False
    air_purge_confirmed: bool = False
    injections_started: int = 0
    injection_running: dict[str, Any] | None = None  # started, not yet ended
    volume_given_ml: float = 0.0
    fault_phase: ExamState | None = None
    fault_reason: str | None = None
    discontinuation_reason: str | None = None
    contrast: list[ContrastRecord] = field(default_factory=list)
    #: The syringe: loaded at the last air purge (None before any, or in a journal older than
    #: the loaded volume: its nominal size then), and given from it since.
    syringe_loaded_ml: float | None = None
    syringe_given_ml: float = 0.0

    def apply(self, entry: Entry) -> None:
        """Fold one journal entry into the record (live and on replay alike)."""
        p = entry.payload
        if entry.kind == "exam-opened":
            self._reset()
            self.order = ExamOrder.from_json(p["order"])
        elif entry.kind == "transition":
            self.state = S(p["to"])
            if self.state is S.IDLE:  # the exam was closed: nothing of it carries over
                self._reset()
            if self.state is S.FAULT:
                self.fault_phase = S(p["from"])
            self.fault_reason = p.get("reason") if self.state is S.FAULT else None
            if p["event"] == E.DISCONTINUE.value:
                self.discontinuation_reason = p.get("reason_code")
        elif entry.kind == "checklist":
            self.checklist_passed = bool(p["passed"])
        elif entry.kind == "confirmation":
            setattr(self, f"{p['what'].replace('-', '_')}_confirmed", True)
            if p["what"] == "air-purge":  # only a new purge raises what the syringe holds
                self.syringe_loaded_ml = p.get("loaded_ml")
                self.syringe_given_ml = 0.0
        elif entry.kind == "exposure":
            self.noted_exposures[int(p["exposure_id"])] = str(p["phase"])
            if p["counted"]:
                phase = p["phase"]
                self.exposures_by_phase[phase] = self.exposures_by_phase.get(phase, 0) + 1
        elif entry.kind == "injection-started":
            self.injections_started += 1
            self.injection_running = dict(p)
            # Each injection needs its own air-purge confirmation: the syringe may be refilled
            # and the line re-primed before a second one (bubbles mimic filling defects).
            self.air_purge_confirmed = False
        elif entry.kind == "injection-corrected" and self.contrast:
            last = self.contrast[-1]
            delivered = float(p["delivered_ml"])
            self.volume_given_ml += delivered - last.delivered_ml
            self.syringe_given_ml += delivered - last.delivered_ml
            self.contrast[-1] = dataclasses.replace(last, delivered_ml=delivered)
        elif entry.kind == "injection-ended":
            started, self.injection_running = self.injection_running, None
            if p.get("not_started"):  # refused by the injector before RUN: not an injection
                self.injections_started -= 1
                self.air_purge_confirmed = True  # nothing went through the line
            elif started is not None:
                self.contrast.append(_contrast_record(started, p, entry))
            self.volume_given_ml += float(p["delivered_ml"])
            self.syringe_given_ml += float(p["delivered_ml"])

    def _reset(self) -> None:
        self.__dict__.update(vars(ExamRecord()))

    def facts(self, limits: Limits, injector_healthy: bool, syringe_ml: float) -> ExamFacts:
        """What the machine's interlocks look at (``syringe_ml``: the syringe's nominal size)."""
        loaded = syringe_ml if self.syringe_loaded_ml is None else self.syringe_loaded_ml
        return ExamFacts(
            checklist_passed=self.checklist_passed,
            pre_contrast_exposures=self.exposures_by_phase.get(S.PRE_CONTRAST.value, 0),
            post_injection_exposures=(
                self.exposures_by_phase.get(self.state.value, 0)
                if self.state in (S.POST_INJECTION_1, S.POST_INJECTION_2)
                else 0
            ),
            cannulation_confirmed=self.cannulation_confirmed,
            air_purge_confirmed=self.air_purge_confirmed,
            injector_healthy=injector_healthy,
            injections_started=self.injections_started,
            volume_given_ml=self.volume_given_ml,
            discontinuation_reason=self.discontinuation_reason,
            fault_phase=self.fault_phase,
            syringe_left_ml=loaded - self.syringe_given_ml,
            limits=limits,
        )


def _contrast_record(
    started: Mapping[str, Any], ended: Mapping[str, Any], entry: Entry
) -> ContrastRecord:
    return ContrastRecord(
        number=int(started["number"]),
        agent=str(started.get("agent", CONTRAST_AGENT)),
        programmed_ml=float(started["volume_ml"]),
        delivered_ml=float(ended["delivered_ml"]),
        rate_ml_min=float(started.get("rate_ml_min", 0.0)),
        started_at=str(started.get("started_at", "")),
        stopped_at=str(ended.get("ended_at") or entry.recorded_utc),
        peak_pressure_kpa=ended.get("peak_pressure_kpa"),
        completed=bool(ended.get("completed")),
        reason=str(ended.get("reason", "")),
        event_codes=tuple(ended.get("event_codes") or ()),
    )


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
        #: Why the disks cannot take an exam's writes now (None: they can): checked when an
        #: exam opens and before each injection (storage.FreeSpace).
        self._space_check = space_check
        self._unit_steps_in_progress = unit_steps_in_progress
        self._worklist = worklist
        self._dose_log = dose_log
        self._injector: InjectorABC | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.station_ae = station_ae
        self.limits = limits or Limits()
        self.syringe = syringe
        self.laterality_terms = parse_terms(laterality_terms)
        self._reporter = reporter
        self._uid_prefix = None if uid_root is None else uid_root.rstrip(".") + "."
        self._clock = clock
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every transition
        self._closing = threading.Event()
        self._status: InjectionStatus | None = None
        self._stop_requested = False
        self._journal_fault: str | None = None  # why the journal could not be written
        self._peak_pressure_kpa: float | None = None  # of the injection running
        self._injection_events: list[str] = []  # CID 71 codes seen during it
        self._watchers: list[threading.Thread] = []
        self._record = ExamRecord()
        self._published: ExamSnapshot | None = None
        self._replay()
        self._publish()
        self.attach_injector(injector)
        self._recover()

    # ------------------------------------------------------------------ introspection

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
        published = self._published
        assert published is not None
        facts = dataclasses.replace(published.facts, injector_healthy=self._injector_healthy())
        return dataclasses.replace(published, facts=facts, journal_fault=self._journal_fault)

    def _publish(self) -> None:
        record = self._record
        self._published = ExamSnapshot(
            record.state,
            record.order,
            record.facts(self.limits, False, self.syringe_ml),
            self._journal_fault,
            tuple(record.contrast),
            frozenset(record.noted_exposures),
            record.discontinuation_reason,
            record.fault_reason,
        )

    def view(self) -> ExamSnapshot | None:
        """The open exam, settled (None when no exam is open)."""
        with self._lock:
            self._settle()
            return self._view()

    def _view(self) -> ExamSnapshot | None:
        """The published snapshot of the open exam (current under the lock)."""
        published = self._published
        return published if published is not None and published.order is not None else None

    def contrast_administrations(self) -> tuple[ContrastRecord, ...]:
        """The injections given so far in the open exam, oldest first."""
        with self._lock:
            self._settle()
            return tuple(self._record.contrast)

    def facts(self) -> ExamFacts:
        with self._lock:
            self._settle()
            return self._facts()

    @property
    def journal_fault(self) -> str | None:
        """Why the journal cannot be written (None when it can): commands are refused."""
        return self._journal_fault

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
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            self._injector = injector
            if injector is not None:
                self._unsubscribe = injector.subscribe(self._on_injector_event)
                if self._record.order is not None and self._record.injection_running is None:
                    self._new_injector_session(self._record.volume_given_ml)

    def close(self) -> None:
        """Stop watching the injector (idempotent). Stores and injector stay open."""
        self._closing.set()
        for watcher in self._watchers:
            if watcher is not threading.current_thread():
                watcher.join(timeout=5.0)
        with self._lock:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

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
        exam = ExamOrder(
            exam_id=order.accession_number or order.sps_id,
            accession=order.accession_number,
            study_instance_uid=order.study_instance_uid or str(generate_uid()),
            patient_name=order.patient_name,
            patient_id=order.patient_id,
            patient_birth_date=order.patient_birth_date,
            patient_sex=order.patient_sex,
            side=side,
            requested_procedure_id=order.requested_procedure_id,
            requested_procedure_description=(
                order.requested_procedure_description or "Galactography"
            ),
            ris_sps_id=order.sps_id,
            ris_sps_description=order.sps_description,
            ris_protocol_codes=tuple((c.value, c.scheme, c.meaning) for c in order.protocol_codes),
            ris_item=order,
        )
        found = self.order_side(order)
        return self._open(E.SELECT_ORDER, exam, operator, (found, side_override_reason.strip()))

    def register_unscheduled(self, patient: Patient, side: str, operator: str) -> ExamOrder:
        """Open an exam for a patient registered at the console (no RIS order).

        The exam ID is made up locally from the clock: ``U`` + UTC date and time. The exam has
        no accession number (IHE's unscheduled case: none is invented for the images); its
        worklist steps, images and dose rows are tied to it by its own Study Instance UID.
        """
        exam_id = "U" + self._clock().strftime("%Y%m%d%H%M%S")
        exam = ExamOrder(
            exam_id=exam_id,
            accession="",
            study_instance_uid=str(generate_uid()),
            patient_name=patient.name,
            patient_id=patient.patient_id,
            patient_birth_date=patient.birth_date,
            patient_sex=patient.sex,
            side=side,
            scheduled=False,
        )
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
            exam = dataclasses.replace(exam, exam_id=self._unused_exam_id(exam.exam_id))
            args = {"exam_id": exam.exam_id, "side": exam.side}
            if laterality is not None and laterality[1]:
                args["side_override_reason"] = laterality[1]
            self._command(event.value, args, operator)
            if exam.side not in SIDES:
                self._refuse(event, f"the side must be one of {', '.join(SIDES)}", operator)
            self._refuse_if_disk_low(event, operator)
            target = self._check(event, self._facts(), operator)
            decision = None
            if laterality is not None:
                decision = self._laterality_decision(event, exam.side, *laterality, operator)
            exam = dataclasses.replace(
                exam,
                mpps_instance_uid=str(generate_uid(prefix=self._uid_prefix)),
                opened_at=self._clock().isoformat(),
            )
            self._append("exam-opened", {"order": dataclasses.asdict(exam)}, operator, exam.exam_id)
            if decision is not None:
                self._append("laterality", decision, operator)
            self._transition(event, target, operator)
            self._new_injector_session(0.0)
            # The exam ID is an accession number: identifying, so never above DEBUG.
            log.debug("exam %s opened", exam.exam_id)
            log.info("exam opened (%s breast)", exam.side)
            return exam

    def _laterality_decision(
        self, event: ExamEvent, chosen: str, found: OrderSide, override: str, operator: str
    ) -> dict[str, Any]:
        """Wrong side is not silent: the payload of the ``laterality`` entry, or the refusal of
        a side that disagrees with the order's without an override reason."""
        payload: dict[str, Any] = {
            "order_side": found.side,
            "chosen_side": chosen,
            "evidence": list(found.evidence),
        }
        if found.side is None:
            named = "names both sides" if found.conflicting else "names no side"
            return {**payload, "decision": f"the order {named}: the side was chosen explicitly"}
        if found.side == chosen:
            return {**payload, "decision": "the side chosen is the order's"}
        if override:
            decision = "the order's side was overridden"
            return {**payload, "decision": decision, "override_reason": override}
        reason = (
            f"the order is for the {SIDE_NAMES[found.side]} breast ({found.side}), not the "
            f"{SIDE_NAMES[chosen]} ({chosen}): choose {found.side}, or give the reason to "
            "override the order's side"
        )
        details = {"code": "laterality-mismatch", "order_side": found.side, "chosen_side": chosen}
        self._refuse(event, reason, operator, details)

    def _unused_exam_id(self, wanted: str) -> str:
        """``wanted`` (the accession), or ``wanted-2``, ``-3``… when an earlier exam of the
        same order is in the journal (an exam repeated after a discontinuation): each exam
        keeps its own journal entries, worklist steps and MPPS."""
        candidate, number = wanted, 1
        while any(e.kind == "exam-opened" for e in self._journal.entries(exam_id=candidate)):
            number += 1
            candidate = f"{wanted}-{number}"
        return candidate

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
                self._refuse(E.PASS_CHECKLIST, reason, operator)
            blockers = checklist_blockers(answers)
            overridden = bool(override and override.physician.strip() and override.reason.strip())
            passed = not blockers or overridden
            payload = {
                "answers": dict(answers),
                "blocking": blockers,
                "override": dataclasses.asdict(override) if override else None,
                "passed": passed,
            }
            self._append("checklist", payload, operator)
            return passed

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
        refusal = None
        if not (math.isfinite(loaded) and 0 < loaded <= capacity + 1e-9):
            refusal = (
                f"the syringe loaded must hold more than 0 and at most {capacity:g} mL (a "
                f"{self.syringe} syringe), not {loaded:g} mL"
            )
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
                self._refuse(E.START_INJECTION, reason, operator)
            self._append("confirmation", {"what": what, **(detail or {})}, operator)

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
                self._facts(), requested_volume_ml=volume_ml, requested_rate_ml_min=rate_ml_min
            )
            target = self._check(E.START_INJECTION, facts, operator)
            self._refuse_if_disk_low(E.START_INJECTION, operator)
            injector = self._injector
            assert injector is not None  # injector_healthy was checked
            try:
                injector.configure(self.syringe, rate_ml_min, volume_ml)
                injector.arm()
            except DriverError as exc:  # nothing was delivered
                self._refuse(E.START_INJECTION, f"the injector did not arm: {exc}", operator)
            number = self._record.injections_started + 1
            started = {"number": number, **args, "agent": CONTRAST_AGENT}
            started["started_at"] = self._clock().isoformat()
            try:
                self._append("injection-started", started, operator)
            except JournalUnavailable:
                self._disarm_quietly(injector)  # nothing may start unrecorded
                raise
            self._stop_requested = False
            self._peak_pressure_kpa = None
            self._injection_events = []
            try:
                status = injector.start()
            except StateError as exc:  # RUN not executed (arming lapsed, ?NA, a check before it)
                self._disarm_quietly(injector)
                ended = {"delivered_ml": 0.0, "completed": False, "reason": str(exc)}
                self._append("injection-ended", {**ended, "not_started": True}, operator)
                self._refuse(E.START_INJECTION, f"the injector did not start: {exc}", operator)
            except DriverError as exc:
                # Whether RUN was executed is unknown; the driver sent STP. Count it as given.
                self._transition(E.START_INJECTION, target, operator)
                self._end_injection(volume_ml, False, f"start unconfirmed: {exc}", None, operator)
                return
            # Watched before anything else is journaled: a journal failure from here on finds
            # the injection running and stops it first (_journal_failed).
            self._status = status
            watcher = threading.Thread(
                target=self._watch, args=(status,), name=f"exam-injection-{number}", daemon=True
            )
            self._watchers.append(watcher)
            watcher.start()
            self._transition(E.START_INJECTION, target, operator)

    def _refuse_if_disk_low(self, event: ExamEvent, operator: str) -> None:
        shortfall = self._space_check() if self._space_check is not None else None
        if shortfall is not None:
            self._refuse(event, f"not enough disk space: {shortfall}", operator)

    @staticmethod
    def _disarm_quietly(injector: InjectorABC) -> None:
        if injector.state is not InjectorState.ARMED:
            return
        try:
            injector.disarm()
        except DriverError as exc:
            log.error("injector not disarmed (its arming times out by itself): %s", exc)

    def stop_injection(self, operator: str) -> None:
        """Operator stop (fullness, pain, resistance, reflux): STP, then INJECTION_STOPPED.

        ``STP`` goes out first, before the service's lock and the journal: a command in
        progress or a slow journal never delays it. The command is journaled after.
        """
        sent = self._stop_now("operator stop", by_operator=True)
        with self._lock:
            self._settle()
            self._command("stop-injection", {}, operator)
            if sent and self._status is None:
                return  # stopped; its end was already recorded (by the watcher, or just now)
            reason = service_refusal("stop-injection", self._record.state)
            if reason is None and self._status is None:
                reason = "no injection is running"
            if reason is not None:
                self._refuse(E.INJECTION_STOPPED, reason, operator)
            self._stop_injector(operator, already_sent=True)

    def _stop_now(self, reason: str, *, by_operator: bool = False) -> bool:
        """Send STP at once, without the lock, when an injection is running or the injector
        says it is delivering (whatever the exam believes). ``by_operator``: the injection
        ends as stopped by the operator; otherwise (a logging fault) as a fault. Whether STP
        was sent."""
        injector, status = self._injector, self._status
        if injector is None:
            return False
        running = status is not None and not status.done
        if not running and injector.state not in (InjectorState.INJECTING, InjectorState.HOLD):
            return False
        if running and by_operator:
            self._stop_requested = True
        try:
            injector.stop(reason)
        except DriverError as exc:
            log.error("injector stop not confirmed: %s", exc)
        return True

    def _stop_injector(
        self, operator: str, reason: str = "operator stop", *, already_sent: bool = False
    ) -> None:
        injector, status = self._injector, self._status
        assert injector is not None and status is not None
        self._stop_requested = True
        if not already_sent:
            try:
                injector.stop(reason)
            except DriverError as exc:
                log.error("injector stop not confirmed: %s", exc)
        try:
            status.wait(STOP_CONFIRM_TIMEOUT_S)
        except DriverTimeoutError:
            # The driver could not confirm the stop (its watchdog stops the motor anyway):
            # the exam stops in FAULT; the outcome is journaled whenever it is reported.
            reason = "the injector did not confirm the stop"
            log.error("%s within %s s", reason, STOP_CONFIRM_TIMEOUT_S)
            self._transition_checked(E.FAULT, operator, reason=reason)
            return
        self._settle(operator)

    def _watch(self, status: InjectionStatus) -> None:
        while not self._closing.is_set():
            try:
                status.wait(0.05)
            except DriverTimeoutError:
                self._sample_pressure()
                continue
            try:
                with self._lock:
                    self._settle()
            except JournalUnavailable:  # reported once; the outcome stays pending: retried
                self._closing.wait(JOURNAL_RETRY_S)
                continue
            except Exception:  # e.g. a worklist write after the transition: retried too
                log.exception("injection outcome not fully recorded yet; retrying")
                self._closing.wait(JOURNAL_RETRY_S)
                continue
            return

    def _new_injector_session(self, given_ml: float) -> None:
        """The driver's own per-exam cap follows the exam (a second line of defence behind the
        exam's interlock, which counts the exam's volume from the journal)."""
        injector = self._injector
        if injector is None:
            return
        try:
            injector.new_session(given_ml)
        except DriverError as exc:
            log.error("the injector's per-exam volume was not reset: %s", exc)

    def _sample_pressure(self) -> None:
        """Track the peak line pressure of the running injection (for its record)."""
        injector = self._injector
        if injector is None:
            return
        try:
            pressure = injector.progress().pressure_kpa
        except DriverError:
            return
        if pressure is not None:
            self._peak_pressure_kpa = max(pressure, self._peak_pressure_kpa or 0.0)

    def _settle(self, operator: str | None = None) -> None:
        """Feed the outcome of a finished injection to the machine (once). Under the lock."""
        status = self._status
        if status is None or not status.done:
            return
        result = status.result
        assert result is not None
        # Kept pending until journaled: a journal failure here is retried, never lost.
        self._end_injection(
            result.delivered_ml,
            result.completed,
            result.reason,
            result.event.code,
            operator,
            confirmed=result.confirmed,
        )
        self._status = None

    def _end_injection(
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
        stopped = not completed and self._stop_requested and confirmed
        self._sample_pressure()
        if self._record.injection_running is not None:  # not yet journaled (or a retry)
            ended = {
                "delivered_ml": delivered_ml,
                "completed": completed,
                "reason": reason,
                "event_code": code,
                "stopped_by_operator": stopped,
                "ended_at": self._clock().isoformat(),
                "peak_pressure_kpa": self._peak_pressure_kpa,
                "event_codes": list(self._injection_events),
                "unconfirmed": not confirmed,
            }
            self._append("injection-ended", ended, operator)
        if not self._record.state.is_injecting:
            return  # already in FAULT (stop unconfirmed, or a restart): the record is enough
        if completed:
            self._transition_checked(E.INJECTION_COMPLETED, operator)
        elif stopped:
            self._transition_checked(E.INJECTION_STOPPED, operator)
            self._reset_injector_after_stop()
        else:
            self._transition_checked(E.FAULT, operator, reason=reason)

    def _reset_injector_after_stop(self) -> None:
        """An operator stop leaves the driver in ERROR (aborted, reported): clear it."""
        injector = self._injector
        if injector is None or injector.state is not InjectorState.ERROR:
            return
        try:
            injector.acknowledge()
        except DriverError as exc:
            log.error("injector not reset after the stop: %s", exc)

    def _on_injector_event(self, event: RecordedEvent) -> None:
        """Journal every injector event with its CID 71 code (called on the driver's thread)."""
        if self._record.injection_running is not None:
            self._injection_events.append(event.code)
        try:
            self._journal.append(
                "injector-event",
                {"code": event.code, "meaning": event.meaning, "detail": event.detail},
                exam_id=self.exam_id,
                now=self._clock(),
            )
        except JournalError as exc:
            self._journal_failed(exc, on_driver_thread=True)
        except Exception:
            log.exception("injector event not journaled")

    # ------------------------------------------------------------------ faults, ending

    def check_injector(self) -> None:
        """An injector that went to ERROR between injections (link lost, a device alarm)
        stops the exam in FAULT, so that the operator sees it and acknowledges it (which resets
        the injector). Called by the controller's tick, never from the driver's own thread."""
        with self._lock:
            self._settle()
            injector, state = self._injector, self._record.state
            if injector is None or injector.state is not InjectorState.ERROR:
                return
            if state.is_injecting or (E.FAULT, state) not in TRANSITIONS:
                return  # an injection's outcome is settled by its watcher; no exam: reset
            reason = f"injector fault: {injector.reason or 'error'}"
            self._transition_checked(E.FAULT, None, reason=reason)

    def _correct_last_injection(self, injector: InjectorABC, operator: str) -> None:
        """A link lost during the last injection is back: the pump's counter may say more was
        given than was last polled. The record follows it upward (never down)."""
        result, given = injector.last_result, self._record.contrast
        if result is None or not given or self._record.injection_running is not None:
            return
        last = given[-1]
        if result.delivered_ml <= last.delivered_ml + VOLUME_CORRECTION_MIN_ML:
            return
        payload = {
            "number": last.number,
            "delivered_ml": result.delivered_ml,
            "previous_ml": last.delivered_ml,
            "reason": "read back from the pump after the link came back",
        }
        self._append("injection-corrected", payload, operator)
        log.warning(
            "injection %d: %.3f mL given (%.3f mL recorded before the link loss)",
            last.number,
            result.delivered_ml,
            last.delivered_ml,
        )

    def reset_injector(self, operator: str) -> None:
        """With no exam in progress (idle, completed, discontinued): clear the injector's error
        (reopening a lost link). During an exam the fault is acknowledged instead."""
        with self._lock:
            self._settle()
            self._command("reset-injector", {}, operator)
            reason = service_refusal("reset-injector", self._record.state)
            injector = self._injector
            if reason is None and (injector is None or injector.state is not InjectorState.ERROR):
                reason = "the injector is not in error"
            if reason is not None:
                self._refuse(E.ACKNOWLEDGE_FAULT, reason, operator)
            assert injector is not None
            try:
                injector.acknowledge()
            except DriverError as exc:
                self._refuse(
                    E.ACKNOWLEDGE_FAULT, f"the injector could not be reset: {exc}", operator
                )
            self._append("injector-reset", {"state": injector.state.value}, operator)

    def acknowledge_fault(self, operator: str) -> None:
        """The operator has seen the fault: clear the injector's error, leave FAULT."""
        with self._lock:
            self._settle()
            self._command(E.ACKNOWLEDGE_FAULT.value, {}, operator)
            target = self._check(E.ACKNOWLEDGE_FAULT, self._facts(), operator)
            injector = self._injector
            if injector is not None and injector.state is InjectorState.ERROR:
                try:
                    injector.acknowledge()
                except DriverError as exc:
                    self._refuse(
                        E.ACKNOWLEDGE_FAULT, f"the injector could not be reset: {exc}", operator
                    )
                self._correct_last_injection(injector, operator)
            self._transition(E.ACKNOWLEDGE_FAULT, target, operator)

    def complete(self, operator: str, override_reason: str = "") -> None:
        """Complete the exam; every exposure already stored is read in first (its final MPPS
        and dose report are built from them). Refused while a unit step of the exam is still
        in progress (:mod:`acquisition.unit_steps`) unless ``override_reason`` says why."""
        with self._lock:
            self._settle()
            override_reason = override_reason.strip()
            args = {"override_reason": override_reason} if override_reason else {}
            self._command(E.COMPLETE.value, args, operator)
            self._note_exposures()
            target = self._check(E.COMPLETE, self._facts(), operator)
            unit_steps = self._unit_steps_in_progress
            busy = unit_steps(self._record.order) if unit_steps is not None else []
            if busy and not override_reason:
                details = {"code": UNIT_STEP_IN_PROGRESS, "steps": ", ".join(busy)}
                self._refuse(E.COMPLETE, busy_refusal(busy), operator, details)
            if busy:
                override = {"what": UNIT_STEP_IN_PROGRESS, "steps": busy, "reason": override_reason}
                self._append("override", override, operator)
            self._transition(E.COMPLETE, target, operator)

    def discontinue(self, reason_code: str, operator: str) -> None:
        """Discontinue with a CID 9301 reason; a running injection is stopped first (STP before
        the lock and the journal, as for an operator stop)."""
        self._stop_now(f"exam discontinued ({reason_code})", by_operator=True)
        with self._lock:
            self._settle()
            self._command(E.DISCONTINUE.value, {"reason_code": reason_code}, operator)
            known = {code.value for code in DISCONTINUATION_REASONS}
            if reason_code not in known:
                self._refuse(E.DISCONTINUE, f"{reason_code!r} is not a CID 9301 code", operator)
            if self._record.state.is_injecting and self._status is not None:
                self._stop_injector(operator, already_sent=True)
            self._note_exposures()  # the final report holds every exposure already stored
            facts = dataclasses.replace(self._facts(), discontinuation_reason=reason_code)
            target = self._check(E.DISCONTINUE, facts, operator)
            self._transition(E.DISCONTINUE, target, operator, reason_code=reason_code)

    def close_exam(self, operator: str) -> None:
        """Leave the finished exam (COMPLETED or DISCONTINUED): the room is free.

        Refused while the exam's final report (MPPS, dose report) is not in the outbox: once
        closed, the exam is no longer the open one and nothing would queue it any more.
        """
        with self._lock:
            self._settle()
            self._command(E.CLOSE.value, {}, operator)
            target = self._check(E.CLOSE, self._facts(), operator)
            view = self._view()
            if self._reporter is not None and view is not None:
                try:
                    self._reporter.sync(view)
                except Exception as exc:
                    log.exception("the exam's report could not be queued")
                    reason = f"the exam's report could not be queued ({exc}); try again"
                    self._refuse(E.CLOSE, reason, operator)
            self._transition(E.CLOSE, target, operator)
            self._journal.witness_head()  # a rollback past this exam shows (issue 12 §11)

    def _simple(self, event: ExamEvent, operator: str) -> None:
        with self._lock:
            self._settle()
            self._command(event.value, {}, operator)
            self._transition_checked(event, operator)

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
        if self._dose_log is None:
            return 0
        order = self._record.order
        new = self._note_strays(None if order is None else order.study_instance_uid)
        if order is None:
            return new
        for row in self._dose_log.unannotated_exposures(study=order.study_instance_uid):
            exposure_id = int(row["id"])
            noted = self._record.noted_exposures.get(exposure_id)
            if noted is not None:  # journaled just before a crash: finish the annotation
                self._dose_log.annotate(exposure_id, phase=noted)
                continue
            sps_id = row.get("sps_id")
            step_phase = self._phase_of_sps(sps_id)
            counted = step_phase is not None and step_phase is self._record.state
            phase = step_phase.value if counted and step_phase else UNEXPECTED
            payload = {
                "exposure_id": exposure_id,
                "sps_id": sps_id,
                "phase": phase,
                "counted": counted,
            }
            self._append("exposure", payload, None)
            self._dose_log.annotate(exposure_id, phase=phase)
            new += 1
        if new:
            self._report()
        return new

    def _note_strays(self, open_study: str | None) -> int:
        """Exposures of no open exam (before any exam, after one was closed, another patient's):
        kept, annotated ``unexpected``, journaled without an exam — flagged for review."""
        assert self._dose_log is not None
        strays = self._dose_log.unannotated_exposures(exclude_study=open_study)
        for row in strays:
            exposure_id = int(row["id"])
            payload = {
                "exposure_id": exposure_id,
                "sps_id": row.get("sps_id"),
                "phase": UNEXPECTED,
                "counted": False,
                "why": "no open exam" if open_study is None else "not the open exam",
            }
            try:
                self._journal.append("exposure", payload, exam_id=None, now=self._clock())
            except JournalError as exc:
                self._journal_failed(exc)
                raise JournalUnavailable(f"the journal cannot be written ({exc})") from exc
            self._dose_log.annotate(exposure_id, phase=UNEXPECTED)
        if strays:
            log.warning("%d exposure(s) of no open exam: kept and flagged", len(strays))
        return len(strays)

    def _phase_of_sps(self, sps_id: str | None) -> ExamState | None:
        for state in PHASE_STEPS:
            if sps_id is not None and sps_id == self.sps_id(state):
                return state
        return None

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
        now = self._clock()
        side = {"L": "left", "R": "right"}[order.side]
        contrast = phase is not S.PRE_CONTRAST
        step = ScheduledStep(
            sps_id=self.sps_id(phase),
            sps_start_date=now.strftime("%Y%m%d"),
            sps_start_time=now.strftime("%H%M%S"),
            station_ae=self.station_ae,
            sps_description=f"Galactography {phase.value}, {side} CC and ML",
            protocol_codes=PHASE_PROTOCOLS[phase],
            requested_contrast_agent="Iohexol 300" if contrast else "",
            requested_procedure_id=order.requested_procedure_id,
            requested_procedure_description=order.requested_procedure_description,
            requested_procedure_codes=(MAMMARY_DUCTOGRAM,),
            study_instance_uid=order.study_instance_uid,
            accession_number=order.accession,
            patient_name=order.patient_name,
            patient_id=order.patient_id,
            patient_birth_date=order.patient_birth_date,
            patient_sex=order.patient_sex,
        )
        return with_ris_request(step, order.ris_item)  # what the RIS gave, for the unit

    def _sync_worklist(self, before: ExamState, after: ExamState) -> None:
        """Withdraw the step of the phase left, publish the step of the phase entered."""
        if before is after:
            return
        if before in PHASE_STEPS:
            sps_id = self.sps_id(before)
            self._worklist.withdraw(sps_id)
            self._append("worklist", {"action": "withdraw", "sps_id": sps_id}, None)
        if after in PHASE_STEPS:
            step = self.phase_step(after)
            self._worklist.publish(step)
            self._append("worklist", {"action": "publish", "sps_id": step.sps_id}, None)

    # ------------------------------------------------------------------ journal plumbing

    def _append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        operator: str | None,
        exam_id: str | None = None,
    ) -> Entry:
        """Journal one entry (durable on return) and fold it into the record.

        A journal that cannot be written is a logging fault (:meth:`_journal_failed`): the
        entry is not applied, the caller's step stops with :class:`JournalUnavailable`.
        """
        try:
            entry = self._journal.append(
                kind,
                payload,
                exam_id=exam_id or self.exam_id,
                operator=operator,
                now=self._clock(),
            )
        except JournalError as exc:
            self._journal_failed(exc)
            raise JournalUnavailable(
                f"the journal cannot be written ({exc}): the exam is paused"
            ) from exc
        self._record.apply(entry)
        self._publish()
        return entry

    def _journal_failed(self, exc: Exception, *, on_driver_thread: bool = False) -> None:
        """A logging fault: a running injection is stopped first; commands are refused until
        the journal can be written again (then the exam stops in FAULT).

        On the driver's own thread (an event being journaled, maybe in the middle of the
        driver's abort) the stop is handed to a thread of its own: never re-entered there.
        """
        if self._journal_fault is None:
            log.critical("journal write failed: %s; commands refused until it recovers", exc)
        self._journal_fault = str(exc)
        if on_driver_thread:
            threading.Thread(
                target=self._stop_now, args=("journal write failed",), daemon=True
            ).start()
        else:
            self._stop_now("journal write failed")

    def _command(self, command: str, args: Mapping[str, Any], operator: str) -> None:
        self._resume_after_journal_fault(operator)
        self._append("command", {"command": command, **args}, operator)

    def _resume_after_journal_fault(self, operator: str) -> None:
        """The journal failed earlier: once it can be written, the fault is recorded and the
        exam stops in FAULT (acknowledged like any other) before the command is considered."""
        fault = self._journal_fault
        if fault is None:
            return
        self._journal_fault = None
        try:
            self._settle(operator)
            payload = {"what": "journal write failed", "detail": fault}
            self._append("logging-fault", payload, operator)
            if (E.FAULT, self._record.state) in TRANSITIONS:
                self._transition_checked(E.FAULT, operator, reason=f"journal write failed: {fault}")
        except JournalUnavailable:
            raise

    def _facts(self) -> ExamFacts:
        return self._record.facts(self.limits, self._injector_healthy(), self.syringe_ml)

    def _injector_healthy(self) -> bool:
        injector = self._injector
        return injector is not None and injector.link_up and injector.state in _INJECTOR_IDLE

    def _refuse(
        self,
        event: ExamEvent,
        reason: str,
        operator: str | None,
        details: Mapping[str, str] | None = None,
    ) -> NoReturn:
        state = self._record.state
        payload = {"event": event.value, "state": state.value, "reason": reason, **(details or {})}
        self._append("refusal", payload, operator)
        log.info("%s refused in %s: %s", event.value, state.value, reason)
        raise Refused(event, state, reason, details)

    def _check(self, event: ExamEvent, facts: ExamFacts, operator: str | None) -> ExamState:
        try:
            return next_state(self._record.state, event, facts)
        except Refused as refused:
            self._refuse(event, refused.reason, operator)

    def _transition(
        self, event: ExamEvent, target: ExamState, operator: str | None, **detail: Any
    ) -> None:
        before = self._record.state
        payload = {"event": event.value, "from": before.value, "to": target.value, **detail}
        self._append("transition", payload, operator)
        self._sync_worklist(before, target)
        self._report()
        self._changed.notify_all()
        log.info("exam: %s -> %s (%s)", before.value, target.value, event.value)

    def _transition_checked(self, event: ExamEvent, operator: str | None, **detail: Any) -> None:
        target = self._check(event, self._facts(), operator)
        self._transition(event, target, operator, **detail)

    # ------------------------------------------------------------------ restart

    def _replay(self) -> None:
        """Rebuild the open exam (the last one opened, unless it was closed) from the journal."""
        opened = self._journal.last("exam-opened")
        last = opened.exam_id if opened is not None else None
        if last is None:
            return
        record = ExamRecord()
        for entry in self._journal.entries(exam_id=last):
            record.apply(entry)
        if record.state is not S.IDLE:
            self._record = record
            log.info("exam resumed in %s", record.state.value)

    def _recover(self) -> None:
        """An injection the journal shows running did not survive the restart: never restart
        it; count its programmed volume as given and stop the exam in FAULT."""
        if self._record.order is not None:
            self._restore_worklist()
            self._report()  # a crash may have come between a transition and its messages
        running = self._record.injection_running
        if running is None:
            return
        with self._lock:
            self._append(
                "injection-ended",
                {
                    "delivered_ml": float(running["volume_ml"]),
                    "completed": False,
                    "reason": INTERRUPTED_BY_RESTART + " (programmed volume counted as given)",
                    "event_code": None,
                    "stopped_by_operator": False,
                },
                None,
            )
            if self._record.state is not S.FAULT:
                self._transition_checked(E.FAULT, None, reason=INTERRUPTED_BY_RESTART)
            self._new_injector_session(self._record.volume_given_ml)

    def report(self) -> None:
        """Bring the worklist and the outward reporting up to date (idempotent; the
        controller's tick repairs what a failed write left behind)."""
        with self._lock:
            self._settle()
            if self._record.order is not None:
                self._restore_worklist()
            self._report()

    def _report(self) -> None:
        """Let the reporter enqueue what the outbox lacks. Its failure never stops the exam:
        the outbox is durable and the next sync (every transition, every tick) catches up."""
        view = self._view()
        if self._reporter is None or view is None:
            return
        try:
            self._reporter.sync(view)
        except Exception:
            log.exception("exam reporting failed; retried at the next sync")

    def _restore_worklist(self) -> None:
        """A crash, or a failed worklist write, may have come between a transition and its
        worklist change: offer only the current phase's step (idempotent: a step already
        offered is left as it is)."""
        for phase in PHASE_STEPS:
            sps_id = self.sps_id(phase)
            if phase is self._record.state:
                if self._worklist.get(sps_id) is None:
                    self._worklist.publish(self.phase_step(phase))
            elif self._worklist.get(sps_id) is not None:  # no write when nothing to withdraw
                self._worklist.withdraw(sps_id)
