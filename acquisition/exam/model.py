"""The exam's values and tables: what the service, the reporting, the console and the demo share.

Nothing here does I/O or holds a lock: the imaging phases and their worklist step IDs, the
checklist, the order an exam is opened with, its contrast administrations, the snapshot the
service publishes after every journal entry, the errors of the exam service, and the rules of
the commands that are no event of the machine (:func:`service_refusal`). Importers take these
from here, never from :mod:`acquisition.exam.service`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from acquisition.exam_machine import TRANSITIONS, ExamEvent, ExamFacts, ExamState
from dicom_nodes.datasets.codes import MODIFIER_MAGNIFICATION, VIEW_CC, VIEW_ML, Code
from dicom_nodes.datasets.identity import Patient, flatten_patient, unflatten_patient
from dicom_nodes.hospital.mwl_scu import WorklistItem

if TYPE_CHECKING:
    from acquisition.dose_log import DoseLog

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
SIDES = ("L", "R")


class ExamError(Exception):
    """Base of the exam service's errors (a refusal by the machine is :class:`Refused`)."""


class JournalUnavailable(ExamError):
    """The journal cannot be written: the injector was stopped and every command is refused
    until it can be written again; the exam then stops in FAULT (a logging fault)."""


class ChecklistError(ExamError, ValueError):
    """A checklist answer names an unknown item."""


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
    patient: Patient
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

    def to_json(self) -> dict[str, Any]:
        """The order as journaled in ``exam-opened``: its patient, and the RIS item's, under
        the flat keys every journal has (:data:`~dicom_nodes.datasets.identity.PATIENT_KEYS`)."""
        values = flatten_patient(dataclasses.asdict(self))
        if self.ris_item is not None:
            values["ris_item"] = flatten_patient(dataclasses.asdict(self.ris_item))
        return values

    @classmethod
    def from_json(cls, order: Mapping[str, Any]) -> ExamOrder:
        """The order of an ``exam-opened`` entry (JSON gave lists where the order has tuples):
        the inverse of :meth:`to_json`."""
        values = unflatten_patient(order)
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
    injection_started: str | None = None  #: when the running injection started (UTC ISO 8601)


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


def checklist_entry(
    answers: Mapping[str, bool], override: PhysicianOverride | None
) -> dict[str, Any]:
    """The ``checklist`` payload: the answers, the blocking items, the override, and whether
    the checklist passes (no blocking item present or unanswered, or a physician override with
    a reason for those that are)."""
    blockers = checklist_blockers(answers)
    overridden = bool(override and override.physician.strip() and override.reason.strip())
    return {
        "answers": dict(answers),
        "blocking": blockers,
        "override": dataclasses.asdict(override) if override else None,
        "passed": not blockers or overridden,
    }


def syringe_refusal(loaded_ml: float, capacity_ml: float, syringe: str) -> str | None:
    """Why ``loaded_ml`` cannot be what a ``syringe`` syringe holds (None: it can)."""
    if math.isfinite(loaded_ml) and 0 < loaded_ml <= capacity_ml + 1e-9:
        return None
    return (
        f"the syringe loaded must hold more than 0 and at most {capacity_ml:g} mL (a "
        f"{syringe} syringe), not {loaded_ml:g} mL"
    )


class Operator(str):
    """An operator's name as the journal's ``operator`` column keeps it, with ``origin``: where
    the command came from (the console's client address, session and role), which the exam's
    ledger adds to every entry the command writes (key ``console``). A plain ``str`` operator
    (the demo's script, a test) adds nothing."""

    origin: Mapping[str, Any]

    def __new__(cls, name: str, origin: Mapping[str, Any]) -> Operator:
        made = super().__new__(cls, name)
        made.origin = dict(origin)
        return made


def operator_origin(operator: object) -> dict[str, Any]:
    """What an :class:`Operator` adds to a journal entry's payload (nothing for a plain name)."""
    if isinstance(operator, Operator):
        return {"console": dict(operator.origin)}
    return {}
