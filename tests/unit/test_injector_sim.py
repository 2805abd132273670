"""Pure parts of the injector simulator: physics (§9), fault syntax, reply numbers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_drivers.codec import parse_number
from simulators.injector import (
    FAULT_NAMES,
    FaultSpec,
    FaultSyntaxError,
    InjectorSimError,
    InjectorSimulator,
    SimParams,
    parse_fault,
    wire_value,
)
from simulators.injector_faults import (
    LAYER_OFF_FAULTS,
    NOT_RANDOM_BY_DEFAULT,
    Trigger,
    random_schedule,
)
from simulators.injector_physics import (
    SYRINGES,
    cannula_pressure_kpa,
    duct_pressure_kpa,
    plunger_travel_mm,
)


def test_cannula_pressure_at_half_ml_per_min_is_about_80_kpa() -> None:
    params = SimParams()
    # 8 μ L Q / (π r^4) with μ = 11.8 mPa·s, L = 12.7 mm, r = 79.5 μm, Q = 0.5 mL/min.
    assert cannula_pressure_kpa(params, 0.5) == pytest.approx(79.6, abs=0.5)
    assert cannula_pressure_kpa(params, 1.0) == pytest.approx(2 * cannula_pressure_kpa(params, 0.5))
    assert cannula_pressure_kpa(params, 0.0) == 0.0


def test_max_rate_follows_the_ne1000_plunger_speed() -> None:
    params = SimParams()
    assert params.max_rate_ml_min(SYRINGES["1ml"].inner_diameter_mm) == pytest.approx(0.885)
    assert params.max_rate_ml_min(SYRINGES["3ml"].inner_diameter_mm) == pytest.approx(2.954, 1e-3)


def test_plunger_travel() -> None:
    # 1 mL in a 4.699 mm bore: 1000 mm³ / 17.34 mm² = 57.7 mm.
    assert plunger_travel_mm(1.0, 4.699) == pytest.approx(57.66, abs=0.01)


def test_duct_compliance_stiffens_as_it_fills() -> None:
    params = SimParams()
    first = duct_pressure_kpa(params, 0.5) - duct_pressure_kpa(params, 0.0)
    second = duct_pressure_kpa(params, 1.0) - duct_pressure_kpa(params, 0.5)
    assert 0 < first < second
    assert duct_pressure_kpa(params, 0.5, stiffness_factor=0.1) < first


def test_params_validate() -> None:
    with pytest.raises(ValueError, match="syringe"):
        SimParams(syringe="10ml")
    with pytest.raises(ValueError, match="warning < adjustment"):
        SimParams(pressure_warning_kpa=120.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stall", FaultSpec("stall")),
        ("stall@volume=0.2", FaultSpec("stall", Trigger.VOLUME, 0.2)),
        ("no_reply@after=12", FaultSpec("no_reply", Trigger.AFTER, 12)),
        ("air@t=3.5", FaultSpec("air", Trigger.TIME, 3.5)),
        ("port_vanish@on=RUN", FaultSpec("port_vanish", Trigger.COMMAND, command="RUN")),
        ("no_reply@on=stp", FaultSpec("no_reply", Trigger.COMMAND, command="STP")),
        (" echo ", FaultSpec("echo")),
    ],
)
def test_parse_fault(text: str, expected: FaultSpec) -> None:
    assert parse_fault(text) == expected
    assert parse_fault(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "melt",
        "stall@",
        "stall@t",
        "stall@t=",
        "stall@t=x",
        "stall@after=1.5",
        "stall@now=1",
        "stall@t=-1",
        "stall@volume=nan",
        "stall@on=",
        "stall@on=RU",
        "stall@on=RUN1",
    ],
)
def test_parse_fault_rejects(text: str) -> None:
    with pytest.raises(FaultSyntaxError):
        parse_fault(text)


def test_fault_names_are_the_task_list() -> None:
    # domain/injector-protocol.md §8 (31), then the pump's own layers switched off (issue 8)
    assert len(FAULT_NAMES) == len(set(FAULT_NAMES)) == 31 + len(LAYER_OFF_FAULTS) == 38
    assert {"reset", "watchdog", "stx_etx_in_crc", "port_vanish"} <= set(FAULT_NAMES)
    assert set(LAYER_OFF_FAULTS) <= NOT_RANDOM_BY_DEFAULT


def test_a_command_trigger_needs_a_command() -> None:
    with pytest.raises(FaultSyntaxError):
        FaultSpec("stall", Trigger.COMMAND)
    with pytest.raises(FaultSyntaxError):
        FaultSpec("stall", Trigger.NOW, command="RUN")


def test_random_schedule_is_seeded_sorted_and_bounded() -> None:
    a = random_schedule(random.Random(1), 10, 30.0)
    assert a == random_schedule(random.Random(1), 10, 30.0)
    assert [s.value for s in a] == sorted(s.value for s in a)
    assert all(0 <= s.value < 30.0 and s.name not in NOT_RANDOM_BY_DEFAULT for s in a)
    only = random_schedule(random.Random(1), 5, 1.0, names=["air"])
    assert {s.name for s in only} == {"air"}
    with pytest.raises(FaultSyntaxError):
        random_schedule(random.Random(1), 1, 1.0, names=["bogus"])


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.500"),
        (4.699, "4.699"),
        (300.0, "300.0"),
        (26.59, "26.59"),
        (1000.0, "1000."),
        (0.0, "0.000"),
        (79.6321, "79.63"),
    ],
)
def test_wire_value(value: float, text: str) -> None:
    assert wire_value(value) == text


@given(st.floats(min_value=0.0, max_value=9999.4, allow_nan=False))
def test_wire_value_is_a_wire_number_with_a_point(value: float) -> None:
    text = wire_value(value)
    assert "." in text
    assert parse_number(text.rstrip(".") or "0") == pytest.approx(value, abs=0.51)


def test_advance_without_serving_moves_the_clock() -> None:
    with InjectorSimulator(time_scale=1e-9) as sim:
        sim.advance(12.5)
        assert sim.snapshot().sim_time_s == pytest.approx(12.5, abs=1e-6)
        with pytest.raises(InjectorSimError, match="backwards"):
            sim.advance(-1.0)
