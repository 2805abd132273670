"""The controller-side injector state machine (injector-protocol.md §6): every pair tried."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from device_drivers.base import InjectorState
from device_drivers.codec import parse_infused_ml, parse_rate_ml_min
from device_drivers.errors import DriverError, LimitError, StateError
from device_drivers.limits import InjectorLimits
from device_drivers.states import TRANSITIONS, Trigger, next_state

S = InjectorState
T = Trigger

# The spec's diagram, edge by edge (the table in driver.py must say exactly this).
EXPECTED = {
    (T.CONFIGURE, S.NOT_READY): S.READY,
    (T.CONFIGURE, S.READY): S.READY,
    (T.CONFIGURE, S.COMPLETED): S.READY,
    (T.ARM, S.READY): S.ARMED,
    (T.ARM, S.COMPLETED): S.ARMED,
    (T.DISARM, S.ARMED): S.READY,
    (T.ARM_TIMEOUT, S.ARMED): S.READY,
    (T.START, S.ARMED): S.INJECTING,
    (T.VOLUME_REACHED, S.INJECTING): S.COMPLETED,
    (T.HOLD, S.INJECTING): S.HOLD,
    (T.RESUME, S.HOLD): S.INJECTING,
    (T.HOLD_TIMEOUT, S.HOLD): S.ABORTED,
    (T.OPERATOR_STOP, S.INJECTING): S.ABORTED,
    (T.OPERATOR_STOP, S.HOLD): S.ABORTED,
    (T.FAULT, S.INJECTING): S.ABORTED,
    (T.FAULT, S.HOLD): S.ABORTED,
    (T.FAULT, S.NOT_READY): S.ERROR,
    (T.FAULT, S.READY): S.ERROR,
    (T.FAULT, S.ARMED): S.ERROR,
    (T.FAULT, S.COMPLETED): S.ERROR,
    (T.FAULT, S.ERROR): S.ERROR,
    (T.REPORTED, S.ABORTED): S.ERROR,
    (T.ACKNOWLEDGE, S.ERROR): S.READY,
    (T.ACKNOWLEDGE_UNCONFIGURED, S.ERROR): S.NOT_READY,
}


def test_table_is_the_spec() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize(
    ("trigger", "state"), list(itertools.product(Trigger, InjectorState)), ids=str
)
def test_every_pair(trigger: Trigger, state: InjectorState) -> None:
    if (trigger, state) in EXPECTED:
        assert next_state(trigger, state) is EXPECTED[(trigger, state)]
    else:
        with pytest.raises(StateError, match=re.escape(trigger.value)):
            next_state(trigger, state)


def test_no_way_into_injecting_but_from_armed() -> None:
    sources = {s for (t, s), target in TRANSITIONS.items() if target is S.INJECTING}
    assert sources == {S.ARMED, S.HOLD}


def test_every_abort_is_reported_as_error() -> None:
    assert next_state(T.REPORTED, S.ABORTED) is S.ERROR
    assert not [t for (t, s) in TRANSITIONS if s is S.ABORTED and t is not T.REPORTED]


@pytest.mark.parametrize(
    ("data", "ml_min"), [("300.0UM", 0.3), ("0.3MM", 0.3), ("18.00MH", 0.3), ("1000UH", 1 / 60)]
)
def test_rate_units(data: str, ml_min: float) -> None:
    assert parse_rate_ml_min(data) == pytest.approx(ml_min)


def test_dis_reply() -> None:
    assert parse_infused_ml("I0.020W0.000ML") == pytest.approx(0.02)
    assert parse_infused_ml("I20.00W0.000UL") == pytest.approx(0.02)
    with pytest.raises(DriverError):
        parse_infused_ml("0.020ML")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_rate_ml_min": 1.5},
        {"max_volume_per_injection_ml": 3.5},
        {"max_volume_per_session_ml": 6.0},
        {"pressure_ceiling_kpa": 400.0},
        {"pressure_warning_kpa": 120.0},
        {"safe_timeout_s": 0},
    ],
)
def test_limits_cannot_exceed_the_hard_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(LimitError):
        InjectorLimits(**kwargs)  # type: ignore[arg-type]


def test_limit_error_is_a_value_error() -> None:
    assert issubclass(LimitError, ValueError) and issubclass(LimitError, DriverError)


def test_the_docs_render_the_table() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "injector-protocol.md"
    section = doc.read_text(encoding="utf-8").split("## 6.")[1].split("## 7.")[0]
    rendered: dict[tuple[Trigger, InjectorState], InjectorState] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("Trigger", "---"):
            continue
        trigger = Trigger(cells[0])
        for source in cells[1].split(","):
            rendered[(trigger, InjectorState[source.strip()])] = InjectorState[cells[2]]
    assert rendered == TRANSITIONS
