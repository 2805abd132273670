"""The galactography exam as a pure state machine (procedure.md; style.md §4).

States and events are Enums; ``TRANSITIONS`` maps ``(event, state)`` to the next state and the
interlock that must hold, each entry commented with the clinical rule it encodes. The machine
does no I/O: the exam service performs the action (inject, MPPS, store), then feeds the event
that reports the outcome. :func:`next_state` returns the next state or raises
:class:`Refused` naming the rule; every pair not in the table is refused too, and the state is
left unchanged. ``docs/exam-states.md`` is rendered from this table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from device_drivers.quantities import duration_refusal, range_refusal


class ExamState(enum.Enum):
    IDLE = "idle"  # no exam open
    CHECKLIST = "checklist"  # order selected; pre-exam checklist being answered
    PRE_CONTRAST = "pre-contrast"  # plain images before any contrast
    CANNULATION = "cannulation"  # duct cannulated, line purged of air
    INJECTION_1 = "injection-1"  # injector running the first injection
    POST_INJECTION_1 = "post-injection-1"  # images after the first injection
    INJECTION_2 = "injection-2"  # optional second injection
    POST_INJECTION_2 = "post-injection-2"  # images after the second injection
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"
    FAULT = "fault"  # injector or logging fault; left only by operator acknowledgement

    @property
    def is_final(self) -> bool:
        return self in (ExamState.COMPLETED, ExamState.DISCONTINUED)

    @property
    def is_injecting(self) -> bool:
        return self in (ExamState.INJECTION_1, ExamState.INJECTION_2)


class ExamEvent(enum.Enum):
    SELECT_ORDER = "select-order"  # operator picks a RIS worklist order
    REGISTER_UNSCHEDULED = "register-unscheduled"  # operator registers a patient at the console
    PASS_CHECKLIST = "pass-checklist"  # operator submits a passing checklist
    FINISH_PRE_CONTRAST = "finish-pre-contrast"  # operator: plain images done
    START_INJECTION = "start-injection"  # operator's explicit start; the injector was started
    INJECTION_COMPLETED = "injection-completed"  # injector reached the programmed volume
    INJECTION_STOPPED = "injection-stopped"  # operator stopped early (fullness, pain, reflux)
    FAULT = "fault"  # injector fault or link loss, or a journal that cannot be written
    ACKNOWLEDGE_FAULT = "acknowledge-fault"  # operator acknowledges the fault
    COMPLETE = "complete"  # operator closes the exam as complete
    DISCONTINUE = "discontinue"  # operator discontinues with a CID 9301 reason
    CLOSE = "close"  # operator leaves the finished exam; the room is free


@dataclass(frozen=True)
class Limits:
    """Contrast limits (procedure.md; injector-protocol.md §9). The minimums and the longest
    injection keep every value on the pump's wire exact to 1 % and never 0 (issue 8)."""

    max_volume_per_injection_ml: float = 3.0
    max_volume_per_exam_ml: float = 5.0
    max_injections: int = 2
    min_volume_ml: float = 0.05
    min_rate_ml_min: float = 0.05
    max_rate_ml_min: float = 1.0
    max_injection_s: float = 600.0  # inclusive


@dataclass(frozen=True)
class ExamFacts:
    """What the interlocks look at: derived by the service from the journal."""

    checklist_passed: bool = False
    pre_contrast_exposures: int = 0
    post_injection_exposures: int = 0  # in the current post-injection phase
    cannulation_confirmed: bool = False
    air_purge_confirmed: bool = False
    injector_healthy: bool = False
    injections_started: int = 0
    volume_given_ml: float = 0.0
    requested_volume_ml: float = 0.0  # of the injection being started
    requested_rate_ml_min: float = 0.0  # of the injection being started
    #: What the syringe holds now: loaded at the last air purge, less what was given since
    #: (None: not known, the syringe is not checked).
    syringe_left_ml: float | None = None
    discontinuation_reason: str | None = None  # a CID 9301 code value
    fault_phase: ExamState | None = None  # the state the fault interrupted
    limits: Limits = Limits()


