"""Every (event, state) pair of the exam machine, and every interlock (style.md §4)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from acquisition.exam_machine import (
    ExamEvent,
    ExamFacts,
    ExamState,
    Limits,
    Refused,
    next_state,
    render_mermaid,
)

S, E = ExamState, ExamEvent

READY = ExamFacts(
    checklist_passed=True,
    pre_contrast_exposures=2,
    post_injection_exposures=1,
    cannulation_confirmed=True,
    air_purge_confirmed=True,
    injector_healthy=True,
    injections_started=0,
    volume_given_ml=0.0,
    requested_volume_ml=0.5,
    requested_rate_ml_min=0.3,
    discontinuation_reason="110505",
)

OPEN = [
    S.CHECKLIST,
    S.PRE_CONTRAST,
    S.CANNULATION,
    S.INJECTION_1,
    S.POST_INJECTION_1,
    S.INJECTION_2,
    S.POST_INJECTION_2,
]

# Written out independently of the module's table: what the procedure allows.
EXPECTED: dict[tuple[ExamEvent, ExamState], ExamState] = {
    (E.SELECT_ORDER, S.IDLE): S.CHECKLIST,
    (E.REGISTER_UNSCHEDULED, S.IDLE): S.CHECKLIST,
    (E.PASS_CHECKLIST, S.CHECKLIST): S.PRE_CONTRAST,
    (E.FINISH_PRE_CONTRAST, S.PRE_CONTRAST): S.CANNULATION,
    (E.START_INJECTION, S.CANNULATION): S.INJECTION_1,
    (E.START_INJECTION, S.POST_INJECTION_1): S.INJECTION_2,
    (E.INJECTION_COMPLETED, S.INJECTION_1): S.POST_INJECTION_1,
    (E.INJECTION_STOPPED, S.INJECTION_1): S.POST_INJECTION_1,
    (E.INJECTION_COMPLETED, S.INJECTION_2): S.POST_INJECTION_2,
    (E.INJECTION_STOPPED, S.INJECTION_2): S.POST_INJECTION_2,
    (E.COMPLETE, S.POST_INJECTION_1): S.COMPLETED,
    (E.COMPLETE, S.POST_INJECTION_2): S.COMPLETED,
    (E.CLOSE, S.COMPLETED): S.IDLE,
    (E.CLOSE, S.DISCONTINUED): S.IDLE,
    (E.ACKNOWLEDGE_FAULT, S.FAULT): S.CANNULATION,  # with fault_phase=CANNULATION below
    **{(E.DISCONTINUE, s): S.DISCONTINUED for s in OPEN},
    **{(E.FAULT, s): S.FAULT for s in OPEN},
}


@pytest.mark.parametrize(
    ("event", "state"),
    list(itertools.product(ExamEvent, ExamState)),
    ids=lambda v: v.value,
)
def test_every_pair(event: ExamEvent, state: ExamState) -> None:
    facts = dataclasses.replace(READY, fault_phase=S.CANNULATION)
    if (event, state) in EXPECTED:
        assert next_state(state, event, facts) is EXPECTED[(event, state)]
    else:
        with pytest.raises(Refused) as refused:
            next_state(state, event, facts)
        assert refused.value.state is state and refused.value.event is event


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cannulation_confirmed": False}, "cannulation"),
        ({"air_purge_confirmed": False}, "air purge"),
        ({"injector_healthy": False}, "injector link"),
        ({"requested_volume_ml": 0.0}, "below the minimum of 0.05 mL"),
        ({"requested_volume_ml": 0.0004}, "below the minimum of 0.05 mL"),
        ({"requested_volume_ml": 3.5}, "above the maximum of 3 mL"),
        ({"requested_rate_ml_min": 0.0001}, "below the minimum of 0.05 mL/min"),
        ({"requested_rate_ml_min": 1.2}, "above the maximum of 1 mL/min"),
        ({"requested_volume_ml": 0.6, "requested_rate_ml_min": 0.05}, "720 s, more than"),
        ({"syringe_left_ml": 0.3}, "the syringe holds 0.3 mL"),
        ({"volume_given_ml": 4.8, "requested_volume_ml": 0.5}, "per exam"),
        ({"injections_started": 2}, "at most 2 injections"),
    ],
)
def test_injection_interlocks(change: dict, reason: str) -> None:
    facts = dataclasses.replace(READY, **change)
    with pytest.raises(Refused, match=reason):
        next_state(S.CANNULATION, E.START_INJECTION, facts)


def test_exam_limit_exactly_reached_is_allowed() -> None:
    facts = dataclasses.replace(READY, volume_given_ml=4.5, requested_volume_ml=0.5)
    assert next_state(S.POST_INJECTION_1, E.START_INJECTION, facts) is S.INJECTION_2


def test_configured_limits_apply() -> None:
    facts = dataclasses.replace(READY, limits=Limits(max_volume_per_injection_ml=0.4))
    with pytest.raises(Refused, match=r"above the maximum of 0\.4 mL"):
        next_state(S.CANNULATION, E.START_INJECTION, facts)


@pytest.mark.parametrize(
    ("state", "event", "change", "reason"),
    [
        (S.CHECKLIST, E.PASS_CHECKLIST, {"checklist_passed": False}, "physician override"),
        (S.PRE_CONTRAST, E.FINISH_PRE_CONTRAST, {"pre_contrast_exposures": 0}, "pre-contrast"),
        (S.POST_INJECTION_1, E.COMPLETE, {"post_injection_exposures": 0}, "post-injection"),
        (S.INJECTION_1, E.DISCONTINUE, {"discontinuation_reason": None}, "reason"),
    ],
)
def test_other_interlocks(state: ExamState, event: ExamEvent, change: dict, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        next_state(state, event, dataclasses.replace(READY, **change))


@pytest.mark.parametrize(
    ("interrupted", "resumed"),
    [
        (S.INJECTION_1, S.POST_INJECTION_1),
        (S.INJECTION_2, S.POST_INJECTION_2),
        (S.PRE_CONTRAST, S.PRE_CONTRAST),
        (S.POST_INJECTION_1, S.POST_INJECTION_1),
    ],
)
def test_acknowledged_fault_resumes_where_it_is_safe(
    interrupted: ExamState, resumed: ExamState
) -> None:
    facts = dataclasses.replace(READY, fault_phase=interrupted)
    assert next_state(S.FAULT, E.ACKNOWLEDGE_FAULT, facts) is resumed


def test_fault_is_left_only_by_acknowledgement() -> None:
    for event in ExamEvent:
        if event is E.ACKNOWLEDGE_FAULT:
            continue
        with pytest.raises(Refused, match="acknowledge the fault first"):
            next_state(S.FAULT, event, READY)


def test_diagram_names_every_transition() -> None:
    diagram = render_mermaid()
    for (event, state), target in EXPECTED.items():
        if state is S.FAULT:
            continue
        edge = (
            f"{state.value.replace('-', '_')} --> {target.value.replace('-', '_')}: {event.value}"
        )
        assert edge in diagram


def test_state_page_is_current() -> None:
    from pathlib import Path

    from acquisition.exam_machine import render_markdown

    page = Path(__file__).resolve().parents[2] / "docs" / "exam-states.md"
    assert page.read_text(encoding="utf-8") == render_markdown(), (
        "docs/exam-states.md is stale: python -m acquisition.exam_machine"
    )