class Refused(Exception):
    """The event is not allowed now; ``reason`` says which rule refused it. ``details`` are
    machine-readable facts of the refusal for the console (``{"code": "laterality-mismatch",
    …}``); empty for most."""

    def __init__(
        self,
        event: ExamEvent,
        state: ExamState,
        reason: str,
        details: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{event.value} refused in {state.value}: {reason}")
        self.event = event
        self.state = state
        self.reason = reason
        self.details: dict[str, str] = dict(details or {})


Guard = Callable[[ExamFacts], str | None]  # None when allowed, else the reason


def _checklist(f: ExamFacts) -> str | None:
    """The checklist has no blocking answer, or a physician override with a reason."""
    if not f.checklist_passed:
        return "the checklist has a blocking answer without a physician override"
    return None


def _pre_contrast_taken(f: ExamFacts) -> str | None:
    """At least one pre-contrast exposure."""
    if f.pre_contrast_exposures < 1:
        return "at least one pre-contrast exposure is required before contrast"
    return None


def _ready_to_inject(f: ExamFacts) -> str | None:
    """Cannulation and air purge confirmed, a healthy injector link, the injection count within
    its limit, the volume and the rate within their limits, the injection no longer than the
    longest allowed, the volume within the per-exam limit and within what the syringe holds."""
    if not f.cannulation_confirmed:
        return "cannulation is not confirmed"
    if not f.air_purge_confirmed:
        return "the air purge of the line is not confirmed"
    if not f.injector_healthy:
        return "the injector link is not healthy"
    lim = f.limits
    if f.injections_started >= lim.max_injections:
        return f"at most {lim.max_injections} injections per exam"
    volume, rate = f.requested_volume_ml, f.requested_rate_ml_min
    refusal = (
        range_refusal("volume", volume, lim.min_volume_ml, lim.max_volume_per_injection_ml, "mL")
        or range_refusal("rate", rate, lim.min_rate_ml_min, lim.max_rate_ml_min, "mL/min")
        or duration_refusal(volume, rate, lim.max_injection_s)
    )
    if refusal is not None:
        return refusal if refusal[0].isdigit() else f"the {refusal}"
    if f.volume_given_ml + volume > lim.max_volume_per_exam_ml + 1e-9:
        return (
            f"{f.volume_given_ml:g} mL given + {volume:g} mL would exceed "
            f"{lim.max_volume_per_exam_ml:g} mL per exam"
        )
    if f.syringe_left_ml is not None and volume > f.syringe_left_ml + 1e-9:
        return f"the syringe holds {round(max(f.syringe_left_ml, 0.0), 3):g} mL"
    return None


def _post_images_taken(f: ExamFacts) -> str | None:
    """At least one post-injection exposure."""
    if f.post_injection_exposures < 1:
        return "no post-injection exposure yet: discontinue instead, with a reason"
    return None


def _has_reason(f: ExamFacts) -> str | None:
    """A CID 9301 discontinuation reason."""
    if not f.discontinuation_reason:
        return "a discontinuation needs a reason (CID 9301)"
    return None


S, E = ExamState, ExamEvent

#: The exam, as a table: (event, state) -> (next state, interlock).
TRANSITIONS: dict[tuple[ExamEvent, ExamState], tuple[ExamState, Guard | None]] = {
    # An exam starts from a RIS order or a patient registered at the console (no RIS).
    (E.SELECT_ORDER, S.IDLE): (S.CHECKLIST, None),
    (E.REGISTER_UNSCHEDULED, S.IDLE): (S.CHECKLIST, None),
    # Pregnancy, contrast allergy, mastitis or no discharge block unless a physician overrides.
    (E.PASS_CHECKLIST, S.CHECKLIST): (S.PRE_CONTRAST, _checklist),
    # Plain images first, so that calcifications are not hidden by contrast later.
    (E.FINISH_PRE_CONTRAST, S.PRE_CONTRAST): (S.CANNULATION, _pre_contrast_taken),
    # No injection without cannulation, air purge, a healthy injector, limits and an explicit start.
    (E.START_INJECTION, S.CANNULATION): (S.INJECTION_1, _ready_to_inject),
    # The optional second injection, when filling was incomplete, within the exam's limits.
    (E.START_INJECTION, S.POST_INJECTION_1): (S.INJECTION_2, _ready_to_inject),
    # Injections end at the programmed volume or early on the operator's word.
    (E.INJECTION_COMPLETED, S.INJECTION_1): (S.POST_INJECTION_1, None),
    (E.INJECTION_STOPPED, S.INJECTION_1): (S.POST_INJECTION_1, None),
    (E.INJECTION_COMPLETED, S.INJECTION_2): (S.POST_INJECTION_2, None),
    (E.INJECTION_STOPPED, S.INJECTION_2): (S.POST_INJECTION_2, None),
    # An exam is complete only with post-injection images.
    (E.COMPLETE, S.POST_INJECTION_1): (S.COMPLETED, _post_images_taken),
    (E.COMPLETE, S.POST_INJECTION_2): (S.COMPLETED, _post_images_taken),
    # The finished exam is left; the room is free for the next patient.
    (E.CLOSE, S.COMPLETED): (S.IDLE, None),
    (E.CLOSE, S.DISCONTINUED): (S.IDLE, None),
}

_ACTIVE = (
    S.CHECKLIST,
    S.PRE_CONTRAST,
    S.CANNULATION,
    S.INJECTION_1,
    S.POST_INJECTION_1,
    S.INJECTION_2,
    S.POST_INJECTION_2,
)
for _state in _ACTIVE:
    # Any open exam may be discontinued with a reason (the service stops the injector first).
    TRANSITIONS[(E.DISCONTINUE, _state)] = (S.DISCONTINUED, _has_reason)
    # An injector or logging fault stops everything until the operator acknowledges it.
    TRANSITIONS[(E.FAULT, _state)] = (S.FAULT, None)


def _after_fault(facts: ExamFacts) -> ExamState:
    """Where an acknowledged fault leaves the exam: an interrupted injection is over."""
    phase = facts.fault_phase or S.CHECKLIST
    return {S.INJECTION_1: S.POST_INJECTION_1, S.INJECTION_2: S.POST_INJECTION_2}.get(phase, phase)


def next_state(state: ExamState, event: ExamEvent, facts: ExamFacts) -> ExamState:
    """The state after ``event``; :class:`Refused` when the table or an interlock forbids it."""
    if event is E.ACKNOWLEDGE_FAULT:
        if state is not S.FAULT:
            raise Refused(event, state, "there is no fault to acknowledge")
        return _after_fault(facts)
    if state is S.FAULT:
        raise Refused(event, state, "acknowledge the fault first")
    entry = TRANSITIONS.get((event, state))
    if entry is None:
        raise Refused(event, state, f"not allowed in {state.value}")
    target, guard = entry
    if guard is not None and (reason := guard(facts)) is not None:
        raise Refused(event, state, reason)
    return target


def render_mermaid() -> str:
    """The table as a Mermaid state diagram, for docs/exam-states.md."""
    lines = ["stateDiagram-v2", "    [*] --> idle"]
    for (event, state), (target, guard) in TRANSITIONS.items():
        label = event.value + (f" [{guard.__name__.strip('_')}]" if guard else "")
        lines.append(f"    {_node(state)} --> {_node(target)}: {label}")
    for interrupted in (S.INJECTION_1, S.INJECTION_2):
        lines.append(
            f"    fault --> {_node(_after_fault(ExamFacts(fault_phase=interrupted)))}: "
            f"acknowledge-fault (interrupted {interrupted.value})"
        )
    lines.append("    fault --> fault_phase: acknowledge-fault (other phases: back where it was)")
    return "\n".join(lines) + "\n"


def _node(state: ExamState) -> str:
    return state.value.replace("-", "_")


def render_markdown() -> str:
    """docs/exam-states.md: the diagram and the table, generated from ``TRANSITIONS``."""
    lines = [
        "# The exam's states",
        "",
        "Generated from `acquisition/exam_machine.py` by `python -m acquisition.exam_machine`;",
        "a test fails when this page and the table disagree. Every pair not listed is refused",
        "and journaled with its reason; the state is left unchanged.",
        "",
        "```mermaid",
        render_mermaid().rstrip(),
        "```",
        "",
        "| event | from | to | interlock |",
        "|---|---|---|---|",
    ]
    for (event, state), (target, guard) in TRANSITIONS.items():
        interlock = " ".join((guard.__doc__ or "").split()) if guard else "—"
        lines.append(f"| `{event.value}` | {state.value} | {target.value} | {interlock} |")
    lines.append(
        "| `acknowledge-fault` | fault | the interrupted phase; after an injection, its "
        "post-injection phase | — |"
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).resolve().parent.parent / "docs" / "exam-states.md"
    target.write_text(render_markdown(), encoding="utf-8")
    print(f"wrote {target}")  # noqa: T201
